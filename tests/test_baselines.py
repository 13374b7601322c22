"""Baseline strategies against NumPy scores and a brute-force k-center greedy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxkd.selection import SelectionInputs, get_strategy, strategy_names
from jaxkd.selection import baselines
from jaxkd.validation import JaxkdError

N, C = 30, 4


def _probs(seed=0, n=N, c=C):
  rng = np.random.default_rng(seed)
  return rng.dirichlet(np.ones(c) * 0.7, size=n).astype(np.float32)


def _available(seed=1, n=N, frac=0.6):
  rng = np.random.default_rng(seed)
  return rng.random(n) < frac


def np_entropy(p):
  p = np.asarray(p, np.float64)
  return -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), -1)


def np_margin(p):
  s = np.sort(np.asarray(p, np.float64), -1)
  return -(s[:, -1] - s[:, -2])


def np_least_confidence(p):
  return 1.0 - np.max(np.asarray(p, np.float64), -1)


def np_top_k(scores, available, k):
  """k largest available scores, ties to the lowest index."""
  masked = np.where(available, scores, -np.inf)
  return np.argsort(-masked, kind="stable")[:k]


def np_kcenter_greedy(emb, available, k, centers=None):
  """Brute force: pick the available point farthest from its nearest center.

  Distances are squared Euclidean; ties go to the first maximum (lowest
  index); with no center at all every distance is +inf.
  """
  emb = np.asarray(emb, np.float64)
  n = len(emb)
  centers = ~available if centers is None else np.asarray(centers, bool)
  d = ((emb[:, None, :] - emb[None, :, :]) ** 2).sum(-1)  # [n, n]
  mind = np.full(n, np.inf)
  for c in np.flatnonzero(centers):
    mind = np.minimum(mind, d[:, c])
  picks = []
  for _ in range(k):
    score = np.where(available, mind, -np.inf)
    score[picks] = -np.inf
    i = int(np.argmax(score))  # first maximum
    picks.append(i)
    mind = np.minimum(mind, d[:, i])
  return np.asarray(picks)


# ----------------------------------------------------------- uncertainty ---


@pytest.mark.parametrize("name,score_fn,np_fn", [
    ("entropy", baselines.entropy, np_entropy),
    ("margin", baselines.margin_uncertainty, np_margin),
    ("least_confidence", baselines.least_confidence, np_least_confidence),
])
def test_uncertainty_scores_and_picks_match_numpy(name, score_fn, np_fn):
  probs, avail = _probs(), _available()
  np.testing.assert_allclose(jax.jit(score_fn)(probs), np_fn(probs), atol=1e-6)
  k = 7
  want = np_top_k(np_fn(probs), avail, k)
  select = getattr(baselines, f"{name}_select")
  got = np.asarray(select(probs, avail, k))
  np.testing.assert_array_equal(got, want)
  assert got.dtype == np.int32
  # Through the registry, with SelectionInputs.
  strat = get_strategy(name)
  assert strat.needs == frozenset({"probs"})
  got2 = strat.fn(jax.random.key(0), SelectionInputs(available=avail,
                                                     probs=probs), k)
  np.testing.assert_array_equal(np.asarray(got2), want)


def test_uncertainty_scores_by_hand():
  p = np.array([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0], [0.6, 0.3, 0.1]], np.float32)
  np.testing.assert_allclose(
      baselines.entropy(p),
      [np.log(2.0), 0.0, -(0.6 * np.log(0.6) + 0.3 * np.log(0.3)
                           + 0.1 * np.log(0.1))], atol=1e-6)
  np.testing.assert_allclose(baselines.margin_uncertainty(p), [0.0, -1.0, -0.3],
                             atol=1e-6)
  np.testing.assert_allclose(baselines.least_confidence(p), [0.5, 0.0, 0.4],
                             atol=1e-6)


@pytest.mark.parametrize("name", ["entropy", "margin", "least_confidence"])
def test_never_picks_unavailable(name):
  probs = _probs(3)
  # The most uncertain rows (uniform) are exactly the unavailable ones.
  avail = np.ones(N, bool)
  avail[::3] = False
  probs[~avail] = 1.0 / C
  k = int(avail.sum())  # all of the available ones
  got = np.asarray(getattr(baselines, f"{name}_select")(probs, avail, k))
  assert len(set(got.tolist())) == k
  assert avail[got].all()


def test_ties_go_to_lowest_index():
  probs = np.full((6, 3), 1.0 / 3, np.float32)
  avail = np.array([False, True, True, False, True, True])
  np.testing.assert_array_equal(baselines.entropy_select(probs, avail, 3),
                                [1, 2, 4])


# --------------------------------------------------------------- coreset ---


@pytest.mark.parametrize("seed", [0, 1])
def test_coreset_matches_bruteforce_default_centers(seed):
  rng = np.random.default_rng(seed)
  emb = rng.normal(size=(N, 5)).astype(np.float32)
  avail = _available(seed + 10)
  k = 8
  want = np_kcenter_greedy(emb, avail, k)
  got = np.asarray(baselines.coreset_select(emb, avail, k))
  np.testing.assert_array_equal(got, want)
  strat = get_strategy("coreset")
  got2 = strat.fn(jax.random.key(0),
                  SelectionInputs(available=avail, embeddings=emb), k)
  np.testing.assert_array_equal(np.asarray(got2), want)


def test_coreset_matches_bruteforce_explicit_centers():
  rng = np.random.default_rng(5)
  emb = rng.normal(size=(N, 3)).astype(np.float32)
  avail = _available(6)
  centers = np.zeros(N, bool)
  centers[np.flatnonzero(~avail)[:2]] = True  # only two of the queried points
  k = 10
  got = np.asarray(baselines.coreset_select(emb, avail, k, centers=centers))
  np.testing.assert_array_equal(got, np_kcenter_greedy(emb, avail, k, centers))


def test_coreset_without_any_center_starts_at_first_available():
  rng = np.random.default_rng(7)
  emb = rng.normal(size=(N, 4)).astype(np.float32)
  avail = np.ones(N, bool)
  avail[:3] = False
  centers = np.zeros(N, bool)
  got = np.asarray(baselines.coreset_select(emb, avail, 5, centers=centers))
  assert got[0] == 3
  np.testing.assert_array_equal(got, np_kcenter_greedy(emb, avail, 5, centers))


def test_coreset_center_loop_equals_the_masked_pass_and_bruteforce():
  """The nearest-center start loops over the m existing centers (padded to a
  power of two by repeating one) instead of all n points: the same
  distances, so the same picks as the masked O(n^2) pass and NumPy."""
  rng = np.random.default_rng(11)
  n = 300
  emb = rng.normal(size=(n, 6)).astype(np.float32)
  for m in (1, 5, 64, 100):  # 100 pads to 128
    avail = np.ones(n, bool)
    avail[rng.choice(n, m, replace=False)] = False
    got = np.asarray(baselines.coreset_select(emb, avail, 12))
    masked = np.asarray(baselines._kcenter_greedy(
        jnp.asarray(emb), jnp.asarray(avail), jnp.asarray(~avail), 12))
    np.testing.assert_array_equal(got, masked)
    np.testing.assert_array_equal(got, np_kcenter_greedy(emb, avail, 12))


def test_coreset_tie_rule_exact_grid():
  # Points at 0..8 on a line (exact in float32), center at 4: 0 and 8 tie at
  # distance 16, so the first pick is 0; then 8 (distance 16 vs <= 4 others).
  emb = np.arange(9, dtype=np.float32)[:, None]
  avail = np.ones(9, bool)
  avail[4] = False
  want = np_kcenter_greedy(emb, avail, 4)
  np.testing.assert_array_equal(want[:2], [0, 8])
  np.testing.assert_array_equal(baselines.coreset_select(emb, avail, 4), want)


# --------------------------------------------------------------- random ---


def test_random_picks_distinct_available_and_seeded():
  avail = _available(2, n=50, frac=0.4)
  k = int(avail.sum())
  got = np.asarray(baselines.random_select(jax.random.key(3), avail, k))
  assert sorted(got.tolist()) == np.flatnonzero(avail).tolist()
  small = [np.asarray(baselines.random_select(jax.random.key(s), avail, 5))
           for s in range(4)]
  for g in small:
    assert len(set(g.tolist())) == 5 and avail[g].all()
  assert len({tuple(g) for g in small}) > 1  # depends on the key
  again = baselines.random_select(jax.random.key(0), avail, 5)
  np.testing.assert_array_equal(again, small[0])
  via_registry = get_strategy("random").fn(jax.random.key(0),
                                           SelectionInputs(available=avail), 5)
  np.testing.assert_array_equal(via_registry, small[0])


# ------------------------------------------------------------ bad input ---


@pytest.mark.parametrize("k", [0, -1, 13])
def test_bad_k_raises(k):
  avail = np.zeros(N, bool)
  avail[:12] = True
  probs, emb = _probs(), np.random.default_rng(0).normal(size=(N, 3))
  emb = emb.astype(np.float32)
  with pytest.raises(JaxkdError, match="k"):
    baselines.entropy_select(probs, avail, k)
  with pytest.raises(JaxkdError, match="k"):
    baselines.margin_select(probs, avail, k)
  with pytest.raises(JaxkdError, match="k"):
    baselines.coreset_select(emb, avail, k)
  with pytest.raises(JaxkdError, match="k"):
    baselines.random_select(jax.random.key(0), avail, k)


def test_non_int_k_raises():
  with pytest.raises(JaxkdError):
    baselines.entropy_select(_probs(), np.ones(N, bool), 2.0)


def test_nan_inputs_raise():
  probs = _probs()
  probs[4, 1] = np.nan
  with pytest.raises(JaxkdError, match="NaN"):
    baselines.entropy_select(probs, np.ones(N, bool), 3)
  with pytest.raises(JaxkdError, match="NaN"):
    baselines.least_confidence_select(probs, np.ones(N, bool), 3)
  emb = np.zeros((N, 2), np.float32)
  emb[0, 0] = np.inf
  with pytest.raises(JaxkdError, match="NaN or inf"):
    baselines.coreset_select(emb, np.ones(N, bool), 3)


def test_wrong_shapes_raise():
  with pytest.raises(JaxkdError, match="rank"):
    baselines.entropy_select(_probs()[0], np.ones(N, bool), 1)
  with pytest.raises(JaxkdError, match="rank"):
    baselines.entropy_select(_probs(), np.ones((N, 1), bool), 1)
  with pytest.raises(JaxkdError, match="rows"):
    baselines.entropy_select(_probs(), np.ones(N + 1, bool), 1)
  with pytest.raises(JaxkdError, match="floating"):
    baselines.coreset_select(np.ones((N, 2), np.int32), np.ones(N, bool), 1)


def test_unknown_strategy_raises():
  with pytest.raises(JaxkdError, match="no_such_strategy"):
    get_strategy("no_such_strategy")
  assert {"random", "entropy", "margin", "least_confidence",
          "coreset"} <= set(strategy_names())


def test_probs_check_in_row_blocks_equals_the_whole_array(monkeypatch):
  """check_probs reads float64 blocks of rows: the same verdict and
  message as one float64 copy, a bad row in any block found."""
  rng = np.random.default_rng(9)
  p = rng.dirichlet(np.ones(4), size=10).astype(np.float32)
  monkeypatch.setattr(baselines, "_CHECK_ROWS", 3)
  baselines.check_probs("probs", p)
  for row, value in ((9, 1.5), (4, -0.2)):
    bad = p.copy()
    bad[row, 0] = value
    with pytest.raises(JaxkdError) as blocked:
      baselines.check_probs("probs", bad)
    monkeypatch.setattr(baselines, "_CHECK_ROWS", 1 << 16)
    with pytest.raises(JaxkdError) as whole:
      baselines.check_probs("probs", bad)
    monkeypatch.setattr(baselines, "_CHECK_ROWS", 3)
    assert str(blocked.value) == str(whole.value)
    assert "must hold probabilities" in str(blocked.value)


def test_random_subset_is_uniform_over_the_mask():
  mask = np.arange(50) % 3 != 0
  key = jax.random.key(0)
  sub = baselines.random_subset(key, mask, 10)
  assert len(sub) == 10 and np.all(np.diff(sub) > 0) and mask[sub].all()
  np.testing.assert_array_equal(sub, baselines.random_subset(key, mask, 10))
  assert baselines.random_subset(key, mask, 40).tolist() == \
      np.flatnonzero(mask).tolist()
  # Uniform: every masked position is drawn about equally often.
  counts = np.zeros(50)
  for i in range(300):
    counts[baselines.random_subset(jax.random.key(i), mask, 10)] += 1
  assert counts[~mask].sum() == 0
  assert counts[mask].min() > 0.5 * 300 * 10 / mask.sum()


def test_coreset_without_centers_is_linear_and_matches_numpy():
  """No paid point in the pool (round 1 of a job): the distances start at
  inf without a pass over all n points; picks equal a NumPy k-center."""
  import time
  from jaxkd.selection.baselines import coreset_select
  rng = np.random.default_rng(0)
  emb = rng.normal(size=(3000, 5)).astype(np.float32)
  picks = np.asarray(coreset_select(emb, np.ones(3000, bool), 6))
  x = emb.astype(np.float64)
  mind, want = np.full(3000, np.inf), []
  for _ in range(6):
    i = int(np.argmax(mind))
    want.append(i)
    mind = np.minimum(mind, ((x - x[i]) ** 2).sum(1))
  assert picks.tolist() == want
  big = rng.normal(size=(200_000, 8)).astype(np.float32)
  coreset_select(big[:1000], np.ones(1000, bool), 3)  # compile elsewhere
  t0 = time.perf_counter()
  coreset_select(big, np.ones(200_000, bool), 3)
  assert time.perf_counter() - t0 < 30  # the O(n^2 D) pass took minutes
