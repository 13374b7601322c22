"""Fault injection on the real round loop (issue 15): kills at each point of
a round and lost, emptied, truncated or altered ledger files.

Each killed run is a subprocess (tests/loop_crash_worker.py) that SIGKILLs
itself; the five are started together. Resumes and refusals run in this
process. The teacher appends "<request id> <pool index>..." per call to a
log of its own, so what was paid is counted independently of the ledger.
Every case must either resume to the uninterrupted run's records and
ledger with each image paid exactly once (or the one pending batch
reported and re-sent under the same request id), or refuse with one line
naming the ledger and pay nothing.
"""

import collections
import fcntl
import importlib.util
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys

import pytest

from jaxkd.resources import MEASURED_FIELDS
from jaxkd.validation import JaxkdError

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
WORKER = os.path.join(HERE, "loop_crash_worker.py")

# point -> teacher calls the run makes before the kill (see the worker).
KILLS = ("teacher:4", "answer:4", "commit:3", "train:1", "save:1")


def _load_worker():
  spec = importlib.util.spec_from_file_location("loop_crash_worker", WORKER)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


worker = _load_worker()


def _log(path):
  """[(request id, [pool indices])] per teacher call."""
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [(ln.split()[0], [int(i) for i in ln.split()[1:]]) for ln in f]


def _rows(path):
  """Ledger rows except the wall-clock column, in payment order."""
  db = sqlite3.connect(path)
  try:
    return db.execute(
        "SELECT key, kind, pool_index, i, j, lam, round, seq, batch, probs "
        "FROM answers ORDER BY seq").fetchall()
  finally:
    db.close()


def _strip(records):
  return [{k: v for k, v in r.items() if k not in MEASURED_FIELDS}
          for r in records]


def _make_runs(base):
  """The uninterrupted reference (in-process) and the five killed runs
  (subprocesses, in parallel), under `base`."""
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep
             + os.environ.get("PYTHONPATH", ""))
  procs = {}
  for kill in KILLS:
    d = base / kill.replace(":", "_")
    procs[kill] = (d, subprocess.Popen(
        [sys.executable, WORKER, str(d / "run"), str(d / "teacher.log"),
         "--kill", kill], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env=env))
  ref = base / "reference"
  records = worker.run(str(ref / "run"), str(ref / "teacher.log"))
  for kill, (d, proc) in procs.items():
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == -signal.SIGKILL, (kill, out, err[-3000:])
  with open(base / "reference.json", "w") as f:
    json.dump(records, f)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """(reference records, rows, log), {kill point: killed run's directory}.
  Made once per session: xdist workers share one set (a file lock)."""
  base = tmp_path_factory.getbasetemp()
  if os.environ.get("PYTEST_XDIST_WORKER"):
    base = base.parent  # this session's directory, shared by the workers
  base = base / "ledger_faults"
  base.mkdir(exist_ok=True)
  with open(base / "lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
      if not (base / "reference.json").exists():
        _make_runs(base)
    finally:
      fcntl.flock(lock, fcntl.LOCK_UN)
  with open(base / "reference.json") as f:
    records = json.load(f)
  killed = {kill: base / kill.replace(":", "_") for kill in KILLS}
  # Mid-checkpoint means mid-checkpoint: step 1 was begun, never finished.
  steps = os.listdir(killed["save:1"] / "run" / "checkpoints")
  assert "0" in steps and "1" not in steps and any(
      s.startswith("1.") for s in steps), steps
  ref = base / "reference"
  reference = (records, _rows(str(ref / "run" / "ledger.sqlite")),
               _log(str(ref / "teacher.log")))
  return reference, killed


def _copy(src, dst):
  """A copy of a killed run to work on (the original is never opened: even
  reading a ledger with sqlite moves its WAL into the database file)."""
  shutil.copytree(src, dst)
  return str(dst / "run"), str(dst / "teacher.log")


def test_reference_pays_each_image_once(runs):
  (records, rows, log), _ = runs
  n = worker.N_INIT + worker.ROUNDS * worker.PER_ROUND
  paid = [i for _, idx in log for i in idx]
  assert len(paid) == len(set(paid)) == len(rows) == n
  assert [r["queries"] for r in records] == [6, 10, 14]
  assert [len(idx) for _, idx in log] == [3, 3, 3, 1, 3, 1]
  assert len({rid for rid, _ in log}) == len(log)  # one id per call


@pytest.mark.parametrize("kill", KILLS)
def test_kill_then_resume_pays_each_image_once(runs, kill, tmp_path):
  (ref_records, ref_rows, _), killed = runs
  run_dir, log_path = _copy(killed[kill], tmp_path / "c")
  before = _log(log_path)
  n_killed = len(_rows(os.path.join(run_dir, "ledger.sqlite")))
  lines = []
  records = worker.run(run_dir, log_path, log=lines.append)
  assert _strip(records) == _strip(ref_records)
  assert _rows(os.path.join(run_dir, "ledger.sqlite")) == ref_rows
  log = _log(log_path)
  counts = collections.Counter(i for _, idx in log for i in idx)
  assert len(counts) == len(ref_rows)
  twice = [i for i, c in counts.items() if c > 1]
  pending = [ln for ln in lines if "may have been paid twice" in ln]
  if kill == "answer:4":
    # The teacher answered call 4 (round 1's second batch), the ledger never
    # got it: reported, then re-sent once, under the same request id.
    assert pending == [
        f"[entropy] 1 answers may have been paid twice: request 3, round 1 "
        f"(killed between the teacher call and the commit); re-sent as "
        f"{before[-1][0]} when needed"]
    assert twice == before[-1][1] and max(counts.values()) == 2
    again = [rid for rid, idx in log[len(before):] if idx == before[-1][1]]
    assert again == [before[-1][0]]
  elif kill == "teacher:4":
    # Intent committed, the teacher never answered: reported, sent once.
    assert len(pending) == 1 and "request 3, round 1" in pending[0]
    assert twice == []
  else:
    assert pending == [] and twice == []
  resumed = [ln for ln in lines if "resumed after" in ln]
  assert resumed == [f"[entropy] resumed after round 0 ({n_killed} answers "
                     "in the ledger)"]


def _refuses(run_dir, log_path, match, **kw):
  """The resume raises one line naming the ledger; nothing is paid."""
  ledger = os.path.join(run_dir, "ledger.sqlite")
  before_log = _log(log_path)
  with pytest.raises(JaxkdError) as e:
    worker.run(run_dir, log_path, **kw)
  msg = str(e.value)
  assert "\n" not in msg and ledger in msg and "To recover" in msg, msg
  assert match in msg, msg
  assert _log(log_path) == before_log  # the teacher was never called
  return msg


def _remove(path):
  if os.path.exists(path):
    os.remove(path)


def test_lost_or_emptied_ledger_is_refused(runs, tmp_path):
  _, killed = runs
  run_dir, log_path = _copy(killed["commit:3"], tmp_path / "deleted")
  ledger = os.path.join(run_dir, "ledger.sqlite")
  for suffix in ("", "-wal", "-shm"):
    _remove(ledger + suffix)
  _refuses(run_dir, log_path, "is missing or empty")
  assert not os.path.exists(ledger)
  # A library caller that does not say must_exist: the resume check refuses.
  _refuses(run_dir, log_path, "is empty but checkpoint round 0",
           must_exist=False)

  run_dir, log_path = _copy(killed["commit:3"], tmp_path / "emptied")
  ledger = os.path.join(run_dir, "ledger.sqlite")
  for suffix in ("-wal", "-shm"):
    _remove(ledger + suffix)
  open(ledger, "w").close()
  _refuses(run_dir, log_path, "is missing or empty")
  assert os.path.getsize(ledger) == 0


def test_lost_wal_after_kill_is_refused(runs, tmp_path):
  # After SIGKILL the committed answers live in ledger.sqlite-wal: losing
  # it loses them, and the run must not take what is left for a new ledger.
  _, killed = runs
  run_dir, log_path = _copy(killed["answer:4"], tmp_path / "wal")
  ledger = os.path.join(run_dir, "ledger.sqlite")
  assert os.path.getsize(ledger + "-wal") > 0
  for suffix in ("-wal", "-shm"):
    os.remove(ledger + suffix)
  _refuses(run_dir, log_path, "empty")
  _refuses(run_dir, log_path, "empty", must_exist=False)


def _wal_commit_ends(wal):
  """Byte offsets just after each commit frame of a SQLite WAL file (32-byte
  header, then frames of a 24-byte header and one page; a commit frame
  has a non-zero 'database size' field)."""
  with open(wal, "rb") as f:
    raw = f.read()
  page = int.from_bytes(raw[8:12], "big")
  ends, off = [], 32
  while off + 24 + page <= len(raw):
    commit = int.from_bytes(raw[off + 4:off + 8], "big")
    off += 24 + page
    if commit:
      ends.append(off)
  return ends


@pytest.mark.parametrize("cut,pending", [(2, 1), (5, 0)])
def test_truncated_wal_after_kill_resends_under_the_same_ids(runs, tmp_path,
                                                             cut, pending):
  # The run died in round 1's training; its WAL ends with the transactions
  # intent(2), commit(2), intent(3), commit(3) (one per teacher call). Cut
  # after commit(2) + intent(3): batch 3 is pending, reported and re-sent.
  # Cut after round 0: both batches of round 1 are gone without a trace;
  # the resumed run makes the same selection and numbers its requests from
  # the ledger, so it re-sends the same batches under the same request ids
  # (an idempotent teacher charges them once).
  (ref_records, ref_rows, _), killed = runs
  run_dir, log_path = _copy(killed["train:1"], tmp_path / "c")
  wal = os.path.join(run_dir, "ledger.sqlite-wal")
  with open(wal, "r+b") as f:
    f.truncate(_wal_commit_ends(wal)[-cut])
  os.remove(os.path.join(run_dir, "ledger.sqlite-shm"))  # rebuilt on open
  before = _log(log_path)
  lines = []
  records = worker.run(run_dir, log_path, log=lines.append)
  assert _strip(records) == _strip(ref_records)
  assert _rows(os.path.join(run_dir, "ledger.sqlite")) == ref_rows
  assert len([ln for ln in lines if "paid twice" in ln]) == pending
  log = _log(log_path)
  resent = log[len(before):len(before) + (2 if cut == 5 else 1)]
  assert resent == before[len(before) - len(resent):]  # same ids, same images
  # Charged once per request id: 6 requests, 14 images, each once.
  charged = {(rid, tuple(idx)) for rid, idx in log}
  assert len(charged) == len({rid for rid, _ in log}) == 6
  images = [i for _, idx in charged for i in idx]
  assert len(images) == len(set(images)) == len(ref_rows)


def test_wal_cut_before_the_checkpointed_rows_is_refused(runs, tmp_path):
  _, killed = runs
  run_dir, log_path = _copy(killed["train:1"], tmp_path / "c")
  wal = os.path.join(run_dir, "ledger.sqlite-wal")
  with open(wal, "r+b") as f:
    f.truncate(_wal_commit_ends(wal)[-6])  # round 0's second batch is lost
  os.remove(os.path.join(run_dir, "ledger.sqlite-shm"))
  _refuses(run_dir, log_path, "has 3 rows but checkpoint round 0 in")


def _settle(ledger):
  """Moves the WAL into the database file (a clean open and close)."""
  db = sqlite3.connect(ledger)
  db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
  db.close()


def test_truncated_shorter_or_altered_ledger_is_refused(runs, tmp_path):
  _, killed = runs
  run_dir, log_path = _copy(killed["train:1"], tmp_path / "truncated")
  ledger = os.path.join(run_dir, "ledger.sqlite")
  _settle(ledger)
  size = os.path.getsize(ledger)
  with open(ledger, "r+b") as f:
    f.truncate(size // 2)
  _refuses(run_dir, log_path, "cannot be read")

  run_dir, log_path = _copy(killed["train:1"], tmp_path / "shorter")
  ledger = os.path.join(run_dir, "ledger.sqlite")
  db = sqlite3.connect(ledger)
  db.execute("DELETE FROM answers WHERE seq >= 4")
  db.commit()
  db.close()
  # Each commit's rows are recorded: the deleted ones are refused, not
  # paid again.
  _refuses(run_dir, log_path, "holds 1 of the 3 answers request 1 paid")

  run_dir, log_path = _copy(killed["train:1"], tmp_path / "altered")
  ledger = os.path.join(run_dir, "ledger.sqlite")
  db = sqlite3.connect(ledger)
  db.execute("UPDATE answers SET key = 'p:29', pool_index = 29 WHERE seq = 5")
  db.commit()
  db.close()
  _refuses(run_dir, log_path, "holds other contents for the 3 answers")

  # Every byte that matters: an answer, a round, a cost.
  for n, sql in enumerate((
      "UPDATE answers SET probs = zeroblob(length(probs)) WHERE seq = 2",
      "UPDATE answers SET round = 7 WHERE seq = 1",
      "UPDATE answers SET cost = 1.5 WHERE seq = 0")):
    run_dir, log_path = _copy(killed["train:1"], tmp_path / f"bytes{n}")
    db = sqlite3.connect(os.path.join(run_dir, "ledger.sqlite"))
    db.execute(sql)
    db.commit()
    db.close()
    _refuses(run_dir, log_path, "holds other contents")

  # With the commit record wiped too (taken for an older ledger), the
  # checkpoint's fingerprint still proves the rows it saw: keys ...
  for name, sql, match in (
      ("keys", "UPDATE answers SET key = 'p:29' WHERE seq = 5",
       "differs from the 6 paid answers"),
      ("answers", "UPDATE answers SET probs = zeroblob(length(probs)) "
       "WHERE seq = 2", "holds other answers, recipes or rounds"),
      ("shorter", "DELETE FROM answers WHERE seq >= 4",
       "has 4 rows but checkpoint round 0")):
    run_dir, log_path = _copy(killed["train:1"], tmp_path / f"wiped_{name}")
    db = sqlite3.connect(os.path.join(run_dir, "ledger.sqlite"))
    db.execute(sql)
    db.execute("DELETE FROM committed")
    db.commit()
    db.close()
    _refuses(run_dir, log_path, match)


def test_corrupt_checkpoint_is_one_line(runs, tmp_path):
  _, killed = runs
  run_dir, log_path = _copy(killed["train:1"], tmp_path / "ckpt")
  step = os.path.join(run_dir, "checkpoints", "0")
  for root, _, files in os.walk(step):
    for name in files:
      with open(os.path.join(root, name), "wb") as f:
        f.write(b"garbage")
  before = _log(log_path)
  with pytest.raises(JaxkdError) as e:
    worker.run(run_dir, log_path)
  msg = str(e.value)
  assert "\n" not in msg and step in msg and "delete that step" in msg, msg
  assert _log(log_path) == before


DISK_KILLS = ("teacher:4", "answer:4", "train:1")


@pytest.mark.parametrize("kill", DISK_KILLS)
def test_a_pool_on_disk_resumes_like_one_in_memory(runs, kill, tmp_path):
  """The same kills on the same pool read from a memory-mapped .npy: the
  resumed run ends with the in-memory reference's ledger rows and records,
  and the teacher's own log shows each image paid once (the answer the
  kill lost re-sent once, under its request id)."""
  (ref_records, ref_rows, _), _ = runs
  pool_file = str(tmp_path / "pool.npy")
  d = tmp_path / "k"
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep
             + os.environ.get("PYTHONPATH", ""))
  proc = subprocess.run(
      [sys.executable, WORKER, str(d / "run"), str(d / "teacher.log"),
       "--kill", kill, "--pool-file", pool_file], capture_output=True,
      text=True, env=env, timeout=300)
  assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
  before = _log(str(d / "teacher.log"))
  records = worker.run(str(d / "run"), str(d / "teacher.log"),
                       pool_file=pool_file)
  assert _strip(records) == _strip(ref_records)
  assert _rows(str(d / "run" / "ledger.sqlite")) == ref_rows
  counts = collections.Counter(
      i for _, idx in _log(str(d / "teacher.log")) for i in idx)
  assert len(counts) == len(ref_rows)
  lost = before[-1][1] if kill == "answer:4" else []
  assert sorted(i for i, c in counts.items() if c > 1) == sorted(lost)
