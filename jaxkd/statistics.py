"""Statistics of success-vs-queries curves over seeds, against a baseline.

Per seed and strategy, a curve (q_r, s_r) of success rate s (student /
teacher test accuracy) against teacher queries q, r = 0..R-1. Three numbers
per strategy, each with its spread over seeds:

* AUBC, the area under the budget curve normalised by its query range,

    AUBC = sum_r (q_{r+1} - q_r) (s_r + s_{r+1}) / 2 / (q_{R-1} - q_0),

  the mean success rate over the budget range (a constant curve has AUBC
  equal to that constant), with a percentile bootstrap interval of its
  mean over seeds.
* A paired comparison with the baseline (random) for the same seeds: a
  two-sided paired t-test (`scipy.stats.ttest_rel`) on the per-seed
  differences of AUBC, of final success and of success at every budget
  both curves have.
* Queries saved: with the target T = the baseline's final success rate of
  the same seed, the strategy's first crossing q* of T (linear
  interpolation, `jaxkd.curves.crossing`), and saved = q_final(baseline) -
  q*. Positive: the strategy reaches random's final level with fewer
  queries. None for a seed whose curve never reaches T.

Seeds are paired by seed id (`seeds=`, else a record's "seed" field), else
by position. With 3 seeds every number here is weak: the t-test has 2
degrees of freedom, a percentile bootstrap of 3 values has only 10 distinct
resamples (its interval is narrower than a t interval), and Wilcoxon's
signed-rank test cannot go below p = 2 / 2^n (0.25 at n = 3).

References:
  Efron and Tibshirani. An Introduction to the Bootstrap, 1993 (percentile
  interval). Student's paired t-test: scipy.stats.ttest_rel.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from jaxkd import plotting
from jaxkd.curves import crossing
from jaxkd.validation import JaxkdError


def _curve(queries, success) -> Tuple[np.ndarray, np.ndarray]:
  q = np.asarray(queries, np.float64).reshape(-1)
  s = np.asarray(success, np.float64).reshape(-1)
  if len(q) != len(s) or not len(q):
    raise JaxkdError(f"a curve needs as many queries as success rates, at "
                     f"least one: got {len(q)} and {len(s)}.")
  if np.any(np.diff(q) <= 0):
    raise JaxkdError(f"queries must increase: {q.tolist()}.")
  return q, s


def aubc(queries, success) -> float:
  """Normalised area under the budget curve (trapezoid rule).

  Args:
    queries: [R] increasing query counts.
    success: [R] success rates.

  Returns:
    Area / (queries[-1] - queries[0]): the mean success over the budget
    range; success[0] for one point. O(R).

  Examples:
    >>> aubc([0, 100, 300], [0.5, 1.0, 1.0])
    0.9166666666666666
  """
  q, s = _curve(queries, success)
  if len(q) == 1:
    return float(s[0])
  area = np.sum(np.diff(q) * (s[1:] + s[:-1]) / 2.0)
  return float(area / (q[-1] - q[0]))


def bootstrap_interval(values, *, level: float = 0.95,
                       resamples: int = 10000, seed: int = 0
                       ) -> Tuple[float, float]:
  """Percentile bootstrap interval of the mean over seeds.

  With rng = np.random.default_rng(seed), the resampled means are
  values[rng.integers(0, n, (resamples, n))].mean(1); the interval is
  their (1 - level) / 2 and (1 + level) / 2 quantiles (numpy's default
  linear interpolation). O(resamples n) time and memory.

  Args:
    values: [n] per-seed values, n >= 1.
    level: coverage, e.g. 0.95.
    resamples: bootstrap resamples.
    seed: the resampling seed (equal inputs give equal intervals).

  Returns:
    (lo, hi); (v, v) for one value.

  Examples:
    >>> bootstrap_interval([0.5])
    (0.5, 0.5)
  """
  v = np.asarray(values, np.float64).reshape(-1)
  if not len(v):
    raise JaxkdError("bootstrap_interval needs at least one value.")
  if not 0.0 < level < 1.0:
    raise JaxkdError(f"level must be in (0, 1), got {level}.")
  if len(v) == 1:
    return float(v[0]), float(v[0])
  rng = np.random.default_rng(seed)
  means = v[rng.integers(0, len(v), size=(resamples, len(v)))].mean(1)
  lo, hi = np.quantile(means, [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
  return float(lo), float(hi)


def paired_test(a, b) -> dict:
  """Two-sided paired t-test of a against b over the same seeds.

  t = mean(d) / (std(d, ddof=1) / sqrt(n)) with d = a - b, p from Student's
  t with n - 1 degrees of freedom (`scipy.stats.ttest_rel`). The t-test is
  the primary test because Wilcoxon's signed-rank test, exact for small n,
  cannot go below p = 2 / 2^n (0.25 at 3 seeds, 0.0625 at 5); its p-value
  is also given (`wilcoxon_p`, None without a nonzero difference).

  Args:
    a: [n] per-seed values of the strategy.
    b: [n] the baseline's values for the same seeds.

  Returns:
    {"p_value", "test": "ttest_rel", "n", "mean_difference" (mean of a - b),
    "statistic" (t), "wilcoxon_p"}; p_value and statistic are None when
    n < 2 or every difference is the same (t undefined: no spread).
  """
  a = np.asarray(a, np.float64).reshape(-1)
  b = np.asarray(b, np.float64).reshape(-1)
  if len(a) != len(b):
    raise JaxkdError(f"paired_test needs as many values in a as in b: got "
                     f"{len(a)} and {len(b)}.")
  d = a - b
  out = {"p_value": None, "test": "ttest_rel", "n": int(len(d)),
         "mean_difference": float(d.mean()) if len(d) else None,
         "statistic": None, "wilcoxon_p": None}
  if len(d) < 2:
    return out
  from scipy import stats  # pylint: disable=import-outside-toplevel
  if np.ptp(d) > 1e-12 * max(1.0, float(np.abs(d).max())):
    t = stats.ttest_rel(a, b)
    out["p_value"], out["statistic"] = float(t.pvalue), float(t.statistic)
  if np.any(d != 0):
    out["wilcoxon_p"] = float(stats.wilcoxon(a, b).pvalue)
  return out


def queries_saved(q_strategy, s_strategy, target: float,
                  baseline_queries: Optional[float] = None
                  ) -> Optional[float]:
  """Queries saved reaching `target`: baseline_queries - q*, with q* where
  the strategy's curve first reaches target (linear interpolation).

  Args:
    q_strategy: [R] the strategy's increasing query counts.
    s_strategy: [R] its success rates.
    target: the success rate to reach (the baseline's final one).
    baseline_queries: the baseline's final query count; default
      q_strategy[-1] (both curves pay the same budgets).

  Returns:
    Positive when the strategy needs fewer queries; None when its curve
    never reaches target. O(R).

  Examples:
    >>> queries_saved([100, 200, 300], [0.5, 0.75, 1.0], 0.875)
    50.0
  """
  q, s = _curve(q_strategy, s_strategy)
  reach = crossing(q, s, target)
  if reach is None:
    return None
  final = q[-1] if baseline_queries is None else float(baseline_queries)
  return float(final - reach)


# ----------------------------------------------------------- over seeds ---


def _summary(values, level, resamples, seed) -> dict:
  """mean, std (ddof 0, as the report's tables), bootstrap lo/hi, n."""
  v = [x for x in values if x is not None]
  if not v:
    return {"mean": None, "std": None, "lo": None, "hi": None, "n": 0}
  lo, hi = bootstrap_interval(v, level=level, resamples=resamples, seed=seed)
  a = np.asarray(v, np.float64)
  return {"mean": float(a.mean()), "std": float(a.std()), "lo": lo,
          "hi": hi, "n": int(len(a))}


def _seed_ids(runs, seeds):
  if seeds is not None:
    if len(seeds) != len(runs):
      raise JaxkdError(f"{len(seeds)} seed ids for {len(runs)} runs.")
    return list(seeds)
  if runs and all(r and "seed" in r[0] for r in runs):
    return [r[0]["seed"] for r in runs]
  return list(range(len(runs)))


def _curves(runs, seeds) -> Dict:
  """{seed id: (queries [R], success [R])}, empty runs left out."""
  return {i: _curve([x["queries"] for x in r], [x["success_rate"] for x in r])
          for i, r in zip(_seed_ids(runs, seeds), runs) if r}


def strategy_statistics(results: Dict[str, Sequence[Sequence[dict]]],
                        baseline: str = "random", *, level: float = 0.95,
                        resamples: int = 10000, seed: int = 0,
                        seeds: Optional[Dict[str, Sequence[int]]] = None
                        ) -> Dict[str, dict]:
  """AUBC, paired tests against `baseline` and queries saved, per strategy.

  Args:
    results: {strategy: [round records of seed 0, of seed 1, ...]}, each
      record with "queries" and "success_rate".
    baseline: the strategy compared against (absent: p-values and
      queries_saved are None).
    level, resamples, seed: the bootstrap intervals (`bootstrap_interval`).
    seeds: optional {strategy: seed ids of its runs} to pair seeds by id
      (default: a record's "seed" field, else the runs' positions).

  Returns:
    {strategy: {"baseline", "seeds", "aubc": {mean, std, lo, hi, n,
    values}, "p_value" (paired t-test of AUBC; None for the baseline
    itself), "test", "aubc_difference", "p_value_final" and
    "final_difference" (final success), "final_success": {mean, std, lo,
    hi, n}, "wilcoxon_p" (of AUBC), "per_budget": [{queries,
    mean_difference, p_value, n}] (the budgets every paired seed of both
    curves has), "queries_saved": {mean, std, lo, hi, n (seeds that
    reached), reached, seeds, values (None: never reached)}, "level"}}.
    Per seed pair the AUBC difference is taken over the budgets both
    curves have; queries saved targets that seed's final baseline success
    (per seed, not the mean over seeds, so the pairing carries through),
    and its mean and interval are over the seeds that reached it. The
    summaries' std is over seeds with ddof 0, as the report's tables.
    Plain floats, ints and None (JSON-ready). O(strategies x seeds x
    (R + resamples)).
  """
  curves = {s: _curves(runs, (seeds or {}).get(s))
            for s, runs in results.items()}
  base = curves.get(baseline)
  out = {}
  for name, cur in curves.items():
    ids = list(cur)
    au = [aubc(*cur[i]) for i in ids]
    final = [float(cur[i][1][-1]) for i in ids]
    entry = {"baseline": baseline if base is not None else None,
             "seeds": [_plain(i) for i in ids],
             "aubc": dict(_summary(au, level, resamples, seed), values=au),
             "final_success": _summary(final, level, resamples, seed),
             "p_value": None, "test": None, "aubc_difference": None,
             "p_value_final": None, "final_difference": None,
             "wilcoxon_p": None, "per_budget": [], "queries_saved": None,
             "level": level}
    if base is not None:
      pairs = [i for i in ids if i in base]
      entry.update(_paired(cur, base, pairs, name == baseline))
      saved = [queries_saved(*cur[i], base[i][1][-1], base[i][0][-1])
               for i in pairs]
      qs = _summary(saved, level, resamples, seed)
      qs.update(reached=qs["n"], seeds=len(saved), values=saved)
      entry["queries_saved"] = qs
    out[name] = entry
  return out


def _plain(x):
  return x.item() if hasattr(x, "item") else x


def _paired(cur, base, pairs, is_baseline) -> dict:
  """The paired tests of one strategy against the baseline's curves."""
  if is_baseline or not pairs:
    return {}
  da, db = [], []
  for i in pairs:
    (qa, sa), (qb, sb) = cur[i], base[i]
    common = np.intersect1d(qa, qb)
    if not len(common):
      continue
    da.append(aubc(common, sa[np.isin(qa, common)]))
    db.append(aubc(common, sb[np.isin(qb, common)]))
  t_au = paired_test(da, db)
  t_fin = paired_test([cur[i][1][-1] for i in pairs],
                      [base[i][1][-1] for i in pairs])
  budgets = None
  for i in pairs:
    both = set(cur[i][0].tolist()) & set(base[i][0].tolist())
    budgets = both if budgets is None else budgets & both
  per_budget = []
  for q in sorted(budgets or ()):
    t = paired_test([cur[i][1][cur[i][0] == q][0] for i in pairs],
                    [base[i][1][base[i][0] == q][0] for i in pairs])
    per_budget.append({"queries": int(q) if float(q).is_integer() else q,
                       "mean_difference": t["mean_difference"],
                       "p_value": t["p_value"], "n": t["n"]})
  return {"p_value": t_au["p_value"], "test": t_au["test"],
          "aubc_difference": t_au["mean_difference"],
          "wilcoxon_p": t_au["wilcoxon_p"],
          "p_value_final": t_fin["p_value"],
          "final_difference": t_fin["mean_difference"],
          "per_budget": per_budget}


def final_statistics(finals: Dict[str, Sequence[dict]],
                     baseline: str = "random_kd", *, key: str = "success_rate",
                     level: float = 0.95, resamples: int = 10000,
                     seed: int = 0) -> Dict[str, dict]:
  """Paired tests of one final number per seed (jobs without a curve, e.g.
  UNIX), against `baseline`, seeds paired by their "seed" field.

  Args:
    finals: {method: [one record per seed, with "seed" and `key`]}.
    baseline: the method compared against (absent: p-values are None).
    key: the record field compared.
    level, resamples, seed: the bootstrap intervals.

  Returns:
    {method: {"baseline", "seeds", "final_success": {mean, std, lo, hi, n},
    "p_value" and "p_value_final" (both the paired t-test of `key`),
    "test", "final_difference", "wilcoxon_p", "aubc": None,
    "queries_saved": None, "level"}}: no curve, so no AUBC or queries
    saved.
  """
  by = {m: {r.get("seed", i): float(r[key]) for i, r in enumerate(recs)}
        for m, recs in finals.items()}
  base = by.get(baseline)
  out = {}
  for m, vals in by.items():
    entry = {"baseline": baseline if base is not None else None,
             "seeds": [_plain(i) for i in vals],
             "final_success": _summary(list(vals.values()), level, resamples,
                                       seed),
             "p_value": None, "p_value_final": None, "test": None,
             "final_difference": None, "wilcoxon_p": None, "aubc": None,
             "queries_saved": None, "level": level}
    if base is not None and m != baseline:
      pairs = [i for i in vals if i in base]
      if pairs:
        t = paired_test([vals[i] for i in pairs], [base[i] for i in pairs])
        entry.update(p_value=t["p_value"], p_value_final=t["p_value"],
                     test=t["test"], final_difference=t["mean_difference"],
                     wilcoxon_p=t["wilcoxon_p"])
    out[m] = entry
  return out


# ------------------------------------------------------------- printing ---


def format_p(p: Optional[float]) -> str:
  """A p-value for a table: 3 significant digits, '-' for None."""
  return "-" if p is None else f"{p:.3g}"


def format_interval(ms: Optional[dict], scale: float = 100.0,
                    digits: int = 2) -> str:
  """'mean [lo, hi]' x scale, '-' when there is no value."""
  if not ms or ms.get("mean") is None:
    return "-"
  f = lambda x: f"{scale * x:.{digits}f}"
  if ms["n"] < 2:
    return f(ms["mean"])
  return f"{f(ms['mean'])} [{f(ms['lo'])}, {f(ms['hi'])}]"


def format_saved(qs: Optional[dict]) -> str:
  """Queries saved 'mean [lo, hi]', with 'k/n seeds' when some seeds never
  reached the target; 'not reached' when none did, '-' without baseline."""
  if not qs:
    return "-"
  if not qs["reached"]:
    return "not reached"
  text = format_interval(qs, scale=1.0, digits=0)
  if qs["reached"] < qs["seeds"]:
    text += f" ({qs['reached']}/{qs['seeds']} seeds)"
  return text


def statistics_table(stats: Dict[str, dict]) -> str:
  """Plain-text table of `strategy_statistics`: AUBC % [interval], p of
  the paired test vs the baseline (AUBC and final), queries saved."""
  base = next((e["baseline"] for e in stats.values() if e["baseline"]),
              "baseline")
  cells = []
  for name, e in stats.items():
    curve = bool(e.get("aubc"))  # final_statistics: no curve, no AUBC
    cells.append([name, str(e["final_success"]["n"]),
                  format_interval(e.get("aubc")),
                  format_p(e["p_value"] if curve else None),
                  format_p(e.get("p_value_final")),
                  format_saved(e.get("queries_saved"))])
  level = f"{100 * next(iter(stats.values()), {}).get('level', 0.95):g}%"
  header = ["strategy", "seeds", f"AUBC % [{level} CI]",
            f"p vs {base} (AUBC)", f"p vs {base} (final)",
            f"queries saved vs {base} [{level} CI]"]
  return (plotting.format_table(cells, header)
          + f"\nAUBC: area under success vs queries / query range, "
          f"{level} percentile bootstrap over seeds; p: paired t-test (same "
          f"seeds), '-' with < 2 seeds; queries saved: {base}'s final "
          f"queries minus the first (interpolated) crossing of {base}'s "
          f"final success rate, per seed (on {base}'s own row: how early it "
          f"first reached its final level).")
