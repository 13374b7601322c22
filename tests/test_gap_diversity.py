"""gap_diversity: gaps, reverse-kNN counts and greedy picks vs NumPy."""

import jax
import numpy as np
import pytest

from jaxkd.selection import SelectionInputs, get_strategy
from jaxkd.selection import gap_diversity as gd
from jaxkd.selection.registry import parse_options
from jaxkd.validation import JaxkdError

N, C, D, K = 24, 3, 4, 3


def _probs(rng, n=N):
  return rng.dirichlet(np.ones(C), size=n).astype(np.float32)


def _emb(rng, n=N):
  return rng.normal(size=(n, D)).astype(np.float32)


def np_knn(emb, k):
  """Brute force: k nearest others (float64, exact differences)."""
  e = np.asarray(emb, np.float64)
  d = ((e[:, None] - e[None]) ** 2).sum(-1)
  np.fill_diagonal(d, np.inf)
  return np.argsort(d, 1, kind="stable")[:, :k]


def np_rnn_counts(emb, k, excluded):
  """|{q not in V : p in kNN(q)}| by explicit set membership."""
  knn = np_knn(emb, k)
  n = len(emb)
  return np.array([sum(1 for q in range(n)
                       if not excluded[q] and p in set(knn[q]))
                   for p in range(n)])


def np_greedy(uncr, emb, available, b, k, beta):
  """Python reference: recompute Div(p | V) = |RNN(p) - V| at every step."""
  knn = np_knn(emb, k)
  n = len(uncr)
  rnn = [{q for q in range(n) if p in set(knn[q])} for p in range(n)]
  v = set(np.flatnonzero(~available).tolist())
  picks = []
  for _ in range(b):
    best, best_score = None, -np.inf
    for p in range(n):
      if not available[p] or p in picks:
        continue
      score = np.float32(uncr[p]) + np.float32(beta) * np.float32(
          len(rnn[p] - v)) / np.float32(k)
      if score > best_score:
        best, best_score = p, score
    picks.append(best)
    v.add(best)
  return picks


def test_prediction_gap_and_uncertainty():
  rng = np.random.default_rng(0)
  ps, pst, pt = _probs(rng), _probs(rng), _probs(rng)
  a, b = ps.astype(np.float64), pst.astype(np.float64)
  np.testing.assert_allclose(gd.prediction_gap(ps, pst),
                             0.5 * np.abs(a - b).sum(1), rtol=1e-5)
  np.testing.assert_allclose(gd.prediction_gap(ps, pst, "l2"),
                             np.sqrt(((a - b) ** 2).sum(1)), rtol=1e-5)
  np.testing.assert_allclose(gd.prediction_gap(ps, pst, "kl"),
                             (a * np.log(a / b)).sum(1), rtol=1e-4, atol=1e-6)
  d_ss = 0.5 * np.abs(ps.astype(np.float64) - pst).sum(1)
  d_st = 0.5 * np.abs(pst.astype(np.float64) - pt).sum(1)
  expect = (d_ss + d_st) * np.maximum(d_st / d_ss, d_ss / d_st)
  np.testing.assert_allclose(gd.uncertainty_score(ps, pst, pt, eps=1e-12),
                             expect, rtol=1e-4)


def test_zero_gaps_no_nan():
  rng = np.random.default_rng(1)
  p, q = _probs(rng, 4), _probs(rng, 4)
  both_zero = gd.uncertainty_score(p, p, p)
  np.testing.assert_array_equal(both_zero, 0.0)
  one_zero = np.asarray(gd.uncertainty_score(p, p, q))  # D_SS = 0
  assert np.all(np.isfinite(one_zero)) and np.all(one_zero > 0)
  for dist in ("l2", "kl"):
    assert np.all(np.isfinite(gd.uncertainty_score(p, p, q, distance=dist)))
  # Hard one-hot predictions: KL with zeros stays finite.
  onehot = np.eye(C, dtype=np.float32)[[0, 1, 2, 0]]
  assert np.all(np.isfinite(gd.uncertainty_score(onehot, p, onehot,
                                                 distance="kl")))


def test_reverse_knn_counts_match_brute_force():
  rng = np.random.default_rng(2)
  emb = _emb(rng)
  excluded = rng.random(N) < 0.3
  np.testing.assert_array_equal(gd.knn_indices(emb, K), np_knn(emb, K))
  np.testing.assert_array_equal(gd.reverse_knn_counts(emb, K),
                                np_rnn_counts(emb, K, np.zeros(N, bool)))
  np.testing.assert_array_equal(gd.reverse_knn_counts(emb, K, excluded),
                                np_rnn_counts(emb, K, excluded))
  # Blocked kNN (block smaller than n, n not a multiple) equals unblocked.
  np.testing.assert_array_equal(gd._knn(emb, K, block=5), np_knn(emb, K))


def test_greedy_matches_python_reference():
  rng = np.random.default_rng(3)
  for trial, beta in enumerate((0.0, 0.7, 5.0)):
    emb = _emb(rng)
    uncr = rng.random(N).astype(np.float32)
    avail = rng.random(N) < 0.7
    picks = np.asarray(gd.gap_diversity_select(
        uncr, emb, avail, 6, num_neighbors=K, beta=beta))
    assert picks.dtype == np.int32
    assert picks.tolist() == np_greedy(uncr, emb, avail, 6, K, beta), trial
    assert avail[picks].all() and len(set(picks.tolist())) == 6


def test_registered_strategy_only_available():
  rng = np.random.default_rng(4)
  avail = rng.random(N) < 0.5
  inputs = SelectionInputs(available=avail, probs=_probs(rng),
                           teacher_probs=_probs(rng),
                           baseline_probs=_probs(rng), embeddings=_emb(rng))
  strat = get_strategy("gap_diversity")
  assert strat.needs == {"probs", "teacher_probs", "baseline_probs",
                         "embeddings"}
  k = int(avail.sum())  # every available point, none else
  idx = np.asarray(strat.fn(jax.random.key(0), inputs, k, num_neighbors=K))
  assert sorted(idx.tolist()) == np.flatnonzero(avail).tolist()
  uncr = gd.uncertainty_score(inputs.baseline_probs, inputs.probs,
                              inputs.teacher_probs)
  np.testing.assert_array_equal(
      idx, gd.gap_diversity_select(uncr, inputs.embeddings, avail, k,
                                   num_neighbors=K))


def test_bad_inputs():
  rng = np.random.default_rng(5)
  emb, u = _emb(rng), rng.random(N).astype(np.float32)
  avail = np.ones(N, bool)
  p = _probs(rng)
  nan_u = u.copy()
  nan_u[0] = np.nan
  bad = [
      lambda: gd.gap_diversity_select(nan_u, emb, avail, 2),
      lambda: gd.gap_diversity_select(u, emb, avail, 0),
      lambda: gd.gap_diversity_select(u, emb, avail, N + 1),
      lambda: gd.gap_diversity_select(u, emb[:-1], avail, 2),
      lambda: gd.gap_diversity_select(u, emb[0], avail, 2),
      lambda: gd.gap_diversity_select(u, emb, avail, 2, num_neighbors=N),
      lambda: gd.gap_diversity_select(u, emb, avail, 2, num_neighbors=0),
      lambda: gd.gap_diversity_select(u, emb, avail, 2, beta=-1.0),
      lambda: gd.reverse_knn_counts(emb, K, np.ones(3, bool)),
      lambda: gd.uncertainty_score(p, p, p[:-1]),
      lambda: gd.uncertainty_score(p, p, p, distance="cosine"),
      lambda: gd.uncertainty_score(p, p, p, eps=0.0),
  ]
  for fn in bad:
    with pytest.raises(JaxkdError):
      fn()


# ------------------------------------------------------------------ scale ---


def test_tiled_knn_matches_brute_force_with_ties():
  """The [block, chunk] tiles with group minima give the exact kNN, ties
  (duplicate points) to the lowest index, for blocks, chunks and groups
  that do not divide n, k above the groups per chunk, and the defaults."""
  rng = np.random.default_rng(6)
  cases = [(300, 4, 5, (32, 64, 8)), (300, 4, 5, (7, 48, 16)),
           (257, 3, 40, (32, 64, 8)), (301, 6, 3, (512, 8192, 64))]
  for n, d, k, (block, chunk, group) in cases:
    emb = rng.normal(size=(n, d)).astype(np.float32)
    emb[[10, 200]] = emb[3]                       # exact ties
    emb[150] = emb[77]
    got = np.asarray(gd._knn_tiled(emb, k, block=block, chunk=chunk,
                                   group=group))
    np.testing.assert_array_equal(got, np_knn(emb, k),
                                  err_msg=f"{n} {block} {chunk}")


def test_knn_above_the_single_pass_size_is_tiled_and_equal():
  """Past `_SMALL_KNN` points knn_indices takes the tiled form: the same
  neighbours as the single-pass form; a float64 NumPy check on some rows."""
  rng = np.random.default_rng(7)
  n = gd._SMALL_KNN + 300
  emb = rng.normal(size=(n, 5)).astype(np.float32)
  got = np.asarray(gd.knn_indices(emb, 4))
  np.testing.assert_array_equal(got, np.asarray(gd._knn(emb, 4)))
  rows = rng.choice(n, 20, replace=False)
  e = emb.astype(np.float64)
  d = ((e[rows, None] - e[None]) ** 2).sum(-1)
  d[np.arange(20), rows] = np.inf
  np.testing.assert_array_equal(got[rows],
                                np.argsort(d, 1, kind="stable")[:, :4])


def test_max_pool_selects_on_a_stratified_subset():
  rng = np.random.default_rng(8)
  n, k = 60, 5
  emb, uncr = _emb(rng, n), rng.random(n).astype(np.float32)
  avail = rng.random(n) < 0.8
  key = jax.random.key(3)
  full = np.asarray(gd.gap_diversity_select(uncr, emb, avail, k,
                                            num_neighbors=K))
  # At or above the pool size: the whole pool, no key used.
  for max_pool in (n, 10 * n):
    np.testing.assert_array_equal(gd.gap_diversity_select(
        uncr, emb, avail, k, num_neighbors=K, max_pool=max_pool), full)
  # Below: the greedy of the subset (its own kNN graph and V), mapped back.
  sub = gd.pool_subset(key, avail, k, 30)
  assert len(sub) == 30 and np.all(np.diff(sub) > 0)
  assert (~avail[sub]).sum() == round(30 * (~avail).sum() / n)
  got = np.asarray(gd.gap_diversity_select(uncr, emb, avail, k,
                                           num_neighbors=K, max_pool=30,
                                           key=key))
  local = np_greedy(uncr[sub], emb[sub], avail[sub], k, K, 1.0)
  assert got.tolist() == sub[local].tolist()
  assert avail[got].all() and len(set(got.tolist())) == k
  # At least k available points, however few the subset would take.
  assert avail[gd.pool_subset(key, avail, 20, 12)].sum() == 20
  # The strategy passes its key and option.
  inputs = SelectionInputs(available=avail, probs=_probs(rng, n),
                           teacher_probs=_probs(rng, n),
                           baseline_probs=_probs(rng, n), embeddings=emb)
  u = gd.uncertainty_score(inputs.baseline_probs, inputs.probs,
                           inputs.teacher_probs)
  np.testing.assert_array_equal(
      get_strategy("gap_diversity").fn(key, inputs, k, num_neighbors=K,
                                       max_pool=30),
      gd.gap_diversity_select(u, emb, avail, k, num_neighbors=K,
                              max_pool=30, key=key))
  with pytest.raises(JaxkdError, match="max_pool"):
    gd.gap_diversity_select(uncr, emb, avail, k, num_neighbors=K,
                            max_pool=K)
  with pytest.raises(JaxkdError, match="max_pool"):
    parse_options(get_strategy("gap_diversity"), {"max_pool": 0})
