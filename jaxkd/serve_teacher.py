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

`make_server(predict_fn, host, port)` is the same server around any NumPy
function. A POST is handled in two steps, `TeacherHandler.answer_request`
(decode, check, answer from the cache or the model) and `reply` (encode
and send), so a subclass can act between them (the tests' fault-injecting
server, tests/faulty_teacher_server.py).
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


class TeacherHandler(http.server.BaseHTTPRequestHandler):
  """GET /stats and /info; POST images -> answers (see the module doc)."""
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
      self._error(e.status, e.msg)
      return None
    except Exception as e:  # noqa: BLE001 - the model failed: 500, retried
      self._error(500, f"{type(e).__name__}: "
                  f"{' '.join(str(e).split())[:200]}")
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


class TeacherServer(http.server.ThreadingHTTPServer):
  """A `ThreadingHTTPServer` holding the model, the cache and the counts;
  its requests are handled by the class attribute `handler`."""

  daemon_threads = True
  handler = TeacherHandler

  def __init__(self, addr, predict_fn: PredictFn, *,
               output: str = "logits", formats: Sequence[str] = ("npy", "json"),
               input_shape: Optional[Sequence[int]] = None,
               info: Optional[dict] = None, max_body: int = MAX_BODY,
               verbose: bool = False):
    super().__init__(addr, self.handler)
    if output not in ("logits", "probs"):
      raise ValueError(f"output must be 'logits' or 'probs', got {output!r}.")
    self.predict_fn = predict_fn
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

  def count_request(self) -> int:
    """Counts one POST; returns its number (1-based)."""
    with self.lock:
      self.requests += 1
      return self.requests

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




def make_server(predict_fn: PredictFn, host: str = "127.0.0.1", port: int = 0,
                **kw) -> TeacherServer:
  """A (not yet serving) `TeacherServer` around `predict_fn(images [B, ...]
  float32) -> logits [B, C]`; port 0 picks a free port (`server.url`). Call
  `.start()` to serve in a thread, or `.serve_forever()`. Keyword options:
  output ("logits" | "probs"), formats, input_shape, info, max_body,
  verbose."""
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
    num_classes, checkpoint, step, accuracy) for GET /info; the input shape
    (None when not recorded: requests are then not checked).

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
  from jaxkd.validation import JaxkdError

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

  info = {"model": name, "num_classes": int(classes), "checkpoint": path,
          "step": int(step), "accuracy": accuracy}
  return predict_fn, info, (tuple(shape) if shape else None)


def _load_orbax_only(path: str, model: Optional[str],
                     num_classes: Optional[int]):
  """(module, variables, meta, step) of a teacher checkpoint written before
  `teacher.json`: the state restored without a target (its params and
  batch_stats kept), the model named by `model` or the metadata's
  config.model, the classes by `num_classes` or its num_classes."""
  import orbax.checkpoint as ocp

  from jaxkd.models import get_model
  from jaxkd.validation import JaxkdError

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


def main(argv=None) -> None:
  p = argparse.ArgumentParser(
      prog="python -m jaxkd.serve_teacher",
      description="Serve a saved jaxkd teacher over HTTP (see module doc).")
  p.add_argument("--checkpoint", required=True,
                 help="the saved teacher's folder (workdir/teacher) or the "
                 "workdir")
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
