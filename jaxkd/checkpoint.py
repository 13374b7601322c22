"""Orbax checkpoints of a train state plus JSON metadata.

The round loop saves the student state (and a strategy's `extra` pytree)
with the round records after every round; the job also saves the teacher it
trained once (`workdir/teacher/`, with its test accuracy and config), since
the ledgers hold that teacher's paid answers and a resumed run must use the
same one.

Saves are synchronous (`wait_until_finished`) so a checkpoint exists on disk
before the loop moves on; a kill mid-save leaves the previous step intact
because orbax writes to a temporary directory and renames it atomically.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any, Dict, Optional, Tuple

import jax
import orbax.checkpoint as ocp

from jaxkd.validation import JaxkdError


def has_checkpoint(directory: str) -> bool:
  """True if `directory` holds a finished checkpoint step (a directory named
  by an integer; orbax writes a step under a temporary name and renames it
  when done). Creates nothing."""
  if not os.path.isdir(directory):
    return False
  return any(re.fullmatch(r"\d+", name)
             and os.path.isdir(os.path.join(directory, name))
             for name in os.listdir(directory))


class Checkpointer:
  """Thin wrapper over `ocp.CheckpointManager` keyed by integer steps."""

  def __init__(self, directory: str, max_to_keep: int = 2,
               recovery: Optional[str] = None):
    """`recovery`: what the error for an unreadable step tells the user to
    do (default: delete the step and resume from the one before)."""
    self.directory = os.path.abspath(directory)
    self.recovery = recovery
    # In a multi-process run every process reads on its own and only
    # process 0 writes (`save` is a no-op elsewhere): no orbax barrier ties
    # a save to the other processes.
    self._writer = not (jax.distributed.is_initialized()
                        and jax.process_index() != 0)
    opts = dict(max_to_keep=max_to_keep, create=True)
    if jax.distributed.is_initialized():
      me = jax.process_index()
      if self._writer:
        os.makedirs(self.directory, exist_ok=True)
      opts.update(create=False, multiprocessing_options=(
          ocp.options.MultiprocessingOptions(primary_host=me,
                                             active_processes={me})))
    self._mngr = ocp.CheckpointManager(
        self.directory, options=ocp.CheckpointManagerOptions(**opts))

  def latest_step(self) -> Optional[int]:
    return self._mngr.latest_step()

  def save(self, step: int, state: Any, meta: Dict[str, Any]) -> None:
    """Saves pytree `state` and JSON-able `meta` at `step`, and waits (on
    process 0 only in a multi-process run)."""
    if not self._writer:
      return
    self._mngr.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
        force=True)
    self._mngr.wait_until_finished()

  def restore(self, target: Any, step: Optional[int] = None
              ) -> Tuple[Any, Dict[str, Any]]:
    """Restores (state, meta); `target` is a pytree of the state's structure
    (concrete or `jax.ShapeDtypeStruct`s, possibly sharded)."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"No checkpoint in {self.directory}.")
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    try:
      out = self._mngr.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract),
          meta=ocp.args.JsonRestore()))
    except Exception as e:  # orbax/tensorstore/json errors of many types
      first = (str(e).strip().splitlines() or [""])[0][:200]
      raise JaxkdError(
          f"Checkpoint {os.path.join(self.directory, str(step))} cannot be "
          f"read ({type(e).__name__}: {first}). To recover, "
          f"{self._recovery()}.") from None
    if not isinstance(out["meta"], dict):
      raise JaxkdError(
          f"Checkpoint {os.path.join(self.directory, str(step))} has no "
          f"metadata. To recover, {self._recovery()}.")
    return out["state"], out["meta"]

  def read_meta(self, step: Optional[int] = None) -> Optional[Dict[str, Any]]:
    """The JSON meta of `step` (default the latest) without the state; None
    when there is no checkpoint or it cannot be read."""
    step = self.latest_step() if step is None else step
    if step is None:
      return None
    try:
      out = self._mngr.restore(step, args=ocp.args.Composite(
          meta=ocp.args.JsonRestore()))
    except Exception:  # pylint: disable=broad-except
      return None
    return out["meta"] if isinstance(out["meta"], dict) else None

  def _recovery(self) -> str:
    return self.recovery or (
        "delete that step directory: the run resumes from the step before "
        "(answers paid since stay in the ledger and are not paid again)")

  def close(self) -> None:
    self._mngr.close()


def write_json_atomic(path: str, obj: Any) -> None:
  """Writes `obj` as JSON to `path` via a temporary file and a rename, so a
  killed run never leaves a half-written file that looks finished. Every
  JSON a run writes (rounds.json, config.json, results.json, teacher.json,
  remote.json) goes through here. In a multi-process run only process 0
  writes (the others compute the same content)."""
  if jax.distributed.is_initialized() and jax.process_index() != 0:
    return
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=1, default=str)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)
