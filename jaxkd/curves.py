"""Learning curves of success rate against teacher queries, with uncertainty.

The model is the saturating inverse power law of learning curves

  s(q) = a - b q^(-c),   0 <= a <= 1.5,  b >= 0,  c in [1e-3, 10],

fitted by bounded least squares (`scipy.optimize.curve_fit`, trust-region
reflective). The fit runs on x = q / q_ref (q_ref the largest fitted count),
s = a - beta x^(-c) with b = beta q_ref^c, so beta is O(gap to the asymptote)
whatever the units of q. The initial guess scans c on a grid and solves the
model, linear in (a, beta) for fixed c, by least squares.

With fewer than four distinct counts (three parameters would interpolate
exactly), or when the power law does not converge, the fallback is the
two-parameter saturating curve c = 1, s = a - b / q, solved as a bounded
linear least-squares problem (`scipy.optimize.lsq_linear`, always solvable);
`CurveFit.kind` says which was used. Both kinds are evaluated by the same
`predict`, and both have the closed form

  queries_to_reach(target) = (b / (a - target))^(1 / c)   when a > target,

0 when b = 0 and a >= target, inf when a <= target (the asymptote never
reaches it) otherwise.

`bootstrap` refits on resampled seeds (with one seed: resampled rounds) and
returns percentile intervals of the queries to a target and of the success at
a budget. A percentile bootstrap over n seeds sees only the spread between
those n seeds; with three seeds there are ten distinct resamples.

References:
  Hestness et al. Deep Learning Scaling is Predictable, Empirically, 2017.
  Viering and Loog. The Shape of Learning Curves: a Review, 2022 (the
    inverse power law a - b q^-c and its extrapolation).
  Efron and Tibshirani. An Introduction to the Bootstrap, 1993 (percentile
    intervals; case resampling for regression, Sec. 9.5).
"""

from __future__ import annotations

import warnings
from typing import NamedTuple, Optional, Sequence, Tuple

import numpy as np
from scipy import optimize

from jaxkd.validation import JaxkdError

A_BOUNDS = (0.0, 1.5)
C_BOUNDS = (1e-3, 10.0)
POWER_LAW = "power_law"   # a - b q^-c
INVERSE = "inverse"       # a - b / q (fallback)
_C_GRID = np.geomspace(0.05, 5.0, 24)


class CurveFit(NamedTuple):
  """A fitted learning curve s(q) = a - b q^(-c).

  Attributes:
    kind: "power_law" (a, b, c fitted) or "inverse" (c fixed at 1).
    params: (a, b, c) in the units of the queries.
    residual: root-mean-square of the fit's residuals, in success units.
    queries_range: (smallest, largest) fitted query count; beyond the
      largest the curve is an extrapolation.
  """
  kind: str
  params: Tuple[float, float, float]
  residual: float
  queries_range: Tuple[float, float]


class CurveBootstrap(NamedTuple):
  """Percentile bootstrap of a fitted curve (see `bootstrap`).

  Attributes:
    fit: the fit on all the data (the point estimates below come from it).
    target: the success rate asked about.
    budget: the query count asked about.
    level: the intervals' coverage, e.g. 0.9 for the 5th-95th percentiles.
    queries: point estimate of the queries to reach `target` (inf: never).
    queries_interval: (lo, hi) percentiles over resamples (hi may be inf).
    reach_fraction: share of resampled fits whose asymptote reaches `target`.
    success: point estimate of the success at `budget`.
    success_interval: (lo, hi) percentiles over resamples.
    params: [n_used, 3] the (a, b, c) of every resampled fit, for bands.
    n_failed: resamples that could not be fitted (fewer than three
      distinct counts after resampling rounds).
  """
  fit: CurveFit
  target: float
  budget: float
  level: float
  queries: float
  queries_interval: Tuple[float, float]
  reach_fraction: float
  success: float
  success_interval: Tuple[float, float]
  params: np.ndarray
  n_failed: int


def _as_curve(queries, success) -> Tuple[np.ndarray, np.ndarray]:
  """Checked float64 copies of one curve: [m] strictly increasing positive
  finite queries, [m] finite success, m >= 3."""
  q = np.asarray(queries, np.float64)
  s = np.asarray(success, np.float64)
  if q.ndim != 1 or s.shape != q.shape:
    raise JaxkdError(
        f"queries and success must be 1-D of one length, got shapes "
        f"{q.shape} and {s.shape}.")
  if not (np.all(np.isfinite(q)) and np.all(np.isfinite(s))):
    raise JaxkdError("queries and success must be finite (no NaN or inf).")
  if np.any(np.diff(q) <= 0):
    raise JaxkdError("queries must be strictly increasing.")
  if len(q) < 3:
    raise JaxkdError(
        f"need at least three distinct query counts to extrapolate, got "
        f"{len(q)}.")
  if q[0] <= 0:
    raise JaxkdError(f"queries must be positive, got {q[0]:g}.")
  return q, s


def predict(fit: CurveFit, queries) -> np.ndarray:
  """Predicted success a - b q^(-c).

  Args:
    fit: a `CurveFit`.
    queries: [...] positive query counts.

  Returns:
    [...] predicted success rates (float64).

  Examples:
    >>> fit = CurveFit("power_law", (1.0, 2.0, 0.5), 0.0, (1.0, 100.0))
    >>> float(predict(fit, 64.0))
    0.75
  """
  a, b, c = fit.params
  return a - b * np.asarray(queries, np.float64) ** (-c)


def _inverse_fit(x, s, w):
  """Bounded least squares of s = a - beta / x (weights w); (a, beta)."""
  sw = np.sqrt(w)
  design = np.stack([np.ones_like(x), -1.0 / x], axis=1) * sw[:, None]
  res = optimize.lsq_linear(design, s * sw,
                            bounds=([A_BOUNDS[0], 0.0], [A_BOUNDS[1], np.inf]))
  return float(res.x[0]), float(res.x[1])


def _initial_guess(x, s, w):
  """(a, beta, c): for every c on a grid, the weighted least-squares line of
  s against -x^(-c) in closed form, clipped into the bounds; the best one."""
  z = -x[None, :] ** (-_C_GRID[:, None])                      # [grid, m]
  wn = w / np.sum(w)
  zm, sm = z @ wn, np.sum(wn * s)
  var = ((z - zm[:, None]) ** 2) @ wn
  cov = ((z - zm[:, None]) * (s - sm)) @ wn
  beta = np.maximum(np.where(var > 0, cov / np.where(var > 0, var, 1), 0), 0)
  a = np.clip(sm - beta * zm, *A_BOUNDS)
  err = ((s - (a[:, None] + beta[:, None] * z)) ** 2) @ wn
  i = int(np.argmin(err))
  return float(a[i]), float(beta[i]), float(_C_GRID[i])


def _power_fit(x, s, w, maxfev):
  """(a, beta, c) by curve_fit, or None when it does not converge."""
  p0 = np.asarray(_initial_guess(x, s, w))
  lo = np.array([A_BOUNDS[0], 0.0, C_BOUNDS[0]])
  hi = np.array([A_BOUNDS[1], np.inf, C_BOUNDS[1]])
  p0 = np.clip(p0, lo, np.nextafter(hi, -np.inf))
  model = lambda x, a, beta, c: a - beta * x ** (-c)

  def jac(x, a, beta, c):
    xc = x ** (-c)
    return np.stack([np.ones_like(x), -xc, beta * xc * np.log(x)], axis=1)

  try:
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")  # OptimizeWarning: covariance unknown
      p, _ = optimize.curve_fit(model, x, s, p0=p0, sigma=1.0 / np.sqrt(w),
                                bounds=(lo, hi), method="trf", jac=jac,
                                maxfev=maxfev, xtol=1e-12, ftol=1e-12,
                                gtol=1e-12)
  except (RuntimeError, ValueError, FloatingPointError):
    return None
  if not np.all(np.isfinite(p)):
    return None
  return tuple(float(v) for v in p)


def _fit(q, s, w, maxfev=4000) -> CurveFit:
  """The fit on distinct increasing counts q [m] with weights w [m] (how
  often each count was drawn; all ones for a plain curve)."""
  q_ref = float(q[-1])
  x = q / q_ref
  p = _power_fit(x, s, w, maxfev) if len(q) >= 4 else None
  if p is None:
    kind, (a, beta), c = INVERSE, _inverse_fit(x, s, w), 1.0
  else:
    kind, (a, beta, c) = POWER_LAW, p
  fit = CurveFit(kind, (a, beta * q_ref ** c, c), 0.0,
                 (float(q[0]), float(q[-1])))
  rms = float(np.sqrt(np.sum(w * (s - predict(fit, q)) ** 2) / np.sum(w)))
  return fit._replace(residual=rms)


def fit_power_law(queries, success, *, maxfev: int = 4000) -> CurveFit:
  """Fits s(q) = a - b q^(-c) to one learning curve.

  Falls back to s = a - b / q (`kind` "inverse") with only three points or
  when the power law does not converge within `maxfev` evaluations.

  Args:
    queries: [m] strictly increasing positive query counts, m >= 3.
    success: [m] success rates measured at those counts.
    maxfev: cap on model evaluations of `curve_fit`.

  Returns:
    The `CurveFit`.

  Raises:
    JaxkdError: fewer than three distinct counts, NaN/inf, non-increasing
      or non-positive queries, or mismatched shapes.

  Examples:
    >>> q = np.array([100., 200., 400., 800., 1600.])
    >>> fit = fit_power_law(q, 0.95 - 3.0 * q ** -0.5)
    >>> fit.kind, [round(v, 6) for v in fit.params]
    ('power_law', [0.95, 3.0, 0.5])
  """
  q, s = _as_curve(queries, success)
  return _fit(q, s, np.ones_like(q), maxfev)


def queries_to_reach(fit: CurveFit, target: float) -> float:
  """Smallest q > 0 with predict(fit, q) >= target.

  Args:
    fit: a `CurveFit` (b >= 0, so the curve is non-decreasing).
    target: the success rate to reach.

  Returns:
    (b / (a - target))^(1 / c); 0.0 when b = 0 and a >= target; inf when
    the asymptote a is at or below the target (and b > 0).

  Examples:
    >>> fit = CurveFit("power_law", (1.0, 2.0, 0.5), 0.0, (1.0, 100.0))
    >>> queries_to_reach(fit, 0.75), queries_to_reach(fit, 1.0)
    (64.0, inf)
  """
  a, b, c = fit.params
  if b <= 0.0:
    return 0.0 if a >= target else float(np.inf)
  if a <= target:
    return float(np.inf)
  return float((b / (a - target)) ** (1.0 / c))


def crossing(queries, success, target: float) -> Optional[float]:
  """Where a measured curve first reaches `target`, interpolated linearly
  between the last round below it and the first round at or above it.

  Args:
    queries: [m] increasing query counts.
    success: [m] success rates (e.g. the mean over seeds).
    target: the success rate.

  Returns:
    The interpolated query count, queries[0] when the first round already
    reaches the target, None when no round does.

  Examples:
    >>> crossing([100, 200, 300], [0.5, 0.75, 1.0], 0.875)
    250.0
  """
  q = np.asarray(queries, np.float64)
  s = np.asarray(success, np.float64)
  hit = np.flatnonzero(s >= target)
  if not len(hit):
    return None
  i = int(hit[0])
  if i == 0:
    return float(q[0])
  t = (target - s[i - 1]) / (s[i] - s[i - 1])
  return float(q[i - 1] + t * (q[i] - q[i - 1]))


def _seed_matrix(curves) -> Tuple[np.ndarray, np.ndarray]:
  """queries [m] and success [n_seeds, m] from per-seed (queries, success)."""
  if not len(curves):
    raise JaxkdError("bootstrap needs at least one curve.")
  q0, _ = _as_curve(*curves[0])
  rows = []
  for i, (q, s) in enumerate(curves):
    q, s = _as_curve(q, s)
    if q.shape != q0.shape or np.any(q != q0):
      raise JaxkdError(
          f"seed {i} measured other query counts than seed 0; the seeds of "
          f"one strategy must share their rounds.")
    rows.append(s)
  return q0, np.stack(rows)


def _interval(values, level):
  """(lo, hi) percentiles without interpolating, so inf values stay inf."""
  if not len(values):
    return (float("nan"), float("nan"))
  tail = 100 * (1 - level) / 2
  lo = np.percentile(values, tail, method="lower")
  hi = np.percentile(values, 100 - tail, method="higher")
  return (float(lo), float(hi))


def reach_interval(params, target: float, level: float
                   ) -> Tuple[Tuple[float, float], float]:
  """Percentile interval of the queries to `target` over fitted curves.

  Args:
    params: [n, 3] the (a, b, c) of n fits (e.g. `CurveBootstrap.params`).
    target: the success rate.
    level: interval coverage in (0, 1).

  Returns:
    ((lo, hi), reach fraction): percentiles of `queries_to_reach` over the
    fits (hi is inf when more than the upper tail never reach the target)
    and the share of fits whose curve reaches it.
  """
  p = np.asarray(params, np.float64).reshape(-1, 3)
  reach = np.asarray([queries_to_reach(CurveFit("", tuple(r), 0.0, (0, 0)),
                                       target) for r in p])
  frac = float(np.mean(np.isfinite(reach))) if len(reach) else float("nan")
  return _interval(reach, level), frac


def bootstrap(curves: Sequence[Tuple[Sequence[float], Sequence[float]]],
              target: float, budget: float, *, n_boot: int = 200,
              level: float = 0.9, seed: int = 0,
              resample_rounds: Optional[bool] = None,
              maxfev: int = 4000) -> CurveBootstrap:
  """Percentile bootstrap of queries-to-target and success-at-budget.

  Each resample draws the seeds with replacement and fits the mean of the
  drawn seeds' curves. With one seed (or `resample_rounds=True`) it also
  draws the rounds with replacement (case resampling: a round drawn k times
  has weight k; a draw with fewer than three distinct counts is dropped and
  counted in `n_failed`).

  Args:
    curves: per seed, (queries [m], success [m]); every seed has the same
      strictly increasing queries.
    target: success rate whose query count is wanted.
    budget: query count whose success is wanted.
    n_boot: number of resamples.
    level: interval coverage in (0, 1).
    seed: seed of the `numpy.random.Generator`; equal seeds give equal
      results.
    resample_rounds: resample rounds too; default: only when there is a
      single seed.
    maxfev: passed to the fits.

  Returns:
    A `CurveBootstrap`; point estimates are from the fit of the mean curve
    over all seeds.

  Raises:
    JaxkdError: as `fit_power_law`, or seeds with different query counts.
  """
  if not 0.0 < level < 1.0:
    raise JaxkdError(f"level must be in (0, 1), got {level}.")
  if n_boot < 1:
    raise JaxkdError(f"n_boot must be >= 1, got {n_boot}.")
  q, s = _seed_matrix(curves)
  n_seeds, m = s.shape
  fit = _fit(q, s.mean(0), np.ones(m), maxfev)
  rounds = n_seeds == 1 if resample_rounds is None else resample_rounds
  rng = np.random.default_rng(seed)
  params, at_budget, failed = [], [], 0
  for _ in range(n_boot):
    seeds = rng.integers(0, n_seeds, n_seeds)
    if rounds:
      idx, w = np.unique(rng.integers(0, m, m), return_counts=True)
      if len(idx) < 3:
        failed += 1
        continue
      f = _fit(q[idx], s[seeds][:, idx].mean(0), w.astype(np.float64),
               maxfev)
    else:
      f = _fit(q, s[seeds].mean(0), np.ones(m), maxfev)
    params.append(f.params)
    at_budget.append(float(predict(f, budget)))
  params = np.asarray(params, np.float64).reshape(-1, 3)
  interval, frac = reach_interval(params, target, level)
  return CurveBootstrap(
      fit=fit, target=float(target), budget=float(budget), level=level,
      queries=queries_to_reach(fit, target), queries_interval=interval,
      reach_fraction=frac, success=float(predict(fit, budget)),
      success_interval=_interval(np.asarray(at_budget), level),
      params=params, n_failed=failed)
