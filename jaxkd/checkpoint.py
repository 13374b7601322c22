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

import os
from typing import Any, Dict, Optional, Tuple

import jax
import orbax.checkpoint as ocp


class Checkpointer:
  """Thin wrapper over `ocp.CheckpointManager` keyed by integer steps."""

  def __init__(self, directory: str, max_to_keep: int = 2):
    self.directory = os.path.abspath(directory)
    self._mngr = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep,
                                             create=True))

  def latest_step(self) -> Optional[int]:
    return self._mngr.latest_step()

  def save(self, step: int, state: Any, meta: Dict[str, Any]) -> None:
    """Saves pytree `state` and JSON-able `meta` at `step`, and waits."""
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
    out = self._mngr.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
    return out["state"], out["meta"]

  def close(self) -> None:
    self._mngr.close()
