"""Own data from files: `npz:PATH` and `idx:DIR`.

* `npz:PATH`: an `.npz` holding `x_train, y_train, x_test, y_test` (the
  layout of Keras's `mnist.npz`), or `images, labels` (one set; `num_test`
  images are split off as the test split).
* `idx:DIR`: a folder of IDX files (gzipped or not) with any names. Each
  file's header is read (a few bytes); label files ([N], magic 2049) are
  paired with image files ([N, H, W], [N, H, W, C] or [N, D]) holding the
  same N. Two pairs are train and test (the larger is train; equal sizes
  are told apart by "test" or "t10k" in the names); one pair is split like
  `images, labels`. Files that are not IDX are ignored.

Images HW, HWC or flat (with `image_shape`), uint8 or float in [0, 1]; the
checks of `jaxkd.data.arrays.dataset_from_arrays` apply to both.
"""

from __future__ import annotations

import os
import zipfile
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

import jaxkd.data.local as local
from jaxkd.data.arrays import dataset_from_arrays
from jaxkd.data.datasets import Dataset
from jaxkd.validation import JaxkdError

KERAS_KEYS = ("x_train", "y_train", "x_test", "y_test")
SINGLE_KEYS = ("images", "labels")


def _under(path: str, data_dir: Optional[str], exists) -> str:
  """`path` relative to `data_dir` when that exists there, else as given."""
  if data_dir and not os.path.isabs(path) and exists(
      os.path.join(data_dir, path)):
    return os.path.join(data_dir, path)
  return path


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
  path = _under(os.fspath(path), data_dir, os.path.isfile)
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


def _idx_files(data_dir: str) -> List[Tuple[str, Tuple[int, ...]]]:
  """(path, dims) of every IDX file in data_dir (others skipped)."""
  out = []
  for fname in sorted(os.listdir(data_dir)):
    path = os.path.join(data_dir, fname)
    if fname.startswith(".") or not os.path.isfile(path):
      continue
    try:
      _, _, dims = local.read_idx_header(path)
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
                 verify_md5: local.Md5Mode = False) -> Dataset:
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
  path = _under(os.fspath(data_dir_arg), data_dir, os.path.isdir)
  if not os.path.isdir(path):
    raise JaxkdError(f"idx:{path}: not a directory.")
  pairs = find_idx_pairs(path)
  md5s = _md5sums(path, verify_md5)
  arrays = []
  for ipath, lpath in pairs:
    for p in (ipath, lpath):
      arrays.append(local.read_idx(
          p, md5=md5s.get(os.path.basename(p)), verify_md5=verify_md5))
  name = os.path.basename(os.path.normpath(path))
  opts = dict(image_shape=image_shape, num_classes=num_classes, name=name)
  if len(pairs) == 2:
    return dataset_from_arrays(*arrays, **opts)
  return dataset_from_arrays(*arrays, num_test=num_test, seed=seed, **opts)


MD5SUMS = "MD5SUMS"


def _md5sums(path: str, verify_md5: local.Md5Mode) -> Dict[str, str]:
  if not local._md5_mode(verify_md5):
    return {}
  sums = os.path.join(path, MD5SUMS)
  if not os.path.isfile(sums):
    if local._md5_mode(verify_md5) == "raise":
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
