"""Budget planning from measured learning curves: how many queries to pay.

Reads the per-round records of an active run (`RUN/results.json`) or of a
published reproduction (`docs/results/<name>.json`, one part), fits each
strategy's success-rate curve with `jaxkd.curves` (s = a - b q^-c on the mean
over seeds) and bootstraps it over seeds, then reports per strategy the
queries predicted to reach a target success rate, the success predicted at a
budget, their percentile intervals, the cost at a price per query, and the
strategy predicted to reach the target cheapest.

    python -m jaxkd.plan --workdir RUN --target 0.97 [--budget 2000]
        [--price 0.002] [--out DIR]
    python -m jaxkd.plan --results docs/results/recon_fmnist.json --part main
        --target 0.955
    python -m jaxkd.plan --validate docs/results/recon_fmnist.json [...]

`--validate` refits on the first third and the first half of each
published curve and compares the predictions with what the later rounds
measured; it writes `plan_validation.md`. Bad input is one line on stderr
and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from jaxkd import curves
from jaxkd.plotting import format_table
from jaxkd.validation import JaxkdError

Records = Dict[str, List[List[dict]]]
NO_CURVE = "UNIX results have no query curve (one accuracy per run)"


# ---------------------------------------------------------------- inputs ---


def _check_settings(target, budget, price) -> None:
  if not (isinstance(target, (int, float)) and math.isfinite(target)
          and 0.0 < target <= 1.0):
    raise JaxkdError(f"target must be a success rate in (0, 1], got {target}.")
  if budget is not None and not (math.isfinite(budget) and budget > 0):
    raise JaxkdError(f"budget must be a positive query count, got {budget}.")
  if price is not None and not (math.isfinite(price) and price >= 0):
    raise JaxkdError(f"price must be >= 0 per query, got {price}.")


def strategy_curves(name: str, runs: Sequence[Sequence[dict]]
                    ) -> List[Tuple[np.ndarray, np.ndarray]]:
  """Per seed (queries [m], success [m]) from round records.

  Raises:
    JaxkdError: no seeds, a record without `queries`/`success_rate`, or a
      seed with fewer than three rounds.
  """
  if not runs:
    raise JaxkdError(f"strategy {name!r} has no seeds.")
  out = []
  for i, recs in enumerate(runs):
    if not recs or not all(isinstance(r, dict) and "queries" in r
                           and "success_rate" in r for r in recs):
      raise JaxkdError(
          f"strategy {name!r} seed {i}: records need 'queries' and "
          f"'success_rate' (is this an active run?).")
    if len(recs) < 3:
      raise JaxkdError(
          f"strategy {name!r} seed {i} has {len(recs)} round(s); a curve "
          f"needs at least three.")
    out.append((np.asarray([r["queries"] for r in recs], np.float64),
                np.asarray([r["success_rate"] for r in recs], np.float64)))
  return out


def _published_records(part: dict) -> Records:
  """Round records of one published part: the per-seed `runs` when kept,
  else the summary's mean curve as a single seed."""
  if part.get("runs"):
    return part["runs"]
  return {s: [[{"queries": q, "success_rate": m["mean"]}
               for q, m in zip(sm["queries"], sm["success_rate"])]]
          for s, sm in part.get("summary", {}).items()}


def load_records(path: str, part: str = "main") -> Tuple[Records, dict]:
  """(records by strategy, source info) from a run directory, its
  results.json, or a published reproduction (one `part`).

  Raises:
    JaxkdError: a missing file, an unknown part, or a result without a
      query curve (UNIX, teacher).
  """
  if os.path.isdir(path):
    path = os.path.join(path, "results.json")
  if not os.path.isfile(path):
    raise JaxkdError(f"no results file at {path}.")
  try:
    with open(path) as f:
      data = json.load(f)
  except (OSError, ValueError) as e:
    raise JaxkdError(f"cannot read {path}: {e}") from None
  if not isinstance(data, dict):
    raise JaxkdError(f"{path} is not a results object.")
  if "parts" in data:
    parts = data["parts"]
    if part not in parts:
      raise JaxkdError(f"{path} has no part {part!r}; parts: "
                       f"{', '.join(parts)}.")
    p = parts[part]
    if p.get("kind") == "unix":
      raise JaxkdError(f"part {part!r}: {NO_CURVE}; nothing to plan.")
    if p.get("kind") != "active" or not p.get("summary"):
      raise JaxkdError(f"part {part!r} ({p.get('kind')}) has no rounds.")
    return _published_records(p), {"path": path, "part": part,
                                   "teacher_accuracy":
                                   p.get("teacher_accuracy")}
  if "strategies" not in data:
    raise JaxkdError(f"{path} has neither 'strategies' nor 'parts'.")
  recs = data["strategies"]
  first = [runs[0][0] for runs in recs.values()
           if runs and isinstance(runs[0], list) and runs[0]]
  if data.get("job") == "unix" or any(
      isinstance(r, dict) and "queries" not in r for r in first):
    raise JaxkdError(f"{NO_CURVE}; nothing to plan.")
  return recs, {"path": path, "part": None,
                "teacher_accuracy": data.get("teacher_accuracy")}


# ------------------------------------------------------------------ plan ---


def _finite(x: float) -> Optional[float]:
  return float(x) if math.isfinite(x) else None


def plan(records_by_strategy: Records, target: float,
         budget: Optional[float] = None, price: Optional[float] = None, *,
         n_boot: int = 200, level: float = 0.9, seed: int = 0,
         resample_rounds: Optional[bool] = None) -> Dict[str, Any]:
  """Predicted queries to `target` and success at `budget`, per strategy.

  Args:
    records_by_strategy: {strategy: [round records of each seed]}, each
      record with `queries` (paid so far) and `success_rate`.
    target: success rate (student / teacher accuracy) in (0, 1].
    budget: query count for the predicted success; default: the largest
      count measured.
    price: money per query; when given, costs are reported.
    n_boot: bootstrap resamples per strategy.
    level: coverage of the percentile intervals.
    seed: bootstrap seed.
    resample_rounds: passed to `curves.bootstrap` (default: resample
      rounds only for a strategy with one seed).

  Returns:
    A JSON-ready dict: the settings, `strategies` {name: {fit, queries to
    target (None: never) with interval and reach fraction, measured
    queries to target, success at budget with interval, cost}}, `cheapest`
    (None if no strategy is predicted to reach the target) and `note`.

  Raises:
    JaxkdError: a bad target, budget or price, or a strategy's records that
      cannot be fitted.
  """
  _check_settings(target, budget, price)
  if not records_by_strategy:
    raise JaxkdError("no strategies in the results.")
  data = {s: strategy_curves(s, runs)
          for s, runs in records_by_strategy.items()}
  if budget is None:
    budget = max(float(c[0][0][-1]) for c in data.values())
  out = {"target": target, "budget": budget, "price": price, "level": level,
         "n_boot": n_boot, "seed": seed, "resample_rounds": resample_rounds,
         "strategies": {}}
  for name, cs in data.items():
    bs = curves.bootstrap(cs, target, budget, n_boot=n_boot, level=level,
                          seed=seed, resample_rounds=resample_rounds)
    q = cs[0][0]
    succ = np.stack([s for _, s in cs])
    a, b, c = bs.fit.params
    lo, hi = bs.queries_interval
    entry = {
        "seeds": len(cs), "queries": q.tolist(),
        "success_mean": succ.mean(0).tolist(),
        "success_std": succ.std(0).tolist(),
        "fit": {"kind": bs.fit.kind, "a": a, "b": b, "c": c,
                "residual": bs.fit.residual},
        "queries_to_target": _finite(bs.queries),
        "queries_interval": ([_finite(lo), _finite(hi)] if len(bs.params)
                             else None),     # None: no resample was fitted
        "reach_fraction": bs.reach_fraction,
        "measured_queries_to_target": curves.crossing(q, succ.mean(0),
                                                      target),
        "extrapolated": bool(not math.isfinite(bs.queries)
                             or bs.queries > q[-1]),
        "success_at_budget": bs.success,
        "success_interval": (list(bs.success_interval) if len(bs.params)
                             else None),
        "n_failed": bs.n_failed,
        "params": bs.params.tolist()}
    if price is not None:
      entry["cost"] = _finite(price * bs.queries)
      entry["cost_interval"] = ([_finite(price * lo), _finite(price * hi)]
                                if len(bs.params) else None)
    out["strategies"][name] = entry
  reach = sorted((e["queries_to_target"], n)
                 for n, e in out["strategies"].items()
                 if e["queries_to_target"] is not None)
  out["cheapest"] = reach[0][1] if reach else None
  if not reach:
    out["note"] = "no strategy's fitted asymptote reaches the target."
  elif len(reach) == 1:
    out["note"] = "the only strategy predicted to reach the target."
  else:
    first, second = (out["strategies"][n]["queries_interval"] or [None] * 2
                     for _, n in reach[:2])
    hi, lo = first[1], second[0]
    out["note"] = (
        f"ahead of {reach[1][1]} beyond the {level:.0%} intervals."
        if hi is not None and lo is not None and hi < lo else
        f"its {level:.0%} interval overlaps {reach[1][1]}'s: not "
        f"distinguishable at this level.")
  return out


def _q(x: Optional[float]) -> str:
  return "never" if x is None else f"{x:,.0f}"


def format_plan(result: Dict[str, Any]) -> str:
  """The printed table of a `plan` result."""
  lvl, price = result["level"], result["price"]
  head = ["strategy", "seeds", "fit", f"queries to {result['target']:.3f}",
          f"{lvl:.0%} interval", "measured",
          f"success % at {result['budget']:,.0f}", f"{lvl:.0%} interval"]
  if price is not None:
    head += ["cost", f"{lvl:.0%} interval"]
  rows = []
  money = lambda v: "never" if v is None else f"{v:,.2f}"
  span = lambda iv, f: "-" if iv is None else f"{f(iv[0])} - {f(iv[1])}"
  for name, e in result["strategies"].items():
    row = [name, str(e["seeds"]), e["fit"]["kind"],
           _q(e["queries_to_target"]) + ("*" if e["extrapolated"] else ""),
           span(e["queries_interval"], _q),
           _q(e["measured_queries_to_target"])
           if e["measured_queries_to_target"] is not None else "not reached",
           f"{100 * e['success_at_budget']:.2f}",
           span(e["success_interval"], lambda v: f"{100 * v:.2f}")]
    if price is not None:
      row += [money(e["cost"]), span(e["cost_interval"], money)]
    rows.append(row)
  text = format_table(rows, head)
  text += ("\n* beyond the largest measured count: an extrapolation of the "
           "fitted curve. 'measured': where the mean over seeds first "
           "reached the target (interpolated).")
  best = result["cheapest"]
  if best is None:
    text += f"\nno strategy reaches {result['target']:.3f}: " + result["note"]
  else:
    e = result["strategies"][best]
    cost = (f", {e['cost']:,.2f} at {price:g} per query"
            if price is not None else "")
    text += (f"\ncheapest to reach {result['target']:.3f}: {best} "
             f"({_q(e['queries_to_target'])} queries{cost}); "
             + result["note"])
  return text


def plot_plan(result: Dict[str, Any], path: str, title: str = "") -> str:
  """plan.png: measured means with seed std, fitted curves with bootstrap
  bands, the target line and the budget; written atomically."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  st = result["strategies"]
  q_max = max(e["queries"][-1] for e in st.values())
  q_min = min(e["queries"][0] for e in st.values())
  reach = [e["queries_to_target"] for e in st.values()
           if e["queries_to_target"] is not None]
  right = max([q_max, result["budget"]] + [min(r, 20 * q_max) for r in reach])
  grid = np.geomspace(q_min, 1.1 * right, 200)
  tail = 100 * (1 - result["level"]) / 2
  fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
  for i, (name, e) in enumerate(st.items()):
    color = plt.cm.tab10(i % 10)
    fit = curves.CurveFit(e["fit"]["kind"],
                          (e["fit"]["a"], e["fit"]["b"], e["fit"]["c"]),
                          e["fit"]["residual"], (e["queries"][0],
                                                 e["queries"][-1]))
    ax.plot(grid, 100 * curves.predict(fit, grid), "-", color=color,
            label=f"{name} ({e['fit']['kind']}, n={e['seeds']})")
    p = np.asarray(e["params"]).reshape(-1, 3)
    if len(p):
      band = 100 * (p[:, :1] - p[:, 1:2] * grid[None] ** (-p[:, 2:]))
      ax.fill_between(grid, np.percentile(band, tail, axis=0),
                      np.percentile(band, 100 - tail, axis=0), color=color,
                      alpha=0.15, lw=0)
    ax.errorbar(e["queries"], 100 * np.asarray(e["success_mean"]),
                yerr=100 * np.asarray(e["success_std"]), fmt="o",
                color=color, ms=3, capsize=2)
    if e["queries_to_target"] is not None and e["queries_to_target"] <= right:
      ax.plot([e["queries_to_target"]], [100 * result["target"]], "v",
              color=color, ms=7)
  measured = np.concatenate([np.asarray(e["success_mean"], float)
                             for e in st.values()])
  # Bands of refits can run far below the data before the first round:
  # the axes show the measured range and the target, not those tails.
  ax.set_ylim(max(0.0, 100 * measured.min() - 10),
              min(150.0, 100 * max(measured.max(), result["target"]) + 5))
  ax.axhline(100 * result["target"], color="k", ls="--", lw=1,
             label=f"target {100 * result['target']:.1f}%")
  ax.axvline(result["budget"], color="gray", ls=":", lw=1,
             label=f"budget {result['budget']:,.0f}")
  if grid[-1] / grid[0] > 20:
    ax.set_xscale("log")
  ax.set_xlabel("teacher queries")
  ax.set_ylabel("success rate % (student / teacher)")
  ax.set_title(title or f"fitted curves, {result['level']:.0%} bootstrap "
               "bands; points: mean ± std over seeds", fontsize=9)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7)
  fig.tight_layout()
  tmp = path + ".tmp.png"
  fig.savefig(tmp)
  plt.close(fig)
  os.replace(tmp, path)
  return path


# ------------------------------------------------------------ validation ---


TARGETS = ("final", "beyond")


def validate_part(records: Records, *, margin: float = 0.005,
                  fractions: Sequence[float] = (1 / 3, 1 / 2),
                  n_boot: int = 200, level: float = 0.9, seed: int = 0
                  ) -> Tuple[List[dict], List[str]]:
  """Refits each strategy on its first rounds and scores the predictions.

  For each fraction f the fit (and its bootstrap) uses the first ceil(f m)
  of the m rounds. Two targets: "final", the final mean success minus
  `margin` (a level the run reached; perhaps already inside the window),
  and "beyond", the best mean success inside the window plus `margin` (a
  level not yet seen when fitting; the run may never reach it). The
  measured queries to a target are `curves.crossing` of the mean curve over
  all rounds (None: not reached by the last round).

  Returns:
    (rows, skipped): one row per strategy, fraction and target; one line
    per strategy or window with too few rounds.
  """
  rows, skipped = [], []
  for name, runs in records.items():
    m = min(len(r) for r in runs)
    if m < 3:
      skipped.append(f"{name}: {m} query count(s), a curve needs three")
      continue
    cs = strategy_curves(name, [r[:m] for r in runs])
    q = cs[0][0]
    mean = np.mean([s for _, s in cs], 0)
    for f in fractions:
      k = int(math.ceil(f * m))
      label = f"first {k} of {m} rounds (q <= {q[k - 1]:,.0f})"
      if k < 3:
        skipped.append(f"{name}, {label}: fewer than three rounds")
        continue
      bs = curves.bootstrap([(qq[:k], s[:k]) for qq, s in cs],
                            float(mean[-1] - margin), float(q[-1]),
                            n_boot=n_boot, level=level, seed=seed)
      for kind in TARGETS:
        target = float(mean[-1] - margin if kind == "final"
                       else mean[:k].max() + margin)
        (lo, hi), _ = curves.reach_interval(bs.params, target, level)
        pred = _finite(curves.queries_to_reach(bs.fit, target))
        measured = curves.crossing(q, mean, target)
        rows.append({
            "strategy": name, "fraction": f, "rounds": k, "of": m,
            "window_queries": float(q[k - 1]), "fit_on": label,
            "kind": bs.fit.kind, "seeds": len(cs), "target_kind": kind,
            "target": target, "predicted_queries": pred,
            "interval": [_finite(lo), _finite(hi)],
            "measured_queries": measured,
            "in_window": bool(measured is not None
                              and measured <= q[k - 1]),
            "covered": bool(lo <= measured <= hi if measured is not None
                            else not hi <= q[-1]),
            "false_promise": bool(measured is None and pred is not None
                                  and pred <= q[-1]),
            "error_pct": (None if pred is None or measured is None else
                          100 * (pred - measured) / measured),
            "predicted_final": bs.success,
            "final_interval": list(bs.success_interval),
            "measured_final": float(mean[-1]),
            "final_covered": bool(bs.success_interval[0] <= mean[-1]
                                  <= bs.success_interval[1]),
            "peak": float(mean.max()),
            "peak_queries": float(q[mean.argmax()]),
            "final_queries": float(q[-1])})
  return rows, skipped


def validate_files(paths: Sequence[str], **kwargs
                   ) -> List[Tuple[str, str, List[dict], List[str]]]:
  """`validate_part` for every part of every published file: a list of
  (file, part, rows, skipped); a part without a curve has no rows and one
  skipped line."""
  out = []
  for path in paths:
    if not os.path.isfile(path):
      raise JaxkdError(f"no results file at {path}.")
    with open(path) as f:
      data = json.load(f)
    if "parts" not in data:
      raise JaxkdError(f"{path} is not a published reproduction (no parts).")
    name = os.path.basename(path)
    for pname, p in data["parts"].items():
      if p.get("kind") == "unix":
        out.append((name, pname, [], [NO_CURVE]))
      elif p.get("kind") == "active" and p.get("summary"):
        rows, skipped = validate_part(_published_records(p), **kwargs)
        out.append((name, pname, rows, skipped))
  return out


def _pct(x: Optional[float]) -> str:
  return "-" if x is None else f"{x:+.0f}%"


def _window_name(f: float) -> str:
  return {1 / 3: "first third", 1 / 2: "first half"}.get(f, f"first {f:.0%}")


def _skipped_lines(skipped: Sequence[str]) -> List[str]:
  """'name: reason' lines grouped by reason."""
  by_reason: Dict[str, List[str]] = {}
  for s in skipped:
    name, _, reason = s.partition(": ")
    if not reason:
      name, reason = "", s
    by_reason.setdefault(reason, []).append(name)
  return [f"- skipped: {', '.join(n for n in names if n)}"
          + (": " if any(names) else "") + reason
          for reason, names in by_reason.items()]


def validation_markdown(results, margin: float, level: float,
                        n_boot: int, command: str = "") -> str:
  """plan_validation.md from `validate_files`' output."""
  files = sorted({r[0] for r in results})
  lines = [
      "# Does the planner predict later rounds?",
      "",
      "Generated by `" + (command or "python -m jaxkd.plan --validate "
                          + " ".join(f"docs/results/{f}" for f in files))
      + "`; the numbers below are computed by it, the paragraph at the end "
      "included.",
      "",
      "For every strategy of every published part with a query curve, the "
      "planner (s = a - b q^-c fitted to the mean over seeds; `inverse` is "
      "its a - b/q fallback) is fitted on the first third and on the first "
      "half of the m rounds (ceil(m/3), ceil(m/2)) and scored on the rounds "
      "it did not see. Two targets per fit: **final**, the final mean "
      f"success rate minus {margin:g} (a level the run reached; when it was "
      "reached inside the fitted rounds the row is interpolation, marked "
      f"'in window'), and **beyond**, the best mean success in the fitted "
      f"rounds plus {margin:g} (a level not yet seen when fitting; the run "
      "may never reach it). Measured queries: where the mean curve first "
      "reached the target, interpolated between rounds; 'not reached' by "
      "the last round. Error % = (predicted - measured) / measured. "
      f"Intervals: {level:.0%} percentile bootstrap ({n_boot} resamples) "
      "over seeds, over rounds for one-seed parts. Final: success predicted "
      "at the last round's query count (with its interval) against the "
      "measured mean, given once per fit. Success rates in % of the "
      "teacher's accuracy.",
      ""]
  head = ("| strategy | fit on | target | predicted queries | "
          f"{level:.0%} interval | measured queries | error % | "
          "predicted final % | measured final % |")
  all_rows, merged = [], {}
  for fname, pname, rows, skipped in results:   # parts with nothing to fit:
    if not rows:                                # one heading per reason
      merged.setdefault((fname, tuple(skipped)), []).append(pname)
  entries = [e for e in results if e[2]] + [
      (f, ", ".join(parts), [], list(sk)) for (f, sk), parts in merged.items()]
  for fname, pname, rows, skipped in entries:
    lines += [f"## {fname}: {pname}", ""]
    if rows:
      lines += [f"{rows[0]['seeds']} seed(s).", "", head, "|---" * 9 + "|"]
      for r in rows:
        lo, hi = r["interval"]
        flo, fhi = r["final_interval"]
        meas = ("not reached" if r["measured_queries"] is None else
                _q(r["measured_queries"])
                + (" (in window)" if r["in_window"] else ""))
        first = r["target_kind"] == TARGETS[0]
        lines.append(
            f"| {r['strategy']} | {r['fit_on']}, {r['kind']} | "
            f"{r['target_kind']} {100 * r['target']:.2f} | "
            f"{_q(r['predicted_queries'])} | {_q(lo)} - {_q(hi)} | {meas} | "
            f"{_pct(r['error_pct'])} | "
            + (f"{100 * r['predicted_final']:.2f} ({100 * flo:.2f} - "
               f"{100 * fhi:.2f}) | {100 * r['measured_final']:.2f} |"
               if first else " | |"))
        all_rows.append(dict(r, part=f"{fname}:{pname}"))
      lines.append("")
    lines += _skipped_lines(skipped)
    if skipped:
      lines.append("")
  lines += _summary(all_rows, level)
  return "\n".join(lines) + "\n"


def _missed(row: dict) -> bool:
  """'never' predicted for a target the run reached."""
  return (row["predicted_queries"] is None
          and row["measured_queries"] is not None)


def _summary(rows: List[dict], level: float) -> List[str]:
  """The aggregate table and the closing paragraph; every number in them
  is computed from the rows."""
  if not rows:
    return ["No part had a query curve to validate."]
  lines = ["## Summary", "",
           "Predictions only (in-window rows left out). |error|: over rows "
           "where both counts are finite. Interval held it: the measured "
           "count inside the interval, or, for a target never reached, an "
           "interval reaching past the last measured count. False promise: "
           "a count at or below "
           "the last measured one predicted for a target the run never "
           "reached. Missed: 'never' predicted for a target the run reached.",
           "", "| fit on | target | seeds | predictions | median abs error | "
           "worst abs error | interval held it | false promises | missed |",
           "|---" * 9 + "|"]
  groups = {}
  for r in rows:
    if not r["in_window"]:
      key = (r["fraction"], r["target_kind"], "1" if r["seeds"] == 1 else
             "3+")
      groups.setdefault(key, []).append(r)
  for (f, kind, seeds), rs in sorted(groups.items()):
    errs = [abs(r["error_pct"]) for r in rs if r["error_pct"] is not None]
    lines.append(
        f"| {_window_name(f)} | {kind} | {seeds} | {len(rs)} | "
        + (f"{np.median(errs):.0f}% | {max(errs):.0f}% | " if errs else
           "- | - | ")
        + f"{sum(r['covered'] for r in rs)} of {len(rs)} | "
        f"{sum(r['false_promise'] for r in rs)} | "
        f"{sum(_missed(r) for r in rs)} |")
  fits = [r for r in rows if r["target_kind"] == TARGETS[0]]
  lines += ["", "| fit on | fits | final over-predicted | median error "
            "(points) | worst (points) | interval held it |",
            "|---" * 6 + "|"]
  for f in sorted({r["fraction"] for r in fits}):
    fs = [r for r in fits if r["fraction"] == f]
    d = [100 * (r["predicted_final"] - r["measured_final"]) for r in fs]
    w = int(np.argmax(np.abs(d)))
    lines.append(
        f"| {_window_name(f)} | {len(fs)} | "
        f"{sum(x > 0 for x in d)} of {len(fs)} | {np.median(d):+.2f} | "
        f"{d[w]:+.2f} ({fs[w]['strategy']}, {fs[w]['part']}) | "
        f"{sum(r['final_covered'] for r in fs)} of {len(fs)} |")
  lines += ["", "## When not to trust the planner", "",
            _trust(rows, fits, level)]
  return lines


def _trust(rows: List[dict], fits: List[dict], level: float) -> str:
  """The closing paragraph: statements whose numbers come from the rows."""
  out = []
  beyond = [r for r in rows if r["target_kind"] == "beyond"]
  fp = [r for r in beyond if r["false_promise"]]
  if beyond:
    out.append(
        f"Not for a target above what the fitted rounds already reached: "
        f"for such targets the run never got there in "
        f"{sum(r['measured_queries'] is None for r in beyond)} of "
        f"{len(beyond)} cases, and in {len(fp)} of those the planner "
        "had promised it within the queries the run went on to pay.")
  d = [100 * (r["predicted_final"] - r["measured_final"]) for r in fits]
  over = sum(x > 0 for x in d)
  out.append(
      f"Not for the success at a larger budget: it over-predicted the last "
      f"round's success in {over} of {len(d)} fits (median "
      f"{np.median(d):+.2f} points, worst {max(d, key=abs):+.2f}), and its "
      f"{level:.0%} interval held the measured value in "
      f"{sum(r['final_covered'] for r in fits)} of {len(fits)}.")
  last = max(r["fraction"] for r in fits)
  fall = [r for r in fits if r["fraction"] == last
          and r["peak"] - r["measured_final"] > 0.005]
  if fall:
    out.append(
        "The model assumes a non-decreasing curve; these fell by more than "
        "half a point after their peak: " + "; ".join(
            f"{r['strategy']} in {r['part']} ({100 * r['peak']:.2f}% at "
            f"{r['peak_queries']:,.0f}, {100 * r['measured_final']:.2f}% at "
            f"{r['final_queries']:,.0f})" for r in fall) + ".")
  final = [r for r in rows if r["target_kind"] == "final"
           and not r["in_window"] and r["error_pct"] is not None]
  for seeds, name in ((1, "one seed"), (None, "three seeds")):
    rs = [r for r in final if (r["seeds"] == 1) == (seeds == 1)]
    if rs:
      e = [abs(r["error_pct"]) for r in rs]
      out.append(
          f"For a level the run did reach later (final target, {name}), "
          f"the queries were off by {np.median(e):.0f}% median, "
          f"{max(e):.0f}% at worst ({len(rs)} predictions).")
  return " ".join(out)


# ------------------------------------------------------------------- CLI ---


class _Parser(argparse.ArgumentParser):
  """argparse whose errors are one line and exit status 2."""

  def error(self, message):
    sys.stderr.write(f"{self.prog}: error: {message}\n")
    sys.exit(2)


def _parser() -> argparse.ArgumentParser:
  p = _Parser(prog="python -m jaxkd.plan", description=__doc__.split("\n")[0])
  src = p.add_mutually_exclusive_group(required=True)
  src.add_argument("--workdir", help="run directory holding results.json")
  src.add_argument("--results", help="a results.json or a published "
                   "docs/results/<name>.json")
  src.add_argument("--validate", nargs="+", metavar="JSON",
                   help="published files to validate the planner on")
  p.add_argument("--part", default="main", help="part of a published file")
  p.add_argument("--target", type=float,
                 help="success rate to reach, in (0, 1]")
  p.add_argument("--budget", type=float,
                 help="queries for the predicted success (default: the "
                 "largest measured)")
  p.add_argument("--price", type=float, help="money per query")
  p.add_argument("--out", help="output folder (default: next to the "
                 "results)")
  p.add_argument("--n_boot", type=int, default=200,
                 help="bootstrap resamples")
  p.add_argument("--level", type=float, default=0.9,
                 help="interval coverage")
  p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
  p.add_argument("--resample_rounds", action="store_true",
                 help="resample rounds as well as seeds (wider intervals)")
  p.add_argument("--margin", type=float, default=0.005,
                 help="--validate: target = final mean success - margin")
  return p


def _run(args) -> None:
  if args.validate:
    results = validate_files(args.validate, margin=args.margin,
                             n_boot=args.n_boot, level=args.level,
                             seed=args.seed)
    out_dir = args.out or os.path.dirname(os.path.abspath(args.validate[0]))
    text = validation_markdown(
        results, args.margin, args.level, args.n_boot,
        "python -m jaxkd.plan --validate " + " ".join(args.validate))
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "plan_validation.md")
    with open(path + ".tmp", "w") as f:
      f.write(text)
    os.replace(path + ".tmp", path)
    print(text)
    print(f"wrote {path}")
    return
  if args.target is None:
    raise JaxkdError("--target is required (a success rate in (0, 1]).")
  _check_settings(args.target, args.budget, args.price)
  source = args.workdir or args.results
  records, info = load_records(source, args.part)
  result = plan(records, args.target, args.budget, args.price,
                n_boot=args.n_boot, level=args.level, seed=args.seed,
                resample_rounds=args.resample_rounds or None)
  result["source"] = info
  out_dir = args.out or os.path.dirname(os.path.abspath(info["path"]))
  os.makedirs(out_dir, exist_ok=True)
  print(format_plan(result))
  where = os.path.basename(os.path.dirname(os.path.abspath(info["path"])))
  if info["part"]:
    where = f"{os.path.basename(info['path'])}: {info['part']}"
  plot_plan(result, os.path.join(out_dir, "plan.png"),
            title=f"{where}: fitted curves, {args.level:.0%} bootstrap bands; "
            "points: mean ± std over seeds")
  from jaxkd.checkpoint import write_json_atomic  # orbax: only when writing
  write_json_atomic(os.path.join(out_dir, "plan.json"), result)
  print(f"wrote {os.path.join(out_dir, 'plan.png')} and plan.json")


def main(argv: Optional[Sequence[str]] = None) -> int:
  """The CLI; returns the exit status (2 with one line on stderr for bad
  input)."""
  args = _parser().parse_args(argv)
  try:
    _run(args)
  except JaxkdError as e:
    sys.stderr.write(f"python -m jaxkd.plan: error: {e}\n")
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
