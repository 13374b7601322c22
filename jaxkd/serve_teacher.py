"""Serves a teacher over HTTP: `python -m jaxkd.serve_teacher --checkpoint DIR`.

Stands up the paid black-box teacher the active-distillation papers assume,
in one command, from the teacher a jaxkd job saved (`workdir/teacher/`, an
orbax checkpoint whose metadata names the model):

  python -m jaxkd.serve_teacher --checkpoint runs/digits/teacher --port 8765
  # serving on http://127.0.0.1:8765

and `jaxkd.http_teacher.http_teacher("http://127.0.0.1:8765")` is its
client (the protocol is in that module's docstring). The server

  * answers POSTed batches (`.npy` or JSON) with logits, in the format of the
    request;
  * keeps an answer cache per `Idempotency-Key`, in memory for the
    server's lifetime: a repeated key is answered from the cache and not
    counted (the same key with other images is refused, 422); concurrent
    requests with one key compute it once;
  * counts what it answered: GET /stats -> {"answered_images": images run
    through the model for new keys (what a paid API would bill),
    "requests": POSTs received, "keys": distinct keys answered, "replays":
    requests answered from the cache};
  * checks every request before running the model (size, type, shape,
    NaN/inf): 400/413/415 with a one-line reason, nothing counted.

`make_server(predict_fn, host, port, faults=...)` is the same server around
any NumPy function, with fault injection for tests: `faults` maps the n-th
POST (1-based) to "drop" (answer computed, cached and counted, connection
closed unanswered), "drop_before" (closed before computing), a status code
"500" / "503" / "429" / "400" (optionally ":<Retry-After>", e.g. "429:0.1"),
"slow:<seconds>" (sleeps before handling), or a corrupt answer: "nan",
"shape" (one class), "batch" (one row short), "scale" (doubled),
"garbage" (not `.npy`).
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import sys
import threading
import time
from typing import Callable, Dict, Optional, Sequence

import numpy as np

from jaxkd.http_teacher import (JSON, NPY, OUTPUT_HEADER, decode_npy,
                                encode_npy, images_digest, numeric)

PredictFn = Callable[[np.ndarray], np.ndarray]
MAX_BODY = 256 << 20  # bytes per request


class _BadRequest(Exception):

  def __init__(self, status: int, msg: str):
    super().__init__(msg)
    self.status = status
    self.msg = msg


def _softmax(z):
  z = z - z.max(1, keepdims=True)
  e = np.exp(z)
  return e / e.sum(1, keepdims=True)


class TeacherServer(http.server.ThreadingHTTPServer):
  """A `ThreadingHTTPServer` holding the model, the cache and the counts."""

  daemon_threads = True

  def __init__(self, addr, predict_fn: PredictFn, *, faults=None,
               output: str = "logits", formats: Sequence[str] = ("npy", "json"),
               input_shape: Optional[Sequence[int]] = None,
               info: Optional[dict] = None, max_body: int = MAX_BODY,
               verbose: bool = False):
    super().__init__(addr, _Handler)
    if output not in ("logits", "probs"):
      raise ValueError(f"output must be 'logits' or 'probs', got {output!r}.")
    self.predict_fn = predict_fn
    self.faults = {int(k): str(v) for k, v in (faults or {}).items()}
    self.output = output
    self.formats = tuple(formats)
    self.input_shape = None if input_shape is None else tuple(input_shape)
    self.info = dict(info or {})
    self.max_body = int(max_body)
    self.verbose = verbose
    self.lock = threading.Lock()        # counts, cache, in-flight
    self.model_lock = threading.Lock()  # one model call at a time
    self.cache: Dict[str, tuple] = {}   # key -> (images digest, logits)
    self.inflight: Dict[str, threading.Event] = {}
    self.answered_keys: Dict[str, int] = {}  # key -> images answered
    self.requests = 0
    self.answered_images = 0
    self.replays = 0
    self._thread = None

  @property
  def url(self) -> str:
    host, port = self.server_address[:2]
    return f"http://{host}:{port}"

  def stats(self) -> dict:
    with self.lock:
      return {"answered_images": self.answered_images,
              "requests": self.requests, "keys": len(self.answered_keys),
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

  # ------------------------------------------------------------- answers --

  def answer(self, key: Optional[str], images: np.ndarray) -> tuple:
    """(logits [B, C], replayed) for `images` under `key`: computed and
    counted once per key, from the cache afterwards."""
    digest = images_digest(images)
    if key is None:
      return self._compute(None, images), False
    while True:
      with self.lock:
        if key in self.cache:
          old, logits = self.cache[key]
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
      logits = self._compute(key, images)
      with self.lock:
        self.cache[key] = (digest, logits)
    finally:
      with self.lock:
        self.inflight.pop(key).set()
    return logits, False

  def _compute(self, key, images):
    with self.model_lock:
      try:
        out = np.asarray(self.predict_fn(images), np.float32)
      except (ValueError, TypeError) as e:  # the images do not fit the model
        raise _BadRequest(400, f"the model refused the images: "
                          f"{' '.join(str(e).split())[:200]}") from None
    if out.ndim != 2 or len(out) != len(images):
      raise RuntimeError(f"predict_fn returned shape {out.shape} for "
                         f"{len(images)} images")
    with self.lock:
      self.answered_images += len(images)
      if key is not None:
        self.answered_keys[key] = len(images)
    return out


class _Handler(http.server.BaseHTTPRequestHandler):
  server: TeacherServer
  server_version = "jaxkd-teacher/1"

  def log_message(self, fmt, *args):
    if self.server.verbose:
      super().log_message(fmt, *args)

  def _send(self, status: int, body: bytes, ctype: str, headers=None):
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

  def do_GET(self):
    path = self.path.split("?")[0].rstrip("/")
    if path == "/stats":
      return self._json(200, self.server.stats())
    if path in ("", "/info"):
      s = self.server
      return self._json(200, dict(s.info, formats=[
          NPY if f == "npy" else JSON for f in s.formats], output=s.output,
          input_shape=s.input_shape))
    self._error(404, f"no such path {self.path!r}; POST images to /")

  def _read_images(self) -> tuple:
    ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip()
    fmt = {NPY: "npy", JSON: "json"}.get(ctype.lower())
    if fmt not in self.server.formats:
      accepted = ", ".join(NPY if f == "npy" else JSON
                           for f in self.server.formats)
      raise _BadRequest(415, f"content type {ctype or 'missing'!r}; send "
                        f"{accepted}")
    try:
      length = int(self.headers.get("Content-Length", ""))
    except ValueError:
      raise _BadRequest(411, "Content-Length required") from None
    if length < 0 or length > self.server.max_body:
      raise _BadRequest(413, f"body of {length} bytes; at most "
                        f"{self.server.max_body}")
    body = self.rfile.read(length)
    try:
      if fmt == "npy":
        images = decode_npy(body)
      else:
        obj = json.loads(body.decode("utf-8"))
        if not isinstance(obj, dict) or "images" not in obj:
          raise ValueError('expected {"images": [...]}')
        images = np.asarray(obj["images"], np.float64)
      images = numeric(images)
    except (ValueError, TypeError, UnicodeDecodeError, EOFError,
            RecursionError) as e:
      raise _BadRequest(400, "cannot decode images: "
                        f"{' '.join(str(e).split())[:200]}") from None
    images = images.astype(np.float32)
    if images.ndim < 2 or len(images) == 0:
      raise _BadRequest(400, f"images must be a non-empty batch [B, ...], "
                        f"got shape {images.shape}")
    want = self.server.input_shape
    if want is not None and images.shape[1:] != want:
      raise _BadRequest(400, f"images of shape {images.shape[1:]}, the "
                        f"teacher takes {want}")
    if not np.all(np.isfinite(images)):
      raise _BadRequest(400, "images contain NaN or inf")
    return images, fmt

  def do_POST(self):
    s = self.server
    with s.lock:
      s.requests += 1
      n = s.requests
    fault = s.faults.get(n, "")
    kind, _, arg = fault.partition(":")
    if kind == "slow":
      time.sleep(float(arg))
    if kind == "drop_before":
      self.close_connection = True
      return
    if kind.isdigit():
      hdrs = {"Retry-After": arg} if arg else None
      return self._error(int(kind), f"injected fault on request {n}", hdrs)
    try:
      images, fmt = self._read_images()
      key = self.headers.get("Idempotency-Key") or None
      logits, replayed = s.answer(key, images)
    except _BadRequest as e:
      return self._error(e.status, e.msg)
    except Exception as e:  # noqa: BLE001 - the model failed: 500, retried
      return self._error(500, f"{type(e).__name__}: "
                         f"{' '.join(str(e).split())[:200]}")
    if kind == "drop":  # computed, cached, counted: then the line breaks
      self.close_connection = True
      return
    out = _softmax(logits.astype(np.float64)) if s.output == "probs" \
        else logits
    out = out.astype(np.float32)
    if kind == "nan":
      out = out.copy()
      out[-1, 0] = np.nan
    elif kind == "shape":
      out = out[:, :1]
    elif kind == "batch":
      out = out[:-1]
    elif kind == "scale":
      out = out * 2
    headers = {OUTPUT_HEADER: s.output}
    if replayed:
      headers["Idempotent-Replayed"] = "true"
    if kind == "garbage":
      return self._send(200, b"not an npy file", NPY, headers)
    if fmt == "npy":
      return self._send(200, encode_npy(out), NPY, headers)
    self._json(200, {s.output: out.tolist()}, headers)


def make_server(predict_fn: PredictFn, host: str = "127.0.0.1", port: int = 0,
                faults: Optional[Dict[int, str]] = None, **kw) -> TeacherServer:
  """A (not yet serving) `TeacherServer` around `predict_fn(images [B, ...]
  float32) -> logits [B, C]`; port 0 picks a free port (`server.url`). Call
  `.start()` to serve in a thread, or `.serve_forever()`. Keyword options:
  output ("logits" | "probs"), formats, input_shape, info, max_body,
  verbose."""
  return TeacherServer((host, int(port)), predict_fn, faults=faults, **kw)


# ------------------------------------------------------------ the model ---


def load_teacher(checkpoint: str, *, model: Optional[str] = None,
                 num_classes: Optional[int] = None,
                 input_shape: Optional[Sequence[int]] = None):
  """(predict_fn, info, input_shape) for the teacher a jaxkd job saved.

  `checkpoint` is the teacher's orbax directory (`workdir/teacher`) or the
  workdir holding it. The model name, number of classes and input shape come
  from the checkpoint's metadata; older checkpoints without them need
  `model` / `num_classes` (and the input shape is then not checked).
  """
  import orbax.checkpoint as ocp

  from jaxkd import train
  from jaxkd.models import get_model
  from jaxkd.validation import JaxkdError

  path = os.path.abspath(checkpoint)
  if os.path.isdir(os.path.join(path, "teacher")):
    path = os.path.join(path, "teacher")
  if not os.path.isdir(path):
    raise JaxkdError(f"no teacher checkpoint at {checkpoint} (expected the "
                     "workdir/teacher directory a jaxkd job writes).")
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
  shape = input_shape or meta.get("input_shape")
  if not name or not classes:
    raise JaxkdError(f"{path} does not record the teacher's "
                     f"{'model name' if not name else 'number of classes'}; "
                     "pass --model NAME --num-classes N.")
  net = get_model(name, int(classes))
  variables = {"params": state["params"]}
  if state.get("batch_stats"):
    variables["batch_stats"] = state["batch_stats"]

  def predict_fn(images):
    return train.predict(net, variables, images)

  info = {"model": name, "num_classes": int(classes), "checkpoint": path,
          "step": int(step), "accuracy": meta.get("accuracy")}
  return predict_fn, info, (tuple(shape) if shape else None)


def main(argv=None) -> None:
  p = argparse.ArgumentParser(
      prog="python -m jaxkd.serve_teacher",
      description="Serve a saved jaxkd teacher over HTTP (see module doc).")
  p.add_argument("--checkpoint", required=True,
                 help="the teacher's orbax directory (workdir/teacher) or "
                 "the workdir")
  p.add_argument("--host", default="127.0.0.1")
  p.add_argument("--port", type=int, default=0, help="0 picks a free port")
  p.add_argument("--model", default=None,
                 help="model name, if the checkpoint does not record it")
  p.add_argument("--num-classes", type=int, default=None)
  p.add_argument("--output", choices=("logits", "probs"), default="logits")
  p.add_argument("--verbose", action="store_true", help="log every request")
  a = p.parse_args(argv)
  from jaxkd.validation import JaxkdError
  try:
    predict_fn, info, shape = load_teacher(
        a.checkpoint, model=a.model, num_classes=a.num_classes)
    server = make_server(predict_fn, a.host, a.port, output=a.output,
                         input_shape=shape, info=info, verbose=a.verbose)
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
