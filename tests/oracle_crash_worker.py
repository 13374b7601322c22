"""A resumable query loop over a TeacherOracle, killed and resumed by
tests/test_teacher.py.

  python tests/oracle_crash_worker.py LEDGER LOG [--sleep S] [--die-at-call N]

Runs ROUNDS rounds; round r asks for 10 new pool indices plus 3 of the
previous round's (already paid, so free). After each round's answers are
committed it prints "committed <r> <spent>" and sleeps S seconds (the parent
SIGKILLs it there). The teacher appends the pool indices of every call to
LOG (flushed before it answers); with --die-at-call N it SIGKILLs its own
process on its N-th call after logging, i.e. with a batch in flight.
Re-running with the same LEDGER resumes: paid rounds are answered from the
ledger for free.
"""

import argparse
import os
import signal
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jaxkd.teacher import TeacherOracle  # noqa: E402

ROUNDS, PER_ROUND, OVERLAP, POOL, BUDGET, BATCH = 8, 10, 3, 100, 100, 6


def pool_images() -> np.ndarray:
  return np.random.default_rng(0).random((POOL, 3, 3, 1)).astype(np.float32)


def teacher_weights() -> np.ndarray:
  return np.random.default_rng(1).normal(size=(9, 4)) * 3.0


def schedule(r: int) -> np.ndarray:
  perm = np.random.default_rng(2).permutation(POOL)
  old = perm[max(0, PER_ROUND * r - OVERLAP):PER_ROUND * r]
  new = perm[PER_ROUND * r:PER_ROUND * (r + 1)]
  return np.concatenate([old, new])


class LoggingTeacher:
  """Linear teacher that logs the pool indices it is asked for."""

  def __init__(self, log_path, die_at_call=0):
    self.pool = pool_images().reshape(POOL, -1)
    self.w = teacher_weights()
    self.log_path = log_path
    self.die_at_call = die_at_call
    self.calls = 0

  def __call__(self, images):
    self.calls += 1
    flat = np.asarray(images, np.float32).reshape(len(images), -1)
    idx = [int(np.flatnonzero((self.pool == row).all(1))[0]) for row in flat]
    with open(self.log_path, "a") as f:
      f.write(" ".join(map(str, idx)) + "\n")
      f.flush()
    if self.calls == self.die_at_call:
      os.kill(os.getpid(), signal.SIGKILL)
    # Row by row so an answer never depends on its batch mates.
    return np.stack([row.astype(np.float64) @ self.w for row in flat])


def run(ledger_path, log_path, sleep=0.0, die_at_call=0, out=sys.stdout):
  oracle = TeacherOracle(LoggingTeacher(log_path, die_at_call), pool_images(),
                         budget=BUDGET, ledger_path=ledger_path,
                         batch_size=BATCH)
  try:
    for r in range(ROUNDS):
      oracle.query(schedule(r), round=r)
      print(f"committed {r} {oracle.spent}", file=out, flush=True)
      time.sleep(sleep)
  finally:
    oracle.close()
  print("done", file=out, flush=True)


if __name__ == "__main__":
  p = argparse.ArgumentParser()
  p.add_argument("ledger")
  p.add_argument("log")
  p.add_argument("--sleep", type=float, default=0.0)
  p.add_argument("--die-at-call", type=int, default=0)
  a = p.parse_args()
  run(a.ledger, a.log, a.sleep, a.die_at_call)
