"""jaxkd.multihost: two real processes, one teacher bill.

Each two-process case starts tests/multihost_worker.py twice on a localhost
coordinator (CPU, gloo collectives, 2 devices per process) and reads what
each process saw. The teacher logs every image it answers to a file named
by its process, so `paid_once_problems` counts real teacher calls; the
`raw` case proves that count catches a follower that pays.
"""

import collections
import json
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest

from jaxkd import multihost
from jaxkd.validation import JaxkdError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(ROOT, "tests", "multihost_worker.py")
sys.path.insert(0, os.path.join(ROOT, "tests"))

import multihost_worker as worker  # noqa: E402

TIMEOUT = 120  # seconds for a whole two-process run; it takes ~5
PROCESSES = 2
ASKED = list(range(15))  # image ids the worker's queries need answered


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def run_processes(out, mode, count=PROCESSES, timeout=TIMEOUT, worker=WORKER,
                  tries=2):
  """Runs `count` `worker`s (PORT PROCESS_ID COUNT OUT MODE) in one
  jax.distributed run; their OUT/result_<id>.json dicts. A run that does
  not finish is tried once more on a fresh port: `free_port` can lose its
  port to another test's process before the coordinator binds it, and the
  workers then wait for a coordinator that never starts."""
  for attempt in range(tries):
    try:
      return _run_processes(out, mode, count, timeout, worker)
    except TimeoutError as e:
      if attempt + 1 == tries:
        pytest.fail(str(e))
      for name in os.listdir(out):  # the retry starts from nothing
        path = os.path.join(out, name)
        shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)


def _run_processes(out, mode, count, timeout, worker):
  env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3",
             PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  # Not the 8 devices conftest forces on this process: 2 per worker.
  env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
  port = free_port()
  procs = [subprocess.Popen(
      [sys.executable, worker, str(port), str(p), str(count), str(out), mode],
      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
      for p in range(count)]
  logs = []
  try:
    for proc in procs:
      logs.append(proc.communicate(timeout=timeout)[0])
  except subprocess.TimeoutExpired:
    for proc in procs:
      proc.kill()
    for proc in procs:
      proc.communicate()
    raise TimeoutError(f"{mode}: the {count} processes did not finish in "
                       f"{timeout} s (a collective hung)")
  results = []
  for p, log in enumerate(logs):
    path = os.path.join(out, f"result_{p}.json")
    assert os.path.exists(path), f"process {p} wrote no result:\n{log[-3000:]}"
    with open(path) as f:
      results.append(json.load(f))
  return results


def teacher_log(out, process):
  """Image ids process `process`'s teacher answered, or None if it never
  answered any."""
  path = os.path.join(out, f"teacher_{process}.log")
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return [int(line) for line in f if line.strip()]


def paid_once_problems(out, asked, count=PROCESSES):
  """What breaks "process 0 alone paid, each asked image once"; [] if
  nothing does."""
  problems = []
  if teacher_log(out, 0) is None:
    problems.append("process 0 never called the teacher")
  answered = collections.Counter()
  for p in range(count):
    ids = teacher_log(out, p)
    if ids is None:
      continue
    if p != 0:
      problems.append(f"process {p} called the teacher ({len(ids)} images)")
    answered.update(ids)
  for i in sorted(answered):
    if answered[i] > 1:
      problems.append(f"image {i} answered {answered[i]} times")
    if i not in asked:
      problems.append(f"image {i} answered but never asked")
  problems += [f"image {i} never answered" for i in asked
               if i not in answered]
  return problems


def test_process_zero_alone_pays_and_everyone_gets_its_answers(tmp_path):
  res = run_processes(tmp_path, "paid_once")
  for p, r in enumerate(res):
    assert r["ok"], r.get("error")
    assert r["info"] == dict(
        process_count=2, process_index=p, local_devices=2, devices=4,
        collectives="gloo", distributed=True, primary=p == 0)
    # broadcast: process 0's values, bit for bit (int64 > 2**31, -0.0).
    assert r["broadcast"] == {"a": [0.0, 1.0, 2.0, 3.0, 4.0],
                              "b": [2 ** 40], "c": [0.0]}
    assert r["broadcast_dtypes"] == {"a": "<f4", "b": "<i8", "c": "<f4"}
    assert r["broadcast_signbit"]
    assert r["object"] == {"picks": [3, 1, 4], "round": 2}
    assert r["allgather"] == [[0, 10], [1, 11]]  # process_allgather on CPU
    # gather_rows: slices of 3 and 4 rows, back in order everywhere.
    assert r["range"] == [[0, 3], [3, 7]][p]
    assert r["gather"] == [[i, i + 0.5] for i in range(worker.N_ROWS)]
    assert "process 1 passed 1 rows" in r["gather_mismatch"]
    assert r["gather_one"] == [[5.0, 5.0]]  # process 0's slice is empty
    assert r["empty"] == ["", [0, 3], ""]
    # primary_teacher: attributes read through, answers identical.
    assert r["attrs"] == ["logging-teacher", True]
    np.testing.assert_array_equal(
        r["direct"], worker.answers(worker.images(range(8))))
    assert r["oracle"] == res[0]["oracle"] and r["oracle_spent"] == 6
    assert r["after_failure"] == [[14.0, -14.0, 7.0]]
    assert "lockstep" in r["mismatch"]
    assert r["restored"] == {"step": 3, "w": [[0, 1, 2], [3, 4, 5]]}
    assert r["meta"] == {"round": 1}
  # Request ids reach the real teacher (process 0 only).
  assert res[0]["request_ids"][:2] == ["r0", "r1"]
  assert len(res[0]["request_ids"]) == 6 and res[1]["request_ids"] == []
  # A failing teacher raises as itself on 0 and as JaxkdError on 1.
  assert res[0]["failure"] == ["RuntimeError", "teacher down for image 99"]
  assert res[1]["failure"][0] == "JaxkdError"
  assert "teacher down for image 99" in res[1]["failure"][1]
  assert paid_once_problems(tmp_path, ASKED) == []
  assert teacher_log(tmp_path, 1) is None


def test_the_check_catches_every_process_paying(tmp_path):
  res = run_processes(tmp_path, "raw")
  for r in res:
    assert r["ok"], r.get("error")
  # The answers agree, so only the teacher's own log shows the double bill.
  assert res[0]["direct"] == res[1]["direct"]
  assert res[0]["oracle"] == res[1]["oracle"]
  problems = paid_once_problems(tmp_path, ASKED)
  assert f"process 1 called the teacher ({len(ASKED)} images)" in problems
  assert problems.count("image 0 answered 2 times") == 1
  assert len([m for m in problems if m.endswith("answered 2 times")]) == len(
      ASKED)


def test_checkpoint_on_process_zero_alone(tmp_path):
  # Checkpointer gives orbax one active process each (process 0 the only
  # writer), so no orbax barrier waits for the other processes.
  res = run_processes(tmp_path, "ckpt_primary")
  assert res[0]["ok"], res[0].get("error")
  assert res[0]["restored"] == {"step": 3, "w": [[0, 1, 2], [3, 4, 5]]}
  assert os.path.isdir(os.path.join(tmp_path, "ckpt", "1"))


class TestOneProcess:
  """In one process every helper is the identity and runs no collective."""

  def test_helpers_are_identities(self):
    assert not multihost.is_distributed() and multihost.is_primary()
    tree = {"a": np.arange(3, dtype=np.int64), "b": [np.float32(-0.0)]}
    got = multihost.broadcast(tree)
    np.testing.assert_array_equal(got["a"], tree["a"])
    assert multihost.broadcast_object({"x": [1]}) == {"x": [1]}
    assert multihost.broadcast_bytes(b"ab") == b"ab"
    assert multihost.shard_range(7) == (0, 7)
    rows = np.ones((7, 2), np.float32)
    assert multihost.gather_rows(rows, 7) is rows
    with pytest.raises(JaxkdError, match="expected 8"):
      multihost.gather_rows(rows, 8)
    with pytest.raises(JaxkdError, match="int >= 0"):
      multihost.shard_range(-1)
    multihost.sync("nothing to wait for")
    assert multihost.local_mesh().devices.size == len(
        multihost.jax.local_devices())

  def test_primary_teacher_calls_through_and_keeps_attributes(self):
    calls = []

    def fn(images, request_id=None):
      calls.append(request_id)
      fn.model_id = f"m{len(calls)}"  # set after each call, as http_teacher
      return np.zeros((len(images), 2), np.float32)
    fn.accepts_request_id = True
    fn.teacher_id = "tid"
    fn.model_id = None
    wrapped = multihost.primary_teacher(fn)
    assert wrapped.teacher_id == "tid" and wrapped.accepts_request_id
    assert wrapped.__name__ == "fn" and wrapped.__wrapped__ is fn
    out = wrapped(np.zeros((3, 1, 1, 1), np.float32), request_id="r")
    assert out.shape == (3, 2) and calls == ["r"]
    assert wrapped.model_id == "m1"  # read live, not copied at wrap time
    assert getattr(wrapped, "missing", "default") == "default"
