"""Budgets in money: per-answer costs in the ledger, the money check before
the teacher is called, a real SIGKILL between the teacher call and the
commit, the migration of old ledgers and the meta of a priced ledger.

The kill test runs this file as a worker subprocess:

  python tests/test_money_budget.py LEDGER LOG [--die-at-call N] [--ids]

Round r asks for 10 new pool indices plus 3 already paid (free) at price
PRICE each, until the money budget refuses a round. The teacher appends
"<request id or -> <pool index>..." to LOG per call (flushed before it
answers, i.e. before it charges), so what it charged is counted from its
own log, independently of the ledger.
"""

import argparse
import dataclasses
import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from jaxkd.teacher import TeacherOracle  # noqa: E402
from jaxkd.validation import BudgetExceededError, JaxkdError  # noqa: E402

POOL, BATCH, BUDGET, ROUNDS, PER_ROUND, OVERLAP = 100, 6, 100, 8, 10, 3
PRICE, MONEY = 0.5, 25.0


def pool_images() -> np.ndarray:
  return np.random.default_rng(0).random((POOL, 3, 3, 1)).astype(np.float32)


def schedule(r: int) -> np.ndarray:
  perm = np.random.default_rng(2).permutation(POOL)
  old = perm[max(0, PER_ROUND * r - OVERLAP):PER_ROUND * r]
  new = perm[PER_ROUND * r:PER_ROUND * (r + 1)]
  return np.concatenate([old, new])


class LoggingTeacher:
  """Linear teacher that logs each call's request id and pool indices, and
  SIGKILLs its process on call `die_at_call` after logging (answered and
  charged, never committed)."""

  def __init__(self, log_path=None, die_at_call=0, ids=False):
    self.pool = pool_images().reshape(POOL, -1)
    self.w = np.random.default_rng(1).normal(size=(9, 4)) * 3.0
    self.log_path, self.die_at_call = log_path, die_at_call
    self.accepts_request_id = ids
    self.calls = 0

  def __call__(self, images, request_id="-"):
    self.calls += 1
    flat = np.asarray(images, np.float32).reshape(len(images), -1)
    hits = [np.flatnonzero((self.pool == row).all(1)) for row in flat]
    idx = [int(h[0]) if len(h) else -1 for h in hits]  # -1: not a pool image
    if self.log_path:
      with open(self.log_path, "a") as f:
        f.write(" ".join([request_id] + [str(i) for i in idx]) + "\n")
        f.flush()
        os.fsync(f.fileno())
    if self.calls == self.die_at_call:
      os.kill(os.getpid(), signal.SIGKILL)
    return flat.astype(np.float64) @ self.w


def worker(ledger_path, log_path, die_at_call=0, ids=False):
  oracle = TeacherOracle(LoggingTeacher(log_path, die_at_call, ids),
                         pool_images(), budget=BUDGET, ledger_path=ledger_path,
                         batch_size=BATCH, price=PRICE, money_budget=MONEY)
  try:
    for r in range(ROUNDS):
      try:
        oracle.query(schedule(r), round=r)
      except BudgetExceededError as e:
        print(f"refused {r}: {e}", flush=True)
        break
      print(f"committed {r} {oracle.money_spent}", flush=True)
  finally:
    oracle.close()
  print("done", flush=True)


# --------------------------------------------------------------- tests ---


def _oracle(tmp_path, teacher=None, name="ledger.sqlite", **kw):
  kw.setdefault("budget", BUDGET)
  return TeacherOracle(teacher or LoggingTeacher(), pool_images(),
                       ledger_path=str(tmp_path / name), batch_size=BATCH,
                       **kw)


def test_constant_price_recorded_per_answer(tmp_path):
  oracle = _oracle(tmp_path, price=0.25)
  oracle.query(np.array([3, 1, 4, 1, 5, 9, 2]), round=0)  # 6 unique
  oracle.query(np.array([3, 6]), round=1)  # 1 new
  costs = [e["cost"] for e in oracle.entries()]
  assert costs == [0.25] * 7
  assert oracle.money_spent == 0.25 * 7
  assert oracle.money_remaining is None  # no money limit
  oracle.close()
  reopened = _oracle(tmp_path, price=0.25)
  assert reopened.money_spent == 0.25 * 7
  reopened.close()


def test_per_item_price_recorded_per_answer(tmp_path):
  pool = pool_images()

  def by_brightness(key, image):
    return 1.0 + float(np.sum(image))

  oracle = _oracle(tmp_path, price=by_brightness, money_budget=1e6)
  idx = np.array([7, 2, 9, 2, 11, 13, 17, 19, 23])
  oracle.query(idx, round=0)
  oracle.query_mixup(np.array([[1, 4]]), np.array([0.3]), round=1)
  got = {e["key"]: e["cost"] for e in oracle.entries()}
  want = {f"p:{i}": 1.0 + float(pool[i].astype(np.float64).sum())
          for i in set(idx.tolist())}
  mix = 0.3 * pool[1].astype(np.float64) + 0.7 * pool[4].astype(np.float64)
  want["mix:1:4:0.300000"] = 1.0 + float(mix.sum())
  assert got.keys() == want.keys()
  for k in want:
    assert abs(got[k] - want[k]) < 1e-5, k
  assert abs(oracle.money_spent - sum(want.values())) < 1e-4
  assert abs(oracle.money_remaining - (1e6 - sum(want.values()))) < 1e-4
  oracle.close()


def test_query_over_the_money_left_is_refused_before_the_teacher(tmp_path):
  teacher = LoggingTeacher()
  oracle = _oracle(tmp_path, teacher, price=0.5, money_budget=2.0)
  oracle.query(np.arange(3), round=0)  # 1.5 spent
  calls = teacher.calls
  try:
    oracle.query(np.arange(5), round=1)  # 2 new: 1.0 > 0.5 left
  except BudgetExceededError as e:
    msg = str(e)
  else:
    raise AssertionError("not refused")
  assert "\n" not in msg and "0.5" in msg and "1" in msg, msg
  assert teacher.calls == calls and oracle.spent == 3
  assert oracle.money_spent == 1.5
  oracle.query(np.arange(4), round=1)  # 1 new: exactly the money left
  oracle.query(np.arange(4), round=2)  # all paid: free
  assert oracle.money_remaining == 0.0 and teacher.calls == calls + 1
  oracle.close()


def _run_worker(*args):
  return subprocess.run([sys.executable, os.path.abspath(__file__),
                         *map(str, args)], capture_output=True, text=True,
                        timeout=300)


def _charged(log_path, ids):
  """(answers charged, answers sent) from the teacher's own log: a teacher
  with idempotency keys charges each request id once, one without charges
  every call."""
  with open(log_path) as f:
    calls = [line.split() for line in f if line.strip()]
  sent = sum(len(c) - 1 for c in calls)
  if not ids:
    return sent, sent, calls
  first = {}
  for c in calls:
    first.setdefault(c[0], len(c) - 1)
  return sum(first.values()), sent, calls


def test_kill_between_teacher_and_commit_never_overspends(tmp_path):
  for ids in (True, False):
    ledger = tmp_path / f"ledger_{ids}.sqlite"
    log = tmp_path / f"log_{ids}.txt"
    extra = ["--ids"] if ids else []
    # Round 0: calls 1-2 (6 + 4); round 1's first batch (call 3) is
    # answered, charged and killed before its commit.
    killed = _run_worker(ledger, log, "--die-at-call", 3, *extra)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    oracle = _oracle(tmp_path, LoggingTeacher(), name=ledger.name,
                     price=PRICE, money_budget=MONEY)
    (req,) = oracle.pending()
    assert len(req.keys) == BATCH and oracle.spent == PER_ROUND
    charged, _, _ = _charged(log, ids)
    assert charged == PER_ROUND + BATCH
    assert oracle.money_spent == charged * PRICE  # pending counted
    oracle.close()

    resumed = _run_worker(ledger, log, *extra)
    assert resumed.returncode == 0, resumed.stderr
    assert "refused" in resumed.stdout and resumed.stdout.endswith("done\n")
    charged, sent, calls = _charged(log, ids)
    oracle = _oracle(tmp_path, LoggingTeacher(), name=ledger.name,
                     price=PRICE, money_budget=MONEY)
    rows = oracle.entries()
    keys = [e["key"] for e in rows]
    assert len(keys) == len(set(keys)) and oracle.pending() == []
    # What the teacher charged never exceeds the money budget, and the
    # ledger's money is exactly that charge.
    assert charged * PRICE <= MONEY
    assert abs(oracle.money_spent - charged * PRICE) < 1e-9
    assert sum(e["cost"] for e in rows) == len(rows) * PRICE
    logged = {f"p:{i}" for c in calls for i in c[1:]}
    assert logged == set(keys)  # every answer sent was committed once
    if ids:  # the re-sent request is charged once: 5 rounds fit exactly
      assert (len(rows), charged, sent) == (50, 50, 56)
      assert len({c[0] for c in calls}) == len(calls) - 1
    else:  # the re-send is charged again: 4 rounds fit (46 x 0.5 = 23)
      assert (len(rows), charged, sent) == (40, 46, 46)
    oracle.close()


_OLD_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE answers (key TEXT PRIMARY KEY, kind TEXT NOT NULL,
  pool_index INTEGER, i INTEGER, j INTEGER, lam REAL, round INTEGER NOT NULL,
  seq INTEGER NOT NULL, batch INTEGER NOT NULL, created REAL NOT NULL,
  probs BLOB NOT NULL);
CREATE TABLE pending (key TEXT PRIMARY KEY, request INTEGER NOT NULL,
  pos INTEGER NOT NULL, round INTEGER NOT NULL, created REAL NOT NULL);
"""


def _old_ledger(path, indices):
  from jaxkd.ledger import fingerprint
  db = sqlite3.connect(path)
  db.executescript(_OLD_SCHEMA)
  db.executemany("INSERT INTO meta VALUES (?, ?)", [
      ("pool", fingerprint(pool_images())), ("budget", str(BUDGET)),
      ("hard_labels", "0"), ("ledger_id", "0" * 32)])
  probs = np.full(4, 0.25, np.float32).tobytes()
  db.executemany(
      "INSERT INTO answers VALUES (?, 'pool', ?, NULL, NULL, NULL, 0, ?, 0, "
      "?, ?)", [(f"p:{i}", i, s, time.time(), probs)
                for s, i in enumerate(indices)])
  db.commit()
  db.close()


def test_old_ledger_migrates_and_keeps_its_fingerprint(tmp_path):
  path = tmp_path / "ledger.sqlite"
  indices = [5, 2, 8]
  _old_ledger(path, indices)
  digest = hashlib.sha256(b"".join(f"p:{i}\n".encode()
                                   for i in indices)).hexdigest()
  oracle = _oracle(tmp_path)
  assert tuple(oracle.fingerprint())[:2] == (3, digest)
  assert [e["cost"] for e in oracle.entries()] == [None] * 3
  assert oracle.money_spent == 0.0
  oracle.close()
  db = sqlite3.connect(path)
  for table in ("answers", "pending"):
    assert "cost" in {r[1] for r in db.execute(f"PRAGMA table_info({table})")}
  assert "price" not in dict(db.execute("SELECT key, value FROM meta"))
  db.close()
  # A first priced open of the old ledger prices only new answers.
  oracle = _oracle(tmp_path, price=2.0, money_budget=10.0)
  oracle.query(np.array([5, 2, 8, 1]), round=1)
  assert [e["cost"] for e in oracle.entries()] == [None] * 3 + [2.0]
  assert oracle.money_spent == 2.0 and oracle.money_remaining == 8.0
  assert oracle.fingerprint(3)[:2] == (3, digest)
  oracle.close()


def test_reopen_with_other_price_or_money_budget_is_refused(tmp_path):
  def cheap(key, image):
    return 0.1

  _oracle(tmp_path, price=0.5, money_budget=10.0).close()
  for kw in (dict(price=0.6, money_budget=10.0),
             dict(price=0.5, money_budget=11.0),
             dict(price=0.5),
             dict(price=cheap, money_budget=10.0),
             dict()):
    try:
      _oracle(tmp_path, **kw).close()
    except JaxkdError as e:
      msg = str(e)
    else:
      raise AssertionError(f"reopen with {kw} not refused")
    assert "\n" not in msg and "written for" in msg, msg
  _oracle(tmp_path, price=0.5, money_budget=10.0).close()
  # Unpriced ledgers keep no money meta, as before.
  _oracle(tmp_path, name="plain.sqlite").close()
  db = sqlite3.connect(tmp_path / "plain.sqlite")
  meta = dict(db.execute("SELECT key, value FROM meta"))
  db.close()
  assert set(meta) == {"pool", "budget", "hard_labels", "ledger_id"}


def test_bad_price_or_money_budget_is_one_line(tmp_path):
  for kw in (dict(price=-1.0), dict(price=float("nan")), dict(price="1"),
             dict(money_budget=5.0), dict(price=1.0, money_budget=-1.0)):
    try:
      _oracle(tmp_path, name="bad.sqlite", **kw).close()
    except JaxkdError as e:
      assert "\n" not in str(e)
    else:
      raise AssertionError(f"{kw} not refused")

  oracle = _oracle(tmp_path, price=lambda key, image: -1.0)
  try:
    oracle.query(np.arange(2))
  except JaxkdError as e:
    assert "\n" not in str(e) and oracle.spent == 0
  else:
    raise AssertionError("negative item price not refused")
  oracle.close()


def test_settings_check_money():
  from jaxkd import settings
  base = settings.ActiveSettings()
  need = base.split.initial + base.rounds * base.per_round
  dataclasses.replace(base, price_per_query=0.5,
                      money_budget=need * 0.5).validate()
  dataclasses.replace(base, price_per_query=0.5).validate()
  for kw in (dict(price_per_query=-1.0), dict(money_budget=float("inf")),
             dict(money_budget=5.0),
             dict(price_per_query=0.5, money_budget=need * 0.5 - 0.5)):
    try:
      dataclasses.replace(base, **kw).validate()
    except JaxkdError as e:
      assert "\n" not in str(e)
    else:
      raise AssertionError(f"{kw} not refused")


if __name__ == "__main__":
  p = argparse.ArgumentParser()
  p.add_argument("ledger")
  p.add_argument("log")
  p.add_argument("--die-at-call", type=int, default=0)
  p.add_argument("--ids", action="store_true")
  a = p.parse_args()
  worker(a.ledger, a.log, a.die_at_call, a.ids)
