"""Training, saving and loading a teacher: the step before distillation.

    model, variables, acc = train_teacher("lenet5", images, labels,
                                          test_images, test_labels)
    save_teacher("runs/my_teacher", "lenet5", variables, accuracy=acc,
                 num_classes=10, input_shape=images.shape[1:])
    model, variables, meta = load_teacher("runs/my_teacher")

A saved teacher is a folder: an orbax checkpoint of the model variables
(step 0) and `teacher.json` next to it with the model name, num_classes,
input shape (H, W, C), test accuracy and the training settings. Anything
that knows the model registry (`jaxkd.models.get_model`) can rebuild the
module and restore the variables from it; `python -m jaxkd.main
--mode=teacher` writes one, and `--config.teacher.checkpoint=PATH` makes a
run use it instead of training its own.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from typing import Any, Dict, Optional, Sequence, Tuple

import jax
import numpy as np

from jaxkd import train
from jaxkd.checkpoint import Checkpointer, write_json_atomic
from jaxkd.models import get_model, init_model
from jaxkd.validation import JaxkdError

TEACHER_JSON = "teacher.json"


def train_teacher(model_name: str, images: np.ndarray, labels: np.ndarray,
                  test_images: Optional[np.ndarray] = None,
                  test_labels: Optional[np.ndarray] = None, *,
                  num_classes: Optional[int] = None, epochs: int = 30,
                  batch_size: int = 64, optimizer: str = "adam",
                  learning_rate: float = 3e-3, seed: int = 0, mesh=None,
                  progress: bool = False
                  ) -> Tuple[Any, Dict[str, Any], float]:
  """Trains a registered model on (images, integer labels) with hard-label
  cross-entropy and a cosine schedule.

  Args:
    model_name: a name in `jaxkd.models.MODELS` (e.g. "lenet5").
    images: [N, H, W, C] float32 in [0, 1].
    labels: [N] int class labels.
    test_images, test_labels: evaluation set for the returned accuracy
      (NaN when not given).
    num_classes: default max label + 1.
    epochs, batch_size, optimizer, learning_rate, seed: training settings.

  Returns:
    (model, variables, test accuracy).
  """
  labels = np.asarray(labels)
  if num_classes is None:
    num_classes = int(labels.max(initial=0)) + 1
  model = get_model(model_name, num_classes)
  steps_per_epoch = -(-len(images) // batch_size)
  tx = train.make_optimizer(optimizer, learning_rate, schedule="cosine",
                            total_steps=epochs * steps_per_epoch)
  state = train.create_train_state(model, jax.random.key(seed),
                                   np.shape(images)[1:], tx)
  state, _ = train.fit(model, state, images, labels, epochs=epochs,
                       batch_size=batch_size, seed=seed,
                       loss_fn=train.make_loss_fn("hard_ce"), mesh=mesh,
                       progress=progress, desc=f"teacher {model_name}")
  variables = jax.device_get(state.variables)
  acc = float("nan")
  if test_images is not None:
    acc = train.accuracy(model, variables, test_images, test_labels,
                         mesh=mesh)
  return model, variables, acc


def save_teacher(path: str, model_name: str, variables: Dict[str, Any], *,
                 accuracy: float, num_classes: int,
                 input_shape: Sequence[int],
                 extra: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
  """Writes the orbax checkpoint of `variables` and `path/teacher.json`.

  The checkpoint's state is the variables dict ({"params", maybe
  "batch_stats"}) and its metadata the same dict as teacher.json, so
  `jaxkd.serve_teacher` can serve the folder too. Returns the metadata
  written (model, num_classes, input_shape, accuracy, config: the training
  config, at least {"model": ...}, and `extra`).
  """
  meta = {"model": model_name, "num_classes": int(num_classes),
          "input_shape": [int(d) for d in input_shape],
          "accuracy": float(accuracy),
          "config": {"model": model_name}}  # where serve_teacher looks
  meta.update(extra or {})
  check_registry_name(model_name, path)
  path = os.path.abspath(os.fspath(path))
  if os.path.isdir(path) and os.listdir(path):
    raise JaxkdError(
        f"{path} already holds files; save a teacher into a new or empty "
        "folder.")
  # Written whole in a sibling folder, then renamed: a kill leaves either
  # no teacher or a complete one (checkpoint and teacher.json).
  partial = f"{path}.partial-{os.getpid()}"
  shutil.rmtree(partial, ignore_errors=True)
  ckpt = Checkpointer(partial, max_to_keep=1)
  try:
    ckpt.save(0, jax.device_get(variables), meta)
  finally:
    ckpt.close()
  write_json_atomic(os.path.join(partial, TEACHER_JSON), meta)
  if os.path.isdir(path):
    os.rmdir(path)  # empty (checked above)
  os.replace(partial, path)
  return meta


def check_registry_name(model_name: str, where: str = "") -> None:
  """A saved teacher names its model from the registry, never by import
  path: loading a teacher is reading data, not running code."""
  if not isinstance(model_name, str) or ":" in model_name:
    raise JaxkdError(
        f"{where or 'teacher'}: model {model_name!r} is not a registered "
        "name; saved teachers name models from the registry only (register "
        "it with jaxkd.models.register_model and use that name).")


def teacher_folder(path: str) -> str:
  """The saved teacher at `path`: the folder itself, or, for a job's
  workdir, its `teacher/` folder."""
  path = os.fspath(path)
  inner = os.path.join(path, "teacher")
  if not os.path.isfile(os.path.join(path, TEACHER_JSON)) and os.path.isfile(
      os.path.join(inner, TEACHER_JSON)):
    return inner
  return path


def read_teacher_meta(path: str) -> Dict[str, Any]:
  """The `teacher.json` of a saved teacher (a teacher folder or a job's
  workdir); JaxkdError if there is none."""
  path = teacher_folder(path)
  meta_path = os.path.join(path, TEACHER_JSON)
  if not os.path.isfile(meta_path):
    raise JaxkdError(
        f"{path}: no saved teacher ({TEACHER_JSON} missing); write one with "
        "python -m jaxkd.main --mode=teacher or save_teacher(...).")
  try:
    with open(meta_path) as f:
      meta = json.load(f)
  except (OSError, ValueError) as e:
    raise JaxkdError(f"{meta_path}: unreadable ({e}).") from e
  missing = [k for k in ("model", "num_classes", "input_shape", "accuracy")
             if k not in meta]
  if missing:
    raise JaxkdError(f"{meta_path}: missing {', '.join(missing)}.")
  return meta


def load_teacher(path: str) -> Tuple[Any, Dict[str, Any], Dict[str, Any]]:
  """(model, variables, meta) of a teacher saved by `save_teacher`.

  Raises:
    JaxkdError: no teacher.json, an unknown model name, or a checkpoint
      that does not match the model.
  """
  path = teacher_folder(path)
  meta = read_teacher_meta(path)
  check_registry_name(meta["model"], os.path.join(os.fspath(path),
                                                  TEACHER_JSON))
  model = get_model(meta["model"], int(meta["num_classes"]))
  target = init_model(model, jax.random.key(0), tuple(meta["input_shape"]))
  ckpt = Checkpointer(path, max_to_keep=1)
  try:
    if ckpt.latest_step() is None:
      raise JaxkdError(f"{path}: {TEACHER_JSON} but no checkpoint.")
    try:
      variables, _ = ckpt.restore(target)
    except (ValueError, KeyError, TypeError) as e:
      raise JaxkdError(
          f"{path}: the checkpoint does not match model {meta['model']!r} "
          f"with input {tuple(meta['input_shape'])} ({type(e).__name__})."
      ) from e
  finally:
    ckpt.close()
  return model, variables, meta


def check_teacher_fits(meta: Dict[str, Any], num_classes: int,
                       input_shape: Sequence[int], path: str = "") -> None:
  """A loaded teacher must answer for the data's classes and image shape."""
  if int(meta["num_classes"]) != int(num_classes):
    raise JaxkdError(
        f"teacher {path} has {meta['num_classes']} classes but the data has "
        f"{num_classes}.")
  if tuple(meta["input_shape"]) != tuple(input_shape):
    raise JaxkdError(
        f"teacher {path} takes images {tuple(meta['input_shape'])} but the "
        f"data's are {tuple(input_shape)}.")


def model_id(variables) -> str:
  """A teacher's identity: 16 hex digits of sha256 over its variables'
  leaves in key-path order (each leaf's path, dtype and shape, then its
  bytes, C order). The ledger records it; `serve_teacher` reports it."""
  h = hashlib.sha256()
  leaves = jax.tree_util.tree_flatten_with_path(variables)[0]
  for path, leaf in sorted(((jax.tree_util.keystr(p), leaf)
                            for p, leaf in leaves), key=lambda t: t[0]):
    a = np.ascontiguousarray(np.asarray(leaf))
    h.update(f"{path}|{a.dtype.str}|{a.shape};".encode())
    h.update(a.tobytes())
  return h.hexdigest()[:16]
