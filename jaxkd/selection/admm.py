"""Reconstruction-based selection: the l2,1 ADMM solver, exact and fast.

Implements the active sample selection of "Knowledge Distillation in Deep
Networks under a Constrained Query Budget": choose the k pool points whose
span best reconstructs the pool, by solving (paper notation, X in R^{d x n},
columns are samples; here `features` = X^T is [n, d], rows are samples)

  min_Q ||X - X Q X||_F^2 + alpha ||Q||_{2,1},   Q in R^{n x d},

with ADMM on the split Q = Q_hat (multiplier lam, penalty theta). One
iteration of the paper's algorithm is

  Q     <- solution of A Q X X^T + theta Q = B,   A = 2 X^T X,
           B = 2 X^T X X^T + theta (Q_hat - lam / theta),
  Q_hat <- row shrinkage of S = Q + lam / theta: row i becomes
           (1 - alpha / (theta ||S_i||)) S_i if ||S_i|| > alpha / theta else 0,
  lam   <- lam + theta (Q - Q_hat),

and the selection is the k rows of Q with the largest l2 norms.

Exact thin-SVD form (same iterates, no n x n matrix). The paper solves the
Q-update with A = U S1 U^T and X X^T = V S2 V^T as Q = U D V^T,
D_ij = (U^T B V)_ij / (S1_i S2_j + theta), eigendecomposing the n x n matrix A
every iteration (O(n^3) time, O(n^2) memory). Take one thin SVD of the
features instead, F = X^T = Z diag(s) W^T with Z [n, r], W [d, r],
r = min(n, d). Then A = 2 Z s^2 Z^T and X X^T = W s^2 W^T, so U = [Z, Z_perp],
S1 = [2 s^2, 0], V = [W, W_perp], S2 = [s^2, 0]. Write M = Q_hat - lam / theta,
so B = 2 Z s^3 W^T + theta M. Every (i, j) block with i or j outside the rank-r
spans has S1_i S2_j = 0, hence D = (U^T B V) / theta there, and the constant
term 2 Z s^3 W^T lies entirely inside the spans. Summing the blocks,

  Q = M + Z T W^T,   T = diag(c) - (Z^T M W) * R   (elementwise *),
  c_i  = 2 s_i^3 / (2 s_i^4 + theta) = 1 / (s_i + theta / (2 s_i^3)),
  R_ij = 2 s_i^2 s_j^2 / (2 s_i^2 s_j^2 + theta)
       = 1 / (1 + theta / (2 s_i^2 s_j^2)).

This is algebraically identical to the paper's update for any orthonormal
completions Z_perp, W_perp (they cancel), continuous in s (zero singular
values contribute nothing, so no rank threshold is needed) and free of the
1/theta amplification: the literal algorithm forms B / theta on the null
directions, where rounding of the large 2 X^T X X^T term is multiplied by
1/theta = 1e5; the form above never divides by theta. (Against a 40-digit
mpmath run the literal float64 algorithm is off by ~1e-7 relative on a
rank-deficient 12 x 3 problem, this form by ~1e-15.)

One iteration costs two [n, d] x [d, r]-sized products, O(n d r) time and
O(n d) memory; the SVD is done once, before the `lax.while_loop`. The
iteration runs as one fused pass over row blocks (`_sweep`): Q, Q_hat and
lam all follow from S = Q_hat + Z T W^T row by row, so no [n, d]
temporary is formed.

Conditioning. With the paper's theta = 1e-5, R_ij ~ 1 and c_i ~ 1 / s_i for
every direction with s_i s_j >> sqrt(theta): the Q-update is essentially the
pseudo-inverse of X, so Q has entries of size 1 / s_min. In float32 the
numerically-zero singular values of a rank-deficient X come out near
1e-7 s_max rather than 0, and their 1 / s blows up. Use float64
(`jax.config.update("jax_enable_x64", True)`, picked up automatically), or
`normalize=True`, which divides the features by their largest singular value
so that theta acts as a relative damping: directions with
s_i s_j < ~sqrt(theta / 2) s_max^2 are shrunk instead of inverted.

Sharding. The Q-update and the row shrinkage act row by row; with the pool
axis (rows of `features`) sharded over the ("data",) mesh the loop's only
cross-device traffic per iteration is the psum of Z^T M ([r, d]) and of five
scalars (norms for the residuals). The SVD is a TSQR: a QR of each shard,
an all-gather of the [d, d] R factors, a QR and SVD of the stacked factors.

References:
  Knowledge Distillation in Deep Networks under a Constrained Query Budget
    (reconstruction selection, l2,1 ADMM, entropy blend of Eq. 20).
  Boyd et al. Distributed Optimization and Statistical Learning via the
    Alternating Direction Method of Multipliers, 2011 (residuals, stopping
    criterion Sec. 3.3.1, residual balancing Sec. 3.4.1).
  Demmel et al. Communication-optimal parallel and sequential QR and LU
    factorizations, 2012 (TSQR).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxkd import parallel
from jaxkd.fields import setting
from jaxkd.selection.baselines import entropy as _entropy
from jaxkd.selection.baselines import random_subset
from jaxkd.selection.registry import (SelectionInputs, parse_options,
                                      register_strategy)
from jaxkd.validation import (JaxkdError, check_features, check_finite,
                              check_k, check_positive, check_rank, is_concrete,
                              is_int)

_HI = lax.Precision.HIGHEST
# Residual balancing (Boyd Sec. 3.4.1): change theta by `_TAU` when one
# residual exceeds `_MU` times the other.
_MU = 10.0
_TAU = 2.0
# Elements per row block of the fused sweep (~4 MiB of float32).
_BLOCK_ELEMS = 1 << 20


class AdmmState(NamedTuple):
  """State of the l2,1 ADMM solver (n pool points, d features).

  Attributes:
    q: [n, d] the Q iterate (rows scored for selection).
    q_hat: [n, d] the row-sparse split variable Q_hat.
    lam: [n, d] the (unscaled) multiplier lam.
    iter_num: int32 scalar, iterations run (per problem under vmap).
    primal_residual: ||Q - Q_hat||_F of the last iteration.
    dual_residual: theta ||Q_hat - Q_hat_prev||_F of the last iteration.
    error: max(primal_residual / max(||Q||, ||Q_hat||),
      dual_residual / ||lam||), the relative residual (inf before iterating).
    rho: the penalty theta used by the last iteration (differs from the
      input theta only with `adaptive=True`).
    scale: the features were divided by this before solving (their largest
      singular value with `normalize=True`, else 1).
  """
  q: jax.Array
  q_hat: jax.Array
  lam: jax.Array
  iter_num: jax.Array
  primal_residual: jax.Array
  dual_residual: jax.Array
  error: jax.Array
  rho: jax.Array
  scale: jax.Array


# ------------------------------------------------------------ linear algebra


def _mm(a, b):
  return jnp.matmul(a, b, precision=_HI)


def _psum(x, axis):
  return x if axis is None else lax.psum(x, axis)


def _tsqr_svd(f_loc, axis):
  """Thin SVD of the row-sharded F (inside shard_map over `axis`).

  Args:
    f_loc: [m, d] this device's rows of F.
    axis: mesh axis name the rows are sharded over.

  Returns:
    z_loc [m, d] (this device's rows of Z), s [d], w [d, d] with
    F = Z diag(s) W^T. If n < d the trailing d - n singular values are ~0 and
    their Z columns are arbitrary: the update gives them zero weight.
  """
  m, d = f_loc.shape
  if m < d:
    f_loc = jnp.pad(f_loc, ((0, d - m), (0, 0)))
  q1, r1 = jnp.linalg.qr(f_loc)  # [max(m, d), d], [d, d]
  rs = lax.all_gather(r1, axis, tiled=True)  # [p d, d]
  q2, r = jnp.linalg.qr(rs)  # [p d, d], [d, d]
  ur, s, wt = jnp.linalg.svd(r)
  q2_loc = lax.dynamic_slice_in_dim(q2, lax.axis_index(axis) * d, d, axis=0)
  z_loc = _mm(q1[:m], _mm(q2_loc, ur))
  return z_loc, s, wt.T


def _thin_svd(f, axis):
  if axis is not None:
    return _tsqr_svd(f, axis)
  z, s, wt = jnp.linalg.svd(f, full_matrices=False)
  return z, s, wt.T


def _update_coefficients(s, theta):
  """c [r] and R [r, r] of the thin-SVD Q-update (see module docstring)."""
  s2 = s * s
  c = 1.0 / (s + theta / (2.0 * s2 * s))  # 1/(s + inf) = 0 at s = 0.
  r = 1.0 / (1.0 + theta / (2.0 * s2[:, None] * s2[None, :]))
  return c, r


def _shrink_rows(x, t):
  """Row shrinkage: x_i (1 - t / ||x_i||) if ||x_i|| > t else 0."""
  nrm = jnp.sqrt(jnp.sum(x * x, axis=1, keepdims=True))
  factor = jnp.where(nrm > t, 1.0 - t / jnp.where(nrm > t, nrm, 1.0), 0.0)
  return factor * x


# ------------------------------------------------------------------ solver


def _block_rows(n, d):
  """Rows per block of the fused sweep: ~4 MiB of float32 per [rows, d] tile."""
  return max(1, min(n, _BLOCK_ELEMS // max(d, 1)))


def _sweep(z, tw, qql, th, thr, block, axis, relax=1.0):
  """One fused pass over the rows: the Q-update, shrinkage and multiplier.

  With S = Q_hat + Z T W^T (= Q + lam / theta, since M + lam / theta = Q_hat):
    Q = S - lam / theta,  Q_hat' = shrink(S, alpha / theta),
    lam' = theta (S - Q_hat')  (= lam + theta (Q - Q_hat')),
    M' = Q_hat' - lam' / theta = 2 Q_hat' - S  (the next iteration's M).
  Row block by row block, so no [n, d] temporary is formed and Z, Q_hat, lam
  are read once and Q, Q_hat, lam written once per iteration; the next
  iteration's projection G = Z^T M' [r, d] is accumulated on the way. The
  three iterates share one [3, m, d] buffer so that XLA updates it in place
  (separate buffers get a full copy per block).

  Over-relaxation (Boyd et al. Sec. 3.4.3, `relax` = a in (0, 2)): the
  shrinkage and multiplier see a Q + (1 - a) Q_hat in place of Q, i.e.
  S = a (Q_hat + Z T W^T) + (1 - a) (Q_hat + lam / theta); a = 1 is the
  paper's iteration (the extra term is skipped, bit for bit).

  Args:
    z: [m, r] left singular vectors (this device's rows).
    tw: [r, d] T W^T of this iteration.
    qql: [3, m, d] stacked (Q, Q_hat, lam), updated in place.
    th, thr: theta and the shrinkage threshold alpha / theta.
    block: rows per block (static).
    axis: the mesh axis the rows are sharded over, or None.
    relax: the over-relaxation a (static).

  Returns:
    qql' [3, m, d], G [r, d] (local), and the five local sums of squares
    [5]: ||Q - Q_hat'||, ||Q_hat' - Q_hat||, ||Q||, ||Q_hat'||, ||lam'||.
  """
  _, m, d = qql.shape
  r = z.shape[1]
  dt = qql.dtype

  def tile(z_b, blk):
    # Every read of the old block must feed the written block, or XLA copies
    # the whole [3, m, d] buffer per block to keep the old value alive; so
    # Q_hat' - Q_hat is formed as P - (S - Q_hat') (S = Q_hat + P), not from
    # a second read of Q_hat.
    qh_b, lam_b = blk[1], blk[2]
    p_b = _mm(z_b, tw)
    s0_b = qh_b + p_b
    q_b = s0_b - lam_b / th
    s_b = s0_b if relax == 1.0 else relax * s0_b + (1.0 - relax) * (
        qh_b + lam_b / th)
    qh_new = _shrink_rows(s_b, thr)
    lam_new = th * (s_b - qh_new)
    g_b = _mm(z_b.T, 2.0 * qh_new - s_b)
    diff = q_b - qh_new
    dq = p_b - (s0_b - qh_new)
    sums = jnp.stack([jnp.sum(diff * diff), jnp.sum(dq * dq),
                      jnp.sum(q_b * q_b), jnp.sum(qh_new * qh_new),
                      jnp.sum(lam_new * lam_new)])
    return jnp.stack([q_b, qh_new, lam_new]), g_b, sums

  nb, tail = divmod(m, block)
  g = jnp.zeros((r, d), dt)
  sums = jnp.zeros((5,), dt)
  if axis is not None:  # per-device partial sums: varying over the mesh axis.
    g, sums = (lax.pcast(x, (axis,), to="varying") for x in (g, sums))
  if nb:
    def step(i, carry):
      qql, g, sums = carry
      lo = i * block
      new, g_b, s_b = tile(lax.dynamic_slice_in_dim(z, lo, block, axis=0),
                           lax.dynamic_slice_in_dim(qql, lo, block, axis=1))
      return (lax.dynamic_update_slice_in_dim(qql, new, lo, axis=1), g + g_b,
              sums + s_b)
    qql, g, sums = lax.fori_loop(0, nb, step, (qql, g, sums))
  if tail:
    lo = nb * block
    new, g_b, s_b = tile(z[lo:], qql[:, lo:])
    qql = lax.dynamic_update_slice_in_dim(qql, new, lo, axis=1)
    g, sums = g + g_b, sums + s_b
  return qql, g, sums


def _solve_core(f, alpha, theta, max_iter, tol, atol, *, normalize, adaptive,
                axis, relax=1.0, block=None):
  """ADMM on local rows `f` [m, d]; rows are sharded over `axis` if not None."""
  dt = f.dtype
  n_total = _psum(jnp.asarray(f.shape[0], dt), axis)
  sqrt_nd = jnp.sqrt(n_total * f.shape[1])
  z, s, w = _thin_svd(f, axis)
  if block is None:
    block = _block_rows(*f.shape)
  if normalize:
    scale = jnp.where(s[0] > 0, s[0], jnp.ones((), dt))
    s = s / scale
  else:
    scale = jnp.ones((), dt)
  qql = jnp.zeros((3,) + f.shape, dt)  # (Q, Q_hat, lam), see `_sweep`.
  if axis is not None:  # per-device rows: mark as varying over the mesh axis.
    qql = lax.pcast(qql, (axis,), to="varying")
  inf = jnp.asarray(jnp.inf, dt)
  # The loop carries AdmmState with q = the stacked iterates, q_hat = lam =
  # None; they are unstacked once, after the loop.
  init = AdmmState(qql, None, None, jnp.zeros((), jnp.int32), inf, inf, inf,
                   theta, scale)
  # G = Z^T M of the coming iteration ([r, d], summed over devices); M = 0.
  g0 = jnp.zeros((z.shape[1], f.shape[1]), dt)

  def body(carry):
    st, g, _ = carry
    th = st.rho
    c, r = _update_coefficients(s, th)
    t = jnp.diag(c) - _mm(g, w) * r
    qql, g_loc, sums = _sweep(z, _mm(t, w.T), st.q, th, alpha / th, block,
                              axis, relax)
    g = _psum(g_loc, axis)
    prim, dual_raw, nq, nqh, nlam = jnp.sqrt(_psum(sums, axis))
    dual = th * dual_raw
    tiny = jnp.finfo(dt).tiny
    error = jnp.maximum(prim / jnp.maximum(jnp.maximum(nq, nqh), tiny),
                        dual / jnp.maximum(nlam, tiny))
    eps_pri = atol * sqrt_nd + tol * jnp.maximum(nq, nqh)
    eps_dual = atol * sqrt_nd + tol * nlam
    done = (prim <= eps_pri) & (dual <= eps_dual) & ((tol > 0) | (atol > 0))
    if adaptive:
      rel_p = prim / jnp.maximum(jnp.maximum(nq, nqh), tiny)
      rel_d = dual / jnp.maximum(nlam, tiny)
      new_th = jnp.where(rel_p > _MU * rel_d, th * _TAU,
                         jnp.where(rel_d > _MU * rel_p, th / _TAU, th))
      # G was accumulated for M = Q_hat - lam / th; a new theta changes the
      # lam term only: G += (1 / th - 1 / new_th) Z^T lam (rarely taken).
      g = lax.cond(
          new_th != th,
          lambda g: g + (1.0 / th - 1.0 / new_th) * _psum(_mm(z.T, qql[2]),
                                                           axis),
          lambda g: g, g)
    else:
      new_th = th
    st = AdmmState(qql, None, None, st.iter_num + 1, prim, dual, error,
                   new_th, st.scale)
    return st, g, done

  def cond(carry):
    st, _, done = carry
    return (st.iter_num < max_iter) & ~done

  out, _, _ = lax.while_loop(cond, body, (init, g0, jnp.zeros((), bool)))
  return out._replace(q=out.q[0], q_hat=out.q[1], lam=out.q[2])


@functools.lru_cache(maxsize=None)
def _compiled_solver(mesh: Optional[Mesh], normalize: bool, adaptive: bool,
                     relax: float = 1.0):
  """jit (and, with a mesh, shard_map) of `_solve_core` for static options."""
  if mesh is None:
    fn = functools.partial(_solve_core, normalize=normalize, adaptive=adaptive,
                           axis=None, relax=relax)
    return jax.jit(fn)
  axis = parallel.DATA_AXIS
  fn = functools.partial(_solve_core, normalize=normalize, adaptive=adaptive,
                         axis=axis, relax=relax)
  rows, rep = P(axis), P()
  out_specs = AdmmState(rows, rows, rows, rep, rep, rep, rep, rep, rep)
  return jax.jit(jax.shard_map(
      fn, mesh=mesh, in_specs=(rows, rep, rep, rep, rep, rep),
      out_specs=out_specs))


def _compute_dtype(dtype):
  if dtype is not None:
    return jnp.dtype(dtype)
  return jnp.dtype(jax.dtypes.canonicalize_dtype(jnp.float64))


def _mesh_of(x) -> Optional[Mesh]:
  """The mesh of a row-sharded jax.Array over >1 device, else None."""
  sh = getattr(x, "sharding", None)
  if not isinstance(sh, NamedSharding) or sh.mesh.size <= 1:
    return None
  spec = tuple(sh.spec) + (None,) * 2
  if spec[0] != parallel.DATA_AXIS:
    return None
  return sh.mesh


def _check_hyperparameters(alpha, theta, max_iter, tol, atol=0.0, relax=1.0):
  """One-line JaxkdError on a bad solver hyperparameter (see `admm_solve`)."""
  check_positive("alpha", alpha, strict=False)
  check_positive("theta", theta)
  check_positive("tol", tol, strict=False)
  check_positive("atol", atol, strict=False)
  if not 0.0 < float(relax) < 2.0:
    raise JaxkdError(f"relax must be in (0, 2), got {relax}.")
  if isinstance(max_iter, bool) or not isinstance(max_iter, (int, np.integer)):
    raise JaxkdError(f"max_iter must be an int, got {max_iter!r}.")
  if max_iter < 0:
    raise JaxkdError(f"max_iter must be >= 0, got {max_iter}.")


def _check_beta(beta):
  if not 0.0 <= beta <= 1.0:
    raise JaxkdError(f"beta must be in [0, 1], got {beta}.")


def admm_solve(features: Any, *, alpha: float = 1e-6, theta: float = 1e-5,
               max_iter: int = 500, tol: float = 1e-4, atol: float = 0.0,
               normalize: bool = False, adaptive: bool = False,
               relax: float = 1.0, mesh: Optional[Mesh] = None,
               dtype: Any = None) -> AdmmState:
  """Solves min_Q ||X - X Q X||_F^2 + alpha ||Q||_{2,1} by ADMM (X = features^T).

  Runs the paper's ADMM iteration (see the module docstring) in its exact
  thin-SVD form inside a jitted `lax.while_loop`: one SVD up front, then
  O(n d r) time and O(n d) memory per iteration, r = min(n, d).

  Stopping (Boyd et al. Sec. 3.3.1): after iteration k the loop stops when
  primal_residual <= atol sqrt(n d) + tol max(||Q||, ||Q_hat||) and
  dual_residual <= atol sqrt(n d) + tol ||lam||, or when k = max_iter. With
  `tol = atol = 0` it runs exactly `max_iter` iterations.

  Args:
    features: [n, d] pool features, one row per sample (X = features^T). May
      be a jax.Array sharded over rows on a ("data",) mesh; it then runs
      sharded on that mesh.
    alpha: l2,1 weight (>= 0). Paper default 1e-6.
    theta: ADMM penalty (> 0). Paper default 1e-5.
    max_iter: iteration cap (>= 0).
    tol: relative tolerance of the stopping rule (>= 0).
    atol: absolute tolerance of the stopping rule (>= 0).
    normalize: divide the features by their largest singular value first
      (see "Conditioning" in the module docstring); `state.scale` records it
      and the returned Q solves the problem for `features / state.scale`.
    adaptive: residual balancing of theta (Boyd Sec. 3.4.1, mu = 10,
      tau = 2) on the relative residuals (primal / max(||Q||, ||Q_hat||) vs
      dual / ||lam||). Same optimum; with `normalize=True` it typically
      needs fewer iterations, without normalization it can need more.
      With False (default) the iterates are exactly the paper's. Only the
      r x r coefficients c, R depend on theta, so changing it is free.
      Same fixed point, whatever theta: at a fixed point Q = Q_hat and lam
      is unchanged; the Q-update's optimality gives grad g(Q) + lam = 0
      (its theta (Q - Q_hat) term vanishes) and the shrinkage's gives
      lam in alpha d||Q_hat||_{2,1}, which together are the KKT conditions
      of min g(Q) + alpha ||Q||_{2,1}, free of theta (g is the
      reconstruction term). `tests/test_admm.py` checks the adaptive
      optimum against an independent KKT certificate.
    relax: over-relaxation a in (0, 2) (Boyd Sec. 3.4.3): the shrinkage and
      multiplier use a Q + (1 - a) Q_hat. Same fixed point (Q = Q_hat
      there); 1.0 (default) is the paper's iteration. The strategies page
      of the documentation gives measured iteration counts.
    mesh: run sharded over the rows on this ("data",) mesh (rows are
      zero-padded to a multiple of the device count; zero rows do not change
      the other rows' iterates and are dropped from the result).
    dtype: compute dtype; default float64 if `jax_enable_x64` else float32.

  Returns:
    AdmmState with q, q_hat, lam of shape [n, d]. Works under `jax.vmap`
    over a leading batch axis of `features` (mesh=None), with per-problem
    `iter_num`.

  Raises:
    JaxkdError: features not a finite floating [n, d] array with n, d >= 1,
      alpha < 0, theta <= 0, max_iter < 0, tol/atol < 0 or relax outside
      (0, 2).

  Example:
    >>> import numpy as np
    >>> f = np.random.default_rng(0).normal(size=(50, 4))
    >>> st = admm_solve(f, tol=0.0, max_iter=10)
    >>> st.q.shape, int(st.iter_num)
    ((50, 4), 10)
  """
  check_features("features", features, 2)
  if features.shape[0] < 1 or features.shape[1] < 1:
    raise JaxkdError(f"features must be non-empty [n, d], got shape "
                     f"{tuple(features.shape)}.")
  _check_hyperparameters(alpha, theta, max_iter, tol, atol, relax)
  relax = float(relax)
  dt = _compute_dtype(dtype)
  if not jnp.issubdtype(dt, jnp.floating):
    raise JaxkdError(f"dtype must be floating, got {dt}.")
  scalars = [jnp.asarray(v, dt) for v in (alpha, theta)]
  scalars.append(jnp.asarray(max_iter, jnp.int32))
  scalars += [jnp.asarray(v, dt) for v in (tol, atol)]

  if not is_concrete(features):  # under jit / vmap: single-device path.
    solver = _compiled_solver(None, bool(normalize), bool(adaptive), relax)
    return solver(features.astype(dt), *scalars)

  if mesh is None:
    mesh = _mesh_of(features)
  if mesh is None or mesh.size == 1:
    solver = _compiled_solver(None, bool(normalize), bool(adaptive), relax)
    return solver(jnp.asarray(features, dt), *scalars)

  n = features.shape[0]
  x = jnp.asarray(features, dt)
  x, _ = parallel.pad_to_multiple(x, parallel.num_shards(mesh))
  x = jax.device_put(x, parallel.data_sharding(mesh))
  solver = _compiled_solver(mesh, bool(normalize), bool(adaptive), relax)
  st = solver(x, *scalars)
  if x.shape[0] != n:
    st = st._replace(q=st.q[:n], q_hat=st.q_hat[:n], lam=st.lam[:n])
  return st


# --------------------------------------------------------------- objective


@jax.jit
def _objective(f, q, alpha):
  g = _mm(f.T, q)  # X Q : [d, d]
  resid = f.T - _mm(g, f.T)  # X - X Q X : [d, n]
  return (jnp.sum(resid * resid)
          + alpha * jnp.sum(jnp.sqrt(jnp.sum(q * q, axis=1))))


def admm_objective(features: Any, q: Any, *, alpha: float = 1e-6) -> jax.Array:
  """||X - X Q X||_F^2 + alpha ||Q||_{2,1} with X = features^T.

  Args:
    features: [n, d] (pass `features / state.scale` for a normalized solve).
    q: [n, d].
    alpha: l2,1 weight.

  Returns:
    Scalar objective, O(n d^2).
  """
  check_features("features", features, 2)
  check_features("q", q, 2)
  if tuple(np.shape(q)) != tuple(np.shape(features)):
    raise JaxkdError(f"q must have the shape of features "
                     f"{tuple(np.shape(features))}, got {tuple(np.shape(q))}.")
  dt = jnp.result_type(q, features, jnp.float32)
  return _objective(jnp.asarray(features, dt), jnp.asarray(q, dt),
                    jnp.asarray(alpha, dt))


# --------------------------------------------------------------- selection


def _unit_max(x):
  m = jnp.max(x)
  return jnp.where(m > 0, x / jnp.where(m > 0, m, 1.0), jnp.zeros_like(x))


def blend_scores(row_norms: jax.Array, entropy: Optional[jax.Array] = None,
                 beta: float = 0.5) -> jax.Array:
  """Paper Eq. 20: v = beta q + (1 - beta) e on a common [0, 1] scale.

  q (the row norms of Q) and e (student entropy) are each divided by their
  maximum over the candidate rows (an all-zero vector stays zero), so both
  lie in [0, 1] and 0 keeps its meaning (nothing to reconstruct / certain).
  Without `entropy` the score is the row norms themselves.

  Args:
    row_norms: [n] l2 norms of the rows of Q.
    entropy: [n] predictive entropy of the student on the same rows, or None.
    beta: weight of the reconstruction term, in [0, 1].

  Returns:
    [n] scores; higher is selected first.
  """
  if entropy is None:
    return row_norms
  return beta * _unit_max(row_norms) + (1.0 - beta) * _unit_max(entropy)


@functools.partial(jax.jit, static_argnames=("k",))
def _top_k(scores, k):
  return lax.top_k(scores, k)[1].astype(jnp.int32)


def admm_select(features: Any, k: int, *, alpha: float = 1e-6,
                theta: float = 1e-5, max_iter: int = 500, tol: float = 1e-4,
                atol: float = 0.0, normalize: bool = False,
                adaptive: bool = False, relax: float = 1.0,
                entropy: Any = None, beta: float = 0.5,
                mesh: Optional[Mesh] = None, dtype: Any = None) -> jax.Array:
  """The k pool points whose rows of Q have the largest l2 norm (or blend).

  Solves `admm_solve(features, ...)` and returns the top-k rows of
  `blend_scores(||Q_i||, entropy, beta)` (ties: lowest index first). With
  `entropy=None` this is the paper's pure reconstruction selection.

  Args:
    features: [n, d] pool features (rows are samples).
    k: number of points, 1 <= k <= n.
    alpha, theta, max_iter, tol, atol, normalize, adaptive, relax, mesh, dtype:
      as in `admm_solve`.
    entropy: optional [n] student prediction entropy (paper Eq. 20).
    beta: weight of the reconstruction score in the blend, in [0, 1].

  Returns:
    int32 [k] distinct row indices.

  Raises:
    JaxkdError: bad features/hyperparameters (see `admm_solve`), k outside
      [1, n], entropy not a finite [n] vector, beta outside [0, 1].
  """
  check_rank("features", features, 2)
  k = check_k(k, int(np.shape(features)[0]))
  if entropy is not None:
    check_features("entropy", entropy, 1)
    if np.shape(entropy)[0] != np.shape(features)[0]:
      raise JaxkdError(f"entropy has {np.shape(entropy)[0]} rows but features "
                       f"has {np.shape(features)[0]}.")
  _check_beta(beta)
  st = admm_solve(features, alpha=alpha, theta=theta, max_iter=max_iter,
                  tol=tol, atol=atol, normalize=normalize, adaptive=adaptive,
                  relax=relax, mesh=mesh, dtype=dtype)
  norms = jnp.sqrt(jnp.sum(st.q * st.q, axis=1))
  ent = None if entropy is None else jnp.asarray(entropy, norms.dtype)
  return _top_k(blend_scores(norms, ent, beta), k)


# ---------------------------------------------------------- registry glue


@dataclasses.dataclass(frozen=True)
class AdmmOptions:
  """Options of strategy `admm` (`config.strategy_options.admm`).

  `normalize` and `adaptive` default to True here, unlike `admm_select`,
  for robustness on learned features: the normalisation is float32-safe
  (see the module docstring) and residual balancing meets `tol` where a
  fixed theta is still far from the optimum after `max_iter` iterations.
  """
  alpha: float = setting(1e-6, "l2,1 weight of the reconstruction objective "
                         "(>= 0; the paper's 1e-6).")
  theta: float = setting(1e-5, "ADMM penalty (> 0; the paper's 1e-5); the "
                         "start value when adaptive.")
  max_iter: int = setting(500, "ADMM iteration cap (an int >= 0).")
  tol: float = setting(1e-4, "Relative tolerance of the ADMM stopping rule "
                       "(>= 0).")
  beta: float = setting(0.5, "Weight of the reconstruction score in its blend "
                        "with student entropy, in [0, 1] (1: reconstruction "
                        "only; paper Eq. 20).")
  features: str = setting("embeddings", "Rows to reconstruct: 'embeddings' "
                          "(student penultimate features) or 'pixels' "
                          "(flattened pool images).")
  normalize: bool = setting(True, "Divide the features by their largest "
                            "singular value before solving (float32-safe).")
  adaptive: bool = setting(True, "Residual balancing of theta (Boyd Sec. "
                           "3.4.1); same optimum, meets tol sooner.")
  use_entropy: bool = setting(True, "Blend the reconstruction score with the "
                              "student's predictive entropy (False: pure "
                              "reconstruction).")
  max_rows: Optional[int] = setting(
      100_000, "Above this many unqueried points, reconstruct a uniform "
      "random subset of this many (at least k) and pick among them; None: "
      "all of them (each iteration is O(n d r)).")

  def validate(self) -> "AdmmOptions":
    if self.features not in ("embeddings", "pixels"):
      raise JaxkdError(f"features must be 'embeddings' or 'pixels', got "
                       f"{self.features!r}.")
    _check_hyperparameters(self.alpha, self.theta, self.max_iter, self.tol)
    _check_beta(self.beta)
    if self.max_rows is not None and (not is_int(self.max_rows)
                                      or self.max_rows < 1):
      raise JaxkdError(f"max_rows must be None or an int >= 1, got "
                       f"{self.max_rows!r}.")
    return self


def admm_strategy(key: jax.Array, inputs: SelectionInputs, k: int,
                  **options) -> jax.Array:
  """Active-loop strategy `admm`: reconstruction selection on unqueried points.

  Runs `admm_select` on the available rows of the student's penultimate
  features (`features="embeddings"`) or of the flattened pool images
  (`features="pixels"`), blended with the student's predictive entropy
  (paper Eq. 20, weight `beta`; `use_entropy=False` or beta = 1 for the pure
  reconstruction score), and maps the picks back to pool indices.

  Scale: with more than `max_rows` unqueried points (default 100,000) the
  problem is solved on the rows of `baselines.random_subset(key,
  available, max(max_rows, k))` alone and the picks are among them: an
  approximation (the reconstruction problem of a uniform sample of the
  pool, 20 times the paper's pool of 5,000 at the default) that bounds the
  cost at O(s d^2) for the SVD plus O(s d r) per iteration (at most
  `max_iter`) and O(s d) memory, s = min(n, max_rows); at or below
  `max_rows` it is the whole pool, as before. Only the subset's rows (and
  probabilities) are copied.

  Args:
    key: PRNG key of the subset (unused at or below `max_rows`: the
      selection is deterministic).
    inputs: the round's SelectionInputs (available, embeddings or pixels,
      probs).
    k: number of points.
    **options: `AdmmOptions` fields (missing ones at their defaults).

  Returns:
    int32 [k] distinct pool indices with `inputs.available` True.
  """
  o = parse_options(AdmmOptions, options, name="admm")
  x = getattr(inputs, o.features)
  if x is None:
    raise JaxkdError(f"strategy 'admm' needs inputs.{o.features}.")
  available = np.asarray(inputs.available, bool)
  check_rank("available", available, 1)
  x = np.asarray(x)
  x = x.reshape(x.shape[0], -1)
  if x.shape[0] != available.shape[0]:
    raise JaxkdError(f"inputs.{o.features} has {x.shape[0]} rows but "
                     f"available has {available.shape[0]}.")
  rows = np.flatnonzero(available)
  k = check_k(k, len(rows), "unqueried pool points")
  if o.max_rows is not None and len(rows) > o.max_rows:
    rows = random_subset(key, available, max(o.max_rows, k))
  ent = None
  if o.use_entropy and o.beta < 1.0:
    if inputs.probs is None:
      raise JaxkdError("strategy 'admm' needs inputs.probs for the entropy "
                       "blend (or use_entropy=False).")
    probs = np.asarray(inputs.probs)[rows]
    check_finite("probs", probs)
    ent = np.asarray(_entropy(jnp.asarray(probs, jnp.float32)))
  sub = x[rows]
  if not np.issubdtype(sub.dtype, np.floating):
    sub = sub.astype(np.float32)
  local = admm_select(sub, k, alpha=o.alpha, theta=o.theta,
                      max_iter=o.max_iter, tol=o.tol, normalize=o.normalize,
                      adaptive=o.adaptive, entropy=ent, beta=o.beta)
  return jnp.asarray(rows[np.asarray(local)], jnp.int32)


register_strategy(
    "admm", admm_strategy, needs=("embeddings", "pixels", "probs"),
    options=AdmmOptions,
    description="l2,1 reconstruction (ADMM) blended with student entropy")
