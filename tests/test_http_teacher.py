"""The HTTP teacher against the bundled server: answers, faults, ledger.

Servers run in threads on free loopback ports around a NumPy linear
teacher; every expected answer is computed here in float64 NumPy.
"""

import json
import os
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from jaxkd.http_teacher import http_teacher, idempotency_key
from jaxkd.serve_teacher import load_teacher
from jaxkd.teacher import TeacherOracle
from jaxkd.validation import JaxkdError

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
WORKER = os.path.join(HERE, "http_crash_worker.py")
sys.path.insert(0, HERE)
import http_crash_worker as worker  # noqa: E402
from faulty_teacher_server import make_server  # noqa: E402

W = np.random.default_rng(1).normal(size=(9, 4)) * 3.0


def np_logits(x):
  return np.asarray(x, np.float64).reshape(len(x), -1) @ W


def np_softmax(z):
  e = np.exp(z - z.max(1, keepdims=True))
  return e / e.sum(1, keepdims=True)


def _images(n=5, seed=0):
  return np.random.default_rng(seed).random((n, 3, 3, 1)).astype(np.float32)


@pytest.fixture
def serve():
  servers = []

  def start(predict=np_logits, **kw):
    s = make_server(predict, "127.0.0.1", 0, **kw).start()
    servers.append(s)
    return s
  yield start
  for s in servers:
    s.close()


def _client(url, **kw):
  kw = dict(dict(timeout=2.0, backoff=0.01, max_backoff=0.05), **kw)
  return http_teacher(url, **kw)


def _one_line_error(match):
  return pytest.raises(JaxkdError, match=match)


# -------------------------------------------------------------- answers ---


@pytest.mark.parametrize("fmt", ["npy", "json", "auto"])
def test_answers_equal_local_predict(serve, fmt):
  s = serve()
  x = _images(7)
  got = _client(s.url, format=fmt)(x, request_id="r1")
  assert got.dtype == np.float32 and got.shape == (7, 4)
  np.testing.assert_allclose(got, np_logits(x), rtol=1e-5, atol=1e-5)
  with urllib.request.urlopen(s.url + "/stats") as r:
    stats = json.load(r)
  assert stats == {"answered_images": 7, "requests": 1, "keys": 1,
                   "replays": 0}


def test_probability_server_gives_log_probs_the_oracle_softmax_recovers(
    serve):
  s = serve(output="probs")
  x = _images(6)
  got = _client(s.url)(x)
  np.testing.assert_allclose(np_softmax(got.astype(np.float64)),
                             np_softmax(np_logits(x)), atol=1e-6)


def test_auto_switches_to_json_when_the_server_refuses_npy(serve):
  s = serve(formats=("json",))
  fn = _client(s.url)
  x = _images(3)
  np.testing.assert_allclose(fn(x), np_logits(x), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(fn(x[:2]), np_logits(x[:2]), rtol=1e-5,
                             atol=1e-5)
  assert s.stats()["requests"] == 3  # one 415, then JSON only
  assert s.stats()["answered_images"] == 5


def test_repeated_key_is_answered_from_the_cache_and_not_counted(serve):
  s = serve()
  x = _images(4)
  fn = _client(s.url)
  a = fn(x, request_id="same")
  b = fn(x, request_id="same")
  np.testing.assert_array_equal(a, b)
  assert s.stats() == {"answered_images": 4, "requests": 2, "keys": 1,
                       "replays": 1}
  fn(x, request_id="other")  # a new request id is a new (paid) request
  assert s.stats()["answered_images"] == 8


def test_same_key_with_other_images_is_refused(serve):
  s = serve()
  x = _images(2)
  body = json.dumps({"images": x.tolist()}).encode()
  key = idempotency_key("k", x)
  hdrs = {"Content-Type": "application/json", "Idempotency-Key": key}
  urllib.request.urlopen(urllib.request.Request(s.url, body, hdrs)).read()
  other = json.dumps({"images": (x + 0.5).tolist()}).encode()
  with pytest.raises(urllib.error.HTTPError) as e:
    urllib.request.urlopen(urllib.request.Request(s.url, other, hdrs))
  assert e.value.code == 422
  assert s.stats()["answered_images"] == 2


# --------------------------------------------------------------- faults ---


@pytest.mark.parametrize("fault,replays", [
    ("drop", 1),          # answered and paid, then the connection broke
    ("drop_before", 0),   # broke before the model ran
    ("500", 0), ("503", 0), ("429:0.01", 0),
    ("slow:1.2", 1),      # past the 0.5 s timeout: the retry is answered,
])                        # the slow request then finds its key answered
def test_transient_faults_are_retried_and_paid_once(serve, fault, replays):
  s = serve(faults={1: fault})
  slow = fault.startswith("slow")
  fn = _client(s.url, timeout=0.5 if slow else 5.0)
  x = _images(5)
  np.testing.assert_allclose(fn(x, request_id="r"), np_logits(x), rtol=1e-5,
                             atol=1e-5)
  assert fn.stats["attempts"] >= 2 if slow else fn.stats["attempts"] == 2
  deadline = time.time() + 10
  while s.stats()["replays"] < replays and time.time() < deadline:
    time.sleep(0.05)
  st = s.stats()
  assert st["answered_images"] == 5 and st["keys"] == 1
  assert st["replays"] == replays


def test_backoff_is_exponential_capped_and_honours_retry_after(serve):
  waits = []
  s = serve(faults={1: "500", 2: "500", 3: "500", 4: "500", 5: "429:1.5"})
  fn = http_teacher(s.url, timeout=2.0, retries=5, backoff=0.1,
                    max_backoff=0.3, jitter=False, sleep=waits.append)
  fn(_images(2))
  np.testing.assert_allclose(waits, [0.1, 0.2, 0.3, 0.3, 1.5])
  waits.clear()
  s2 = serve(faults={1: "500", 2: "500", 3: "500"})
  http_teacher(s2.url, backoff=0.1, max_backoff=10, sleep=waits.append)(
      _images(2))
  base = np.array([0.1, 0.2, 0.4])
  assert np.all((np.array(waits) >= base / 2) & (np.array(waits) <= base))


def test_exhausted_retries_name_the_attempts_and_the_last_cause(serve):
  s = serve(faults={n: "503" for n in range(1, 10)})
  with _one_line_error(r"failed after 3 attempts .*HTTP 503") as e:
    _client(s.url, retries=2)(_images(2))
  assert "\n" not in str(e.value) and s.stats()["requests"] == 3
  assert s.stats()["answered_images"] == 0
  s.close()  # nothing listens there now
  with _one_line_error(r"failed after 2 attempts .*(Refused|Connection)"):
    _client(s.url, retries=1)(_images(2))


def test_retry_after_beyond_the_limit_ends_the_call(serve):
  s = serve(faults={1: "429:3600"})
  with _one_line_error(r"asked to retry after 3600 s"):
    _client(s.url, sleep=lambda t: None)(_images(2))


def test_client_errors_are_one_line_and_not_retried(serve):
  s = serve(faults={1: "400"}, input_shape=(3, 3, 1))
  fn = _client(s.url)
  with _one_line_error(r"refused the batch: HTTP 400.*injected") as e:
    fn(_images(2))
  assert "\n" not in str(e.value)
  with _one_line_error(r"HTTP 400.*shape \(4, 4, 1\)"):
    fn(np.zeros((2, 4, 4, 1), np.float32))
  assert s.stats()["requests"] == 2 and s.stats()["answered_images"] == 0
  for bad in ("ftp://x", "http://", "localhost:80"):
    with _one_line_error(r"http\(s\)://host"):
      http_teacher(bad)
  with _one_line_error(r"retries must be"):
    http_teacher(s.url, retries=-1)


@pytest.mark.parametrize("fault,match", [
    ("nan", "NaN or inf"), ("shape", r"shape \(5, 1\)"),
    ("batch", r"shape \(4, 4\) for 5 images"), ("garbage", "malformed"),
])
def test_malformed_answers_are_one_line_errors(serve, fault, match):
  s = serve(faults={1: fault})
  with _one_line_error(match) as e:
    _client(s.url)(_images(5))
  assert "\n" not in str(e.value) and s.stats()["requests"] == 1


def test_probabilities_that_are_not_a_distribution_are_refused(serve):
  s = serve(output="probs", faults={1: "scale"})  # rows sum to 2
  with _one_line_error("not a distribution"):
    _client(s.url)(_images(3))


# --------------------------------------------------------------- ledger ---


def _ledger_keys(path):
  with sqlite3.connect(path) as db:
    return [k for (k,) in db.execute("SELECT key FROM answers")]


def test_oracle_over_http_pays_each_image_once(serve, tmp_path):
  faults = {2: "drop", 4: "500", 5: "slow:0.5", 7: "429:0.01"}
  s = serve(faults=faults)
  pool = _images(30, seed=3)
  path = str(tmp_path / "ledger.sqlite")
  oracle = TeacherOracle(_client(s.url, timeout=0.3), pool, budget=30,
                         ledger_path=path, batch_size=4)
  got = oracle.query(np.arange(10), round=0)
  got2 = oracle.query(np.arange(5, 22), round=1)  # 5..9 are free
  oracle.close()
  np.testing.assert_allclose(got, np_softmax(np_logits(pool[:10])),
                             atol=1e-6)
  np.testing.assert_allclose(got2, np_softmax(np_logits(pool[5:22])),
                             atol=1e-6)
  time.sleep(0.4)  # let the slow handler finish
  keys = _ledger_keys(path)
  assert sorted(keys) == sorted(f"p:{i}" for i in range(22))
  assert s.stats()["answered_images"] == len(keys) == 22


def test_client_killed_after_the_answer_resumes_and_pays_once(serve,
                                                              tmp_path):
  s = serve()
  ledger = str(tmp_path / "run" / "ledger.sqlite")
  env = dict(os.environ, PYTHONPATH=ROOT)
  cmd = [sys.executable, WORKER, s.url, ledger]
  # Dies after the server answered call 2, before the oracle committed it.
  r = subprocess.run(cmd + ["--die-after-call", "2"], env=env,
                     capture_output=True, text=True, timeout=120)
  assert r.returncode == -9, r.stderr[-2000:]
  assert len(_ledger_keys(ledger)) == worker.BATCH
  assert s.stats()["answered_images"] == 2 * worker.BATCH
  r = subprocess.run(cmd, env=env, capture_output=True, text=True,
                     timeout=120)
  assert r.returncode == 0, r.stderr[-2000:]
  total = worker.ROUNDS * worker.PER_ROUND
  assert r.stdout.split() == ["done", str(total)]
  keys = _ledger_keys(ledger)
  assert len(keys) == len(set(keys)) == total
  st = s.stats()
  # Every image paid once: the server's distinct keys cover exactly the
  # ledger's rows, and the batch resent under its old key cost nothing.
  assert st["answered_images"] == sum(s.answered_keys.values()) == total
  assert st["replays"] == 1
  want = {f"p:{i}" for r in range(worker.ROUNDS) for i in worker.schedule(r)}
  assert set(keys) == want


# ------------------------------------------------------------------ CLI ---


def _save_tiny_teacher(workdir, meta_extra=True):
  import jax
  from jaxkd import train
  from jaxkd.checkpoint import Checkpointer
  from jaxkd.models import get_model
  model = get_model("mlp", 3)
  tx = train.make_optimizer("adam", 1e-3, total_steps=10)
  state = train.create_train_state(model, jax.random.key(0), (3, 3, 1), tx)
  meta = {"accuracy": 0.5, "config": {"model": "mlp"}}
  if meta_extra:
    meta.update(num_classes=3, input_shape=[3, 3, 1])
  ckpt = Checkpointer(os.path.join(workdir, "teacher"), max_to_keep=1)
  ckpt.save(0, jax.device_get(state), meta)
  ckpt.close()
  return jax.tree.map(np.asarray, state.params)


def np_mlp(params, x):
  h = np.asarray(x, np.float64).reshape(len(x), -1)
  for name in ("layers_0", "layers_1"):
    h = np.maximum(h @ params[name]["kernel"] + params[name]["bias"], 0)
  return h @ params["head"]["kernel"] + params["head"]["bias"]


def test_serve_teacher_cli_serves_a_saved_teacher(tmp_path):
  params = _save_tiny_teacher(str(tmp_path))
  proc = subprocess.Popen(
      [sys.executable, "-m", "jaxkd.serve_teacher", "--checkpoint",
       str(tmp_path), "--port", "0"], cwd=ROOT, stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=ROOT))
  try:
    line = proc.stdout.readline()
    assert line.startswith("serving on http://127.0.0.1:"), (
        line + proc.stderr.read() if proc.poll() is not None else line)
    url = line.split()[-1]
    x = _images(5, seed=4)
    got = _client(url, timeout=30.0)(x, request_id="cli")
    np.testing.assert_allclose(got, np_mlp(params, x), rtol=1e-4, atol=1e-5)
    with _one_line_error(r"HTTP 400.*takes \(3, 3, 1\)"):
      _client(url)(np.zeros((1, 8, 8, 1), np.float32))
    with urllib.request.urlopen(url + "/stats") as r:
      assert json.load(r)["answered_images"] == 5
  finally:
    proc.terminate()
    proc.wait(timeout=30)


def test_load_teacher_needs_the_model_for_old_checkpoints(tmp_path):
  _save_tiny_teacher(str(tmp_path), meta_extra=False)
  with _one_line_error("pass --model NAME --num-classes N"):
    load_teacher(str(tmp_path))
  _, info, shape = load_teacher(str(tmp_path / "teacher"), num_classes=3)
  assert info["model"] == "mlp" and info["num_classes"] == 3 and shape is None
  with _one_line_error("no teacher checkpoint"):
    load_teacher(str(tmp_path / "nowhere"))



def _np_model_id(variables):
  """sha256 over the leaves in key-path order: "['a']['b']|<f4|(2, 3);"
  then the bytes; 16 hex digits (serve_teacher.model_id's recipe)."""
  import hashlib
  leaves = []

  def walk(prefix, tree):
    if isinstance(tree, dict):
      for k in tree:
        walk(f"{prefix}['{k}']", tree[k])
    else:
      leaves.append((prefix, np.ascontiguousarray(np.asarray(tree))))
  walk("", variables)
  h = hashlib.sha256()
  for path, a in sorted(leaves, key=lambda t: t[0]):
    h.update(f"{path}|{a.dtype.str}|{a.shape};".encode())
    h.update(a.tobytes())
  return h.hexdigest()[:16]


def test_serve_teacher_cli_with_a_key_and_a_store_replays_after_a_restart(
    tmp_path, monkeypatch):
  monkeypatch.delenv("JAXKD_TEACHER_API_KEY", raising=False)
  params = _save_tiny_teacher(str(tmp_path))
  key_file = tmp_path / "key.txt"
  key_file.write_text("s3cret-token\n")
  auth = {"Authorization": "Bearer s3cret-token"}
  cmd = [sys.executable, "-m", "jaxkd.serve_teacher", "--checkpoint",
         str(tmp_path), "--port", "0", "--api-key-file", str(key_file),
         "--idempotency-db", str(tmp_path / "idem.sqlite")]
  env = {k: v for k, v in os.environ.items() if k != "JAXKD_TEACHER_API_KEY"}
  x = _images(5, seed=4)
  answers, stats = [], []
  for _ in range(2):  # the second server is the first one restarted
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env=dict(env, PYTHONPATH=ROOT))
    try:
      line = proc.stdout.readline()
      assert line.startswith("serving on http://127.0.0.1:"), (
          line + proc.stderr.read() if proc.poll() is not None else line)
      url = line.split()[-1]
      with _one_line_error(r"HTTP 401.*no key was sent"):
        _client(url)(x)
      fn = _client(url, timeout=30.0, api_key_file=str(key_file))
      answers.append(fn(x, request_id="cli"))
      with urllib.request.urlopen(urllib.request.Request(
          url + "/stats", headers=auth)) as r:
        stats.append(json.load(r))
      with urllib.request.urlopen(urllib.request.Request(
          url + "/info", headers=auth)) as r:
        info = json.load(r)
    finally:
      proc.terminate()
      proc.wait(timeout=30)
  np.testing.assert_allclose(answers[0], np_mlp(params, x), rtol=1e-4,
                             atol=1e-5)
  np.testing.assert_array_equal(answers[1], answers[0])
  assert stats == [
      {"answered_images": 5, "requests": 1, "keys": 1, "replays": 0},
      {"answered_images": 5, "requests": 1, "keys": 1, "replays": 1}]
  # /info names the model, not where it lives; model_id is its parameters'.
  assert "checkpoint" not in info and str(tmp_path) not in json.dumps(info)
  assert info["model"] == "mlp" and info["num_classes"] == 3
  assert info["input_shape"] == [3, 3, 1] and info["accuracy"] == 0.5
  assert info["model_id"] == _np_model_id({"params": params}) == fn.model_id
  other = _plus_one(params)
  assert _np_model_id({"params": other}) != info["model_id"]


def _plus_one(params):
  return {k: _plus_one(v) if isinstance(v, dict) else v + 1
          for k, v in params.items()}
