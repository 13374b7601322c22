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
  200 answer, by its Content-Type:
    application/x-npy  float32 [B, C]; header `X-Teacher-Output: logits`
                       (default) or `probs`
    application/json   {"logits": [[...]]} or {"probs": [[...]]}

Format: "npy" or "json" always send that body; "auto" (default) sends
`.npy` and, if the server answers 415 Unsupported Media Type, switches to
JSON for the rest of the session (and resends at once, not counted as a
retry). Answers are decoded by their Content-Type whatever was sent.

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

Retries: connection errors, timeouts (`timeout` seconds per attempt), 408,
429 and 5xx are retried up to `retries` times with exponential backoff,
`min(max_backoff, backoff * 2**attempt)`, halved and topped up with a uniform
random half (`jitter`); a 429's or 503's Retry-After (seconds or an HTTP
date) replaces the backoff, and one above 600 s ends the call. Other 4xx and
malformed answers (not decodable, wrong shape or batch size, NaN or inf, not
a distribution) raise a one-line `JaxkdError` at once, as do exhausted
retries (naming the attempts and the last cause); nothing is recorded in the
ledger for a call that raised.
"""

from __future__ import annotations

import email.utils
import hashlib
import http.client
import io
import json
import random
import socket
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
MAX_RETRY_AFTER = 600.0
MAX_ANSWER = 256 << 20  # bytes: a larger answer is malformed
_RETRY_STATUS = (408, 429)


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


class _Retry(Exception):
  """An attempt that may be repeated: `cause` for the final message."""

  def __init__(self, cause: str, wait: Optional[float] = None):
    super().__init__(cause)
    self.cause = cause
    self.wait = wait


def _answer(body: bytes, ctype: str, out_kind: str, k: int, url: str
            ) -> np.ndarray:
  """Decodes and checks one answer; returns logits [k, C] float32."""
  ctype = (ctype or "").split(";")[0].strip().lower()
  where = f"teacher at {url}"
  try:
    if ctype == NPY:
      out = decode_npy(body)
    elif ctype == JSON or ctype.endswith("+json"):
      obj = json.loads(body.decode("utf-8"))
      if isinstance(obj, dict) and ("logits" in obj) != ("probs" in obj):
        out_kind = "logits" if "logits" in obj else "probs"
        obj = obj[out_kind]
      elif not isinstance(obj, list):
        raise ValueError("expected {\"logits\": ...} or {\"probs\": ...}")
      out = np.asarray(obj, np.float64)
    else:
      raise ValueError(f"content type {ctype or 'missing'!r}, expected "
                       f"{NPY} or {JSON}")
    out = numeric(out)
  except (ValueError, TypeError, UnicodeDecodeError, EOFError,
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


def http_teacher(url: str, *, timeout: float = 30.0, retries: int = 5,
                 backoff: float = 0.5, max_backoff: float = 8.0,
                 jitter: bool = True, format: str = "auto",
                 session: Optional[urllib.request.OpenerDirector] = None,
                 headers: Optional[Dict[str, str]] = None,
                 sleep: Callable[[float], None] = time.sleep):
  """A teacher fn that POSTs image batches to `url` (protocol above).

  Args:
    url: http(s) URL the batches are POSTed to.
    timeout: seconds each attempt may wait for the server (connect and read).
    retries: further attempts after the first on retryable failures.
    backoff, max_backoff: the wait before retry n is
      min(max_backoff, backoff * 2**n) seconds, or the server's Retry-After.
    jitter: wait a uniform random 50-100% of that (spreads clients apart).
    format: "auto", "npy" or "json": the request body (see the module doc).
    session: a `urllib.request.OpenerDirector` (proxies, auth, TLS
      contexts); default `urllib.request.build_opener()`.
    headers: extra request headers (e.g. {"Authorization": "Bearer ..."}).
    sleep: the wait function (tests).

  Returns:
    `fn(images [B, ...] float32, request_id: str | None = None) -> logits
    [B, C] float32`, with `fn.accepts_request_id = True` and `fn.stats`
    (attempts, retries, calls).

  Raises:
    JaxkdError (one line) for bad arguments here, and from `fn` on 4xx,
    malformed answers or exhausted retries.
  """
  if not isinstance(url, str) or not url.startswith(
      ("http://", "https://")) or not urllib.parse.urlsplit(url).hostname:
    raise JaxkdError(f"teacher url must be http(s)://host[:port][/path], got "
                     f"{url!r}.")
  if format not in ("auto", "npy", "json"):
    raise JaxkdError(f"format must be 'auto', 'npy' or 'json', got "
                     f"{format!r}.")
  for name, v in (("timeout", timeout), ("backoff", backoff),
                  ("max_backoff", max_backoff)):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not (
        np.isfinite(v) and (v > 0 if name == "timeout" else v >= 0)):
      raise JaxkdError(f"{name} must be a finite number "
                       f"{'> 0' if name == 'timeout' else '>= 0'}, got {v!r}.")
  if not is_int(retries) or retries < 0:
    raise JaxkdError(f"retries must be an int >= 0, got {retries!r}.")
  opener = session or urllib.request.build_opener()
  rng = random.Random()
  state = {"format": "npy" if format == "auto" else format}
  stats = {"calls": 0, "attempts": 0, "retries": 0}

  def delay(attempt: int) -> float:
    d = min(max_backoff, backoff * 2.0 ** attempt)
    return d * (0.5 + 0.5 * rng.random()) if jitter else d

  def attempt_once(images, key):
    fmt = state["format"]
    if fmt == "npy":
      body, ctype = encode_npy(images), NPY
    else:
      body, ctype = json.dumps({"images": images.tolist()}).encode(), JSON
    hdrs = {"Content-Type": ctype, "Idempotency-Key": key,
            "Accept": f"{NPY}, {JSON}" if fmt == "npy" else JSON}
    hdrs.update(headers or {})
    req = urllib.request.Request(url, data=body, headers=hdrs, method="POST")
    try:
      with opener.open(req, timeout=timeout) as resp:
        data = resp.read(MAX_ANSWER + 1)
        if len(data) > MAX_ANSWER:
          raise JaxkdError(f"teacher at {url} sent an answer over "
                           f"{MAX_ANSWER} bytes; nothing was recorded.")
        return data, resp.headers.get("Content-Type", ""), (
            resp.headers.get(OUTPUT_HEADER) or "logits").strip().lower()
    except urllib.error.HTTPError as e:
      try:
        msg = _one_line(e.read().decode("utf-8", "replace")) or e.reason
      except Exception:  # noqa: BLE001 - the status says enough
        msg = e.reason
      finally:
        e.close()
      status = e.code
      if status == 415 and format == "auto" and fmt == "npy":
        state["format"] = "json"
        return None
      if status in _RETRY_STATUS or 500 <= status < 600:
        wait = _retry_after(e.headers.get("Retry-After")) if e.headers else None
        raise _Retry(f"HTTP {status}: {msg}", wait)
      raise JaxkdError(f"teacher at {url} refused the batch: HTTP {status}: "
                       f"{msg}; nothing was recorded.") from None
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
    attempts, cause = 0, ""
    while True:
      attempts += 1
      stats["attempts"] += 1
      try:
        got = attempt_once(images, key)
        if got is None:  # 415: switched to JSON, resend at once
          got = attempt_once(images, key)
          if got is None:
            raise JaxkdError(f"teacher at {url} refused both .npy and JSON "
                             "(HTTP 415).")
        return _answer(*got, len(images), url)
      except _Retry as r:
        cause = r.cause
        if attempts > retries:
          break
        wait = delay(attempts - 1) if r.wait is None else r.wait
        if wait > MAX_RETRY_AFTER:
          raise JaxkdError(f"teacher at {url} asked to retry after {wait:.0f}"
                           f" s (more than {MAX_RETRY_AFTER:.0f} s); last "
                           f"cause: {cause}.") from None
        stats["retries"] += 1
        sleep(wait)
    raise JaxkdError(f"teacher at {url} failed after {attempts} attempts "
                     f"(timeout {timeout:g} s each); last cause: {cause}; "
                     "nothing was recorded.")

  fn.accepts_request_id = True
  fn.stats = stats
  fn.url = url
  return fn
