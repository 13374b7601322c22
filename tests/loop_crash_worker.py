"""The real round loop (`jaxkd.loop.run_loop`) on tiny data, killed with
SIGKILL at a chosen point by tests/test_ledger_faults.py.

  python tests/loop_crash_worker.py RUN_DIR LOG [--kill POINT:N]

POINT:N is one of
  teacher:N  the teacher is called for the N-th time and dies before it
             answers (the batch's intent is already committed as pending);
  answer:N   the teacher answered its N-th call, the process dies before
             `TeacherOracle._commit` (the teacher was paid, the ledger
             does not have the answers);
  commit:N   right after the N-th `TeacherOracle._commit`;
  train:R    in round R's training (`loop.fit_student`), after the steps,
             before the state is returned;
  save:R     in the middle of round R's checkpoint (`Checkpointer.save`):
             orbax has started writing, the process dies before it ends.

The teacher is a fixed linear map over 8x8x1 images that appends one line
per call to LOG, "<request id> <pool index> ...", flushed and fsynced before
it answers: an account of what was paid that is independent of the ledger.
It accepts request ids (`accepts_request_id`), as a paid API would. The
oracle is opened as `jaxkd.experiment` opens it: `must_exist` when the run
directory has checkpoints. `run()` is also imported and called in-process
by the tests (reference and resumed runs).
"""

import argparse
import json
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

N_INIT, N_POOL, N_TEST, C = 6, 24, 16, 4
ROUNDS, PER_ROUND, ORACLE_BATCH = 2, 4, 3
# Teacher calls: round 0 [3, 3], round 1 [3, 1], round 2 [3, 1].


def data():
  rng = np.random.default_rng(3)
  pool = rng.random((N_INIT + N_POOL, 8, 8, 1)).astype(np.float32)
  w = rng.normal(size=(64, C)) * 3.0
  test_x = rng.random((N_TEST, 8, 8, 1)).astype(np.float32)
  test_y = np.argmax(test_x.reshape(N_TEST, -1) @ w, 1)
  return pool, w, test_x, test_y


def _die():
  os.kill(os.getpid(), signal.SIGKILL)


class LoggingTeacher:
  """Linear teacher; logs "<request id> <pool index>..." per call."""
  accepts_request_id = True

  def __init__(self, pool, w, log_path, die_at_call=0):
    self.pool = pool.reshape(len(pool), -1)
    self.w, self.log_path, self.die_at_call = w, log_path, die_at_call
    self.calls = 0

  def __call__(self, images, request_id):
    self.calls += 1
    if self.calls == self.die_at_call:
      _die()  # before answering: not paid
    flat = np.asarray(images, np.float32).reshape(len(images), -1)
    idx = [int(np.flatnonzero((self.pool == row).all(1))[0]) for row in flat]
    with open(self.log_path, "a") as f:
      f.write(" ".join([request_id] + [str(i) for i in idx]) + "\n")
      f.flush()
      os.fsync(f.fileno())
    return flat.astype(np.float64) @ self.w


def settings():
  from jaxkd import loop
  return loop.LoopSettings(rounds=ROUNDS, per_round=PER_ROUND, train_steps=2,
                           batch_size=4, seed=0)


def run(run_dir, log_path, *, die_at_call=0, must_exist=None, log=None,
        pool_file=None):
  """One run (or resume) in `run_dir`; returns the round records. With
  `pool_file`, the oracle reads the same pool from that `.npy` (written
  once), memory-mapped, as a pool on disk."""
  from jaxkd import loop
  from jaxkd.checkpoint import has_checkpoint
  from jaxkd.models import get_model
  from jaxkd.teacher import TeacherOracle
  pool, w, test_x, test_y = data()
  if must_exist is None:  # as jaxkd.experiment opens a run's ledger
    must_exist = has_checkpoint(os.path.join(run_dir, "checkpoints"))
  source = pool
  if pool_file:
    from jaxkd.data.sources import NpySource
    if not os.path.exists(pool_file):
      np.save(pool_file, pool)
    source = NpySource(pool_file)
  oracle = TeacherOracle(
      LoggingTeacher(pool, w, log_path, die_at_call), source,
      budget=N_INIT + ROUNDS * PER_ROUND,
      ledger_path=os.path.join(run_dir, "ledger.sqlite"),
      batch_size=ORACLE_BATCH, must_exist=must_exist)
  try:
    return loop.run_loop(
        strategy="entropy", student=get_model("mlp", C, hidden=(8,)),
        oracle=oracle, initial_indices=np.arange(N_INIT),
        candidate_indices=N_INIT + np.arange(N_POOL), test_images=test_x,
        test_labels=test_y, teacher_accuracy=1.0, settings=settings(),
        workdir=run_dir, progress=False, log=log or (lambda m: None))
  finally:
    oracle.close()


def install_kill(point: str, n: int) -> int:
  """Patches the functions the loop really calls; returns die_at_call."""
  from jaxkd import loop
  from jaxkd.checkpoint import Checkpointer
  from jaxkd.teacher import TeacherOracle
  if point == "teacher":
    return n
  if point in ("answer", "commit"):
    real, count = TeacherOracle._commit, [0]

    def commit(self, *args, **kw):
      count[0] += 1
      if point == "answer" and count[0] == n:
        _die()
      out = real(self, *args, **kw)
      if point == "commit" and count[0] == n:
        _die()
      return out
    TeacherOracle._commit = commit
  elif point == "train":
    real_fit = loop.fit_student

    def fit_student(*args, desc="", **kw):
      state = real_fit(*args, desc=desc, **kw)
      if desc == f"r{n}":
        _die()
      return state
    loop.fit_student = fit_student
  elif point == "save":
    real_save = Checkpointer.save

    def save(self, step, state, meta):
      if step != n:
        return real_save(self, step, state, meta)
      import orbax.checkpoint as ocp
      self._mngr.save(step, args=ocp.args.Composite(
          state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
          force=True)  # orbax writes in the background; die before the end,
      # once its temporary step folder exists (on a loaded machine the
      # background writer may not have begun when save() returns).
      deadline = time.time() + 60
      while time.time() < deadline and not any(
          s.startswith(f"{step}.") for s in os.listdir(self.directory)):
        time.sleep(0.001)
      _die()
    Checkpointer.save = save
  else:
    raise SystemExit(f"unknown kill point {point!r}")
  return 0


def main():
  p = argparse.ArgumentParser()
  p.add_argument("run_dir")
  p.add_argument("log")
  p.add_argument("--kill", default="")
  p.add_argument("--pool-file", default="")
  a = p.parse_args()
  import jax
  jax.config.update("jax_default_matmul_precision", "highest")  # as conftest
  die_at_call = 0
  if a.kill:
    point, n = a.kill.split(":")
    die_at_call = install_kill(point, int(n))
  records = run(a.run_dir, a.log, die_at_call=die_at_call,
                log=lambda m: print(m, flush=True),
                pool_file=a.pool_file or None)
  print(json.dumps([r["round"] for r in records]), flush=True)


if __name__ == "__main__":
  main()
