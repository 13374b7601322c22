"""IDX files: MNIST and Fashion-MNIST, and `idx:DIR` folders of own files.

IDX layout: two zero bytes, a type code (0x08 = uint8, ...), the number of
dimensions d, then d big-endian uint32 sizes, then the values row-major.

* `mnist`, `fashion_mnist`: the four files of the MNIST layout
  (`train-images-idx3-ubyte.gz`, ...) in `data_dir`, checked against their
  published md5s on request.
* `idx:DIR`: a folder of IDX files (gzipped or not) with any names. Each
  file's header is read (a few bytes); label files ([N], magic 2049) are
  paired with image files ([N, H, W], [N, H, W, C] or [N, D]) holding the
  same N. Two pairs are train and test (the larger is train; equal sizes
  are told apart by "test" or "t10k" in the names); one pair is split like
  `images, labels` of `npz:`. Files that are not IDX are ignored. Images
  HW, HWC or flat (with `image_shape`), uint8 or float in [0, 1]; the checks
  of `jaxkd.data.arrays.dataset_from_arrays` apply.

Every reader checks what it reads (gzip integrity, magic numbers, header
dimensions against the bytes present, label ranges) and raises `JaxkdError`
naming the file and the problem. A gzipped file is never expanded beyond the
size its header declares.

References:
  Y. LeCun, C. Cortes, C. Burges. The MNIST database (IDX format described at
    http://yann.lecun.com/exdb/mnist/).
  H. Xiao, K. Rasul, R. Vollgraf. Fashion-MNIST, arXiv:1708.07747, 2017.
"""

from __future__ import annotations

import gzip
import io
import os
import zlib
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from jaxkd.data.files import (Md5Mode, check_inside, check_md5, md5_mode,
                               read_bytes, under_data_dir)
from jaxkd.data.arrays import dataset_from_arrays
from jaxkd.data.datasets import (DIGIT_CLASS_NAMES, FASHION_MNIST_CLASS_NAMES,
                                 Dataset, register_dataset)
from jaxkd.validation import JaxkdError

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
  raw = read_bytes(path)
  mode = md5_mode(verify_md5)
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


# ----------------------------------------------------------- idx: folders --


def _idx_files(data_dir: str) -> List[Tuple[str, Tuple[int, ...]]]:
  """(path, dims) of every IDX file in data_dir (others skipped)."""
  out = []
  for fname in sorted(os.listdir(data_dir)):
    path = os.path.join(data_dir, fname)
    if fname.startswith(".") or not os.path.isfile(path):
      continue
    try:
      _, _, dims = read_idx_header(path)
    except JaxkdError:
      continue
    out.append((path, dims))
  return out


def _is_test(path: str) -> bool:
  base = os.path.basename(path).lower()
  return "test" in base or "t10k" in base


def find_idx_pairs(data_dir: str) -> List[Tuple[str, str]]:
  """[(images_path, labels_path)] of the IDX files in `data_dir`, train
  first (see the module docstring); raises with the files found."""
  files = _idx_files(data_dir)
  labels = [(p, d) for p, d in files if len(d) == 1]
  images = [(p, d) for p, d in files if len(d) in (2, 3, 4)]
  found = "; ".join(f"{os.path.basename(p)} {d}" for p, d in files) or "none"
  if not labels or not images or len(images) > 2 or len(labels) > 2:
    raise JaxkdError(
        f"idx:{data_dir}: need 1 or 2 image files ([N, H, W]) and as many "
        f"label files ([N]); IDX files found: {found}.")
  if len(images) != len(labels):
    raise JaxkdError(
        f"idx:{data_dir}: {len(images)} image file(s) but {len(labels)} "
        f"label file(s); IDX files found: {found}.")
  pairs = []
  for ipath, idims in images:
    match = [p for p, d in labels if d[0] == idims[0]]
    if len(match) > 1:  # same count: pair by the test/train hint
      match = [p for p in match if _is_test(p) == _is_test(ipath)]
    if len(match) != 1:
      raise JaxkdError(
          f"idx:{data_dir}: cannot pair {os.path.basename(ipath)} "
          f"({idims[0]} images) with one label file of the same length; "
          f"IDX files found: {found}.")
    pairs.append((ipath, match[0], idims[0]))
  if len(pairs) == 2:
    if pairs[0][1] == pairs[1][1]:
      raise JaxkdError(
          f"idx:{data_dir}: both image files pair with "
          f"{os.path.basename(pairs[0][1])}; IDX files found: {found}.")
    if pairs[0][2] == pairs[1][2]:
      if _is_test(pairs[0][0]) == _is_test(pairs[1][0]):
        raise JaxkdError(
            f"idx:{data_dir}: two image files of {pairs[0][2]} images and "
            "no 'test' or 't10k' in one name to tell the test split; IDX "
            f"files found: {found}.")
      pairs.sort(key=lambda p: _is_test(p[0]))
    else:
      pairs.sort(key=lambda p: -p[2])
  return [(i, l) for i, l, _ in pairs]


def load_idx_dir(data_dir_arg: str, data_dir: Optional[str] = None, *,
                 image_shape: Optional[Sequence[int]] = None,
                 num_classes: int = 0, num_test: int = 0, seed: int = 0,
                 verify_md5: Md5Mode = False) -> Dataset:
  """Loads `idx:DIR` (see the module docstring).

  Args:
    data_dir_arg: the folder after `idx:` (relative paths are taken from
      `data_dir` when given and the folder is there).
    data_dir: optional base folder.
    image_shape, num_classes, num_test, seed: as in `load_npz`.
    verify_md5: False, True / "raise" or "warn": check each file listed in
      the folder's `MD5SUMS` (lines `<md5>  <file name>`); with no such
      file, True / "raise" is an error.

  Returns:
    A `Dataset` named after the folder.

  Raises:
    JaxkdError: missing folder, files that do not pair, md5 mismatch, and
      every check of `read_idx` and `dataset_from_arrays`.
  """
  path = under_data_dir(os.fspath(data_dir_arg), data_dir, os.path.isdir)
  if not os.path.isdir(path):
    raise JaxkdError(f"idx:{path}: not a directory.")
  pairs = find_idx_pairs(path)
  md5s = _md5sums(path, verify_md5)
  arrays = []
  root = data_dir if path != os.fspath(data_dir_arg) else None
  for ipath, lpath in pairs:
    for p in (ipath, lpath):
      check_inside(p, root or path, os.fspath(data_dir_arg))
      arrays.append(read_idx(
          p, md5=md5s.get(os.path.basename(p)), verify_md5=verify_md5))
  name = os.path.basename(os.path.normpath(path))
  opts = dict(image_shape=image_shape, num_classes=num_classes, name=name)
  if len(pairs) == 2:
    return dataset_from_arrays(*arrays, **opts)
  return dataset_from_arrays(*arrays, num_test=num_test, seed=seed, **opts)


MD5SUMS = "MD5SUMS"


def _md5sums(path: str, verify_md5: Md5Mode) -> Dict[str, str]:
  if not md5_mode(verify_md5):
    return {}
  sums = os.path.join(path, MD5SUMS)
  if not os.path.isfile(sums):
    if md5_mode(verify_md5) == "raise":
      raise JaxkdError(
          f"idx:{path}: verify_md5 is on but there is no {MD5SUMS} file "
          "(lines '<md5>  <file name>') to check against.")
    return {}
  out = {}
  with open(sums) as f:
    for line in f:
      parts = line.split()
      if len(parts) == 2:
        out[os.path.basename(parts[1].lstrip("*"))] = parts[0].lower()
  return out
