"""Decoding image files to uint8 arrays with Pillow, in this process or in
reader processes.

This module imports only NumPy and Pillow (not JAX), so the spawned reader
processes of `jaxkd.data.sources.iter_batches` start in a fraction of a
second: Pillow's decode holds the GIL, so threads do not overlap it, and
processes do (one decode per core).
"""

from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np


class MissingPillow(ImportError):
  pass


def pillow():
  try:
    from PIL import Image  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise MissingPillow("folder: datasets need Pillow (pip install Pillow)."
                        ) from None
  return Image


def fit_image(img, shape: Tuple[int, int], mode: str):
  """Pillow image brought to (H, W) by `mode` ("resize": scale to it;
  "center_crop": scale the shorter side to fit, cut the centre)."""
  Image = pillow()
  h, w = shape
  if img.size == (w, h):
    return img
  if mode == "resize":
    return img.resize((w, h), Image.BILINEAR)
  iw, ih = img.size
  scale = max(w / iw, h / ih)
  nw, nh = max(w, round(iw * scale)), max(h, round(ih * scale))
  img = img.resize((nw, nh), Image.BILINEAR)
  left, top = (nw - w) // 2, (nh - h) // 2
  return img.crop((left, top, left + w, top + h))


def decode(path: str, channels: int, shape: Tuple[int, int], fit: str
           ) -> np.ndarray:
  """uint8 [H, W, C] of one file."""
  Image = pillow()
  with Image.open(path) as img:
    img.load()
    img = img.convert("L" if channels == 1 else "RGB")
    arr = np.asarray(fit_image(img, shape, fit), np.uint8)
  return arr.reshape(shape + (channels,))


class DecodeError(Exception):
  """A file of a batch could not be decoded: `.path`, `.reason`."""

  def __init__(self, path: str, reason: str):
    super().__init__(path, reason)
    self.path, self.reason = path, reason


def decode_many(paths: Sequence[str], channels: int, shape: Tuple[int, int],
                fit: str) -> np.ndarray:
  """uint8 [k, H, W, C] of `paths` [k]; a file that fails is a
  `DecodeError` naming it (picklable, for reader processes)."""
  out = np.empty((len(paths),) + tuple(shape) + (channels,), np.uint8)
  for r, p in enumerate(paths):
    try:
      out[r] = decode(p, channels, shape, fit)
    except MissingPillow:
      raise
    except Exception as e:  # pylint: disable=broad-except
      raise DecodeError(p, f"{type(e).__name__}: {e}") from None
  return out


# ------------------------------------------------------ reader processes --
#
# Started as `python -m jaxkd.image_decode`: not through multiprocessing,
# whose spawn start re-imports the parent's __main__ (a user's script
# without a main guard would run again in every reader).


def _send(f, obj) -> None:
  import pickle  # pylint: disable=g-import-not-at-top
  data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
  f.write(len(data).to_bytes(8, "little"))
  f.write(data)
  f.flush()


def _receive(f):
  import pickle  # pylint: disable=g-import-not-at-top
  head = f.read(8)
  if len(head) < 8:
    raise EOFError
  size = int.from_bytes(head, "little")
  data = f.read(size)
  if len(data) < size:
    raise EOFError
  return pickle.loads(data)


def _serve() -> None:
  """Reader loop: (paths, channels, shape, fit) in, ("ok", uint8 batch) or
  ("error", path, reason) out, until stdin closes."""
  import sys  # pylint: disable=g-import-not-at-top
  stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
  while True:
    try:
      args = _receive(stdin)
    except EOFError:
      return
    try:
      _send(stdout, ("ok", decode_many(*args)))
    except DecodeError as e:
      _send(stdout, ("error", e.path, e.reason))
    except MissingPillow as e:
      _send(stdout, ("error", "<reader>", str(e)))


class ReaderPool:
  """`workers` reader processes decoding batches in submission order.

  Each reader has at most one batch in flight (so neither side can block
  the other on a full pipe); `submit` goes to the readers in turn and
  `result` returns the batches in the order they were submitted.
  """

  def __init__(self, workers: int):
    import subprocess  # pylint: disable=g-import-not-at-top
    import sys  # pylint: disable=g-import-not-at-top
    self.procs = [subprocess.Popen(
        [sys.executable, "-m", "jaxkd.image_decode"], stdin=subprocess.PIPE,
        stdout=subprocess.PIPE) for _ in range(max(1, workers))]
    self._next_submit = self._next_result = 0
    self.workers = len(self.procs)
    self.busy = False  # a pass is reading through this pool

  def submit(self, paths, channels, shape, fit) -> None:
    if self._next_submit - self._next_result >= self.workers:
      raise RuntimeError("every reader already has a batch in flight")
    p = self.procs[self._next_submit % self.workers]
    _send(p.stdin, (list(paths), channels, tuple(shape), fit))
    self._next_submit += 1

  def result(self) -> np.ndarray:
    """The next batch in submission order (DecodeError if a file failed)."""
    p = self.procs[self._next_result % self.workers]
    self._next_result += 1
    try:
      reply = _receive(p.stdout)
    except EOFError:
      self.close()
      raise RuntimeError("an image reader process ended unexpectedly"
                         ) from None
    if reply[0] == "ok":
      return reply[1]
    raise DecodeError(reply[1], reply[2])

  def drain(self) -> None:
    """Reads and drops the batches still in flight (an abandoned pass)."""
    while self._next_result < self._next_submit:
      try:
        self.result()
      except (DecodeError, RuntimeError):
        pass

  def close(self) -> None:
    for p in self.procs:
      try:
        p.stdin.close()
        p.wait(timeout=5)
      except Exception:  # pylint: disable=broad-except
        p.kill()
    self.procs = []


if __name__ == "__main__":
  _serve()
