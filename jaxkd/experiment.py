"""`train_and_evaluate(config, workdir)`: the whole active-distillation job.

Phases: data and pools -> teacher (trained once, checkpointed) -> for each
strategy and seed, the active loop with its own ledger and checkpoints ->
results.json, curve.png and a printed table. This is the only module that
reads a config; everything below it takes keyword arguments.

Run directory layout:
  workdir/teacher/                 orbax checkpoint of the trained teacher
  workdir/<strategy>/seed<s>/      ledger.sqlite, checkpoints/, rounds.json
  workdir/results.json, workdir/curve.png
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Dict, List

import jax
import ml_collections
import numpy as np

from jaxkd import active, data, parallel, plotting, train
from jaxkd.checkpoint import Checkpointer
from jaxkd.models import get_model
from jaxkd.selection import get_strategy
from jaxkd.teacher import TeacherOracle, flax_teacher_fn
from jaxkd.validation import JaxkdError


# Active Mixup (Wang et al., CVPR 2020) runs as a strategy of this job too:
# its queries are synthetic images x_ij(lam) of the initial set L (the n
# real images), so it uses `active.run_mixup_loop` and never touches U.
MIXUP_STRATEGIES = {"active_mixup": "active", "random_mixup": "random"}


def check_strategy_name(name: str) -> None:
  """Raises JaxkdError for a name that is neither registered nor a mixup
  strategy (the message lists the known names)."""
  if name in MIXUP_STRATEGIES:
    return
  try:
    get_strategy(name)
  except JaxkdError as e:
    raise JaxkdError(f"{e} The job also runs: "
                     f"{', '.join(MIXUP_STRATEGIES)}.") from None


def _log(msg: str) -> None:
  print(msg, flush=True)


def load_pools(config: ml_collections.ConfigDict):
  dataset = data.load_dataset(config.dataset, data_dir=config.data_dir or None)
  split = config.split
  pools = data.make_pools(dataset, teacher_train=split.teacher_train,
                          initial=split.initial, pool=split.pool,
                          test=split.test or None, seed=split.seed)
  return dataset, pools


def train_teacher(config, dataset, pools, workdir, mesh):
  """Trains (or restores) the teacher on the teacher-train split."""
  tc = config.teacher
  model = get_model(tc.model, dataset.num_classes)
  images, labels = pools.teacher_train_images, pools.teacher_train_labels
  steps_per_epoch = -(-len(images) // tc.batch_size)
  tx = train.make_optimizer(tc.optimizer, tc.learning_rate, schedule="cosine",
                            total_steps=tc.epochs * steps_per_epoch)
  state = train.create_train_state(model, jax.random.key(tc.seed),
                                   images.shape[1:], tx)
  ckpt = Checkpointer(os.path.join(workdir, "teacher"), max_to_keep=1)
  if ckpt.latest_step() is not None:
    state, meta = ckpt.restore(state)
    _log(f"teacher {tc.model}: restored, test accuracy {meta['accuracy']:.4f}")
  else:
    t0 = time.time()
    onehot = np.eye(dataset.num_classes, dtype=np.float32)[labels]
    state, _ = train.fit(model, state, images, onehot, labels, epochs=tc.epochs,
                         batch_size=tc.batch_size, seed=tc.seed,
                         loss_fn=train.make_loss_fn("hard_ce"), mesh=mesh,
                         progress=config.progress, desc=f"teacher {tc.model}")
    acc = train.accuracy(model, state.variables, pools.test_images,
                         pools.test_labels, mesh=mesh)
    ckpt.save(0, jax.device_get(state), {"accuracy": acc})
    _log(f"teacher {tc.model}: test accuracy {acc:.4f} "
         f"({time.time() - t0:.1f}s, {len(images)} training images)")
  _, meta = ckpt.restore(state)
  ckpt.close()
  return model, state.variables, float(meta["accuracy"])


def loop_settings(config, seed: int, strategy: str) -> active.LoopSettings:
  lc = config.loop
  opts = config.strategy_options.get(strategy, {}) if config.get(
      "strategy_options") else {}
  return active.LoopSettings(
      rounds=config.rounds, per_round=config.per_round,
      train_steps=lc.train_steps, batch_size=lc.batch_size,
      optimizer=lc.optimizer, learning_rate=lc.learning_rate, loss=lc.loss,
      temperature=lc.temperature, retrain=lc.retrain, seed=seed,
      strategy_options=dict(opts))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str
                       ) -> Dict[str, Any]:
  """Runs every configured strategy and seed; writes results and the plot."""
  t_start = time.time()
  os.makedirs(workdir, exist_ok=True)
  for name in config.strategies:  # fail fast on a typo, before any training.
    check_strategy_name(name)
  mesh = parallel.make_mesh()
  _log(f"jaxkd: {jax.device_count()} device(s) ({jax.devices()[0].platform}), "
       f"workdir {workdir}")
  dataset, pools = load_pools(config)
  _log(f"data {config.dataset}: teacher-train {len(pools.teacher_train_images)}"
       f", initial L {len(pools.initial_images)}, pool U "
       f"{len(pools.pool_images)}, test {len(pools.test_images)}")
  teacher_model, teacher_vars, teacher_acc = train_teacher(
      config, dataset, pools, workdir, mesh)
  teacher_fn = flax_teacher_fn(teacher_model, teacher_vars)
  oracle_pool = np.concatenate([pools.initial_images, pools.pool_images])
  n_init = len(pools.initial_images)
  initial = np.arange(n_init)
  candidates = n_init + np.arange(len(pools.pool_images))
  budget = n_init + config.rounds * config.per_round
  student = get_model(config.student, dataset.num_classes)

  results: Dict[str, List[List[dict]]] = {}
  for name in config.strategies:
    for seed in config.seeds:
      run_dir = os.path.join(workdir, name, f"seed{seed}")
      mixup = name in MIXUP_STRATEGIES
      oracle = TeacherOracle(teacher_fn,
                             pools.initial_images if mixup else oracle_pool,
                             budget=budget,
                             ledger_path=os.path.join(run_dir, "ledger.sqlite"),
                             hard_labels=config.hard_labels)
      try:
        if mixup:
          records = active.run_mixup_loop(
              selection=MIXUP_STRATEGIES[name], student=student, oracle=oracle,
              test_images=pools.test_images, test_labels=pools.test_labels,
              teacher_accuracy=teacher_acc,
              settings=loop_settings(config, seed, name), workdir=run_dir,
              name=name, mesh=mesh, progress=config.progress, log=_log)
        else:
          records = active.run_active_loop(
              strategy=name, student=student, oracle=oracle,
              initial_indices=initial, candidate_indices=candidates,
              test_images=pools.test_images, test_labels=pools.test_labels,
              teacher_accuracy=teacher_acc,
              settings=loop_settings(config, seed, name), workdir=run_dir,
              initial_labels=pools.initial_labels, mesh=mesh,
              progress=config.progress, log=_log)
      finally:
        oracle.close()
      results.setdefault(name, []).append(records)

  table = summary_table(results)
  out = {"config": config.to_dict(), "teacher_accuracy": teacher_acc,
         "strategies": results, "table": table,
         "wall_time": time.time() - t_start}
  with open(os.path.join(workdir, "results.json"), "w") as f:
    json.dump(out, f, indent=1, default=str)
  plotting.plot_success_curves(
      results, os.path.join(workdir, "curve.png"),
      title=f"{config.dataset}: {config.student} from {config.teacher.model}")
  _log(f"\nteacher {config.teacher.model} test accuracy: {teacher_acc:.4f}")
  _log(table)
  _log(f"\nwrote {os.path.join(workdir, 'results.json')} and curve.png "
       f"({time.time() - t_start:.0f}s)")
  return out


def summary_table(results: Dict[str, List[List[dict]]]) -> str:
  """Final-round accuracy and success rate per strategy (mean +- std over
  seeds), the mean success rate over all rounds (area under the curve), and
  the teacher forwards that were not paid queries (gap_diversity's pass over
  the pool: free when the teacher is cheap to run and labels are what cost),
  summed over rounds, mean over seeds."""
  rows = []
  for name, runs in results.items():
    final = [r[-1] for r in runs]
    acc = np.array([f["student_accuracy"] for f in final])
    suc = np.array([f["success_rate"] for f in final])
    auc = np.array([np.mean([x["success_rate"] for x in r]) for r in runs])
    pm = lambda a, s=100: (f"{s * a.mean():.2f} +- {s * a.std():.2f}"
                           if len(a) > 1 else f"{s * a.mean():.2f}")
    unpaid = np.mean([sum(x.get("unpaid_teacher_forwards", 0) for x in r)
                      for r in runs])
    rows.append([name, str(final[0]["queries"]), pm(acc), pm(suc), pm(auc),
                 f"{unpaid:.0f}", str(len(runs))])
  return plotting.format_table(
      rows, ["strategy", "queries", "student acc %", "success rate %",
             "mean success over rounds %", "unpaid teacher fwd", "seeds"])
