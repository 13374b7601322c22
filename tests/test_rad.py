"""RAD: closed-form max-min strategy vs a linear program, exact sampling."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import optimize, stats

from jaxkd.selection import SelectionInputs, get_strategy
from jaxkd.selection import rad
from jaxkd.validation import JaxkdError


def np_payoff(p, g, m):
  """sum_i p_i g_i minus the m largest p_i g_i (float64)."""
  c = np.sort(np.asarray(p, np.float64) * np.asarray(g, np.float64))[::-1]
  return c.sum() - c[:m].sum()


def lp_value(g, b, m):
  """max_p min_adversary payoff as one LP (top-m sum in its dual form).

  sum of the m largest c = min_{t>=0, u>=0} m t + sum u  s.t. u_i >= c_i - t,
  so the game value is  max  g.p - m t - sum u  over p in [0,1]^n,
  sum p = b, t >= 0, u >= 0, u_i >= g_i p_i - t.
  """
  n = len(g)
  cost = np.concatenate([-g, [m], np.ones(n)])  # linprog minimises
  a_ub = np.zeros((n, 2 * n + 1))
  a_ub[:, :n] = np.diag(g)
  a_ub[:, n] = -1.0
  a_ub[:, n + 1:] = -np.eye(n)
  a_eq = np.zeros((1, 2 * n + 1))
  a_eq[0, :n] = 1.0
  bounds = [(0, 1)] * n + [(0, None)] * (n + 1)
  res = optimize.linprog(cost, A_ub=a_ub, b_ub=np.zeros(n), A_eq=a_eq,
                         b_eq=[b], bounds=bounds, method="highs")
  assert res.status == 0, res.message
  return -res.fun


N = 12  # one pool length for every float32 call: one compile per function.


def _pad(g, n=N):
  """Pads gains to length n; the padding is marked unavailable."""
  g = np.asarray(g, np.float32)
  avail = np.arange(n) < len(g)
  return np.concatenate([g, np.zeros(n - len(g), np.float32)]), avail


def _random_gains(rng, n, mode):
  g = rng.random(n)
  if mode == 1:
    g[rng.random(n) < 0.4] = 0.0  # zero gains
  elif mode == 2:
    g = np.round(g * 3) / 3  # ties (and zeros)
  return g


def test_closed_form_matches_lp():
  rng = np.random.default_rng(0)
  with jax.enable_x64(True):
    for trial in range(60):
      n = int(rng.integers(1, N + 1))
      g = _random_gains(rng, n, trial % 3)
      b = int(rng.integers(1, n + 1))
      m = int(rng.integers(0, n + 2))
      # Pad to one length (padding unavailable) so this compiles once.
      gp = np.concatenate([g, rng.random(N - n)])
      p = np.asarray(rad.rad_probabilities(jnp.asarray(gp), b, m,
                                           available=np.arange(N) < n))
      assert p.dtype == np.float64
      assert np.all(p[n:] == 0)
      p = p[:n]
      np.testing.assert_allclose(p.sum(), b, atol=1e-9)
      assert p.min() >= 0 and p.max() <= 1
      assert abs(np_payoff(p, g, m) - lp_value(g, b, m)) < 1e-6, (g, b, m, p)


def test_hand_computed_two_points():
  # payoff(p) = min(10 p, 1 - p) for p = p_0: optimum p_0 = 1/11.
  g, avail = _pad([10.0, 1.0])
  p = rad.rad_probabilities(g, 1, 1, available=avail)
  np.testing.assert_allclose(np.asarray(p)[:2], [1 / 11, 10 / 11], rtol=1e-6)


def test_no_mistakes_is_top_b():
  rng = np.random.default_rng(1)
  g = rng.permutation(np.linspace(0.05, 1.0, N)).astype(np.float32)
  for b in (1, 3, N):
    p = np.asarray(rad.rad_probabilities(g, b, 0))
    expect = np.zeros(N)
    expect[np.argsort(-g)[:b]] = 1.0
    np.testing.assert_array_equal(p, expect)
  for seed in range(3):
    picks = rad.rad_select(jax.random.key(seed), g, 3, 0)
    assert set(np.asarray(picks).tolist()) == set(np.argsort(-g)[:3].tolist())


def test_edge_cases():
  g, avail = _pad([0.9, 0.5, 0.0, 0.7, 0.3, 0.0])
  probs = lambda g, b, m: np.asarray(
      rad.rad_probabilities(g, b, m, available=avail))[:6]
  # m >= positive gains: value 0, budget spread over positive-gain points.
  p = probs(g, 2, 4)
  assert p[[2, 5]].sum() == 0 and np.all(p[[0, 1, 3, 4]] > 0)
  # Budget beyond the positive-gain points: those all get p = 1 and the
  # zero-gain points share the rest evenly.
  np.testing.assert_allclose(probs(g, 5, 1), [1, 1, 0.5, 1, 1, 0.5], atol=1e-6)
  # All-zero gains: uniform.
  np.testing.assert_allclose(probs(0 * g, 3, 1), 0.5)
  # Equal gains share equal probabilities.
  np.testing.assert_allclose(probs(0 * g + 0.3, 2, 1), 1 / 3, atol=1e-6)


DRAWS = 20000
# Budget 3 throughout; p is an argument, so this compiles once.
_sample_batch = jax.jit(jax.vmap(
    lambda key, p: rad.systematic_sample(key, p, 3), in_axes=(0, None)))


def _sample_many(p, draws, seed=0):
  keys = jax.random.split(jax.random.key(seed), draws)
  return np.asarray(_sample_batch(keys, p))


def test_sampler_inclusion_frequencies():
  g = np.array([0.9, 0.5, 0.0, 0.7, 0.3, 0.05, 0.5, 0.8, 0.2, 0.6, 0.4, 0.1],
               np.float32)
  avail = np.ones(N, bool)
  avail[[7, 10]] = False
  b, m, draws = 3, 1, DRAWS
  p32 = rad.rad_probabilities(g, b, m, available=avail)
  p = np.asarray(p32, np.float64)
  assert np.all(p[~avail] == 0) and np.sum((p > 0) & (p < 1)) >= 4
  # rad_select is rad_probabilities followed by systematic_sample.
  key = jax.random.key(7)
  np.testing.assert_array_equal(rad.rad_select(key, g, b, m, available=avail),
                                rad.systematic_sample(key, p32, b))
  picks = _sample_many(p32, draws)
  assert picks.shape == (draws, b)
  srt = np.sort(picks, 1)
  assert np.all(srt[:, 1:] != srt[:, :-1])  # distinct in every draw
  counts = np.bincount(picks.ravel(), minlength=N)
  assert np.all(counts[p == 0] == 0)  # never unavailable / zero-p points
  assert np.all(counts[p >= 1 - 1e-6] == draws)
  # Each unit's count is exactly Binomial(draws, p_i): per-unit chi-square
  # (1 dof), Bonferroni over the fractional units.
  frac = (p > 1e-6) & (p < 1 - 1e-6)
  chi2 = ((counts[frac] - draws * p[frac]) ** 2
          / (draws * p[frac] * (1 - p[frac])))
  pvals = stats.chi2.sf(chi2, df=1)
  assert pvals.min() > 1e-3 / frac.sum(), (counts / draws, p)


def test_never_selects_unavailable_and_mistake_rate_default():
  rng = np.random.default_rng(2)
  g = rng.random(N).astype(np.float32)
  avail = rng.random(N) < 0.5
  avail[:3] = True
  p = rad.rad_probabilities(g, 3, 2, available=avail)
  assert np.all(np.asarray(p)[~avail] == 0)
  picks = _sample_many(p, DRAWS, seed=3)
  assert avail[picks].all()
  # m = round(mistake_rate * b): 0.6 * 3 = 1.8 -> 2.
  key = jax.random.key(4)
  np.testing.assert_array_equal(
      rad.rad_select(key, g, 3, mistake_rate=0.6, available=avail),
      rad.rad_select(key, g, 3, 2, available=avail))


def test_registered_strategy():
  rng = np.random.default_rng(5)
  probs = rng.dirichlet(np.ones(4), size=N).astype(np.float32)
  avail = rng.random(N) < 0.7
  avail[:3] = True
  strat = get_strategy("rad")
  assert {"probs", "mistake_rate"} <= strat.needs
  inputs = SelectionInputs(available=avail, probs=probs, mistake_rate=0.2)
  for opts in ({}, {"gain": "entropy"}, {"num_mistakes": 0}):
    idx = np.asarray(strat.fn(jax.random.key(0), inputs, 3, **opts))
    assert idx.dtype == np.int32 and len(set(idx.tolist())) == 3
    assert avail[idx].all()
  # Default gain is one minus the top-2 margin.
  s = np.sort(probs, 1)
  np.testing.assert_allclose(rad.rad_gains(probs), 1 - (s[:, -1] - s[:, -2]),
                             atol=1e-6)
  with pytest.raises(JaxkdError):
    strat.fn(jax.random.key(0), inputs._replace(mistake_rate=None), 3)


def test_bad_inputs():
  g = np.array([0.5, 0.2, 0.1], np.float32)
  key = jax.random.key(0)
  bad = [
      lambda: rad.rad_probabilities(np.array([0.5, np.nan, 0.1]), 1, 0),
      lambda: rad.rad_probabilities(np.array([0.5, -0.1, 0.1]), 1, 0),
      lambda: rad.rad_probabilities(g[None], 1, 0),
      lambda: rad.rad_probabilities(g, 0, 0),
      lambda: rad.rad_probabilities(g, 4, 0),
      lambda: rad.rad_probabilities(g, 2, 0,
                                    available=np.array([1, 0, 0], bool)),
      lambda: rad.rad_probabilities(g, 1, -1),
      lambda: rad.rad_probabilities(g, 1, 0, available=np.ones(4, bool)),
      lambda: rad.rad_select(key, g, 1),
      lambda: rad.rad_select(key, g, 1, 1, mistake_rate=0.1),
      lambda: rad.rad_select(key, g, 1, mistake_rate=1.5),
      lambda: rad.rad_gains(np.ones((3, 2)) / 2, gain="nope"),
      lambda: rad.rad_gains(np.full((3, 2), np.nan), gain="margin"),
      lambda: rad.systematic_sample(key, np.array([0.5, 0.5, 0.5]), 1),
      lambda: rad.systematic_sample(key, np.array([1.5, 0.5, 0.0]), 2),
      lambda: rad.systematic_sample(key, np.array([[0.5, 0.5]]), 1),
  ]
  for fn in bad:
    with pytest.raises(JaxkdError):
      fn()
