"""Random-access image sources: pools read in batches, never held whole.

A source is what a pool, a test split or a teacher-training split can be
besides an in-memory array: `len(source)`, `source.shape` ([n, H, W, C]),
and `source[idx]` (an int, a slice or a 1-D int array) returning float32
images in [0, 1]. Items are stored in their own dtype (uint8 stays uint8 on
disk or in the memmap) and converted only when a batch is read, and every
batch is checked (finite, in [0, 1]) as it is read, naming the item.

Backends:

* `NpySource`: a memory-mapped `.npy` file, [n, H, W] or [n, H, W, C],
  uint8 (divided by 255) or floating (kept, checked in [0, 1]).
* `FolderSource` (`jaxkd.data.folder`): image files decoded with Pillow.
* `GrainSource` (`jaxkd.data.grain_source`): any Grain / tfds random-access
  data source of records (ArrayRecord, `tfds.data_source`).
* `SubsetSource`: the items `indices` of another source (what a pool split
  is), without a copy.

`iter_batches(images, batch_size)` reads consecutive batches of an array or
a source; for a source it uses Grain (`grain.MapDataset` over batch numbers,
`to_iter_dataset` with reader threads and a prefetch buffer), so decoding
and reading overlap with the device's work, and `process_slice` restricts a
pass to this process's share.

Every source has stable item keys (`item_key(i)`: the file path relative to
the data root, the record index, or the position) and a streaming content
fingerprint (`update_hash`), so a ledger is never reused on other data.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any, Iterator, Optional, Sequence, Tuple

import numpy as np

from jaxkd.validation import JaxkdError

# np.asarray(source) materialises every item as float32; refused above this
# (in bytes) so that no code path silently loads a large pool.
MATERIALISE_LIMIT = 1 << 30


class ImageSource:
  """Base class: random-access float32 images [n, H, W, C] in [0, 1].

  Subclasses implement `__len__`, `image_shape`, `_read(indices)` ->
  float32 [k, H, W, C] for sorted-or-not int64 indices, and may override
  `item_key`, `update_hash` and `stored_bytes_per_item`.
  """

  name = "source"
  ndim = 4
  checks_on_read = True  # jaxkd.validation.check_finite defers to `read`
  dtype = np.dtype(np.float32)

  # ----------------------------------------------------------- interface --

  def __len__(self) -> int:
    raise NotImplementedError

  @property
  def image_shape(self) -> Tuple[int, int, int]:
    raise NotImplementedError

  def _read(self, indices: np.ndarray) -> np.ndarray:
    raise NotImplementedError

  positional_keys = True  # item_key(i) == str(i)

  def item_key(self, i: int) -> str:
    """Stable key of item i (default: its position)."""
    return str(int(i))

  def positions(self, item_keys: Sequence[str]) -> np.ndarray:
    """int64 positions of `item_keys` (-1 for a key not in the source);
    O(len(keys)) after a one-time O(n) index for non-positional keys."""
    if self.positional_keys:
      n = len(self)
      out = np.asarray([int(k) for k in item_keys], np.int64)
      return np.where((out >= 0) & (out < n), out, -1)
    index = self.__dict__.get("_key_index")
    if index is None:
      index = {self.item_key(i): i for i in range(len(self))}
      self._key_index = index
    return np.asarray([index.get(k, -1) for k in item_keys], np.int64)

  def update_hash(self, h, batch_size: int = 4096) -> None:
    """Feeds every item's content, in order, to hashlib object `h`
    (streaming; default: the float32 images)."""
    for batch in iter_batches(self, batch_size, threads=2):
      h.update(np.ascontiguousarray(batch, np.float32).tobytes())

  def item_digests(self, batch_size: int = 4096) -> Iterator[bytes]:
    """16-byte blake2b digest of each item's content, in order (for split
    overlap checks)."""
    for batch in iter_batches(self, batch_size, threads=2):
      flat = np.ascontiguousarray(batch, np.float32).reshape(len(batch), -1)
      for row in flat:
        yield hashlib.blake2b(row.tobytes(), digest_size=16).digest()

  # ------------------------------------------------------------- derived --

  @property
  def shape(self) -> Tuple[int, ...]:
    return (len(self),) + tuple(self.image_shape)

  @property
  def nbytes(self) -> int:
    """Bytes the items would take as float32."""
    return int(np.prod(self.shape, dtype=np.int64)) * 4

  def __getitem__(self, item) -> np.ndarray:
    n = len(self)
    if isinstance(item, (int, np.integer)) and not isinstance(item, bool):
      i = int(item) + (n if item < 0 else 0)
      if not 0 <= i < n:
        raise IndexError(f"index {item} out of range for {n} items")
      return self.read(np.asarray([i], np.int64))[0]
    if isinstance(item, slice):
      idx = np.arange(n)[item]
    else:
      idx = np.asarray(item)
      if idx.dtype == np.bool_:
        idx = np.flatnonzero(idx)
      if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
        raise JaxkdError(f"{self.name}: items are read by int, slice or 1-D "
                         f"int array, got {idx.dtype} {idx.shape}.")
      idx = np.where(idx < 0, idx + n, idx)
      if idx.size and (idx.min() < 0 or idx.max() >= n):
        raise IndexError(f"indices out of range for {n} items")
    return self.read(idx.astype(np.int64))

  # Reader processes for `iter_batches` (0: read in this process); a
  # source that sets it implements `decode_args`.
  read_processes = 0

  def decode_args(self, indices: np.ndarray):
    """Arguments of `jaxkd.image_decode.decode_many` that return the raw
    uint8 [k, H, W, C] items `indices` [k] (in a reader process)."""
    raise NotImplementedError

  def read(self, indices: np.ndarray) -> np.ndarray:
    """float32 [k, H, W, C] images of items `indices` [k], checked."""
    indices = np.asarray(indices, np.int64)
    return self.checked(np.asarray(self._read(indices), np.float32), indices)

  def checked(self, out: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """`out` [k, H, W, C] float32 if it has the items' shape and values in
    [0, 1]; a one-line JaxkdError naming the first bad item otherwise."""
    if out.shape != (len(indices),) + tuple(self.image_shape):
      raise JaxkdError(f"{self.name}: read {out.shape}, expected "
                       f"{(len(indices),) + tuple(self.image_shape)}.")
    if out.size:
      bad = ~np.isfinite(out) | (out < 0) | (out > 1)
      if bad.any():
        row = int(np.flatnonzero(bad.reshape(len(out), -1).any(1))[0])
        raise JaxkdError(
            f"{self.name}: item {self.item_key(int(indices[row]))} has "
            "values outside [0, 1] (or NaN/inf); images must be floats in "
            "[0, 1] or uint8.")
    return out

  def take(self, indices: Sequence[int]) -> "SubsetSource":
    """The items `indices` as a source (no copy)."""
    return SubsetSource(self, indices)

  def __array__(self, dtype=None, copy=None):
    if self.nbytes > MATERIALISE_LIMIT:
      raise JaxkdError(
          f"{self.name}: refusing to load all {len(self):,} images as "
          f"float32 ({self.nbytes / 2**30:.1f} GiB); this code path needs "
          "an in-memory array.")
    out = self.read(np.arange(len(self)))
    return out if dtype is None else out.astype(dtype)

  def __repr__(self) -> str:
    return f"{type(self).__name__}({self.name!r}, shape={self.shape})"


def is_source(x: Any) -> bool:
  return isinstance(x, ImageSource)


class SubsetSource(ImageSource):
  """Items `indices` [m] of `base` (positions into base), as a source."""

  def __init__(self, base: ImageSource, indices: Sequence[int]):
    idx = np.asarray(indices, np.int64).reshape(-1)
    if isinstance(base, SubsetSource):  # flatten views of views
      idx, base = base.indices[idx], base.base
    if idx.size and (idx.min() < 0 or idx.max() >= len(base)):
      raise JaxkdError(f"{base.name}: subset indices out of range for "
                       f"{len(base)} items.")
    self.base, self.indices = base, idx
    self.name = base.name
    self.positional_keys = False

  def positions(self, item_keys: Sequence[str]) -> np.ndarray:
    if not self.base.positional_keys:
      return super().positions(item_keys)
    # Base rows -> positions here, by an inverse of `indices` (O(len(base))
    # int64 once).
    inv = self.__dict__.get("_inverse")
    if inv is None:
      inv = np.full(len(self.base), -1, np.int64)
      inv[self.indices] = np.arange(len(self.indices))
      self._inverse = inv
    rows = self.base.positions(item_keys)
    return np.where(rows >= 0, inv[np.maximum(rows, 0)], -1)

  def __len__(self) -> int:
    return len(self.indices)

  @property
  def image_shape(self):
    return self.base.image_shape

  def _read(self, indices):
    return self.base._read(self.indices[indices])

  @property
  def read_processes(self):
    return self.base.read_processes

  def decode_args(self, indices):
    return self.base.decode_args(self.indices[np.asarray(indices, np.int64)])

  def item_key(self, i: int) -> str:
    return self.base.item_key(int(self.indices[i]))

  def update_hash(self, h, batch_size: int = 4096) -> None:
    if hasattr(self.base, "update_hash_of"):
      self.base.update_hash_of(h, self.indices, batch_size)
    else:
      super().update_hash(h, batch_size)

  def item_digests(self, batch_size: int = 4096):
    if hasattr(self.base, "item_digests_of"):
      return self.base.item_digests_of(self.indices, batch_size)
    return super().item_digests(batch_size)


def concat(*parts: Any) -> Any:
  """Concatenates arrays (np.concatenate) or subsets of one base source
  (a `SubsetSource` of the joined indices)."""
  if not any(is_source(p) for p in parts):
    return np.concatenate(parts)
  bases = {id(p.base) for p in parts if isinstance(p, SubsetSource)}
  if (len(bases) != 1
      or not all(isinstance(p, SubsetSource) or len(p) == 0 for p in parts)):
    raise JaxkdError("only subsets of one source can be concatenated.")
  base = next(p.base for p in parts if isinstance(p, SubsetSource))
  idx = [p.indices for p in parts if isinstance(p, SubsetSource)]
  return SubsetSource(base, np.concatenate(idx))


def take(images: Any, indices: Sequence[int]) -> Any:
  """images[indices]: a gathered array, or a `SubsetSource` view."""
  if is_source(images):
    return images.take(indices)
  return images[np.asarray(indices, np.int64)]


# ------------------------------------------------------------------ npy --


class NpySource(ImageSource):
  """A memory-mapped `.npy` of images [n, H, W] or [n, H, W, C].

  uint8 items are divided by 255 when read; floating items must lie in
  [0, 1] (checked per batch). Reading k items costs O(k H W C) and touches
  only their pages. Item keys are row numbers.
  """

  def __init__(self, path: str, name: Optional[str] = None):
    try:
      arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as e:
      raise JaxkdError(f"{path}: not a readable .npy array ({e}).") from None
    if not isinstance(arr, np.ndarray):
      raise JaxkdError(f"{path}: expected one .npy array, got an archive.")
    if arr.ndim == 3:
      arr = arr[..., None]
    if arr.ndim != 4 or min(arr.shape[1:]) < 1:
      raise JaxkdError(f"{path}: images must be [n, H, W] or [n, H, W, C], "
                       f"got shape {arr.shape}.")
    if arr.dtype != np.uint8 and not np.issubdtype(arr.dtype, np.floating):
      raise JaxkdError(f"{path}: images must be uint8 or floating, got dtype "
                       f"{arr.dtype}.")
    self.path, self.array = path, arr
    self.name = name or os.path.basename(path)

  def __len__(self) -> int:
    return self.array.shape[0]

  @property
  def image_shape(self):
    return tuple(self.array.shape[1:])

  def _read(self, indices):
    if indices.size > 1 and np.all(np.diff(indices) == 1):
      raw = self.array[int(indices[0]):int(indices[-1]) + 1]
    else:
      # Sorted page order, then back to the asked order.
      order = np.argsort(indices, kind="stable")
      raw = np.empty((len(indices),) + self.array.shape[1:], self.array.dtype)
      raw[order] = self.array[indices[order]]
    if raw.dtype == np.uint8:
      return raw.astype(np.float32) / np.float32(255)
    return raw.astype(np.float32)

  def update_hash(self, h, batch_size: int = 65536) -> None:
    self.update_hash_of(h, None, batch_size)

  def update_hash_of(self, h, indices, batch_size: int = 65536) -> None:
    h.update(f"{self.array.dtype.str}{self.array.shape[1:]}".encode())
    n = len(self) if indices is None else len(indices)
    for s in range(0, n, batch_size):
      if indices is None:
        block = self.array[s:s + batch_size]
      else:
        block = self.array[np.sort(indices[s:s + batch_size])]
        h.update(np.asarray(indices[s:s + batch_size], np.int64).tobytes())
      h.update(np.ascontiguousarray(block).tobytes())

  def item_digests_of(self, indices, batch_size: int = 65536):
    for s in range(0, len(indices), batch_size):
      sel = indices[s:s + batch_size]
      order = np.argsort(sel, kind="stable")
      block = np.empty((len(sel),) + self.array.shape[1:], self.array.dtype)
      block[order] = self.array[sel[order]]
      for row in block.reshape(len(sel), -1):
        yield hashlib.blake2b(row.tobytes(), digest_size=16).digest()

  def item_digests(self, batch_size: int = 65536):
    return self.item_digests_of(np.arange(len(self)), batch_size)


# ---------------------------------------------------------------- batches --


def process_slice(n: int, index: int = 0, count: int = 1) -> Tuple[int, int]:
  """Rows [start, stop) of process `index` of `count` over n items."""
  return index * n // count, (index + 1) * n // count


def iter_batches(images: Any, batch_size: int, *, start: int = 0,
                 stop: Optional[int] = None, threads: int = 2,
                 prefetch: int = 4) -> Iterator[np.ndarray]:
  """Consecutive float32 batches [<= batch_size, H, W, C] of rows
  [start, stop) of an array or a source.

  For a source, Grain reads batch b = rows [start + b B, start + (b+1) B) on
  `threads` reader threads with `prefetch` batches buffered (decoding and
  page faults overlap with the caller's work); a source with
  `read_processes` (an image folder: Pillow holds the GIL) is decoded by
  that many spawned reader processes instead, from `PROCESS_MIN_ITEMS`
  items and two batches up; for an array, slices.
  """
  n = len(images)
  stop = n if stop is None else stop
  if not is_source(images):
    for s in range(start, stop, batch_size):
      yield np.asarray(images[s:s + batch_size], np.float32)
    return
  num = -(-(stop - start) // batch_size) if stop > start else 0
  if num == 0:
    return
  if (getattr(images, "read_processes", 0) and num > 1
      and stop - start >= PROCESS_MIN_ITEMS):
    pool = _reader_pool(images.read_processes)
    if pool is not None and not pool.busy:  # (a pass inside a pass: threads)
      yield from _process_batches(images, pool, batch_size, start, stop, num)
      return
  if threads <= 0 or num == 1:
    for b in range(num):
      s = start + b * batch_size
      yield images.read(np.arange(s, min(s + batch_size, stop)))
    return
  import grain  # pylint: disable=g-import-not-at-top

  def read(b):
    s = start + int(b) * batch_size
    return images.read(np.arange(s, min(s + batch_size, stop)))

  ds = grain.MapDataset.range(num).map(read).to_iter_dataset(
      grain.ReadOptions(num_threads=threads, prefetch_buffer_size=prefetch))
  yield from ds


# Fewer items than this are read in this process: starting the reader
# processes (a fraction of a second, once per process) would cost more.
PROCESS_MIN_ITEMS = 4096
_POOLS: dict = {}


def _reader_pool(workers: int):
  """A persistent `jaxkd.image_decode.ReaderPool` of `workers` reader
  processes (one per worker count, closed at exit), or None where
  processes cannot be started (then threads read)."""
  pool = _POOLS.get(workers)
  if pool is None:
    import atexit  # pylint: disable=g-import-not-at-top
    from jaxkd import image_decode  # pylint: disable=g-import-not-at-top
    try:
      pool = image_decode.ReaderPool(workers)
    except OSError:
      return None
    atexit.register(pool.close)
    _POOLS[workers] = pool
  return pool


def _process_batches(images, pool, batch_size, start, stop, num):
  """Batches decoded to uint8 by the reader processes (one in flight per
  reader), converted (/ 255) and checked here, in order."""
  from jaxkd import image_decode  # pylint: disable=g-import-not-at-top

  def submit(b):
    idx = np.arange(start + b * batch_size,
                    min(start + (b + 1) * batch_size, stop))
    pool.submit(*images.decode_args(idx))
    return idx

  pending, nxt = [], 0
  pool.busy = True
  try:
    while nxt < num and len(pending) < pool.workers:
      pending.append(submit(nxt))
      nxt += 1
    while pending:
      idx = pending.pop(0)
      try:
        raw = pool.result()
      except image_decode.DecodeError as e:
        from jaxkd.data.folder import changed_file_error  # pylint: disable=g-import-not-at-top
        raise changed_file_error(e) from None
      if nxt < num:  # keep that reader busy while the caller works
        pending.append(submit(nxt))
        nxt += 1
      yield images.checked(raw.astype(np.float32) / np.float32(255), idx)
  finally:
    pool.drain()  # a pass left early (or failed): the pool stays usable
    pool.busy = False


def gather(images: Any, indices: Sequence[int]) -> np.ndarray:
  """float32 `images[indices]`, [k, H, W, C], of an array or a source."""
  idx = np.asarray(indices, np.int64)
  if is_source(images):
    return images.read(idx)
  return np.asarray(images[idx], np.float32)


def fingerprint(images: Any) -> str:
  """16 hex digits of sha256 over a pool's shape and content (streaming for
  a source; for an array the same digest as hashing its float32 bytes)."""
  h = hashlib.sha256(str(tuple(images.shape)).encode())
  if is_source(images):
    h.update(b"source")
    images.update_hash(h)  # content and, where not positions, item keys
  else:
    h.update(np.ascontiguousarray(images, np.float32).tobytes())
  return h.hexdigest()[:16]
