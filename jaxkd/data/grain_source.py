"""Records of a Grain / tfds random-access data source as an image source.

`GrainSource` wraps any random-access source of records: anything with
`len(records)` and `records[i]` -> a dict of fields, such as what
`tfds.data_source(name, split=...)` returns, or `ArrayRecordRecords` below
(`grain.sources.ArrayRecordDataSource` plus a record parser). The image
field of a record is a uint8 (divided by 255) or floating ([0, 1]) array
[H, W] or [H, W, C], or encoded image bytes (PNG, JPEG, ...) decoded with
Pillow (one-channel modes as [H, W, 1], others as RGB [H, W, 3]). Item keys
are record indices; all images must have record 0's shape.

Opening a source streams over its records once, in batches on Grain reader
threads: each record's label (held as int32 [n]), the check that its image
has the common shape (a one-line `JaxkdError` naming the record), and a
16-byte digest of its pixels (so the pool fingerprint and split overlap
checks never read the records again). Cost O(n H W C) time, O(n) memory;
the images themselves are read batch by batch when used. Given `labels=`
(a label-only path), opening reads only record 0 and the digests are
streamed when first needed.

`arrayrecord:<path>` datasets are ArrayRecord files (one record per image)
in the jaxkd record format, a msgpack map (no pickle):

* `"image"`: bytes. With `"shape"` ([H, W] or [H, W, C] ints) they are the
  raw pixels in C order, of `"dtype"` (`"uint8"`, the default, or
  `"float32"` in [0, 1]); without `"shape"`, an encoded image file (PNG,
  JPEG, ...). A `flax.serialization.msgpack_serialize`-d NumPy array is
  accepted too.
* `"label"`: an int >= 0 (the class id).

`write_array_records(path, images, labels)` writes such a file (records in
groups of one, so reading one record decodes only that record).
`<path>` is one file, a glob (`data/shard-*.array_record`, sorted; record
indices run over the files in order), or a folder: its
`train*.array_record` files are the train split and its
`test*.array_record` files (if any) the test split, else all its
`*.array_record` files are one split. Without a test split, `num_test`
records are held out with `split_indices(n, num_test, seed)`.
"""

from __future__ import annotations

import glob
import hashlib
import io
import os
from typing import Any, Callable, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from jaxkd.data.datasets import Dataset
from jaxkd.data.files import check_inside, under_data_dir
from jaxkd.data.on_disk import _num_classes, _split_off
from jaxkd.data.sources import ImageSource
from jaxkd.validation import JaxkdError

RECORD_DTYPES = ("uint8", "float32")
_ONE_CHANNEL_MODES = ("1", "L", "LA", "I", "I;16", "F")
_DIGEST = 16


def _one_line(e: BaseException) -> str:
  return f"{type(e).__name__}: {' '.join(str(e).split())}"


def _decode_image_bytes(data: bytes) -> np.ndarray:
  """uint8 [H, W, C] of an encoded image file (C 1 for grey modes, else 3)."""
  try:
    from PIL import Image  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise JaxkdError("encoded images need Pillow (pip install Pillow)."
                     ) from None
  with Image.open(io.BytesIO(bytes(data))) as img:
    img.load()
    one = img.mode in _ONE_CHANNEL_MODES
    arr = np.asarray(img.convert("L" if one else "RGB"), np.uint8)
  return arr[..., None] if arr.ndim == 2 else arr


def _map_batches(fn: Callable[[int], Any], num: int, threads: int
                 ) -> Iterator[Any]:
  """fn(0), ..., fn(num - 1) in order, on `threads` Grain reader threads."""
  if threads <= 0 or num <= 1:
    yield from (fn(b) for b in range(num))
    return
  import grain  # pylint: disable=g-import-not-at-top
  yield from grain.MapDataset.range(num).map(fn).to_iter_dataset(
      grain.ReadOptions(num_threads=threads, prefetch_buffer_size=threads))


def _digest(image: np.ndarray) -> bytes:
  h = hashlib.blake2b(image.dtype.str.encode(), digest_size=_DIGEST)
  h.update(np.ascontiguousarray(image).tobytes())
  return h.digest()


class GrainSource(ImageSource):
  """The images of a random-access source of records (module docstring).

  Args:
    records: `len(records)` and `records[i]` -> dict with the image and
      label fields (a `tfds.data_source` split, `ArrayRecordRecords`, ...).
    image_key: the image field.
    label_key: the label field, or None for unlabelled records.
    labels: [n] integer labels from a label-only path; then opening reads
      only record 0 (shapes are checked as records are read).
    name: the name in messages.
    threads: Grain reader threads of the opening pass.
    batch_size: records per batch of the opening pass.

  Attributes:
    labels: [n] int32, or None without `label_key` and `labels`.

  Raises:
    JaxkdError: an empty or unsized source, a record that is not a dict or
      lacks a field, an image that is not [H, W(, C)] uint8 / floating /
      encoded bytes, of another shape than record 0's, or a label that is
      not an int >= 0 (each naming the record).
  """

  def __init__(self, records: Any, *, image_key: str = "image",
               label_key: Optional[str] = "label",
               labels: Optional[Sequence[int]] = None,
               name: Optional[str] = None, threads: int = 4,
               batch_size: int = 256):
    self.records, self.image_key, self.label_key = records, image_key, label_key
    self.name = name or type(records).__name__
    try:
      n = len(records)
    except TypeError:
      raise JaxkdError(f"{self.name}: a record source needs len() and "
                       f"[int] access, got {type(records).__name__}."
                       ) from None
    if n == 0:
      raise JaxkdError(f"{self.name}: no records.")
    self._n, self._threads, self._batch = int(n), int(threads), int(batch_size)
    self._shape = None
    self._shape = self._image(0, self._record(0)).shape
    self._digests: Optional[np.ndarray] = None  # [n, 16] uint8
    if labels is not None:
      y = np.asarray(labels)
      if (y.shape != (n,) or not np.issubdtype(y.dtype, np.integer)
          or (y.size and y.min() < 0)):
        raise JaxkdError(f"{self.name}: labels must be [{n}] ints >= 0, got "
                         f"{y.dtype} {y.shape}.")
      self.labels = y.astype(np.int32)
    elif label_key is None:
      self.labels = None
    else:
      self.labels, self._digests = self._scan(with_labels=True)

  # ------------------------------------------------------------ records --

  def _record(self, i: int) -> Any:
    try:
      rec = self.records[int(i)]
    except JaxkdError as e:
      raise JaxkdError(f"{self.name}: {e}") from None
    except Exception as e:  # pylint: disable=broad-except
      raise JaxkdError(f"{self.name}: record {i} cannot be read "
                       f"({_one_line(e)}).") from None
    if not hasattr(rec, "keys") or not hasattr(rec, "__getitem__"):
      raise JaxkdError(f"{self.name}: record {i} is a {type(rec).__name__}, "
                       "not a dict of fields (parse raw records first, e.g. "
                       "with ArrayRecordRecords).")
    return rec

  def _field(self, rec: Any, i: int, key: str) -> Any:
    if key not in rec:
      raise JaxkdError(f"{self.name}: record {i} has no field {key!r} "
                       f"(fields: {sorted(rec.keys())}).")
    return rec[key]

  def _image(self, i: int, rec: Any) -> np.ndarray:
    """The image of record i: uint8 or floating [H, W, C], shape checked."""
    value = self._field(rec, i, self.image_key)
    if isinstance(value, np.ndarray) and value.dtype.kind in "SO" and (
        value.ndim == 0):
      value = value.item()
    if isinstance(value, (bytes, bytearray, memoryview)):
      try:
        img = _decode_image_bytes(value)
      except JaxkdError:
        raise
      except Exception as e:  # pylint: disable=broad-except
        raise JaxkdError(f"{self.name}: record {i}: the image bytes are not "
                         f"a readable image ({_one_line(e)}).") from None
    else:
      img = np.asarray(value)
      if img.ndim == 2:
        img = img[..., None]
      if img.ndim != 3 or min(img.shape) < 1:
        raise JaxkdError(f"{self.name}: record {i} has an image of shape "
                         f"{img.shape}; expected [H, W] or [H, W, C].")
      if img.dtype != np.uint8 and not np.issubdtype(img.dtype, np.floating):
        raise JaxkdError(f"{self.name}: record {i} has an image of dtype "
                         f"{img.dtype}; expected uint8 or floating.")
    if self._shape is not None and img.shape != self._shape:
      raise JaxkdError(
          f"{self.name}: record {i} has an image of shape {img.shape} (H, W, "
          f"C) but record 0 has {self._shape}; all images must have one "
          "shape (resize them when writing the records).")
    return img

  def _label(self, i: int, rec: Any) -> int:
    y = np.asarray(self._field(rec, i, self.label_key))
    if (y.ndim != 0 or y.dtype == np.bool_
        or not np.issubdtype(y.dtype, np.integer)
        or not 0 <= int(y) < 2**31):
      raise JaxkdError(f"{self.name}: record {i} has label {y.tolist()!r}; "
                       "labels must be ints >= 0.")
    return int(y)

  def _scan(self, with_labels: bool) -> Tuple[Optional[np.ndarray],
                                              np.ndarray]:
    """One streamed pass: (labels [n] int32 or None, digests [n, 16])."""
    n, size = self._n, self._batch

    def chunk(b):
      lo, hi = int(b) * size, min(n, (int(b) + 1) * size)
      ys = np.zeros(hi - lo, np.int32)
      ds = np.empty((hi - lo, _DIGEST), np.uint8)
      for r, i in enumerate(range(lo, hi)):
        rec = self._record(i)
        ds[r] = np.frombuffer(_digest(self._image(i, rec)), np.uint8)
        if with_labels:
          ys[r] = self._label(i, rec)
      return ys, ds

    parts = list(_map_batches(chunk, -(-n // size), self._threads))
    labels = np.concatenate([p[0] for p in parts]) if with_labels else None
    return labels, np.concatenate([p[1] for p in parts])

  def _digest_array(self) -> np.ndarray:
    if self._digests is None:
      _, self._digests = self._scan(with_labels=False)
    return self._digests

  # ---------------------------------------------------------- interface --

  def __len__(self) -> int:
    return self._n

  @property
  def image_shape(self):
    return self._shape

  def _read(self, indices):
    out = np.empty((len(indices),) + self._shape, np.float32)
    for r, i in enumerate(indices):
      img = self._image(int(i), self._record(int(i)))
      out[r] = (img.astype(np.float32) / np.float32(255)
                if img.dtype == np.uint8 else img)
    return out

  def update_hash(self, h, batch_size: int = 0) -> None:
    h.update(f"grain{self._shape}".encode())
    h.update(self._digest_array().tobytes())

  def update_hash_of(self, h, indices, batch_size: int = 0) -> None:
    idx = np.asarray(indices, np.int64)
    h.update(f"grain{self._shape}".encode())
    h.update(idx.tobytes())
    h.update(self._digest_array()[idx].tobytes())

  def item_digests(self, batch_size: int = 0):
    return (row.tobytes() for row in self._digest_array())

  def item_digests_of(self, indices, batch_size: int = 0):
    digests = self._digest_array()
    return (digests[int(i)].tobytes() for i in indices)


# ------------------------------------------------------------ ArrayRecord --


def parse_record(raw: bytes) -> dict:
  """A record in the jaxkd record format (module docstring) -> {"image":
  array [H, W(, C)] or encoded bytes, "label": int (if present)}.

  Raises:
    JaxkdError: not a msgpack map with "image", or pixels that do not fill
      "shape" in "dtype".
  """
  from flax import serialization  # pylint: disable=g-import-not-at-top
  try:
    rec = serialization.msgpack_restore(bytes(raw))
  except Exception as e:  # pylint: disable=broad-except
    raise JaxkdError(f"not a msgpack record ({_one_line(e)})") from None
  if not isinstance(rec, dict) or "image" not in rec:
    raise JaxkdError("not a jaxkd record (a msgpack map with 'image')")
  image = rec["image"]
  if "shape" in rec and isinstance(image, bytes):
    dtype = rec.get("dtype", "uint8")
    if dtype not in RECORD_DTYPES:
      raise JaxkdError(f"'dtype' {dtype!r} is not one of {RECORD_DTYPES}")
    shape = rec["shape"]
    if (not isinstance(shape, (list, tuple)) or len(shape) not in (2, 3)
        or not all(isinstance(s, int) and s > 0 for s in shape)):
      raise JaxkdError(f"'shape' {shape!r} is not [H, W] or [H, W, C]")
    want = int(np.prod(shape)) * np.dtype(dtype).itemsize
    if len(image) != want:
      raise JaxkdError(f"{len(image)} image bytes for shape {list(shape)} "
                       f"{dtype} ({want} bytes)")
    image = np.frombuffer(image, dtype).reshape(shape)
  out = {"image": image}
  if "label" in rec:
    out["label"] = rec["label"]
  return out


class ArrayRecordRecords:
  """Records of ArrayRecord files in the jaxkd record format, parsed.

  A random-access source (`len`, `[i]` -> `parse_record` of record i) over
  `grain.sources.ArrayRecordDataSource(paths)`; record i runs over the files
  in order. Reading one record costs one seek and one decode.

  Raises:
    JaxkdError: a missing or unreadable file; on `[i]`, a record not in the
      format (naming the record).
  """

  def __init__(self, paths: Sequence[str]):
    self.paths = [os.fspath(p) for p in paths]
    for p in self.paths:
      if not os.path.isfile(p):
        raise JaxkdError(f"{p}: file not found.")
    import grain  # pylint: disable=g-import-not-at-top
    try:
      self._source = grain.sources.ArrayRecordDataSource(self.paths)
    except Exception as e:  # pylint: disable=broad-except
      where = self.paths[0] if len(self.paths) == 1 else (
          f"{self.paths[0]} (or another of {len(self.paths)} files)")
      raise JaxkdError(f"{where}: not a readable ArrayRecord file "
                       f"({_one_line(e)}).") from None

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, i: int) -> dict:
    try:
      return parse_record(self._source[int(i)])
    except JaxkdError as e:
      raise JaxkdError(f"record {i}: {e}.") from None


def write_array_records(path: str, images: Any,
                        labels: Optional[Sequence[int]] = None) -> int:
  """Writes one jaxkd-format record per image to the ArrayRecord file `path`.

  Args:
    path: the file to write (replaced if it exists).
    images: uint8 or float32 images [n, H, W] / [n, H, W, C], or a sequence
      of n such arrays [H, W(, C)] (shapes may differ) or encoded image
      bytes (PNG, JPEG, ...), stored as given.
    labels: [n] ints >= 0, or None for unlabelled records.

  Returns:
    n, the number of records written. Cost O(total bytes).

  Raises:
    JaxkdError: images of another dtype or rank, labels of another length or
      not ints >= 0, a path that cannot be written.

  Example:
    >>> import numpy as np, tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "toy.array_record")
    >>> write_array_records(p, np.zeros((3, 2, 2), np.uint8), [0, 1, 0])
    3
  """
  # pylint: disable=g-import-not-at-top
  import msgpack
  from array_record.python import array_record_module
  # pylint: enable=g-import-not-at-top
  n = len(images)
  if labels is not None:
    y = np.asarray(labels)
    if (y.shape != (n,) or y.dtype == np.bool_
        or not np.issubdtype(y.dtype, np.integer) or (n and y.min() < 0)):
      raise JaxkdError(f"labels must be [{n}] ints >= 0, got {y.dtype} "
                       f"{y.shape}.")
  blobs = []
  for i in range(n):
    image = images[i]
    if isinstance(image, (bytes, bytearray)):
      rec = {"image": bytes(image)}
    else:
      x = np.asarray(image)
      if x.dtype.name not in RECORD_DTYPES or x.ndim not in (2, 3):
        raise JaxkdError(f"image {i}: {x.dtype} {x.shape}; expected uint8 "
                         "or float32 [H, W] or [H, W, C].")
      rec = {"image": np.ascontiguousarray(x).tobytes(),
             "shape": list(x.shape), "dtype": x.dtype.name}
    if labels is not None:
      rec["label"] = int(y[i])
    blobs.append(msgpack.packb(rec, use_bin_type=True))
  path = os.fspath(path)
  parent = os.path.dirname(os.path.abspath(path))
  if not os.path.isdir(parent):
    raise JaxkdError(f"{path}: cannot be written (no folder {parent}).")
  try:
    writer = array_record_module.ArrayRecordWriter(path, "group_size:1")
    try:
      for blob in blobs:
        writer.write(blob)
    finally:
      writer.close()
  except Exception as e:  # pylint: disable=broad-except
    raise JaxkdError(f"{path}: cannot be written ({_one_line(e)}).") from None
  return n


def _files(path: str) -> Tuple[List[str], List[str]]:
  """(train files, test files) of an `arrayrecord:` path (module
  docstring)."""
  if os.path.isdir(path):
    train = sorted(glob.glob(os.path.join(glob.escape(path),
                                          "train*.array_record")))
    test = sorted(glob.glob(os.path.join(glob.escape(path),
                                         "test*.array_record")))
    if train:
      return train, test
    if test:
      raise JaxkdError(f"{path}: test*.array_record files but no "
                       "train*.array_record.")
    every = sorted(glob.glob(os.path.join(glob.escape(path),
                                          "*.array_record")))
    if not every:
      raise JaxkdError(f"{path}: no .array_record files.")
    return every, []
  if glob.has_magic(path):
    files = sorted(f for f in glob.glob(path) if os.path.isfile(f))
    if not files:
      raise JaxkdError(f"{path}: matches no files.")
    return files, []
  if not os.path.isfile(path):
    raise JaxkdError(f"{path}: file not found.")
  return [path], []


def load_arrayrecord(path: str, data_dir: Optional[str] = None, *,
                     image_shape: Optional[Sequence[int]] = None,
                     num_classes: int = 0, num_test: int = 0, seed: int = 0
                     ) -> Dataset:
  """Loads `arrayrecord:PATH` (module docstring) as `GrainSource` splits.

  Args:
    path: a file, a glob or a folder (relative paths are tried in
      `data_dir` first).
    data_dir: the data folder.
    image_shape: when given, the records' (H, W) or (H, W, C) (checked; not
      resized).
    num_classes: the class count (default: max label + 1, every class
      present).
    num_test, seed: records held out as the test split when there is no
      test file.

  Returns:
    A `Dataset` whose images are `GrainSource`s (labels in memory). Opening
    reads every record once.

  Raises:
    JaxkdError: no matching files, unreadable files or records, images of
      several shapes, missing labels, a test split of another shape.
  """
  spec = os.fspath(path)
  path = under_data_dir(spec, data_dir,
                        lambda p: os.path.exists(p) or bool(glob.glob(p)))
  train_files, test_files = _files(path)
  for f in train_files + test_files:
    check_inside(f, data_dir if path != spec else None, spec)
  if os.path.isdir(path):
    name = os.path.basename(os.path.normpath(path))
  elif glob.has_magic(path):
    name = os.path.basename(os.path.dirname(os.path.abspath(path)))
  else:
    name = os.path.splitext(os.path.basename(path))[0]
  name = name or "records"
  x = GrainSource(ArrayRecordRecords(train_files), name=name)
  if image_shape:
    want = tuple(int(v) for v in image_shape)
    if len(want) not in (2, 3) or want != x.image_shape[:len(want)]:
      raise JaxkdError(f"{path}: images are {x.image_shape} (H, W, C), not "
                       f"image_shape={want}; records are not resized.")
  tx = ty = None
  if test_files:
    tx = GrainSource(ArrayRecordRecords(test_files), name=f"{name} test")
    ty = tx.labels
    if tx.image_shape != x.image_shape:
      raise JaxkdError(f"{test_files[0]}: test images are {tx.image_shape} "
                       f"but train images are {x.image_shape}.")
  x, y, tx, ty = _split_off(name, x, x.labels, tx, ty, num_test, seed)
  return Dataset(x, y, tx, ty, name=name,
                 num_classes=_num_classes(name, num_classes, y, ty))
