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
from jaxkd.data.files import under_data_dir
from jaxkd.validation import JaxkdError

KERAS_KEYS = ("x_train", "y_train", "x_test", "y_test")
SINGLE_KEYS = ("images", "labels")


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
  path = under_data_dir(os.fspath(path), data_dir, os.path.isfile)
  if not os.path.isfile(path):
    raise JaxkdError(f"{path}: file not found.")
  try:
    with np.load(path, allow_pickle=False) as f:
      arrays = {k: f[k] for k in f.files}
  except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
    raise JaxkdError(f"{path}: not a readable .npz file ({e}).") from e
  name = os.path.splitext(os.path.basename(path))[0]
  opts = dict(image_shape=image_shape, num_classes=num_classes, name=name)
  if all(k in arrays for k in KERAS_KEYS):
    return dataset_from_arrays(*(arrays[k] for k in KERAS_KEYS), **opts)
  for keys in (SINGLE_KEYS, ("x_train", "y_train")):
    if all(k in arrays for k in keys):
      return dataset_from_arrays(arrays[keys[0]], arrays[keys[1]],
                                 num_test=num_test, seed=seed, **opts)
  raise JaxkdError(
      f"{path} holds {sorted(arrays)}; expected {', '.join(KERAS_KEYS)} "
      f"(Keras layout) or {', '.join(SINGLE_KEYS)}.")
