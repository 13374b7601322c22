"""Robust active distillation (RAD): a max-min query strategy.

Setting (Baykal et al., Robust Active Distillation, ICLR 2023): the teacher's
soft labels are wrong on some points, and the points most informative to the
student are often exactly those. Following the paper's framing as a game:

* each pool point i has a gain g_i >= 0 (default 1 - (p1 - p2), one minus the
  student's top-2 margin; option: normalised entropy);
* the learner picks inclusion probabilities p in [0, 1]^n with sum_i p_i = b;
* an adversary spoils m of the learner's points, choosing the most valuable
  ones, so with contributions c_i = p_i g_i the learner gets

    payoff(p) = sum_i c_i - (sum of the m largest c_i)
              = sum of the n - m smallest c_i.

`rad_probabilities` returns the learner's exact max-min strategy
argmax_p payoff(p); `rad_select` draws b distinct points with exactly those
inclusion probabilities.

Derivation
----------
The sum of the m largest entries has the LP form
top_m(c) = min_t [m t + sum_i (c_i - t)_+], hence

  payoff(p) = max_t G(p, t),   G(p, t) = sum_i min(p_i g_i, t) - m t,

and the game value is V = max_t [F(t) - m t] with the inner problem

  F(t) = max { sum_i min(p_i g_i, t) : p in [0, 1]^n, sum_i p_i = b }.

For a fixed level t, point i yields value at rate g_i per unit of budget
until its contribution reaches min(g_i, t), which costs min(1, t / g_i). This
is a fractional knapsack in which every item has value density g_i, so the
greedy fill in decreasing gain order is optimal ("water-filling" of the
contributions up to the level t). With gains sorted g_1 >= ... >= g_n, s(t) =
#{i : g_i > t} and H_j = sum_{i<=j} 1 / g_i, two regimes arise:

* A (t H_s >= b): the budget runs out among the high points: points
  1..r-1 reach level t (p_i = t / g_i), point r gets the rest
  b - t H_{r-1}, where r is the first j with t H_j >= b.
* B (t H_s < b): all s high points sit at level t, costing t H_s; the
  remaining R = b - t H_s buys the next points fully (p_i = 1, c_i = g_i
  <= t) in gain order, the last one fractionally.

F is concave (partial maximisation of a jointly concave function), so
F(t) - m t is concave and piecewise linear in t, and its maximum lies at a
kink. The kinks are t = g_k (a point switches between high and low),
t = b / H_j (regime A changes its last point, or A meets B) and, in
regime B with s = k, t = (b - q) / H_k for integers q (the partially bought
low point changes). On the piece with s = k, regime B has slope
(k - m) - H_k g_{k+q} while the (k + q)-th point is the partial one, so the
best q is q* = #{i > k : g_i >= rho_k} with rho_k = (k - m) / H_k (the value
per unit of budget of raising the common level of the top k: k - m of them
count, each costs 1 / g_i per unit of level). The maximiser is therefore
among the 3n + 1 candidates {0, g_k, b / H_k, clip((b - q*_k) / H_k)}; each
candidate's F is evaluated in O(log n) with prefix sums and binary search,
so the whole solve is O(n log n) after one sort. The greedy fill p at the
best level t* is optimal: payoff(p) >= G(p, t*) = F(t*) - m t* = V.

The optimum has the announced shape: the top points by gain share one
contribution level lambda = t* (p_i = lambda / g_i, inversely proportional to
the gain, so the adversary gains nothing by picking the most informative
ones), then lower-gain points are bought fully, one fractionally.

Degenerate cases (documented choices among equally optimal strategies):

* Among maximising levels the largest t* is taken.
* m = 0: the game is plain expected gain; the result is top-b by gain.
* m >= number of positive gains: the adversary can spoil every useful
  point and V = 0; the largest maximiser spreads the budget thinly with
  equal contributions over all positive-gain points (lambda = min(b / H,
  g_min)). m >= b is not degenerate: the adversary acts on the expected
  contributions p_i g_i, so spreading the budget still pays.
* Budget left over once every positive-gain point is bought at its level
  (contributions above t* add nothing to G(p, t*)) first raises the high
  points towards p = 1 in gain order; only budget beyond the number of
  positive-gain points goes to zero-gain points, spread evenly.
* Ties: p is averaged over points of equal gain. The payoff is concave in p
  and invariant to permuting p among equal gains, so the average of the
  optimal strategy's permutations is optimal too (symmetric, and no
  dependence on index order).
* Unavailable (already queried) points get p = 0 exactly and are never
  drawn.

Sampling: systematic sampling (Madow, 1949) on a uniformly random order of
the points with p_i > 0: lay the p_i end to end on [0, b), draw U ~ U[0, 1)
and take the points whose interval holds one of U, U + 1, ..., U + b - 1.
Since every p_i <= 1 each point is hit at most once, exactly b points come
out, and point i is included with probability exactly p_i.

Parameter-free default: m = round(mistake_rate * b), where the active loop
estimates the teacher's mistake rate from what has been paid for (its
disagreement with ground truth on the labelled set where labels exist, else
one minus its mean confidence on the answers so far; see
`estimate_mistake_rate` below).

References:
  Baykal, Trinh, Iliopoulos, Menghani, Vee. Robust Active Distillation.
  ICLR 2023.
  Madow. On the theory of systematic sampling, II. Ann. Math. Stat., 1949.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxkd.fields import setting
from jaxkd.selection.baselines import entropy, margin_uncertainty
from jaxkd.selection.registry import (SelectionInputs, parse_options,
                                      register_strategy)
from jaxkd.validation import (JaxkdError, check_features, check_k,
                              check_rank, is_concrete)

_GAINS = ("margin", "entropy")


# ---------------------------------------------------------------- gains ---


def _check_gain(gain):
  if gain not in _GAINS:
    raise JaxkdError(f"gain must be one of {_GAINS}, got {gain!r}.")


def rad_gains(probs: jax.Array, gain: str = "margin") -> jax.Array:
  """Per-point informativeness g >= 0 from student probabilities.

  Args:
    probs: [n, C] student softmax probabilities.
    gain: "margin" for 1 - (p1 - p2), or "entropy" for the predictive
      entropy divided by log C. Both lie in [0, 1].

  Returns:
    [n] gains.
  """
  _check_gain(gain)
  check_features("probs", probs, 2)
  return _gains(jnp.asarray(probs), gain)


@functools.partial(jax.jit, static_argnames=("gain",))
def _gains(probs, gain):
  if gain == "margin":
    g = 1.0 + margin_uncertainty(probs)
  else:
    g = entropy(probs) / jnp.log(probs.shape[-1])
  return jnp.clip(g, 0.0, None)


def rad_payoff(p: jax.Array, gains: jax.Array, num_mistakes: int) -> jax.Array:
  """The game's payoff sum_i p_i g_i - (sum of the m largest p_i g_i).

  p, gains: [n]. Returns a scalar.
  """
  c = jnp.asarray(p) * jnp.asarray(gains)
  m = min(int(num_mistakes), c.shape[0])
  top = jax.lax.top_k(c, m)[0].sum() if m else 0.0
  return c.sum() - top


# ------------------------------------------------------- max-min strategy ---


@jax.jit
def _rad_probabilities(gains, valid, budget, num_mistakes):
  """Jitted core: see module docstring. gains [n] >= 0, valid [n] bool."""
  n = gains.shape[0]
  dtype = gains.dtype
  b = jnp.asarray(budget, dtype)
  m = jnp.asarray(num_mistakes, dtype)
  idx = jnp.arange(n)

  g = jnp.where(valid, gains, -1.0)
  order = jnp.argsort(-g, stable=True)      # valid by decreasing gain first
  gs = g[order]
  n_valid = jnp.sum(valid)
  n_pos = jnp.sum(valid & (gains > 0))
  pos = idx < n_pos
  gpos = jnp.where(pos, gs, 0.0)
  invg = jnp.where(pos, 1.0 / jnp.where(pos, gs, 1.0), 0.0)
  zero = jnp.zeros((1,), dtype)
  H = jnp.concatenate([zero, jnp.cumsum(invg)])     # [n+1], H[j] = sum_{i<j}
  G = jnp.concatenate([zero, jnp.cumsum(gpos)])     # [n+1]
  gpad = jnp.concatenate([gpos, zero])              # [n+1]
  asc = jnp.where(pos, -gs, jnp.inf)                # ascending keys

  def regime(t):
    s = jnp.searchsorted(asc, -t, side="left")      # #{g > t}
    case_a = t * H[s] >= b
    safe_t = jnp.where(t > 0, t, 1.0)
    r = jnp.searchsorted(H[1:], b / safe_t, side="left") + 1
    r = jnp.clip(r, 1, n)
    rem = b - t * H[s]
    return s, case_a, r, rem

  def value(t):
    s, case_a, r, rem = regime(t)
    f_a = (r - 1) * t + gpad[r - 1] * (b - t * H[r - 1])
    x = jnp.minimum(s + rem, n_pos)
    fl = jnp.floor(x)
    fi = fl.astype(jnp.int32)
    f_b = s * t + G[fi] + (x - fl) * gpad[fi] - G[s]
    return jnp.where(case_a, f_a, f_b)

  # Candidate levels (kinks of the concave piecewise-linear F(t) - m t).
  k1 = idx + 1                                      # 1-indexed k
  kvalid = k1 <= n_pos
  hk = jnp.where(kvalid, H[1:], 1.0)
  rho = (k1 - m) / hk
  cnt = jnp.searchsorted(asc, -rho, side="right")   # #{g >= rho}
  q = jnp.maximum(cnt - k1, 0)
  t_q = jnp.clip((b - q) / hk, gpad[k1], gpad[idx])
  cands = jnp.concatenate([zero, gpos, b / hk, t_q])
  ok = jnp.concatenate([jnp.ones((1,), bool), pos, kvalid, kvalid])
  cands = jnp.where(ok, jnp.maximum(cands, 0.0), 0.0)
  f = jax.vmap(value)(cands)
  v = jnp.where(ok, f - m * cands, -jnp.inf)
  vmax = jnp.max(v)
  tol = 64 * jnp.finfo(dtype).eps * jnp.max(jnp.where(ok, f + m * cands, 0.0))
  t = jnp.max(jnp.where(v >= vmax - tol, cands, -jnp.inf))

  # Greedy fill at level t (sorted order), then undo the sort.
  s, case_a, r, rem = regime(t)
  level = t * invg                                  # t / g_j
  p_a = jnp.where(idx < r - 1, level,
                  jnp.where(idx == r - 1, b - t * H[r - 1], 0.0))
  high = idx < s
  low = (idx >= s) & pos
  p_b = jnp.where(high, level, 0.0)
  p_b += jnp.where(low, jnp.clip(rem - (idx - s), 0.0, 1.0), 0.0)
  left = jnp.maximum(rem - (n_pos - s), 0.0)
  slack = jnp.where(high, 1.0 - level, 0.0)
  before = jnp.cumsum(slack) - slack
  p_b += jnp.clip(left - before, 0.0, slack)
  left = jnp.maximum(left - jnp.sum(slack), 0.0)
  zero_gain = (idx >= n_pos) & (idx < n_valid)
  p_b += jnp.where(zero_gain, jnp.clip(left - (idx - n_pos), 0.0, 1.0), 0.0)
  ps = jnp.where(case_a, p_a, p_b)

  # Average over equal gains (optimal by concavity and symmetry).
  new_group = jnp.concatenate([jnp.zeros((1,), bool), gs[1:] != gs[:-1]])
  gid = jnp.cumsum(new_group)
  tot = jax.ops.segment_sum(ps, gid, num_segments=n)
  cnt_g = jax.ops.segment_sum(jnp.ones_like(ps), gid, num_segments=n)
  ps = (tot / jnp.maximum(cnt_g, 1.0))[gid]
  ps = jnp.where(idx < n_valid, jnp.clip(ps, 0.0, 1.0), 0.0)
  return jnp.zeros_like(ps).at[order].set(ps)


def _check_gains(gains, available):
  check_features("gains", gains, 1)
  if is_concrete(gains) and np.any(np.asarray(gains) < 0):
    raise JaxkdError("gains must be >= 0.")
  gains = jnp.asarray(gains)
  if available is None:
    available = jnp.ones(gains.shape, bool)
  check_rank("available", available, 1)
  if np.shape(available)[0] != gains.shape[0]:
    raise JaxkdError(f"available has {np.shape(available)[0]} entries but "
                     f"gains has {gains.shape[0]}.")
  n_avail = (int(np.sum(np.asarray(available, bool)))
             if is_concrete(available) else gains.shape[0])
  return gains, jnp.asarray(available, bool), n_avail


def _check_mistakes(num_mistakes, mistake_rate, budget):
  if num_mistakes is not None and mistake_rate is not None:
    raise JaxkdError("give num_mistakes or mistake_rate, not both.")
  if num_mistakes is None:
    if mistake_rate is None:
      raise JaxkdError("rad needs num_mistakes or a mistake_rate estimate.")
    rate = float(mistake_rate)
    if not (0.0 <= rate <= 1.0):
      raise JaxkdError(f"mistake_rate must be in [0, 1], got {mistake_rate}.")
    return int(round(rate * budget))
  if (isinstance(num_mistakes, bool)
      or not isinstance(num_mistakes, (int, np.integer)) or num_mistakes < 0):
    raise JaxkdError(f"num_mistakes must be an int >= 0, got {num_mistakes!r}.")
  return int(num_mistakes)


def rad_probabilities(gains: jax.Array, budget: int, num_mistakes: int, *,
                      available: jax.Array | None = None) -> jax.Array:
  """The learner's exact max-min inclusion probabilities (see module doc).

  Args:
    gains: [n] per-point gains g_i >= 0.
    budget: b, the number of points to query this round (1 <= b <= number
      of available points).
    num_mistakes: m >= 0, how many of the learner's points the adversary
      spoils (the m largest contributions p_i g_i).
    available: optional [n] bool; unavailable points get p = 0.

  Returns:
    p: [n] in [0, 1], summing to `budget`, maximising
    sum_i p_i g_i - (sum of the m largest p_i g_i). O(n log n).

  Raises:
    JaxkdError: on NaN/negative gains, wrong ranks, a budget outside
      [1, available] or a negative m.

  Example:
    >>> import jax.numpy as jnp
    >>> p = rad_probabilities(jnp.array([10.0, 1.0]), 1, 1)
    >>> [round(float(x), 4) for x in p]
    [0.0909, 0.9091]
  """
  gains, available, n_avail = _check_gains(gains, available)
  budget = check_k(budget, n_avail, "available points")
  m = _check_mistakes(num_mistakes, None, budget)
  return _rad_probabilities(gains, available, budget, m)


# --------------------------------------------------------------- sampling ---


@functools.partial(jax.jit, static_argnames=("budget",))
def _systematic_sample(key, p, budget):
  """Systematic sampling of `budget` distinct units with inclusion p."""
  k_order, k_start = jax.random.split(key)
  n = p.shape[0]
  u = jax.random.uniform(k_order, (n,), p.dtype)
  order = jnp.argsort(jnp.where(p > 0, u, 2.0 + u))  # random order, p>0 first
  cum = jnp.cumsum(p[order])
  n_pos = jnp.sum(p > 0)
  start = jax.random.uniform(k_start, (), p.dtype)
  j = jnp.arange(budget)
  pick = jnp.searchsorted(cum, start + j, side="right")
  # No-ops in exact arithmetic; guard distinctness against rounding.
  pick = jnp.minimum(pick, n_pos - budget + j)
  pick = jax.lax.cummax(pick - j) + j
  return order[pick].astype(jnp.int32)


def systematic_sample(key: jax.Array, p: jax.Array, budget: int) -> jax.Array:
  """Draws `budget` distinct indices with inclusion probabilities exactly p.

  Systematic sampling on a uniformly random order of the units with p > 0.

  Args:
    key: PRNG key.
    p: [n] inclusion probabilities in [0, 1] summing to `budget`.
    budget: number of units to draw.

  Returns:
    int32 [budget] distinct indices, all with p > 0.
  """
  check_features("p", p, 1)
  if is_concrete(p):
    arr = np.asarray(p, np.float64)
    if np.any(arr < 0) or np.any(arr > 1 + 1e-6):
      raise JaxkdError("p must lie in [0, 1].")
    if abs(arr.sum() - budget) > 1e-3 * max(1, budget):
      raise JaxkdError(f"p sums to {arr.sum():.6g}, not the budget {budget}.")
  budget = check_k(budget, int(np.shape(p)[0]), "points")
  return _systematic_sample(key, jnp.asarray(p), budget)


def rad_select(key: jax.Array, gains: jax.Array, budget: int,
               num_mistakes: int | None = None, *,
               mistake_rate: float | None = None,
               available: jax.Array | None = None) -> jax.Array:
  """Draws `budget` distinct points with RAD's max-min inclusion probabilities.

  Args:
    key: PRNG key.
    gains: [n] per-point gains g_i >= 0.
    budget: b, points to draw.
    num_mistakes: m, the adversary's number of spoiled points. If None,
      m = round(mistake_rate * b).
    mistake_rate: estimated teacher error rate in [0, 1] (used only when
      num_mistakes is None).
    available: optional [n] bool; only available points are drawn.

  Returns:
    int32 [budget] distinct indices; point i is included with probability
    exactly rad_probabilities(gains, b, m)[i].
  """
  gains, available, n_avail = _check_gains(gains, available)
  budget = check_k(budget, n_avail, "available points")
  m = _check_mistakes(num_mistakes, mistake_rate, budget)
  p = _rad_probabilities(gains, available, budget, m)
  return _systematic_sample(key, p, budget)


# --------------------------------------------------------- registry glue ---


@dataclasses.dataclass(frozen=True)
class RadOptions:
  """Options of strategy `rad` (`config.strategy_options.rad`)."""
  num_mistakes: Optional[int] = setting(
      None, "m, the teacher labels the adversary spoils per round (an int "
      ">= 0); None: round(estimated teacher error rate x per_round).")
  gain: str = setting("margin", "Per-point gain: 'margin' (1 - top-2 "
                      "margin) or 'entropy' (entropy / log C).")

  def validate(self) -> "RadOptions":
    _check_gain(self.gain)
    if self.num_mistakes is not None:
      _check_mistakes(self.num_mistakes, None, 0)
    return self


def _rad_strategy(key, inputs: SelectionInputs, k: int, **options):
  """Strategy `rad`; `options`: `RadOptions` fields."""
  o = parse_options(RadOptions, options, name="rad")
  if inputs.probs is None:
    raise JaxkdError("rad needs inputs.probs.")
  gains = rad_gains(inputs.probs, o.gain)
  rate = None if o.num_mistakes is not None else inputs.mistake_rate
  return rad_select(key, gains, k, o.num_mistakes, mistake_rate=rate,
                    available=inputs.available)


def estimate_mistake_rate(ctx) -> float:
  """Teacher error rate from what was paid for: RAD's `prepare` hook.

  With ground-truth labels of L (`ctx.initial_labels`): the teacher's
  disagreement with them on L. Without: one minus the teacher's mean
  confidence on every answer so far. Reads the ledger only; never pays.
  """
  rows = ctx.oracle.entries(kind="pool")
  if not rows:
    return 0.0
  if ctx.initial_labels is not None:
    answers = ctx.paid_answers(ctx.initial_indices)  # paid in round 0
    return float(np.mean(np.argmax(answers, -1)
                         != np.asarray(ctx.initial_labels)))
  probs = np.stack([e["probs"] for e in rows])
  return float(1.0 - probs.max(-1).mean())


register_strategy(
    "rad", _rad_strategy, needs=("probs", "mistake_rate"), options=RadOptions,
    prepare=lambda ctx: {"mistake_rate": estimate_mistake_rate(ctx)},
    description="robust active distillation: max-min inclusion probabilities "
                "against m spoiled teacher labels, systematic sampling")
