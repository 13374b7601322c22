"""BADGE: gradient embeddings vs jax.grad, k-means++ seeding vs NumPy."""

import flax.linen as nn
import jax
import numpy as np
import pytest
from scipy import stats

from jaxkd.selection import SelectionInputs, get_strategy
from jaxkd.selection import badge
from jaxkd.validation import JaxkdError

N, C, D = 10, 3, 4


def _head(seed=0, n=N):
  """A tiny linear head on random features: (Dense params, h, probs)."""
  rng = np.random.default_rng(seed)
  h = rng.normal(size=(n, D)).astype(np.float32)
  kernel = rng.normal(size=(D, C)).astype(np.float32)
  bias = rng.normal(size=(C,)).astype(np.float32)
  z = h.astype(np.float64) @ kernel + bias
  probs = np.exp(z - z.max(1, keepdims=True))
  probs = (probs / probs.sum(1, keepdims=True)).astype(np.float32)
  return {"params": {"kernel": kernel, "bias": bias}}, h, probs


def test_embedding_is_last_layer_gradient():
  params, h, probs = _head()
  head = nn.Dense(C)

  def loss(p, x, y):  # cross-entropy at the model's own predicted label
    return -jax.nn.log_softmax(head.apply(p, x[None]))[0, y]

  y = np.argmax(probs, 1)
  grads = jax.jit(jax.vmap(jax.grad(loss), in_axes=(None, 0, 0)))(params, h, y)
  kernel_grad = np.asarray(grads["params"]["kernel"])  # [n, D, C]
  expect = kernel_grad.transpose(0, 2, 1).reshape(N, C * D)
  np.testing.assert_allclose(badge.gradient_embeddings(probs, h), expect,
                             rtol=1e-5, atol=1e-6)


def test_picks_distinct_first_is_largest_norm_available():
  _, h, probs = _head(1)
  g = np.asarray(badge.gradient_embeddings(probs, h), np.float64)
  norms = np.linalg.norm(g, axis=1)
  avail = np.ones(N, bool)
  avail[np.argmax(norms)] = False  # the overall largest is already queried
  for seed in range(3):
    picks = np.asarray(badge.badge_select(jax.random.key(seed), probs, h,
                                          avail, 5))
    assert picks.dtype == np.int32 and len(set(picks.tolist())) == 5
    assert avail[picks].all()
    assert picks[0] == np.argmax(np.where(avail, norms, -np.inf))


def test_d2_sampling_frequencies():
  # Tiny case: the second pick is drawn with probability d^2 / sum d^2 to
  # the (deterministic) first pick, over the remaining available points.
  _, h, probs = _head(2, n=6)
  g = np.asarray(badge.gradient_embeddings(probs, h), np.float64)
  avail = np.array([1, 1, 1, 1, 0, 1], bool)
  first = np.argmax(np.where(avail, (g ** 2).sum(1), -np.inf))
  d2 = ((g - g[first]) ** 2).sum(1)
  d2[~avail] = 0.0
  d2[first] = 0.0
  draws = 6000
  keys = jax.random.split(jax.random.key(0), draws)
  picks = np.asarray(jax.jit(jax.vmap(
      lambda key: badge.badge_select(key, probs, h, avail, 2)))(keys))
  assert np.all(picks[:, 0] == first)
  counts = np.bincount(picks[:, 1], minlength=6)
  assert np.all(counts[d2 == 0] == 0)
  expect = draws * d2 / d2.sum()
  live = d2 > 0
  assert stats.chisquare(counts[live], expect[live]).pvalue > 1e-3


def test_duplicates_fall_back_to_uniform_and_registry():
  # All points identical: distances vanish, picks stay distinct.
  h = np.ones((N, D), np.float32)
  probs = np.full((N, C), 1.0 / C, np.float32)
  avail = np.arange(N) % 2 == 0
  picks = np.asarray(badge.badge_select(jax.random.key(0), probs, h, avail, 5))
  assert sorted(picks.tolist()) == np.flatnonzero(avail).tolist()
  strat = get_strategy("badge")
  assert strat.needs == {"probs", "embeddings"}
  _, h, probs = _head(3)
  inputs = SelectionInputs(available=avail, probs=probs, embeddings=h)
  idx = np.asarray(strat.fn(jax.random.key(1), inputs, 3))
  assert avail[idx].all() and len(set(idx.tolist())) == 3
  # Generic k-means++ on explicit points equals BADGE on materialised ones.
  g = badge.gradient_embeddings(probs, h)
  np.testing.assert_array_equal(
      badge.kmeans_pp_select(jax.random.key(1), g, avail, 3), idx)


def test_bad_inputs():
  _, h, probs = _head()
  avail = np.ones(N, bool)
  key = jax.random.key(0)
  nan_h = h.copy()
  nan_h[0, 0] = np.nan
  bad = [
      lambda: badge.badge_select(key, probs, nan_h, avail, 2),
      lambda: badge.badge_select(key, probs, h, avail, 0),
      lambda: badge.badge_select(key, probs, h, avail, N + 1),
      lambda: badge.badge_select(key, probs, h[:-1], avail, 2),
      lambda: badge.badge_select(key, probs[0], h, avail, 2),
      lambda: badge.badge_select(key, probs, h, avail[:-1], 2),
      lambda: badge.badge_select(key, probs, h, np.zeros(N, bool), 1),
      lambda: badge.kmeans_pp_select(key, h[0], avail, 2),
  ]
  for fn in bad:
    with pytest.raises(JaxkdError):
      fn()
