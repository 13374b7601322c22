"""Pools on disk at scale: scoring throughput against a PyTorch DataLoader,
and one active round over a 1,000,000-candidate memory-mapped pool.

  python benchmarks/pool_scale.py                 # the full run (30-60 min)
  python benchmarks/pool_scale.py --quick         # smoke run, < 2 minutes
  python benchmarks/pool_scale.py --strategies random,coreset --n 200000

The pool (built in `--workdir`, default /tmp/pool_scale, deleted at the end
unless `--keep`): L + N uint8 images [28, 28] (L = `--initial` = 1,000, N =
`--n` candidates) drawn from Fashion-MNIST's 60,000 training images with a
random shift of -2..2 px in each direction and a horizontal flip with
probability 1/2, written in chunks to `pool.npy` (np.lib.format.open_memmap)
with their labels in `pool_labels.npy`; the first M = `--png` candidates are
also written as PNG files under `png/<label>/<row>.png`.

Section 1, scoring throughput (the student, `settings.ActiveSettings().student`
= lenet5_half, randomly initialised, eval mode):
  jaxkd   `jaxkd.train.predict(model, variables, source)` over a
          `NpySource` / `FolderSource` subset (`--score_n` memmap items,
          `--score_png` PNG files): Grain reader threads, batches of 1,024;
  torch   a `torch.utils.data.Dataset` over the same memmap (per item:
          `x[i].astype(float32) / 255`) or the same PNG files (per item:
          PIL open, convert("L"), / 255), `DataLoader(batch_size=1024,
          num_workers=2)`, `torch.inference_mode()`, the same LeNet-5 in
          NCHW (`peers.torch_lenet5`) with the Flax weights copied in.
  The torch side runs in its own process (forking DataLoader workers from a
  process with JAX's threads running is unsafe), with torch's default
  intra-op thread count (its default here is the core count, 2 = what
  `peers.TORCH_THREADS` sets). Both sides' logits are checked to agree
  (max abs difference < 1e-4) on the first `--check` items of each source
  first. Timings are medians of `--repeats` interleaved repeats (the order
  alternates). "compile" is jaxkd's first predict call on one batch minus
  the second. A component breakdown (reading alone, the forward alone,
  reader-thread and batch-size variants) follows, for diagnosis.

Section 2, one round per pool strategy (`--strategies`; default the 11 pool
strategies): in a fresh subprocess each (so its peak RSS, from wait4's
rusage, is its own), `jaxkd.loop.run_loop` with rounds = 1 and per_round =
`--per_round` (1,000) over a `TeacherOracle` on the `NpySource` pool (L
first, candidates after it, as `jaxkd.jobs.active` lays them out), a cheap
deterministic NumPy teacher (ridge regression on the Fashion-MNIST training
pixels), the default loop settings (300 Adam steps of 64), ADMM on
embeddings. Phase times of round 1 come from hooks wrapped around the
loop's functions (scoring = `loop._selection_inputs`, with the student
forward `train.predict`, `oracle.peek` and the strategy's `prepare` inside
it; selection = `strategy.select`; paying = `oracle.query`; training =
`strategy.training_data` + `strategy.train`; eval = `loop._finish_round`:
test accuracy + checkpoint). A strategy that runs over `--timeout` seconds
(600) is killed and recorded as "timeout".

Results: `--out`.json and `--out`.md (default benchmarks/results/pool_scale;
a `--quick` run writes /tmp/pool_scale_quick.*), each written atomically
once everything has run. Targets (issue): every pool strategy's
1,000,000-candidate round under 3 GiB peak RSS; jaxkd scoring at least as
fast as the DataLoader path, from the memmap and from the PNG folder.
Not a test.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import contextlib
import dataclasses
import json
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

POOL_STRATEGIES = ("random", "entropy", "margin", "least_confidence",
                   "coreset", "badge", "admm", "rad", "gap_diversity",
                   "learning_loss", "discriminative")
STRATEGY_OPTIONS = {"admm": {"features": "embeddings"}}
RSS_TARGET_GIB = 3.0
AGREE_TOL = 1e-4
TORCH_BATCH = 1024
TORCH_WORKERS = 2
FMNIST = "/work/shared/data/fashion_mnist"


def log(msg: str) -> None:
  print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def load_avg() -> list:
  return [round(v, 2) for v in os.getloadavg()]


def proc_status() -> dict:
  """VmRSS / VmHWM / RssAnon / RssFile of this process, in GiB."""
  out = {}
  with open("/proc/self/status") as f:
    for line in f:
      k, _, v = line.partition(":")
      if k in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
        out[k] = round(int(v.split()[0]) / 2**20, 3)
  return out


def write_atomic(path: str, text: str) -> None:
  d = os.path.dirname(os.path.abspath(path))
  os.makedirs(d, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp_", suffix=".part")
  try:
    with os.fdopen(fd, "w") as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(OSError):
      os.unlink(tmp)
    raise


def machine() -> dict:
  model = "?"
  with contextlib.suppress(OSError):
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          model = line.split(":", 1)[1].strip()
          break
  import importlib.metadata as md  # pylint: disable=import-outside-toplevel
  import jax, flax, PIL  # noqa: E401  pylint: disable=import-outside-toplevel

  def version(pkg):
    try:
      return md.version(pkg)
    except md.PackageNotFoundError:
      return None
  mem = 0
  with contextlib.suppress(OSError):
    with open("/proc/meminfo") as f:
      mem = int(f.readline().split()[1]) / 2**20
  return dict(cpus=os.cpu_count(), cpu_model=model,
              memory_gib=round(mem, 1), python=platform.python_version(),
              jax=jax.__version__, jax_backend=jax.devices()[0].platform,
              flax=flax.__version__, numpy=np.__version__,
              grain=version("grain"), pillow=PIL.__version__,
              torch=version("torch"))


def code_state() -> dict:
  """The jaxkd code measured: git HEAD, the package files that differ from
  it (read-only git calls) and a sha256 over every jaxkd/*.py, so runs on
  a changing work tree can be told apart."""
  import hashlib  # pylint: disable=import-outside-toplevel
  h = hashlib.sha256()
  newest = 0.0
  for d, _, files in sorted(os.walk(os.path.join(ROOT, "jaxkd"))):
    for f in sorted(files):
      if f.endswith(".py"):
        path = os.path.join(d, f)
        h.update(os.path.relpath(path, ROOT).encode() + b"\0")
        with open(path, "rb") as fh:
          h.update(fh.read())
        newest = max(newest, os.path.getmtime(path))
  out = {"jaxkd_sha256": h.hexdigest()[:16],
         "newest_file_mtime": time.strftime("%Y-%m-%d %H:%M:%S",
                                            time.localtime(newest))}
  for key, args in (("git_head", ["rev-parse", "--short", "HEAD"]),
                    ("uncommitted", ["status", "--porcelain", "--", "jaxkd"])):
    with contextlib.suppress(OSError, subprocess.SubprocessError):
      out[key] = subprocess.run(["git", "-C", ROOT] + args,
                                capture_output=True, text=True,
                                timeout=30).stdout.rstrip()
  return out


# ------------------------------------------------------------------ data --


def fashion_mnist(data_dir: str):
  from jaxkd.data.idx import read_idx
  x = read_idx(os.path.join(data_dir, "train-images-idx3-ubyte.gz"),
               expected_magic=2051)
  y = read_idx(os.path.join(data_dir, "train-labels-idx1-ubyte.gz"),
               expected_magic=2049)
  tx = read_idx(os.path.join(data_dir, "t10k-images-idx3-ubyte.gz"),
                expected_magic=2051)
  ty = read_idx(os.path.join(data_dir, "t10k-labels-idx1-ubyte.gz"),
                expected_magic=2049)
  return x, y.astype(np.int32), tx, ty.astype(np.int32)


def build_pool(path: str, rows: int, x: np.ndarray, y: np.ndarray,
               seed: int = 0, chunk: int = 65536) -> None:
  """rows shifted/flipped copies of x [n, 28, 28] uint8 -> `path` (.npy,
  written in chunks through a memmap) and `<stem>_labels.npy`."""
  rng = np.random.default_rng(seed)
  h, w = x.shape[1:]
  padded = np.pad(x, ((0, 0), (2, 2), (2, 2)))
  tmp = path + ".part.npy"
  arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8,
                                  shape=(rows, h, w))
  labels = np.empty(rows, np.int32)
  for s in range(0, rows, chunk):
    m = min(chunk, rows - s)
    src = rng.integers(0, len(x), m)
    oy, ox = rng.integers(0, 5, m), rng.integers(0, 5, m)
    flip = rng.random(m) < 0.5
    out = np.empty((m, h, w), np.uint8)
    for a in range(5):
      for b in range(5):
        sel = np.flatnonzero((oy == a) & (ox == b))
        out[sel] = padded[src[sel], a:a + h, b:b + w]
    out[flip] = out[flip][:, :, ::-1]
    arr[s:s + m] = out
    labels[s:s + m] = y[src]
  arr.flush()
  del arr
  os.replace(tmp, path)
  np.save(os.path.splitext(path)[0] + "_labels.npy", labels)


def write_pngs(root: str, pool_path: str, start: int, count: int) -> None:
  """Rows [start, start + count) of the pool as root/<label>/<row>.png."""
  from PIL import Image
  arr = np.load(pool_path, mmap_mode="r")
  labels = np.load(os.path.splitext(pool_path)[0] + "_labels.npy")
  tmp = root + ".part"
  shutil.rmtree(tmp, ignore_errors=True)
  for c in np.unique(labels[start:start + count]):
    os.makedirs(os.path.join(tmp, str(c)), exist_ok=True)

  def save(i):
    Image.fromarray(np.asarray(arr[i])).save(
        os.path.join(tmp, str(labels[i]), f"{i:07d}.png"), format="PNG")

  with concurrent.futures.ThreadPoolExecutor(os.cpu_count()) as ex:
    list(ex.map(save, range(start, start + count), chunksize=256))
  shutil.rmtree(root, ignore_errors=True)
  os.replace(tmp, root)


def fit_teacher(x: np.ndarray, y: np.ndarray, tx, ty, lam: float = 10.0,
                scale: float = 8.0):
  """Ridge regression of one-hot labels on pixels (x / 255): W [785, 10]
  (bias last row) and its test accuracy."""
  f = np.concatenate([x.reshape(len(x), -1).astype(np.float64) / 255,
                      np.ones((len(x), 1))], 1)
  t = np.eye(10)[y]
  w = np.linalg.solve(f.T @ f + lam * np.eye(f.shape[1]), f.T @ t) * scale
  w = w.astype(np.float32)
  logits = teacher_logits(w, tx[..., None].astype(np.float32) / 255)
  return w, float(np.mean(logits.argmax(1) == ty))


def teacher_logits(w: np.ndarray, images: np.ndarray) -> np.ndarray:
  flat = np.asarray(images, np.float32).reshape(len(images), -1)
  return flat @ w[:-1] + w[-1]


# --------------------------------------------------------- torch server --


def torch_server(spec: dict) -> None:
  """Answers one JSON command per stdin line on the saved stdout (other
  output goes to stderr). No JAX in this process."""
  proto = os.fdopen(os.dup(1), "w", buffering=1)
  os.dup2(2, 1)
  import peers  # pylint: disable=import-outside-toplevel
  import torch  # pylint: disable=import-outside-toplevel
  from PIL import Image  # pylint: disable=import-outside-toplevel
  from torch.utils.data import DataLoader, Dataset  # pylint: disable=all
  if spec.get("threads"):
    torch.set_num_threads(int(spec["threads"]))
  p = np.load(spec["weights"])
  model = peers.torch_lenet5(channels=tuple(spec["channels"]),
                             hidden=tuple(spec["hidden"]),
                             num_classes=spec["num_classes"])
  model.load_state_dict({k: torch.from_numpy(np.array(p[k], np.float32))
                         for k in p.files})
  model.eval()

  class MemmapDataset(Dataset):
    """Images of a .npy memmap, the way users write it."""

    def __init__(self, path, count):
      self.x = np.load(path, mmap_mode="r")
      self.count = count

    def __len__(self):
      return self.count

    def __getitem__(self, i):
      img = self.x[i].astype(np.float32) / 255.0
      return torch.from_numpy(img).unsqueeze(0)          # [1, H, W]

  class PngDataset(Dataset):
    """Image files decoded with PIL (as torchvision's ImageFolder +
    ToTensor would), labels left out."""

    def __init__(self, root, files):
      self.paths = [os.path.join(root, f) for f in files]

    def __len__(self):
      return len(self.paths)

    def __getitem__(self, i):
      with Image.open(self.paths[i]) as img:
        a = np.asarray(img.convert("L"), np.float32) / 255.0
      return torch.from_numpy(a).unsqueeze(0)

  with open(spec["png_files"]) as f:
    png_files = f.read().split("\n")

  def dataset(kind, count):
    if kind == "npy":
      return MemmapDataset(spec["pool"], count)
    return PngDataset(spec["png_root"], png_files[:count])

  def score(kind, count, workers=TORCH_WORKERS, forward=True):
    loader = DataLoader(dataset(kind, count), batch_size=TORCH_BATCH,
                        shuffle=False, num_workers=workers)
    outs = []
    with torch.inference_mode():
      for xb in loader:
        outs.append(model(xb) if forward else xb[:, :, 0, 0])
    return torch.cat(outs).numpy()

  def forward_only(kind, count):
    xs = torch.cat(list(DataLoader(dataset(kind, count),
                                   batch_size=TORCH_BATCH, num_workers=0)))
    t = time.perf_counter()
    with torch.inference_mode():
      for s in range(0, len(xs), TORCH_BATCH):
        model(xs[s:s + TORCH_BATCH])
    return time.perf_counter() - t

  proto.write(json.dumps({"ready": True,
                          "threads": torch.get_num_threads(),
                          "torch": torch.__version__}) + "\n")
  for line in sys.stdin:
    cmd = json.loads(line)
    try:
      op = cmd["op"]
      if op == "quit":
        break
      if op == "logits":
        np.save(cmd["out"], score(cmd["kind"], cmd["count"]))
        res = {}
      elif op == "time":
        t = time.perf_counter()
        out = score(cmd["kind"], cmd["count"],
                    workers=cmd.get("workers", TORCH_WORKERS),
                    forward=cmd.get("forward", True))
        res = {"seconds": time.perf_counter() - t, "rows": len(out)}
      elif op == "forward_only":
        res = {"seconds": forward_only(cmd["kind"], cmd["count"])}
      else:
        raise ValueError(f"unknown op {op!r}")
      proto.write(json.dumps(dict(res, ok=True)) + "\n")
    except Exception as e:  # pylint: disable=broad-except
      traceback.print_exc()
      proto.write(json.dumps({"ok": False, "error": repr(e)}) + "\n")


class TorchPeer:
  """The torch server subprocess."""

  def __init__(self, spec: dict):
    self.proc = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--_torch_server",
         json.dumps(spec)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        text=True, bufsize=1)
    self.hello = json.loads(self.proc.stdout.readline())

  def __call__(self, **cmd):
    self.proc.stdin.write(json.dumps(cmd) + "\n")
    self.proc.stdin.flush()
    line = self.proc.stdout.readline()
    if not line:
      raise RuntimeError("torch server died")
    res = json.loads(line)
    if not res.get("ok"):
      raise RuntimeError(f"torch server: {res.get('error')}")
    return res

  def close(self):
    with contextlib.suppress(Exception):
      self.proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
      self.proc.stdin.flush()
    try:
      self.proc.wait(30)
    except subprocess.TimeoutExpired:
      self.proc.kill()
      self.proc.wait()


# -------------------------------------------------------------- scoring --


def scoring_section(a, paths, tmp) -> dict:
  import jax
  from jaxkd import train
  from jaxkd.data import sources
  from jaxkd.data.folder import FolderSource
  from jaxkd.models import get_model, init_model
  import peers  # pylint: disable=import-outside-toplevel

  model = get_model(a.student, 10)
  if not hasattr(model, "channels"):
    raise SystemExit(f"--student {a.student}: the torch peer is a LeNet-5.")
  variables = init_model(model, jax.random.key(0), (28, 28, 1))
  wpath = os.path.join(tmp, "torch_weights.npz")
  np.savez(wpath, **peers.lenet_state_dict(variables["params"]))

  res = {"student": a.student, "batch_size": 1024,
         "torch": {"batch_size": TORCH_BATCH, "num_workers": TORCH_WORKERS}}
  pool = sources.NpySource(paths["pool"])
  log("opening the PNG folder (FolderSource decodes every file once)")
  t = time.perf_counter()
  folder = FolderSource(paths["png"])
  res["folder_open_s"] = time.perf_counter() - t
  res["folder_files"] = len(folder)
  log(f"  {len(folder)} files in {res['folder_open_s']:.1f} s")
  files_txt = os.path.join(tmp, "png_files.txt")
  with open(files_txt, "w") as f:
    f.write("\n".join(folder.files))

  n_npy = min(a.score_n, len(pool))
  n_png = min(a.score_png, len(folder))
  npy_sub = pool.take(np.arange(n_npy))
  png_sub = folder.take(np.arange(n_png))
  res.update(n_npy=n_npy, n_png=n_png)

  def jax_score(src, **kw):
    return train.predict(model, variables, src, **kw)

  # Compile: first call on one batch (fresh process) minus the second.
  one = pool.take(np.arange(1024))
  t = time.perf_counter()
  jax_score(one)
  first = time.perf_counter() - t
  t = time.perf_counter()
  jax_score(one)
  second = time.perf_counter() - t
  res["jaxkd_first_call_s"] = first
  res["jaxkd_compile_s"] = first - second
  # The last batch of each timed subset has its own shape: compile it now.
  for n in {n_npy % 1024, n_png % 1024, a.check % 1024} - {0}:
    jax_score(pool.take(np.arange(n)))

  peer = TorchPeer(dict(weights=wpath, channels=list(model.channels),
                        hidden=list(model.hidden), num_classes=10,
                        pool=paths["pool"], png_root=paths["png"],
                        png_files=files_txt, threads=a.torch_threads))
  res["torch"]["threads"] = peer.hello["threads"]
  res["torch"]["threads_choice"] = (
      f"set_num_threads({a.torch_threads})" if a.torch_threads
      else "torch default")
  try:
    # Agreement on the first `check` items of each source.
    agree = {}
    for kind, src in (("npy", pool), ("png", folder)):
      k = min(a.check, len(src))
      out = os.path.join(tmp, f"torch_{kind}.npy")
      peer(op="logits", kind=kind, count=k, out=out)
      mine = jax_score(src.take(np.arange(k)))
      diff = float(np.max(np.abs(np.load(out) - mine)))
      agree[kind] = {"items": k, "max_abs_logit_diff": diff,
                     "ok": diff < AGREE_TOL}
      log(f"agreement {kind}: {k} items, max |diff| {diff:.2e}")
    res["agreement"] = agree
    if not all(v["ok"] for v in agree.values()):
      raise SystemExit(f"jaxkd and torch logits disagree: {agree}")

    # Interleaved, alternating-order timings.
    for kind, src, n in (("npy", npy_sub, n_npy), ("png", png_sub, n_png)):
      times = {"jaxkd": [], "torch": []}
      loads = []

      def run_jax(src=src):
        t = time.perf_counter()
        out = jax_score(src)
        assert len(out) == len(src)
        return time.perf_counter() - t

      def run_torch(kind=kind, n=n):
        return peer(op="time", kind=kind, count=n)["seconds"]

      for r in range(a.repeats):
        order = (("jaxkd", run_jax), ("torch", run_torch))
        for name, fn in (order if r % 2 == 0 else order[::-1]):
          times[name].append(fn())
        loads.append(load_avg())
        log(f"  {kind} repeat {r}: jaxkd {times['jaxkd'][-1]:.2f} s, torch "
            f"{times['torch'][-1]:.2f} s ({n} items), load {loads[-1]}")
      med = {k: statistics.median(v) for k, v in times.items()}
      res[kind] = {
          "items": n, "seconds": times, "load_avg": loads,
          "jaxkd_images_per_s": n / med["jaxkd"],
          "torch_images_per_s": n / med["torch"],
          "ratio_jaxkd_over_torch": med["torch"] / med["jaxkd"],
      }
      log(f"{kind}: jaxkd {n / med['jaxkd']:,.0f} img/s, torch "
          f"{n / med['torch']:,.0f} img/s, ratio "
          f"{med['torch'] / med['jaxkd']:.2f}")
    res["breakdown"] = breakdown(a, model, variables, pool, folder, peer)
  finally:
    peer.close()
  return res


def breakdown(a, model, variables, pool, folder, peer) -> dict:
  """One timing each of the parts, on smaller subsets, for diagnosis."""
  from jaxkd import train
  from jaxkd.data import sources
  out = {}
  orig = sources.iter_batches

  def timed(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t

  for kind, src, n in (("npy", pool, min(a.breakdown_n, len(pool))),
                       ("png", folder,
                        min(a.breakdown_png, len(folder)))):
    sub = src.take(np.arange(n))
    rows = {}

    def read_only(threads, sub=sub):
      for _ in orig(sub, 1024, threads=threads, prefetch=max(4, threads)):
        pass

    for th in (0, 1, 2, 4) + ((8,) if kind == "png" else ()):
      rows[f"jaxkd read only, threads={th}"] = n / timed(
          lambda th=th: read_only(th))
    arr = sources.gather(sub, np.arange(n))  # float32 in memory
    train.predict(model, variables, arr[:n % 1024 or 1024])
    rows["jaxkd forward only (in-memory float32 array)"] = n / timed(
        lambda arr=arr: train.predict(model, variables, arr))
    raw = sub.base.array[:n] if kind == "npy" else None
    if raw is not None:
      rows["numpy uint8 -> float32 / 255 only"] = n / timed(
          lambda: [np.asarray(raw[s:s + 1024], np.float32) / np.float32(255)
                   for s in range(0, n, 1024)])
      rows["NpySource.read (convert + range check) only"] = n / timed(
          lambda: [sub.read(np.arange(s, min(s + 1024, n)))
                   for s in range(0, n, 1024)])
    for th, bs in ((2, 1024), (4, 1024), (2, 4096)) + (
        ((8, 1024),) if kind == "png" else ()):
      def patched(images, batch_size, th=th, **kw):
        kw.setdefault("threads", th)
        kw.setdefault("prefetch", max(4, th))  # Grain: prefetch >= threads
        return orig(images, batch_size, **kw)
      sources.iter_batches = patched
      try:
        # Compile the last batch's shape first.
        train.predict(model, variables, sub.take(np.arange(n % bs or bs)),
                      batch_size=bs)
        rows[f"jaxkd predict, threads={th}, batch={bs}"] = n / timed(
            lambda bs=bs, sub=sub: train.predict(model, variables, sub,
                                                 batch_size=bs))
      finally:
        sources.iter_batches = orig
    for w in (0, 2):
      rows[f"torch DataLoader only, workers={w}"] = n / peer(
          op="time", kind=kind, count=n, workers=w, forward=False)["seconds"]
    rows["torch forward only (in-memory tensor)"] = n / peer(
        op="forward_only", kind=kind, count=n)["seconds"]
    rows["torch DataLoader + forward, workers=2"] = n / peer(
        op="time", kind=kind, count=n)["seconds"]
    out[kind] = {"items": n, "images_per_s": rows, "load_avg": load_avg()}
    for k, v in rows.items():
      log(f"  breakdown {kind}: {k}: {v:,.0f} img/s")
  return out


# ----------------------------------------------------------------- loop --


def loop_worker(spec: dict) -> None:
  """One strategy's rounds 0 and 1 (run in its own process)."""
  t_start = time.perf_counter()
  import jax
  from jaxkd import loop, settings, train
  from jaxkd.data import sources
  from jaxkd.models import get_model
  from jaxkd.selection import get_strategy
  from jaxkd.teacher import TeacherOracle

  name = spec["strategy"]
  code = code_state()
  times = collections.defaultdict(float)
  rss = {}
  state = {"round": 0, "stack": []}

  @contextlib.contextmanager
  def phase(label, round_=None):
    if round_ is not None:
      state["round"] = int(round_)
    key = f"r{state['round']}.{label}"
    if state["stack"]:
      key = f"{state['stack'][-1]}/{label}"
    state["stack"].append(key)
    t = time.perf_counter()
    try:
      yield
    finally:
      times[key] += time.perf_counter() - t
      state["stack"].pop()
      rss[key] = proc_status()

  peak = {"RssAnon": 0.0}

  def monitor():
    """Every 0.5 s: this process's memory and current phase -> rss.json
    (what the parent reads if the run is killed)."""
    while True:
      st = proc_status()
      peak["RssAnon"] = max(peak["RssAnon"], st.get("RssAnon", 0.0))
      snap = dict(st, peak_RssAnon_sampled=peak["RssAnon"],
                  phase=state["stack"][-1] if state["stack"] else
                  f"r{state['round']} (loop)", phases=dict(times),
                  t=time.perf_counter() - t_start, code=code)
      tmpf = spec["rss"] + ".tmp"
      with open(tmpf, "w") as f:
        json.dump(snap, f)
      os.replace(tmpf, spec["rss"])
      time.sleep(0.5)

  threading.Thread(target=monitor, daemon=True).start()

  def wrap(fn, label, round_of=None):
    def inner(*args, **kw):
      with phase(label, None if round_of is None else round_of(args, kw)):
        return fn(*args, **kw)
    return inner

  t = time.perf_counter()
  pool = sources.NpySource(spec["pool"])
  labels = np.load(spec["labels"], mmap_mode="r")
  w = np.load(spec["teacher"])
  tdata = np.load(spec["test"])
  test_x = tdata["x"][..., None].astype(np.float32) / 255
  test_y = tdata["y"]
  n_init = spec["initial"]
  initial = np.arange(n_init)
  candidates = n_init + np.arange(len(pool) - n_init)

  def teacher_fn(images):
    return teacher_logits(w, images)

  teacher_fn.teacher_id = "ridge-fmnist"
  base = settings.ActiveSettings().loop_settings(0, name)
  ls = dataclasses.replace(
      base, rounds=1, per_round=spec["per_round"],
      strategy_options=STRATEGY_OPTIONS.get(name, {}),
      **({"train_steps": spec["train_steps"]} if spec.get("train_steps")
         else {}))
  budget = n_init + ls.per_round
  oracle = TeacherOracle(teacher_fn, pool, budget=budget,
                         ledger_path=os.path.join(spec["workdir"],
                                                  "ledger.sqlite"))
  times["setup (open pool, oracle + pool fingerprint)"] = (
      time.perf_counter() - t)
  rss["setup"] = proc_status()

  strat = get_strategy(name)
  for attr, label, rof in (
      ("select", "selection", lambda a_, k: a_[1].round),
      ("prepare", "prepare", lambda a_, k: a_[0].round),
      ("training_data", "training", lambda a_, k: a_[1]),
      ("train", "training", lambda a_, k: a_[0].round)):
    object.__setattr__(strat, attr, wrap(getattr(strat, attr), label, rof))
  oracle.query = wrap(oracle.query, "paying",
                      lambda a_, k: k.get("round", 0))
  oracle.peek = wrap(oracle.peek, "teacher_peek")
  train.predict = wrap(train.predict, "predict")
  loop._selection_inputs = wrap(loop._selection_inputs, "scoring",
                                lambda a_, k: a_[1].round)
  loop._finish_round = wrap(loop._finish_round, "eval+checkpoint",
                            lambda a_, k: a_[0])

  t = time.perf_counter()
  records = loop.run_loop(
      strategy=strat, student=get_model(spec["student"], 10), oracle=oracle,
      initial_indices=initial, candidate_indices=candidates,
      test_images=test_x, test_labels=test_y,
      teacher_accuracy=spec["teacher_accuracy"], settings=ls,
      workdir=spec["workdir"], initial_labels=np.asarray(labels[:n_init]),
      name=name, progress=False, log=log)
  loop_s = time.perf_counter() - t
  spent = oracle.spent
  oracle.close()
  out = dict(
      strategy=name, candidates=int(len(candidates)),
      initial=int(n_init), per_round=ls.per_round,
      train_steps=ls.train_steps, options=ls.strategy_options,
      records=records, phases=dict(times), rss_after_phase=rss, code=code,
      loop_s=loop_s, total_s=time.perf_counter() - t_start, spent=spent,
      ru_maxrss_self_gib=(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                          / 2**20),
      status_end=proc_status(), peak_RssAnon_sampled=peak["RssAnon"],
      jax_devices=str(jax.devices()))
  write_atomic(spec["result"], json.dumps(out, default=str))


def run_child(cmd, timeout: float, log_path: str):
  """(status, rc, seconds, maxrss GiB) of a child run in its own session;
  killed after `timeout` s. wait4 gives the child's own rusage."""
  t = time.perf_counter()
  with open(log_path, "w") as logf:
    proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT,
                            start_new_session=True)
  status = None
  while True:
    pid, st, ru = os.wait4(proc.pid, os.WNOHANG)
    if pid:
      break
    if time.perf_counter() - t > timeout:
      with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
      pid, st, ru = os.wait4(proc.pid, 0)
      status = "timeout"
      break
    time.sleep(0.5)
  proc.returncode = os.waitstatus_to_exitcode(st)  # already reaped
  rc = proc.returncode
  if status is None:
    status = "ok" if rc == 0 else "error"
  return status, rc, time.perf_counter() - t, ru.ru_maxrss / 2**20


def loop_section(a, paths, tmp, teacher_acc) -> dict:
  res = {"candidates": a.n, "initial": a.initial, "per_round": a.per_round,
         "timeout_s": a.timeout, "teacher_accuracy": teacher_acc,
         "runs": {}}
  for name in a.strategies:
    wd = os.path.join(tmp, f"run_{name}")
    shutil.rmtree(wd, ignore_errors=True)
    os.makedirs(wd)
    spec = dict(strategy=name, pool=paths["pool"], labels=paths["labels"],
                teacher=paths["teacher"], test=paths["test"],
                initial=a.initial, per_round=a.per_round,
                student=a.student, workdir=wd,
                teacher_accuracy=teacher_acc,
                train_steps=a.train_steps,
                result=os.path.join(wd, "result.json"),
                rss=os.path.join(wd, "rss.json"))
    load0 = load_avg()
    log(f"loop {name}: start (load {load0})")
    status, rc, secs, ru_maxrss = run_child(
        [sys.executable, os.path.abspath(__file__), "--_loop_worker",
         json.dumps(spec)], a.timeout, os.path.join(wd, "child.log"))
    with open(os.path.join(wd, "child.log"), errors="replace") as f:
      tail = f.read()[-3000:]
    # Peak RSS = the child's VmHWM (its address space's high-water mark
    # since exec). wait4's and the child's own ru_maxrss are not used: on
    # Linux they also count the parent's RSS at fork time.
    snap = {}
    with contextlib.suppress(OSError, ValueError):
      with open(spec["rss"]) as f:
        snap = json.load(f)
    run = {"status": status, "returncode": rc, "wall_s": secs,
           "maxrss_gib": snap.get("VmHWM"),
           "peak_RssAnon_sampled": snap.get("peak_RssAnon_sampled"),
           "ru_maxrss_wait4_gib": ru_maxrss, "last_sample": snap,
           "load_avg_before": load0, "load_avg_after": load_avg()}
    if status == "ok" and os.path.isfile(spec["result"]):
      with open(spec["result"]) as f:
        run.update(json.load(f))
      run["maxrss_gib"] = run["status_end"]["VmHWM"]
    else:
      run["phases"] = snap.get("phases", {})
      run["code"] = snap.get("code")
      run["phase_at_end"] = snap.get("phase")
      lines = [l for l in tail.splitlines() if l.strip()]
      run["error"] = ("timeout after %d s" % a.timeout if status == "timeout"
                      else (lines[-1] if lines else f"exit {rc}"))
      run["log_tail"] = tail
      if status == "timeout":
        # Phases done before the kill, from the child's log lines.
        run["last_log_lines"] = lines[-5:]
    res["runs"][name] = run
    log(f"loop {name}: {status} in {secs:.0f} s, peak RSS "
        f"{run['maxrss_gib'] or 0:.2f} GiB"
        + (f" ({run.get('error')})" if status != "ok" else ""))
    write_atomic("/tmp/pool_scale_partial.json",
                 json.dumps(res, default=str, indent=1))
    shutil.rmtree(os.path.join(wd, "checkpoints"), ignore_errors=True)
  return res


# -------------------------------------------------------------- report --


def round_phases(run: dict) -> dict:
  """Round-1 phase seconds of a loop run."""
  p = run.get("phases", {})
  g = lambda k: p.get(k, 0.0)
  return {
      "scoring": g("r1.scoring"),
      "student_forward": g("r1.scoring/predict") + g(
          "r1.scoring/prepare/predict"),
      "teacher_peek": g("r1.scoring/teacher_peek"),
      "prepare": g("r1.scoring/prepare"),
      "selection": g("r1.selection"),
      "paying": g("r1.paying"),
      "training": g("r1.training"),
      "eval": g("r1.eval+checkpoint"),
  }


def markdown(r: dict) -> str:
  m, s, lp = r["machine"], r.get("scoring"), r.get("loop")
  lines = [
      "# Pools on disk at scale", "",
      f"`{r['command']}`, {r['started']} to {r['finished']}"
      f" ({r['total_s'] / 60:.0f} min).", "",
      f"Machine: {m['cpus']} CPU cores ({m['cpu_model']}), "
      f"{m['memory_gib']} GiB RAM, no GPU (jax backend {m['jax_backend']}); "
      f"python {m['python']}, jax {m['jax']}, flax {m['flax']}, grain "
      f"{m['grain']}, numpy {m['numpy']}, Pillow {m['pillow']}, torch "
      f"{m['torch']}.", "",
      f"Load average (1, 5, 15 min) at start {r['load_start']}, at end "
      f"{r['load_end']}. {r['shared_note']}", "",
      code_line(r), "",
      f"Pool: {r['pool']['rows']:,} uint8 28x28 images "
      f"({r['pool']['initial']:,}"
      f" initial + {r['pool']['candidates']:,} candidates, "
      f"{r['pool']['bytes'] / 2**30:.2f} GiB .npy) from Fashion-MNIST train "
      "with random +-2 px shifts and horizontal flips, built in "
      f"{r['pool']['build_s']:.0f} s; {r['pool']['png']:,} of them as PNG "
      f"files in class sub-folders ({r['pool']['png_s']:.0f} s to write). "
      "Built in a temp folder, deleted at the end; read from the page cache "
      "(warm) by both sides.", "",
  ]
  lines += ["## Targets", "", "| target | result | met |", "|---|---|---|"]
  for t in r["targets"]:
    lines.append(f"| {t['target']} | {t['result']} | "
                 f"{'met' if t['met'] else '**missed**'} |")
  lines.append("")
  if s:
    lines += [
        "## Scoring throughput", "",
        f"Student {s['student']} (random init), eval-mode logits. jaxkd: "
        "`train.predict(model, variables, source)`, batch 1,024, Grain "
        "reader threads = 2 (the default). torch: "
        f"`DataLoader(batch_size={s['torch']['batch_size']}, num_workers="
        f"{s['torch']['num_workers']})` over a per-item `Dataset`, "
        f"`inference_mode()`, {s['torch']['threads']} intra-op threads "
        f"({s['torch']['threads_choice']}), in its own process. Medians of "
        f"{len(s['npy']['seconds']['jaxkd'])} interleaved repeats "
        "(alternating order).", "",
        "| source | items | jaxkd img/s | torch img/s | jaxkd/torch | "
        "seconds jaxkd | seconds torch |", "|---|---:|---:|---:|---:|---|---|"]
    for kind, label in (("npy", "memmap .npy"), ("png", "PNG folder")):
      k = s[kind]
      lines.append(
          f"| {label} | {k['items']:,} | {k['jaxkd_images_per_s']:,.0f} | "
          f"{k['torch_images_per_s']:,.0f} | "
          f"{k['ratio_jaxkd_over_torch']:.2f}x | "
          + ", ".join(f"{v:.2f}" for v in k["seconds"]["jaxkd"]) + " | "
          + ", ".join(f"{v:.2f}" for v in k["seconds"]["torch"]) + " |")
    ag = s["agreement"]
    lines += [
        "",
        f"jaxkd compile (first predict call on one batch of 1,024 minus the "
        f"second): {s['jaxkd_compile_s']:.2f} s (first call "
        f"{s['jaxkd_first_call_s']:.2f} s); torch has none (each timed "
        "torch pass includes starting its 2 DataLoader workers). "
        f"FolderSource open ({s['folder_files']:,} files, decoded and "
        f"hashed once): {s['folder_open_s']:.1f} s, not in the timings.",
        "",
        "Agreement (logits, same weights): " + "; ".join(
            f"{k} {v['items']:,} items, max abs diff "
            f"{v['max_abs_logit_diff']:.1e}" for k, v in ag.items()) + ".",
        ""]
    if s.get("breakdown"):
      lines += ["### Breakdown (one run each, for diagnosis)", "",
                "| source | part | img/s |", "|---|---|---:|"]
      for kind, b in s["breakdown"].items():
        for part, v in b["images_per_s"].items():
          lines.append(f"| {kind} ({b['items']:,}) | {part} | {v:,.0f} |")
      lines.append("")
  if lp:
    lines += [
        "## One round over the memmap pool, per strategy", "",
        f"{lp['candidates']:,} candidates, {lp['initial']:,} initial (round "
        f"0), per_round {lp['per_round']:,}, rounds = 1, default loop "
        "settings (300 Adam steps of 64; train_steps "
        f"{next(iter(lp['runs'].values()), {}).get('train_steps', '?')}), "
        "student lenet5_half, a NumPy ridge-regression teacher (test "
        f"accuracy {lp['teacher_accuracy']:.3f}), ADMM on embeddings. "
        "Round-1 phase seconds; scoring = the loop's selection inputs (the "
        "student forward over all candidates with embeddings, softmax, the "
        "teacher's unpaid forward for gap_diversity, the strategy's "
        "`prepare`). Peak RSS = the subprocess's VmHWM (its high-water "
        "mark since exec; ru_maxrss of an exec'd child also counts the "
        "parent's RSS at fork on Linux, so it is not used); it includes "
        "resident file pages (shared libraries, the memmap's pages: RssFile "
        "at the end, shown apart); peak anon = the largest RssAnon sampled "
        "every 0.5 s. setup = opening the pool and the oracle (its pool "
        "fingerprint reads every row once); round 0 = paying L and training "
        "the first student (includes compiling the train step). Each "
        f"strategy capped at {lp['timeout_s']:.0f} s.", "",
        "| strategy | status | peak RSS GiB | peak anon GiB | RssFile end | "
        "setup s | round 0 s | round 1 s | scoring (fwd / teacher / "
        "prepare) | selection | paying | training | eval | process s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|"
        "---:|"]
    fmt = lambda v, d=2: "?" if v is None else f"{v:.{d}f}"
    for name, run in lp["runs"].items():
      ph = round_phases(run)
      if run["status"] != "ok":
        done = "; ".join(f"{k} {v:.1f} s"
                         for k, v in run.get("phases", {}).items()
                         if "/" not in k)
        lines.append(
            f"| {name} | **{run['status']}** ({run.get('error', '')[:100]});"
            f" in phase {run.get('phase_at_end')} when it ended; done: "
            f"{done} | {fmt(run['maxrss_gib'])} | "
            f"{fmt(run.get('peak_RssAnon_sampled'))} | "
            f"{fmt(run.get('last_sample', {}).get('RssFile'))} | | | | | | "
            f"| | | {run['wall_s']:.0f} |")
        continue
      recs = {rec["round"]: rec for rec in run["records"]}
      setup = run["phases"].get(
          "setup (open pool, oracle + pool fingerprint)", 0)
      lines.append(
          f"| {name} | ok | {run['maxrss_gib']:.2f} | "
          f"{fmt(run.get('peak_RssAnon_sampled'))} | "
          f"{run['status_end'].get('RssFile', 0):.2f} | {setup:.1f} | "
          f"{recs[0]['wall_time']:.1f} | {recs[1]['wall_time']:.1f} | "
          f"{ph['scoring']:.1f} ({ph['student_forward']:.1f} / "
          f"{ph['teacher_peek']:.1f} / {ph['prepare']:.1f}) | "
          f"{ph['selection']:.1f} | {ph['paying']:.2f} | "
          f"{ph['training']:.1f} | {ph['eval']:.1f} | {run['wall_s']:.0f} |")
    lines.append("")
  if r.get("notes"):
    lines += ["## Notes", ""] + [f"- {n}" for n in r["notes"]] + [""]
  return "\n".join(lines)


def code_line(r: dict) -> str:
  c = r.get("code") or {}
  dirty = [l[3:] for l in c.get("uncommitted", "").splitlines()]
  line = (f"Code: git {c.get('git_head', '?')}"
          + (f" plus uncommitted changes to {', '.join(dirty)}" if dirty
             else "") + f"; jaxkd/*.py sha256 {c.get('jaxkd_sha256', '?')} "
          f"at the start")
  runs = (r.get("loop") or {}).get("runs", {})
  shas = {n: run.get("code", {}).get("jaxkd_sha256") for n, run in
          runs.items() if run.get("code")}
  if shas and set(shas.values()) != {c.get("jaxkd_sha256")}:
    line += ("; the package changed during the run: per strategy "
             + ", ".join(f"{n} {v}" for n, v in shas.items()))
  return line + "."


def targets(r: dict, a) -> list:
  out = []
  lp, s = r.get("loop"), r.get("scoring")
  if lp:
    for name, run in lp["runs"].items():
      ok = run["status"] == "ok" and run["maxrss_gib"] < RSS_TARGET_GIB
      peak = run["maxrss_gib"]
      res = (f"{peak:.2f} GiB" if run["status"] == "ok" else
             f"{run['status']} ({run.get('error', '')[:80]}); peak RSS "
             "before it ended "
             + ("?" if peak is None else f"{peak:.2f} GiB"))
      out.append({"target": f"{lp['candidates']:,}-candidate round < "
                            f"{RSS_TARGET_GIB:g} GiB peak RSS: {name}",
                  "result": res, "met": bool(ok)})
  if s:
    for kind, label in (("npy", "memmap"), ("png", "PNG folder")):
      ratio = s[kind]["ratio_jaxkd_over_torch"]
      out.append({"target": f"scoring from the {label} >= 1x the torch "
                            "DataLoader path",
                  "result": f"{ratio:.2f}x", "met": bool(ratio >= 1.0)})
  return out


# ---------------------------------------------------------------- main --


def parse(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--n", type=int, default=1_000_000,
                  help="candidates in the memmap pool")
  ap.add_argument("--png", type=int, default=100_000,
                  help="candidates also written as PNG files")
  ap.add_argument("--initial", type=int, default=1000,
                  help="initial set L (pool rows before the candidates)")
  ap.add_argument("--per_round", type=int, default=1000)
  ap.add_argument("--strategies", default=None,
                  help="comma-separated (default: the 11 pool strategies; "
                  "--quick: random,gap_diversity)")
  ap.add_argument("--repeats", type=int, default=3)
  ap.add_argument("--score_n", type=int, default=200_000,
                  help="memmap items per scoring timing")
  ap.add_argument("--score_png", type=int, default=20_000,
                  help="PNG files per scoring timing")
  ap.add_argument("--check", type=int, default=4096,
                  help="items of the jaxkd/torch agreement check")
  ap.add_argument("--breakdown_n", type=int, default=50_000)
  ap.add_argument("--breakdown_png", type=int, default=5_000)
  ap.add_argument("--timeout", type=float, default=600,
                  help="seconds per strategy subprocess")
  ap.add_argument("--train_steps", type=int, default=0,
                  help="student steps per round (0: the default, 300)")
  ap.add_argument("--torch_threads", type=int, default=0,
                  help="torch.set_num_threads (0: torch's default)")
  ap.add_argument("--student", default="")
  ap.add_argument("--skip", default="", help="sections to skip: "
                  "scoring,loop")
  ap.add_argument("--workdir", default="/tmp/pool_scale")
  ap.add_argument("--data_dir", default=FMNIST)
  ap.add_argument("--out", default="")
  ap.add_argument("--keep", action="store_true",
                  help="keep the pool folder")
  ap.add_argument("--quick", action="store_true",
                  help="small sizes: a smoke run of this script")
  ap.add_argument("--render", default=None, metavar="JSON",
                  help="only rewrite JSON and its .md from the saved "
                  "results, adding the --note lines")
  ap.add_argument("--note", action="append", default=[],
                  help="a line for the Notes section (with --render)")
  ap.add_argument("--_torch_server", default=None, help=argparse.SUPPRESS)
  ap.add_argument("--_loop_worker", default=None, help=argparse.SUPPRESS)
  a = ap.parse_args(argv)
  if a.quick:
    a.n, a.png, a.score_n, a.score_png = 20_000, 1_500, 8_000, 1_000
    a.check, a.breakdown_n, a.breakdown_png = 2048, 4_000, 500
    a.initial, a.per_round, a.repeats = 200, 200, max(1, min(a.repeats, 3))
    a.train_steps = a.train_steps or 20
    a.workdir = a.workdir.rstrip("/") + "_quick"
    a.timeout = min(a.timeout, 120)
    a.out = a.out or "/tmp/pool_scale_quick"
  a.out = a.out or os.path.join(HERE, "results", "pool_scale")
  if a.strategies is None:
    a.strategies = ("random,gap_diversity" if a.quick
                    else ",".join(POOL_STRATEGIES))
  a.strategies = [s for s in a.strategies.split(",") if s]
  if not a.student:
    from jaxkd import settings
    a.student = settings.ActiveSettings().student
  return a


def main(argv=None):
  a = parse(argv)
  if a._torch_server is not None:
    return torch_server(json.loads(a._torch_server))
  if a._loop_worker is not None:
    return loop_worker(json.loads(a._loop_worker))
  if a.render:
    with open(a.render) as f:
      result = json.load(f)
    result["notes"] = list(result.get("notes", [])) + list(a.note)
    out = os.path.splitext(a.render)[0]
    write_atomic(out + ".json", json.dumps(result, indent=1, default=str))
    write_atomic(out + ".md", markdown(result))
    return None
  t_start = time.perf_counter()
  started = time.strftime("%Y-%m-%d %H:%M:%S")
  result = {"command": "python benchmarks/pool_scale.py "
                       + " ".join(sys.argv[1:] if argv is None else argv),
            "started": started, "load_start": load_avg(),
            "machine": machine(), "code": code_state(), "args": {
                k: v for k, v in vars(a).items() if not k.startswith("_")}}
  log(f"machine {result['machine']}")
  os.makedirs(a.workdir, exist_ok=True)
  tmp = a.workdir
  paths = {"pool": os.path.join(tmp, "pool.npy"),
           "labels": os.path.join(tmp, "pool_labels.npy"),
           "png": os.path.join(tmp, "png"),
           "teacher": os.path.join(tmp, "teacher.npy"),
           "test": os.path.join(tmp, "test.npz")}
  try:
    x, y, tx, ty = fashion_mnist(a.data_dir)
    rows = a.initial + a.n
    log(f"building the pool: {rows:,} images -> {paths['pool']}")
    t = time.perf_counter()
    build_pool(paths["pool"], rows, x, y)
    build_s = time.perf_counter() - t
    log(f"  {build_s:.1f} s; writing {a.png:,} PNGs")
    t = time.perf_counter()
    write_pngs(paths["png"], paths["pool"], a.initial, min(a.png, a.n))
    png_s = time.perf_counter() - t
    log(f"  {png_s:.1f} s")
    w, teacher_acc = fit_teacher(x, y, tx, ty)
    np.save(paths["teacher"], w)
    np.savez(paths["test"], x=tx, y=ty)
    log(f"teacher (ridge on pixels) test accuracy {teacher_acc:.4f}")
    del x, y
    result["pool"] = dict(rows=rows, initial=a.initial, candidates=a.n,
                          bytes=os.path.getsize(paths["pool"]),
                          build_s=build_s, png=min(a.png, a.n), png_s=png_s)
    if "scoring" not in a.skip:
      result["scoring"] = scoring_section(a, paths, tmp)
    if "loop" not in a.skip:
      result["loop"] = loop_section(a, paths, tmp, teacher_acc)
  finally:
    if not a.keep:
      shutil.rmtree(tmp, ignore_errors=True)
  result["load_end"] = load_avg()
  result["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
  result["total_s"] = time.perf_counter() - t_start
  loads = [result["load_start"][0], result["load_end"][0]]
  for kind in ("npy", "png"):
    loads += [v[0] for v in result.get("scoring", {}).get(kind, {}).get(
        "load_avg", [])]
  for run in result.get("loop", {}).get("runs", {}).values():
    loads += [run["load_avg_before"][0], run["load_avg_after"][0]]
  result["max_load_1min"] = max(loads)
  if max(loads) > 0.75 * os.cpu_count():
    result["shared_note"] = (
        f"The machine is shared: other work ran during these timings (1-min "
        f"load average up to {max(loads):.1f} on {os.cpu_count()} cores), so "
        "absolute numbers are noisy; the interleaved repeats expose both "
        "sides to the same load.")
  else:
    result["shared_note"] = (f"The machine was mostly idle (1-min load "
                             f"average at most {max(loads):.1f}).")
  result["targets"] = targets(result, a)
  result["notes"] = list(a.note)
  write_atomic(a.out + ".json", json.dumps(result, indent=1, default=str))
  write_atomic(a.out + ".md", markdown(result))
  log(f"wrote {a.out}.json and {a.out}.md")
  for t in result["targets"]:
    log(f"target {'met   ' if t['met'] else 'MISSED'} {t['target']}: "
        f"{t['result']}")


if __name__ == "__main__":
  main()
