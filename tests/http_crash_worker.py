"""A resumable query loop over a TeacherOracle whose teacher is an HTTP
server, killed and resumed by tests/test_http_teacher.py.

  python tests/http_crash_worker.py URL LEDGER [--die-after-call N]

Runs ROUNDS rounds of PER_ROUND new pool indices (plus OVERLAP already paid
ones, free) through `jaxkd.http_teacher.http_teacher(URL)`. With
--die-after-call N it SIGKILLs its own process right after the N-th teacher
call returned, i.e. after the server answered and before the oracle
committed the batch. Prints "done <spent>" at the end.

The teacher is passed request ids the oracle gives it (an oracle with
write-ahead request ids calls `fn(images, request_id=...)` when
`fn.accepts_request_id`); an oracle that does not calls `fn(images)`, and
the worker then sends the fixed id "worker": the client's idempotency key
adds a digest of the images, so a resent batch gets its old key either way.
"""

import argparse
import os
import signal
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jaxkd.http_teacher import http_teacher  # noqa: E402
from jaxkd.teacher import TeacherOracle  # noqa: E402

ROUNDS, PER_ROUND, OVERLAP, POOL, BUDGET, BATCH = 4, 10, 3, 60, 60, 4


def pool_images() -> np.ndarray:
  return np.random.default_rng(0).random((POOL, 3, 3, 1)).astype(np.float32)


def teacher_weights() -> np.ndarray:
  return np.random.default_rng(1).normal(size=(9, 4)) * 3.0


def schedule(r: int) -> np.ndarray:
  perm = np.random.default_rng(2).permutation(POOL)
  old = perm[max(0, PER_ROUND * r - OVERLAP):PER_ROUND * r]
  new = perm[PER_ROUND * r:PER_ROUND * (r + 1)]
  return np.concatenate([old, new])


def run(url, ledger_path, die_after_call=0):
  client = http_teacher(url, timeout=5.0, backoff=0.01)
  calls = [0]

  def teacher(images, request_id=None):
    out = client(images, request_id=request_id or "worker")
    calls[0] += 1
    if calls[0] == die_after_call:  # answered, not yet committed
      os.kill(os.getpid(), signal.SIGKILL)
    return out
  teacher.accepts_request_id = True

  oracle = TeacherOracle(teacher, pool_images(), budget=BUDGET,
                         ledger_path=ledger_path, batch_size=BATCH)
  try:
    for r in range(ROUNDS):
      oracle.query(schedule(r), round=r)
  finally:
    oracle.close()
  print(f"done {oracle.spent}", flush=True)


if __name__ == "__main__":
  p = argparse.ArgumentParser()
  p.add_argument("url")
  p.add_argument("ledger")
  p.add_argument("--die-after-call", type=int, default=0)
  a = p.parse_args()
  run(a.url, a.ledger, a.die_after_call)
