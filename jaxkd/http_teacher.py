"""A remote teacher over HTTP: the black box behind a paid API.

`http_teacher(url)` returns a teacher fn for `jaxkd.teacher.TeacherOracle`:
`fn(images [B, ...], request_id=None) -> logits [B, C] float32`. The
setting is the one the active-distillation papers assume (the teacher is a
paid prediction service), and `python -m jaxkd.serve_teacher` is a server
for it.

Wire protocol (what `jaxkd.serve_teacher` speaks; any server may):

  POST <url>
    Content-Type: application/x-npy    body: `np.save` bytes, float32 [B, ...]
             (or) application/json     body: {"images": nested lists}
    Idempotency-Key: <request id>.<sha256 of the images, 16 hex digits>
    Accept: application/x-npy, application/json
    Authorization: Bearer <key>   (when a key is given, see below)
  200 answer, by its Content-Type:
    application/x-npy  a float array [B, C]; header `X-Teacher-Output:
                       logits` (default) or `probs`
    application/json   {"logits": [[...]]} or {"probs": [[...]]}: a list of
                       B lists of C >= 2 JSON numbers (not strings,
                       booleans or null)
    optional header `X-Teacher-Model-Id` (the server's digest of its
    parameters), kept as `fn.model_id`

Format: "npy" or "json" always send that body; "auto" (default) sends
`.npy` and, if the server answers 415 Unsupported Media Type, switches to
JSON for the rest of the session (and resends at once, not counted as a
retry). Answers are decoded by their Content-Type whatever was sent.

Security: the URL must be `http(s)://host[:port][/path]` with a port in
1..65535 and no credentials in it. The key (`api_key`, else the stripped
content of `api_key_file`, else the environment variable
JAXKD_TEACHER_API_KEY) is sent as `Authorization: Bearer <key>`. Redirects
(3xx) are never followed: a redirect would re-send the key and the images
to another host and pass that host's answer off as the teacher's, so it is a
one-line `JaxkdError` naming the status and the Location.

What the oracle expects: logits (it applies a softmax, `TeacherOracle._probs`).
A server may answer probabilities instead (`probs`); the client checks that
every row lies in [0, 1] and sums to 1 (to 1e-3) and returns log(p) (p
clipped at 1e-30), whose softmax is p again.

Idempotency: the oracle passes the request id it wrote ahead in its ledger
(`fn.accepts_request_id` is True); without one, each call draws a random id,
kept over that call's retries. The key also carries a digest of the images,
so a key is never reused for different images (two runs that number their
requests alike cannot collide) and a resend of the same batch under the same
id, after a retry or a killed client, is answered from the server's cache
and paid once.

Retries: connection errors, timeouts (`timeout` seconds per socket wait),
408, 429 and 5xx are retried up to `retries` times with exponential backoff,
`min(max_backoff, backoff * 2**attempt)`, halved and topped up with a uniform
random half (`jitter`); a 429's or 503's Retry-After (seconds or an HTTP
date) replaces the backoff, and one above 600 s ends the call. A call has
a total deadline (`deadline` seconds, default 4 * `timeout`) over all its
attempts, waits and reads: an answer is read in chunks against the clock,
each attempt runs in a worker thread the caller stops waiting for at the
deadline (so a server that drips its headers or its body cannot hold the
call), and a wait that would end past the deadline is not started. Other
4xx, 3xx and malformed answers (not decodable, not numbers, wrong shape or
batch size, NaN or inf, not a distribution) raise a one-line `JaxkdError` at
once, as do exhausted retries (naming the attempts and the last cause) and a
passed deadline; nothing is recorded in the ledger for a call that raised.
"""

from __future__ import annotations

import email.utils
import hashlib
import http.client
import io
import json
import os
import random
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from typing import Callable, Dict, Optional

import numpy as np

from jaxkd.validation import JaxkdError, is_int

NPY = "application/x-npy"
JSON = "application/json"
OUTPUT_HEADER = "X-Teacher-Output"
MODEL_ID_HEADER = "X-Teacher-Model-Id"
API_KEY_ENV = "JAXKD_TEACHER_API_KEY"
MAX_RETRY_AFTER = 600.0
MAX_ANSWER = 256 << 20  # bytes: a larger answer is malformed
MAX_JSON_ANSWER = 64 << 20  # bytes of a JSON answer (decoded, many times that)
DEADLINE_TIMEOUTS = 4.0  # default deadline, in timeouts
CHUNK = 1 << 16  # bytes per read of an answer
_RETRY_STATUS = (408, 429)
_NUMBER = (int, float)  # JSON numbers; bool is excluded by `type(v) in`


def images_digest(images: np.ndarray) -> str:
  """16 hex digits of sha256 over the float32 images' shape and bytes."""
  arr = np.ascontiguousarray(images, np.float32)
  h = hashlib.sha256(str(arr.shape).encode())
  h.update(arr.tobytes())
  return h.hexdigest()[:16]


def idempotency_key(request_id: str, images: np.ndarray) -> str:
  """The `Idempotency-Key` header for `images` sent under `request_id`."""
  return f"{request_id}.{images_digest(images)}"


def encode_npy(arr: np.ndarray) -> bytes:
  buf = io.BytesIO()
  np.save(buf, np.asarray(arr), allow_pickle=False)
  return buf.getvalue()


def decode_npy(body: bytes) -> np.ndarray:
  """`np.load` without pickles; raises ValueError on anything else."""
  return np.load(io.BytesIO(body), allow_pickle=False)


def numeric(x) -> np.ndarray:
  """`x` as an array; ValueError unless its dtype is a float or int."""
  x = np.asarray(x)
  if not (np.issubdtype(x.dtype, np.floating)
          or np.issubdtype(x.dtype, np.integer)):
    raise ValueError(f"dtype {x.dtype} is not numeric")
  return x


def _one_line(text, limit=200) -> str:
  text = " ".join(str(text).split())
  return text if len(text) <= limit else text[:limit - 3] + "..."


def _retry_after(value: Optional[str]) -> Optional[float]:
  """Seconds from a Retry-After header (delta-seconds or an HTTP date)."""
  if not value:
    return None
  try:
    return max(0.0, float(value))
  except ValueError:
    pass
  try:
    when = email.utils.parsedate_to_datetime(value)
  except (TypeError, ValueError):
    return None
  return max(0.0, when.timestamp() - time.time())


def check_url(url) -> str:
  """`url` if it is `http(s)://host[:port][/path]` with a port in 1..65535
  and no credentials; raises a one-line JaxkdError otherwise."""
  bad = JaxkdError(f"teacher url must be http(s)://host[:port][/path] with a "
                   f"port in 1..65535, got {url!r}.")
  if not isinstance(url, str) or any(
      c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
    raise bad
  try:
    parts = urllib.parse.urlsplit(url)
    port = parts.port  # ValueError when not a number or above 65535
  except ValueError:
    raise bad from None
  if parts.scheme not in ("http", "https") or not parts.hostname or (
      port is not None and not 1 <= port <= 65535):
    raise bad
  if parts.username is not None or parts.password is not None:
    raise JaxkdError("teacher url must not hold credentials (user:password@"
                     "); pass api_key= or set JAXKD_TEACHER_API_KEY.")
  return url


def api_key_from(api_key: Optional[str] = None,
                 api_key_file: Optional[str] = None,
                 environ: Optional[Dict[str, str]] = None) -> Optional[str]:
  """The key to send: `api_key`, else the stripped content of
  `api_key_file`, else $JAXKD_TEACHER_API_KEY (stripped), else None.

  Raises:
    JaxkdError (one line, never showing the key): both arguments given, an
      unreadable or empty file, or a key with spaces or control characters.
  """
  if api_key is not None and api_key_file is not None:
    raise JaxkdError("pass api_key or api_key_file, not both.")
  where = "api_key"
  if api_key_file is not None:
    where = f"api_key_file {api_key_file}"
    try:
      with open(api_key_file, encoding="utf-8") as f:
        api_key = f.read()
    except (OSError, UnicodeDecodeError) as e:
      raise JaxkdError(f"cannot read the teacher's {where}: "
                       f"{type(e).__name__}.") from None
  elif api_key is None:
    api_key = (environ if environ is not None else os.environ).get(
        API_KEY_ENV)
    if api_key is None or not api_key.strip():
      return None
    where = f"${API_KEY_ENV}"
  if not isinstance(api_key, str) or not api_key.strip():
    raise JaxkdError(f"the teacher's {where} is empty.")
  api_key = api_key.strip()
  if any(not 33 <= ord(c) <= 126 for c in api_key):
    raise JaxkdError(f"the teacher's {where} holds spaces, control or "
                     "non-ASCII characters; a key is one printable ASCII "
                     "token.")
  return api_key


class _NoRedirect(urllib.request.HTTPRedirectHandler):
  """Turns every redirect into the HTTPError it is, before any handler that
  would follow it (`handler_order` 0 < the default 500)."""

  handler_order = 0

  def _refuse(self, req, fp, code, msg, headers):
    raise urllib.error.HTTPError(req.full_url, code, msg, headers, fp)

  http_error_301 = http_error_302 = http_error_303 = _refuse
  http_error_307 = http_error_308 = _refuse


def _opener(session: Optional[urllib.request.OpenerDirector]
            ) -> urllib.request.OpenerDirector:
  if session is None:
    return urllib.request.build_opener(_NoRedirect)
  if not any(isinstance(h, _NoRedirect) for h in session.handlers):
    session.add_handler(_NoRedirect())
  return session


class _Deadline(Exception):
  """The call's deadline passed during an attempt."""


class _Retry(Exception):
  """An attempt that may be repeated: `cause` for the final message."""

  def __init__(self, cause: str, wait: Optional[float] = None):
    super().__init__(cause)
    self.cause = cause
    self.wait = wait


def _error_text(body: bytes) -> str:
  """One line from an error body: its "error" field when it is JSON
  {"error": ...} (what jaxkd.serve_teacher sends), else the text."""
  text = body.decode("utf-8", "replace")
  try:
    obj = json.loads(text)
  except ValueError:
    obj = None
  if isinstance(obj, dict) and isinstance(obj.get("error"), str):
    text = obj["error"]
  return _one_line(text)


def _json_rows(obj) -> np.ndarray:
  """A list of equally long lists of JSON numbers as float64 [B, C];
  ValueError for anything else (strings, booleans, null, nesting)."""
  if not isinstance(obj, list) or not all(isinstance(r, list) for r in obj):
    raise ValueError("expected a list of lists of numbers")
  if not all(type(v) in _NUMBER for r in obj for v in r):
    bad = next(v for r in obj for v in r if type(v) not in _NUMBER)
    raise ValueError(f"expected numbers, found {type(bad).__name__} "
                     f"{_one_line(repr(bad), 40)}")
  if len({len(r) for r in obj}) > 1:
    raise ValueError("rows of different lengths")
  return np.asarray(obj, np.float64).reshape(len(obj), -1)


def _answer(body: bytes, ctype: str, out_kind: str, k: int, url: str
            ) -> np.ndarray:
  """Decodes and checks one answer; returns logits [k, C] float32."""
  ctype = (ctype or "").split(";")[0].strip().lower()
  where = f"teacher at {url}"
  try:
    if ctype == NPY:
      out = decode_npy(body)
      if not np.issubdtype(out.dtype, np.floating):
        raise ValueError(f"dtype {out.dtype}, expected a float dtype")
    elif ctype == JSON or ctype.endswith("+json"):
      if len(body) > MAX_JSON_ANSWER:
        raise ValueError(f"a JSON answer of {len(body)} bytes, at most "
                         f"{MAX_JSON_ANSWER}")
      obj = json.loads(body.decode("utf-8"))
      if isinstance(obj, dict) and ("logits" in obj) != ("probs" in obj):
        out_kind = "logits" if "logits" in obj else "probs"
        obj = obj[out_kind]
      elif not isinstance(obj, list):
        raise ValueError("expected {\"logits\": ...} or {\"probs\": ...}")
      out = _json_rows(obj)
    else:
      raise ValueError(f"content type {ctype or 'missing'!r}, expected "
                       f"{NPY} or {JSON}")
  except (ValueError, TypeError, OverflowError, UnicodeDecodeError, EOFError,
          RecursionError) as e:
    raise JaxkdError(f"{where} sent a malformed answer ({_one_line(e)}); "
                     "nothing was recorded.") from None
  if out.ndim != 2 or out.shape[0] != k or out.shape[1] < 2:
    raise JaxkdError(f"{where} answered shape {out.shape} for {k} images, "
                     f"expected [{k}, C >= 2]; nothing was recorded.")
  out = out.astype(np.float64)
  if not np.all(np.isfinite(out)):
    raise JaxkdError(f"{where} answered NaN or inf; nothing was recorded.")
  if out_kind == "logits":
    return out.astype(np.float32)
  if out_kind != "probs":
    raise JaxkdError(f"{where} sent {OUTPUT_HEADER}: {out_kind!r}; expected "
                     "'logits' or 'probs'.")
  sums = out.sum(1)
  if out.min() < -1e-6 or out.max() > 1 + 1e-6 or np.abs(sums - 1).max() > 1e-3:
    raise JaxkdError(
        f"{where} answered probabilities that are not a distribution (row "
        f"sums {sums.min():.4g}..{sums.max():.4g}, range {out.min():.4g}.."
        f"{out.max():.4g}); nothing was recorded.")
  return np.log(np.clip(out, 1e-30, None)).astype(np.float32)


def _read_capped(resp, end: float, cancel: threading.Event) -> bytes:
  """The body of `resp`, read in chunks of CHUNK bytes with the clock
  checked between them: _Deadline past `end` (time.monotonic) or once
  `cancel` is set, JaxkdError past MAX_ANSWER bytes."""
  read = getattr(resp, "read1", None) or resp.read
  chunks, n = [], 0
  while True:
    if cancel.is_set() or time.monotonic() > end:
      raise _Deadline()
    chunk = read(CHUNK)
    if not chunk:
      if getattr(resp, "length", None):  # bytes promised, never sent
        raise http.client.IncompleteRead(b"".join(chunks), resp.length)
      return b"".join(chunks)
    n += len(chunk)
    if n > MAX_ANSWER:
      raise JaxkdError(f"teacher at {resp.geturl()} sent an answer over "
                       f"{MAX_ANSWER} bytes; nothing was recorded.")
    chunks.append(chunk)


def _within(call: Callable[[], object], seconds: float,
            cancel: threading.Event):
  """call() in a daemon thread, waited for at most `seconds`: its result
  or exception, or _Deadline (and `cancel` set, so the thread stops at its
  next chunk) when it takes longer."""
  box = {}
  done = threading.Event()

  def run():
    try:
      box["out"] = call()
    except BaseException as e:  # noqa: BLE001 - handed to the caller
      box["err"] = e
    finally:
      done.set()
  threading.Thread(target=run, daemon=True, name="http_teacher").start()
  if not done.wait(max(0.0, seconds)):
    cancel.set()
    raise _Deadline()
  if "err" in box:
    raise box["err"]
  return box["out"]


def http_teacher(url: str, *, timeout: float = 30.0,
                 deadline: Optional[float] = None, retries: int = 5,
                 backoff: float = 0.5, max_backoff: float = 8.0,
                 jitter: bool = True, format: str = "auto",
                 api_key: Optional[str] = None,
                 api_key_file: Optional[str] = None,
                 session: Optional[urllib.request.OpenerDirector] = None,
                 headers: Optional[Dict[str, str]] = None,
                 sleep: Callable[[float], None] = time.sleep):
  """A teacher fn that POSTs image batches to `url` (protocol above).

  Args:
    url: `http(s)://host[:port][/path]` the batches are POSTed to; port in
      1..65535, no credentials.
    timeout: seconds each socket wait of an attempt (connect, each read) may
      take.
    deadline: seconds a whole call (every attempt, wait and read) may take;
      default DEADLINE_TIMEOUTS * timeout.
    retries: further attempts after the first on retryable failures.
    backoff, max_backoff: the wait before retry n is
      min(max_backoff, backoff * 2**n) seconds, or the server's Retry-After.
    jitter: wait a uniform random 50-100% of that (spreads clients apart).
    format: "auto", "npy" or "json": the request body (see the module doc).
    api_key: sent as `Authorization: Bearer <api_key>`.
    api_key_file: a file whose stripped content is the key (instead of
      api_key). Without either, $JAXKD_TEACHER_API_KEY when set.
    session: a `urllib.request.OpenerDirector` (proxies, TLS contexts); a
      handler that refuses redirects is added to it. Default
      `urllib.request.build_opener()` with that handler.
    headers: extra request headers; an Authorization header here replaces
      the environment's key (and conflicts with api_key / api_key_file).
    sleep: the wait function (tests).

  Returns:
    `fn(images [B, ...] float32, request_id: str | None = None) -> logits
    [B, C] float32`, with `fn.accepts_request_id = True`, `fn.stats`
    (attempts, retries, calls), `fn.url`, `fn.deadline` and `fn.model_id`
    (the last answer's X-Teacher-Model-Id, None without one).

  Raises:
    JaxkdError: (one line) for bad arguments here, and from `fn` on 3xx,
      4xx, malformed answers, exhausted retries or a passed deadline.
  """
  check_url(url)
  if format not in ("auto", "npy", "json"):
    raise JaxkdError(f"format must be 'auto', 'npy' or 'json', got "
                     f"{format!r}.")
  for name, v, strict in (("timeout", timeout, True),
                          ("deadline", deadline, True),
                          ("backoff", backoff, False),
                          ("max_backoff", max_backoff, False)):
    if name == "deadline" and v is None:
      continue
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not (
        np.isfinite(v) and (v > 0 if strict else v >= 0)):
      raise JaxkdError(f"{name} must be a finite number "
                       f"{'> 0' if strict else '>= 0'}, got {v!r}.")
  if deadline is None:
    deadline = DEADLINE_TIMEOUTS * timeout
  if not is_int(retries) or retries < 0:
    raise JaxkdError(f"retries must be an int >= 0, got {retries!r}.")
  extra = dict(headers or {})
  has_auth = any(k.lower() == "authorization" for k in extra)
  if has_auth and (api_key is not None or api_key_file is not None):
    raise JaxkdError("pass the key as api_key / api_key_file or as an "
                     "Authorization header, not both.")
  key_value = None if has_auth else api_key_from(api_key, api_key_file)
  if key_value is not None:
    extra["Authorization"] = f"Bearer {key_value}"
  sent_key = has_auth or key_value is not None
  opener = _opener(session)
  rng = random.Random()
  state = {"format": "npy" if format == "auto" else format}
  stats = {"calls": 0, "attempts": 0, "retries": 0}

  def delay(attempt: int) -> float:
    d = min(max_backoff, backoff * 2.0 ** attempt)
    return d * (0.5 + 0.5 * rng.random()) if jitter else d

  def attempt_once(images, key, end, cancel):
    fmt = state["format"]
    if fmt == "npy":
      body, ctype = encode_npy(images), NPY
    else:
      body, ctype = json.dumps({"images": images.tolist()}).encode(), JSON
    hdrs = {"Content-Type": ctype, "Idempotency-Key": key,
            "Accept": f"{NPY}, {JSON}" if fmt == "npy" else JSON}
    hdrs.update(extra)
    req = urllib.request.Request(url, data=body, headers=hdrs, method="POST")
    wait = min(timeout, max(1e-3, end - time.monotonic()))
    try:
      with opener.open(req, timeout=wait) as resp:
        data = _read_capped(resp, end, cancel)
        fn.model_id = (resp.headers.get(MODEL_ID_HEADER) or "").strip() or None
        return data, resp.headers.get("Content-Type", ""), (
            resp.headers.get(OUTPUT_HEADER) or "logits").strip().lower()
    except urllib.error.HTTPError as e:
      try:
        msg = _error_text(e.read(4096)) or e.reason
      except Exception:  # noqa: BLE001 - the status says enough
        msg = e.reason
      finally:
        e.close()
      status = e.code
      if 300 <= status < 400:
        where = (e.headers.get("Location") if e.headers else None) or "nowhere"
        raise JaxkdError(
            f"teacher at {url} answered HTTP {status}, a redirect to "
            f"{_one_line(where, 120)!r}; redirects are not followed (the key "
            "and images are not re-sent): set the teacher url to the final "
            "address; nothing was recorded.") from None
      if status == 415 and format == "auto" and fmt == "npy":
        state["format"] = "json"
        return None
      if status in _RETRY_STATUS or 500 <= status < 600:
        wait = _retry_after(e.headers.get("Retry-After")) if e.headers else None
        raise _Retry(f"HTTP {status}: {msg}", wait)
      hint = ""
      if status in (401, 403):
        hint = (" (no key was sent: pass api_key= or set "
                f"{API_KEY_ENV})" if not sent_key else
                " (the key was not accepted)")
      raise JaxkdError(f"teacher at {url} refused the batch: HTTP {status}: "
                       f"{msg}{hint}; nothing was recorded.") from None
    except (urllib.error.URLError, http.client.HTTPException, socket.timeout,
            TimeoutError, ConnectionError, OSError) as e:
      reason = getattr(e, "reason", None) or e
      text = _one_line(reason) or "no answer"
      raise _Retry(f"{type(reason).__name__}: {text}") from None

  def fn(images, request_id: Optional[str] = None) -> np.ndarray:
    images = np.ascontiguousarray(images, np.float32)
    if images.ndim < 2 or len(images) == 0:
      raise JaxkdError(f"images must be a non-empty batch [B, ...], got shape "
                       f"{images.shape}.")
    if request_id is None:
      request_id = uuid.uuid4().hex
    key = idempotency_key(str(request_id), images)
    stats["calls"] += 1
    end = time.monotonic() + deadline
    attempts, cause = 0, "none"

    def past_deadline(what):
      return JaxkdError(
          f"teacher at {url} did not answer within the call's deadline of "
          f"{deadline:g} s ({what}; last failure: {cause}); nothing was "
          "recorded.")

    def one(images=images):
      cancel = threading.Event()
      return _within(lambda: attempt_once(images, key, end, cancel),
                     end - time.monotonic(), cancel)
    while True:
      attempts += 1
      stats["attempts"] += 1
      try:
        got = one()
        if got is None:  # 415: switched to JSON, resend at once
          got = one()
          if got is None:
            raise JaxkdError(f"teacher at {url} refused both .npy and JSON "
                             "(HTTP 415).")
        return _answer(*got, len(images), url)
      except _Deadline:
        raise past_deadline(f"attempt {attempts} was still running") from None
      except _Retry as r:
        cause = r.cause
        if attempts > retries:
          break
        wait = delay(attempts - 1) if r.wait is None else r.wait
        if wait > MAX_RETRY_AFTER:
          raise JaxkdError(f"teacher at {url} asked to retry after {wait:.0f}"
                           f" s (more than {MAX_RETRY_AFTER:.0f} s); last "
                           f"cause: {cause}.") from None
        if time.monotonic() + wait >= end:
          raise past_deadline(f"{attempts} attempts, the next one due after "
                              f"{wait:.3g} s") from None
        stats["retries"] += 1
        sleep(wait)
    raise JaxkdError(f"teacher at {url} failed after {attempts} attempts "
                     f"(timeout {timeout:g} s each); last cause: {cause}; "
                     "nothing was recorded.")

  fn.accepts_request_id = True
  fn.stats = stats
  fn.url = url
  fn.deadline = deadline
  fn.model_id = None
  return fn

