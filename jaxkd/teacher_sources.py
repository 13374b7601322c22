"""Getting a job's teacher: one function per source.

  * `saved_teacher`: a folder written by `--mode=teacher` or
    `teacher_training.save_teacher` (`teacher.checkpoint`), evaluated on
    this job's test split;
  * `trained_teacher`: trained on the teacher-train split once and saved in
    workdir/teacher, restored from there on resume (a changed teacher
    config is refused: the ledgers hold its answers);
  * `remote_teacher`: a teacher at `teacher.url` (`jaxkd.http_teacher`),
    its test accuracy measured once and kept in workdir/teacher/remote.json.

`local_teacher` picks between the first two. All take `TeacherSettings`
and arrays, never a config.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from typing import Any, Callable, Dict, Tuple

import numpy as np

from jaxkd import multihost, run_dir, teacher_training, train
from jaxkd.checkpoint import write_json_atomic
from jaxkd.settings import TeacherSettings
from jaxkd.validation import JaxkdError


def _log(msg: str) -> None:
  print(msg, flush=True)


def teacher_dir(workdir: str) -> str:
  return os.path.join(workdir, "teacher")


def saved_teacher(ts: TeacherSettings, num_classes: int, image_shape,
                  test_images, test_labels, mesh=None):
  """(model, variables, test accuracy) of the teacher at `ts.checkpoint`."""
  model, variables, meta = teacher_training.load_teacher(ts.checkpoint)
  teacher_training.check_teacher_fits(meta, num_classes, image_shape,
                                      ts.checkpoint)
  acc = train.accuracy(model, variables, test_images, test_labels,
                       mesh=mesh)
  _log(f"teacher {meta['model']} from {ts.checkpoint}: test accuracy "
       f"{acc:.4f}")
  return model, variables, acc


def _refuse_lost_teacher(workdir: str, path: str) -> None:
  """A missing teacher next to run ledgers: the ledgers hold the lost
  teacher's answers, and a retrained one would not match them."""
  ledgers = run_dir.run_ledgers(workdir)
  if ledgers:
    raise JaxkdError(
        f"{path} is missing but {len(ledgers)} run ledger(s) in {workdir} "
        f"(e.g. {ledgers[0]}) hold its answers; a retrained teacher would not "
        "match them: restore the teacher folder from a backup, or use a new "
        "workdir.")


def _remove_interrupted_saves(path: str) -> None:
  """Folders of a teacher save that a kill interrupted (no teacher.json):
  no ledger holds their answers (`_refuse_lost_teacher` checked), and the
  caller holds the workdir lock, so nothing else is writing them."""
  parent, base = os.path.split(path)
  for name in os.listdir(parent) if os.path.isdir(parent) else ():
    if name.startswith(base + ".partial-"):
      shutil.rmtree(os.path.join(parent, name), ignore_errors=True)
  if os.path.isdir(path) and not os.path.exists(
      os.path.join(path, "remote.json")):
    shutil.rmtree(path)


def trained_teacher(ts: TeacherSettings, *, num_classes: int, image_shape,
                    train_images, train_labels, test_images, test_labels,
                    workdir: str, record: Dict[str, Any], mesh=None,
                    progress: bool = False, _alone: bool = False):
  """(model, variables, test accuracy) of the teacher trained on
  (train_images, train_labels) and saved in workdir/teacher, or restored
  from there. `record` (dataset name, ...) is stored in its teacher.json."""
  path = teacher_dir(workdir)
  settings = ts.training_fields()
  if multihost.is_distributed() and not _alone:
    # Process 0 trains and saves (or restores) the teacher; the others wait
    # for it and restore what it saved.
    if multihost.is_primary():
      out = trained_teacher(ts, num_classes=num_classes,
                            image_shape=image_shape, train_images=train_images,
                            train_labels=train_labels, test_images=test_images,
                            test_labels=test_labels, workdir=workdir,
                            record=record, mesh=mesh, progress=progress,
                            _alone=True)
      multihost.sync("jaxkd-teacher-saved")
      return out
    multihost.sync("jaxkd-teacher-saved")
    model, variables, meta = teacher_training.load_teacher(path)
    return model, variables, float(meta["accuracy"])
  if os.path.isfile(os.path.join(path, teacher_training.TEACHER_JSON)):
    old = teacher_training.read_teacher_meta(path).get("config")
    if old is not None and old != settings:
      raise JaxkdError(
          f"{path} holds a teacher trained with "
          f"{run_dir.diff(old, settings, 'teacher.')}; the ledgers "
          "hold its answers, so it is not retrained in place: use a new "
          "workdir.")
    model, variables, meta = teacher_training.load_teacher(path)
    _log(f"teacher {ts.model}: restored, test accuracy "
         f"{meta['accuracy']:.4f}")
    return model, variables, float(meta["accuracy"])
  _refuse_lost_teacher(workdir, path)
  _remove_interrupted_saves(path)
  t0 = time.time()
  model, variables, acc = teacher_training.train_teacher(
      ts.model, train_images, train_labels, test_images, test_labels,
      num_classes=num_classes, epochs=ts.epochs, batch_size=ts.batch_size,
      optimizer=ts.optimizer, learning_rate=ts.learning_rate, seed=ts.seed,
      mesh=mesh, progress=progress)
  teacher_training.save_teacher(
      path, ts.model, variables, accuracy=acc, num_classes=num_classes,
      input_shape=image_shape,
      extra={"config": settings, **record, "train_size": len(train_images)})
  _log(f"teacher {ts.model}: test accuracy {acc:.4f} "
       f"({time.time() - t0:.1f}s, {len(train_images)} training images), "
       f"saved in {path}")
  return model, variables, acc


def local_teacher(ts: TeacherSettings, dataset, train_images, train_labels,
                  test_images, test_labels, workdir: str, *, dataset_name: str,
                  mesh=None, progress: bool = False):
  """(model, variables, test accuracy): `saved_teacher` when
  `ts.checkpoint` is set, else `trained_teacher` (its teacher.json records
  `dataset_name`, the configured dataset)."""
  if ts.checkpoint:
    return saved_teacher(ts, dataset.num_classes, dataset.image_shape,
                         test_images, test_labels, mesh)
  return trained_teacher(
      ts, num_classes=dataset.num_classes, image_shape=dataset.image_shape,
      train_images=train_images, train_labels=train_labels,
      test_images=test_images, test_labels=test_labels, workdir=workdir,
      record={"dataset": dataset_name}, mesh=mesh, progress=progress)


PROBE_IMAGES = 8  # test images whose answers prove a remote teacher on resume
PROBE_TOLERANCE = 1e-4  # max abs difference of their probabilities


def _softmax(logits) -> np.ndarray:
  z = np.asarray(logits, np.float64)
  z = np.exp(z - z.max(1, keepdims=True))
  return z / z.sum(1, keepdims=True)


def _check_remote(fn, url, rec, test_images, path) -> None:
  """The teacher behind `url` must be the one that was measured (and paid
  the ledgers): it is asked again for the first PROBE_IMAGES test images,
  under a fresh request id (never replayed from the server's idempotency
  store), outside the ledgers and the budget; the model id it reports and
  its answers must match what remote.json recorded, else a one-line
  refusal before anything is paid. A record without probes (an older run)
  gets them now. Probes sent are counted in remote.json."""
  probe = np.asarray(test_images[:PROBE_IMAGES], np.float32)
  logits = np.asarray(fn(probe, request_id=f"probe-{time.time_ns()}"))
  have = _softmax(logits)
  model_id = getattr(fn, "model_id", None)
  where = f"teacher at {url}"
  if rec.get("model_id") and model_id and model_id != rec["model_id"]:
    raise JaxkdError(
        f"{where} reports model {model_id}, but this run's ledgers were paid "
        f"by model {rec['model_id']} ({path}); nothing was paid. Point "
        "teacher.url at the original teacher, or use a new workdir.")
  want = rec.get("probe_probs")
  if want is not None:
    want = np.asarray(want, np.float64)
    if (have.shape != want.shape
        or float(np.max(np.abs(have - want))) > PROBE_TOLERANCE):
      diff = (float(np.max(np.abs(have - want))) if have.shape == want.shape
              else f"shape {have.shape} vs {want.shape}")
      raise JaxkdError(
          f"{where} answers the {len(probe)} probe images differently from "
          f"when this run started (max difference {diff}; {path}): another "
          "model is behind the URL; nothing was paid. Point teacher.url at "
          "the original teacher, or use a new workdir.")
  rec = dict(rec, probes_sent=int(rec.get("probes_sent", 0)) + len(probe))
  if want is None:
    rec["probe_probs"] = have.tolist()
    rec["model_id"] = rec.get("model_id") or model_id
  write_json_atomic(path, rec)


def remote_teacher(ts: TeacherSettings, test_images, test_labels,
                   workdir: str, num_classes: int, dataset_name: str
                   ) -> Tuple[Callable[..., np.ndarray], float]:
  """(teacher_fn, test accuracy) for the teacher at `ts.url`.

  The accuracy (the success-rate denominator) is measured once, by sending
  the test split outside the ledger and the budget, and kept in
  workdir/teacher/remote.json for resumed runs, with the model id the
  server reports and the answers on the first test images: a resume asks
  for those again and refuses a teacher that answers otherwise
  (`_check_remote`).
  """
  from jaxkd.http_teacher import http_teacher
  url = ts.url
  # Process 0 alone calls the teacher (in a multi-process run).
  fn = multihost.primary_teacher(
      http_teacher(url, api_key_file=ts.api_key_file or None))
  path = os.path.join(teacher_dir(workdir), "remote.json")
  if multihost.broadcast_object(os.path.exists(path)):
    with open(path) as f:
      rec = json.load(f)
    acc = float(rec["accuracy"])
    _check_remote(fn, url, rec, test_images, path)
    _log(f"teacher at {url}: test accuracy {acc:.4f} (recorded; "
         f"{PROBE_IMAGES} probe answers match)")
    return fn, acc
  x, y = test_images, test_labels
  logits = np.concatenate([fn(x[i:i + 256], request_id=f"test-accuracy-{i}")
                           for i in range(0, len(x), 256)])
  if logits.shape[1] != num_classes:
    raise JaxkdError(f"teacher at {url} answers {logits.shape[1]} classes, "
                     f"{dataset_name} has {num_classes}; nothing was paid.")
  acc = float(np.mean(logits.argmax(1) == y))
  write_json_atomic(path, {"url": url, "accuracy": acc,
                           "test_images": len(x),
                           "model_id": getattr(fn, "model_id", None),
                           "probe_probs": _softmax(
                               logits[:PROBE_IMAGES]).tolist(),
                           "probes_sent": 0})
  _log(f"teacher at {url}: test accuracy {acc:.4f} ({len(x)} test images "
       "sent once, outside the budget)")
  return fn, acc
