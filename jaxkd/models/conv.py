"""Few-channel convolutions as one banded matmul: a drop-in for `nn.Conv`.

XLA:CPU runs convolutions with a handful of channels (lenet5_half's 1 -> 3
and 3 -> 8, LeNet-5's 1 -> 6) far below the machine's matmul rate, forward
and backward (the benchmarks page of the documentation).
`toeplitz_conv` computes the same stride-1 convolution as one matmul of
stacked input rows with a banded (row-Toeplitz) matrix built from the
kernel; its gradients are matmuls too. Same function, same parameters
(`nn.Conv`'s own "kernel" [kh, kw, C, O] and "bias"), so checkpoints and
initialisation are unchanged; only the float summation order differs
(agreement to float32 rounding, tests/test_conv.py).

`Conv(features, kernel_size, ..., impl=...)` returns an `nn.Conv` whose
`conv_general_dilated` is `conv_general_dilated_fn(impl)`:

  impl="xla"       lax.conv_general_dilated (XLA's convolution), always;
  impl="toeplitz"  the banded matmul where it applies (2-D, NHWC/HWIO,
                   stride 1, no dilation, one feature group), else XLA's;
  impl="auto"      "toeplitz" on the CPU backend for few-channel layers
                   (`use_toeplitz`), XLA's convolution elsewhere (GPU/TPU
                   keep their cuDNN/TPU convolution kernels).

The choice is made when the layer is traced, from the shapes and
`jax.default_backend()`.
"""

from __future__ import annotations

import functools
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

CONV_IMPLS = ("xla", "toeplitz", "auto")

# `auto` uses the banded matmul on CPU when C x O is at most this: the
# layers where it beats XLA's convolution there (1 -> 3, 3 -> 8, 1 -> 6; not
# 6 -> 16, even with two column parts).
_AUTO_MAX_CHANNEL_PRODUCT = 48


def use_toeplitz(in_channels: int, out_channels: int, backend: str) -> bool:
  """Whether impl="auto" picks `toeplitz_conv` for a layer on `backend`."""
  return (backend == "cpu"
          and in_channels * out_channels <= _AUTO_MAX_CHANNEL_PRODUCT)


def _is_nhwc_hwio(dimension_numbers) -> bool:
  if dimension_numbers is None:
    return False
  dn = lax.conv_dimension_numbers((1, 1, 1, 1), (1, 1, 1, 1),
                                  ("NHWC", "HWIO", "NHWC"))
  return tuple(dimension_numbers) == tuple(dn)


@functools.lru_cache(maxsize=64)
def _band_selector(kw: int, wp: int, wo: int) -> np.ndarray:
  """S[dx, x_in, x_out] = 1 where x_in == x_out + dx. float32 [kw, wp, wo]."""
  s = np.zeros((kw, wp, wo), np.float32)
  for dx in range(kw):
    s[dx, np.arange(wo) + dx, np.arange(wo)] = 1.0
  return s


def default_parts(out_width: int) -> int:
  """Column parts `toeplitz_conv` splits an output row into: 2 for even
  widths of at least 8, else 1. Two parts halve the banded matrix's
  zeros."""
  return 2 if out_width >= 8 and out_width % 2 == 0 else 1


def toeplitz_conv(x: jax.Array, kernel: jax.Array,
                  padding: Any = "SAME", parts: Optional[int] = None
                  ) -> jax.Array:
  """Stride-1 2-D convolution (cross-correlation, as lax) as one matmul
  with a banded (row-Toeplitz) matrix.

  Each output row y[b, r] (all W' x O values) is a linear function of the kh
  padded input rows r .. r + kh - 1 (all Wp x C values): stack those rows
  into one vector of kh Wp C entries and multiply by the banded matrix
  T[(dy, x_in, c), (x_out, o)] = kernel[dy, x_in - x_out, c, o] (0 outside
  the band). With `parts` > 1 each output row is split into that many
  column parts of W' / parts, each reading its W' / parts + kw - 1 input
  columns; T is the same for every part (translation invariance), so the
  parts are just more rows of one matmul with fewer zeros. T is built from
  the kernel by a matmul with a constant 0/1 tensor, so the kernel gradient
  is a matmul as well. (W' / parts + kw - 1) / kw times the convolution's
  FLOPs, but one well-shaped matmul.

  Args:
    x: [B, H, W, C] input.
    kernel: [kh, kw, C, O] (HWIO, `nn.Conv`'s layout).
    padding: "SAME", "VALID" or ((top, bottom), (left, right)).
    parts: column parts per output row, dividing W'; default
      `default_parts(W')`.

  Returns:
    [B, H', W', O], equal to `lax.conv_general_dilated` (stride 1,
    NHWC/HWIO/NHWC) up to float rounding.
  """
  b, h, w, c = x.shape
  kh, kw, _, o = kernel.shape
  if isinstance(padding, str):
    pads = lax.padtype_to_pads((h, w), (kh, kw), (1, 1), padding)
  else:
    pads = [tuple(p) for p in padding]
  xp = jnp.pad(x, ((0, 0), tuple(pads[0]), tuple(pads[1]), (0, 0)))
  hp, wp = xp.shape[1], xp.shape[2]
  ho, wo = hp - kh + 1, wp - kw + 1
  if parts is None:
    parts = default_parts(wo)
  if parts < 1 or wo % parts:
    raise ValueError(f"parts must divide the output width {wo}, got {parts}.")
  wq = wo // parts                 # output columns per part
  wi = wq + kw - 1                 # input columns a part reads
  band = jnp.asarray(_band_selector(kw, wi, wq), kernel.dtype)
  t = jnp.einsum("dxw,ydco->yxcwo", band, kernel).reshape(kh * wi * c, wq * o)
  # rows[b, r, q] = input rows r .. r + kh - 1, columns of part q, stacked.
  cols = [xp[:, :, q * wq:q * wq + wi] for q in range(parts)]
  rows = [jnp.concatenate([cq[:, dy:dy + ho].reshape(b, ho, 1, wi * c)
                           for dy in range(kh)], axis=-1) for cq in cols]
  rows = jnp.concatenate(rows, axis=2) if parts > 1 else rows[0]
  y = rows.reshape(b * ho * parts, kh * wi * c) @ t
  return y.reshape(b, ho, wo, o)


@functools.lru_cache(maxsize=None)
def conv_general_dilated_fn(impl: str = "auto"):
  """A `lax.conv_general_dilated` replacement for `nn.Conv` (see module
  docstring); XLA's convolution wherever the banded matmul does not apply."""
  if impl not in CONV_IMPLS:
    raise ValueError(f"conv impl must be one of {CONV_IMPLS}, got {impl!r}.")
  if impl == "xla":
    return lax.conv_general_dilated
  return functools.partial(_dispatch_conv, impl=impl)


def _dispatch_conv(lhs, rhs, window_strides, padding, lhs_dilation=None,
                   rhs_dilation=None, dimension_numbers=None,
                   feature_group_count=1, batch_group_count=1,
                   precision=None, preferred_element_type=None, *, impl):
  plain = all(d == 1 for d in tuple(window_strides) + tuple(
      lhs_dilation or ()) + tuple(rhs_dilation or ()))
  ok = (lhs.ndim == 4 and plain and feature_group_count == 1
        and batch_group_count == 1 and _is_nhwc_hwio(dimension_numbers)
        and preferred_element_type is None)
  if ok and impl == "auto":
    ok = use_toeplitz(rhs.shape[2], rhs.shape[3], jax.default_backend())
  if ok:
    return toeplitz_conv(lhs, rhs, padding)
  return lax.conv_general_dilated(
      lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
      rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
      feature_group_count=feature_group_count,
      batch_group_count=batch_group_count, precision=precision,
      preferred_element_type=preferred_element_type)


def Conv(features: int, kernel_size: Sequence[int], *, impl: str = "auto",
         **kwargs: Any) -> nn.Conv:
  """`nn.Conv(features, kernel_size, **kwargs)` computed by `impl`.

  The module is an `nn.Conv` (same parameters, names and initialisers); only
  the convolution primitive changes.
  """
  return nn.Conv(features, kernel_size,
                 conv_general_dilated=conv_general_dilated_fn(impl), **kwargs)
