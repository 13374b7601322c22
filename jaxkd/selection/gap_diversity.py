"""Uncertainty + diversity selection from the lane-detection KD paper.

Peng, Wang, Liu, Yang. Active Learning for Lane Detection: A Knowledge
Distillation Approach. ICCV 2021.

Three models predict on the pool: M_S, the student trained on the labelled
set L alone (hard labels; `baseline_probs`), M_ST, the student distilled from
the teacher (`student_probs`, the active loop's current student) and M_T,
the teacher (`teacher_probs`).

Uncertainty. The prediction gap D(a, b) is a distance between two models'
probability vectors on a point: total variation 0.5 ||a - b||_1 by default,
or Euclidean ("l2"), or KL(a || b) ("kl"). Our reading of the paper: D_SS
is the gap between the two students, D_SS = D(M_S, M_ST), i.e. what the
student learns from the teacher beyond L, and D_ST the gap between the
distilled student and its teacher, D_ST = D(M_ST, M_T), i.e. what it has not
learnt yet. The score

  Uncr = (D_SS + D_ST) * max(D_ST / D_SS, D_SS / D_ST)

is large when the gaps are large and unbalanced. Zero guard: the ratio is
computed as (max(D_SS, D_ST) + eps) / (min(D_SS, D_ST) + eps), so two zero
gaps give Uncr = 0 (and never NaN) and one zero gap gives a large but finite
score; `eps` is a keyword (default 1e-6).

Diversity. With N_k(q) the k nearest neighbours of q in the pool embedding
(squared Euclidean, q itself excluded), the reverse neighbours (influence
set) of p are RNN_k(p) = {q : p in N_k(q)} and

  Div(p | V) = |RNN_k(p) - V|,

with V the selected set. V starts as the already queried points (they are
labelled, so influencing them adds nothing; from an empty L this is the
paper's setting) and grows with every pick. Div is divided by k (the mean
reverse-neighbour count) to put it on a fixed scale. Picking v removes v
from the influence sets that contain it, which are exactly those of its own
neighbours N_k(v), so the greedy update after each pick is a scatter of -1
on k entries: O(k) per pick after an O(n^2 D) (blocked) kNN pass.

Selection: b greedy steps, each taking the available, not yet picked point
of largest Uncr + beta * Div / k (ties to the lowest index).

Scale. The exact kNN pass is O(n^2 D) time. Up to 8192 points it is one
[512, n] distance block per step of rows; above, it is tiled in [512, 8192]
blocks, O(n k) memory, still exact with ties to the lowest index: each
block's columns are cut in groups of 64 and a row's k nearest within the
block lie in the k groups of smallest minimum (if one lay in another group,
the k groups before it would each hold a closer point), so the exact top k
runs over 64 k candidates instead of 8192, and is merged into the row's
running top k. Quadratic time is still out of reach for n = 10^6 (~10^14
flops), so the strategy (`max_pool`, default 100,000) runs on a uniform
random subset of the pool above that size: the kNN graph, V and the greedy
are those of the subset, stratified so that it keeps the pool's share of
queried points and at least b available ones. Cost O(n C + s^2 D + b s)
for s = min(n, max_pool); the subset is the approximation (the pool a
paper-sized run would see), exact when n <= max_pool.

Cost. The strategy needs M_T's predictions on the whole pool, so it suits a
teacher that is cheap to run while labels are what costs (the paper's
setting: human lane annotation). In jaxkd the active loop obtains them with
`oracle.peek` once (the teacher is fixed) and reports them separately from
paid queries as `unpaid_teacher_forwards`. It also trains M_S once on L.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxkd.fields import setting
from jaxkd.selection.baselines import random_subset
from jaxkd.selection.registry import (SelectionInputs, parse_options,
                                      register_strategy)
from jaxkd.validation import (JaxkdError, check_features, check_k, check_rank,
                              is_concrete, is_int)

_DISTANCES = ("tv", "l2", "kl")


# ---------------------------------------------------------- uncertainty ---


def prediction_gap(a: jax.Array, b: jax.Array, distance: str = "tv",
                   eps: float = 1e-12) -> jax.Array:
  """Distance between two models' probability vectors, per point.

  Args:
    a, b: [..., C] probability vectors.
    distance: "tv" (0.5 sum |a - b|), "l2" (||a - b||_2) or "kl"
      (KL(a || b) = sum a log(a / b), b clipped below at `eps`).

  Returns:
    [...] non-negative gaps.
  """
  if distance not in _DISTANCES:
    raise JaxkdError(f"distance must be one of {_DISTANCES}, got {distance!r}.")
  a = jnp.asarray(a)
  b = jnp.asarray(b)
  if distance == "tv":
    return 0.5 * jnp.sum(jnp.abs(a - b), axis=-1)
  if distance == "l2":
    return jnp.sqrt(jnp.sum(jnp.square(a - b), axis=-1))
  safe_a = jnp.where(a > 0, a, 1.0)
  kl = jnp.where(a > 0, a * (jnp.log(safe_a) - jnp.log(jnp.maximum(b, eps))),
                 0.0)
  return jnp.maximum(jnp.sum(kl, axis=-1), 0.0)


@functools.partial(jax.jit, static_argnames=("distance",))
def _uncertainty(baseline, student, teacher, distance, eps):
  d_ss = prediction_gap(baseline, student, distance)
  d_st = prediction_gap(student, teacher, distance)
  hi = jnp.maximum(d_ss, d_st)
  lo = jnp.minimum(d_ss, d_st)
  return (d_ss + d_st) * ((hi + eps) / (lo + eps))


def uncertainty_score(baseline_probs: jax.Array, student_probs: jax.Array,
                      teacher_probs: jax.Array, *, distance: str = "tv",
                      eps: float = 1e-6) -> jax.Array:
  """Uncr = (D_SS + D_ST) * max(D_ST / D_SS, D_SS / D_ST) per pool point.

  Args:
    baseline_probs: [n, C] M_S, the student trained on L alone.
    student_probs: [n, C] M_ST, the student distilled from the teacher.
    teacher_probs: [n, C] M_T, the teacher.
    distance: prediction gap, see `prediction_gap`.
    eps: > 0, added to both sides of the ratio (zero guard).

  Returns:
    [n] scores >= 0; 0 where both gaps are 0.

  Example:
    >>> import jax.numpy as jnp
    >>> s = jnp.array([[0.5, 0.5]]); t = jnp.array([[0.9, 0.1]])
    >>> float(uncertainty_score(s, s, s)[0])
    0.0
    >>> round(float(uncertainty_score(t, s, t)[0]), 6)
    0.8
  """
  names = ("baseline_probs", "student_probs", "teacher_probs")
  arrays = (baseline_probs, student_probs, teacher_probs)
  for name, x in zip(names, arrays):
    check_features(name, x, 2)
  shapes = [tuple(np.shape(x)) for x in arrays]
  if len(set(shapes)) != 1:
    raise JaxkdError("baseline_probs, student_probs and teacher_probs must "
                     f"have one shape, got {shapes}.")
  if distance not in _DISTANCES:
    raise JaxkdError(f"distance must be one of {_DISTANCES}, got {distance!r}.")
  if not eps > 0:
    raise JaxkdError(f"eps must be > 0, got {eps}.")
  return _uncertainty(*(jnp.asarray(x) for x in arrays), distance, eps)


# ------------------------------------------------------------- diversity ---


@functools.partial(jax.jit, static_argnames=("k", "block"))
def _knn(emb, k, block=512):
  """[n, k] indices of each point's k nearest others (squared Euclidean)."""
  n = emb.shape[0]
  block = min(block, n)
  nb = -(-n // block)
  sq = jnp.sum(emb * emb, axis=1)
  pad = jnp.pad(emb, ((0, nb * block - n), (0, 0)))
  cols = jnp.arange(n)

  def one(start):
    rows = jax.lax.dynamic_slice_in_dim(pad, start, block)
    d = jnp.sum(rows * rows, 1)[:, None] + sq[None, :] - 2.0 * rows @ emb.T
    self_mask = (start + jnp.arange(block))[:, None] == cols[None, :]
    d = jnp.where(self_mask, jnp.inf, d)
    return jax.lax.top_k(-d, k)[1]

  out = jax.lax.map(one, jnp.arange(nb) * block)
  return out.reshape(nb * block, k)[:n].astype(jnp.int32)


# Pools up to this many points take `_knn` (one [512, n] block at a time);
# larger ones the tiled `_knn_tiled` (bounded memory).
_SMALL_KNN = 8192


@functools.partial(jax.jit, static_argnames=("k", "block", "chunk", "group"))
def _knn_tiled(emb, k, block=512, chunk=8192, group=64):
  """`_knn` in [block, chunk] distance tiles: O(n^2 D) time, O(n k +
  block chunk) memory.

  Per tile, the chunk's columns form chunk / group groups; the row's k
  nearest columns of the chunk lie in its k groups of smallest minimum
  (ties: lower group first), so the exact top k is taken over those
  groups' columns, in column order, and merged with the row's running top k
  of the earlier chunks (listed first): ties go to the lowest index, as in
  `_knn`.

  Args:
    emb: [n, D] points.
    k: neighbours per point (k < n).
    block, chunk: rows and columns of a tile; group divides chunk.

  Returns:
    int32 [n, k], nearest first, the point itself excluded.
  """
  n = emb.shape[0]
  block = min(block, n)
  chunk = min(chunk, -(-n // group) * group)
  nr, nc = -(-n // block), -(-n // chunk)
  ng = chunk // group
  kg = min(k, ng)
  sq = jnp.sum(emb * emb, axis=1)
  rows_all = jnp.pad(emb, ((0, nr * block - n), (0, 0)))
  sqr_all = jnp.pad(sq, (0, nr * block - n))
  cols_all = jnp.pad(emb, ((0, nc * chunk - n), (0, 0)))
  # Padded columns are at distance inf.
  sqc_all = jnp.pad(sq, (0, nc * chunk - n), constant_values=jnp.inf)
  offsets = (jnp.arange(ng)[:, None] * group + jnp.arange(group)).reshape(-1)

  def row_block(r0):
    rows = jax.lax.dynamic_slice_in_dim(rows_all, r0, block)
    sqr = jax.lax.dynamic_slice_in_dim(sqr_all, r0, block)
    rid = r0 + jnp.arange(block)

    def col_chunk(carry, c0):
      best, best_i = carry  # [block, k] negated distances, indices
      cols = jax.lax.dynamic_slice_in_dim(cols_all, c0, chunk)
      sqc = jax.lax.dynamic_slice_in_dim(sqc_all, c0, chunk)
      d = sqr[:, None] + sqc[None, :] - 2.0 * rows @ cols.T
      cid = c0 + offsets
      d = jnp.where(rid[:, None] == cid[None, :], jnp.inf, d)
      groups = d.reshape(block, ng, group)
      top_groups = jax.lax.top_k(-jnp.min(groups, -1), kg)[1]
      top_groups = jnp.sort(top_groups, axis=1)  # column order
      cand = jnp.take_along_axis(groups, top_groups[:, :, None], axis=1)
      cand_i = c0 + top_groups[:, :, None] * group + jnp.arange(group)
      v, j = jax.lax.top_k(-cand.reshape(block, kg * group), k)
      i = jnp.take_along_axis(cand_i.reshape(block, kg * group), j, 1)
      v, j = jax.lax.top_k(jnp.concatenate([best, v], 1), k)
      i = jnp.take_along_axis(jnp.concatenate([best_i, i], 1), j, 1)
      return (v, i), None

    init = (jnp.full((block, k), -jnp.inf, emb.dtype),
            jnp.full((block, k), n, jnp.int32))
    (_, idx), _ = jax.lax.scan(col_chunk, init, jnp.arange(nc) * chunk)
    return idx

  out = jax.lax.map(row_block, jnp.arange(nr) * block)
  return out.reshape(nr * block, k)[:n].astype(jnp.int32)


def _knn_any(emb, k):
  """`_knn` for small pools, `_knn_tiled` above `_SMALL_KNN` points."""
  if emb.shape[0] <= _SMALL_KNN:
    return _knn(emb, k)
  return _knn_tiled(emb, k)


def _check_max_pool(max_pool, num_neighbors):
  """None, or an int > num_neighbors (a subset needs a kNN graph)."""
  if max_pool is None:
    return None
  if not is_int(max_pool) or max_pool <= num_neighbors:
    raise JaxkdError(f"max_pool must be None or an int > num_neighbors "
                     f"({num_neighbors}), got {max_pool!r}.")
  return int(max_pool)


def _check_neighbors(num_neighbors, n):
  if (isinstance(num_neighbors, bool)
      or not isinstance(num_neighbors, (int, np.integer))):
    raise JaxkdError(f"num_neighbors must be an int, got {num_neighbors!r}.")
  if not 1 <= num_neighbors <= n - 1:
    raise JaxkdError(
        f"num_neighbors must be in [1, {n - 1}] for {n} pool points, got "
        f"{num_neighbors}.")
  return int(num_neighbors)


def knn_indices(embeddings: jax.Array, num_neighbors: int) -> jax.Array:
  """k nearest neighbours of every pool point, itself excluded.

  embeddings: [n, D]. Returns int32 [n, num_neighbors], nearest first
  (ties: lowest index). O(n^2 D) time, O(n k) memory above 8192 points.
  """
  check_features("embeddings", embeddings, 2)
  k = _check_neighbors(num_neighbors, np.shape(embeddings)[0])
  return _knn_any(jnp.asarray(embeddings), k)


@jax.jit
def _rnn_counts(knn, excluded):
  n = knn.shape[0]
  w = jnp.broadcast_to((~excluded)[:, None], knn.shape).astype(jnp.int32)
  return jnp.zeros((n,), jnp.int32).at[knn].add(w)


def reverse_knn_counts(embeddings: jax.Array, num_neighbors: int,
                       excluded: jax.Array | None = None) -> jax.Array:
  """|RNN_k(p) - V| for every pool point p.

  Args:
    embeddings: [n, D] pool embedding.
    num_neighbors: k.
    excluded: optional [n] bool, the set V (default empty).

  Returns:
    int32 [n]: the number of points q not in V with p among q's k nearest
    neighbours.
  """
  knn = knn_indices(embeddings, num_neighbors)
  n = knn.shape[0]
  if excluded is None:
    excluded = jnp.zeros((n,), bool)
  check_rank("excluded", excluded, 1)
  if np.shape(excluded)[0] != n:
    raise JaxkdError(f"excluded has {np.shape(excluded)[0]} entries, "
                     f"embeddings {n} rows.")
  return _rnn_counts(knn, jnp.asarray(excluded, bool))


# ------------------------------------------------------------- selection ---


@functools.partial(jax.jit, static_argnames=("k", "num_neighbors"))
def _greedy(uncr, emb, available, selected, k, num_neighbors, beta):
  knn = _knn_any(emb, num_neighbors)
  div = _rnn_counts(knn, selected)
  dtype = uncr.dtype

  def body(t, carry):
    div, in_v, picked, picks = carry
    score = uncr + beta * div.astype(dtype) / num_neighbors
    score = jnp.where(available & ~picked, score, -jnp.inf)
    i = jnp.argmax(score).astype(jnp.int32)
    dec = jnp.where(in_v[i], 0, 1)
    div = div.at[knn[i]].add(-dec)
    return div, in_v.at[i].set(True), picked.at[i].set(True), picks.at[t].set(i)

  n = uncr.shape[0]
  init = (div, selected, jnp.zeros((n,), bool), jnp.zeros((k,), jnp.int32))
  return jax.lax.fori_loop(0, k, body, init)[3]


def pool_subset(key: jax.Array, available, k: int, size: int) -> np.ndarray:
  """Sorted positions of a stratified uniform random subset of the pool.

  Keeps the pool's share of unavailable (queried) points, u_s =
  min(u, round(size u / n)), and fills the rest with available ones, at
  least k: a_s = min(a, max(k, size - u_s)) (a, u: available and
  unavailable counts of the n points); if that is short of `size`, more
  unavailable ones. Each side is a `baselines.random_subset` (one key per
  side).

  Args:
    key: PRNG key.
    available: [n] bool.
    k: available points the subset must hold (<= a).
    size: target subset size (< n).

  Returns:
    int64 [a_s + u_s] positions, increasing. O(n log n).
  """
  available = np.asarray(available, bool)
  n, a = len(available), int(available.sum())
  u_s = min(n - a, int(round(size * (n - a) / n)))
  a_s = min(a, max(k, size - u_s))
  u_s = max(u_s, min(n - a, size - a_s))
  k_free, k_paid = jax.random.split(key)
  return np.sort(np.concatenate([random_subset(k_free, available, a_s),
                                 random_subset(k_paid, ~available, u_s)]))


def gap_diversity_select(uncertainty: jax.Array, embeddings: jax.Array,
                         available: jax.Array, k: int, *,
                         num_neighbors: int = 10, beta: float = 1.0,
                         selected: jax.Array | None = None,
                         max_pool: int | None = None,
                         key: jax.Array | None = None) -> jax.Array:
  """Greedy b = k picks maximising Uncr + beta * |RNN(p) - V| / num_neighbors.

  O(s^2 D) time for the kNN graph of s = min(n, max_pool) points, O(k s)
  for the greedy, O(s num_neighbors + n) memory.

  Args:
    uncertainty: [n] Uncr scores (see `uncertainty_score`).
    embeddings: [n, D] pool embedding for the reverse kNN.
    available: [n] bool, points that may be picked.
    k: number of points to pick.
    num_neighbors: k of the kNN graph (1 <= num_neighbors < n).
    beta: >= 0 weight of the diversity term.
    selected: optional [n] bool, the initial V (default: ~available, the
      already queried points).
    max_pool: None (default: the whole pool, exact) or an int: above that
      many points, the selection runs on `pool_subset(key, available, k,
      max_pool)` (its kNN graph, its share of V) and picks among its
      available points (see "Scale" in the module docstring).
    key: PRNG key of that subset (default `jax.random.key(0)`); unused
      when the whole pool is used.

  Returns:
    int32 [k] distinct available indices in pick order.

  Raises:
    JaxkdError: on NaN, wrong ranks or shapes, k outside [1, available].
  """
  check_features("uncertainty", uncertainty, 1)
  check_features("embeddings", embeddings, 2)
  check_rank("available", available, 1)
  n = np.shape(uncertainty)[0]
  if np.shape(embeddings)[0] != n or np.shape(available)[0] != n:
    raise JaxkdError(
        f"uncertainty ({n}), embeddings ({np.shape(embeddings)[0]}) and "
        f"available ({np.shape(available)[0]}) must have the same length.")
  n_avail = (int(np.sum(np.asarray(available, bool)))
             if is_concrete(available) else n)
  k = check_k(k, n_avail, "unqueried pool points")
  num_neighbors = _check_neighbors(num_neighbors, n)
  max_pool = _check_max_pool(max_pool, num_neighbors)
  beta = float(beta)
  if not (beta >= 0 and np.isfinite(beta)):
    raise JaxkdError(f"beta must be >= 0, got {beta}.")
  if selected is not None and tuple(np.shape(selected)) != (n,):
    raise JaxkdError(f"selected has shape {tuple(np.shape(selected))}, "
                     f"expected ({n},).")
  if max_pool is not None and n > max_pool and is_concrete(available):
    sub = pool_subset(jax.random.key(0) if key is None else key, available,
                      k, max_pool)
    local = gap_diversity_select(
        np.asarray(uncertainty)[sub], np.asarray(embeddings)[sub],
        np.asarray(available, bool)[sub], k, num_neighbors=num_neighbors,
        beta=beta, selected=(None if selected is None
                             else np.asarray(selected, bool)[sub]))
    return jnp.asarray(sub[np.asarray(local)], jnp.int32)
  available = jnp.asarray(available, bool)
  selected = ~available if selected is None else jnp.asarray(selected, bool)
  uncertainty = jnp.asarray(uncertainty)
  return _greedy(uncertainty, jnp.asarray(embeddings, uncertainty.dtype),
                 available, selected, k, num_neighbors, beta)


# --------------------------------------------------------- registry glue ---


@dataclasses.dataclass(frozen=True)
class GapDiversityOptions:
  """Options of strategy `gap_diversity`
  (`config.strategy_options.gap_diversity`)."""
  num_neighbors: int = setting(10, "k of the kNN graph of the reverse-kNN "
                               "diversity (1 <= k < pool size).")
  beta: float = setting(1.0, "Weight (>= 0) of the diversity term against "
                        "the prediction-gap uncertainty.")
  distance: str = setting("tv", "Prediction gap between two models: 'tv', "
                          "'l2' or 'kl'.")
  eps: float = setting(1e-6, "Zero guard (> 0) added to both sides of the "
                       "gap ratio.")
  max_pool: Optional[int] = setting(
      100_000, "Above this many pool points, select on a stratified uniform "
      "random subset of this size (the kNN graph is O(size^2 D)); None: "
      "always the whole pool.")

  def validate(self) -> "GapDiversityOptions":
    if not is_int(self.num_neighbors):
      raise JaxkdError(f"num_neighbors must be an int, got "
                       f"{self.num_neighbors!r}.")
    if self.num_neighbors < 1:
      raise JaxkdError(f"num_neighbors must be >= 1, got "
                       f"{self.num_neighbors}.")
    beta = float(self.beta)
    if not (beta >= 0 and np.isfinite(beta)):
      raise JaxkdError(f"beta must be >= 0, got {beta}.")
    if self.distance not in _DISTANCES:
      raise JaxkdError(f"distance must be one of {_DISTANCES}, got "
                       f"{self.distance!r}.")
    if not self.eps > 0:
      raise JaxkdError(f"eps must be > 0, got {self.eps}.")
    _check_max_pool(self.max_pool, self.num_neighbors)
    return self


def _gap_diversity_strategy(key, inputs: SelectionInputs, k: int, **options):
  """Strategy `gap_diversity`; `options`: `GapDiversityOptions` fields.
  `key` draws the subset of a pool above `max_pool` points (unused below:
  the selection is deterministic)."""
  o = parse_options(GapDiversityOptions, options, name="gap_diversity")
  for field in ("probs", "teacher_probs", "baseline_probs", "embeddings"):
    if getattr(inputs, field) is None:
      raise JaxkdError(f"gap_diversity needs inputs.{field}.")
  uncr = uncertainty_score(inputs.baseline_probs, inputs.probs,
                           inputs.teacher_probs, distance=o.distance,
                           eps=o.eps)
  return gap_diversity_select(uncr, inputs.embeddings, inputs.available, k,
                              num_neighbors=o.num_neighbors, beta=o.beta,
                              max_pool=o.max_pool, key=key)


def baseline_probs(ctx):
  """M_S, gap_diversity's `prepare` hook: a student trained on L alone with
  hard labels (ground truth if known, else the teacher's argmax, read from
  the ledger without paying), once per run (`ctx.cache`); returns its
  probabilities on the candidates as `baseline_probs`."""
  if "baseline" not in ctx.cache:
    answers = ctx.paid_answers(ctx.initial_indices)  # paid in round 0
    labels = ctx.initial_labels
    if labels is None:
      labels = np.argmax(answers, -1)
    onehot = np.eye(answers.shape[1], dtype=np.float32)[labels]
    ctx.cache["baseline"] = ctx.fit(
        ctx.oracle.pool_images[ctx.initial_indices], onehot, labels,
        seed=ctx.settings.seed + 7, loss="hard_ce", desc="M_S")
  logits = ctx.predict(ctx.cache["baseline"].variables, ctx.candidate_images)
  return {"baseline_probs": np.asarray(jax.nn.softmax(logits))}


register_strategy(
    "gap_diversity", _gap_diversity_strategy,
    needs=("probs", "teacher_probs", "baseline_probs", "embeddings"),
    prepare=baseline_probs, options=GapDiversityOptions,
    description="student/teacher prediction-gap uncertainty + reverse-kNN "
                "diversity, greedy (needs unpaid teacher forwards on the pool)")
