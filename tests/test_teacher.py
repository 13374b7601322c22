"""TeacherOracle: no re-query, budget, durable ledger, bad input, crash/resume."""

import collections
import importlib.util
import os
import signal
import sqlite3
import subprocess
import sys

import numpy as np
import pytest

from jaxkd import teacher
from jaxkd.teacher import TeacherOracle
from jaxkd.validation import BudgetExceededError, JaxkdError

N, C = 20, 4
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
WORKER = os.path.join(HERE, "oracle_crash_worker.py")


def _pool(seed=0, n=N):
  return np.random.default_rng(seed).random((n, 3, 3, 1)).astype(np.float32)


class CountingTeacher:
  """Linear teacher that records which pool rows it was shown."""

  def __init__(self, pool, seed=1):
    self.pool = pool.reshape(len(pool), -1)
    self.w = np.random.default_rng(seed).normal(size=(9, C)) * 3.0
    self.calls = 0
    self.seen = collections.Counter()
    self.batches = []
    self.nan = False

  def __call__(self, images):
    self.calls += 1
    flat = np.asarray(images).reshape(len(images), -1)
    idx = [int(np.argmin(np.abs(self.pool - r).sum(1))) for r in flat]
    self.batches.append(idx)
    self.seen.update(idx)
    out = flat.astype(np.float64) @ self.w
    if self.nan:
      out[-1, 0] = np.nan
    return out


def np_probs(x, w):
  """Reference softmax of the linear teacher, in float64."""
  z = x.reshape(len(x), -1).astype(np.float64) @ w
  z = z - z.max(1, keepdims=True)
  e = np.exp(z)
  return e / e.sum(1, keepdims=True)


def _rows(path):
  """All ledger rows except the wall-clock column, in payment order."""
  with sqlite3.connect(path) as db:
    return db.execute(
        "SELECT key, kind, pool_index, i, j, lam, round, seq, batch, probs "
        "FROM answers ORDER BY seq").fetchall()


def _open(tmp_path, pool=None, t=None, budget=10, **kw):
  pool = _pool() if pool is None else pool
  t = CountingTeacher(pool) if t is None else t
  path = str(tmp_path / "run" / "ledger.sqlite")
  return TeacherOracle(t, pool, budget=budget, ledger_path=path, **kw), t, path


# -------------------------------------------------------------- queries ---


def test_answers_are_teacher_softmax_and_never_requeried(tmp_path):
  oracle, t, path = _open(tmp_path)
  pool = oracle.pool_images
  got = oracle.query([3, 7, 1], round=0)
  np.testing.assert_allclose(got, np_probs(pool[[3, 7, 1]], t.w), rtol=1e-5,
                             atol=1e-7)
  assert got.dtype == np.float32 and oracle.spent == 3
  again = oracle.query([7, 3, 1, 3], round=1)
  assert t.calls == 1  # all answered from the ledger
  np.testing.assert_array_equal(again, got[[1, 0, 2, 0]])
  mixed = oracle.query(np.array([1, 9, 7, 2]), round=1)
  assert t.batches[-1] == [9, 2]  # only the new ones were sent
  np.testing.assert_allclose(mixed, np_probs(pool[[1, 9, 7, 2]], t.w),
                             rtol=1e-5, atol=1e-7)
  assert max(t.seen.values()) == 1 and oracle.spent == 5
  assert oracle.remaining == 5
  np.testing.assert_array_equal(oracle.queried_indices(), [1, 2, 3, 7, 9])
  np.testing.assert_array_equal(oracle.queried_indices(max_round=0), [1, 3, 7])
  assert len(_rows(path)) == 5
  with sqlite3.connect(path) as db:
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
  oracle.close()


def test_duplicates_in_one_call_paid_once(tmp_path):
  oracle, t, _ = _open(tmp_path)
  got = oracle.query([4, 4, 6, 4, 6], round=0)
  assert t.batches == [[4, 6]] and oracle.spent == 2
  np.testing.assert_array_equal(got[0], got[1])
  np.testing.assert_array_equal(got[0], got[3])
  np.testing.assert_array_equal(got[2], got[4])
  assert oracle.query(np.zeros(0, np.int64), round=0).shape == (0, C)
  oracle.close()


def test_teacher_batches_are_separate_transactions(tmp_path):
  oracle, t, path = _open(tmp_path, batch_size=3)
  oracle.query(list(range(7)), round=2)
  assert t.batches == [[0, 1, 2], [3, 4, 5], [6]]
  rows = _rows(path)
  assert [r[8] for r in rows] == [0, 0, 0, 1, 1, 1, 2]  # batch id
  assert [r[7] for r in rows] == list(range(7))  # seq
  assert {r[6] for r in rows} == {2}  # round
  oracle.close()


# --------------------------------------------------------------- budget ---


def test_budget_enforced_before_teacher_call(tmp_path):
  oracle, t, path = _open(tmp_path, budget=5, batch_size=2)
  oracle.query([0, 1, 2, 3])
  calls, rows = t.calls, _rows(path)
  # Needs 2 new answers (10, 11) with 1 left: refused, teacher never called.
  with pytest.raises(BudgetExceededError, match="2 new .* only 1"):
    oracle.query([0, 1, 10, 11, 2])
  assert t.calls == calls and _rows(path) == rows and oracle.spent == 4
  # Five new with one left in a multi-batch query: no partial batch either.
  with pytest.raises(BudgetExceededError):
    oracle.query([12, 13, 14, 15, 16])
  assert t.calls == calls and _rows(path) == rows
  assert issubclass(BudgetExceededError, JaxkdError)
  # Exactly the remaining budget is fine, and old answers stay free at 0.
  oracle.query([3, 10])
  assert oracle.spent == 5 and oracle.remaining == 0
  oracle.query([0, 1, 2, 3, 10])
  with pytest.raises(BudgetExceededError):
    oracle.query([19])
  oracle.close()
  # The refusal survives a reopen: spent budget is persisted.
  reopened, t2, _ = _open(tmp_path, budget=5)
  with pytest.raises(BudgetExceededError):
    reopened.query([19])
  assert t2.calls == 0
  reopened.close()


# --------------------------------------------------------------- reopen ---


def test_reopen_restores_answers_and_spent_budget(tmp_path):
  oracle, t, path = _open(tmp_path, budget=12, batch_size=4)
  first = oracle.query([5, 2, 8, 0, 13], round=0)
  second = oracle.query([13, 17, 1], round=1)
  entries = oracle.entries()
  oracle.close()
  rows = _rows(path)

  reopened, t2, _ = _open(tmp_path, budget=12, batch_size=4)
  assert reopened.spent == 7 and reopened.remaining == 5
  assert reopened.num_classes == C
  np.testing.assert_array_equal(reopened.query([5, 2, 8, 0, 13]), first)
  np.testing.assert_array_equal(reopened.query([13, 17, 1]), second)
  assert t2.calls == 0
  np.testing.assert_array_equal(reopened.queried_indices(max_round=0),
                                [0, 2, 5, 8, 13])
  got = reopened.entries()
  assert [e["key"] for e in got] == [e["key"] for e in entries]
  assert [e["round"] for e in got] == [0] * 5 + [1] * 2
  for a, b in zip(got, entries):
    np.testing.assert_array_equal(a["probs"], b["probs"])
  # New answers continue the payment order and batch numbering.
  reopened.query([19], round=2)
  new_rows = _rows(path)
  assert new_rows[:7] == rows
  assert new_rows[7][7] == 7 and new_rows[7][8] == rows[-1][8] + 1
  reopened.close()


def test_reopen_with_other_pool_budget_or_mode_raises(tmp_path):
  oracle, _, _ = _open(tmp_path, budget=10)
  oracle.query([1])
  oracle.close()
  other_pool = _pool(seed=5)
  with pytest.raises(JaxkdError, match="pool"):
    _open(tmp_path, pool=other_pool, budget=10)
  with pytest.raises(JaxkdError, match="budget"):
    _open(tmp_path, budget=11)
  with pytest.raises(JaxkdError, match="hard_labels"):
    _open(tmp_path, budget=10, hard_labels=True)
  ok, _, path = _open(tmp_path, budget=10)
  assert ok.spent == 1 and len(_rows(path)) == 1  # the refusals wrote nothing
  ok.close()


def test_hard_labels_mode(tmp_path):
  oracle, t, _ = _open(tmp_path, hard_labels=True)
  idx = [0, 5, 9, 12]
  got = oracle.query(idx)
  want = np.eye(C)[np_probs(oracle.pool_images[idx], t.w).argmax(1)]
  np.testing.assert_array_equal(got, want)
  oracle.close()
  reopened, _, _ = _open(tmp_path, hard_labels=True)
  np.testing.assert_array_equal(reopened.query(idx), want)
  reopened.close()


# ------------------------------------------------------------ bad input ---


@pytest.mark.parametrize("bad", [[-1], [N], [0, N + 3], [1.0, 2.0],
                                 [[1, 2]], np.array([True, False])])
def test_bad_indices_raise_and_spend_nothing(tmp_path, bad):
  oracle, t, path = _open(tmp_path)
  with pytest.raises(JaxkdError, match="indices"):
    oracle.query(bad)
  assert t.calls == 0 and oracle.spent == 0 and _rows(path) == []
  oracle.close()


def test_teacher_nan_or_bad_shape_records_nothing(tmp_path):
  oracle, t, path = _open(tmp_path, batch_size=3)
  t.nan = True
  with pytest.raises(JaxkdError, match="NaN"):
    oracle.query([1, 2])
  assert oracle.spent == 0 and _rows(path) == []
  oracle.teacher_fn = lambda x: np.zeros((len(x) + 1, C))
  with pytest.raises(JaxkdError, match="shape"):
    oracle.query([1, 2])
  assert oracle.spent == 0 and _rows(path) == []
  # The two failed calls left [1, 2] pending (the teacher may have charged
  # for them): the next query re-sends exactly that batch first, under the
  # same request id. A NaN in the later batch [3, 4, 5]: the earlier,
  # already answered batch stays paid and recorded (it was committed); the
  # failing batch is not, and stays pending.
  assert [p.keys for p in oracle.pending()] == [("p:1", "p:2")]
  good = CountingTeacher(oracle.pool_images)
  calls = []

  def nan_on_second(x):
    calls.append(len(x))
    out = good(x)
    if len(calls) == 2:
      out[0, 0] = np.inf
    return out

  oracle.teacher_fn = nan_on_second
  with pytest.raises(JaxkdError, match="NaN"):
    oracle.query([1, 2, 3, 4, 5])
  assert calls == [2, 3]
  assert oracle.spent == 2 and [r[2] for r in _rows(path)] == [1, 2]
  assert [p.keys for p in oracle.pending()] == [("p:3", "p:4", "p:5")]
  oracle.teacher_fn = good
  oracle.query([1, 2, 3, 4, 5])
  assert good.batches[-1] == [3, 4, 5] and oracle.spent == 5
  assert oracle.pending() == []
  oracle.close()


def test_bad_construction_raises(tmp_path):
  path = str(tmp_path / "l.sqlite")
  t = CountingTeacher(_pool())
  bad = _pool()
  bad[0, 0, 0, 0] = np.nan
  with pytest.raises(JaxkdError, match="NaN"):
    TeacherOracle(t, bad, budget=3, ledger_path=path)
  with pytest.raises(JaxkdError, match="rank"):
    TeacherOracle(t, _pool()[..., 0], budget=3, ledger_path=path)
  with pytest.raises(JaxkdError, match="budget"):
    TeacherOracle(t, _pool(), budget=-1, ledger_path=path)
  with pytest.raises(JaxkdError, match="budget"):
    TeacherOracle(t, _pool(), budget=2.5, ledger_path=path)


# ---------------------------------------------------------------- mixup ---


def test_query_mixup_canonical_keys(tmp_path):
  oracle, t, path = _open(tmp_path)
  pool = oracle.pool_images
  pairs = np.array([[1, 2], [4, 3]])
  lams = np.array([0.3, 0.25])
  got = oracle.query_mixup(pairs, lams, round=1)
  mixed = np.stack([0.3 * pool[1] + 0.7 * pool[2],
                    0.25 * pool[4] + 0.75 * pool[3]])
  np.testing.assert_allclose(got, np_probs(mixed, t.w), rtol=1e-5, atol=1e-6)
  assert oracle.spent == 2 and t.calls == 1
  # (j, i, 1 - lam) is the same image: free, same answer.
  again = oracle.query_mixup(np.array([[2, 1], [3, 4]]), np.array([0.7, 0.75]))
  assert t.calls == 1 and oracle.spent == 2
  np.testing.assert_array_equal(again, got)
  # (j, i, lam) is another image: paid.
  oracle.query_mixup(np.array([[2, 1]]), np.array([0.3]))
  assert t.calls == 2 and oracle.spent == 3
  rows = {r[0]: r for r in _rows(path)}
  assert set(rows) == {"mix:1:2:0.300000", "mix:3:4:0.750000",
                       "mix:1:2:0.700000"}
  r = rows["mix:3:4:0.750000"]
  assert r[1:7] == ("mixup", None, 3, 4, 0.75, 1)
  assert teacher.mixup_key(4, 3, 0.25) == teacher.mixup_key(3, 4, 0.75)
  assert teacher.mixup_key(2, 1, 0.3) != teacher.mixup_key(1, 2, 0.3)
  # Mixup answers are not pool indices.
  assert oracle.queried_indices().size == 0
  oracle.close()
  reopened, t2, _ = _open(tmp_path)
  np.testing.assert_array_equal(reopened.query_mixup(pairs, lams), got)
  assert t2.calls == 0 and reopened.spent == 3
  reopened.close()


def test_query_mixup_bad_input(tmp_path):
  oracle, t, path = _open(tmp_path)
  with pytest.raises(JaxkdError, match="distinct"):
    oracle.query_mixup(np.array([[2, 2]]), np.array([0.5]))
  with pytest.raises(JaxkdError, match="lambda"):
    oracle.query_mixup(np.array([[1, 2]]), np.array([1.5]))
  with pytest.raises(JaxkdError, match="lambda"):
    oracle.query_mixup(np.array([[1, 2]]), np.array([np.nan]))
  with pytest.raises(JaxkdError, match="pair"):
    oracle.query_mixup(np.array([[1, N]]), np.array([0.5]))
  with pytest.raises(JaxkdError, match="pairs"):
    oracle.query_mixup(np.array([1, 2]), np.array([0.5]))
  assert t.calls == 0 and _rows(path) == []
  oracle.close()


# --------------------------------------------------------------- ledger ---


def test_fingerprint_is_sha256_of_keys_in_payment_order(tmp_path):
  import hashlib
  oracle, t, path = _open(tmp_path, batch_size=2)
  oracle.query([5, 1, 7])
  oracle.query_mixup(np.array([[3, 2]]), np.array([0.25]), round=1)
  order = ["p:5", "p:1", "p:7", "mix:2:3:0.750000"]
  h = hashlib.sha256("".join(k + "\n" for k in order).encode()).hexdigest()
  assert oracle.fingerprint()[:2] == (4, h)
  h2 = hashlib.sha256(b"p:5\np:1\n").hexdigest()
  assert oracle.fingerprint(2)[:2] == (2, h2)
  oracle.close()
  again, _, _ = _open(tmp_path, t=t, batch_size=2)  # survives a reopen
  assert again.fingerprint()[:2] == (4, h)
  assert again.fingerprint(2)[:2] == (2, h2)
  assert again.fingerprint() == oracle.fingerprint()
  with pytest.raises(JaxkdError, match="4 rows, not 5"):
    again.fingerprint(5)
  again.close()


def test_paid_answers_never_pays(tmp_path):
  oracle, t, path = _open(tmp_path)
  oracle.query([3, 4])
  calls = t.calls
  np.testing.assert_allclose(oracle.paid_answers([4, "p:3"]),
                             np_probs(oracle.pool_images[[4, 3]], t.w),
                             rtol=1e-5)
  with pytest.raises(JaxkdError, match="1 of 2 answers .*p:5.* never pays"):
    oracle.paid_answers([3, 5])
  with pytest.raises(JaxkdError, match="pool indices or ledger keys"):
    oracle.paid_answers([3.0])
  assert t.calls == calls and oracle.spent == 2
  oracle.close()


class IdTeacher(CountingTeacher):
  """Records the request id of every call; dies (raises) on call `die`."""
  accepts_request_id = True

  def __init__(self, pool, die=0):
    super().__init__(pool)
    self.ids, self.die = [], die

  def __call__(self, images, request_id):
    self.ids.append(request_id)
    out = super().__call__(images)
    if self.calls == self.die:
      raise KeyboardInterrupt("killed after the answer, before the commit")
    return out


def test_pending_batch_is_reported_and_resent_under_its_id(tmp_path):
  pool = _pool()
  t = IdTeacher(pool, die=2)
  oracle, _, path = _open(tmp_path, t=t, batch_size=3)
  with pytest.raises(KeyboardInterrupt):
    oracle.query([0, 1, 2, 3, 4, 5, 6], round=2)
  oracle.close()
  oracle, _, _ = _open(tmp_path, t=IdTeacher(pool), batch_size=3)
  (req,) = oracle.pending()
  assert req.keys == ("p:3", "p:4", "p:5") and req.round == 2
  assert req.request == 1 and req.request_id == t.ids[1]
  assert oracle.spent == 3
  # A query that needs all of it re-sends the same batch under the same id
  # (first), then pays the rest under a new id.
  oracle.query([6, 5, 4, 3, 0])
  assert oracle.teacher_fn.batches == [[3, 4, 5], [6]]
  assert oracle.teacher_fn.ids == [t.ids[1], oracle.request_id(2)]
  assert len(set(t.ids + [oracle.request_id(2)])) == 3
  assert oracle.pending() == [] and oracle.spent == 7
  assert [r[8] for r in _rows(path)] == [0, 0, 0, 1, 1, 1, 2]
  oracle.close()
  # Request ids are unique across ledgers.
  other, _, _ = _open(tmp_path / "b", t=IdTeacher(pool))
  assert other.request_id(1) != req.request_id
  other.close()


def test_pending_batch_needed_in_part_is_sent_fresh(tmp_path):
  # An idempotency key must always mean the same batch: a query that needs
  # only some keys of a pending request sends them under a new id, and the
  # old request can no longer be re-sent whole, so its mark is dropped.
  pool = _pool()
  t = IdTeacher(pool, die=1)
  oracle, _, path = _open(tmp_path, t=t, batch_size=3)
  with pytest.raises(KeyboardInterrupt):
    oracle.query([1, 2, 3])
  assert [p.keys for p in oracle.pending()] == [("p:1", "p:2", "p:3")]
  oracle.teacher_fn = good = IdTeacher(pool)
  oracle.query([2])
  assert good.batches == [[2]] and good.ids == [oracle.request_id(1)]
  assert good.ids[0] != t.ids[0] and oracle.pending() == []
  oracle.close()


def test_must_exist_refuses_missing_empty_or_corrupt_ledger(tmp_path):
  pool = _pool()
  path = str(tmp_path / "l.sqlite")
  t = CountingTeacher(pool)
  kw = dict(budget=5, ledger_path=path, must_exist=True)
  with pytest.raises(JaxkdError, match="l.sqlite is missing or empty.*nothing"
                     " was paid. To recover"):
    TeacherOracle(t, pool, **kw)
  assert not os.path.exists(path)
  open(path, "w").close()
  with pytest.raises(JaxkdError, match="missing or empty"):
    TeacherOracle(t, pool, **kw)
  sqlite3.connect(path).execute("CREATE TABLE x (a)").connection.commit()
  with pytest.raises(JaxkdError, match="is empty but this run has checkp"):
    TeacherOracle(t, pool, **kw)
  with open(path, "wb") as f:
    f.write(b"not a database" * 100)
  for must in (True, False):
    with pytest.raises(JaxkdError) as e:
      TeacherOracle(t, pool, budget=5, ledger_path=path, must_exist=must)
    assert "\n" not in str(e.value) and "cannot be read" in str(e.value)
  assert t.calls == 0


# ---------------------------------------------------------------- crash ---


def _load_worker():
  spec = importlib.util.spec_from_file_location("oracle_crash_worker", WORKER)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


def _spawn(ledger, log, *args):
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep
             + os.environ.get("PYTHONPATH", ""))
  return subprocess.Popen([sys.executable, WORKER, ledger, log, *args],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, env=env)


def _log_indices(log):
  with open(log) as f:
    return [int(i) for line in f for i in line.split()]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """An uninterrupted run, in-process, in its own directory."""
  worker = _load_worker()
  d = tmp_path_factory.mktemp("reference")
  ledger, log = str(d / "ledger.sqlite"), str(d / "teacher.log")
  with open(os.devnull, "w") as out:
    worker.run(ledger, log, out=out)
  sent = _log_indices(log)
  n = worker.ROUNDS * worker.PER_ROUND
  assert len(sent) == len(set(sent)) == n
  return worker, _rows(ledger)


def test_sigkill_between_rounds_then_resume(tmp_path, reference):
  worker, want = reference
  ledger, log = str(tmp_path / "ledger.sqlite"), str(tmp_path / "teacher.log")
  proc = _spawn(ledger, log, "--sleep", "1.0")
  last = None
  try:
    for line in proc.stdout:
      last = line.split()
      if last[:2] == ["committed", "2"]:
        proc.send_signal(signal.SIGKILL)  # while it sleeps after round 2
        break
  finally:
    proc.kill()
    rc = proc.wait(timeout=60)
  assert last is not None and last[:2] == ["committed", "2"], proc.stderr.read()
  assert rc == -signal.SIGKILL
  killed = _rows(ledger)
  assert len(killed) == int(last[2]) == 30  # all three rounds, nothing more
  assert killed == want[:30]

  proc = _spawn(ledger, log)  # resume to completion
  out, err = proc.communicate(timeout=60)
  assert proc.returncode == 0, err
  assert out.splitlines()[-1] == "done"
  assert out.splitlines()[0] == "committed 0 30"  # paid rounds were free
  assert _rows(ledger) == want  # same keys, probs, rounds, order, batches
  sent = _log_indices(log)
  assert len(sent) == len(set(sent)), "a pool index was sent twice"
  spent = len(_rows(ledger))
  assert spent == len(set(sent)) == worker.ROUNDS * worker.PER_ROUND


def test_crash_with_batch_in_flight_then_resume(tmp_path, reference):
  # The teacher answers its 6th call (round 2's 2nd batch) and the process
  # dies before the commit: that batch is lost, re-sent once on resume, and
  # nothing else is ever repeated.
  worker, want = reference
  ledger, log = str(tmp_path / "ledger.sqlite"), str(tmp_path / "teacher.log")
  proc = _spawn(ledger, log, "--die-at-call", "6")
  out, err = proc.communicate(timeout=60)
  assert proc.returncode == -signal.SIGKILL, err
  assert out.splitlines()[-1] == "committed 1 20"
  in_flight = list(worker.schedule(2)[worker.OVERLAP:][worker.BATCH:])
  assert len(_rows(ledger)) == 26 and _rows(ledger) == want[:26]

  proc = _spawn(ledger, log)
  out, err = proc.communicate(timeout=60)
  assert proc.returncode == 0, err
  assert _rows(ledger) == want
  counts = collections.Counter(_log_indices(log))
  assert sorted(i for i, c in counts.items() if c > 1) == sorted(in_flight)
  assert max(counts.values()) == 2
  assert len(counts) == len(_rows(ledger)) == 80


def test_second_oracle_on_a_live_ledger_is_refused(tmp_path):
  pool = _pool()
  path = str(tmp_path / "ledger.sqlite")
  t = CountingTeacher(pool)
  first = TeacherOracle(t, pool, budget=10, ledger_path=path)
  first.query([0, 1])
  with pytest.raises(JaxkdError, match="in use by another TeacherOracle"):
    TeacherOracle(t, pool, budget=10, ledger_path=path)
  first.close()
  again = TeacherOracle(t, pool, budget=10, ledger_path=path)
  assert again.spent == 2
  again.close()
