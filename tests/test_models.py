"""Model registry: shapes, features, BatchNorm state, linear stems, sizes.

Every registered model is run on batch-2 inputs of 8x8x1 (digits) and 32x32x3
(CIFAR); each (model, shape) compiles one jitted program that checks eval and
train mode together. Architectures are checked against parameter counts that
are computed here by hand (CIFAR ResNets) and against the counts published
with RepDistiller / CRD (Tian et al., ICLR 2020).
"""

import functools

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxkd import models
from jaxkd.models import apply_model, get_model, has_batch_norm, init_model
from jaxkd.models import cifar
from jaxkd.validation import JaxkdError

SHAPES = {"digits": (8, 8, 1), "cifar": (32, 32, 3)}
# Deep models compiled on one shape only, to keep the file fast.
ONE_SHAPE = {"resnet32x4": "cifar", "shufflenet_v1": "digits",
             "mobilenetv2": "digits", "resnet56": "digits",
             "vgg13": "cifar", "vgg16": "cifar", "vgg16_am": "cifar",
             "wrn_40_1": "digits", "wrn_40_2": "digits",
             "lenet5_w2": "digits", "lenet5_w4": "digits"}
ALL = models.model_names()


def _cases():
  for name in ALL:
    for shape in SHAPES:
      if ONE_SHAPE.get(name, shape) == shape:
        yield name, shape


def _count(tree) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))


# Tests only: compile the many small programs below with fewer XLA passes.
_FAST = {"xla_backend_optimization_level": 0,
         "xla_llvm_disable_expensive_passes": True}


def _abstract_variables(name, num_classes=10, shape=(32, 32, 3)):
  model = get_model(name, num_classes)
  return model, jax.eval_shape(
      lambda: init_model(model, jax.random.key(0), shape))


def _host_variables(abstract, seed=0):
  """Random variables with the structure of `abstract`, made on the host.

  Kernels ~ N(0, 1/fan_in), biases ~ N(0, 0.01), BN scale 1, running mean 0
  and var 1 (as init gives). This skips compiling `init`, whose RNG
  code costs more to compile on CPU than the models themselves.
  """
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = jax.tree_util.keystr(path[-1:])
    if path[0].key == "batch_stats":
      return np.full(leaf.shape, 1.0 if "var" in name else 0.0, np.float32)
    if "scale" in name:  # BatchNorm scale
      return np.ones(leaf.shape, np.float32)
    fan_in = int(np.prod(leaf.shape[:-1])) if leaf.ndim > 1 else 100
    return (rng.normal(size=leaf.shape) / np.sqrt(fan_in)).astype(np.float32)

  return jax.tree_util.tree_map_with_path(fill, abstract)


@functools.lru_cache(maxsize=None)
def _run(name: str, shape_name: str):
  """Runs every eval/train/stem check of one model on one shape, once.

  Each mode is vmapped over two batches [x, x_swap] (x_swap = x with sample 1
  replaced), so one compiled forward per mode tells whether sample 0 depends
  on its batch-mate.
  """
  shape = SHAPES[shape_name]
  model, abstract = _abstract_variables(name, 10, shape)
  variables = _host_variables(abstract)
  rng = np.random.default_rng(1)
  x = rng.random((2,) + shape, np.float32)
  x_other = rng.random((2,) + shape, np.float32)
  x_swap = x.copy()
  x_swap[1] = x_other[1]
  lam = 0.3
  linear = getattr(model, "has_linear_stem", False)
  bn = has_batch_norm(variables)

  @functools.partial(jax.jit, compiler_options=_FAST)
  def run(v, xs, x_other):
    out = {}
    if bn:
      def eval_fn(x):
        return model.apply(v, x, train=False, return_features=True,
                           mutable=["batch_stats"])
      (logits, feats), upd = jax.vmap(eval_fn)(xs)
      out["eval_mutable_stats"] = upd["batch_stats"]
      (tl, _), stats = jax.vmap(
          lambda x: apply_model(model, v, x, train=True,
                                return_features=True))(xs)
      out["train_logits"], out["train_stats"] = tl, stats
    else:
      logits, feats = jax.vmap(
          lambda x: apply_model(model, v, x, return_features=True)[0])(xs)
    out["logits"], out["feats"] = logits, feats
    if linear:
      x = xs[0]
      stems = jax.vmap(lambda z: model.apply(v, z, method=model.stem))(
          jnp.stack([x, x_other, lam * x + (1 - lam) * x_other]))
      out["stem_mix"] = stems[2]
      out["mix_stem"] = lam * stems[0] + (1 - lam) * stems[1]
      out["head_logits"] = model.apply(v, stems[0],
                                       method=model.head_from_stem)
    return out

  out = jax.device_get(run(variables, np.stack([x, x_swap]), x_other))
  return model, variables, out


@pytest.mark.parametrize("name,shape_name", list(_cases()))
def test_outputs_and_features(name, shape_name):
  _, _, out = _run(name, shape_name)
  logits = out["logits"]  # [2 batches, 2, classes]
  assert logits.shape == (2, 2, 10)
  emb, maps = out["feats"]["embedding"], out["feats"]["maps"]
  assert emb.ndim == 3 and emb.shape[:2] == (2, 2)  # [B, D] per batch
  assert isinstance(maps, tuple)
  if name != "mlp":
    assert maps
  for m in maps:
    assert m.ndim == 5 and m.shape[:2] == (2, 2)  # [B, H, W, C] per batch
    assert np.all(np.isfinite(m))
  assert np.all(np.isfinite(logits)) and np.all(np.isfinite(emb))
  # Eval mode: sample 0 does not depend on the rest of its batch.
  np.testing.assert_allclose(logits[1, 0], logits[0, 0], rtol=1e-5, atol=1e-5)
  assert not np.allclose(logits[1, 1], logits[0, 1])


@pytest.mark.parametrize("name,shape_name", list(_cases()))
def test_batch_norm_state(name, shape_name):
  _, variables, out = _run(name, shape_name)
  if not has_batch_norm(variables):
    assert name in ("mlp", "lenet5", "lenet5_half", "lenet5_w2",
                    "lenet5_w4")
    return
  old = variables["batch_stats"]
  first = lambda t: jax.tree.map(lambda a: a[0], t)  # batch x, not x_swap
  # Eval mode leaves the running statistics untouched.
  jax.tree.map(np.testing.assert_array_equal, old,
               first(out["eval_mutable_stats"]))
  # Train mode updates every BatchNorm layer (mean or var; a BN fed by a
  # linear map of a BN output can keep a zero batch mean).
  new = first(out["train_stats"])
  assert jax.tree.structure(new) == jax.tree.structure(old)
  flat_old = jax.tree_util.tree_flatten_with_path(old)[0]
  layers = {}
  for (path, a), b in zip(flat_old, jax.tree.leaves(new)):
    layer = jax.tree_util.keystr(path[:-1])
    layers[layer] = layers.get(layer, False) or not np.allclose(a, b)
  assert all(layers.values()), [k for k, v in layers.items() if not v]
  tl = out["train_logits"]
  assert tl.shape == (2, 2, 10) and np.all(np.isfinite(tl))
  # Train mode normalises with batch statistics: sample 0 depends on sample 1.
  assert not np.allclose(tl[1, 0], tl[0, 0], atol=1e-6)


@pytest.mark.parametrize("name,shape_name", list(_cases()))
def test_linear_stem(name, shape_name):
  model, _, out = _run(name, shape_name)
  if not getattr(model, "has_linear_stem", False):
    pytest.skip("no linear stem")
  np.testing.assert_allclose(out["stem_mix"], out["mix_stem"],
                             rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(out["head_logits"], out["logits"][0],
                             rtol=1e-5, atol=1e-5)


def test_every_model_listed_and_linear_stems_declared():
  for name in ("mlp", "lenet5", "lenet5_half", "alexnet_cifar",
               "alexnet_cifar_half", "resnet8x4", "resnet32x4", "resnet20",
               "vgg8", "wrn_16_2", "mobilenetv2", "shufflenet_v1"):
    assert name in ALL
  for name in cifar.MODELS:
    assert get_model(name, 10).has_linear_stem


def test_init_and_first_batch_norm_momentum():
  """Real init (He fan-out convs, BN 1/0), then one train-mode call: running
  mean = 0.9 * 0 + 0.1 * batch mean, var = 0.9 * 1 + 0.1 * batch var (NumPy)."""
  model = get_model("resnet8x4", 10)
  v = jax.jit(lambda k: init_model(model, k, (8, 8, 3)),
              compiler_options=_FAST)(jax.random.key(1))
  k1 = np.asarray(v["params"]["conv1"]["kernel"])
  assert k1.shape == (3, 3, 3, 32)
  np.testing.assert_allclose(k1.std(), np.sqrt(2 / (9 * 32)), rtol=0.15)
  np.testing.assert_array_equal(v["params"]["bn1"]["scale"], np.ones(32))
  np.testing.assert_array_equal(v["batch_stats"]["bn1"]["var"], np.ones(32))
  x = np.random.default_rng(2).random((2, 8, 8, 3), np.float32)
  # Independent stem: 3x3 SAME convolution without bias, in NumPy.
  xp = np.pad(np.asarray(x, np.float64), ((0, 0), (1, 1), (1, 1), (0, 0)))
  stem = sum(xp[:, i:i + 8, j:j + 8, :] @ k1[i, j].astype(np.float64)
             for i in range(3) for j in range(3))

  @functools.partial(jax.jit, compiler_options=_FAST)
  def run(v, x):
    return (apply_model(model, v, x, train=True)[1],
            apply_model(model, v, x)[1])

  stats, eval_stats = run(v, x)
  np.testing.assert_allclose(stats["bn1"]["mean"], 0.1 * stem.mean((0, 1, 2)),
                             rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(stats["bn1"]["var"],
                             0.9 + 0.1 * stem.var((0, 1, 2)), rtol=1e-4)
  jax.tree.map(np.testing.assert_array_equal, eval_stats, v["batch_stats"])


def test_teacher_student_maps_match():
  shapes = {}
  for name in ("resnet8x4", "resnet32x4"):
    model, v = _abstract_variables(name)
    _, feats = jax.eval_shape(
        lambda v: model.apply(v, jnp.zeros((2, 32, 32, 3)),
                              return_features=True), v)
    shapes[name] = [m.shape for m in feats["maps"]]
  assert shapes["resnet8x4"] == shapes["resnet32x4"]
  assert shapes["resnet8x4"] == [(2, 32, 32, 64), (2, 16, 16, 128),
                                 (2, 8, 8, 256)]
  for full, half in (("lenet5", "lenet5_half"),
                     ("alexnet_cifar", "alexnet_cifar_half")):
    for shape in SHAPES.values():
      spatial = []
      for name in (full, half):
        model, v = _abstract_variables(name, shape=shape)
        _, feats = jax.eval_shape(
            lambda v: model.apply(v, jnp.zeros((2,) + shape),
                                  return_features=True), v)
        spatial.append([m.shape[:3] for m in feats["maps"]])
      assert spatial[0] == spatial[1]


def _kernels(params):
  """(path, shape) of every kernel, in a stable order."""
  flat = jax.tree_util.tree_flatten_with_path(params)[0]
  return [(jax.tree_util.keystr(p), x.shape) for p, x in flat
          if "kernel" in jax.tree_util.keystr(p)]


@pytest.mark.parametrize("full,half", [("lenet5", "lenet5_half"),
                                       ("alexnet_cifar", "alexnet_cifar_half")])
def test_half_models(full, half):
  _, vf = _abstract_variables(full, shape=(32, 32, 3))
  _, vh = _abstract_variables(half, shape=(32, 32, 3))
  kf, kh = _kernels(vf["params"]), _kernels(vh["params"])
  assert [p for p, _ in kf] == [p for p, _ in kh]
  for (path, sf), (_, sh) in zip(kf, kh):
    if "head" in path:
      assert sh[-1] == sf[-1]  # same number of classes
    else:
      assert 2 * sh[-1] == sf[-1], path  # half the channels / units
  conv = lambda ks: sum(int(np.prod(s)) for _, s in ks if len(s) == 4)
  ratio = conv(kh) / conv(kf)
  assert 0.2 < ratio < 0.35, ratio  # ~1/4 (the first conv only halves)
  assert _count(vh["params"]) < _count(vf["params"]) / 3


def _resnet_params(depth, filters, classes):
  """Hand count of a PyTorch CIFAR ResNet's parameters (BN: weight + bias)."""
  n = (depth - 2) // 6
  total = 9 * 3 * filters[0] + 2 * filters[0]
  inp = filters[0]
  for s, planes in enumerate(filters[1:]):
    for b in range(n):
      stride = 2 if (s > 0 and b == 0) else 1
      total += 9 * inp * planes + 9 * planes * planes + 4 * planes
      if stride != 1 or inp != planes:
        total += inp * planes + 2 * planes
      inp = planes
  return total + inp * classes + classes


# Published sizes (millions of parameters, 100 classes) from the RepDistiller /
# CRD model zoo; resnet20 is also 0.27M with 10 classes (He et al., 2016).
PUBLISHED_100 = {"resnet20": 0.28, "resnet8x4": 1.23, "resnet32x4": 7.43,
                 "vgg8": 3.96, "wrn_16_2": 0.70, "mobilenetv2": 0.81,
                 "shufflenet_v1": 0.95}


@pytest.mark.parametrize("name", sorted(PUBLISHED_100))
def test_parameter_counts(name):
  _, v = _abstract_variables(name, num_classes=100)
  n = _count(v["params"])
  assert abs(n / 1e6 - PUBLISHED_100[name]) <= 0.02 * PUBLISHED_100[name], n
  exact = {"resnet20": (20, (16, 16, 32, 64)),
           "resnet8x4": (8, (32, 64, 128, 256)),
           "resnet32x4": (32, (32, 64, 128, 256))}
  if name in exact:
    assert n == _resnet_params(*exact[name], 100)
  if name == "resnet20":
    _, v10 = _abstract_variables(name, num_classes=10)
    assert _count(v10["params"]) == _resnet_params(20, (16, 16, 32, 64), 10)
    assert abs(_count(v10["params"]) / 1e6 - 0.27) <= 0.02 * 0.27


def test_unknown_model():
  with pytest.raises(JaxkdError, match="nope.*resnet8x4") as e:
    get_model("nope", 10)
  for name in ("lenet5", "alexnet_cifar", "vgg8"):
    assert name in str(e.value)


def test_bad_images():
  model = get_model("resnet8x4", 10)
  with pytest.raises(JaxkdError, match="rank|ndim|dimension"):
    jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((8, 8, 3))))
  with pytest.raises(JaxkdError, match=">= 8"):
    jax.eval_shape(
        lambda: model.init(jax.random.key(0), jnp.zeros((1, 4, 4, 3))))


def test_local_response_norm_reference():
  x = np.random.default_rng(3).normal(size=(2, 3, 3, 7)).astype(np.float32)
  want = np.empty_like(x)
  for c in range(7):
    window = x[..., max(0, c - 2):c + 3]
    want[..., c] = x[..., c] / (1.0 + 1e-4 * (window ** 2).sum(-1)) ** 0.75
  np.testing.assert_allclose(cifar.local_response_norm(jnp.asarray(x)), want,
                             rtol=1e-6)


def test_channel_shuffle_reference():
  # PyTorch semantics on NCHW: view(N, g, C/g, ...).permute(0, 2, 1, ...).
  x = np.arange(2 * 6, dtype=np.float32).reshape(1, 1, 2, 6)
  got = np.asarray(cifar.channel_shuffle(jnp.asarray(x), 3))
  np.testing.assert_array_equal(got[0, 0, 0], [0, 2, 4, 1, 3, 5])
  np.testing.assert_array_equal(got[0, 0, 1], [6, 8, 10, 7, 9, 11])


# ------------------------------------------- LeNet fast pooling and scan head


@pytest.mark.parametrize("shape", [(3, 8, 8, 2), (2, 7, 9, 3), (1, 28, 28, 1)])
def test_max_pool_2x2_matches_numpy(shape):
  from jaxkd.models.lenet import max_pool_2x2
  x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
  b, h, w, c = shape
  want = np.full((b, h // 2, w // 2, c), -np.inf, np.float32)
  for i in range(h // 2):
    for j in range(w // 2):
      want[:, i, j] = x[:, 2 * i:2 * i + 2, 2 * j:2 * j + 2].max(axis=(1, 2))
  np.testing.assert_array_equal(np.asarray(max_pool_2x2(x)), want)


@pytest.mark.parametrize("hw,c,o,k", [(4, 3, 8, 5), (7, 2, 3, 3), (5, 1, 2, 5)])
def test_unrolled_conv_matches_numpy_same_conv(hw, c, o, k):
  from jaxkd.models.lenet import unrolled_conv
  rng = np.random.default_rng(1)
  x = rng.normal(size=(2, hw, hw, c)).astype(np.float32)
  kern = rng.normal(size=(k, k, c, o)).astype(np.float32)
  bias = rng.normal(size=(o,)).astype(np.float32)
  p = (k - 1) // 2
  xp = np.pad(x, ((0, 0), (p, k - 1 - p), (p, k - 1 - p), (0, 0)))
  want = np.zeros((2, hw, hw, o))
  for i in range(hw):
    for j in range(hw):
      want[:, i, j] = np.einsum("bhwc,hwco->bo", xp[:, i:i + k, j:j + k], kern)
  np.testing.assert_allclose(np.asarray(unrolled_conv(x, kern, bias)),
                             want + bias, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name,shape", [("lenet5_half", (28, 28, 1)),
                                        ("lenet5", (8, 8, 1)),
                                        ("lenet5_half", (10, 10, 1))])
def test_lenet_scan_head_equals_forward(name, shape):
  """scan_head on scan_stem (pool phases where H, W are multiples of 4,
  the plain stem at 10x10) and on the plain stem equals the forward."""
  model = get_model(name, 10, conv_impl="xla")
  v = init_model(model, jax.random.key(0), shape)
  x = np.random.default_rng(2).random((5,) + shape).astype(np.float32)
  want = np.asarray(model.apply(v, x))
  s = model.apply(v, x, method=model.scan_stem)
  assert s.ndim == (5 if shape[0] % 4 == 0 else 4)
  for h in (s, model.apply(v, x, method=model.stem)):
    np.testing.assert_allclose(
        np.asarray(model.apply(v, h, method=model.scan_head)), want,
        rtol=1e-5, atol=1e-5)


def test_pool_phases_max_is_max_pool():
  from jaxkd.models.lenet import pool_phases
  x = np.random.default_rng(3).normal(size=(2, 6, 8, 3)).astype(np.float32)
  ph = np.asarray(pool_phases(x))
  assert ph.shape == (2, 4, 3, 4, 3)
  want = x.reshape(2, 3, 2, 4, 2, 3).max(axis=(2, 4))   # NumPy 2x2 pool
  np.testing.assert_array_equal(ph.max(axis=1), want)
  np.testing.assert_array_equal(ph[:, 1], x[:, 0::2, 1::2])


def _np_conv_pool(x, kern, bias):
  """NumPy float64 SAME stride-1 conv + bias, then 2x2 max pool."""
  b, h, w, _ = x.shape
  kh, kw, _, o = kern.shape
  ph, pw = (kh - 1) // 2, (kw - 1) // 2
  xp = np.pad(x.astype(np.float64),
              ((0, 0), (ph, kh - 1 - ph), (pw, kw - 1 - pw), (0, 0)))
  y = np.zeros((b, h, w, o))
  for i in range(h):
    for j in range(w):
      y[:, i, j] = np.einsum("bhwc,hwco->bo", xp[:, i:i + kh, j:j + kw], kern)
  y += bias
  return y.reshape(b, h // 2, 2, w // 2, 2, o).max(axis=(2, 4))


@pytest.mark.parametrize("hw,c,o,k", [((6, 8), 2, 3, 5), ((4, 4), 3, 8, 3),
                                      ((8, 6), 1, 2, 1), ((6, 6), 2, 2, 4),
                                      ((10, 4), 1, 1, 7), ((2, 2), 1, 1, 5)])
def test_conv_pool_rows_matches_numpy(hw, c, o, k):
  from jaxkd.models.lenet import conv_pool_rows
  rng = np.random.default_rng(4)
  x = rng.normal(size=(3,) + hw + (c,)).astype(np.float32)
  kern = rng.normal(size=(k, k, c, o)).astype(np.float32)
  bias = rng.normal(size=(o,)).astype(np.float32)
  np.testing.assert_allclose(np.asarray(conv_pool_rows(x, kern, bias)),
                             _np_conv_pool(x, kern, bias), rtol=1e-5,
                             atol=1e-5)


def test_conv_pool_rows_gradient_matches_conv():
  """Gradients (input, kernel, bias) equal those of nn.Conv's convolution
  followed by max_pool_2x2."""
  from jaxkd.models.lenet import conv_pool_rows
  rng = np.random.default_rng(5)
  x = rng.normal(size=(2, 8, 6, 3)).astype(np.float32)
  kern = rng.normal(size=(5, 5, 3, 4)).astype(np.float32)
  bias = rng.normal(size=(4,)).astype(np.float32)
  wt = rng.normal(size=(2, 4, 3, 4)).astype(np.float32)

  def ref(x, k, b):
    y = jax.lax.conv_general_dilated(x, k, (1, 1), "SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return jnp.sum(wt * flax.linen.max_pool(y + b, (2, 2), strides=(2, 2)))

  got = jax.grad(lambda *a: jnp.sum(wt * conv_pool_rows(*a)),
                 argnums=(0, 1, 2))(x, kern, bias)
  want = jax.grad(ref, argnums=(0, 1, 2))(x, kern, bias)
  for g, w_ in zip(got, want):
    np.testing.assert_allclose(np.asarray(g), np.asarray(w_), rtol=1e-4,
                               atol=1e-4)
