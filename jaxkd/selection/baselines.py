"""Baseline strategies: random, entropy, margin, least confidence, core-set.

Each `*_select` is a pure function of arrays that returns k distinct pool
indices among the available ones. Uncertainty scores are per-example and
vmapped; ties are broken by index (lowest first) so picks are deterministic.

References:
  Settles. Active Learning Literature Survey, 2009 (entropy, margin, LC).
  Sener, Savarese. Active Learning for CNNs: A Core-Set Approach, ICLR 2018.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxkd.scores import (entropy, least_confidence,  # noqa: F401
                          margin_uncertainty)
from jaxkd.selection.registry import register_strategy
from jaxkd.validation import (JaxkdError, check_features, check_finite,
                              check_k, check_rank, is_concrete)


# ----------------------------------------------------------- selection ---


def _check_pool(available, k):
  """`available` [n] must be a bool mask (or 0/1 integers): a mask of other
  values would be summed as a count and then cast, picking unavailable
  points."""
  check_rank("available", available, 1)
  if not is_concrete(available):
    return check_k(k, available.shape[0], "unqueried pool points")
  mask = jnp.asarray(available)
  if mask.dtype != bool and not (jnp.issubdtype(mask.dtype, jnp.integer)
                                 and bool(jnp.all((mask == 0) | (mask == 1)))):
    raise JaxkdError(f"available must be a bool mask (or 0/1 integers), got "
                     f"dtype {mask.dtype}.")
  n_avail = int(jnp.sum(mask.astype(bool)))
  return check_k(k, n_avail, "unqueried pool points")


@functools.partial(jax.jit, static_argnames=("k",))
def top_k_available(scores: jax.Array, available: jax.Array, k: int) -> jax.Array:
  """Indices of the k largest scores among available points (ties: lowest index).

  scores: [n]; available: [n] bool. Returns int32 [k].
  """
  masked = jnp.where(available, scores, -jnp.inf)
  # lax.top_k is stable: equal values keep index order.
  return jax.lax.top_k(masked, k)[1].astype(jnp.int32)


def score_select(scores: jax.Array, available: jax.Array, k: int) -> jax.Array:
  """Validated top-k of `scores` over available points."""
  check_rank("scores", scores, 1)
  check_finite("scores", scores)
  k = _check_pool(available, k)
  if scores.shape[0] != available.shape[0]:
    raise JaxkdError(f"scores has {scores.shape[0]} rows but available has "
                     f"{available.shape[0]}.")
  return top_k_available(jnp.asarray(scores), jnp.asarray(available, bool), k)


def random_subset(key: jax.Array, mask, size: int) -> np.ndarray:
  """Increasing positions of `size` True entries of `mask` [n], uniformly
  at random: those of smallest `jax.random.uniform(key, (m,))` draw over
  the m True entries (ties: lowest position); all of them when m <= size.
  O(n + m log m) time, O(n) memory."""
  where = np.flatnonzero(np.asarray(mask, bool))
  if size >= len(where):
    return where
  u = np.asarray(jax.random.uniform(key, (len(where),)))
  return where[np.sort(np.argsort(u, kind="stable")[:size])]


def random_select(key: jax.Array, available: jax.Array, k: int) -> jax.Array:
  """k available indices uniformly at random without replacement."""
  k = _check_pool(available, k)
  scores = jax.random.uniform(key, np.shape(available))
  return top_k_available(scores, jnp.asarray(available, bool), k)


# Rows per float64 block of `check_probs` (~5 MiB at C = 10).
_CHECK_ROWS = 1 << 16


def check_probs(name, probs) -> None:
  """`probs` [n, C] must be rows of a distribution: C >= 2 entries in
  [0, 1] summing to 1 (to 1e-3); skipped for tracers. Checked in float64
  blocks of 65,536 rows: O(n C) time, no float64 copy of the whole
  array."""
  check_features(name, probs, 2)
  if not is_concrete(probs):
    return
  if np.shape(probs)[1] < 2:
    raise JaxkdError(f"{name} has {np.shape(probs)[1]} class; scores need "
                     f">= 2.")
  arr = np.asarray(probs)
  if not arr.size:
    return
  lo, hi, off = np.inf, -np.inf, 0.0
  for start in range(0, arr.shape[0], _CHECK_ROWS):
    p = np.asarray(arr[start:start + _CHECK_ROWS], np.float64)
    lo, hi = min(lo, p.min()), max(hi, p.max())
    off = max(off, np.abs(p.sum(1) - 1).max())
  if lo < 0 or hi > 1 or off > 1e-3:
    raise JaxkdError(
        f"{name} must hold probabilities (each row in [0, 1], summing to 1); "
        f"got values in [{lo:.3g}, {hi:.3g}], row sums up to "
        f"{off:.3g} away from 1.")


def _probs_select(score_fn, probs, available, k):
  check_probs("probs", probs)
  return score_select(jax.jit(score_fn)(jnp.asarray(probs)), available, k)


def entropy_select(probs, available, k):
  """k available points of highest predictive entropy. probs [n, C]."""
  return _probs_select(entropy, probs, available, k)


def margin_select(probs, available, k):
  """k available points with the smallest top-2 margin. probs [n, C]."""
  return _probs_select(margin_uncertainty, probs, available, k)


def least_confidence_select(probs, available, k):
  """k available points with the lowest max probability. probs [n, C]."""
  return _probs_select(least_confidence, probs, available, k)


@functools.partial(jax.jit, static_argnames=("k",))
def _kcenter_greedy(emb, available, centers_mask, k, center_index=None):
  """k-center greedy picks [k]. The nearest-center distances start from the
  existing centers: `center_index` [m'] (their indices, padded by
  repeating one; m' >= m) costs O(n m' D); without it, a masked pass over
  all n points costs O(n^2 D) (kept for a traced `centers` mask). The
  distances are the same either way (a minimum is exact), so are picks."""
  sq = jnp.sum(emb * emb, axis=1)

  def dist_to(i):
    d = sq + sq[i] - 2.0 * emb @ emb[i]
    return jnp.maximum(d, 0.0)

  # Distance of every point to its nearest existing center (labelled set).
  mind = jnp.full(emb.shape[0], jnp.inf, emb.dtype)
  if center_index is None:
    def init_body(i, mind):
      return jnp.where(centers_mask[i], jnp.minimum(mind, dist_to(i)), mind)

    mind = jax.lax.fori_loop(0, emb.shape[0], init_body, mind)
  elif center_index.shape[0]:  # (an empty index: no centers, all inf)
    mind = jax.lax.fori_loop(
        0, center_index.shape[0],
        lambda t, mind: jnp.minimum(mind, dist_to(center_index[t])), mind)
  # With no existing centers every distance is inf: the first pick is then
  # the lowest available index (argmax takes the first maximum).

  def body(t, carry):
    mind, picks = carry
    score = jnp.where(available, mind, -jnp.inf)
    score = score.at[picks].set(-jnp.inf, mode="drop")
    i = jnp.argmax(score).astype(jnp.int32)
    picks = picks.at[t].set(i)
    return jnp.minimum(mind, dist_to(i)), picks

  picks = jnp.full((k,), emb.shape[0], jnp.int32)
  _, picks = jax.lax.fori_loop(0, k, body, (mind, picks))
  return picks


def coreset_select(embeddings: jax.Array, available: jax.Array, k: int,
                   centers: jax.Array | None = None) -> jax.Array:
  """k-center greedy (Sener & Savarese 2018) on embeddings [n, D].

  Repeatedly picks the available point farthest (squared Euclidean) from its
  nearest center; centers start as the already-queried points (`centers`
  [n] bool, default `~available`) and grow with each pick. O(n (m + k) D)
  for m existing centers.
  """
  check_features("embeddings", embeddings, 2)
  k = _check_pool(available, k)
  n = embeddings.shape[0]
  for name, mask in (("available", available), ("centers", centers)):
    if mask is not None and jnp.shape(mask) != (n,):
      raise JaxkdError(f"{name} must have shape ({n},) like embeddings' "
                       f"rows, got {tuple(jnp.shape(mask))}.")
  available = jnp.asarray(available, bool)
  centers = ~available if centers is None else jnp.asarray(centers, bool)
  index = None
  if is_concrete(centers):  # loop over the m centers, not all n points
    where = np.flatnonzero(np.asarray(centers))
    if len(where):
      size = 1 << (len(where) - 1).bit_length()  # few compiled shapes
      index = jnp.asarray(np.resize(where, size), jnp.int32)
    else:  # no centers yet: nothing to initialise from (not a pass over n)
      index = jnp.zeros((0,), jnp.int32)
  return _kcenter_greedy(jnp.asarray(embeddings), available, centers, k,
                         index)


# --------------------------------------------------------- registry glue ---


register_strategy(
    "random", lambda key, inputs, k: random_select(key, inputs.available, k),
    needs=(), description="uniform over unqueried points")
register_strategy(
    "entropy", lambda key, inputs, k: entropy_select(inputs.probs, inputs.available, k),
    needs=("probs",), description="highest student predictive entropy")
register_strategy(
    "margin", lambda key, inputs, k: margin_select(inputs.probs, inputs.available, k),
    needs=("probs",), description="smallest student top-2 margin")
register_strategy(
    "least_confidence",
    lambda key, inputs, k: least_confidence_select(inputs.probs, inputs.available, k),
    needs=("probs",), description="lowest student max probability")
register_strategy(
    "coreset",
    lambda key, inputs, k: coreset_select(inputs.embeddings, inputs.available, k),
    needs=("embeddings",), description="k-center greedy on student embeddings")
