"""One process of a two-process jax.distributed run, started by
tests/test_multihost.py.

  python tests/multihost_worker.py PORT PROCESS_ID NUM_PROCESSES OUT MODE

Joins a CPU run on the coordinator localhost:PORT (gloo collectives), runs
MODE and writes what it saw to OUT/result_<PROCESS_ID>.json. The teacher
appends the id of every image it answers to OUT/teacher_<PROCESS_ID>.log
(flushed before it answers), so the parent counts real teacher calls.

Modes:
  paid_once: broadcast, broadcast_object, gather_rows (unequal slices),
    process_allgather, local-mesh scoring, and `primary_teacher` direct and
    under a TeacherOracle per process, a batch-size mismatch, a teacher
    failure on process 0, then `jaxkd.checkpoint.Checkpointer` save and
    restore of a NumPy pytree on every process.
  raw: the same teacher queries with the raw teacher on every process (each
    process pays); the parent's check must flag it.
  ckpt_primary: `jaxkd.checkpoint.Checkpointer` save and restore of a NumPy
    pytree on process 0 only (no orbax barrier waits for the others).
"""

import json
import os
import sys
import traceback

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from jaxkd import multihost  # noqa: E402

N_ROWS = 7  # gather_rows: slices of 3 and 4 rows over two processes
NUM_CLASSES = 3
FAIL_ID = 99  # the teacher raises on this image id


def images(ids) -> np.ndarray:
  """[k, 2, 2, 1] float32, image i filled with the value i (its id)."""
  ids = np.asarray(ids, np.float32)
  return np.broadcast_to(ids[:, None, None, None], (len(ids), 2, 2, 1)).copy()


def answers(x: np.ndarray) -> np.ndarray:
  v = x[:, 0, 0, 0]
  return np.stack([v, -v, 0.5 * v], 1).astype(np.float32)


class LoggingTeacher:
  """Logs the id of each image it answers to its process's log file."""

  accepts_request_id = True
  teacher_id = "logging-teacher"

  def __init__(self, log_path):
    self.log_path = log_path
    self.request_ids = []

  def __call__(self, x, request_id=None):
    ids = [int(v) for v in np.asarray(x)[:, 0, 0, 0]]
    if FAIL_ID in ids:
      raise RuntimeError(f"teacher down for image {FAIL_ID}")
    self.request_ids.append(request_id)
    with open(self.log_path, "a") as f:
      f.write("".join(f"{i}\n" for i in ids))
      f.flush()
      os.fsync(f.fileno())
    return answers(np.asarray(x))


def teacher_queries(teacher, out, pid, res):
  """Queries every mode shares: direct calls and a TeacherOracle."""
  from jaxkd.teacher import TeacherOracle
  res["attrs"] = [getattr(teacher, "teacher_id", None),
                  getattr(teacher, "accepts_request_id", False)]
  got = [teacher(images(range(0, 3)), request_id="r0"),
         teacher(images(range(3, 8)), request_id="r1")]
  res["direct"] = np.concatenate(got).tolist()
  oracle = TeacherOracle(teacher, images(range(20)), budget=20,
                         ledger_path=os.path.join(out, f"ledger_{pid}.sqlite"),
                         batch_size=4)
  a = oracle.query(np.arange(8, 13))
  b = oracle.query(np.arange(8, 14))  # only 13 is new
  res["oracle"] = np.concatenate([a, b]).tolist()
  res["oracle_spent"] = oracle.spent
  oracle.close()


def paid_once(out, pid, res):
  import jax
  import jax.numpy as jnp
  from jax.experimental import multihost_utils
  from jaxkd import parallel
  from jaxkd.validation import JaxkdError

  res["info"] = dict(
      process_count=jax.process_count(), process_index=jax.process_index(),
      local_devices=jax.local_device_count(), devices=jax.device_count(),
      collectives=jax.config.jax_cpu_collectives_implementation,
      distributed=multihost.is_distributed(), primary=multihost.is_primary())

  tree = {"a": np.arange(5, dtype=np.float32) * (pid + 1),
          "b": np.asarray([2 ** 40 + pid], np.int64),
          "c": np.asarray([-0.0 if pid == 0 else 1.0], np.float32)}
  got = multihost.broadcast(tree)
  res["broadcast"] = {k: v.tolist() for k, v in got.items()}
  res["broadcast_dtypes"] = {k: v.dtype.str for k, v in got.items()}
  res["broadcast_signbit"] = bool(np.signbit(got["c"][0]))
  res["object"] = multihost.broadcast_object(
      {"picks": [3, 1, 4], "round": 2} if pid == 0 else None)

  res["allgather"] = np.asarray(multihost_utils.process_allgather(
      np.asarray([pid, 10 + pid], np.int32))).tolist()

  # Scoring: each process scores its rows on its own devices; gather.
  start, stop = multihost.shard_range(N_ROWS)
  res["range"] = [start, stop]
  mesh = multihost.local_mesh()
  rows = np.arange(start, stop, dtype=np.float32)
  x, _ = parallel.shard_batch(mesh, rows)
  feats = jax.jit(lambda v: jnp.stack([v, v + 0.5], 1))(x)
  local = np.asarray(feats)[:stop - start]
  res["gather"] = multihost.gather_rows(local, N_ROWS).tolist()
  # Edge cases: an empty slice (n < processes), empty payloads.
  a, b = multihost.shard_range(1)
  res["gather_one"] = multihost.gather_rows(
      np.full((b - a, 2), 5.0, np.float32), 1).tolist()
  res["empty"] = [multihost.broadcast_bytes(b"" if pid == 0 else b"x"),
                  multihost.broadcast(np.zeros((0, 3), np.float32)).shape,
                  multihost.broadcast_object("" if pid == 0 else None)]
  res["empty"][0] = res["empty"][0].decode()
  try:  # the wrong number of rows on one process fails on every process
    multihost.gather_rows(local[:1] if pid == 1 else local, N_ROWS)
    res["gather_mismatch"] = None
  except JaxkdError as e:
    res["gather_mismatch"] = str(e)

  teacher = LoggingTeacher(os.path.join(out, f"teacher_{pid}.log"))
  wrapped = multihost.primary_teacher(teacher)
  teacher_queries(wrapped, out, pid, res)
  res["request_ids"] = teacher.request_ids

  try:  # lockstep broken: nobody pays, everybody raises
    wrapped(images([50, 51] if pid == 0 else [50, 51, 52]))
    res["mismatch"] = None
  except JaxkdError as e:
    res["mismatch"] = str(e)

  try:  # the teacher fails on process 0: the followers raise, not hang
    wrapped(images([FAIL_ID]))
    res["failure"] = None
  except Exception as e:  # noqa: BLE001
    res["failure"] = [type(e).__name__, str(e)]

  res["after_failure"] = wrapped(images([14])).tolist()
  checkpoint(out, pid, res, everyone=True)


def raw(out, pid, res):
  teacher = LoggingTeacher(os.path.join(out, f"teacher_{pid}.log"))
  teacher_queries(teacher, out, pid, res)
  res["after_failure"] = teacher(images([14])).tolist()
  multihost.sync("raw done")


def checkpoint(out, pid, res, everyone):
  from jaxkd.checkpoint import Checkpointer
  state = {"w": np.arange(6, dtype=np.float32).reshape(2, 3),
           "step": np.asarray(3, np.int32)}
  # Checkpointer writes on process 0 only and ties no barrier to the
  # others; they restore what process 0 wrote once it is written.
  if everyone or multihost.is_primary():
    ckpt = Checkpointer(os.path.join(out, "ckpt"))
    ckpt.save(1, state, {"round": 1})
    multihost.sync("checkpoint written") if everyone else None
    restored, meta = Checkpointer(os.path.join(out, "ckpt")).restore(state)
    ckpt.close()
    res["restored"] = {k: np.asarray(v).tolist() for k, v in restored.items()}
    res["meta"] = meta
  multihost.sync("checkpoint done")


def main():
  port, pid, count, out, mode = sys.argv[1:6]
  pid, count = int(pid), int(count)
  res = {"mode": mode, "ok": False}
  try:
    multihost.initialize(f"localhost:{port}", count, pid,
                         initialization_timeout=60)
    if mode == "paid_once":
      paid_once(out, pid, res)
    elif mode == "raw":
      raw(out, pid, res)
    elif mode == "ckpt_primary":
      checkpoint(out, pid, res, everyone=False)
    else:
      raise SystemExit(f"unknown mode {mode}")
    res["ok"] = True
  except Exception:  # noqa: BLE001 - the parent reads it
    res["error"] = traceback.format_exc()
  with open(os.path.join(out, f"result_{pid}.json"), "w") as f:
    json.dump(res, f)
  if not res["ok"]:
    os._exit(1)  # the others may never reach the shutdown barrier
  import jax
  jax.distributed.shutdown()  # a barrier: process 0 hosts the coordinator


if __name__ == "__main__":
  main()
