"""ADMM l2,1 reconstruction selection against a literal NumPy transcription.

The reference `np_literal_admm` is the paper's algorithm written out in plain
float64 NumPy, eigendecomposing A = 2 X^T X and X X^T every iteration; the
solver's thin-SVD form must reproduce its iterates. Optimality is checked
independently through the KKT conditions of the convex problem.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxkd import parallel
from jaxkd.selection import SelectionInputs, get_strategy
from jaxkd.selection.admm import (AdmmState, admm_objective, admm_select,
                                  admm_solve)
from jaxkd.selection.baselines import random_subset
from jaxkd.selection.registry import parse_options
from jaxkd.validation import JaxkdError


@pytest.fixture
def x64():
  with jax.enable_x64(True):
    yield


def np_literal_admm(features, alpha, theta, iters):
  """The paper's ADMM, literally: X = features^T in R^{d x n}, Q in R^{n x d}."""
  x = np.asarray(features, np.float64).T
  d, n = x.shape
  q = np.zeros((n, d))
  q_hat = np.zeros((n, d))
  lam = np.zeros((n, d))
  for _ in range(iters):
    a = 2.0 * x.T @ x
    b = 2.0 * x.T @ x @ x.T + theta * (q_hat - lam / theta)
    s1, u = np.linalg.eigh(a)
    s2, v = np.linalg.eigh(x @ x.T)
    dmat = (u.T @ b @ v) / (s1[:, None] * s2[None, :] + theta)
    q = u @ dmat @ v.T
    s = q + lam / theta
    for i in range(n):
      nrm = np.linalg.norm(s[i])
      q_hat[i] = (1.0 - alpha / (theta * nrm)) * s[i] if nrm > alpha / theta \
          else 0.0
    lam = lam + theta * (q - q_hat)
  return q, q_hat, lam


def np_objective(features, q, alpha):
  x = np.asarray(features, np.float64).T
  r = x - x @ q @ x
  return np.sum(r * r) + alpha * np.sum(np.linalg.norm(q, axis=1))


def _features(n, d, rank=None, seed=0):
  """Rows of mixed scale, singular values O(1) (keeps the literal accurate)."""
  rng = np.random.default_rng(seed)
  rank = min(n, d) if rank is None else rank
  f = rng.normal(size=(n, rank)) @ rng.normal(size=(rank, d))
  f *= rng.uniform(0.2, 2.0, size=(n, 1))
  return f / np.sqrt(n * d) * 3.0


def _rel(a, b):
  a = np.asarray(a, np.float64)
  b = np.asarray(b, np.float64)
  return np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300)


# ------------------------------------------------------ literal iterates ---


@pytest.mark.parametrize("n,d,rank", [(14, 5, None), (6, 15, None),
                                      (10, 10, None), (16, 6, 3)])
def test_iterates_match_literal_algorithm(x64, n, d, rank):
  f = _features(n, d, rank, seed=n + d)
  theta = 1e-5
  # Shrinkage threshold alpha / theta at the median row norm of the first
  # S = Q: about half the rows are zeroed, so both branches are compared.
  q1, _, _ = np_literal_admm(f, 0.0, theta, 1)
  alpha = theta * np.median(np.linalg.norm(q1, axis=1))
  zeroed = False
  for iters in (1, 2, 9):
    q, q_hat, lam = np_literal_admm(f, alpha, theta, iters)
    zeroed |= bool(np.any(np.linalg.norm(q_hat, axis=1) == 0))
    st = admm_solve(f, alpha=alpha, theta=theta, tol=0.0, max_iter=iters)
    assert st.q.dtype == jnp.float64
    assert int(st.iter_num) == iters
    assert _rel(st.q, q) < 1e-6
    assert _rel(st.q_hat, q_hat) < 1e-6
    assert _rel(st.lam, lam) < 1e-6
    # ||Q - Q_hat|| is a small difference of large iterates: compare it on
    # the scale of Q.
    assert abs(float(st.primal_residual) - np.linalg.norm(q - q_hat)) \
        <= 1e-6 * np.linalg.norm(q)
  # The shrinkage is active (the comparison covers both branches).
  assert zeroed


@pytest.fixture
def small_blocks(monkeypatch):
  """Row blocks of 4 rows at d = 5 (2 at d = 10): the fused sweep's loop and
  its tail run on test-sized problems."""
  from jaxkd.selection import admm as admm_mod
  monkeypatch.setattr(admm_mod, "_BLOCK_ELEMS", 20)
  admm_mod._compiled_solver.cache_clear()
  yield
  admm_mod._compiled_solver.cache_clear()


@pytest.mark.parametrize("n,d,rank", [(14, 5, None), (16, 5, 3), (9, 10, None)])
def test_blocked_sweep_matches_literal_algorithm(x64, small_blocks, n, d, rank):
  f = _features(n, d, rank, seed=2 * n + d)
  theta = 1e-5
  q1, _, _ = np_literal_admm(f, 0.0, theta, 1)
  alpha = theta * np.median(np.linalg.norm(q1, axis=1))
  for iters in (1, 3, 9):
    q, q_hat, lam = np_literal_admm(f, alpha, theta, iters)
    st = admm_solve(f, alpha=alpha, theta=theta, tol=0.0, max_iter=iters)
    for got, want in ((st.q, q), (st.q_hat, q_hat), (st.lam, lam)):
      assert got.shape == (n, d)
      assert _rel(got, want) < 1e-6
    assert abs(float(st.primal_residual) - np.linalg.norm(q - q_hat)) \
        <= 1e-6 * np.linalg.norm(q)
    assert abs(float(st.dual_residual)
               - theta * np.linalg.norm(q_hat - np_literal_admm(
                   f, alpha, theta, iters - 1)[1])) <= 1e-6 * theta * \
        max(np.linalg.norm(q_hat), 1e-300)
  # Residual balancing changes theta mid-run (the G correction path).
  ad = admm_solve(f, alpha=alpha, theta=theta, tol=1e-9, max_iter=400,
                  adaptive=True)
  rho_moved = float(ad.rho) != theta
  from jaxkd.selection import admm as admm_mod
  admm_mod._compiled_solver.cache_clear()
  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(admm_mod, "_BLOCK_ELEMS", 1 << 20)
    one = admm_solve(f, alpha=alpha, theta=theta, tol=1e-9, max_iter=400,
                     adaptive=True)
  admm_mod._compiled_solver.cache_clear()
  assert int(ad.iter_num) == int(one.iter_num)
  assert _rel(ad.q, one.q) < 1e-8
  assert rho_moved or n < d  # the correction path ran (n >= d cases).


def test_normalize_is_the_literal_algorithm_on_scaled_features(x64):
  f = _features(12, 4, seed=3) * 7.0
  st = admm_solve(f, tol=0.0, max_iter=4, normalize=True)
  smax = np.linalg.svd(f, compute_uv=False)[0]
  np.testing.assert_allclose(float(st.scale), smax, rtol=1e-12)
  q, _, _ = np_literal_admm(f / smax, 1e-6, 1e-5, 4)
  assert _rel(st.q, q) < 1e-6


def test_float32_by_default():
  st = admm_solve(_features(9, 3), tol=0.0, max_iter=2)
  assert st.q.dtype == jnp.float32 and st.q.shape == (9, 3)


# ----------------------------------------------------------- optimality ---


def _kkt_violation(f, q_hat, alpha):
  """Max violation of 0 in grad g(Q) + alpha d||Q||_{2,1} (relative to alpha)."""
  x = np.asarray(f, np.float64).T
  grad = -2.0 * x.T @ (x - x @ q_hat @ x) @ x.T  # [n, d]
  g = -grad / alpha  # must be a subgradient of ||.||_{2,1} at q_hat
  worst = 0.0
  for i in range(q_hat.shape[0]):
    nrm = np.linalg.norm(q_hat[i])
    if nrm > 0:
      worst = max(worst, np.linalg.norm(g[i] - q_hat[i] / nrm))
    else:
      worst = max(worst, np.linalg.norm(g[i]) - 1.0)
  return worst


def test_objective_reaches_optimum(x64):
  f = _features(40, 6, seed=7)
  alpha, theta = 1e-2, 1e-1
  long = admm_solve(f, alpha=alpha, theta=theta, tol=0.0, max_iter=20000)
  q_star = np.asarray(long.q_hat)
  # Independent certificate that the long run is optimal: KKT conditions.
  assert _kkt_violation(f, q_star, alpha) < 1e-6
  f_star = np_objective(f, q_star, alpha)
  assert 0 < np.sum(np.linalg.norm(q_star, axis=1) == 0) < 40  # rows dropped
  objs = []
  for iters in (2, 20):
    st = admm_solve(f, alpha=alpha, theta=theta, tol=0.0, max_iter=iters)
    objs.append(np_objective(f, np.asarray(st.q), alpha))
  st = admm_solve(f, alpha=alpha, theta=theta, tol=1e-7, max_iter=20000)
  assert int(st.iter_num) < 20000
  objs.append(np_objective(f, np.asarray(st.q), alpha))
  assert objs[0] > objs[-1]
  assert abs(objs[-1] - f_star) <= 1e-4 * f_star
  np.testing.assert_allclose(float(admm_objective(f, st.q, alpha=alpha)),
                             objs[-1], rtol=1e-10)
  # Residual balancing converges to the same optimum.
  ad = admm_solve(f, alpha=alpha, theta=theta, tol=1e-7, max_iter=20000,
                  adaptive=True)
  assert abs(np_objective(f, np.asarray(ad.q), alpha) - f_star) <= 1e-4 * f_star
  # So does over-relaxation (Boyd Sec. 3.4.3), in fewer iterations here.
  for relax in (1.5, 1.8):
    rx = admm_solve(f, alpha=alpha, theta=theta, tol=1e-7, max_iter=20000,
                    relax=relax)
    assert int(rx.iter_num) < int(st.iter_num)
    assert abs(np_objective(f, np.asarray(rx.q), alpha) - f_star) \
        <= 1e-4 * f_star
    assert _kkt_violation(f, np.asarray(rx.q_hat), alpha) < 1e-3


def np_relaxed_admm(features, alpha, theta, iters, a):
  """Boyd Sec. 3.4.3 on the literal iteration: Q_rel = a Q + (1 - a) Q_hat."""
  x = np.asarray(features, np.float64).T
  d, n = x.shape
  q_hat = np.zeros((n, d))
  lam = np.zeros((n, d))
  for _ in range(iters):
    s1, u = np.linalg.eigh(2.0 * x.T @ x)
    s2, v = np.linalg.eigh(x @ x.T)
    b = 2.0 * x.T @ x @ x.T + theta * (q_hat - lam / theta)
    q = u @ ((u.T @ b @ v) / (s1[:, None] * s2[None, :] + theta)) @ v.T
    q_rel = a * q + (1.0 - a) * q_hat
    s = q_rel + lam / theta
    nrm = np.linalg.norm(s, axis=1, keepdims=True)
    q_hat = np.where(nrm > alpha / theta,
                     1.0 - alpha / (theta * np.maximum(nrm, 1e-300)), 0.0) * s
    lam = lam + theta * (q_rel - q_hat)
  return q, q_hat, lam


def test_relaxed_iterates_match_literal(x64, small_blocks):
  f = _features(14, 5, seed=21)
  theta = 1e-5
  q1, _, _ = np_literal_admm(f, 0.0, theta, 1)
  alpha = theta * np.median(np.linalg.norm(q1, axis=1))
  q, q_hat, lam = np_relaxed_admm(f, alpha, theta, 7, 1.6)
  st = admm_solve(f, alpha=alpha, theta=theta, tol=0.0, max_iter=7, relax=1.6)
  assert _rel(st.q, q) < 1e-6 and _rel(st.q_hat, q_hat) < 1e-6
  assert _rel(st.lam, lam) < 1e-6


# ------------------------------------------------------------ selection ---


def test_selected_indices_match_literal(x64):
  f = _features(25, 5, seed=11)
  q, _, _ = np_literal_admm(f, 1e-6, 1e-5, 30)
  norms = np.linalg.norm(q, axis=1)
  got = admm_select(f, 6, tol=0.0, max_iter=30)
  assert got.dtype == jnp.int32
  np.testing.assert_array_equal(np.asarray(got), np.argsort(-norms)[:6])
  # Paper Eq. 20 blend, each term divided by its maximum.
  ent = np.random.default_rng(0).uniform(0, 2, size=25)
  beta = 0.3
  v = beta * norms / norms.max() + (1 - beta) * ent / ent.max()
  got = admm_select(f, 6, tol=0.0, max_iter=30, entropy=ent, beta=beta)
  np.testing.assert_array_equal(np.asarray(got), np.argsort(-v)[:6])


def test_strategy_uses_available_rows_only():
  rng = np.random.default_rng(5)
  n = 30
  emb = _features(n, 4, seed=5).astype(np.float32)
  pixels = rng.normal(size=(n, 3, 3)).astype(np.float32)
  probs = rng.dirichlet(np.ones(3), size=n).astype(np.float32)
  available = rng.random(n) < 0.6
  inputs = SelectionInputs(available=available, probs=probs, embeddings=emb,
                           pixels=pixels)
  strat = get_strategy("admm")
  assert {"embeddings", "probs"} <= strat.needs
  rows = np.flatnonzero(available)
  for feats, src in (("embeddings", emb), ("pixels", pixels.reshape(n, -1))):
    got = np.asarray(strat.fn(jax.random.key(0), inputs, 5, features=feats,
                              max_iter=50))
    assert len(set(got.tolist())) == 5 and available[got].all()
    p = probs[rows].astype(np.float64)
    ent = -np.sum(p * np.log(p), -1)
    want = rows[np.asarray(admm_select(src[rows], 5, max_iter=50,
                                       normalize=True, adaptive=True,
                                       entropy=ent))]
    np.testing.assert_array_equal(got, want)
  with pytest.raises(JaxkdError):
    strat.fn(jax.random.key(0), inputs, int(available.sum()) + 1)


def test_strategy_max_rows_solves_on_a_random_subset():
  """Above `max_rows` unqueried points the problem is that of a uniform
  random subset (`random_subset` of the key), picks among its rows; at or
  above the count, the whole pool as before (the key unused)."""
  rng = np.random.default_rng(6)
  n = 40
  emb = _features(n, 4, seed=6).astype(np.float32)
  probs = rng.dirichlet(np.ones(3), size=n).astype(np.float32)
  available = rng.random(n) < 0.8
  inputs = SelectionInputs(available=available, probs=probs, embeddings=emb)
  strat = get_strategy("admm")
  opts = dict(max_iter=30, use_entropy=False)
  whole = np.asarray(strat.fn(jax.random.key(0), inputs, 4, max_rows=None,
                              **opts))
  for max_rows in (int(available.sum()), 10 * n):
    np.testing.assert_array_equal(
        strat.fn(jax.random.key(1), inputs, 4, max_rows=max_rows, **opts),
        whole)
  key = jax.random.key(2)
  rows = random_subset(key, available, 12)
  assert len(rows) == 12 and available[rows].all()
  got = np.asarray(strat.fn(key, inputs, 4, max_rows=12, **opts))
  want = rows[np.asarray(admm_select(emb[rows], 4, max_iter=30,
                                     normalize=True, adaptive=True))]
  np.testing.assert_array_equal(got, want)
  # k above max_rows: the subset holds k rows, every one picked.
  got = np.asarray(strat.fn(key, inputs, 12, max_rows=3, **opts))
  assert sorted(got.tolist()) == rows.tolist()
  with pytest.raises(JaxkdError, match="max_rows"):
    parse_options(strat, {"max_rows": 0})


# -------------------------------------------------------- sharding, vmap ---


def test_sharded_equals_single_device(x64):
  single = parallel.make_mesh(jax.devices()[:1])
  mesh = parallel.make_mesh()
  assert parallel.num_shards(mesh) == 8
  # n = 30: padded to 32, 4 rows per shard < d (the TSQR pads them to d).
  for n, d in ((30, 6), (48, 4)):
    f = _features(n, d, seed=n)
    a = admm_solve(f, tol=1e-8, max_iter=200, mesh=single)
    b = admm_solve(f, tol=1e-8, max_iter=200, mesh=mesh)
    assert int(a.iter_num) == int(b.iter_num)
    for x, y in zip(a[:3], b[:3]):
      assert y.shape == (n, d)
      assert _rel(y, x) < 1e-10
  # A row-sharded jax.Array runs sharded without naming the mesh.
  xs = jax.device_put(jnp.asarray(f), parallel.data_sharding(mesh))
  c = admm_solve(xs, tol=1e-8, max_iter=200)
  assert c.q.sharding.spec[0] == parallel.DATA_AXIS
  assert _rel(c.q, a.q) < 1e-10


def test_sharded_blocked_equals_single_device(x64, small_blocks):
  mesh = parallel.make_mesh()
  f = _features(80, 5, seed=4)  # 10 rows per shard: 2 blocks of 4 + a tail.
  a = admm_solve(f, tol=1e-8, max_iter=200, mesh=None)
  b = admm_solve(f, tol=1e-8, max_iter=200, mesh=mesh)
  assert int(a.iter_num) == int(b.iter_num)
  for x, y in zip(a[:3], b[:3]):
    assert _rel(y, x) < 1e-10


def test_vmap_over_problems(x64):
  fs = np.stack([_features(12, 4, seed=s) * (1 + s) for s in range(3)])
  solve = lambda f: admm_solve(f, tol=1e-6, max_iter=5000)
  batched = jax.jit(jax.vmap(solve))(jnp.asarray(fs))
  iters = []
  for i in range(3):
    one = solve(fs[i])
    iters.append(int(one.iter_num))
    assert int(batched.iter_num[i]) == iters[-1]
    assert _rel(batched.q[i], one.q) < 1e-10
  assert len(set(iters)) > 1  # per-problem iteration counts


# --------------------------------------------------------------- errors ---


def test_bad_inputs_raise():
  f = _features(10, 3).astype(np.float32)
  bad = f.copy()
  bad[2, 1] = np.nan
  with pytest.raises(JaxkdError, match="NaN"):
    admm_solve(bad)
  with pytest.raises(JaxkdError, match="NaN"):
    admm_select(bad, 2)
  with pytest.raises(JaxkdError, match="rank"):
    admm_solve(f[0])
  with pytest.raises(JaxkdError, match="rank"):
    admm_select(f[None], 2)
  with pytest.raises(JaxkdError, match="alpha"):
    admm_solve(f, alpha=-1.0)
  for relax in (0.0, 2.0, float("nan")):
    with pytest.raises(JaxkdError, match="relax"):
      admm_solve(f, relax=relax)
  for theta in (0.0, -1e-5):
    with pytest.raises(JaxkdError, match="theta"):
      admm_solve(f, theta=theta)
  for k in (0, -1, 11):
    with pytest.raises(JaxkdError, match="k"):
      admm_select(f, k)
  with pytest.raises(JaxkdError, match="entropy"):
    admm_select(f, 2, entropy=np.ones(9))
  with pytest.raises(JaxkdError, match="beta"):
    admm_select(f, 2, entropy=np.ones(10), beta=1.5)
  with pytest.raises(JaxkdError, match="max_iter"):
    admm_solve(f, max_iter=-1)
  assert isinstance(admm_solve(f, max_iter=0), AdmmState)
