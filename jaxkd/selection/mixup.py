"""Active Mixup and its baselines as round-protocol strategies.

Wang et al., "Neural Networks Are More Productive Teachers Than Human Raters:
Active Mixup for Data-Efficient Knowledge Distillation from a Blackbox Model",
CVPR 2020.

From the n real images L (all paid in round 0) the candidate pool is every
mixed image

  x_ij(lam) = lam x_i + (1 - lam) x_j,    i < j,  lam in a grid (0.3..0.7),

the student confidence is C1(x) = max_y P_S(y | x), and the pair confidence is
C2(i, j) = min_lam C1(x_ij(lam)) with minimiser lam*. Each round

  active_mixup    pays the teacher for x_ij(lam*) of the k unqueried pairs
                  with the lowest C2 (Algorithm 1);
  random_mixup    pays for k random unqueried pairs at random grid lambdas
                  (the paper's baseline);
  vanilla_mixup   pays for the k mixed images of lowest C1 over all pairs
                  and lambdas, near-duplicates allowed (Figure 4).

The scan over all pairs (blocked, top-k, first-layer fast path, sharding)
is `jaxkd.selection.pair_scan`; this module chooses what to pay for.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Tuple

import jax
import numpy as np

from jaxkd.fields import same_as, setting
from jaxkd.selection.pair_scan import (ApplyFn, default_lambdas,
                                       linear_stem_fns, select_mixed_images,
                                       select_pairs)
from jaxkd.selection.registry import (MixupQuery, Strategy, parse_options,
                                      register_strategy)
from jaxkd.validation import JaxkdError, check_k, is_int


def _check_lambdas(lambdas) -> Tuple[float, ...]:
  """The grid as a tuple; one-line JaxkdError unless non-empty in [0, 1]."""
  if isinstance(lambdas, (str, bytes)) or not hasattr(lambdas, "__len__"):
    raise JaxkdError(f"lambdas must be a non-empty sequence of values in "
                     f"[0, 1], got {lambdas!r}.")
  lam = tuple(lambdas)
  arr = np.asarray(lam, np.float64)
  if (arr.ndim != 1 or arr.size == 0 or not np.all(np.isfinite(arr))
      or np.any((arr < 0) | (arr > 1))):
    raise JaxkdError(f"lambdas must be a non-empty sequence of values in "
                     f"[0, 1], got {lambdas!r}.")
  return lam


@dataclasses.dataclass(frozen=True)
class MixupOptions:
  """Options of `active_mixup` and `vanilla_mixup`
  (`config.strategy_options.<name>`)."""
  lambdas: Tuple[float, ...] = setting(
      tuple(default_lambdas().tolist()), "Mixing weights lam of the "
      "candidate images lam x_i + (1 - lam) x_j (each in [0, 1]; the "
      "paper's grid 0.3, 0.34, ..., 0.7).")
  scan_batch_size: int = setting(4096, "Pairs per block of the "
                                 "pair-confidence scan (an int >= 1).")
  use_fast_path: bool = setting(True, "Scan through the student's affine "
                                "stem when it declares one (same picks, "
                                "faster).")

  def validate(self) -> "MixupOptions":
    if not is_int(self.scan_batch_size) or self.scan_batch_size < 1:
      raise JaxkdError(f"scan_batch_size must be an int >= 1, got "
                       f"{self.scan_batch_size!r}.")
    return dataclasses.replace(self, lambdas=_check_lambdas(self.lambdas))


@dataclasses.dataclass(frozen=True)
class RandomMixupOptions:
  """Options of `random_mixup` (`config.strategy_options.random_mixup`)."""
  lambdas: Tuple[float, ...] = same_as(
      MixupOptions, "lambdas", "Mixing weights a pair's lam is drawn from, "
      "uniformly (each in [0, 1]; the paper's grid 0.3, 0.34, ..., 0.7).")

  def validate(self) -> "RandomMixupOptions":
    return dataclasses.replace(self, lambdas=_check_lambdas(self.lambdas))


def random_pairs(key: jax.Array, n: int, k: int, lambdas: np.ndarray,
                 exclude: np.ndarray) -> tuple:
  """k distinct unqueried pairs i < j uniformly at random, each with a lambda
  drawn uniformly from the grid: the baseline Active Mixup compares with."""
  total = n * (n - 1) // 2
  taken = {(int(a), int(b)) for a, b in np.sort(exclude, axis=1)}
  check_k(k, total - len(taken), "unqueried pairs")
  rng = np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel())
  pairs = []
  chosen = set(taken)
  while len(pairs) < k:
    i, j = rng.choice(n, 2, replace=False)
    p = (int(min(i, j)), int(max(i, j)))
    if p not in chosen:
      chosen.add(p)
      pairs.append(p)
  lams = rng.choice(np.asarray(lambdas), k)
  return np.asarray(pairs, np.int64), lams


def paid_pairs(oracle, max_round: int, with_lams: bool = False
               ) -> np.ndarray:
  """[m, 2] int (i, j) of the mixup answers paid in rounds <= max_round, or
  [m, 3] float (i, j, lam) with `with_lams`."""
  rows = oracle.entries(kind="mixup", max_round=max_round)
  cols = ("i", "j", "lam") if with_lams else ("i", "j")
  return np.asarray([[e[c] for c in cols] for e in rows],
                    np.float64 if with_lams else np.int64
                    ).reshape(-1, len(cols))


def scan_fns(student) -> Tuple[Optional[ApplyFn], Optional[ApplyFn]]:
  """(stem_fn, head_fn) the job's pair scan uses: `linear_stem_fns` (the
  benchmarked `scan_head` fast path) when the student declares an affine
  stem, else (None, None) for the plain path."""
  if getattr(student, "has_linear_stem", False):
    return linear_stem_fns(student)
  return None, None


class ActiveMixup(Strategy):
  """Active Mixup, Algorithm 1 (Wang et al., CVPR 2020), as a strategy.

  Scope "initial": the oracle covers the n real images L, all paid in round
  0; each round pays for x_ij(lam*) of the `per_round` unqueried pairs of
  lowest pair confidence C2 under the current student. Options:
  `MixupOptions`. Subclasses change the scan (`scan`) and what a paid
  answer excludes (`exclude_lams`: the pair at every lambda, or only at its
  own).
  """
  scope = "initial"
  description = ("Active Mixup: mixup images of the least-confident pairs "
                 "of L (Wang et al., CVPR 2020)")
  options = MixupOptions
  exclude_lams = False

  @staticmethod
  def scan(*args, **kwargs):
    """The pair scan (looked up when called, so it can be swapped)."""
    return select_pairs(*args, **kwargs)

  def capacity(self, num_initial, num_candidates):
    return num_initial * (num_initial - 1) // 2

  def select(self, key, ctx, inputs, k, **options):
    del key, inputs
    o = parse_options(self, options)
    student = ctx.student
    stem_fn, head_fn = scan_fns(student) if o.use_fast_path else (None, None)
    exclude = paid_pairs(ctx.oracle, ctx.round - 1, self.exclude_lams)
    pairs, lams, _ = self.scan(
        lambda v, x: student.apply(v, x), ctx.state.variables,
        ctx.oracle.pool_images, k, np.asarray(o.lambdas),
        exclude=exclude if len(exclude) else None,
        batch_size=o.scan_batch_size, stem_fn=stem_fn, head_fn=head_fn,
        mesh=ctx.mesh)
    return MixupQuery(np.asarray(pairs), np.asarray(lams))


class RandomMixup(ActiveMixup):
  """Random pairs of L with random grid lambdas: Active Mixup's baseline."""
  description = "mixup images of random pairs of L, random grid lambdas"
  options = RandomMixupOptions

  def select(self, key, ctx, inputs, k, **options):
    del inputs
    o = parse_options(self, options)
    pairs, lams = random_pairs(key, len(ctx.oracle.pool_images), k,
                               np.asarray(o.lambdas),
                               paid_pairs(ctx.oracle, ctx.round - 1))
    return MixupQuery(pairs, lams)


class VanillaMixup(ActiveMixup):
  """Vanilla active learning over the mixup pool (Active Mixup, Figure 4):
  the `per_round` mixed images of lowest student confidence C1 over every
  pair and lambda of the grid, near-duplicates (one pair at several
  lambdas) allowed. Same options as `ActiveMixup` (`MixupOptions`)."""
  description = ("mixup images of lowest confidence over all pairs and "
                 "lambdas, duplicates allowed (Active Mixup's vanilla AL)")

  exclude_lams = True

  @staticmethod
  def scan(*args, **kwargs):
    return select_mixed_images(*args, **kwargs)

  def capacity(self, num_initial, num_candidates):
    return num_initial * (num_initial - 1) // 2 * len(default_lambdas())


register_strategy("active_mixup", ActiveMixup)
register_strategy("random_mixup", RandomMixup)
register_strategy("vanilla_mixup", VanillaMixup)
