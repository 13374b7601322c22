"""CIFAR-10 python batches: `cifar10`.

The files `data_batch_1..5` and `test_batch` (and optionally `batches.meta`)
that `cifar-10-python.tar.gz` unpacks to are pickled dicts. A pickle can run
arbitrary code, so only the few globals a NumPy array needs are unpickled.
Every reader checks the batch layout, dtype and label range and raises
`JaxkdError` naming the file and the problem.

References:
  A. Krizhevsky. Learning multiple layers of features from tiny images, 2009
    (CIFAR-10 python version: https://www.cs.toronto.edu/~kriz/cifar.html).
"""

from __future__ import annotations

import io
import os
import pickle
from typing import Any, Dict, Optional, Tuple

import numpy as np

from jaxkd.data.datasets import CIFAR10_CLASS_NAMES, Dataset, register_dataset
from jaxkd.data.files import read_bytes
from jaxkd.validation import JaxkdError

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
  raw = read_bytes(path)
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
