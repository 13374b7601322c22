"""Ranking, tables, plots and results.json: the same for every job.

`rank_strategies` and `summary_table` read the active job's records (one
list of round records per seed and strategy); `write_report` writes
results.json (atomically), curve.png when the records are rounds, and
prints the table. `experiments/reproduce.py` uses the same pieces.
"""

from __future__ import annotations

import os
import time
from typing import Any, Dict, List, Optional

import jax
import numpy as np

from jaxkd import plotting, run_dir, statistics
from jaxkd.checkpoint import write_json_atomic

Records = Dict[str, List[List[dict]]]


def _log(msg: str) -> None:
  print(msg, flush=True)


def mean_std(a, scale=100) -> str:
  """'mean ± std' of `a` x `scale` (just the mean for one value)."""
  a = np.asarray(a, np.float64)
  if len(a) > 1:
    return f"{scale * a.mean():.2f} ± {scale * a.std():.2f}"
  return f"{scale * a.mean():.2f}"


def compare(a_mean, a_std, b_mean, b_std, seeds) -> str:
  """'>' / '<' when a differs from b by more than one spread (the larger
  std over seeds), '≈' within it, '?' with a single seed (no spread)."""
  if seeds < 2:
    return "?"
  spread = max(a_std, b_std)
  if a_mean - b_mean > spread:
    return ">"
  if b_mean - a_mean > spread:
    return "<"
  return "≈"


def _mean_or_none(values) -> Optional[float]:
  values = [v for v in values if v is not None]
  return float(np.mean(values)) if values else None


def strategy_costs(runs: List[List[dict]]) -> Dict[str, Optional[float]]:
  """What a strategy cost the machine, from its round records (one list
  per seed; `jaxkd.resources.round_costs` fields), mean over seeds:
  `select_seconds_per_round` (scoring and choosing, rounds >= 1),
  `train_seconds_per_round` (every round), `pay_seconds_per_round`,
  `unpaid_teacher_forwards` (summed over rounds) and `peak_rss_mib` (the
  largest round's peak; the process's, see `jaxkd.resources`). None where
  the records predate these fields."""
  def per_round(field, first):
    return _mean_or_none(
        [_mean_or_none([x.get(field) for x in r[first:]]) for r in runs])
  peaks = [max((x["peak_rss_mib"] for x in r if "peak_rss_mib" in x),
               default=None) for r in runs]
  device = [max((x["peak_device_mib"] for x in r if "peak_device_mib" in x),
                default=None) for r in runs]
  return {"select_seconds_per_round": per_round("select_seconds", 1),
          "train_seconds_per_round": per_round("train_seconds", 0),
          "pay_seconds_per_round": per_round("pay_seconds", 0),
          "unpaid_teacher_forwards": float(np.mean(
              [sum(x.get("unpaid_teacher_forwards", 0) for x in r)
               for r in runs])),
          "peak_rss_mib": _mean_or_none(peaks),
          "peak_device_mib": _mean_or_none(device)}


def _seconds(v: Optional[float]) -> str:
  if v is None:
    return "-"
  return f"{v:.2f}" if v < 10 else f"{v:.0f}"


def rank_strategies(results: Records) -> List[dict]:
  """Strategies ranked by final success rate, then by mean success over
  rounds, each as mean and std over seeds (success = student / teacher
  test accuracy), with what each cost (`strategy_costs`). Each row but the last compares with the next one down:
  `final_vs_next` / `mean_vs_next` is '>' when this strategy is ahead by
  more than one spread (max of the two stds), '<' when behind by more,
  '≈' within one spread, '?' with fewer than 2 seeds."""
  rows = []
  for name, runs in results.items():
    suc = np.asarray([r[-1]["success_rate"] for r in runs], np.float64)
    auc = np.asarray([np.mean([x["success_rate"] for x in r]) for r in runs],
                     np.float64)
    rows.append({"strategy": name, "seeds": len(runs),
                 "final_success_mean": float(suc.mean()),
                 "final_success_std": float(suc.std()),
                 "mean_success_mean": float(auc.mean()),
                 "mean_success_std": float(auc.std()),
                 **strategy_costs(runs)})
  rows.sort(key=lambda r: (-r["final_success_mean"], -r["mean_success_mean"]))
  for i, r in enumerate(rows):
    r["rank"] = i + 1
    r["final_vs_next"] = r["mean_vs_next"] = None
    if i + 1 < len(rows):
      nxt = rows[i + 1]
      seeds = min(r["seeds"], nxt["seeds"])
      for key in ("final", "mean"):
        r[f"{key}_vs_next"] = compare(r[f"{key}_success_mean"],
                                      r[f"{key}_success_std"],
                                      nxt[f"{key}_success_mean"],
                                      nxt[f"{key}_success_std"], seeds)
  return rows


def summary_table(results: Records,
                  money: Optional[Dict[str, List[float]]] = None) -> str:
  """Strategies ranked by final success rate, then by mean success over
  rounds (area under the curve), each mean ± std over seeds, marked against
  the next row (`rank_strategies`: '>' ahead by more than one spread, '≈'
  within it); with the final accuracy, the queries paid and the teacher
  forwards that were not paid queries (gap_diversity's pass over the pool:
  free when the teacher is cheap to run and labels are what cost), summed
  over rounds, mean over seeds, and what a round cost the machine
  (`strategy_costs`: selection and training seconds, peak memory). A last line gives the total unpaid
  forwards of the whole job. With `money` (strategy -> money spent per
  seed) a 'money' column gives its mean over seeds."""
  by_name, total_unpaid = {}, 0
  for name, runs in results.items():
    final = [r[-1] for r in runs]
    acc = [f["student_accuracy"] for f in final]
    suc = [f["success_rate"] for f in final]
    auc = [np.mean([x["success_rate"] for x in r]) for r in runs]
    total_unpaid += sum(sum(x.get("unpaid_teacher_forwards", 0) for x in r)
                        for r in runs)
    paid = sorted({int(f["queries"]) for f in final})  # seeds may stop apart
    queries = str(paid[0]) if len(paid) == 1 else f"{paid[0]}-{paid[-1]}"
    by_name[name] = (queries, mean_std(acc), mean_std(suc),
                     mean_std(auc), str(len(runs)))
  cells = []
  for r in rank_strategies(results):
    q, acc, suc, auc, seeds = by_name[r["strategy"]]
    peak = r["peak_rss_mib"]
    cells.append([str(r["rank"]), r["strategy"], q, acc, suc,
                  r["final_vs_next"] or "", auc, r["mean_vs_next"] or "",
                  _seconds(r["select_seconds_per_round"]),
                  _seconds(r["train_seconds_per_round"]),
                  f"{r['unpaid_teacher_forwards']:.0f}",
                  "-" if peak is None else f"{peak:.0f}", seeds])
  header = ["rank", "strategy", "queries", "student acc %",
            "final success %", "vs next", "mean success over rounds %",
            "vs next", "select s/round", "train s/round",
            "unpaid teacher fwd", "peak MiB", "seeds"]
  if money is not None:
    header.insert(3, "money")
    for row in cells:
      row.insert(3, f"{np.mean(money.get(row[1]) or [0.0]):g}")
  table = plotting.format_table(cells, header)
  return (table + "\n'vs next': > ahead of the next row by more than one "
          "spread (std over seeds), ≈ within one spread, ? one seed. "
          "Cost, mean over seeds: seconds per round scoring and choosing "
          "(select) and training the student (train), teacher forwards "
          "not paid for, the process's peak resident memory in a round."
          + f"\n\ntotal unpaid teacher forwards: {total_unpaid}")


BASELINES = ("random", "random_mixup")


def strategy_statistics(results: Records) -> Dict[str, Any]:
  """`jaxkd.statistics.strategy_statistics` against the job's baseline
  (random, else random mixup; none: AUBC only), with its table."""
  base = next((b for b in BASELINES if b in results), None)
  stats = statistics.strategy_statistics(results, baseline=base or "")
  return {"baseline": base, "strategies": stats,
          "table": statistics.statistics_table(stats)}


def unpaid_forwards(results: Records) -> int:
  """Teacher forwards that were not paid queries, over every run."""
  return int(sum(x.get("unpaid_teacher_forwards", 0)
                 for runs in results.values() for r in runs for x in r))


def write_report(settings: Any, workdir: str, results: Records,
                 teacher_accuracy: float, t_start: float,
                 accepted: List[str], *, table: str, title: str,
                 teacher_name: str, extra: Optional[Dict[str, Any]] = None
                 ) -> Dict[str, Any]:
  """results.json, curve.png (for round records) and the printed table;
  returns what results.json holds."""
  out = {"job": settings.job, "config": run_dir.plain(settings),
         "teacher_accuracy": teacher_accuracy, "strategies": results,
         "table": table, "resume_with_changes": accepted,
         "wall_time": time.time() - t_start}
  out.update(extra or {})
  write_json_atomic(os.path.join(workdir, "results.json"), out)
  wrote = "results.json"
  primary = not (jax.distributed.is_initialized() and jax.process_index())
  if primary and all(runs and runs[0] and "queries" in runs[0][0]
                     for runs in results.values()):
    plotting.plot_success_curves(results, os.path.join(workdir, "curve.png"),
                                 title=title)
    wrote += " and curve.png"
  _log(f"\n{title}; teacher {teacher_name} test accuracy: "
       f"{teacher_accuracy:.4f}")
  _log(table)
  _log(f"\nwrote {os.path.join(workdir, wrote)} "
       f"({time.time() - t_start:.0f}s)")
  return out
