"""Own data in an `.npz` file: `npz:PATH`.

The file holds `x_train, y_train, x_test, y_test` (the layout of Keras's
`mnist.npz`), or `images, labels` (or `x_train, y_train` alone: one set;
`num_test` images are split off as the test split). Images HW, HWC or flat
(with `image_shape`), uint8 or float in [0, 1]; the checks of
`jaxkd.data.arrays.dataset_from_arrays` apply. Pickled object arrays are
refused (`allow_pickle=False`).
"""

from __future__ import annotations

import os
import zipfile
from typing import Optional, Sequence

import numpy as np

from jaxkd.data.arrays import dataset_from_arrays
from jaxkd.data.datasets import Dataset
from jaxkd.data.files import check_inside, memory_budget, under_data_dir
from jaxkd.validation import JaxkdError

KERAS_KEYS = ("x_train", "y_train", "x_test", "y_test")
SINGLE_KEYS = ("images", "labels")


def check_npz_sizes(path: str) -> None:
  """Every array of the .npz holds exactly the bytes its .npy header
  declares (the zip entry's size; reading never decompresses past it), and
  all of them as float32 fit in memory: a small file that declares or
  expands to more is refused before anything is decompressed beyond the
  headers."""
  try:
    with zipfile.ZipFile(path) as z:
      total = 0
      for info in z.infolist():
        if not info.filename.endswith(".npy"):
          continue
        with z.open(info) as f:
          version = np.lib.format.read_magic(f)
          read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                  else np.lib.format.read_array_header_2_0)
          shape, _, dtype = read(f)
          header = f.tell()
        nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
        if info.file_size != header + nbytes:
          raise JaxkdError(
              f"{path}: {info.filename} declares shape {tuple(shape)} "
              f"({nbytes} bytes) but its zip entry holds "
              f"{info.file_size - header} bytes.")
        total += nbytes * max(1, 4 // max(dtype.itemsize, 1))
  except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
    raise JaxkdError(f"{path}: not a readable .npz file ({e}).") from e
  if total > memory_budget():
    raise JaxkdError(
        f"{path}: its arrays would take {total / 2**30:.1f} GiB as float32, "
        f"more than the {memory_budget() / 2**30:.1f} GiB this machine can "
        "spare; use a smaller file.")


def load_npz(path: str, data_dir: Optional[str] = None, *,
             image_shape: Optional[Sequence[int]] = None,
             num_classes: int = 0, num_test: int = 0, seed: int = 0
             ) -> Dataset:
  """Loads `npz:PATH` (see the module docstring).

  Args:
    path: the `.npz` file (relative paths are taken from `data_dir` when
      given and the file is there).
    data_dir: optional folder for a relative `path`.
    image_shape: (H, W) or (H, W, C) for flat images.
    num_classes: 0 infers max label + 1.
    num_test: test images to split off an `images, labels` file.
    seed: seed of that split.

  Returns:
    A `Dataset` named after the file.

  Raises:
    JaxkdError: missing or unreadable file, unknown keys, and every check of
      `dataset_from_arrays`.
  """
  spec = os.fspath(path)
  path = under_data_dir(spec, data_dir, os.path.isfile)
  if not os.path.isfile(path):
    raise JaxkdError(f"{path}: file not found.")
  check_inside(path, data_dir if path != os.fspath(spec) else None, spec)
  check_npz_sizes(path)
  try:
    with np.load(path, allow_pickle=False) as f:
      arrays = {k: f[k] for k in f.files}
  except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
    raise JaxkdError(f"{path}: not a readable .npz file ({e}).") from e
  name = os.path.splitext(os.path.basename(path))[0]
  opts = dict(image_shape=image_shape, num_classes=num_classes, name=name)
  if all(k in arrays for k in KERAS_KEYS):
    return dataset_from_arrays(*(arrays[k] for k in KERAS_KEYS), **opts)
  half = [k for k in ("x_test", "y_test") if k in arrays]
  if len(half) == 1:
    other = "y_test" if half[0] == "x_test" else "x_test"
    raise JaxkdError(f"{path} holds {half[0]} but no {other}: add it, or "
                     f"remove {half[0]} to split a test set off the train "
                     "arrays.")
  for keys in (SINGLE_KEYS, ("x_train", "y_train")):
    if all(k in arrays for k in keys):
      return dataset_from_arrays(arrays[keys[0]], arrays[keys[1]],
                                 num_test=num_test, seed=seed, **opts)
  raise JaxkdError(
      f"{path} holds {sorted(arrays)}; expected {', '.join(KERAS_KEYS)} "
      f"(Keras layout) or {', '.join(SINGLE_KEYS)}.")
