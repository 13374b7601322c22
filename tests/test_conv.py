"""`jaxkd.models.conv`: the banded-matmul convolution equals `nn.Conv`.

References are XLA's convolution (`nn.Conv`, impl="xla") and a NumPy loop
over kernel taps; forward values and gradients (kernel, bias, input) agree
to float32 tolerance.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxkd.models import conv, get_model, init_model


def numpy_conv(x, k, pads):
  """Cross-correlation by an explicit loop over kernel taps (float64)."""
  x = np.pad(np.asarray(x, np.float64), ((0, 0),) + pads + ((0, 0),))
  kh, kw, _, o = k.shape
  ho, wo = x.shape[1] - kh + 1, x.shape[2] - kw + 1
  y = np.zeros((x.shape[0], ho, wo, o))
  for dy in range(kh):
    for dx in range(kw):
      y += x[:, dy:dy + ho, dx:dx + wo] @ np.asarray(k[dy, dx], np.float64)
  return y


@pytest.mark.parametrize("shape,kernel,padding,pads", [
    ((3, 9, 9, 1), (5, 5, 1, 3), "SAME", ((2, 2), (2, 2))),
    ((2, 7, 6, 3), (5, 5, 3, 8), "SAME", ((2, 2), (2, 2))),
    ((2, 8, 7, 2), (3, 2, 2, 4), "VALID", ((0, 0), (0, 0))),
    ((2, 6, 6, 2), (3, 3, 2, 5), ((1, 0), (2, 1)), ((1, 0), (2, 1))),
    ((2, 6, 8, 3), (4, 4, 3, 2), "SAME", ((1, 2), (1, 2))),
])
def test_toeplitz_conv_matches_numpy(shape, kernel, padding, pads):
  rng = np.random.default_rng(0)
  x = rng.normal(size=shape).astype(np.float32)
  k = rng.normal(size=kernel).astype(np.float32)
  got = jax.jit(conv.toeplitz_conv, static_argnums=2)(x, k, padding)
  np.testing.assert_allclose(got, numpy_conv(x, k, pads), rtol=1e-5,
                             atol=1e-5)


@pytest.mark.parametrize("parts", [1, 2, 3, 4])
def test_toeplitz_conv_column_parts_match_numpy_and_conv_gradient(parts):
  """Output rows split into column parts: same values as the NumPy loop,
  same gradients (input, kernel) as XLA's convolution."""
  rng = np.random.default_rng(2)
  x = rng.normal(size=(2, 7, 12, 3)).astype(np.float32)
  k = rng.normal(size=(5, 5, 3, 4)).astype(np.float32)
  got = conv.toeplitz_conv(x, k, "SAME", parts=parts)
  np.testing.assert_allclose(got, numpy_conv(x, k, ((2, 2), (2, 2))),
                             rtol=1e-5, atol=1e-5)
  w = rng.normal(size=(2, 7, 12, 4)).astype(np.float32)
  xla = lambda x, k: jax.lax.conv_general_dilated(
      x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
  g = jax.grad(lambda x, k: jnp.sum(w * conv.toeplitz_conv(
      x, k, "SAME", parts=parts)), argnums=(0, 1))(x, k)
  g_ref = jax.grad(lambda x, k: jnp.sum(w * xla(x, k)), argnums=(0, 1))(x, k)
  for a, b in zip(g, g_ref):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * np.abs(b).max())


def test_toeplitz_conv_parts_must_divide_width():
  x = np.zeros((1, 6, 10, 1), np.float32)
  with pytest.raises(ValueError, match="parts must divide"):
    conv.toeplitz_conv(x, np.zeros((3, 3, 1, 2), np.float32), parts=3)
  assert conv.default_parts(28) == 2 and conv.default_parts(7) == 1


@pytest.mark.parametrize("c,o", [(1, 3), (3, 8), (6, 16)])
def test_conv_module_equals_nn_conv_forward_and_gradient(c, o):
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.uniform(size=(4, 10, 10, c)).astype(np.float32))
  ref = nn.Conv(o, (5, 5), padding="SAME")
  new = conv.Conv(o, (5, 5), padding="SAME", impl="toeplitz")
  v = ref.init(jax.random.key(0), x)
  # Same parameter tree and initial values as nn.Conv.
  v_new = new.init(jax.random.key(0), x)
  jax.tree.map(np.testing.assert_array_equal, v, v_new)
  np.testing.assert_allclose(new.apply(v, x), ref.apply(v, x), rtol=1e-5,
                             atol=1e-5)
  target = jnp.asarray(rng.normal(size=(4, 10, 10, o)).astype(np.float32))

  def grads(module):
    loss = lambda v, x: jnp.sum((module.apply(v, x) - target) ** 2)
    return jax.jit(jax.grad(loss, argnums=(0, 1)))(v, x)

  (gv_ref, gx_ref), (gv, gx) = grads(ref), grads(new)
  for a, b in zip(jax.tree.leaves(gv), jax.tree.leaves(gv_ref)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * np.abs(b).max())
  np.testing.assert_allclose(gx, gx_ref, rtol=1e-4,
                             atol=1e-4 * np.abs(gx_ref).max())


def test_unsupported_layers_fall_back_to_xla():
  x = jnp.ones((2, 8, 8, 2), jnp.float32)
  for kw in (dict(strides=(2, 2)), dict(kernel_dilation=(2, 2)),
             dict(feature_group_count=2)):
    ref = nn.Conv(4, (3, 3), padding="SAME", **kw)
    new = conv.Conv(4, (3, 3), padding="SAME", impl="toeplitz", **kw)
    v = ref.init(jax.random.key(0), x)
    np.testing.assert_array_equal(new.apply(v, x), ref.apply(v, x))


def test_auto_picks_by_backend_and_channels():
  assert conv.use_toeplitz(1, 3, "cpu") and conv.use_toeplitz(3, 8, "cpu")
  assert not conv.use_toeplitz(6, 16, "cpu")
  assert not conv.use_toeplitz(1, 3, "gpu") and not conv.use_toeplitz(
      1, 3, "tpu")
  with pytest.raises(ValueError):
    conv.conv_general_dilated_fn("fft")


@pytest.mark.parametrize("impl", ["toeplitz", "auto"])
def test_lenet5_half_with_conv_impl_equals_xla(impl):
  x = np.random.default_rng(2).uniform(size=(3, 28, 28, 1)).astype(
      np.float32)
  ref = get_model("lenet5_half", 10, conv_impl="xla")
  v = init_model(ref, jax.random.key(0), (28, 28, 1))
  new = get_model("lenet5_half", 10, conv_impl=impl)
  jax.tree.map(np.testing.assert_array_equal, v,
               init_model(new, jax.random.key(0), (28, 28, 1)))
  np.testing.assert_allclose(new.apply(v, x), ref.apply(v, x), rtol=1e-5,
                             atol=1e-5)


@pytest.mark.parametrize("shape", [(2, 8, 6, 3), (1, 7, 9, 2)])
def test_max_pool_gradient_equals_autodiff(shape):
  from jaxkd.models.lenet import max_pool_2x2
  rng = np.random.default_rng(3)
  x = jnp.asarray(rng.normal(size=shape).astype(np.float32))
  w = jnp.asarray(rng.normal(size=(shape[0], shape[1] // 2, shape[2] // 2,
                                   shape[3])).astype(np.float32))
  # Without ties: the gradient of nn.max_pool (XLA's select-and-scatter).
  got = jax.grad(lambda x: jnp.sum(w * max_pool_2x2(x)))(x)
  want = jax.grad(lambda x: jnp.sum(w * nn.max_pool(x, (2, 2), (2, 2))))(x)
  np.testing.assert_array_equal(got, want)
  # With ties (ReLU zeros, rounded values): autodiff of the nested maximum.

  def nested(x):
    h, w_ = x.shape[1] // 2 * 2, x.shape[2] // 2 * 2
    return jnp.maximum(
        jnp.maximum(x[:, 0:h:2, 0:w_:2], x[:, 0:h:2, 1:w_:2]),
        jnp.maximum(x[:, 1:h:2, 0:w_:2], x[:, 1:h:2, 1:w_:2]))

  xt = jnp.round(x)
  for f in (lambda v: v, jax.nn.relu):
    got = jax.grad(lambda x: jnp.sum(w * max_pool_2x2(f(x))))(xt)
    want = jax.grad(lambda x: jnp.sum(w * nested(f(x))))(xt)
    np.testing.assert_array_equal(got, want)
