"""The HTTP teacher's security and resource bounds, client and server.

Every server binds 127.0.0.1 on a free port: the bundled one around a NumPy
linear teacher, or a tiny `http.server` handler written here (a redirecting,
a dripping or a lying teacher). Every loop is bounded in count and time.
"""

import http.server
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from jaxkd.http_teacher import API_KEY_ENV, http_teacher, idempotency_key
from jaxkd.serve_teacher import is_loopback, make_server
from jaxkd.validation import JaxkdError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
W = np.random.default_rng(1).normal(size=(9, 4)) * 3.0
KEY = "k3y-0f-the-teacher"


def np_logits(x):
  return np.asarray(x, np.float64).reshape(len(x), -1) @ W


def _images(n=5, seed=0):
  return np.random.default_rng(seed).random((n, 3, 3, 1)).astype(np.float32)


def _one_line_error(match):
  return pytest.raises(JaxkdError, match=match)


@pytest.fixture
def serve():
  """Starts the bundled server (`serve(**make_server options)`)."""
  servers = []

  def start(predict=np_logits, **kw):
    s = make_server(predict, "127.0.0.1", 0, **kw).start()
    servers.append(s)
    return s
  yield start
  for s in servers:
    s.close()


@pytest.fixture
def tiny():
  """Starts a tiny `http.server` around a handler class written here;
  `server.stop` (an Event) ends the handlers' bounded loops at teardown."""
  servers = []

  def start(handler):
    s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    s.daemon_threads = True
    s.stop, s.seen = threading.Event(), []
    s.url = f"http://127.0.0.1:{s.server_address[1]}"
    threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.05},
                     daemon=True).start()
    servers.append(s)
    return s
  yield start
  for s in servers:
    s.stop.set()
    s.shutdown()
    s.server_close()


class _Quiet(http.server.BaseHTTPRequestHandler):

  def log_message(self, *args):
    pass

  def _take_body(self):
    self.server.seen.append(dict(self.headers))
    self.rfile.read(int(self.headers.get("Content-Length") or 0))


def _client(url, **kw):
  kw = dict(dict(timeout=2.0, backoff=0.01, max_backoff=0.05), **kw)
  return http_teacher(url, **kw)


# ------------------------------------------------------------ redirects ---


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
@pytest.mark.parametrize("own_session", [False, True])
def test_redirects_are_refused_and_the_other_host_never_contacted(
    tiny, status, own_session):

  class Elsewhere(_Quiet):

    def do_POST(self):
      self._take_body()
      self.send_response(200)
      self.end_headers()

    do_GET = do_POST

  class Redirect(_Quiet):

    def do_POST(self):
      self._take_body()
      self.send_response(status)
      self.send_header("Location", other.url + "/steal")
      self.send_header("Content-Length", "0")
      self.end_headers()

  other = tiny(Elsewhere)
  first = tiny(Redirect)
  session = urllib.request.build_opener() if own_session else None
  fn = _client(first.url, api_key=KEY, session=session)
  with _one_line_error(rf"HTTP {status}, a redirect to "
                       rf"'{other.url}/steal'; redirects are not followed"
                       ) as e:
    fn(_images(2))
  assert "\n" not in str(e.value) and KEY not in str(e.value)
  assert other.seen == []  # never contacted: neither the key nor the images
  assert len(first.seen) == 1 and fn.stats["attempts"] == 1
  assert first.seen[0]["Authorization"] == f"Bearer {KEY}"


# ------------------------------------------------------------- deadline ---


def _drip_handler(where):
  """Answers a POST with the status line, then drips one byte every
  0.2 s: into the headers ("headers") or the body ("body"), at most 100
  bytes (20 s), until the client leaves or the test ends."""

  class Drip(_Quiet):

    def do_POST(self):
      self._take_body()
      head = b"HTTP/1.0 200 OK\r\n"
      if where == "body":
        head += (b"Content-Type: application/x-npy\r\nContent-Length: "
                 b"100000\r\n\r\n")
      else:
        head += b"X-Slow: "
      try:
        self.wfile.write(head)
        for _ in range(100):
          if self.server.stop.wait(0.2):
            break
          self.wfile.write(b"a")
      except OSError:  # the client left
        pass
      self.close_connection = True

  return Drip


@pytest.mark.parametrize("where", ["headers", "body"])
def test_a_dripping_teacher_cannot_hold_a_call_past_its_deadline(tiny, where):
  s = tiny(_drip_handler(where))
  fn = _client(s.url, timeout=1.0, deadline=1.5, retries=3)
  t0 = time.monotonic()
  with _one_line_error(r"did not answer within the call's deadline of 1.5 s "
                       r"\(attempt 1 was still running"):
    fn(_images(2))
  took = time.monotonic() - t0
  assert 1.5 <= took < 1.5 + 0.7, took  # each byte came within `timeout`


def test_retries_stop_at_the_deadline(serve):
  s = serve()
  s.close()  # refuses every connection: retried with backoff
  waits = []
  fn = http_teacher(s.url, timeout=1.0, deadline=2.0, retries=50,
                    backoff=0.4, max_backoff=0.4, jitter=False,
                    sleep=lambda t: (waits.append(t), time.sleep(t)))
  t0 = time.monotonic()
  with _one_line_error(r"deadline of 2 s \(\d+ attempts, the next one due "
                       r"after 0.4 s; last failure: .*(Refused|Connection)"):
    fn(_images(2))
  took = time.monotonic() - t0
  assert took < 2.0 and 3 <= len(waits) <= 5  # 0.4 s each, none past 2 s


def test_deadline_default_and_validation():
  assert http_teacher("http://127.0.0.1:1", timeout=2.0).deadline == 8.0
  assert http_teacher("http://127.0.0.1:1", deadline=3).deadline == 3
  for bad in (0, -1.0, float("inf"), "5", True):
    with _one_line_error(r"deadline must be a finite number > 0"):
      http_teacher("http://127.0.0.1:1", deadline=bad)


# -------------------------------------------------------------- answers ---


def _answer_handler(ctype, body):

  class Fixed(_Quiet):

    def do_POST(self):
      self._take_body()
      self.send_response(200)
      self.send_header("Content-Type", ctype)
      self.send_header("Content-Length", str(len(body)))
      self.end_headers()
      self.wfile.write(body)

  return Fixed


def _npy(arr, pickle=False):
  buf = io.BytesIO()
  np.save(buf, arr, allow_pickle=pickle)
  return buf.getvalue()


@pytest.mark.parametrize("body,match", [
    ({"logits": [["1", "2"]]}, "found str '1'"),
    ({"logits": [[True, False]]}, "found bool True"),
    ({"logits": [[1.5, True]]}, "found bool True"),  # mixed: np would pass
    ({"logits": [[None, 1.0]]}, "found NoneType None"),
    ({"probs": [["0.5", "0.5"]]}, "found str"),
    ({"logits": [[{"x": 1}, 2.0]]}, "found dict"),
    ({"logits": [1.0, 2.0]}, "list of lists"),
    ({"logits": [[1.0, 2.0], [3.0]]}, "different lengths"),
    ([["1", "2"]], "found str"),
])
def test_json_answers_that_are_not_numbers_are_refused(tiny, body, match):
  s = tiny(_answer_handler("application/json", json.dumps(body).encode()))
  with _one_line_error(rf"malformed answer \(.*{match}") as e:
    _client(s.url)(_images(1))
  assert "\n" not in str(e.value)


def test_json_integers_are_numbers(tiny):
  s = tiny(_answer_handler("application/json",
                           json.dumps({"logits": [[1, -2, 3]]}).encode()))
  got = _client(s.url)(_images(1))
  assert got.dtype == np.float32
  np.testing.assert_array_equal(got, [[1.0, -2.0, 3.0]])


@pytest.mark.parametrize("arr,pickle,match", [
    (np.array([[True, False]]), False, "dtype bool"),
    (np.array([[1, 2]], np.int64), False, "dtype int64"),
    (np.array([["1", "2"]]), False, "dtype <U1"),
    (np.array([[1.0, 2.0]], object), True, "pickled|allow_pickle|Object"),
    (np.array([[1 + 2j, 3j]]), False, "dtype complex128"),
])
def test_npy_answers_need_a_float_dtype(tiny, arr, pickle, match):
  s = tiny(_answer_handler("application/x-npy", _npy(arr, pickle)))
  with _one_line_error(rf"malformed answer \(.*({match})"):
    _client(s.url)(_images(1))


def test_an_answer_cut_short_is_retried(tiny):
  good = _npy(np.array([[0.5, -1.0]], np.float32))

  class CutOnce(_Quiet):

    def do_POST(self):
      self._take_body()
      self.send_response(200)
      self.send_header("Content-Type", "application/x-npy")
      self.send_header("Content-Length", str(len(good)))
      self.end_headers()
      first = len(self.server.seen) == 1
      self.wfile.write(good[:10] if first else good)
      self.close_connection = True

  s = tiny(CutOnce)
  fn = _client(s.url)
  np.testing.assert_array_equal(fn(_images(1)), [[0.5, -1.0]])
  assert fn.stats["attempts"] == 2 and len(s.seen) == 2


def test_float16_npy_answers_are_accepted(tiny):
  s = tiny(_answer_handler("application/x-npy",
                           _npy(np.array([[0.5, -1.0]], np.float16))))
  np.testing.assert_array_equal(_client(s.url)(_images(1)), [[0.5, -1.0]])


# ----------------------------------------------------------------- URLs ---


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:99999", "http://127.0.0.1:65536", "http://127.0.0.1:0",
    "http://127.0.0.1:-1", "http://127.0.0.1:abc", "file:///etc/passwd",
    "ftp://example.com", "gopher://example.com", "javascript:alert(1)",
    "http://", "http:///path", "//example.com", "example.com:80",
    "http://exa mple.com", "http://example.com/\n", "http://ex\x00.com",
    None, 8080,
])
def test_bad_urls_are_refused(url):
  with _one_line_error(r"http\(s\)://host\[:port\]\[/path\] with a port in "
                       r"1\.\.65535") as e:
    http_teacher(url)
  assert "\n" not in str(e.value)


def test_urls_with_credentials_are_refused_and_good_ones_accepted():
  with _one_line_error("must not hold credentials"):
    http_teacher("http://user:pw@127.0.0.1:8000")
  for url in ("http://127.0.0.1:1", "http://127.0.0.1:65535/predict",
              "https://teacher.example.com/v1?x=1", "HTTP://localhost",
              "http://[::1]:8080/"):
    assert http_teacher(url).url == url


# ------------------------------------------------------------------ auth ---


def _get(url, headers=None):
  req = urllib.request.Request(url, headers=headers or {})
  try:
    with urllib.request.urlopen(req, timeout=5) as r:
      return r.status, json.load(r)
  except urllib.error.HTTPError as e:
    with e:
      return e.code, json.load(e)


def test_a_server_with_a_key_answers_only_requests_that_carry_it(
    serve, tmp_path, monkeypatch):
  monkeypatch.delenv(API_KEY_ENV, raising=False)
  s = serve(api_key=KEY)
  x = _images(5)
  with _one_line_error(r"HTTP 401: .*missing or wrong API key.*no key was "
                       r"sent: pass api_key= or set JAXKD_TEACHER_API_KEY"):
    _client(s.url)(x)
  with _one_line_error(r"HTTP 401.*the key was not accepted") as e:
    _client(s.url, api_key="wrong-key")(x)
  assert "wrong-key" not in str(e.value)
  with _one_line_error(r"HTTP 401"):
    _client(s.url, headers={"Authorization": f"Basic {KEY}"})(x)
  assert s.stats() == {"answered_images": 0, "requests": 0, "keys": 0,
                       "replays": 0}  # refused before anything is counted
  got = _client(s.url, api_key=KEY)(x, request_id="a")
  np.testing.assert_allclose(got, np_logits(x), rtol=1e-5, atol=1e-5)
  path = tmp_path / "key.txt"
  path.write_text(f"  {KEY}\n")
  _client(s.url, api_key_file=str(path))(x, request_id="b")
  monkeypatch.setenv(API_KEY_ENV, KEY)
  _client(s.url)(x, request_id="c")  # the environment's key by default
  _client(s.url, headers={"Authorization": f"bearer {KEY}"})(x,
                                                            request_id="d")
  assert s.stats()["answered_images"] == 20
  # Reads need the key too; the health check does not.
  assert _get(s.url + "/stats")[0] == 401
  assert _get(s.url + "/info", {"Authorization": "Bearer nope"})[0] == 401
  assert _get(s.url + "/stats", {"Authorization": f"Bearer {KEY}"}) == (
      200, s.stats())
  assert _get(s.url + "/health") == (200, {"ok": True})


def test_client_key_arguments_are_checked(tmp_path, monkeypatch):
  url = "http://127.0.0.1:1"
  with _one_line_error("not both"):
    http_teacher(url, api_key="a", api_key_file="b")
  with _one_line_error("not both"):
    http_teacher(url, api_key="a", headers={"authorization": "Bearer a"})
  with _one_line_error("cannot read the teacher's api_key_file"):
    http_teacher(url, api_key_file=str(tmp_path / "missing"))
  (tmp_path / "empty").write_text(" \n")
  with _one_line_error("is empty"):
    http_teacher(url, api_key_file=str(tmp_path / "empty"))
  with _one_line_error("one printable ASCII token") as e:
    http_teacher(url, api_key="two words")
  assert "two words" not in str(e.value)
  monkeypatch.setenv(API_KEY_ENV, "bad\x01key")
  with _one_line_error(r"\$JAXKD_TEACHER_API_KEY holds"):
    http_teacher(url)


def test_only_loopback_hosts_are_loopback():
  for host in ("127.0.0.1", "127.8.9.10", "localhost", "LOCALHOST", "::1",
               "[::1]"):
    assert is_loopback(host), host
  for host in ("0.0.0.0", "", "::", "10.0.0.1", "192.168.1.2",
               "teacher.example.com"):
    assert not is_loopback(host), host


def _cli(*args, timeout=120):
  return subprocess.run(
      [sys.executable, "-m", "jaxkd.serve_teacher", *args], cwd=ROOT,
      capture_output=True, text=True, timeout=timeout,
      env=dict(os.environ, PYTHONPATH=ROOT))


def test_non_loopback_bind_without_a_key_is_refused_at_start(tmp_path):
  nowhere = str(tmp_path / "nowhere")
  r = _cli("--checkpoint", nowhere, "--host", "0.0.0.0", "--port", "0")
  assert r.returncode == 2 and r.stdout == ""
  assert r.stderr.count("\n") == 1 and "--api-key-file" in r.stderr
  (tmp_path / "empty").write_text("\n")
  r = _cli("--checkpoint", nowhere, "--host", "0.0.0.0", "--api-key-file",
           str(tmp_path / "empty"))
  assert r.returncode == 2 and "is empty" in r.stderr
  # The explicit flag lets it through to loading (which fails: no teacher).
  r = _cli("--checkpoint", nowhere, "--host", "0.0.0.0", "--insecure-no-auth")
  assert r.returncode == 1 and "no teacher checkpoint" in r.stderr
  assert "without a key" in r.stderr


# ----------------------------------------------------- slow connections ---


def test_slow_clients_do_not_stop_a_real_client_and_threads_stay_bounded(
    serve):
  s = serve(max_workers=8, request_timeout=1.0)
  base = threading.active_count()
  slow, peak, t0 = [], 0, time.monotonic()
  try:
    for _ in range(200):  # connect and send nothing
      slow.append(socket.create_connection(s.server_address, timeout=5))
    peak = max(peak, threading.active_count())
    x = _images(4)
    got = _client(s.url, timeout=2.0, deadline=8.0, retries=20,
                  backoff=0.2, max_backoff=0.5)(x)
    took = time.monotonic() - t0
    np.testing.assert_allclose(got, np_logits(x), rtol=1e-5, atol=1e-5)
    assert took < 5.0, took
    # The sockets beyond the workers were answered 503 at once.
    busy = 0
    for c in slow:
      c.settimeout(0.01)
      try:
        busy += c.recv(64).startswith(b"HTTP/1.0 503")
      except OSError:
        pass
    while time.monotonic() - t0 < 3.0:  # keep them open a few seconds
      peak = max(peak, threading.active_count())
      time.sleep(0.1)
    assert busy >= 200 - 8 - 8, busy
  finally:
    for c in slow:
      c.close()
  assert peak <= base + 8 + 4, (base, peak)  # workers + the client's own


def test_a_client_dripping_its_request_is_dropped_at_the_timeout(serve):
  s = serve(request_timeout=1.0)
  c = socket.create_connection(s.server_address, timeout=5)
  t0, got = time.monotonic(), b""
  try:
    for ch in b"POST / HTTP/1.0\r\nX-Pad: " + b"a" * 40:  # 0.1 s a byte
      c.sendall(bytes([ch]))
      time.sleep(0.1)
      c.settimeout(0.001)
      try:
        got = c.recv(4096)
        break  # answered (an error) or closed (b"")
      except socket.timeout:
        pass
      finally:
        c.settimeout(5)
  except OSError:  # reset by the server
    pass
  finally:
    c.close()
  took = time.monotonic() - t0
  assert took < 1.0 + 0.8, (took, got)
  assert s.stats()["requests"] == 0


# ---------------------------------------------------------------- cache ---


@pytest.mark.parametrize("db", [False, True])
def test_the_cache_keeps_its_size_and_age_bounds(serve, tmp_path, db):
  path = str(tmp_path / "idem.sqlite") if db else None
  s = serve(cache_size=3, cache_ttl=60.0, idempotency_db=path)
  fn = _client(s.url)
  x = _images(2)
  for i in range(7):
    fn(x, request_id=f"r{i}")
    assert len(s.store) == min(i + 1, 3)
  assert sorted(s.answered_keys) == [idempotency_key(f"r{i}", x)
                                     for i in (4, 5, 6)]
  assert s.stats()["answered_images"] == 14
  fn(x, request_id="r6")  # still kept: a replay, not billed
  assert s.stats()["answered_images"] == 14 and s.stats()["replays"] == 1
  fn(x, request_id="r0")  # evicted: answered (and billed) anew
  assert s.stats()["answered_images"] == 16 and len(s.store) == 3
  s2 = serve(cache_size=3, cache_ttl=0.3, idempotency_db=None if not db
             else str(tmp_path / "idem2.sqlite"))
  fn2 = _client(s2.url)
  fn2(x, request_id="old")
  fn2(x, request_id="old")
  assert s2.stats()["answered_images"] == 2
  time.sleep(0.5)
  fn2(x, request_id="old")  # expired
  assert s2.stats()["answered_images"] == 4 and s2.stats()["replays"] == 1


def test_a_restarted_server_replays_a_key_from_its_store_and_bills_once(
    serve, tmp_path):
  path = str(tmp_path / "idem.sqlite")
  s = serve(idempotency_db=path)
  x = _images(5, seed=7)
  first = _client(s.url)(x, request_id="r1")
  assert s.stats()["answered_images"] == 5
  s.close()
  s2 = serve(idempotency_db=path)  # a new process would read the same file
  assert s2.stats() == {"answered_images": 5, "requests": 0, "keys": 1,
                        "replays": 0}
  calls = []
  s2.predict_fn = lambda im: calls.append(len(im)) or np_logits(im)
  again = _client(s2.url)(x, request_id="r1")
  np.testing.assert_array_equal(again, first)
  assert calls == []  # answered from the store, not by the model
  assert s2.stats() == {"answered_images": 5, "requests": 1, "keys": 1,
                        "replays": 1}


# ------------------------------------------------------------ body size ---


def test_an_oversized_json_body_is_refused_with_413_before_it_is_read(serve):
  s = serve(max_json=100_000)
  c = socket.create_connection(s.server_address, timeout=5)
  try:  # headers claiming 200 MB, and no body at all
    c.sendall(b"POST / HTTP/1.0\r\nContent-Type: application/json\r\n"
              b"Content-Length: 200000000\r\n\r\n")
    t0 = time.monotonic()
    got = b""
    while b"}" not in got and time.monotonic() - t0 < 1.0:  # the JSON error
      got += c.recv(4096)
    assert time.monotonic() - t0 < 1.0
  finally:
    c.close()
  assert got.startswith(b"HTTP/1.0 413"), got
  assert b"JSON body of 200000000 bytes; at most 100000" in got
  # Through the client: a 3.6 MB JSON batch is refused, as one line (the
  # server drains what it refused, so the client reads the 413, not a reset).
  x = np.random.default_rng(0).random((20000, 3, 3, 1)).astype(np.float32)
  fn = _client(s.url, format="json", timeout=10.0)
  with _one_line_error(r"HTTP 413: JSON body of \d+ bytes; at most 100000; "
                       r"send application/x-npy"):
    fn(x)
  assert fn.stats["attempts"] == 1
  # The same batch as .npy (below the binary limit) is answered.
  np.testing.assert_allclose(_client(s.url, timeout=10.0)(x), np_logits(x),
                             rtol=1e-4, atol=1e-4)
  assert s.stats()["answered_images"] == 20000
