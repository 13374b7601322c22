"""Two real processes, one active-distillation run, one payment per item.

Two workers (tests/multihost_loop_worker.py) join a jax.distributed run on a
localhost coordinator (CPU, gloo) and run the round loop for entropy,
coreset and badge; a one-process run of the same worker is the reference.
The picks (ledger keys in payment order) and accuracies must equal the
reference, and the teacher's own logs must show process 0 alone answering,
each image once. With the raw teacher on every process the same check
must fail.
"""

import collections
import json
import os
import sqlite3
import subprocess
import sys

import pytest

from test_multihost import free_port, run_processes  # tests/ is on sys.path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(ROOT, "tests", "multihost_loop_worker.py")
TIMEOUT = 300


def _run(out, count, mode="wrapped"):
  os.makedirs(out, exist_ok=True)
  return run_processes(out, mode, count, TIMEOUT, worker=WORKER)


def paid_once_problems(out, count, strategies=("entropy", "coreset", "badge")):
  """What the teacher logs say went wrong (empty list: in every run,
  process 0 alone answered, each image once)."""
  problems = []
  for name in strategies:
    seen = collections.Counter()
    for p in range(count):
      path = os.path.join(out, f"teacher_{p}_{name}.log")
      if not os.path.exists(path):
        continue
      lines = open(path).read().split()
      if p != 0:
        problems.append(f"{name}: process {p} called the teacher "
                        f"({len(lines)} images)")
      seen.update(lines)
    twice = [k for k, v in seen.items() if v > 1]
    if twice:
      problems.append(f"{name}: {len(twice)} images answered more than once")
  return problems


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  out = tmp_path_factory.mktemp("one")
  return out, _run(out, 1)[0]


def test_two_processes_pick_like_one_and_pay_once(tmp_path, reference):
  ref_out, ref = reference
  res = _run(tmp_path, 2)
  for name, want in ref.items():
    for p in (0, 1):
      assert res[p][name]["keys"] == want["keys"], (name, p)
      assert res[p][name]["accuracy"] == want["accuracy"], (name, p)
    # 30 initial + 2 rounds x 10, each paid once.
    assert len(want["keys"]) == 50 == len(set(want["keys"]))
  assert paid_once_problems(tmp_path, 2) == []
  assert paid_once_problems(ref_out, 1) == []
  for name in ref:
    assert len(open(tmp_path / f"teacher_0_{name}.log").read().split()) == 50
  # The run's ledger is process 0's; process 1's copy lives elsewhere.
  for name in ref:
    assert res[0][name]["ledger"].startswith(str(tmp_path))
    assert not res[1][name]["ledger"].startswith(str(tmp_path))
    db = sqlite3.connect(res[0][name]["ledger"])
    assert db.execute("select count(*) from answers").fetchone()[0] == 50
    db.close()


def test_the_check_catches_a_follower_that_pays(tmp_path):
  _run(tmp_path, 2, mode="raw")
  problems = paid_once_problems(tmp_path, 2)
  assert any("process 1 called the teacher" in p for p in problems)
  assert any("more than once" in p for p in problems)


def test_the_cli_job_on_two_processes_writes_one_run(tmp_path):
  """`python -m jaxkd.main --multihost` on two processes: one teacher, one
  ledger per strategy (process 0's), results equal to a one-process run."""
  common = ["--strategy=margin", "--config.rounds=1", "--config.per_round=5",
            "--config.split.teacher_train=300", "--config.split.initial=20",
            "--config.split.pool=200", "--config.split.test=200",
            "--config.teacher.model=mlp", "--config.teacher.epochs=2",
            "--config.student=mlp", "--config.loop.train_steps=10",
            "--config.progress=False"]
  env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3",
             PYTHONPATH=ROOT, XLA_FLAGS="--xla_force_host_platform_device_count=2")
  one = subprocess.run(
      [sys.executable, "-m", "jaxkd.main", f"--workdir={tmp_path / 'one'}",
       *common], cwd=ROOT, env=env, capture_output=True, text=True,
      timeout=TIMEOUT)
  assert one.returncode == 0, one.stderr[-3000:]
  port = free_port()
  procs = [subprocess.Popen(
      [sys.executable, "-m", "jaxkd.main", f"--workdir={tmp_path / 'two'}",
       "--multihost", f"--coordinator_address=localhost:{port}",
       "--num_processes=2", f"--process_id={p}", *common],
      cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
      text=True) for p in range(2)]
  try:
    logs = [p.communicate(timeout=TIMEOUT)[0] for p in procs]
  except subprocess.TimeoutExpired:
    for p in procs:
      p.kill()
    pytest.fail("the two-process job did not finish")
  assert [p.returncode for p in procs] == [0, 0], logs[0][-3000:] + logs[1][-3000:]
  a = json.load(open(tmp_path / "one" / "results.json"))
  b = json.load(open(tmp_path / "two" / "results.json"))
  assert a["teacher_accuracy"] == b["teacher_accuracy"]
  acc = lambda r: [(x["queries"], x["student_accuracy"])
                   for x in r["strategies"]["margin"][0]]
  assert acc(a) == acc(b)
  keys = lambda w: [k for (k,) in sqlite3.connect(
      str(w / "margin" / "seed0" / "ledger.sqlite")).execute(
          "SELECT key FROM answers ORDER BY seq")]
  assert keys(tmp_path / "one") == keys(tmp_path / "two")
  assert len(keys(tmp_path / "two")) == 25
