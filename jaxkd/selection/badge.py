"""BADGE: diverse, uncertain batches from last-layer gradient embeddings.

Ash, Zhang, Krishnamurthy, Langford, Agarwal. Deep Batch Active Learning by
Diverse, Uncertain Gradient Lower Bounds. ICLR 2020.

Gradient embedding. With penultimate features h [D], logits z = W^T h + c
and probabilities p = softmax(z), the gradient of the cross-entropy under
the student's own predicted label y_hat = argmax p with respect to the last
layer's kernel is

  g = (p - e_{y_hat}) outer h,   [C, D] (flattened to C * D),

i.e. a = p - e_{y_hat} scaled by every feature. Its norm is large when the
student is unsure (||a|| is small only for confident predictions) and when
the features are large.

Factored distances. g is never materialised by the selector: with
a_i = p_i - e_i,

  <g_i, g_j> = <a_i, a_j> <h_i, h_j>,   ||g_i||^2 = ||a_i||^2 ||h_i||^2,

so ||g_i - g_j||^2 costs O(C + D) instead of O(C D) and memory stays at the
[n, C] and [n, D] inputs. `gradient_embeddings` builds the [n, C D] array
for inspection and tests.

Selection: k-means++ seeding (Arthur and Vassilvitskii, 2007) on the
gradient embeddings of the available points. The first center is the
available point of largest gradient norm (ties: lowest index), as in the
authors' code; each next center is drawn with probability proportional to
its squared distance to the nearest chosen center (D^2 sampling). If every
remaining distance is 0 (duplicates), the next center is uniform over the
remaining available points. Only points picked this round are centers.
Cost: O(k n (C + D)), one `lax.fori_loop`, jitted.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxkd.selection.registry import register_strategy
from jaxkd.validation import (JaxkdError, check_features, check_k, check_rank,
                              is_concrete)


def _residual(probs):
  """a = p - onehot(argmax p). [n, C] -> [n, C]."""
  onehot = jax.nn.one_hot(jnp.argmax(probs, -1), probs.shape[-1],
                          dtype=probs.dtype)
  return probs - onehot


def gradient_embeddings(probs: jax.Array, embeddings: jax.Array) -> jax.Array:
  """Materialised BADGE embeddings (p - e_{argmax p}) outer h.

  Args:
    probs: [n, C] student probabilities.
    embeddings: [n, D] penultimate features (input of the last Dense).

  Returns:
    [n, C * D], row i = flatten of the [C, D] gradient of the cross-entropy
    at the predicted label with respect to the transposed last-layer kernel
    (a Flax Dense kernel is [D, C]: its gradient is the transpose).
  """
  _check_pair(probs, embeddings)
  a = _residual(jnp.asarray(probs))
  h = jnp.asarray(embeddings)
  return (a[:, :, None] * h[:, None, :]).reshape(a.shape[0], -1)


@functools.partial(jax.jit, static_argnames=("k",))
def _kmeanspp(key, a, h, available, k):
  """k-means++ seeding on points g_i = a_i outer h_i (factored)."""
  n = a.shape[0]
  sq = jnp.sum(a * a, 1) * jnp.sum(h * h, 1)

  def dist_to(i):
    return jnp.maximum(sq + sq[i] - 2.0 * (a @ a[i]) * (h @ h[i]), 0.0)

  first = jnp.argmax(jnp.where(available, sq, -jnp.inf)).astype(jnp.int32)
  picked = jnp.zeros((n,), bool).at[first].set(True)
  picks = jnp.zeros((k,), jnp.int32).at[0].set(first)

  def body(t, carry):
    mind, picked, picks = carry
    free = available & ~picked
    live = free & (mind > 0)
    logits = jnp.where(live, jnp.log(jnp.where(live, mind, 1.0)), -jnp.inf)
    uniform = jnp.where(free, 0.0, -jnp.inf)
    logits = jnp.where(jnp.any(jnp.isfinite(logits)), logits, uniform)
    i = jax.random.categorical(jax.random.fold_in(key, t), logits)
    i = i.astype(jnp.int32)
    return (jnp.minimum(mind, dist_to(i)), picked.at[i].set(True),
            picks.at[t].set(i))

  init = (dist_to(first), picked, picks)
  return jax.lax.fori_loop(1, k, body, init)[2]


def _check_pair(probs, embeddings):
  check_features("probs", probs, 2)
  check_features("embeddings", embeddings, 2)
  if np.shape(probs)[0] != np.shape(embeddings)[0]:
    raise JaxkdError(f"probs has {np.shape(probs)[0]} rows but embeddings has "
                     f"{np.shape(embeddings)[0]}.")


def _check_available(available, n, k):
  check_rank("available", available, 1)
  if np.shape(available)[0] != n:
    raise JaxkdError(f"available has {np.shape(available)[0]} entries, "
                     f"expected {n}.")
  n_avail = (int(np.sum(np.asarray(available, bool)))
             if is_concrete(available) else n)
  return check_k(k, n_avail, "unqueried pool points")


def kmeans_pp_select(key: jax.Array, points: jax.Array, available: jax.Array,
                     k: int) -> jax.Array:
  """k-means++ seeding over available rows of `points` [n, D].

  First center: largest norm; then D^2 sampling. Returns int32 [k] distinct
  available indices in pick order.
  """
  check_features("points", points, 2)
  k = _check_available(available, np.shape(points)[0], k)
  points = jnp.asarray(points)
  ones = jnp.ones((points.shape[0], 1), points.dtype)
  return _kmeanspp(key, ones, points, jnp.asarray(available, bool), k)


def badge_select(key: jax.Array, probs: jax.Array, embeddings: jax.Array,
                 available: jax.Array, k: int) -> jax.Array:
  """BADGE: k-means++ seeding on last-layer gradient embeddings.

  Args:
    key: PRNG key for D^2 sampling.
    probs: [n, C] student probabilities on the pool.
    embeddings: [n, D] student penultimate features on the pool.
    available: [n] bool, points that may be picked.
    k: number of points.

  Returns:
    int32 [k] distinct available indices in pick order; the first is the
    available point of largest gradient-embedding norm.

  Raises:
    JaxkdError: on NaN, wrong ranks, mismatched rows, k outside
      [1, available].
  """
  _check_pair(probs, embeddings)
  k = _check_available(available, np.shape(probs)[0], k)
  probs = jnp.asarray(probs)
  a = _residual(probs)
  h = jnp.asarray(embeddings, probs.dtype)
  return _kmeanspp(key, a, h, jnp.asarray(available, bool), k)


register_strategy(
    "badge",
    lambda key, inputs, k: badge_select(key, inputs.probs, inputs.embeddings,
                                        inputs.available, k),
    needs=("probs", "embeddings"),
    description="BADGE: k-means++ on last-layer gradient embeddings")
