"""Serves a teacher over HTTP: `python -m jaxkd.serve_teacher --checkpoint DIR`.

Stands up the paid black-box teacher the active-distillation papers assume,
in one command, from the teacher a jaxkd job saved (`workdir/teacher/`, a
`jaxkd.teacher_training.save_teacher` folder: an orbax checkpoint of the
variables and `teacher.json` naming the model):

  python -m jaxkd.serve_teacher --checkpoint runs/digits/teacher --port 8765
  # serving on http://127.0.0.1:8765

and `jaxkd.http_teacher.http_teacher("http://127.0.0.1:8765")` is its
client (the protocol is in that module's docstring). The server

  * answers POSTed batches (`.npy` or JSON) with logits, in the format of the
    request, with the header `X-Teacher-Model-Id` (`model_id` below);
  * keeps an answer cache per `Idempotency-Key`: a repeated key is answered
    from the cache and not counted (the same key with other images is
    refused, 422); concurrent requests with one key compute it once. The
    cache holds the `cache_size` most recently answered keys younger than
    `cache_ttl` seconds (an older key is answered, and counted, anew); in
    memory, or in SQLite with `idempotency_db`, where it and the billed
    counts outlive a restart;
  * counts what it answered: GET /stats -> {"answered_images": images run
    through the model for new keys (what a paid API would bill),
    "requests": POSTs received, "keys": answers computed under a key,
    "replays": requests answered from the cache}; with `idempotency_db`,
    answered_images and keys are totals over restarts;
  * checks every request before running the model (size, type, shape,
    NaN/inf): 400/411/413/415 with a one-line reason, nothing counted. The
    size is checked from Content-Length before the body is read, a JSON body
    against `max_json` (decoded JSON takes many times its size), a `.npy`
    one against `max_body`;
  * with `api_key`, answers only requests with `Authorization: Bearer
    <key>` (compared in constant time), 401 otherwise; GET /health is open.
    The CLI refuses a non-loopback --host without --api-key-file unless
    --insecure-no-auth (the key travels in clear over http: put the server
    behind TLS off loopback);
  * serves at most `max_workers` connections at a time (one thread each; a
    connection beyond that gets 503 with Retry-After at once) and gives each
    `request_timeout` seconds to send its request, and again to take its
    answer (a socket timeout per wait, and a deadline per phase), then drops
    it;
  * GET /info -> model, num_classes, step, accuracy, model_id, formats,
    output, input_shape (no host paths).

`make_server(predict_fn, host, port)` is the same server around any NumPy
function. A POST is handled in two steps, `TeacherHandler.answer_request`
(decode, check, answer from the cache or the model) and `reply` (encode
and send), so a subclass can act between them (the tests' fault-injecting
server, tests/faulty_teacher_server.py).
"""

from __future__ import annotations

import argparse
import collections
import hmac
import http.server
import ipaddress
import json
import os
import socket
import sqlite3
import sys
import threading
import time
from typing import Callable, Dict, Optional, Sequence, Tuple

import numpy as np

from jaxkd.http_teacher import (JSON, MODEL_ID_HEADER, NPY, OUTPUT_HEADER,
                                api_key_from, decode_npy, encode_npy,
                                images_digest, numeric)
from jaxkd.validation import JaxkdError, is_int

PredictFn = Callable[[np.ndarray], np.ndarray]
MAX_BODY = 256 << 20  # bytes of a .npy request
MAX_JSON = 8 << 20  # bytes of a JSON request
REQUEST_TIMEOUT = 30.0  # seconds to send a request, and to take an answer
MAX_WORKERS = 32  # connections served at once
CACHE_SIZE = 1024  # idempotency keys kept
CACHE_TTL = 86400.0  # seconds a key is kept
JSON_DECODES = 2  # JSON bodies decoded at once
DRAIN_SECONDS = 2.0  # reading (and dropping) a refused body, at most
CHUNK = 1 << 16
HEALTH = "/health"


class _BadRequest(Exception):
  """A refused request; `unread` when its body was not read (it is then
  drained, bounded, so that the client sees the status)."""

  def __init__(self, status: int, msg: str, unread: bool = False):
    super().__init__(msg)
    self.status = status
    self.msg = msg
    self.unread = unread


def _softmax(z):
  z = z - z.max(1, keepdims=True)
  e = np.exp(z)
  return e / e.sum(1, keepdims=True)


def _one_line(text, limit=200) -> str:
  return " ".join(str(text).split())[:limit]


def is_loopback(host: str) -> bool:
  """Whether binding `host` serves this machine only ("localhost" or a
  loopback address; "" and 0.0.0.0 are every interface)."""
  if host.lower() == "localhost":
    return True
  try:
    return ipaddress.ip_address(host.strip("[]")).is_loopback
  except ValueError:
    return False


# ------------------------------------------------------- answer stores ---


class MemoryAnswers:
  """Answers by idempotency key in memory: at most `size` keys, none older
  than `ttl` seconds, the oldest answered leaving first. Not thread-safe
  (the server holds its lock)."""

  def __init__(self, size: int = CACHE_SIZE, ttl: float = CACHE_TTL):
    self.size, self.ttl = int(size), float(ttl)
    # key -> (images digest, logits [B, C], images, answered at)
    self._items: "collections.OrderedDict[str, tuple]" = (
        collections.OrderedDict())

  def get(self, key: str, now: float) -> Optional[Tuple[str, np.ndarray]]:
    """(images digest, logits) answered under `key`, None when absent or
    expired."""
    self._prune(now)
    item = self._items.get(key)
    return None if item is None else (item[0], item[1])

  def put(self, key: Optional[str], digest: str, logits: np.ndarray,
          totals: Tuple[int, int], now: float) -> None:
    """Keeps the answer under `key` (None: nothing kept); `totals`
    (answered images, keys) are the billed counts after it."""
    del totals  # in memory, the server's counters are the record
    if key is not None:
      self._items.pop(key, None)
      self._items[key] = (digest, logits, len(logits), now)
    self._prune(now)

  def totals(self) -> Tuple[int, int]:
    """(answered images, keys) billed before this process: none."""
    return 0, 0

  def images_by_key(self) -> Dict[str, int]:
    return {k: v[2] for k, v in self._items.items()}

  def __len__(self) -> int:
    return len(self._items)

  def close(self) -> None:
    pass

  def _prune(self, now: float) -> None:
    items = self._items
    while items and (len(items) > self.size
                     or next(iter(items.values()))[3] < now - self.ttl):
      items.popitem(last=False)


class SqliteAnswers:
  """`MemoryAnswers`' interface and bounds, kept in SQLite at `path` with
  the billed counts; each answer is committed with its bill before it is
  sent, so a restarted server replays the keys it answered and does not
  bill them again. Not thread-safe (the server holds its lock)."""

  def __init__(self, path: str, size: int = CACHE_SIZE,
               ttl: float = CACHE_TTL):
    self.size, self.ttl = int(size), float(ttl)
    self.path = path
    try:
      self.db = sqlite3.connect(path, check_same_thread=False, timeout=30)
      self.db.execute("PRAGMA journal_mode=WAL")
      self.db.execute("PRAGMA synchronous=FULL")
      with self.db:
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS idempotent_answers (key TEXT PRIMARY "
            "KEY, digest TEXT NOT NULL, logits BLOB NOT NULL, images INTEGER "
            "NOT NULL, answered_at REAL NOT NULL)")
        self.db.execute("CREATE INDEX IF NOT EXISTS idempotent_answers_time "
                        "ON idempotent_answers (answered_at)")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS billing (id INTEGER PRIMARY KEY "
            "CHECK (id = 0), answered_images INTEGER NOT NULL, keys INTEGER "
            "NOT NULL)")
        self.db.execute("INSERT OR IGNORE INTO billing VALUES (0, 0, 0)")
    except sqlite3.Error as e:
      raise JaxkdError(f"cannot open the idempotency store {path}: "
                       f"{type(e).__name__}: {_one_line(e)}.") from None

  def get(self, key: str, now: float) -> Optional[Tuple[str, np.ndarray]]:
    row = self.db.execute(
        "SELECT digest, logits FROM idempotent_answers WHERE key = ? AND "
        "answered_at >= ?", (key, now - self.ttl)).fetchone()
    return None if row is None else (row[0], decode_npy(row[1]))

  def put(self, key, digest, logits, totals, now) -> None:
    with self.db:
      if key is not None:
        self.db.execute(
            "INSERT OR REPLACE INTO idempotent_answers VALUES (?, ?, ?, ?, ?)",
            (key, digest, encode_npy(logits), len(logits), now))
      self.db.execute("UPDATE billing SET answered_images = ?, keys = ? "
                      "WHERE id = 0", tuple(int(t) for t in totals))
      self.db.execute("DELETE FROM idempotent_answers WHERE answered_at < ?",
                      (now - self.ttl,))
      self.db.execute(
          "DELETE FROM idempotent_answers WHERE key IN (SELECT key FROM "
          "idempotent_answers ORDER BY answered_at DESC, rowid DESC "
          "LIMIT -1 OFFSET ?)", (self.size,))

  def totals(self) -> Tuple[int, int]:
    row = self.db.execute(
        "SELECT answered_images, keys FROM billing WHERE id = 0").fetchone()
    return int(row[0]), int(row[1])

  def images_by_key(self) -> Dict[str, int]:
    return dict(self.db.execute("SELECT key, images FROM idempotent_answers"))

  def __len__(self) -> int:
    return self.db.execute(
        "SELECT COUNT(*) FROM idempotent_answers").fetchone()[0]

  def close(self) -> None:
    self.db.close()


# ------------------------------------------------------------ deadlines ---


class _Reaper:
  """One thread that shuts down each armed socket whose deadline passed
  (a client that drips its request, or takes its answer, too slowly)."""

  def __init__(self, interval: float = 0.1):
    self.interval = interval
    self.lock = threading.Lock()
    self.due: Dict[socket.socket, float] = {}
    self.shut: set = set()  # sockets shut down, until disarmed
    self.stopped = threading.Event()
    self.thread = threading.Thread(target=self._run, daemon=True,
                                   name="serve_teacher-reaper")
    self.thread.start()

  def arm(self, sock: socket.socket, seconds: float) -> None:
    with self.lock:
      self.due[sock] = time.monotonic() + seconds

  def disarm(self, sock: socket.socket, forget: bool = False) -> None:
    """Stops the clock on `sock`; `forget` also drops its fired mark (the
    handler is done with it)."""
    with self.lock:
      self.due.pop(sock, None)
      if forget:
        self.shut.discard(sock)

  def fired(self, sock: socket.socket) -> bool:
    """Whether `sock` was shut down for its deadline."""
    with self.lock:
      return sock in self.shut

  def stop(self) -> None:
    self.stopped.set()

  def _run(self) -> None:
    while not self.stopped.wait(self.interval):
      now = time.monotonic()
      with self.lock:  # a handler disarms (under it) before its socket closes
        for sock in [s for s, t in self.due.items() if t <= now]:
          del self.due[sock]
          self.shut.add(sock)
          try:
            sock.shutdown(socket.SHUT_RDWR)
          except OSError:
            pass


# ------------------------------------------------------------- handler ---


class TeacherHandler(http.server.BaseHTTPRequestHandler):
  """GET /stats, /info and /health; POST images -> answers (see the module
  doc)."""
  server: TeacherServer
  server_version = "jaxkd-teacher/1"

  def setup(self):
    self.timeout = self.server.request_timeout  # per socket wait
    super().setup()
    self.server.reaper.arm(self.connection, self.server.request_timeout)

  def finish(self):
    try:
      super().finish()
    finally:
      self.server.reaper.disarm(self.connection, forget=True)

  def log_message(self, fmt, *args):
    if self.server.verbose:
      super().log_message(fmt, *args)

  def parse_request(self) -> bool:
    """The request line and headers, then the key: False (401 sent) for a
    request without the server's key, except GET /health."""
    if not super().parse_request():
      return False
    if self.server.reaper.fired(self.connection):  # cut off mid-headers
      self.close_connection = True
      return False
    key = self.server.api_key
    if key is None or self.path.split("?")[0].rstrip("/") == HEALTH:
      return True
    scheme, _, token = (self.headers.get("Authorization") or "").partition(" ")
    if scheme.lower() == "bearer" and hmac.compare_digest(
        token.strip().encode("utf-8", "surrogateescape"), key.encode()):
      return True
    self._refuse_unread(401, "missing or wrong API key: send Authorization: "
                        "Bearer <key>",
                        {"WWW-Authenticate": 'Bearer realm="jaxkd-teacher"'})
    return False

  def _send(self, status: int, body: bytes, ctype: str, headers=None):
    self.server.reaper.arm(self.connection, self.server.request_timeout)
    try:
      self.send_response(status)
      self.send_header("Content-Type", ctype)
      self.send_header("Content-Length", str(len(body)))
      for k, v in (headers or {}).items():
        self.send_header(k, v)
      self.end_headers()
      self.wfile.write(body)
    except OSError:  # the client left (timed out): the answer is cached
      self.close_connection = True

  def _json(self, status: int, obj, headers=None):
    self._send(status, json.dumps(obj).encode(), JSON, headers)

  def _error(self, status: int, msg: str, headers=None):
    self._json(status, {"error": msg}, headers)

  def _refuse_unread(self, status: int, msg: str, headers=None):
    """Sends the error for a request whose body was not read, then reads
    and drops what of the body comes within DRAIN_SECONDS (at most
    `max_body` bytes, nothing kept), so that the client, still sending, gets
    the status rather than a reset connection."""
    self.close_connection = True
    self._error(status, msg, dict(headers or {}, Connection="close"))
    try:
      left = min(int(self.headers.get("Content-Length") or 0),
                 self.server.max_body)
    except ValueError:
      return
    end = time.monotonic() + DRAIN_SECONDS
    try:
      self.connection.settimeout(0.25)
      while left > 0 and time.monotonic() < end:
        chunk = self.rfile.read1(min(left, CHUNK))
        if not chunk:
          break
        left -= len(chunk)
    except OSError:
      pass

  def do_GET(self):
    path = self.path.split("?")[0].rstrip("/")
    if path == HEALTH:
      return self._json(200, {"ok": True})
    if path == "/stats":
      return self._json(200, self.server.stats())
    if path in ("", "/info"):
      s = self.server
      return self._json(200, dict(s.info, formats=[
          NPY if f == "npy" else JSON for f in s.formats], output=s.output,
          input_shape=s.input_shape))
    self._error(404, f"no such path {self.path!r}; POST images to /")

  def _read_images(self) -> tuple:
    s = self.server
    ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip()
    fmt = {NPY: "npy", JSON: "json"}.get(ctype.lower())
    if fmt not in s.formats:
      accepted = ", ".join(NPY if f == "npy" else JSON for f in s.formats)
      raise _BadRequest(415, f"content type {ctype or 'missing'!r}; send "
                        f"{accepted}", unread=True)
    try:
      length = int(self.headers.get("Content-Length", ""))
    except ValueError:
      raise _BadRequest(411, "Content-Length required", unread=True) from None
    limit = s.max_json if fmt == "json" else s.max_body
    if length < 0 or length > limit:
      hint = ("; send application/x-npy for larger batches"
              if fmt == "json" and "npy" in s.formats else "")
      raise _BadRequest(413, f"{'JSON ' if fmt == 'json' else ''}body of "
                        f"{length} bytes; at most {limit}{hint}", unread=True)
    body = self.rfile.read(length)
    s.reaper.disarm(self.connection)  # read: the model's time is not theirs
    if len(body) != length:
      raise _BadRequest(400, f"body ended after {len(body)} of {length} "
                        "bytes")
    try:
      if fmt == "npy":
        images = decode_npy(body)
      else:
        with s.json_slots:  # bounds the memory JSON decoding takes
          obj = json.loads(body.decode("utf-8"))
          del body
          if not isinstance(obj, dict) or "images" not in obj:
            raise ValueError('expected {"images": [...]}')
          images = np.asarray(obj["images"], np.float64)
      images = numeric(images)
    except (ValueError, TypeError, OverflowError, UnicodeDecodeError,
            EOFError, RecursionError) as e:
      raise _BadRequest(400, f"cannot decode images: {_one_line(e)}"
                        ) from None
    images = images.astype(np.float32)
    if images.ndim < 2 or len(images) == 0:
      raise _BadRequest(400, f"images must be a non-empty batch [B, ...], "
                        f"got shape {images.shape}")
    want = s.input_shape
    if want is not None and images.shape[1:] != want:
      raise _BadRequest(400, f"images of shape {images.shape[1:]}, the "
                        f"teacher takes {want}")
    if not np.all(np.isfinite(images)):
      raise _BadRequest(400, "images contain NaN or inf")
    return images, fmt

  def do_POST(self):
    self.server.count_request()
    answer = self.answer_request()
    if answer is not None:
      logits, fmt, replayed = answer
      self.reply(self.output(logits), fmt, replayed)

  def answer_request(self) -> Optional[tuple]:
    """(logits [B, C], request format, replayed) for this POST; None once
    the error for a refused request or a failed model is sent."""
    try:
      images, fmt = self._read_images()
      key = self.headers.get("Idempotency-Key") or None
      logits, replayed = self.server.answer(key, images)
    except _BadRequest as e:
      if e.unread:
        self._refuse_unread(e.status, e.msg)
      else:
        self._error(e.status, e.msg)
      return None
    except Exception as e:  # noqa: BLE001 - the model failed: 500, retried
      self._error(500, f"{type(e).__name__}: {_one_line(e)}")
      return None
    return logits, fmt, replayed

  def output(self, logits: np.ndarray) -> np.ndarray:
    """[B, C] float32 answer: the logits, or their softmax for a "probs"
    server."""
    s = self.server
    out = _softmax(logits.astype(np.float64)) if s.output == "probs" \
        else logits
    return out.astype(np.float32)

  def reply_headers(self, replayed: bool) -> dict:
    headers = {OUTPUT_HEADER: self.server.output}
    if self.server.info.get("model_id"):
      headers[MODEL_ID_HEADER] = _one_line(self.server.info["model_id"], 100)
    if replayed:
      headers["Idempotent-Replayed"] = "true"
    return headers

  def reply(self, out: np.ndarray, fmt: str, replayed: bool):
    """Sends the answer `out` [B, C] in the request's format ("npy" or
    "json")."""
    headers = self.reply_headers(replayed)
    if fmt == "npy":
      return self._send(200, encode_npy(out), NPY, headers)
    self._json(200, {self.server.output: out.tolist()}, headers)


# -------------------------------------------------------------- server ---

_BUSY_BODY = json.dumps({"error": "server busy: every worker is serving a "
                         "connection; retry"}).encode()
_BUSY = (b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: "
         + JSON.encode() + b"\r\nRetry-After: 1\r\nConnection: close\r\n"
         b"Content-Length: " + str(len(_BUSY_BODY)).encode() + b"\r\n\r\n"
         + _BUSY_BODY)


class TeacherServer(http.server.ThreadingHTTPServer):
  """A `ThreadingHTTPServer` holding the model, the cache and the counts;
  its requests are handled by the class attribute `handler`, at most
  `max_workers` at a time."""

  daemon_threads = True
  request_queue_size = 256  # the listen backlog: bursts wait, then get 503
  handler = TeacherHandler

  def __init__(self, addr, predict_fn: PredictFn, *,
               output: str = "logits", formats: Sequence[str] = ("npy", "json"),
               input_shape: Optional[Sequence[int]] = None,
               info: Optional[dict] = None, max_body: int = MAX_BODY,
               max_json: int = MAX_JSON, api_key: Optional[str] = None,
               request_timeout: float = REQUEST_TIMEOUT,
               max_workers: int = MAX_WORKERS, cache_size: int = CACHE_SIZE,
               cache_ttl: float = CACHE_TTL,
               idempotency_db: Optional[str] = None, verbose: bool = False):
    if output not in ("logits", "probs"):
      raise JaxkdError(f"output must be 'logits' or 'probs', got {output!r}.")
    for name, v in (("max_body", max_body), ("max_json", max_json),
                    ("max_workers", max_workers), ("cache_size", cache_size)):
      if not is_int(v) or v < 1:
        raise JaxkdError(f"{name} must be an int >= 1, got {v!r}.")
    for name, v in (("request_timeout", request_timeout),
                    ("cache_ttl", cache_ttl)):
      if isinstance(v, bool) or not isinstance(v, (int, float)) or not (
          np.isfinite(v) and v > 0):
        raise JaxkdError(f"{name} must be a finite number > 0, got {v!r}.")
    if api_key is not None:
      api_key = api_key_from(api_key=api_key)
    store = (SqliteAnswers(idempotency_db, cache_size, cache_ttl)
             if idempotency_db else MemoryAnswers(cache_size, cache_ttl))
    try:
      super().__init__(addr, self.handler)
    except BaseException:
      store.close()
      raise
    self.predict_fn = predict_fn
    self.output = output
    self.formats = tuple(formats)
    self.input_shape = None if input_shape is None else tuple(input_shape)
    self.info = dict(info or {})
    self.max_body = int(max_body)
    self.max_json = int(max_json)
    self.api_key = api_key
    self.request_timeout = float(request_timeout)
    self.verbose = verbose
    self.lock = threading.Lock()        # counts, cache, in-flight
    self.model_lock = threading.Lock()  # one model call at a time
    self.json_slots = threading.BoundedSemaphore(JSON_DECODES)
    self.workers = threading.BoundedSemaphore(int(max_workers))
    self.store = store
    self.inflight: Dict[str, threading.Event] = {}
    self.answered_images, self.keys_answered = store.totals()
    self.requests = 0
    self.replays = 0
    self.reaper = _Reaper()
    self._thread = None

  @property
  def url(self) -> str:
    host, port = self.server_address[:2]
    return f"http://{host}:{port}"

  @property
  def answered_keys(self) -> Dict[str, int]:
    """key -> images answered, for the keys the cache still holds."""
    with self.lock:
      return self.store.images_by_key()

  def count_request(self) -> int:
    """Counts one POST; returns its number (1-based)."""
    with self.lock:
      self.requests += 1
      return self.requests

  def stats(self) -> dict:
    with self.lock:
      return {"answered_images": self.answered_images,
              "requests": self.requests, "keys": self.keys_answered,
              "replays": self.replays}

  def start(self) -> "TeacherServer":
    """Serves in a daemon thread; returns self."""
    self._thread = threading.Thread(target=self.serve_forever,
                                    kwargs={"poll_interval": 0.05},
                                    daemon=True)
    self._thread.start()
    return self

  def close(self) -> None:
    self.shutdown()
    self.server_close()

  def server_close(self) -> None:
    """Closes the socket, the reaper and the store (a handler still
    running then answers 500)."""
    super().server_close()
    self.reaper.stop()
    with self.lock:
      self.store.close()

  # --------------------------------------------------------- connections --

  def process_request(self, request, client_address):
    """A worker thread for the connection, or 503 at once when all
    `max_workers` are busy."""
    if not self.workers.acquire(blocking=False):
      return self._busy(request)
    try:
      super().process_request(request, client_address)
    except BaseException:
      self.workers.release()
      raise

  def process_request_thread(self, request, client_address):
    try:
      super().process_request_thread(request, client_address)
    finally:
      self.workers.release()

  def _busy(self, request) -> None:
    try:
      request.settimeout(0.1)
      request.sendall(_BUSY)
      request.setblocking(False)
      for _ in range(16):  # what already came, so that closing sends no RST
        if not request.recv(CHUNK):
          break
    except OSError:
      pass
    finally:
      self.shutdown_request(request)

  def handle_error(self, request, client_address):
    """One line on stderr for a handler's unexpected exception (a client
    that left is not one)."""
    exc = sys.exc_info()[1]
    if isinstance(exc, OSError) and not self.verbose:
      return
    print(f"serve_teacher: {type(exc).__name__} serving {client_address[0]}: "
          f"{_one_line(exc)}", file=sys.stderr, flush=True)

  # ------------------------------------------------------------- answers --

  def answer(self, key: Optional[str], images: np.ndarray) -> tuple:
    """(logits [B, C], replayed) for `images` under `key`: computed and
    counted once per key, from the cache afterwards."""
    digest = images_digest(images)
    if key is None:
      return self._compute(None, digest, images), False
    while True:
      with self.lock:
        hit = self.store.get(key, time.time())
        if hit is not None:
          old, logits = hit
          if old != digest:
            raise _BadRequest(422, f"Idempotency-Key {key!r} was used for "
                              "other images; use a new key.")
          self.replays += 1
          return logits, True
        event = self.inflight.get(key)
        if event is None:
          self.inflight[key] = threading.Event()
          break
      event.wait()  # the same key is being computed: wait for its answer
    try:
      logits = self._compute(key, digest, images)
    finally:
      with self.lock:
        self.inflight.pop(key).set()
    return logits, False

  def _compute(self, key, digest, images):
    with self.model_lock:
      try:
        out = np.asarray(self.predict_fn(images), np.float32)
      except (ValueError, TypeError) as e:  # the images do not fit the model
        raise _BadRequest(400, f"the model refused the images: "
                          f"{_one_line(e)}") from None
    if out.ndim != 2 or len(out) != len(images):
      raise RuntimeError(f"predict_fn returned shape {out.shape} for "
                         f"{len(images)} images")
    with self.lock:  # the answer and its bill are kept together
      totals = (self.answered_images + len(images),
                self.keys_answered + (key is not None))
      self.store.put(key, digest, out, totals, time.time())
      self.answered_images, self.keys_answered = totals
    return out


def make_server(predict_fn: PredictFn, host: str = "127.0.0.1", port: int = 0,
                **kw) -> TeacherServer:
  """A (not yet serving) `TeacherServer` around `predict_fn(images [B, ...]
  float32) -> logits [B, C]`; port 0 picks a free port (`server.url`). Call
  `.start()` to serve in a thread, or `.serve_forever()`. Keyword options:
  output ("logits" | "probs"), formats, input_shape, info, max_body,
  max_json, api_key, request_timeout, max_workers, cache_size, cache_ttl,
  idempotency_db, verbose."""
  return TeacherServer((host, int(port)), predict_fn, **kw)


# ------------------------------------------------------------ the model ---


def load_teacher(checkpoint: str, *, model: Optional[str] = None,
                 num_classes: Optional[int] = None,
                 input_shape: Optional[Sequence[int]] = None):
  """(predict_fn, info, input_shape) for the teacher a jaxkd job saved.

  Args:
    checkpoint: the saved teacher's folder (`workdir/teacher`) or the
      workdir holding it.
    model: model name, for a checkpoint that does not record it.
    num_classes: number of classes, likewise.
    input_shape: (H, W, C) the server checks requests against; default the
      recorded one.

  Returns:
    predict_fn(images [B, H, W, C]) -> logits [B, C]; info (model,
    num_classes, step, accuracy, model_id: `teacher_training.model_id`) for GET
    /info, without the checkpoint's path; the input shape (None when not
    recorded: requests are then not checked).

  A folder with `teacher.json` (what `jaxkd.teacher_training.save_teacher`
  and the job write) is loaded by `teacher_training.load_teacher`, and
  `model` / `num_classes` may only repeat what it records. An older orbax
  checkpoint without `teacher.json` is read by `_load_orbax_only`: its
  metadata names the model, or `model` / `num_classes` must.

  Raises:
    JaxkdError: no checkpoint there, an unreadable one, or a model that is
      not recorded or disagrees with `model` / `num_classes`.
  """
  from jaxkd import teacher_training, train

  path = os.path.abspath(checkpoint)
  if os.path.isdir(os.path.join(path, "teacher")):
    path = os.path.join(path, "teacher")
  if not os.path.isdir(path):
    raise JaxkdError(f"no teacher checkpoint at {checkpoint} (expected the "
                     "workdir/teacher directory a jaxkd job writes).")
  if os.path.isfile(os.path.join(path, teacher_training.TEACHER_JSON)):
    net, variables, meta = teacher_training.load_teacher(path)
    name, classes = meta["model"], int(meta["num_classes"])
    if (model or name) != name or int(num_classes or classes) != classes:
      raise JaxkdError(
          f"{path} holds a {name!r} teacher with {classes} classes "
          f"({teacher_training.TEACHER_JSON}); --model / --num-classes "
          "cannot change it.")
    shape = input_shape or meta["input_shape"]
    step, accuracy = 0, meta["accuracy"]  # save_teacher writes step 0
  else:
    net, variables, meta, step = _load_orbax_only(path, model, num_classes)
    name, classes = meta["model"], meta["num_classes"]
    shape, accuracy = input_shape or meta.get("input_shape"), meta.get(
        "accuracy")

  def predict_fn(images):
    return train.predict(net, variables, images)

  info = {"model": name, "num_classes": int(classes), "step": int(step),
          "accuracy": accuracy,
          "model_id": teacher_training.model_id(variables)}
  return predict_fn, info, (tuple(shape) if shape else None)


def _load_orbax_only(path: str, model: Optional[str],
                     num_classes: Optional[int]):
  """(module, variables, meta, step) of a teacher checkpoint written before
  `teacher.json`: the state restored without a target (its params and
  batch_stats kept), the model named by `model` or the metadata's
  config.model, the classes by `num_classes` or its num_classes."""
  import orbax.checkpoint as ocp

  from jaxkd.models import get_model

  mngr = ocp.CheckpointManager(path)
  step = mngr.latest_step()
  if step is None:
    raise JaxkdError(f"{path} holds no checkpoint step; train a teacher "
                     "first (python -m jaxkd.main).")
  try:
    out = mngr.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore()))
  except Exception as e:  # noqa: BLE001 - orbax raises many kinds
    raise JaxkdError(f"cannot read the teacher checkpoint {path} step {step}: "
                     f"{type(e).__name__}: {' '.join(str(e).split())[:200]}"
                     ) from None
  finally:
    mngr.close()
  state, meta = out["state"], dict(out["meta"] or {})
  name = model or (meta.get("config") or {}).get("model")
  classes = num_classes or meta.get("num_classes")
  if not name or not classes:
    raise JaxkdError(f"{path} does not record the teacher's "
                     f"{'model name' if not name else 'number of classes'}; "
                     "pass --model NAME --num-classes N.")
  variables = {"params": state["params"]}
  if state.get("batch_stats"):
    variables["batch_stats"] = state["batch_stats"]
  meta.update(model=name, num_classes=int(classes))
  return get_model(name, int(classes)), variables, meta, step


def _positive_float(text: str) -> float:
  try:
    v = float(text)
  except ValueError:
    v = float("nan")
  if not (np.isfinite(v) and v > 0):
    raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
  return v


def _positive_int(text: str) -> int:
  try:
    v = int(text)
  except ValueError:
    v = 0
  if v < 1:
    raise argparse.ArgumentTypeError(f"expected an int >= 1, got {text!r}")
  return v


def _refuse(msg: str) -> None:
  print(f"serve_teacher: {msg}", file=sys.stderr, flush=True)
  sys.exit(2)


def main(argv=None) -> None:
  p = argparse.ArgumentParser(
      prog="python -m jaxkd.serve_teacher",
      description="Serve a saved jaxkd teacher over HTTP (see module doc).")
  p.add_argument("--checkpoint", required=True,
                 help="the saved teacher's folder (workdir/teacher) or the "
                 "workdir")
  p.add_argument("--host", default="127.0.0.1",
                 help="address to bind; a non-loopback one needs "
                 "--api-key-file (or --insecure-no-auth)")
  p.add_argument("--port", type=int, default=0, help="0 picks a free port")
  p.add_argument("--model", default=None,
                 help="model name, if the checkpoint does not record it")
  p.add_argument("--num-classes", type=int, default=None)
  p.add_argument("--output", choices=("logits", "probs"), default="logits")
  p.add_argument("--api-key-file", default=None, metavar="PATH",
                 help="a file whose stripped content is the key every "
                 "request but GET /health must send as 'Authorization: "
                 "Bearer <key>'")
  p.add_argument("--insecure-no-auth", action="store_true",
                 help="serve a non-loopback --host without a key (anyone "
                 "who reaches it spends the teacher)")
  p.add_argument("--timeout", type=_positive_float, default=REQUEST_TIMEOUT,
                 metavar="SECONDS", help="a connection's time to send its "
                 "request, and again to take its answer")
  p.add_argument("--max-workers", type=_positive_int, default=MAX_WORKERS,
                 help="connections served at once; more get 503")
  p.add_argument("--cache-size", type=_positive_int, default=CACHE_SIZE,
                 help="idempotency keys kept (the most recent)")
  p.add_argument("--cache-ttl", type=_positive_float, default=CACHE_TTL,
                 metavar="SECONDS", help="how long a key is kept")
  p.add_argument("--idempotency-db", default=None, metavar="PATH",
                 help="keep the idempotency cache and the billed counts in "
                 "this SQLite file, over restarts")
  p.add_argument("--max-json-bytes", type=_positive_int, default=MAX_JSON,
                 help="largest JSON request body (a .npy one may be "
                 f"{MAX_BODY} bytes)")
  p.add_argument("--verbose", action="store_true", help="log every request")
  a = p.parse_args(argv)
  api_key = None
  if a.api_key_file is not None:
    try:
      api_key = api_key_from(api_key_file=a.api_key_file)
    except JaxkdError as e:
      _refuse(str(e))
  elif not is_loopback(a.host):
    if not a.insecure_no_auth:
      _refuse(f"--host {a.host!r} is not a loopback address and no "
              "--api-key-file is given: anyone who reaches it could spend "
              "the teacher; pass --api-key-file PATH (or --insecure-no-auth "
              "to serve it openly).")
    print(f"serve_teacher: warning: serving {a.host!r} without a key "
          "(--insecure-no-auth).", file=sys.stderr, flush=True)
  try:
    predict_fn, info, shape = load_teacher(
        a.checkpoint, model=a.model, num_classes=a.num_classes)
    server = make_server(
        predict_fn, a.host, a.port, output=a.output, input_shape=shape,
        info=info, verbose=a.verbose, api_key=api_key,
        request_timeout=a.timeout, max_workers=a.max_workers,
        cache_size=a.cache_size, cache_ttl=a.cache_ttl,
        idempotency_db=a.idempotency_db, max_json=a.max_json_bytes)
  except (JaxkdError, OSError) as e:
    sys.exit(f"serve_teacher: {e}")
  print(f"serving on {server.url}", flush=True)
  try:
    server.serve_forever()
  except KeyboardInterrupt:
    pass
  finally:
    server.server_close()


if __name__ == "__main__":
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  main()
