"""The active job: data -> teacher -> for each strategy and seed, the round
loop (`jaxkd.loop.run_loop`) with its own ledger and checkpoints -> report.

Strategies with scope "initial" (Active Mixup) query synthetic images of L
only: their oracle covers L and they never touch U. Resumable: rerun the
same command and finished rounds come from their checkpoints, paid answers
from the ledgers.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Dict, List

import jax
import numpy as np

from jaxkd import (loop, multihost, parallel, report, run_dir,
                   teacher_sources)
from jaxkd.checkpoint import has_checkpoint
from jaxkd.data import sources
from jaxkd.jobs.inputs import load_pools
from jaxkd.models import get_model
from jaxkd.selection import get_strategy
from jaxkd.settings import ActiveSettings
from jaxkd.teacher import TeacherOracle, flax_teacher_fn
from jaxkd.validation import JaxkdError


def _log(msg: str) -> None:
  print(msg, flush=True)


def check_plan(settings: ActiveSettings, pools) -> None:
  """Every strategy's rounds fit its pool, before the teacher is trained."""
  n_init, n_pool = len(pools.initial_images), len(pools.pool_images)
  for name in settings.strategies:
    strat = get_strategy(name)
    if strat.scope == "initial":
      capacity, what = strat.capacity(n_init, 0), "candidate queries"
    else:
      capacity, what = strat.capacity(n_init, n_pool), "pool points"
    if settings.rounds and settings.rounds * settings.per_round > capacity:
      raise JaxkdError(
          f"{name}: {settings.rounds} rounds x per_round="
          f"{settings.per_round} need more than the {capacity} {what} "
          f"(split.pool={n_pool}).")


def train_teacher(settings: ActiveSettings, dataset, pools, workdir, mesh):
  """(model, variables, test accuracy) of the job's local teacher: loaded
  from `teacher.checkpoint`, or trained on the teacher-train split once and
  saved in workdir/teacher."""
  return teacher_sources.local_teacher(
      settings.teacher, dataset, pools.teacher_train_images,
      pools.teacher_train_labels, pools.test_images, pools.test_labels,
      workdir, dataset_name=settings.dataset, mesh=mesh,
      progress=settings.progress)


def earlier_results(workdir: str, results) -> Dict[str, List[List[dict]]]:
  """Strategies an earlier run of this workdir reported that this run did
  not run (a resume with fewer strategies): their records, kept in the
  report. The changed-config guard has checked that the settings that
  change results are the same."""
  path = os.path.join(workdir, "results.json")
  if not os.path.isfile(path):
    return {}
  with open(path) as f:
    old = json.load(f).get("strategies", {})
  return {n: runs for n, runs in old.items() if n not in results}


def get_teacher(settings: ActiveSettings, dataset, pools, workdir, mesh):
  """(teacher_fn, test accuracy) from the configured source."""
  ts = settings.teacher
  if ts.url:
    return teacher_sources.remote_teacher(
        ts, pools.test_images, pools.test_labels, workdir,
        dataset.num_classes, settings.dataset)
  model, variables, acc = train_teacher(settings, dataset, pools, workdir,
                                        mesh)
  fn = flax_teacher_fn(model, variables, mesh=mesh)
  if multihost.is_distributed():  # process 0 alone answers (and pays)
    fn = multihost.primary_teacher(fn)
  return fn, acc


def run(settings: ActiveSettings, workdir: str, accepted: List[str] = ()
        ) -> Dict[str, Any]:
  """Runs (or resumes) every strategy x seed; returns results.json."""
  t_start = time.time()
  # Several processes: each computes on its own devices; the teacher is
  # paid by process 0 alone and scoring is sharded over processes.
  mesh = (multihost.local_mesh() if multihost.is_distributed()
          else parallel.make_mesh())
  _log(f"jaxkd: {jax.device_count()} device(s) ({jax.devices()[0].platform}), "
       f"workdir {workdir}")
  dataset, pools = load_pools(settings)
  check_plan(settings, pools)
  _log(f"data {settings.dataset}: teacher-train "
       f"{len(pools.teacher_train_images)}, initial L "
       f"{len(pools.initial_images)}, pool U {len(pools.pool_images)}, test "
       f"{len(pools.test_images)}")
  teacher_fn, teacher_acc = get_teacher(settings, dataset, pools, workdir,
                                        mesh)
  oracle_pool = sources.concat(pools.initial_images, pools.pool_images)
  n_init = len(pools.initial_images)
  initial = np.arange(n_init)
  candidates = n_init + np.arange(len(pools.pool_images))
  student = get_model(settings.student, dataset.num_classes)

  results: Dict[str, List[List[dict]]] = {}
  money: Dict[str, List[float]] = {}  # per strategy, per seed
  for name in settings.strategies:
    own = get_strategy(name).scope == "initial"
    for seed in settings.seeds:
      run_path = run_dir.run_path(workdir, name, seed)
      oracle = TeacherOracle(
          teacher_fn, pools.initial_images if own else oracle_pool,
          budget=settings.paid_budget,
          ledger_path=multihost.follower_ledger(
              os.path.join(run_path, "ledger.sqlite")),
          hard_labels=settings.hard_labels,
          must_exist=has_checkpoint(os.path.join(run_path, "checkpoints")),
          price=settings.price_per_query or None,
          money_budget=settings.money_budget or None)
      try:
        records = loop.run_loop(
            strategy=name, student=student, oracle=oracle,
            initial_indices=initial,
            candidate_indices=candidates[:0] if own else candidates,
            test_images=pools.test_images, test_labels=pools.test_labels,
            teacher_accuracy=teacher_acc,
            settings=settings.loop_settings(seed, name), workdir=run_path,
            initial_labels=pools.initial_labels, name=name, mesh=mesh,
            config=run_dir.plain(settings),
            progress=settings.progress, log=_log)
        money.setdefault(name, []).append(oracle.money_spent)
      finally:
        oracle.close()
      results.setdefault(name, []).append(records)
  for name, runs in earlier_results(workdir, results).items():
    _log(f"{name}: not run this time; results.json keeps its earlier "
         f"{len(runs)} seed(s) from {workdir}")
    results[name] = runs
  teacher_name = settings.teacher.url or settings.teacher.model
  stats = report.strategy_statistics(results)
  extra = {"unpaid_teacher_forwards": report.unpaid_forwards(results),
           "ranking": report.rank_strategies(results),
           "statistics": stats,
           "allow_overlap": settings.allow_overlap,
           "split_overlap": pools.overlap}
  priced = bool(settings.price_per_query)
  if priced:  # money the teacher may have charged, per strategy and seed
    extra["money_spent"] = money
  return report.write_report(
      settings, workdir, results, teacher_acc, t_start, accepted,
      table=(report.summary_table(results, money if priced else None)
             + "\n\n" + stats["table"]),
      teacher_name=teacher_name,
      title=f"{settings.dataset}: {settings.student} from {teacher_name}",
      extra=extra)
