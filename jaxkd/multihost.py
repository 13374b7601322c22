"""Several processes, one run: process 0 pays the teacher, the rest follow.

A multi-process run (`jax.distributed`, one process per host) pays the
teacher once: process 0 alone calls it (`primary_teacher`) and writes the
ledger; answers and selections reach the other processes by `broadcast`;
per-process work over the unlabelled pool uses `shard_range` rows on a
`local_mesh` and `gather_rows` puts the compact results back together.

Every function here named *collective* must be called by all processes in
the same order with matching arguments (shapes agree where stated), or the
run hangs in the collective until the coordinator's heartbeat gives up. The
helpers check what they can (row counts, dtypes, teacher batch sizes) in one
gathered header first and then raise the same `JaxkdError` on every process,
so a mismatch fails fast instead of hanging.

Transfers go as raw bytes (arrays viewed as uint8), so values arrive bit for
bit: int64 and float64 survive with `jax_enable_x64` off and -0.0 stays
-0.0. In one process every helper is the identity and runs no collective.
"""

from __future__ import annotations

import functools
import json
import zlib
from typing import Any, Callable, Optional, Tuple

import jax
import numpy as np
from jax.experimental import multihost_utils

from jaxkd import parallel
from jaxkd.validation import JaxkdError, is_int

# The CPU client's cross-process collectives ("gloo" or "mpi"); jax 0.10.2
# already defaults to gloo, setting it keeps other versions working.
_CPU_COLLECTIVES_FLAG = "jax_cpu_collectives_implementation"


def initialize(coordinator_address: Optional[str] = None,
               num_processes: Optional[int] = None,
               process_id: Optional[int] = None, **kwargs) -> None:
  """Joins this process to a `jax.distributed` run; idempotent.

  Must run before anything touches a JAX backend (`jax.devices()`, an
  array). Sets the CPU collectives to gloo where the flag exists, so CPU
  processes can run cross-process collectives. Arguments as in
  `jax.distributed.initialize` (all None: detect the cluster, e.g. SLURM,
  Cloud TPU); `kwargs` are passed on (e.g. `initialization_timeout`).
  """
  if jax.distributed.is_initialized():
    return
  try:
    jax.config.update(_CPU_COLLECTIVES_FLAG, "gloo")
  except (AttributeError, KeyError, ValueError):  # a jax without the flag
    pass
  try:
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes,
                               process_id=process_id, **kwargs)
  except RuntimeError as e:
    first = (str(e).strip().splitlines() or [""])[0][:200]
    raise JaxkdError(f"jax.distributed.initialize failed ({first}); call it "
                     "before any JAX computation, with the same coordinator "
                     "address and process count on every process.") from None


def is_distributed() -> bool:
  """True when this run has more than one process."""
  return jax.process_count() > 1


def is_primary() -> bool:
  """True on process 0, the one that pays the teacher and writes files."""
  return jax.process_index() == 0


def local_mesh():
  """A ("data",) mesh over this process's own devices (`jax.local_devices`).

  Per-process work (the teacher on process 0, scoring a `shard_range`) must
  use it: the default `jaxkd.parallel.make_mesh()` spans every process's
  devices and its jitted calls are collective.
  """
  return parallel.make_mesh(jax.local_devices())


def sync(name: str) -> None:
  """Collective barrier: returns once every process has called `sync(name)`
  (the same name everywhere)."""
  if is_distributed():
    multihost_utils.sync_global_devices(name)


def shard_range(n: int) -> Tuple[int, int]:
  """This process's contiguous rows [start, stop) of `n` items: process p of
  P gets [p * n // P, (p + 1) * n // P). Not collective."""
  if not is_int(n) or n < 0:
    raise JaxkdError(f"n must be an int >= 0, got {n!r}.")
  p, count = jax.process_index(), jax.process_count()
  return p * n // count, (p + 1) * n // count


def _as_bytes(x: np.ndarray) -> np.ndarray:
  """[x.nbytes] uint8 view of a C-contiguous copy of `x`."""
  return np.ascontiguousarray(x).reshape(-1).view(np.uint8)


def _allgather_bytes(b: np.ndarray) -> np.ndarray:
  """Collective: [P, m] uint8, row p = process p's `b` [m] (same m)."""
  return np.asarray(multihost_utils.process_allgather(b, tiled=False))


def _header(values) -> np.ndarray:
  return _as_bytes(np.asarray(values, np.int64))


def _gathered_headers(values) -> np.ndarray:
  """Collective: [P, len(values)] int64, every process's `values`."""
  got = _allgather_bytes(_header(values))
  return got.view(np.int64).reshape(jax.process_count(), -1)


def _broadcast_array(x: np.ndarray) -> np.ndarray:
  """Collective (unless empty): process 0's `x`, bit for bit (same shape and
  dtype on every process)."""
  if x.nbytes == 0:
    return x.copy()
  raw = multihost_utils.broadcast_one_to_all(_as_bytes(x))
  return np.asarray(raw).view(x.dtype).reshape(x.shape)


def broadcast(tree: Any) -> Any:
  """Collective: process 0's pytree of arrays, as NumPy arrays, on every
  process.

  Args:
    tree: pytree of arrays; every process passes the same structure, shapes
      and dtypes (the followers' values are ignored).

  Returns:
    The same structure holding process 0's values, bit for bit.
  """
  leaves, treedef = jax.tree.flatten(tree)
  leaves = [np.asarray(x) for x in leaves]
  if not is_distributed():
    return jax.tree.unflatten(treedef, leaves)
  for x in leaves:
    if x.dtype.kind not in "biufc":
      raise JaxkdError(f"broadcast sends numeric arrays, got dtype {x.dtype};"
                       " use broadcast_object for other values.")
  return jax.tree.unflatten(treedef, [_broadcast_array(x) for x in leaves])


def broadcast_bytes(b: bytes) -> bytes:
  """Collective: process 0's `b` on every process (followers pass anything,
  e.g. b""); two transfers, the length then the bytes."""
  if not is_distributed():
    return bytes(b)
  data = np.frombuffer(bytes(b), np.uint8) if is_primary() else None
  n = int(_broadcast_array(np.asarray(
      [0 if data is None else len(data)], np.int64))[0])
  if data is None:
    data = np.zeros(n, np.uint8)
  return _broadcast_array(data).tobytes()


def broadcast_object(obj: Any) -> Any:
  """Collective: process 0's JSON-able `obj` (ledger rows, picks, a small
  dict) on every process; followers pass anything (e.g. None)."""
  if not is_distributed():
    return obj
  text = json.dumps(obj, sort_keys=True) if is_primary() else ""
  return json.loads(broadcast_bytes(text.encode()).decode())


def gather_rows(local: np.ndarray, n: int) -> np.ndarray:
  """Collective: the full [n, ...] array from every process's slice.

  Args:
    local: this process's rows [stop - start, ...] of `shard_range(n)`; the
      trailing shape and dtype agree over processes (e.g. float32 [., C]).
    n: total rows.

  Returns:
    [n, ...] NumPy array, rows in order, identical on every process.

  Raises:
    JaxkdError: on every process when any process's slice has the wrong row
      count, trailing shape or dtype.
  """
  local = np.asarray(local)
  if local.ndim < 1:
    raise JaxkdError("gather_rows takes rows [k, ...], got a scalar.")
  if not is_distributed():
    if len(local) != n:
      raise JaxkdError(f"gather_rows got {len(local)} rows, expected {n}.")
    return local
  count = jax.process_count()
  bounds = [(p * n // count, (p + 1) * n // count) for p in range(count)]
  width = max(b - a for a, b in bounds)
  start, stop = bounds[jax.process_index()]
  sig = zlib.crc32(f"{local.dtype.str}{local.shape[1:]}".encode())
  heads = _gathered_headers([n, len(local), stop - start, sig])
  if len(set(heads[:, 0].tolist())) > 1:
    raise JaxkdError(f"gather_rows: processes passed different totals n "
                     f"({heads[:, 0].tolist()}).")
  bad = [p for p, (_, got, want, _) in enumerate(heads) if got != want]
  if bad:
    p = bad[0]
    raise JaxkdError(f"gather_rows: process {p} passed {heads[p][1]} rows, "
                     f"its shard_range({n}) has {heads[p][2]}.")
  if len(set(heads[:, 3].tolist())) > 1:
    raise JaxkdError("gather_rows: processes passed rows of different "
                     "trailing shapes or dtypes.")
  row_bytes = local.dtype.itemsize * int(np.prod(local.shape[1:],
                                                 dtype=np.int64))
  if n == 0 or row_bytes == 0:
    return np.zeros((n,) + local.shape[1:], local.dtype)
  padded = np.zeros((width, row_bytes), np.uint8)
  padded[:len(local)] = _as_bytes(local).reshape(len(local), row_bytes)
  got = np.asarray(multihost_utils.process_allgather(padded, tiled=False))
  parts = [got[p, :b - a] for p, (a, b) in enumerate(bounds)]
  out = np.ascontiguousarray(np.concatenate(parts))
  return out.view(local.dtype).reshape((n,) + local.shape[1:])


class PrimaryTeacher:
  """A teacher fn that only process 0 calls; see `primary_teacher`."""

  def __init__(self, teacher_fn: Callable[..., np.ndarray],
               check_images: bool = True):
    self.teacher_fn = teacher_fn
    self.check_images = check_images
    self.mirrored = {}  # process 0's scalar attributes, on followers
    functools.update_wrapper(self, teacher_fn, updated=())

  def __getattr__(self, name):
    # Only reached for names not set on the wrapper: read the teacher's own
    # attributes live (`teacher_id`, `accepts_request_id`, `stats`, and
    # `model_id`, which an HTTP teacher updates after each call).
    if name in ("teacher_fn", "mirrored"):
      raise AttributeError(name)
    if name in self.mirrored:
      return self.mirrored[name]
    return getattr(self.teacher_fn, name)

  def __call__(self, images, **kwargs) -> np.ndarray:
    if not is_distributed():
      return self.teacher_fn(images, **kwargs)
    images = np.asarray(images, np.float32)
    crc = zlib.crc32(_as_bytes(images)) if self.check_images else 0
    heads = _gathered_headers([len(images), crc])
    if len(set(heads[:, 0].tolist())) > 1:
      raise JaxkdError(
          f"teacher batch sizes differ over processes ({heads[:, 0].tolist()}"
          "); every process must query the teacher in lockstep. Nothing was "
          "paid.")
    if self.check_images and len(set(heads[:, 1].tolist())) > 1:
      raise JaxkdError("processes asked the teacher for different images; "
                       "every process must query the same batch in lockstep."
                       " Nothing was paid.")
    head, out = None, None
    if is_primary():
      try:
        out = np.asarray(self.teacher_fn(images, **kwargs))
        if out.dtype.kind not in "biuf":
          raise JaxkdError(f"teacher returned dtype {out.dtype}, expected "
                           "numbers.")
        head = {"ok": True, "shape": list(out.shape), "dtype": out.dtype.str,
                "attrs": _scalar_attrs(self.teacher_fn)}
      except BaseException as e:
        # Followers must not wait forever for answers that never come.
        first = (str(e).strip().splitlines() or [""])[0][:200]
        broadcast_object({"ok": False, "error": f"{type(e).__name__}: "
                          f"{first}"})
        raise
    head = broadcast_object(head)
    if not head["ok"]:
      raise JaxkdError(f"the teacher failed on process 0 ({head['error']}); "
                       "nothing was recorded.")
    if out is None:
      out = np.zeros(head["shape"], np.dtype(head["dtype"]))
      self.mirrored.update(head["attrs"])
    return _broadcast_array(out)


def _scalar_attrs(fn) -> dict:
  """fn's JSON-scalar attributes (teacher_id, model_id, ...)."""
  return {k: v for k, v in getattr(fn, "__dict__", {}).items()
          if not k.startswith("_")
          and isinstance(v, (str, int, float, bool, type(None)))}


def primary_teacher(teacher_fn: Callable[..., np.ndarray], *,
                    check_images: bool = True) -> PrimaryTeacher:
  """Wraps a teacher so that process 0 alone calls (and pays) it.

  Collective per call: every process calls the wrapper in lockstep with the
  same batch; process 0 calls `teacher_fn(images, **kwargs)` (e.g.
  `request_id=`) and broadcasts the answers, the others never call it and
  return process 0's answers bit for bit. A teacher that raises on process 0
  raises there as itself and as a one-line `JaxkdError` on the others.

  The wrapper reads `teacher_fn`'s attributes through (`teacher_id`,
  `accepts_request_id`, `stats`, `model_id`, ...); on the followers the
  scalar ones are process 0's after each call. In one process the wrapper
  just calls `teacher_fn`.

  Args:
    teacher_fn: `fn(images [k, H, W, C] float32, **kwargs) -> [k, C]`.
    check_images: also check that every process passed the same images (a
      crc32 of their bytes), else raise JaxkdError everywhere.

  Returns:
    A `PrimaryTeacher`, called like `teacher_fn`.
  """
  return PrimaryTeacher(teacher_fn, check_images=check_images)


def follower_ledger(ledger_path: str) -> str:
  """The ledger file this process opens. Collective.

  Process 0 opens `ledger_path` itself (it alone writes the run's ledger).
  Every other process gets a private copy of process 0's file as it is now
  (the SQLite file and its write-ahead log, broadcast as bytes) in a fresh
  temporary folder: it then commits the same answers in lockstep (they
  reach it through `primary_teacher`), so its rounds read the same rows,
  and nothing it writes touches the run directory.
  """
  import os  # pylint: disable=g-import-not-at-top
  import tempfile  # pylint: disable=g-import-not-at-top
  if not is_distributed():
    return ledger_path
  parts = {}
  if is_primary():
    for suffix in ("", "-wal"):
      path = ledger_path + suffix
      if os.path.isfile(path):
        with open(path, "rb") as f:
          parts[suffix] = f.read()
  sizes = broadcast_object({k: len(v) for k, v in parts.items()}
                           if is_primary() else None)
  copies = {}
  for suffix in sorted(sizes):
    copies[suffix] = broadcast_bytes(parts.get(suffix, b""))
  if is_primary():
    return ledger_path
  folder = tempfile.mkdtemp(prefix=f"jaxkd-p{jax.process_index()}-")
  path = os.path.join(folder, os.path.basename(ledger_path))
  for suffix, data in copies.items():
    with open(path + suffix, "wb") as f:
      f.write(data)
  return path


def sharded_rows(fn: Callable[[np.ndarray], Any], n: int) -> Any:
  """Runs `fn(rows)` on this process's `shard_range(n)` rows and gathers
  the pytree of [rows, ...] results into [n, ...] on every process.
  Collective. `fn` gets an int64 index array (possibly empty: it must still
  return arrays of the right trailing shape; `fn` of 1 row is used for the
  shapes then)."""
  if not is_distributed():
    return fn(np.arange(n))
  start, stop = shard_range(n)
  if stop > start:
    local = fn(np.arange(start, stop))
  else:
    local = jax.tree.map(lambda a: np.asarray(a)[:0], fn(np.arange(1)))
  return jax.tree.map(lambda a: gather_rows(np.asarray(a), n), local)
