"""A job's run directory: its layout and the changed-config guard.

  workdir/config.json              the settings that produced this directory
  workdir/teacher/                 the trained teacher (orbax checkpoint +
                                   teacher.json; `teacher_training`), or
                                   remote.json for a teacher at a URL
  workdir/<strategy>/seed<s>/      ledger.sqlite, checkpoints/, rounds.json
  workdir/<method>/seed<s>.json    UNIX job: one finished (method, seed); a
                                   resumed job restores it, not re-trains
  workdir/results.json, workdir/curve.png

A resume with settings that change results (steps, optimizer, loss, lr,
temperature, teacher, student, split, budget, rounds, dataset, ...) is
refused with a one-line diff unless `resume_with_changes=True`, which is
then recorded in results.json.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
from typing import Any, Dict, Iterator, List, Optional

try:
  import fcntl
except ImportError:  # not POSIX: no cross-process lock
  fcntl = None

from jaxkd.checkpoint import write_json_atomic
from jaxkd.validation import JaxkdError

CONFIG_JSON = "config.json"
# Fields that do not change any result: never part of the resume check.
RESUME_FREE = ("progress", "resume_with_changes", "strategies", "seeds",
               "data_dir", "unix.methods", "_accepted_changes",
               "data_verify_md5", "allow_overlap", "teacher.api_key_file")


def run_dirname(name: str) -> str:
  """A strategy's directory name: import paths ('pkg.mod:attr') and other
  characters that could leave the workdir become '_'."""
  out = re.sub(r"[^A-Za-z0-9_.-]", "_", name).strip(".")
  return out or "_"


def run_path(workdir: str, name: str, seed: int) -> str:
  """workdir/<name>/seed<seed>: an active run's folder (its rounds.json);
  with ".json" appended, a finished UNIX run's record."""
  return os.path.join(workdir, run_dirname(name), f"seed{seed}")


def plain(tree: Any) -> Any:
  """JSON-able copy of settings or a dict (tuples -> lists)."""
  if dataclasses.is_dataclass(tree):
    tree = dataclasses.asdict(tree)
  return json.loads(json.dumps(tree, default=str))


def _flat(tree, prefix=""):
  out = {}
  for k, v in tree.items():
    if isinstance(v, dict):
      out.update(_flat(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def diff(old: Dict[str, Any], new: Dict[str, Any], prefix: str = "") -> str:
  """'key old -> new, ...' over the flattened keys that differ."""
  a, b = _flat(old, prefix), _flat(new, prefix)
  keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
  return ", ".join(f"{k} {a.get(k, '<unset>')!r} -> {b.get(k, '<unset>')!r}"
                   for k in keys)


def config_changes(old: Dict[str, Any], new: Dict[str, Any],
                   defaults: Optional[Dict[str, Any]] = None) -> str:
  """One-line diff of the result-changing keys of two config dicts ('' if
  none); keys in `RESUME_FREE` (progress, strategies, seeds, ...) may
  change freely, and a key `old` lacks (a setting added since it was
  written) is no change while `new` holds its default from `defaults`."""
  strip = lambda d: {k: v for k, v in _flat(plain(d)).items()
                     if not any(k == f or k.startswith(f + ".")
                                for f in RESUME_FREE)}
  a, b = strip(old), strip(new)
  base = _flat(plain(defaults or {}))
  for k in list(b):
    if k not in a and k in base and b[k] == base[k]:
      del b[k]
  return diff(a, b)


def check_resume(settings: Any, workdir: str) -> List[str]:
  """Compares `settings` with workdir/config.json and writes it. Returns
  the accepted changes (recorded in results.json); a result-changing
  difference is refused unless `settings.resume_with_changes`."""
  path = os.path.join(workdir, CONFIG_JSON)
  new = plain(settings)
  accepted = []
  old = None
  if os.path.exists(path):
    with open(path) as f:
      old = json.load(f)
  elif has_outputs(workdir):
    # The config is part of every checkpoint too: a deleted config.json
    # does not turn the guard off.
    old = checkpointed_config(workdir)
    if old is None and not settings.resume_with_changes:
      raise JaxkdError(
          f"{workdir} holds a run but its {CONFIG_JSON} is missing, so its "
          "settings cannot be checked; restore the file, rerun with "
          "--config.resume_with_changes=True to accept these settings, or "
          "use a new workdir.")
  if old is not None:
    changes = config_changes(old, new, type(settings)())
    if changes:
      if not settings.resume_with_changes:
        raise JaxkdError(
            f"{workdir} was run with another config ({changes}); rerun with "
            "--config.resume_with_changes=True to accept, or use a new "
            "workdir.")
      accepted = [changes] + list(old.get("_accepted_changes", []))
  new["_accepted_changes"] = accepted
  write_json_atomic(path, new)
  return accepted


def checkpointed_config(workdir: str) -> Optional[Dict[str, Any]]:
  """The job config the latest checkpoint of any run in `workdir` recorded
  (`jaxkd.loop.run_loop(config=)`), or None."""
  from jaxkd.checkpoint import Checkpointer  # pylint: disable=g-import-not-at-top
  for ledger in run_ledgers(workdir):
    ckpt_dir = os.path.join(os.path.dirname(ledger), "checkpoints")
    if not os.path.isdir(ckpt_dir):
      continue
    ckpt = Checkpointer(ckpt_dir)
    try:
      meta = ckpt.read_meta()
    finally:
      ckpt.close()
    if meta and isinstance(meta.get("config"), dict):
      return meta["config"]
  return None


def run_ledgers(workdir: str) -> List[str]:
  """The run ledgers (workdir/<name>/seed<s>/ledger.sqlite) of a workdir."""
  if not os.path.isdir(workdir):
    return []
  return [os.path.join(workdir, d, s, "ledger.sqlite")
          for d in sorted(os.listdir(workdir))
          if os.path.isdir(os.path.join(workdir, d)) and d != "teacher"
          for s in sorted(os.listdir(os.path.join(workdir, d)))
          if os.path.isfile(os.path.join(workdir, d, s, "ledger.sqlite"))]


LOCK_FILE = ".lock"


@contextlib.contextmanager
def workdir_lock(workdir: str) -> Iterator[None]:
  """Holds an exclusive lock on workdir/.lock while a job runs.

  Taken before anything else (teacher training included): a second process
  on the same workdir is refused in one line naming the first one's pid,
  instead of racing it to save the teacher or pay the same points. The
  kernel drops the lock when its process dies (even by SIGKILL), so a
  killed run can always be rerun. In a multi-process run process 0 holds
  it for all (the others share its run).
  """
  import jax  # pylint: disable=g-import-not-at-top
  if jax.distributed.is_initialized() and jax.process_index() != 0:
    yield
    return
  path = os.path.join(workdir, LOCK_FILE)
  try:
    os.makedirs(workdir, exist_ok=True)
    fh = open(path, "a+")
  except OSError as e:
    raise JaxkdError(f"workdir {workdir} cannot be used ({e.strerror}: "
                     f"{e.filename}); give a writable folder.") from None
  try:
    if fcntl is not None:
      try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
      except OSError:
        fh.seek(0)
        pid = fh.read().strip() or "unknown"
        raise JaxkdError(
            f"{workdir} is in use by another jaxkd process (pid {pid}); wait "
            "for it to finish or use another workdir.") from None
    fh.seek(0)
    fh.truncate()
    fh.write(str(os.getpid()))
    fh.flush()
    yield
  finally:
    fh.close()  # releases the lock


def has_outputs(workdir: str) -> bool:
  """The workdir holds a job's outputs (run ledgers or UNIX records): a
  missing config.json there is not a fresh start. (A saved teacher guards
  itself: its teacher.json records the settings it was trained with.)"""
  if not os.path.isdir(workdir):
    return False
  if run_ledgers(workdir):
    return True
  return any(f.startswith("seed") and f.endswith(".json")
             for d in os.listdir(workdir)
             if os.path.isdir(os.path.join(workdir, d))
             for f in os.listdir(os.path.join(workdir, d)))


def forget_config(workdir: str) -> None:
  """Removes workdir/config.json (a run refused before it paid anything);
  process 0 alone in a multi-process run."""
  import jax  # pylint: disable=g-import-not-at-top
  if jax.distributed.is_initialized() and jax.process_index() != 0:
    return
  try:
    os.remove(os.path.join(workdir, CONFIG_JSON))
  except FileNotFoundError:
    pass
