"""The pair-scan engine of Active Mixup: C2 and lam* over all pairs, top-k.

Wang et al., "Neural Networks Are More Productive Teachers Than Human Raters:
Active Mixup for Data-Efficient Knowledge Distillation from a Blackbox Model",
CVPR 2020.

From n images the candidates are every mixed image

  x_ij(lam) = lam x_i + (1 - lam) x_j,    i < j,  lam in a grid (0.3..0.7),

the student confidence is C1(x) = max_y P_S(y | x), and the pair confidence is
C2(i, j) = min_lam C1(x_ij(lam)) with minimiser lam*. `select_pairs` returns
the k pairs of lowest C2, `pair_confidence` C2 of every pair, and
`select_mixed_images` the k mixed images of lowest C1 over pairs and
lambdas. The strategies that pay for them are in `jaxkd.selection.mixup`.

The scan is the cost: n (n - 1) / 2 pairs x L lambdas student forwards
(n = 2000 and L = 11: ~2M pairs, 22M forwards), so it is organised for speed
and O(block + k) memory:

* Pairs are numbered row-major (p = 0 .. P-1 over i < j); a block is a
  contiguous range of p. Each block is one jitted call that turns p into
  (i, j) on the device, gathers the two rows, mixes them for every lam and
  runs the student on the [block * L] images at once (pair-major, so the two
  source rows are reused by all L mixes while they are in cache). The pool of
  mixed images is never materialised.
* `select_pairs` carries a running top-k (sorted by (C2, p)) through the
  blocks, merging each block's sorted candidates only when one of them beats
  the current k-th key. Ties are broken by pair order, so the result is
  deterministic and independent of the block size and the device count.
* First-layer fast path: if the student's first layer is affine and precedes
  any nonlinearity (models declaring `has_linear_stem`), then
  stem(x_ij(lam)) = lam stem(x_i) + (1 - lam) stem(x_j) exactly (bias
  included, since lam + (1 - lam) = 1), so the stem runs once per real image
  and the blocks mix stem outputs and run only `head_from_stem`.
* On CPU without a mesh, a block runs as a `lax.map` over chunks of about
  `_CPU_CHUNK_FORWARDS` forwards, so each chunk's intermediates stay in
  cache (the block still merges into the top-k once).
* With a `mesh`, each block's pairs are sharded over its ("data",) axis; the
  running top-k is replicated.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from jaxkd import parallel
from jaxkd.validation import JaxkdError, check_features, check_k, check_rank

ApplyFn = Callable[[Any, jax.Array], jax.Array]

# Student forwards per block (pairs per block = DEFAULT_BATCH_SIZE // L).
DEFAULT_BATCH_SIZE = 2816
# On CPU a block runs as a loop over chunks of about this many forwards, so
# the chunk's intermediates stay in cache and their buffers are reused
# instead of freshly paged in.
_CPU_CHUNK_FORWARDS = 704
_INT32_MAX = np.iinfo(np.int32).max


# ------------------------------------------------------------- helpers ---


def default_lambdas() -> np.ndarray:
  """The paper's grid 0.3, 0.34, ..., 0.7 (11 values), float64 [11]."""
  return np.round(np.linspace(0.3, 0.7, 11), 2)


def mix_images(images: jax.Array, pairs: jax.Array, lams: jax.Array
               ) -> jax.Array:
  """Mixed images x_ij(lam) = lam x_i + (1 - lam) x_j, in float32.

  Args:
    images: [n, H, W, C] pool images.
    pairs: [k, 2] int pool indices (i, j).
    lams: [k] mixing weights of x_i.

  Returns:
    [k, H, W, C] float32.

  Examples:
    >>> x = np.arange(3.0).reshape(3, 1, 1, 1)
    >>> mix_images(x, np.array([[0, 2]]), np.array([0.25]))[:, 0, 0, 0]
    Array([1.5], dtype=float32)
  """
  check_rank("images", images, 4)
  pairs = jnp.asarray(pairs)
  lams = jnp.asarray(lams, jnp.float32)
  if pairs.ndim != 2 or pairs.shape[1] != 2 or lams.shape != pairs.shape[:1]:
    raise JaxkdError(f"pairs must be [k, 2] and lams [k], got "
                     f"{tuple(pairs.shape)} and {tuple(lams.shape)}.")
  images = jnp.asarray(images, jnp.float32)
  lam = lams.reshape((-1,) + (1,) * (images.ndim - 1))
  return lam * images[pairs[:, 0]] + (1 - lam) * images[pairs[:, 1]]


def linear_stem_fns(model: Any) -> Tuple[ApplyFn, ApplyFn]:
  """(stem_fn, head_fn) of a Flax model that declares `has_linear_stem`.

  `stem_fn(variables, x)` is the model's first affine layer before its
  nonlinearity and `head_fn(variables, h)` the rest (the model's
  inference-only `scan_stem` / `scan_head` when it defines them, else
  `stem` / `head_from_stem`), so that `head_fn(v, stem_fn(v, x)) ==
  model.apply(v, x)` up to rounding. `scan_stem` may return the stem in
  any layout linear in x (e.g. LeNet's pool phases): mixing is elementwise.

  Raises:
    JaxkdError: if the model does not declare a linear stem.
  """
  if not getattr(model, "has_linear_stem", False):
    raise JaxkdError(
        f"{type(model).__name__} does not declare has_linear_stem = True; "
        "use the plain path (stem_fn=head_fn=None).")
  try:
    return _cached_stem_fns(model)
  except TypeError:  # an unhashable module: fresh functions.
    return _stem_fns(model)


@functools.lru_cache(maxsize=32)
def _cached_stem_fns(model: Any) -> Tuple[ApplyFn, ApplyFn]:
  # The same function objects for the same model, so the jitted scan blocks
  # (cached on the function) compile once per run, not once per round.
  return _stem_fns(model)


def _stem_fns(model: Any) -> Tuple[ApplyFn, ApplyFn]:
  # A model may offer an inference-only head tuned for throughput, and a
  # stem in the layout that head reads (any layout linear in x mixes the
  # same way).
  head = getattr(model, "scan_head", None)
  stem = getattr(model, "scan_stem", None) if head else None
  stem_fn = lambda v, x: model.apply(v, x, method=stem or model.stem)
  head_fn = lambda v, h: model.apply(v, h,
                                     method=head or model.head_from_stem)
  return stem_fn, head_fn


def max_softmax(logits: jax.Array) -> jax.Array:
  """C1 = max_y softmax(logits)_y = 1 / sum_y exp(l_y - max l).

  [..., C] -> [...].
  """
  logits = logits.astype(jnp.float32)
  # Written without a reduce over the class axis (a maximum over column
  # slices, a sum as a dot with ones): XLA:CPU otherwise re-lays out the
  # model's last layers for the reduce, which slows the Active Mixup scan.
  # Same values.
  cols = [logits[..., c] for c in range(logits.shape[-1])]
  top = functools.reduce(jnp.maximum, cols)
  z = logits - top[..., None]
  return 1.0 / (jnp.exp(z) @ jnp.ones((logits.shape[-1],), jnp.float32))


def pair_indices(p: np.ndarray, n: int) -> np.ndarray:
  """Row-major linear pair numbers p -> pairs (i, j), i < j. [m] -> [m, 2]."""
  p = np.asarray(p, np.int64)
  offsets = _row_offsets(n).astype(np.int64)
  i = np.searchsorted(offsets, p, side="right") - 1
  j = p - offsets[i] + i + 1
  return np.stack([i, j], axis=-1).astype(np.int32)


def pair_numbers(pairs: np.ndarray, n: int) -> np.ndarray:
  """Pairs (i, j) in either order -> row-major linear numbers. [m, 2] -> [m]."""
  pairs = np.asarray(pairs, np.int64)
  i, j = pairs.min(axis=1), pairs.max(axis=1)
  return i * (2 * n - i - 1) // 2 + (j - i - 1)


def _row_offsets(n: int) -> np.ndarray:
  """offsets[i] = number of pairs in rows < i, for i = 0 .. n-1. int32 [n]."""
  i = np.arange(n, dtype=np.int64)
  return (i * (2 * n - i - 1) // 2).astype(np.int32)


# ------------------------------------------------------- jitted blocks ---


class TopKState(NamedTuple):
  """Running k lowest (key, p), sorted ascending by (key, p).

  Attributes:
    key: [k] float32, C2 of valid pairs (in [0, 1]), 2.0 for a NaN C2, +inf
      for empty slots.
    p: [k] int32 row-major pair numbers (INT32_MAX in empty slots).
    lam_index: [k] int32 index of lam* in the sorted lambda grid.
  """
  key: jax.Array
  p: jax.Array
  lam_index: jax.Array


def _init_topk(k: int) -> TopKState:
  return TopKState(jnp.full((k,), jnp.inf, jnp.float32),
                   jnp.full((k,), _INT32_MAX, jnp.int32),
                   jnp.zeros((k,), jnp.int32))


def _block_confidence(model_fn: ApplyFn, params: Any, source: jax.Array,
                      offsets: jax.Array, lambdas: jax.Array, p: jax.Array,
                      n: int, sharding) -> Tuple[jax.Array, jax.Array]:
  """C2 and argmin-lam index for the pairs numbered p. [B] -> ([B], [B]).

  `source` is the [n, ...] array that is mixed: the images (plain path) or
  their stem outputs (fast path), and `model_fn` maps mixed rows to logits.
  Rows of p beyond the last pair are clamped (their results are masked by
  the caller).
  """
  num_lams = lambdas.shape[0]
  p = jnp.minimum(p, n * (n - 1) // 2 - 1)
  i = jnp.searchsorted(offsets, p, side="right").astype(jnp.int32) - 1
  j = p - offsets[i] + i + 1
  xi, xj = source[i], source[j]                      # [B, ...]
  lam = lambdas.reshape((1, num_lams) + (1,) * (source.ndim - 1))
  mixed = lam * xi[:, None] + (1 - lam) * xj[:, None]   # [B, L, ...]
  mixed = mixed.reshape((-1,) + source.shape[1:])       # pair-major [B*L, ...]
  if sharding is not None:
    mixed = jax.lax.with_sharding_constraint(mixed, sharding)
  c1 = max_softmax(model_fn(params, mixed)).reshape(-1, num_lams)
  # argmin returns the first minimum: the smallest lam on ties (sorted grid).
  return jnp.min(c1, axis=1), jnp.argmin(c1, axis=1).astype(jnp.int32)


def _merge_topk(state: TopKState, key: jax.Array, p: jax.Array,
                lam_index: jax.Array) -> TopKState:
  """Merges a block (p ascending, all above state.p) into the running top-k."""
  k = state.key.shape[0]
  key, p, lam_index = jax.lax.sort((key, p, lam_index), num_keys=2)
  m = min(k, key.shape[0])
  key, p, lam_index = key[:m], p[:m], lam_index[:m]

  def merge(_):
    merged = jax.lax.sort(
        (jnp.concatenate([state.key, key]), jnp.concatenate([state.p, p]),
         jnp.concatenate([state.lam_index, lam_index])), num_keys=2)
    return TopKState(*(a[:k] for a in merged))

  # Block p are all larger than state p, so only a strictly smaller key
  # can enter: skip the merge sort when none does.
  return jax.lax.cond(key[0] < state.key[-1], merge, lambda _: state, None)


def _chunk_pairs(num_lams: int, mesh: Optional[Mesh]) -> Optional[int]:
  """Pairs per chunk of a block (CPU without a mesh), else None."""
  if mesh is not None or jax.default_backend() != "cpu":
    return None
  return max(1, _CPU_CHUNK_FORWARDS // num_lams)


@functools.lru_cache(maxsize=32)
def _jitted_scan_block(model_fn: ApplyFn, n: int, block: int, k: int,
                       mesh: Optional[Mesh], chunk: Optional[int] = None):
  """jit of one block: (params, source, offsets, lambdas, excluded, start,
  state) -> new state (k > 0) or (c2, lam_index) (k == 0). With `chunk`
  (which divides `block`) the block's pairs run as a loop over chunks."""
  num_pairs = n * (n - 1) // 2
  chunk = block if chunk is None else chunk
  sharding = None if mesh is None else parallel.data_sharding(mesh)

  def step(params, source, offsets, lambdas, excluded, start, state):
    p = start + jnp.arange(block, dtype=jnp.int32)
    if sharding is not None:
      p = jax.lax.with_sharding_constraint(p, sharding)
    if chunk < block:   # a loop over chunks (CPU, one device)
      c2, lam_index = jax.lax.map(
          lambda q: _block_confidence(model_fn, params, source, offsets,
                                      lambdas, q, n, None),
          p.reshape(-1, chunk))
      c2, lam_index = c2.reshape(-1), lam_index.reshape(-1)
    else:
      c2, lam_index = _block_confidence(model_fn, params, source, offsets,
                                        lambdas, p, n, sharding)
    if k == 0:
      return c2, lam_index
    pos = jnp.clip(jnp.searchsorted(excluded, p), 0, excluded.shape[0] - 1)
    valid = (p < num_pairs) & (excluded[pos] != p)
    key = jnp.where(jnp.isnan(c2), 2.0, c2)
    key = jnp.where(valid, key, jnp.inf)
    p = jnp.where(valid, p, _INT32_MAX)
    return _merge_topk(state, key, p, lam_index)

  if mesh is None:
    return jax.jit(step)
  rep = parallel.replicated_sharding(mesh)
  return jax.jit(step, in_shardings=rep, out_shardings=rep)


@functools.lru_cache(maxsize=8)
def _jitted_stem(stem_fn: ApplyFn):
  return jax.jit(stem_fn)


# ---------------------------------------------------------- public API ---


def _check_inputs(images, lambdas, batch_size, stem_fn, head_fn):
  """Host-side validation; returns (images, sorted unique lambdas float32)."""
  check_features("images", images, rank=4)
  n = int(np.shape(images)[0])
  if n < 2:
    raise JaxkdError(f"Active Mixup needs at least 2 images, got {n}.")
  if n * (n - 1) // 2 + 2 ** 20 >= _INT32_MAX:
    raise JaxkdError(f"n={n} images give too many pairs for int32 numbering.")
  lam = np.asarray(lambdas, np.float64)
  if lam.ndim != 1 or lam.size == 0:
    raise JaxkdError(f"lambdas must be a non-empty 1-D array, got shape "
                     f"{lam.shape}.")
  if not np.all(np.isfinite(lam)) or np.any((lam < 0) | (lam > 1)):
    raise JaxkdError(f"lambdas must lie in [0, 1], got {lam.tolist()}.")
  if (isinstance(batch_size, bool)
      or not isinstance(batch_size, (int, np.integer)) or batch_size <= 0):
    raise JaxkdError(f"batch_size must be a positive int, got {batch_size!r}.")
  if (stem_fn is None) != (head_fn is None):
    raise JaxkdError("Pass both stem_fn and head_fn (fast path) or neither.")
  return n, np.unique(lam).astype(np.float32)


def _excluded_numbers(exclude, n: int) -> np.ndarray:
  """Sorted unique row-major numbers of the excluded pairs (at least one
  entry: INT32_MAX pads, padded to a power of two to limit recompiles)."""
  if exclude is None:
    nums = np.zeros((0,), np.int64)
  else:
    ex = np.asarray(exclude)
    if ex.size == 0:
      ex = ex.reshape(0, 2)
    if ex.ndim != 2 or ex.shape[1] != 2:
      raise JaxkdError(f"exclude must be [m, 2] pairs, got shape {ex.shape}.")
    if ex.size and not np.issubdtype(ex.dtype, np.integer):
      if not np.all(ex == np.round(ex)):
        raise JaxkdError("exclude must hold integer pool indices.")
      ex = ex.astype(np.int64)
    if ex.size and (ex.min() < 0 or ex.max() >= n):
      raise JaxkdError(f"exclude indices must lie in [0, {n}).")
    if np.any(ex[:, 0] == ex[:, 1]):
      raise JaxkdError("exclude holds a pair (i, i); pairs need i != j.")
    nums = np.unique(pair_numbers(ex, n))
  size = 1 << int(np.ceil(np.log2(len(nums) + 1)))
  out = np.full((size,), _INT32_MAX, np.int32)
  out[:len(nums)] = nums
  return out, len(nums)


def _prepare(apply_fn, params, images, lambdas, batch_size, stem_fn, head_fn,
             mesh):
  """Source rows to mix, the model function, the block size and placement."""
  n, lam = _check_inputs(images, lambdas, batch_size, stem_fn, head_fn)
  images = jnp.asarray(images, jnp.float32)
  if stem_fn is None:
    if apply_fn is None:
      raise JaxkdError("apply_fn is required for the plain path.")
    source, model_fn = images, apply_fn
  else:
    stem = _jitted_stem(stem_fn)
    chunks = [stem(params, images[s:s + 1024]) for s in range(0, n, 1024)]
    source = jnp.concatenate(chunks) if len(chunks) > 1 else chunks[0]
    model_fn = head_fn
  shards = 1 if mesh is None else parallel.num_shards(mesh)
  block = max(1, batch_size // len(lam))
  block = -(-block // shards) * shards        # a multiple of the device count
  block = min(block, -(-(n * (n - 1) // 2) // shards) * shards)
  chunk = _chunk_pairs(len(lam), mesh)
  if chunk is not None:
    chunk = min(chunk, block)
    block = -(-block // chunk) * chunk         # a multiple of the chunk
  offsets = _row_offsets(n)
  if mesh is not None:
    params, source = parallel.replicate(mesh, (params, source))
  return (n, lam, source, model_fn, block, chunk, jnp.asarray(offsets),
          params)


def pair_confidence(apply_fn: Optional[ApplyFn], params: Any,
                    images: jax.Array, lambdas: Any, *,
                    batch_size: int = DEFAULT_BATCH_SIZE,
                    stem_fn: Optional[ApplyFn] = None,
                    head_fn: Optional[ApplyFn] = None,
                    mesh: Optional[Mesh] = None
                    ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Pair confidence C2(i, j) = min_lam C1(x_ij(lam)) of every pair i < j.

  Active Mixup (Wang et al., CVPR 2020), Sec. 3: C1(x) = max_y P_S(y | x).

  Args:
    apply_fn: `apply_fn(params, x) -> logits [B, classes]` for x [B, H, W, C]
      (plain path; unused when stem_fn/head_fn are given).
    params: the student's variables.
    images: [n, H, W, C] float pool images, n >= 2, finite.
    lambdas: [L] mixing weights in [0, 1] (sorted and deduplicated here).
    batch_size: student forwards per block; a block holds
      batch_size // L pairs (rounded up to a multiple of the mesh size).
    stem_fn: `stem_fn(params, x) -> h`, the first affine layer before any
      nonlinearity (fast path, see `linear_stem_fns`).
    head_fn: `head_fn(params, h) -> logits`, the rest of the student.
    mesh: optional ("data",) mesh; each block's pairs are sharded over it.

  Returns:
    pairs: [P, 2] int32, every i < j in row-major order, P = n (n - 1) / 2.
    c2: [P] float32 pair confidence.
    lam_star: [P] float32, the lam attaining c2 (the smallest on ties).

  Raises:
    JaxkdError: on n < 2, bad lambdas, NaN/inf or non-4-D images.

  Examples:
    >>> w = np.array([[1.0, -1.0]], np.float32)
    >>> apply_fn = lambda p, x: x.reshape(len(x), 1) @ p
    >>> x = np.array([0.0, 1.0, 2.0], np.float32).reshape(3, 1, 1, 1)
    >>> pairs, c2, lam = pair_confidence(apply_fn, w, x, [0.3, 0.5])
    >>> pairs.tolist(), np.round(c2.astype(float), 3).tolist(), lam.tolist()
    ([[0, 1], [0, 2], [1, 2]], [0.731, 0.881, 0.953], [0.5, 0.5, 0.5])
  """
  n, lam, source, model_fn, block, chunk, offsets, params = _prepare(
      apply_fn, params, images, lambdas, batch_size, stem_fn, head_fn, mesh)
  num_pairs = n * (n - 1) // 2
  step = _jitted_scan_block(model_fn, n, block, 0, mesh, chunk)
  lam_dev = jnp.asarray(lam)
  dummy = jnp.zeros((1,), jnp.int32)
  outs = [step(params, source, offsets, lam_dev, dummy, jnp.int32(s), None)
          for s in range(0, num_pairs, block)]
  c2 = np.concatenate([np.asarray(c) for c, _ in outs])[:num_pairs]
  li = np.concatenate([np.asarray(i) for _, i in outs])[:num_pairs]
  pairs = pair_indices(np.arange(num_pairs), n)
  return pairs, c2.astype(np.float32), lam[li]


def select_pairs(apply_fn: Optional[ApplyFn], params: Any, images: jax.Array,
                 k: int, lambdas: Any, *, exclude: Optional[Any] = None,
                 batch_size: int = DEFAULT_BATCH_SIZE,
                 stem_fn: Optional[ApplyFn] = None,
                 head_fn: Optional[ApplyFn] = None,
                 mesh: Optional[Mesh] = None
                 ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
  """The k pairs of lowest pair confidence C2, ascending (Active Mixup).

  Scans all pairs i < j block by block with a running top-k, so memory is
  O(block + k); never builds the pool of mixed images. Ties in C2 go to the
  earlier pair in row-major order. See `pair_confidence` for the arguments.

  Args:
    apply_fn: `apply_fn(params, x) -> logits` (plain path).
    params: the student's variables.
    images: [n, H, W, C] float pool images.
    k: number of pairs to return, 1 <= k <= available pairs.
    lambdas: [L] mixing weights in [0, 1].
    exclude: optional [m, 2] int pairs already queried (either order); they
      are never returned.
    batch_size: student forwards per block.
    stem_fn: first-layer function for the exact fast path.
    head_fn: rest-of-model function for the fast path.
    mesh: optional ("data",) mesh to shard each block's pairs over.

  Returns:
    pairs: [k, 2] int32 (i < j), by ascending C2.
    lam_star: [k] float32 lam attaining each C2 (the smallest on ties).
    c2: [k] float32 ascending.

  Raises:
    JaxkdError: on bad images or lambdas, k <= 0 or k larger than the number
      of pairs not excluded, or a malformed `exclude`.

  Examples:
    >>> w = np.array([[1.0, -1.0]], np.float32)
    >>> apply_fn = lambda p, x: x.reshape(len(x), 1) @ p
    >>> x = np.array([0.0, 1.0, 2.0], np.float32).reshape(3, 1, 1, 1)
    >>> pairs, lam, c2 = select_pairs(apply_fn, w, x, 1, [0.5],
    ...                               exclude=[[1, 0]])
    >>> pairs.tolist()
    [[0, 2]]
  """
  n_img = np.shape(images)[0] if np.ndim(images) == 4 else None
  if n_img is not None and n_img >= 2:
    excluded, m = _excluded_numbers(exclude, n_img)
    check_k(k, n_img * (n_img - 1) // 2 - m, "unqueried pairs")
  n, lam, source, model_fn, block, chunk, offsets, params = _prepare(
      apply_fn, params, images, lambdas, batch_size, stem_fn, head_fn, mesh)
  num_pairs = n * (n - 1) // 2
  step = _jitted_scan_block(model_fn, n, block, k, mesh, chunk)
  lam_dev = jnp.asarray(lam)
  excluded = jnp.asarray(excluded)
  state = _init_topk(k)
  for s in range(0, num_pairs, block):
    state = step(params, source, offsets, lam_dev, excluded, jnp.int32(s),
                 state)
  key, p, li = (np.asarray(a) for a in state)
  if np.any(p == _INT32_MAX):   # cannot happen after check_k
    raise JaxkdError("internal error: fewer valid pairs than k.")
  c2 = np.asarray(jax.device_get(key), np.float32)
  c2 = np.where(key == 2.0, np.nan, c2).astype(np.float32)
  return pair_indices(p, n), lam[li], c2


def select_mixed_images(apply_fn: Optional[ApplyFn], params: Any,
                        images: jax.Array, k: int, lambdas: Any, *,
                        exclude: Optional[Any] = None,
                        batch_size: int = DEFAULT_BATCH_SIZE,
                        stem_fn: Optional[ApplyFn] = None,
                        head_fn: Optional[ApplyFn] = None,
                        mesh: Optional[Mesh] = None
                        ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
  """The k mixed images x_ij(lam) of lowest C1 over all pairs AND lambdas:
  "vanilla active learning" of Active Mixup's Figure 4, which may pick one
  pair at several lambdas (near-duplicate queries).

  One `select_pairs` scan per lambda, then the k lowest C1 of the L lists
  (the global top-k is contained in their union, so this is exact). Ties go
  to the earlier lambda of the grid, then the earlier pair.

  Args:
    exclude: optional [m, 3] (i, j, lam) already queried; a pair is excluded
      only at the lambda it was paid at (lam matched to 1e-6, either order).
    Others: as `select_pairs`.

  Returns:
    pairs [k, 2] int32 (i < j), lams [k] float, c1 [k] float32 ascending.
  """
  lambdas = np.asarray(lambdas, np.float64).reshape(-1)
  ex = (np.zeros((0, 3)) if exclude is None
        else np.asarray(exclude, np.float64).reshape(-1, 3))
  # Canonical order i < j (the image lam x_i + (1-lam) x_j is the same as
  # (1-lam) x_j + lam x_i).
  swap = ex[:, 0] > ex[:, 1]
  ex = np.where(swap[:, None], ex[:, [1, 0, 2]], ex)
  ex[swap, 2] = 1.0 - ex[swap, 2]
  n = np.shape(images)[0]
  keys, found = [], []
  for li, lam in enumerate(lambdas):
    at = ex[np.abs(ex[:, 2] - lam) < 1e-6, :2].astype(np.int64)
    k_lam = min(k, n * (n - 1) // 2 - len(at))
    if k_lam <= 0:
      continue
    pairs, _, c1 = select_pairs(
        apply_fn, params, images, k_lam, [lam],
        exclude=at if len(at) else None, batch_size=batch_size,
        stem_fn=stem_fn, head_fn=head_fn, mesh=mesh)
    found.append((pairs, np.full(len(pairs), lam), c1))
    keys.append(np.stack([c1.astype(np.float64), np.full(len(pairs), li),
                          pair_numbers(pairs, n)], axis=1))
  if not found:
    raise JaxkdError(f"k={k} exceeds the unqueried mixed images.")
  key = np.concatenate(keys)
  order = np.lexsort((key[:, 2], key[:, 1], key[:, 0]))
  check_k(k, len(order), "unqueried mixed images")
  order = order[:k]
  pairs = np.concatenate([f[0] for f in found])[order]
  lams = np.concatenate([f[1] for f in found])[order]
  c1 = np.concatenate([f[2] for f in found])[order]
  return pairs, lams, c1
