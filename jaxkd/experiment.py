"""`train_and_evaluate(config, workdir)`: every jaxkd experiment.

The one job behind `python -m jaxkd.main --config=FILE.py:variant`. It reads
the config (the only module that does), checks it before anything is paid,
and dispatches on `config.job`:

  "active" (default): data and pools (refused when splits share images,
    unless allow_overlap) -> teacher (trained once and saved, loaded from
    `teacher.checkpoint`, or remote, `teacher.url`, see
    `jaxkd.http_teacher`) -> for each strategy and seed, the one round loop
    (`jaxkd.loop.run_loop`) with its own ledger and checkpoints;
  "unix": teacher -> for each UNIX method (KD, Random+KD, UNIX, ablations)
    and seed, a student trained through `jaxkd.train.fit` with the UNIX
    step, with its computation counted.

Both end in the same report: results.json, a ranked table (mean +- std over
seeds) printed and stored, and curve.png for the active job.

Run directory layout:
  workdir/config.json              the config that produced this directory
  workdir/teacher/                 the trained teacher (orbax checkpoint +
                                   teacher.json; `teacher_training`)
  workdir/<strategy>/seed<s>/      ledger.sqlite, checkpoints/, rounds.json
  workdir/<method>/seed<s>.json    unix job: one finished (method, seed); a
                                   resumed job restores it, not re-trains
  workdir/results.json, workdir/curve.png

A resume with a config that changes results (steps, optimizer, loss, lr,
temperature, teacher, student, split, budget, rounds, dataset, ...) is
refused with a one-line diff unless `resume_with_changes=True`, which is
then recorded in results.json.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
import types
from typing import Any, Dict, List

import jax
import ml_collections
import numpy as np

from jaxkd import data, loop, parallel, plotting, train
from jaxkd import teacher_training
from jaxkd.checkpoint import has_checkpoint
from jaxkd.models import MODELS, get_model
from jaxkd.selection import get_strategy
from jaxkd.teacher import TeacherOracle, flax_teacher_fn
from jaxkd.validation import JaxkdError, is_int

# Config keys that do not change any result: never part of the resume check.
_RESUME_FREE = ("progress", "resume_with_changes", "strategies", "seeds",
                "data_dir", "unix.methods", "_accepted_changes",
                "data_verify_md5", "allow_overlap")


def _log(msg: str) -> None:
  print(msg, flush=True)


def check_strategy_name(name: str) -> None:
  """Raises JaxkdError for a name that is neither registered nor an
  importable 'pkg.module:attr' strategy (the message lists known names)."""
  get_strategy(name)


def run_dirname(name: str) -> str:
  """A strategy's directory name: import paths ('pkg.mod:attr') and other
  characters that could leave the workdir become '_'."""
  out = re.sub(r"[^A-Za-z0-9_.-]", "_", name).strip(".")
  return out or "_"


# -------------------------------------------------------------- checks ---


def _plain(tree):
  """JSON-able copy (tuples -> lists) for comparisons and config.json."""
  return json.loads(json.dumps(tree, default=str))


def _flat(tree, prefix=""):
  out = {}
  for k, v in tree.items():
    if isinstance(v, dict):
      out.update(_flat(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def _diff(old, new, prefix="") -> str:
  a, b = _flat(old, prefix), _flat(new, prefix)
  keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
  return ", ".join(f"{k} {a.get(k, '<unset>')!r} -> {b.get(k, '<unset>')!r}"
                   for k in keys)


def config_changes(old: Dict[str, Any], new: Dict[str, Any]) -> str:
  """One-line diff of the result-changing keys of two config dicts ('' if
  none); keys in `_RESUME_FREE` (progress, strategies, seeds, ...) may
  change freely."""
  strip = lambda d: {k: v for k, v in _flat(_plain(d)).items()
                     if not any(k == f or k.startswith(f + ".")
                                for f in _RESUME_FREE)}
  return _diff(strip(old), strip(new))


def _check_resume(config, workdir) -> List[str]:
  """Compares with workdir/config.json; writes it. Returns the accepted
  changes (recorded in results.json)."""
  path = os.path.join(workdir, "config.json")
  new = _plain(config.to_dict())
  accepted = []
  if os.path.exists(path):
    with open(path) as f:
      old = json.load(f)
    diff = config_changes(old, new)
    if diff:
      if not config.get("resume_with_changes", False):
        raise JaxkdError(
            f"{workdir} was run with another config ({diff}); rerun with "
            "--config.resume_with_changes=True to accept, or use a new "
            "workdir.")
      accepted = [diff] + list(old.get("_accepted_changes", []))
  new["_accepted_changes"] = accepted
  with open(path, "w") as f:
    json.dump(new, f, indent=1)
  return accepted


def _positive(name, value, *, integer=False, zero_ok=False):
  ok_type = is_int(value) if integer else isinstance(
      value, (int, float, np.number))
  if not ok_type or not math.isfinite(value) or (
      value < 0 if zero_ok else value <= 0):
    kind = "an int" if integer else "a finite number"
    rel = ">= 0" if zero_ok else "> 0"
    raise JaxkdError(f"config.{name} must be {kind} {rel}, got {value!r}.")


def _check_names(config):
  try:
    data.dataset_loader(config.dataset)
  except JaxkdError as e:  # "Unknown dataset ...", like the other names
    msg = str(e)
    raise JaxkdError(msg[:1].upper() + msg[1:]) from None
  for name in (config.student, config.teacher.model):
    MODELS.get(name) if ":" in name else get_model(name, 10)  # known name?
  train.OPTIMIZERS.get(config.teacher.optimizer)


def validate_config(config) -> None:
  """One-line JaxkdError for any value that would waste paid queries,
  before anything is trained or paid."""
  job = config.get("job", "active")
  if job not in ("active", "unix"):
    raise JaxkdError(f"Unknown job {job!r}; use 'active' or 'unix'.")
  if not tuple(config.seeds):
    raise JaxkdError("config.seeds is empty: nothing would run.")
  for s in config.seeds:
    _positive("seeds", s, integer=True, zero_ok=True)
  tc = config.teacher
  _check_teacher_url(tc.get("url", ""), job)
  _positive("teacher.epochs", tc.epochs, integer=True)
  _positive("teacher.batch_size", tc.batch_size, integer=True)
  _positive("teacher.learning_rate", tc.learning_rate)
  _check_names(config)
  _check_data_fields(config)
  if job == "unix":
    return _validate_unix(config)
  if not tuple(config.strategies):
    raise JaxkdError("config.strategies is empty: nothing would run.")
  for name in config.strategies:
    check_strategy_name(name)
  _positive("rounds", config.rounds, integer=True, zero_ok=True)
  _positive("per_round", config.per_round, integer=True)
  _positive("budget", config.get("budget", 0), integer=True, zero_ok=True)
  need = config.split.initial + config.rounds * config.per_round
  if config.get("budget", 0) and config.budget < need:
    raise JaxkdError(
        f"split.initial + rounds x per_round = {config.split.initial} + "
        f"{config.rounds} x {config.per_round} = {need} queries exceed "
        f"config.budget={config.budget}.")
  lc = config.loop
  _positive("loop.train_steps", lc.train_steps, integer=True)
  _positive("loop.batch_size", lc.batch_size, integer=True)
  _positive("loop.learning_rate", lc.learning_rate)
  _positive("loop.temperature", lc.temperature)
  train.OPTIMIZERS.get(lc.optimizer)
  train.LOSSES.get(lc.loss)


def _check_data_fields(config):
  shape = tuple(config.get("image_shape", ()) or ())
  if shape:
    data.arrays.image_shape_arg(shape)  # raises for a bad shape
  _positive("num_classes", config.get("num_classes", 0), integer=True,
            zero_ok=True)
  path = config.teacher.get("checkpoint", "")
  if path:
    teacher_training.read_teacher_meta(path)  # raises if nothing is there


def _check_teacher_url(url, job):
  if not url:
    return
  if not isinstance(url, str) or not url.startswith(("http://", "https://")):
    raise JaxkdError(f"config.teacher.url must start with http:// or "
                     f"https://, got {url!r}.")
  if job != "active":
    raise JaxkdError("config.teacher.url is for the active job; the UNIX job "
                     "needs the teacher's model (its features and FLOPs).")


def _validate_unix(config):
  from jaxkd import unix
  uc = config.unix
  _positive("unix.epochs", uc.epochs, integer=True)
  _positive("unix.batch_size", uc.batch_size, integer=True)
  _positive("unix.lr", uc.lr)
  _positive("unix.temperature", uc.temperature)
  if not tuple(uc.methods):
    raise JaxkdError("config.unix.methods is empty: nothing would run.")
  for method in uc.methods:
    _unix_method_config(unix, uc, method)


# ---------------------------------------------------------------- parts ---


def load_data(config: ml_collections.ConfigDict) -> data.Dataset:
  """The configured dataset; own files (`npz:`, `idx:`) get image_shape,
  num_classes and, without a test split of their own, split.test images
  split off with split.seed; loaders that check md5s get
  data_verify_md5."""
  accepts = data.loader_options(config.dataset)
  split = config.get("split")
  offered = {
      "image_shape": tuple(config.get("image_shape", ()) or ()) or None,
      "num_classes": config.get("num_classes", 0),
      "num_test": split.test if split else 0,
      "seed": split.seed if split else 0,
      "verify_md5": config.get("data_verify_md5", False),
  }
  if not config.dataset.startswith(("npz:", "idx:")):
    offered = {"verify_md5": offered["verify_md5"]}
  opts = {k: v for k, v in offered.items() if k in accepts}
  return data.load_dataset(config.dataset, data_dir=config.data_dir or None,
                           **opts)


def load_pools(config: ml_collections.ConfigDict):
  dataset = load_data(config)
  split = config.split
  pools = data.make_pools(dataset, teacher_train=split.teacher_train,
                          initial=split.initial, pool=split.pool,
                          test=split.test or None, seed=split.seed,
                          allow_overlap=config.get("allow_overlap", False))
  return dataset, pools


def check_plan(config, pools) -> None:
  """Every strategy's rounds fit its pool, before the teacher is trained."""
  n_init, n_pool = len(pools.initial_images), len(pools.pool_images)
  for name in config.strategies:
    strat = get_strategy(name)
    if strat.scope == "initial":
      capacity, what = strat.capacity(n_init, 0), "candidate queries"
    else:
      capacity, what = strat.capacity(n_init, n_pool), "pool points"
    if config.rounds and config.rounds * config.per_round > capacity:
      raise JaxkdError(
          f"{name}: {config.rounds} rounds x per_round={config.per_round} "
          f"need more than the {capacity} {what} (split.pool={n_pool}).")


def _refuse_lost_teacher(workdir, path):
  """A missing teacher next to run ledgers: the ledgers hold the lost
  teacher's answers, and a retrained one would not match them."""
  ledgers = [os.path.join(d, s, "ledger.sqlite")
             for d in sorted(os.listdir(workdir))
             if os.path.isdir(os.path.join(workdir, d)) and d != "teacher"
             for s in sorted(os.listdir(os.path.join(workdir, d)))
             if os.path.isfile(os.path.join(workdir, d, s, "ledger.sqlite"))
             ] if os.path.isdir(workdir) else []
  if ledgers:
    raise JaxkdError(
        f"{path} is missing but {len(ledgers)} run ledger(s) in {workdir} "
        f"(e.g. {ledgers[0]}) hold its answers; a retrained teacher would not "
        "match them: restore the teacher folder from a backup, or use a new "
        "workdir.")


def train_teacher(config, dataset, pools, workdir, mesh):
  """The job's teacher: loaded from `config.teacher.checkpoint` when set
  (and evaluated on this job's test split), else trained on the
  teacher-train split once and saved in workdir/teacher (a
  `teacher_training.save_teacher` folder recording the teacher config; a
  changed config is refused)."""
  tc = config.teacher
  if tc.get("checkpoint"):
    model, variables, meta = teacher_training.load_teacher(tc.checkpoint)
    teacher_training.check_teacher_fits(meta, dataset.num_classes,
                                        dataset.image_shape, tc.checkpoint)
    acc = train.accuracy(model, variables, pools.test_images,
                         pools.test_labels, mesh=mesh)
    _log(f"teacher {meta['model']} from {tc.checkpoint}: test accuracy "
         f"{acc:.4f}")
    return model, variables, acc
  path = os.path.join(workdir, "teacher")
  settings = {k: v for k, v in _plain(tc.to_dict()).items()
              if k != "url"}  # a remote teacher is not trained
  if os.path.isfile(os.path.join(path, teacher_training.TEACHER_JSON)):
    old = teacher_training.read_teacher_meta(path).get("config")
    if old is not None and old != settings:
      raise JaxkdError(
          f"{path} holds a teacher trained with "
          f"{_diff(old, settings, 'teacher.')}; the ledgers "
          "hold its answers, so it is not retrained in place: use a new "
          "workdir.")
    model, variables, meta = teacher_training.load_teacher(path)
    _log(f"teacher {tc.model}: restored, test accuracy "
         f"{meta['accuracy']:.4f}")
    return model, variables, float(meta["accuracy"])
  _refuse_lost_teacher(workdir, path)
  t0 = time.time()
  images = pools.teacher_train_images
  model, variables, acc = teacher_training.train_teacher(
      tc.model, images, pools.teacher_train_labels, pools.test_images,
      pools.test_labels, num_classes=dataset.num_classes, epochs=tc.epochs,
      batch_size=tc.batch_size, optimizer=tc.optimizer,
      learning_rate=tc.learning_rate, seed=tc.seed, mesh=mesh,
      progress=config.progress)
  teacher_training.save_teacher(
      path, tc.model, variables, accuracy=acc,
      num_classes=dataset.num_classes, input_shape=dataset.image_shape,
      extra={"config": settings, "dataset": config.dataset,
             "train_size": len(images)})
  _log(f"teacher {tc.model}: test accuracy {acc:.4f} "
       f"({time.time() - t0:.1f}s, {len(images)} training images), saved in "
       f"{path}")
  return model, variables, acc


def teacher_only(config: ml_collections.ConfigDict, workdir: str
                 ) -> Dict[str, Any]:
  """`--mode=teacher`: loads the data, trains, evaluates and saves the
  teacher in workdir/teacher (see `teacher_training`), and returns its
  teacher.json. Pass that folder as `--config.teacher.checkpoint` later."""
  cfg = config.copy_and_resolve_references()
  with cfg.unlocked():
    cfg.teacher.checkpoint = ""
  tc = cfg.teacher
  _positive("teacher.epochs", tc.epochs, integer=True)
  _positive("teacher.batch_size", tc.batch_size, integer=True)
  _positive("teacher.learning_rate", tc.learning_rate)
  _check_names(cfg)
  _check_data_fields(cfg)
  os.makedirs(workdir, exist_ok=True)
  mesh = parallel.make_mesh()
  if cfg.get("job", "active") == "unix":
    ds = load_data(cfg)
    _check_test_overlap(cfg, ds)
    pools = types.SimpleNamespace(
        teacher_train_images=ds.train_images,
        teacher_train_labels=ds.train_labels, test_images=ds.test_images,
        test_labels=ds.test_labels)
  else:
    ds, pools = load_pools(cfg)
  train_teacher(cfg, ds, pools, workdir, mesh)
  path = os.path.join(workdir, "teacher")
  meta = teacher_training.read_teacher_meta(path)
  _log(f"saved teacher: {path} (use --config.teacher.checkpoint={path})")
  return meta


def _check_test_overlap(config, ds) -> Dict[str, int]:
  """The UNIX job trains on the whole train split: only train & test must
  not share images."""
  overlap = data.split_overlaps(train=ds.train_images, test=ds.test_images)
  data.check_overlap(overlap, config.get("allow_overlap", False),
                          f"{ds.name}: ")
  return overlap


def remote_teacher(config, pools, workdir, num_classes: int):
  """(teacher_fn, test accuracy) for the teacher at `config.teacher.url`.

  The accuracy (the success-rate denominator) is measured once, by sending
  the test split outside the ledger and the budget, and kept in
  workdir/teacher/remote.json for resumed runs.
  """
  from jaxkd.http_teacher import http_teacher
  url = config.teacher.url
  fn = http_teacher(url)
  path = os.path.join(workdir, "teacher", "remote.json")
  if os.path.exists(path):
    with open(path) as f:
      acc = float(json.load(f)["accuracy"])
    _log(f"teacher at {url}: test accuracy {acc:.4f} (recorded)")
    return fn, acc
  x, y = pools.test_images, pools.test_labels
  logits = np.concatenate([fn(x[i:i + 256], request_id=f"test-accuracy-{i}")
                           for i in range(0, len(x), 256)])
  if logits.shape[1] != num_classes:
    raise JaxkdError(f"teacher at {url} answers {logits.shape[1]} classes, "
                     f"{config.dataset} has {num_classes}; nothing was paid.")
  acc = float(np.mean(logits.argmax(1) == y))
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    json.dump({"url": url, "accuracy": acc, "test_images": len(x)}, f)
  _log(f"teacher at {url}: test accuracy {acc:.4f} ({len(x)} test images "
       "sent once, outside the budget)")
  return fn, acc


def loop_settings(config, seed: int, strategy: str) -> loop.LoopSettings:
  lc = config.loop
  opts = config.strategy_options.get(strategy, {}) if config.get(
      "strategy_options") else {}
  return loop.LoopSettings(
      rounds=config.rounds, per_round=config.per_round,
      train_steps=lc.train_steps, batch_size=lc.batch_size,
      optimizer=lc.optimizer, learning_rate=lc.learning_rate, loss=lc.loss,
      temperature=lc.temperature, retrain=lc.retrain, seed=seed,
      strategy_options=dict(opts))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str
                       ) -> Dict[str, Any]:
  """Runs the configured job (`config.job`: "active" or "unix") in
  `workdir` (resumable) and returns what it writes to results.json."""
  validate_config(config)
  os.makedirs(workdir, exist_ok=True)
  accepted = _check_resume(config, workdir)
  if config.get("job", "active") == "unix":
    return _run_unix(config, workdir, accepted)
  return _run_active(config, workdir, accepted)


def _run_active(config, workdir, accepted):
  t_start = time.time()
  mesh = parallel.make_mesh()
  _log(f"jaxkd: {jax.device_count()} device(s) ({jax.devices()[0].platform}), "
       f"workdir {workdir}")
  dataset, pools = load_pools(config)
  check_plan(config, pools)
  _log(f"data {config.dataset}: teacher-train {len(pools.teacher_train_images)}"
       f", initial L {len(pools.initial_images)}, pool U "
       f"{len(pools.pool_images)}, test {len(pools.test_images)}")
  if config.teacher.get("url"):
    teacher_fn, teacher_acc = remote_teacher(config, pools, workdir,
                                             dataset.num_classes)
  else:
    teacher_model, teacher_vars, teacher_acc = train_teacher(
        config, dataset, pools, workdir, mesh)
    teacher_fn = flax_teacher_fn(teacher_model, teacher_vars)
  oracle_pool = np.concatenate([pools.initial_images, pools.pool_images])
  n_init = len(pools.initial_images)
  initial = np.arange(n_init)
  candidates = n_init + np.arange(len(pools.pool_images))
  budget = config.get("budget", 0) or n_init + config.rounds * config.per_round
  student = get_model(config.student, dataset.num_classes)

  results: Dict[str, List[List[dict]]] = {}
  for name in config.strategies:
    for seed in config.seeds:
      run_dir = run_path(workdir, name, seed)
      # Strategies with scope "initial" (Active Mixup) query synthetic
      # images of L only: their oracle covers L and they never touch U.
      own = get_strategy(name).scope == "initial"
      oracle = TeacherOracle(teacher_fn,
                             pools.initial_images if own else oracle_pool,
                             budget=budget,
                             ledger_path=os.path.join(run_dir, "ledger.sqlite"),
                             hard_labels=config.hard_labels,
                             must_exist=has_checkpoint(
                                 os.path.join(run_dir, "checkpoints")))
      try:
        records = loop.run_loop(
            strategy=name, student=student, oracle=oracle,
            initial_indices=initial,
            candidate_indices=candidates[:0] if own else candidates,
            test_images=pools.test_images, test_labels=pools.test_labels,
            teacher_accuracy=teacher_acc,
            settings=loop_settings(config, seed, name), workdir=run_dir,
            initial_labels=pools.initial_labels, name=name, mesh=mesh,
            progress=config.progress, log=_log)
      finally:
        oracle.close()
      results.setdefault(name, []).append(records)
  unpaid = sum(x.get("unpaid_teacher_forwards", 0)
               for runs in results.values() for r in runs for x in r)
  return report(
      config, workdir, results, teacher_acc, t_start, accepted,
      table=summary_table(results),
      title=f"{config.dataset}: {config.student} from {_teacher_name(config)}",
      extra={"unpaid_teacher_forwards": int(unpaid),
             "ranking": rank_strategies(results),
             "allow_overlap": bool(config.get("allow_overlap", False)),
             "split_overlap": pools.overlap})


def run_path(workdir: str, name: str, seed: int) -> str:
  """workdir/<name>/seed<seed>: an active run's folder (its rounds.json);
  with ".json" appended, a finished UNIX run's record."""
  return os.path.join(workdir, run_dirname(name), f"seed{seed}")


def write_json_atomic(path: str, obj) -> None:
  """Writes `obj` to `path` via a temporary file and a rename, so a killed
  run never leaves a half-written file that looks finished."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=1, default=str)
  os.replace(tmp, path)


def _teacher_name(config) -> str:
  return config.teacher.get("url") or config.teacher.model


def report(config, workdir, results, teacher_acc, t_start, accepted, *,
           table: str, title: str, extra=None) -> Dict[str, Any]:
  """results.json, curve.png (for round records) and the printed table:
  the same for every job."""
  out = {"job": config.get("job", "active"), "config": _plain(config.to_dict()),
         "teacher_accuracy": teacher_acc, "strategies": results,
         "table": table, "resume_with_changes": accepted,
         "wall_time": time.time() - t_start}
  out.update(extra or {})
  write_json_atomic(os.path.join(workdir, "results.json"), out)
  wrote = "results.json"
  if all(runs and runs[0] and "queries" in runs[0][0]
         for runs in results.values()):
    plotting.plot_success_curves(results, os.path.join(workdir, "curve.png"),
                                 title=title)
    wrote += " and curve.png"
  _log(f"\n{title}; teacher {_teacher_name(config)} test accuracy: "
       f"{teacher_acc:.4f}")
  _log(table)
  _log(f"\nwrote {os.path.join(workdir, wrote)} "
       f"({time.time() - t_start:.0f}s)")
  return out


def _pm(a, scale=100):
  a = np.asarray(a, np.float64)
  if len(a) > 1:
    return f"{scale * a.mean():.2f} ± {scale * a.std():.2f}"
  return f"{scale * a.mean():.2f}"


def _vs(a_mean, a_std, b_mean, b_std, seeds) -> str:
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


def rank_strategies(results: Dict[str, List[List[dict]]]) -> List[dict]:
  """Strategies ranked by final success rate, then by mean success over
  rounds, each as mean and std over seeds (success = student / teacher
  test accuracy). Each row but the last compares with the next one down:
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
                 "mean_success_std": float(auc.std())})
  rows.sort(key=lambda r: (-r["final_success_mean"], -r["mean_success_mean"]))
  for i, r in enumerate(rows):
    r["rank"] = i + 1
    r["final_vs_next"] = r["mean_vs_next"] = None
    if i + 1 < len(rows):
      nxt = rows[i + 1]
      seeds = min(r["seeds"], nxt["seeds"])
      for key in ("final", "mean"):
        r[f"{key}_vs_next"] = _vs(r[f"{key}_success_mean"],
                                  r[f"{key}_success_std"],
                                  nxt[f"{key}_success_mean"],
                                  nxt[f"{key}_success_std"], seeds)
  return rows


def summary_table(results: Dict[str, List[List[dict]]]) -> str:
  """Strategies ranked by final success rate, then by mean success over
  rounds (area under the curve), each mean ± std over seeds, marked against
  the next row (`rank_strategies`: '>' ahead by more than one spread, '≈'
  within it); with the final accuracy, the queries paid and the teacher
  forwards that were not paid queries (gap_diversity's pass over the pool:
  free when the teacher is cheap to run and labels are what cost), summed
  over rounds, mean over seeds. A last line gives the total unpaid
  forwards of the whole job."""
  by_name, total_unpaid = {}, 0
  for name, runs in results.items():
    final = [r[-1] for r in runs]
    acc = [f["student_accuracy"] for f in final]
    suc = [f["success_rate"] for f in final]
    auc = [np.mean([x["success_rate"] for x in r]) for r in runs]
    unpaid = [sum(x.get("unpaid_teacher_forwards", 0) for x in r)
              for r in runs]
    total_unpaid += sum(unpaid)
    by_name[name] = (str(final[0]["queries"]), _pm(acc), _pm(suc), _pm(auc),
                     f"{np.mean(unpaid):.0f}", str(len(runs)))
  cells = []
  for r in rank_strategies(results):
    q, acc, suc, auc, unpaid, seeds = by_name[r["strategy"]]
    cells.append([str(r["rank"]), r["strategy"], q, acc, suc,
                  r["final_vs_next"] or "", auc, r["mean_vs_next"] or "",
                  unpaid, seeds])
  table = plotting.format_table(
      cells, ["rank", "strategy", "queries", "student acc %",
              "final success %", "vs next", "mean success over rounds %",
              "vs next", "unpaid teacher fwd", "seeds"])
  return (table + "\n'vs next': > ahead of the next row by more than one "
          "spread (std over seeds), ≈ within one spread, ? one seed."
          + f"\n\ntotal unpaid teacher forwards: {total_unpaid}")


# ------------------------------------------------------------ UNIX job ---

UNIX_NAMES = {"kd": "KD", "random_kd": "Random+KD",
              "uncertainty": "Uncertainty", "mixup": "Mixup",
              "non_adaptive": "Non-adaptive mixup", "unix": "UNIX"}


def _unix_method_config(unix, uc, method):
  kw = dict(w=uc.w, b=uc.get("b"), alpha=uc.alpha, temperature=uc.temperature,
            ce_weight=uc.ce_weight, kd_weight=uc.kd_weight,
            feature_loss=uc.feature_loss or None)
  if unix.METHODS.get(method, {}).get("uncertainty") == "entropy":
    kw["uncertainty"] = uc.uncertainty
  return unix.method_config(method, batch_size=uc.batch_size, k=uc.k, **kw)


def _run_unix(config, workdir, accepted):
  """UNIX (Xu, Liu, Loy) vs KD vs Random+KD and ablations: every method
  and seed trains a student through `train.fit` with the UNIX step, the
  same epochs for all; computation E = N_t F_t + N_s1 F_s + N_s2 B_s from
  XLA's FLOP counts, relative to plain KD (100%)."""
  from jaxkd import cost, unix
  t_start = time.time()
  uc = config.unix
  mesh = parallel.make_mesh()
  ds = load_data(config)
  overlap = _check_test_overlap(config, ds)
  train_x, train_y = ds.train_images, ds.train_labels
  if uc.max_train and uc.max_train < len(train_x):
    idx = np.random.default_rng(0).permutation(len(train_x))[:uc.max_train]
    train_x, train_y = train_x[idx], train_y[idx]
  pools = types.SimpleNamespace(
      teacher_train_images=train_x, teacher_train_labels=train_y,
      test_images=ds.test_images, test_labels=ds.test_labels)
  teacher, teacher_vars, teacher_acc = train_teacher(config, ds, pools,
                                                     workdir, mesh)
  student = get_model(config.student, ds.num_classes)
  steps_per_epoch = -(-len(train_x) // uc.batch_size)
  tx = train.make_optimizer(
      uc.optimizer, uc.lr, weight_decay=uc.weight_decay,
      total_steps=uc.epochs * steps_per_epoch,
      warmup_steps=uc.warmup_epochs * steps_per_epoch)
  shape = train_x.shape[1:]
  probe = train.create_train_state(student, jax.random.key(0), shape, tx)
  flops = cost.kd_cost(student, probe.variables, teacher, teacher_vars, shape)
  results, rows = {}, []
  for method in uc.methods:
    mc = _unix_method_config(unix, uc, method)
    runs = []
    for seed in config.seeds:
      done = run_path(workdir, method, seed) + ".json"
      if os.path.isfile(done):  # finished before an interruption: resume.
        with open(done) as f:
          runs.append(json.load(f))
        _log(f"{UNIX_NAMES.get(method, method)} seed {seed}: "
             f"{100 * runs[-1]['student_accuracy']:.2f}% (restored)")
        continue
      t0 = time.time()
      state = train.create_train_state(student, jax.random.key(seed), shape,
                                       tx)
      counter = cost.CostCounter()
      state, history = unix.unix_fit(
          student, state, teacher, teacher_vars, train_x, epochs=uc.epochs,
          batch_size=uc.batch_size, seed=seed, config=mc, mesh=mesh,
          counter=counter, progress=config.progress,
          desc=f"{method} seed {seed}")
      acc = train.accuracy(student, state.variables, ds.test_images,
                           ds.test_labels, mesh=mesh)
      runs.append({"seed": seed, "student_accuracy": acc,
                   "success_rate": acc / max(teacher_acc, 1e-12),
                   "computation": counter.relative_to_kd(flops),
                   "counts": counter.as_dict(), "final_loss": history[-1],
                   "wall_time": time.time() - t0})
      write_json_atomic(done, runs[-1])
      _log(f"{UNIX_NAMES.get(method, method)} seed {seed}: "
           f"{100 * acc:.2f}% in {runs[-1]['wall_time']:.1f}s")
    results[method] = [runs]
    acc = [r["student_accuracy"] for r in runs]
    comp = [r["computation"] for r in runs]
    rows.append((np.mean(acc), [UNIX_NAMES.get(method, method), _pm(acc),
                                _pm(comp), str(len(runs))]))
  rows.sort(key=lambda r: -r[0])
  table = plotting.format_table(
      [[str(i + 1)] + r[1] for i, r in enumerate(rows)],
      ["rank", "method", "accuracy %", "computation % of KD", "seeds"])
  title = (f"{config.dataset} ({len(train_x)} train): UNIX, {config.student} "
           f"from {config.teacher.model}, F_t/F_s = "
           f"{flops.teacher_student_ratio:.2f}, N = {uc.batch_size}, "
           f"k = {uc.k}, {uc.epochs} epochs")
  return report(config, workdir, results, teacher_acc, t_start, accepted,
                table=table, title=title,
                extra={"flops_per_image": vars(flops),
                       "allow_overlap": bool(config.get("allow_overlap",
                                                        False)),
                       "split_overlap": overlap})
