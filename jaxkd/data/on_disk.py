"""`npy:PATH` and `folder:DIR`: datasets that stay on disk.

Both return a `Dataset` whose image fields are `jaxkd.data.sources`
sources (labels are small and held in memory): pools, test splits and
teacher-training splits are read in batches, never loaded whole.

* `npy:PATH`: PATH is a folder holding `train_images.npy` and
  `train_labels.npy` (and optionally `test_images.npy` with
  `test_labels.npy`), or one images `.npy` with its labels in
  `<stem>_labels.npy` beside it. Images [n, H, W] or [n, H, W, C], uint8 or
  floats in [0, 1], memory-mapped; labels [n] integers.
* `folder:DIR`: `jaxkd.data.folder` (class sub-folders or `labels.csv`;
  DIR/train and DIR/test as splits when both exist).

Without a test split of their own, `num_test` items (the config's
`split.test`) are held out with `split_indices(n, num_test, seed)`.
"""

from __future__ import annotations

import os
from typing import Optional, Sequence

import numpy as np

from jaxkd.data.arrays import as_labels
from jaxkd.data.datasets import Dataset, split_indices
from jaxkd.data.files import check_inside, under_data_dir
from jaxkd.data.sources import NpySource
from jaxkd.validation import JaxkdError


def _split_off(name, images, labels, test_images, test_labels, num_test,
               seed):
  if test_images is not None:
    return images, labels, test_images, test_labels
  if not num_test:
    raise JaxkdError(f"{name} has no test split: set split.test > 0 to hold "
                     "that many test images out.")
  train, test = split_indices(len(images), num_test, seed)
  return images.take(train), labels[train], images.take(test), labels[test]


def _num_classes(name, num_classes, *labels):
  if num_classes:
    return num_classes
  allv = np.concatenate(labels)
  n = int(allv.max(initial=0)) + 1
  absent = np.setdiff1d(np.arange(n), allv)
  if len(absent):
    raise JaxkdError(
        f"{name}: labels run 0..{n - 1} but {len(absent)} of those classes "
        f"never occur (e.g. {int(absent[0])}): a stray label? Fix the "
        "labels, or set num_classes to say how many classes there are.")
  return n


def _npy_labels(path: str, n: int, what: str) -> np.ndarray:
  if not os.path.isfile(path):
    raise JaxkdError(f"{path}: missing (the labels of {what}).")
  try:
    y = np.load(path, allow_pickle=False)
  except (OSError, ValueError) as e:
    raise JaxkdError(f"{path}: not a readable .npy array ({e}).") from None
  y = as_labels(y, path)
  if len(y) != n:
    raise JaxkdError(f"{path}: {len(y)} labels for the {n} images of {what}.")
  return y


def load_npy(path: str, data_dir: Optional[str] = None, *,
             image_shape: Optional[Sequence[int]] = None,
             num_classes: int = 0, num_test: int = 0, seed: int = 0
             ) -> Dataset:
  """Loads `npy:PATH` (see the module docstring), memory-mapped;
  `image_shape`, when given, must be the files' (H, W) or (H, W, C).

  Raises:
    JaxkdError: missing files, wrong shapes or dtypes, label counts that do
      not match, a test split of another image shape.
  """
  spec = os.fspath(path)
  path = under_data_dir(spec, data_dir, os.path.exists)
  check_inside(path, data_dir if path != spec else None, spec)
  if os.path.isdir(path):
    train = os.path.join(path, "train_images.npy")
    if not os.path.isfile(train):
      raise JaxkdError(f"{path}: no train_images.npy (npy: takes a folder "
                       "with train_images.npy and train_labels.npy, or an "
                       "images .npy file).")
    labels = os.path.join(path, "train_labels.npy")
    test = os.path.join(path, "test_images.npy")
    name = os.path.basename(os.path.normpath(path))
  elif os.path.isfile(path):
    train, test = path, None
    labels = os.path.splitext(path)[0] + "_labels.npy"
    name = os.path.splitext(os.path.basename(path))[0]
  else:
    raise JaxkdError(f"{path}: file not found.")
  x = NpySource(train, name=name)
  if image_shape:
    want = tuple(int(v) for v in image_shape)
    if want != x.image_shape[:len(want)] or len(want) not in (2, 3):
      raise JaxkdError(f"{train}: images are {x.image_shape} (H, W, C), not "
                       f"image_shape={want}; memory-mapped images are not "
                       "resized.")
  y = _npy_labels(labels, len(x), train)
  tx = ty = None
  if test is not None and os.path.isfile(test):
    tx = NpySource(test, name=f"{name} test")
    ty = _npy_labels(os.path.join(path, "test_labels.npy"), len(tx), test)
    if tx.image_shape != x.image_shape:
      raise JaxkdError(f"{test}: test images are {tx.image_shape} but train "
                       f"images are {x.image_shape}.")
  x, y, tx, ty = _split_off(name, x, y, tx, ty, num_test, seed)
  return Dataset(x, y, tx, ty, name=name,
                 num_classes=_num_classes(name, num_classes, y, ty))


def load_folder(path: str, data_dir: Optional[str] = None, *,
                image_shape: Optional[Sequence[int]] = None,
                num_classes: int = 0, num_test: int = 0, seed: int = 0,
                fit: str = "center_crop", skip_bad_files: bool = False
                ) -> Dataset:
  """Loads `folder:DIR` (see `jaxkd.data.folder`).

  Raises:
    JaxkdError: no images, unreadable files (unless `skip_bad_files`),
      several channel counts or sizes without `image_shape`, a labels.csv
      naming missing files, unlabelled images.
  """
  from jaxkd.data.folder import FolderSource  # Pillow only when used
  spec = os.fspath(path)
  path = under_data_dir(spec, data_dir, os.path.isdir)
  check_inside(path, data_dir if path != spec else None, spec)
  if not os.path.isdir(path):
    raise JaxkdError(f"{path}: not a folder.")
  name = os.path.basename(os.path.normpath(path))
  train_dir, test_dir = os.path.join(path, "train"), os.path.join(path, "test")
  split = os.path.isdir(train_dir) and os.path.isdir(test_dir)
  opts = dict(image_shape=image_shape, fit=fit, skip_bad_files=skip_bad_files)
  x = FolderSource(train_dir if split else path, name=name, **opts)
  tx = ty = None
  if split:
    tx = FolderSource(test_dir, name=f"{name} test", class_names=x.class_names,
                      **dict(opts, image_shape=x.image_shape))
  for src in (x, tx):
    if src is not None and src.labels is None:
      raise JaxkdError(f"{src.root}: images without labels; give class "
                       "sub-folders or a labels.csv (file,label).")
    if src is not None and src.skipped:
      print(f"{src.root}: skipped {len(src.skipped)} unreadable file(s) "
            f"(first: {src.skipped[0][0]})")
  y = x.labels
  ty = None if tx is None else tx.labels
  x, y, tx, ty = _split_off(name, x, y, tx, ty, num_test, seed)
  classes = _base_classes(x)
  if classes and num_classes and num_classes != len(classes):
    raise JaxkdError(f"{path}: num_classes={num_classes} but the folder has "
                     f"{len(classes)} classes {list(classes)}.")
  n_cls = len(classes) if classes else _num_classes(name, num_classes, y, ty)
  return Dataset(x, y, tx, ty, name=name, class_names=classes,
                 num_classes=n_cls)


def _base_classes(src):
  base = getattr(src, "base", src)
  return getattr(base, "class_names", None)
