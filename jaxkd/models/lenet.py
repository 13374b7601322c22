"""Small students and teachers: an MLP and LeNet-5 (LeCun et al., 1998).

`lenet5_half` halves every channel and hidden width, as the student in
"Knowledge Distillation in Deep Networks under a Constrained Query Budget"
and Active Mixup (Wang et al., CVPR 2020) use.

Both convolutions use SAME padding, so the same module runs on 8x8 digits
and 28x28 MNIST (flatten size 2*2*16 and 7*7*16 respectively).

These models declare `has_linear_stem = True`: their first layer (`stem`) is
affine and comes before any nonlinearity, so
stem(lam x_i + (1 - lam) x_j) == lam stem(x_i) + (1 - lam) stem(x_j).
Active Mixup uses this to compute the stem once per real image (LeNet-5's
`scan_stem`: conv1 laid out by 2x2-pool phase) and calls `scan_head` (an
inference-only `head_from_stem` built for throughput: conv2 and its pool as
one matmul over two-row chunks, `conv_pool_rows`) on the mixed outputs.

Max pooling is written as the maximum of four strided slices
(`max_pool_2x2`): the same values as `nn.max_pool(x, (2, 2), strides=(2, 2))`,
and on CPU faster than XLA's reduce_window with few channels; its gradient
is written out (same values as autodiff's, faster on XLA:CPU).

The convolutions are `jaxkd.models.conv.Conv` (an `nn.Conv` with the same
parameters). `conv_impl="auto"` runs layers with few channels as one banded
matmul on CPU (faster training steps, benchmarks/train_bench.py), XLA's
convolution on GPU/TPU; it is the default. `conv_impl="xla"` forces XLA's
convolution everywhere (the two agree to float32 rounding, not bitwise).
"""

from __future__ import annotations

import functools
from typing import ClassVar, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxkd.models.conv import Conv

# Largest unrolled convolution matrix `scan_head` builds (entries; 16 MiB).
_MAX_UNROLLED = 1 << 22


def _max4(a, b, c, d):
  """Elementwise maximum of four arrays (a 2x2 pool's four phases)."""
  return jnp.maximum(jnp.maximum(a, b), jnp.maximum(c, d))


def _pool_slices(x: jax.Array):
  h, w = x.shape[1] // 2 * 2, x.shape[2] // 2 * 2
  return (x[:, 0:h:2, 0:w:2], x[:, 0:h:2, 1:w:2],
          x[:, 1:h:2, 0:w:2], x[:, 1:h:2, 1:w:2])


@jax.custom_vjp
def max_pool_2x2(x: jax.Array) -> jax.Array:
  """2x2 max pool, stride 2, VALID: [B, H, W, C] -> [B, H//2, W//2, C].

  Equal to `nn.max_pool(x, (2, 2), strides=(2, 2))`, computed as the
  elementwise maximum of the four strided slices, which XLA fuses with the
  surrounding elementwise ops. The gradient is written out (`_pool_bwd`):
  the same values autodiff of the two-level `jnp.maximum` gives (ties
  share the gradient equally, as `lax.max` does), built by interleaving
  instead of as the sum of four strided-slice adjoints, which XLA:CPU runs
  slower.
  """
  return _max4(*_pool_slices(x))


def _share(x: jax.Array, y: jax.Array) -> jax.Array:
  """d max(x, y) / dx as `lax.max` defines it: 1, 1/2 on ties, 0."""
  return jnp.where(x > y, 1.0, jnp.where(x == y, 0.5, 0.0)).astype(x.dtype)


def _pool_fwd(x):
  return max_pool_2x2(x), x


def _pool_bwd(x, g):
  a, b, c, d = _pool_slices(x)
  ab, cd = jnp.maximum(a, b), jnp.maximum(c, d)
  g_ab, g_cd = g * _share(ab, cd), g * _share(cd, ab)
  top = jnp.stack([g_ab * _share(a, b), g_ab * _share(b, a)], axis=3)
  bottom = jnp.stack([g_cd * _share(c, d), g_cd * _share(d, c)], axis=3)
  full = jnp.stack([top, bottom], axis=2)       # [B, H/2, 2, W/2, 2, C]
  bsz, h2, _, w2, _, ch = full.shape
  dx = full.reshape(bsz, 2 * h2, 2 * w2, ch)
  extra = ((0, 0), (0, x.shape[1] - 2 * h2), (0, x.shape[2] - 2 * w2), (0, 0))
  return (jnp.pad(dx, extra) if dx.shape != x.shape else dx,)


max_pool_2x2.defvjp(_pool_fwd, _pool_bwd)


@functools.lru_cache(maxsize=16)
def _unrolled_conv_index(h: int, w: int, c: int, o: int, kh: int, kw: int
                         ) -> np.ndarray:
  """[h w c, h w o] indices into the flattened [kh, kw, c, o] kernel (the
  value kh kw c o points at an appended zero) of a SAME, stride-1 conv."""
  ph, pw = (kh - 1) // 2, (kw - 1) // 2
  y, x, ci, yo, xo, oo = np.ix_(np.arange(h), np.arange(w), np.arange(c),
                                np.arange(h), np.arange(w), np.arange(o))
  return _kernel_index(y - yo + ph, x - xo + pw, ci, oo, kh, kw, c, o
                       ).reshape(h * w * c, h * w * o)


def _kernel_index(dy, dx, ci, oo, kh: int, kw: int, c: int, o: int
                  ) -> np.ndarray:
  """int32 indices of kernel[dy, dx, ci, oo] in the flattened [kh, kw, c, o]
  kernel, or kh kw c o (an appended zero) where the tap (dy, dx) is outside
  the kernel. Arguments broadcast (np.ix_ grids)."""
  valid = (dy >= 0) & (dy < kh) & (dx >= 0) & (dx < kw)
  flat = ((np.clip(dy, 0, kh - 1) * kw + np.clip(dx, 0, kw - 1)) * c + ci
          ) * o + oo
  return np.where(valid, flat, kh * kw * c * o).astype(np.int32)


def _gather_kernel(kernel: jax.Array, idx: np.ndarray) -> jax.Array:
  """The matrix kernel.flat[idx], 0 where idx is the appended-zero slot."""
  table = jnp.concatenate([kernel.reshape(-1), jnp.zeros((1,), kernel.dtype)])
  return table[idx]


def unrolled_conv(x: jax.Array, kernel: jax.Array, bias: jax.Array
                  ) -> jax.Array:
  """SAME, stride-1 convolution as one dense matmul with its unrolled
  (Toeplitz) matrix: [B, H, W, C] x [kh, kw, C, O] -> [B, H, W, O].

  More FLOPs than the convolution (every output sees every input), but one
  large matmul runs near the CPU's peak while XLA's convolution with a few
  channels does not; worth it for small maps only.
  """
  b, h, w, c = x.shape
  kh, kw, _, o = kernel.shape
  y = x.reshape(b, h * w * c) @ _gather_kernel(
      kernel, _unrolled_conv_index(h, w, c, o, kh, kw))
  return y.reshape(b, h, w, o) + bias


@functools.lru_cache(maxsize=16)
def _conv_pool_index(w: int, c: int, o: int, kh: int, kw: int
                     ) -> tuple[tuple[int, ...], np.ndarray]:
  """Offsets e and [2 w c, len(e) 4 (w/2) o] indices into the flattened
  [kh, kw, c, o] kernel (kh kw c o = an appended zero) for `conv_pool_rows`:
  column (e, ry, rx, q, o) holds what input two-row chunk s gives output
  row 2 (s - e) + ry, column 2 q + rx, channel o."""
  ph, pw = (kh - 1) // 2, (kw - 1) // 2
  offs = tuple(range(-((ph + 1) // 2), (kh - ph) // 2 + 1))  # s = t + e
  yi, xi, ci, e, ry, rx, q, oo = np.ix_(
      np.arange(2), np.arange(w), np.arange(c), np.asarray(offs),
      np.arange(2), np.arange(2), np.arange(w // 2), np.arange(o))
  idx = _kernel_index(yi + 2 * e - ry + ph, xi - (2 * q + rx) + pw, ci, oo,
                      kh, kw, c, o)
  return offs, idx.reshape(2 * w * c, -1)


def conv_pool_rows(x: jax.Array, kernel: jax.Array, bias: jax.Array
                   ) -> jax.Array:
  """max_pool_2x2(conv(x) + bias) for a SAME, stride-1 conv, as one matmul
  over two-row chunks: [B, H, W, C] x [kh, kw, C, O] -> [B, H/2, W/2, O].

  H and W must be even. Each chunk of two input rows (2 W C values, a
  contiguous row of x, so no input copy) is multiplied by one matrix whose
  columns are what that chunk adds to the output chunks it reaches
  (offsets e), each laid out as (row parity, column parity, column / 2, O);
  the output chunks are summed from the shifted chunk products, the bias
  added, and the 2x2 pool is the maximum over the four parity blocks.
  About 2 W / kw times the convolution's FLOPs, in a matmul XLA:CPU runs
  near its peak where its own few-channel convolution does not.
  """
  b, h, w, c = x.shape
  kh, kw, _, o = kernel.shape
  if h % 2 or w % 2:
    raise ValueError(f"conv_pool_rows needs even H and W, got {h} x {w}.")
  offs, idx = _conv_pool_index(w, c, o, kh, kw)
  chunks = h // 2
  z = x.reshape(b * chunks, 2 * w * c) @ _gather_kernel(kernel, idx)
  z = z.reshape(b, chunks, len(offs), 4, w // 2 * o)
  y = 0.0
  for k, e in enumerate(offs):   # output chunk t gets z[:, t + e, k]
    lo, hi = max(0, -e), min(chunks, chunks - e)
    if lo < hi:
      y = y + jnp.pad(z[:, lo + e:hi + e, k],
                      ((0, 0), (lo, chunks - hi), (0, 0), (0, 0)))
  y = y + jnp.tile(bias, w // 2)
  y = _max4(y[:, :, 0], y[:, :, 1], y[:, :, 2], y[:, :, 3])
  return y.reshape(b, chunks, w // 2, o)


def pool_phases(h: jax.Array) -> jax.Array:
  """The four 2x2-pool phases of a map: [B, H, W, C] -> [B, 4, H/2, W/2, C],
  phase 2 ry + rx holding h[:, ry::2, rx::2] (H, W even). Linear, so it
  commutes with mixup; max over axis 1 is `max_pool_2x2(h)`."""
  b, hh, ww, c = h.shape
  return h.reshape(b, hh // 2, 2, ww // 2, 2, c).transpose(
      0, 2, 4, 1, 3, 5).reshape(b, 4, hh // 2, ww // 2, c)


def model_outputs(logits, embedding, maps, return_features):
  """What every jaxkd model returns: logits, or with `return_features`
  (logits, {"embedding": [B, D], "maps": tuple of [B, H, W, C]})."""
  if return_features:
    return logits, {"embedding": embedding, "maps": tuple(maps)}
  return logits


class MLP(nn.Module):
  """Multilayer perceptron on flattened images. Input [B, H, W, C]."""
  num_classes: int = 10
  hidden: Sequence[int] = (256, 128)
  has_linear_stem: ClassVar[bool] = True

  def setup(self):
    self.layers = [nn.Dense(h) for h in self.hidden]
    self.head = nn.Dense(self.num_classes)

  def stem(self, x: jax.Array) -> jax.Array:
    """First affine layer, before its ReLU: [B, H, W, C] -> [B, hidden[0]]."""
    return self.layers[0](x.reshape((x.shape[0], -1)))

  def head_from_stem(self, h, train: bool = False, return_features=False):
    del train
    maps = []
    h = nn.relu(h)
    for layer in self.layers[1:]:
      h = nn.relu(layer(h))
    return model_outputs(self.head(h), h, maps, return_features)

  def __call__(self, x, train: bool = False, return_features: bool = False):
    return self.head_from_stem(self.stem(x), train, return_features)


class LeNet5(nn.Module):
  """LeNet-5: conv(5x5)-pool-conv(5x5)-pool-fc-fc-fc. Input [B, H, W, C].

  Feature maps returned for attention transfer: the two post-ReLU conv maps.
  """
  num_classes: int = 10
  channels: Sequence[int] = (6, 16)
  hidden: Sequence[int] = (120, 84)
  conv_impl: str = "auto"
  has_linear_stem: ClassVar[bool] = True

  def setup(self):
    self.conv1 = Conv(self.channels[0], (5, 5), padding="SAME",
                      impl=self.conv_impl)
    self.conv2 = Conv(self.channels[1], (5, 5), padding="SAME",
                      impl=self.conv_impl)
    self.fc1 = nn.Dense(self.hidden[0])
    self.fc2 = nn.Dense(self.hidden[1])
    self.head = nn.Dense(self.num_classes)

  def stem(self, x: jax.Array) -> jax.Array:
    """conv1 before its ReLU: [B, H, W, C] -> [B, H, W, channels[0]]."""
    return self.conv1(x)

  def head_from_stem(self, h, train: bool = False, return_features=False):
    del train
    m1 = nn.relu(h)
    h = max_pool_2x2(m1)
    m2 = nn.relu(self.conv2(h))
    logits, emb = self._classifier(max_pool_2x2(m2))
    return model_outputs(logits, emb, (m1, m2), return_features)

  def _classifier(self, h: jax.Array):
    """fc1-fc2-head on the pooled conv2 maps: (logits, embedding)."""
    h = nn.relu(self.fc1(h.reshape((h.shape[0], -1))))
    emb = nn.relu(self.fc2(h))
    return self.head(emb), emb

  def scan_stem(self, x: jax.Array) -> jax.Array:
    """`stem` in the layout `scan_head` reads fastest (inference scans).

    [B, H, W, C] -> [B, 4, H/2, W/2, channels[0]] (`pool_phases` of conv1,
    before its ReLU) when H and W are multiples of 4, else `stem(x)`.
    A permutation of the stem, so still affine and mixable.
    """
    h = self.stem(x)
    if h.shape[1] % 4 or h.shape[2] % 4:
      return h
    return pool_phases(h)

  def scan_head(self, h: jax.Array) -> jax.Array:
    """Logits from `scan_stem` (or `stem`) outputs, for inference-only scans
    (Active Mixup).

    The same function as `head_from_stem` (to float rounding), reordered for
    throughput: ReLU after pooling (they commute), conv1's pool as a maximum
    over `pool_phases`, and conv2 with its pool as `conv_pool_rows` (one
    matmul over two-row chunks). Stem outputs in the plain [B, H, W, C]
    layout run conv2 as one matmul with its unrolled matrix
    (`unrolled_conv`) when that has at most 2^22 entries, else as `conv2`.

    Args:
      h: [B, 4, H/2, W/2, channels[0]] from `scan_stem`, or [B, H, W,
        channels[0]] from `stem` (conv1 before its ReLU).

    Returns:
      [B, num_classes] logits.
    """
    params = self.conv2.variables["params"]
    if h.ndim == 5:
      h = nn.relu(_max4(h[:, 0], h[:, 1], h[:, 2], h[:, 3]))
      y = conv_pool_rows(h, params["kernel"], params["bias"])
      return self._classifier(nn.relu(y))[0]
    h = nn.relu(max_pool_2x2(h))
    _, hh, ww, c = h.shape
    if hh * ww * c * hh * ww * self.channels[1] <= _MAX_UNROLLED:
      y = unrolled_conv(h, params["kernel"], params["bias"])
    else:
      y = self.conv2(h)
    return self._classifier(nn.relu(max_pool_2x2(y)))[0]

  def __call__(self, x, train: bool = False, return_features: bool = False):
    return self.head_from_stem(self.stem(x), train, return_features)
