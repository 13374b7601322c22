"""The UNIX job (Xu, Liu, Loy): KD vs Random+KD vs UNIX and its ablations.

Every method and seed trains a student through `train.fit` with the UNIX
step (`jaxkd.unix.unix_fit`), the same epochs for all, from one teacher;
computation E = N_t F_t + N_s1 F_s + N_s2 B_s relative to plain KD (100%),
in two conventions: `computation` with F_t, F_s and B_s from XLA's FLOP
counts, `computation_paper` with the paper's B_s = F_s (Eq. 11, the
convention of every computation cell of its tables; `cost.KDCost.paper`).
Each run record also holds `flops_ratio` = F_t / F_s. A finished (method,
seed) is saved as workdir/<method>/seed<s>.json and restored on resume.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Dict, List

import jax
import numpy as np

from jaxkd import cost, health, parallel, plotting, report, run_dir, train
from jaxkd import teacher_sources, unix
from jaxkd.checkpoint import write_json_atomic
from jaxkd.jobs.inputs import check_test_overlap, load_data
from jaxkd.models import get_model
from jaxkd.settings import UnixJobSettings

NAMES = {"kd": "KD", "random_kd": "Random+KD", "uncertainty": "Uncertainty",
         "mixup": "Mixup", "non_adaptive": "Non-adaptive mixup",
         "unix": "UNIX"}


def _log(msg: str) -> None:
  print(msg, flush=True)


def train_subset(settings: UnixJobSettings, ds):
  """The train images the job uses: all, or `unix.max_train` of them."""
  x, y = ds.train_images, ds.train_labels
  n = settings.unix.max_train
  if n and n < len(x):
    idx = np.random.default_rng(0).permutation(len(x))[:n]
    x, y = x[idx], y[idx]
  return x, y


def student_and_optimizer(settings: UnixJobSettings, train_x: np.ndarray,
                          num_classes: int):
  """(student, optimizer) every method of the job trains with: the student
  on inputs standardized with `train_x`'s per-channel mean and std (as the
  paper's code normalizes: see jaxkd.unix, "Student inputs") and the
  optimizer's schedule over `unix.epochs` passes of `train_x` in batches of
  `unix.batch_size`, the first `unix.warmup_epochs` of them warm-up."""
  uc = settings.unix
  student = unix.standardized(get_model(settings.student, num_classes),
                              train_x)
  steps_per_epoch = -(-len(train_x) // uc.batch_size)
  tx = train.make_optimizer(
      uc.optimizer, uc.lr, weight_decay=uc.weight_decay,
      total_steps=uc.epochs * steps_per_epoch,
      warmup_steps=uc.warmup_epochs * steps_per_epoch)
  return student, tx


def computation_fields(counter: cost.CostCounter, flops: cost.KDCost
                       ) -> Dict[str, float]:
  """A run's computation relative to plain KD: `computation` (B_s from
  XLA's gradient count), `computation_paper` (B_s = F_s, the paper's
  Eq. 11) and `flops_ratio` F_t / F_s."""
  return {"computation": counter.relative_to_kd(flops),
          "computation_paper": counter.relative_to_kd(flops.paper()),
          "flops_ratio": flops.teacher_student_ratio}


def run(settings: UnixJobSettings, workdir: str, accepted: List[str] = ()
        ) -> Dict[str, Any]:
  """Runs (or resumes) every method x seed; returns results.json."""
  t_start = time.time()
  uc = settings.unix
  mesh = parallel.make_mesh()
  ds = load_data(settings)
  overlap = check_test_overlap(settings, ds)
  train_x, train_y = train_subset(settings, ds)
  teacher, teacher_vars, teacher_acc = teacher_sources.local_teacher(
      settings.teacher, ds, train_x, train_y, ds.test_images, ds.test_labels,
      workdir, dataset_name=settings.dataset, mesh=mesh,
      progress=settings.progress)
  student, tx = student_and_optimizer(settings, train_x, ds.num_classes)
  shape = train_x.shape[1:]
  probe = train.create_train_state(student, jax.random.key(0), shape, tx)
  flops = cost.kd_cost(student, probe.variables, teacher, teacher_vars, shape)
  results, rows = {}, []
  for method in uc.methods:
    mc = uc.method_config(method)
    name = NAMES.get(method, method)
    runs = []
    for seed in settings.seeds:
      done = run_dir.run_path(workdir, method, seed) + ".json"
      if os.path.isfile(done):  # finished before an interruption: resume.
        with open(done) as f:
          rec = json.load(f)
        # A record written before computation_paper existed gets it now.
        runs.append({**computation_fields(
            cost.CostCounter.from_dict(rec["counts"]), flops), **rec})
        _log(f"{name} seed {seed}: "
             f"{100 * runs[-1]['student_accuracy']:.2f}% (restored)")
        continue
      t0 = time.time()
      state = train.create_train_state(student, jax.random.key(seed), shape,
                                       tx)
      counter = cost.CostCounter()
      state, history = unix.unix_fit(
          student, state, teacher, teacher_vars, train_x, epochs=uc.epochs,
          batch_size=uc.batch_size, seed=seed, config=mc, mesh=mesh,
          counter=counter, progress=settings.progress,
          desc=f"{method} seed {seed}")
      acc = train.accuracy(student, state.variables, ds.test_images,
                           ds.test_labels, mesh=mesh)
      warning = health.chance_warning(acc, ds.num_classes,
                                      f"{name} seed {seed}")
      if warning:
        _log(warning)
      warning = health.divergence_warning(history, f"{name} seed {seed}",
                                          "config.unix.lr")
      if warning:
        _log(warning)
      runs.append({"seed": seed, "student_accuracy": acc,
                   "success_rate": acc / max(teacher_acc, 1e-12),
                   **computation_fields(counter, flops),
                   "counts": counter.as_dict(), "final_loss": history[-1],
                   "wall_time": time.time() - t0})
      write_json_atomic(done, runs[-1])
      _log(f"{name} seed {seed}: {100 * acc:.2f}% in "
           f"{runs[-1]['wall_time']:.1f}s")
    results[method] = [runs]
    acc = [r["student_accuracy"] for r in runs]
    comp = [r["computation"] for r in runs]
    paper = [r["computation_paper"] for r in runs]
    rows.append((np.mean(acc), [name, report.mean_std(acc),
                                report.mean_std(comp), report.mean_std(paper),
                                str(len(runs))]))
  rows.sort(key=lambda r: -r[0])
  table = plotting.format_table(
      [[str(i + 1)] + r[1] for i, r in enumerate(rows)],
      ["rank", "method", "accuracy %", "computation % of KD (XLA)",
       "computation % of KD (paper, B_s = F_s)", "seeds"])
  title = (f"{settings.dataset} ({len(train_x)} train): UNIX, "
           f"{settings.student} from {settings.teacher.model}, F_t/F_s = "
           f"{flops.teacher_student_ratio:.2f}, N = {uc.batch_size}, "
           f"k = {uc.k}, {uc.epochs} epochs")
  return report.write_report(
      settings, workdir, results, teacher_acc, t_start, accepted,
      table=table, title=title, teacher_name=settings.teacher.model,
      extra={"flops_per_image": vars(flops),
             "flops_ratio": flops.teacher_student_ratio,
             "allow_overlap": settings.allow_overlap,
             "split_overlap": overlap})
