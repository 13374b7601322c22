"""A `Dataset` from plain arrays: image layouts, dtypes and label checks.

`dataset_from_arrays` is what the `npz:` and `idx:` loaders (and any user
with arrays in memory) call. Images may be

* [N, H, W] (grey), [N, H, W, C], or flat [N, D] with `image_shape`
  ((H, W) or (H, W, C), H W C = D);
* uint8 (divided by 255) or floating point already in [0, 1].

Labels are [N] integers (or [N, 1], or floats holding integers). Without
test arrays, `num_test` images are split off with `split_indices(n,
num_test, seed)`. NaN/inf, values outside [0, 1], labels outside
[0, num_classes) and count or shape mismatches are each one-line
`JaxkdError`s naming the array.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence, Tuple

import numpy as np

from jaxkd.data.datasets import Dataset, split_indices
from jaxkd.validation import JaxkdError, is_int


def image_shape_arg(image_shape: Optional[Sequence[int]]
                    ) -> Optional[Tuple[int, ...]]:
  """(H, W, C) from (H, W) or (H, W, C); None for None or (); raises for
  anything else."""
  if image_shape is None or len(tuple(image_shape)) == 0:
    return None
  shape = tuple(image_shape)
  if len(shape) not in (2, 3) or not all(
      is_int(d) and d > 0
      for d in shape):
    raise JaxkdError(
        f"image_shape must be (H, W) or (H, W, C) of positive ints, got "
        f"{image_shape!r}.")
  return tuple(int(d) for d in shape) + ((1,) if len(shape) == 2 else ())


def as_images(x: Any, what: str = "images",
              image_shape: Optional[Sequence[int]] = None) -> np.ndarray:
  """Images [N, H, W, C] float32 from [N, H, W], [N, H, W, C] or [N, D].

  uint8 pixels are divided by 255; floating pixels are kept (the `Dataset`
  then checks they are finite and in [0, 1]); other dtypes are refused.

  Args:
    x: the image array.
    what: its name in error messages.
    image_shape: (H, W) or (H, W, C); needed for flat [N, D] images, checked
      against the others.

  Returns:
    [N, H, W, C] float32 (NaN/inf kept for the caller's check).

  Example:
    >>> as_images(np.full((2, 6), 255, np.uint8), image_shape=(2, 3)).shape
    (2, 2, 3, 1)
  """
  x = np.asarray(x)
  shape = image_shape_arg(image_shape)
  if x.dtype == np.uint8:
    x = x.astype(np.float32) / 255.0
  elif np.issubdtype(x.dtype, np.floating):
    x = x.astype(np.float32)
  else:
    raise JaxkdError(
        f"{what} must be uint8 (0..255) or floating point in [0, 1], got "
        f"dtype {x.dtype}.")
  if x.ndim == 2:
    if shape is None:
      raise JaxkdError(
          f"{what} are flat {x.shape}: give image_shape, e.g. "
          f"--config.image_shape='(28, 28)' for 784 values per image.")
    if int(np.prod(shape)) != x.shape[1]:
      raise JaxkdError(
          f"{what} have {x.shape[1]} values per image but image_shape "
          f"{shape} holds {int(np.prod(shape))}.")
    return x.reshape((len(x),) + shape)
  if x.ndim == 3:
    x = x[..., None]
  if x.ndim != 4:
    raise JaxkdError(
        f"{what} must be [N, H, W], [N, H, W, C] or flat [N, D], got shape "
        f"{x.shape}.")
  if shape is not None and x.shape[1:] != shape:
    raise JaxkdError(
        f"{what} have image shape {x.shape[1:]} but image_shape is {shape}.")
  return x


def as_labels(y: Any, what: str = "labels") -> np.ndarray:
  """Labels [N] int32 from [N] or [N, 1] integers (or integral floats)."""
  y = np.asarray(y)
  if y.ndim == 2 and y.shape[1] == 1:
    y = y[:, 0]
  if y.ndim != 1:
    raise JaxkdError(f"{what} must be [N] class indices, got shape {y.shape}.")
  if y.dtype == np.bool_ or not (np.issubdtype(y.dtype, np.integer)
                                 or np.issubdtype(y.dtype, np.floating)):
    raise JaxkdError(f"{what} must be integers, got dtype {y.dtype}.")
  if np.issubdtype(y.dtype, np.floating):
    if y.size and (not np.all(np.isfinite(y)) or np.any(y != np.round(y))):
      raise JaxkdError(f"{what} must be integers, got NaN, inf or fractions.")
  if y.size and y.min() < 0:
    raise JaxkdError(f"{what} must be >= 0, got {y.min():g}.")
  return y.astype(np.int64)


def dataset_from_arrays(train_images: Any, train_labels: Any,
                        test_images: Any = None, test_labels: Any = None, *,
                        num_test: int = 0, seed: int = 0,
                        image_shape: Optional[Sequence[int]] = None,
                        num_classes: int = 0, name: str = "arrays",
                        class_names: Optional[Sequence[str]] = None
                        ) -> Dataset:
  """A validated `Dataset` from arrays in any of the layouts above.

  Args:
    train_images, train_labels: the images and their labels (all of them
      when there are no test arrays).
    test_images, test_labels: the test split, or both None to split
      `num_test` images off the train arrays.
    num_test: test images to split off (only without test arrays; > 0).
    seed: seed of that split (`split_indices`).
    image_shape: (H, W) or (H, W, C) for flat images; checked otherwise.
    num_classes: number of classes; 0 infers max label + 1.
    name: dataset name for messages.
    class_names: optional.

  Returns:
    A `Dataset` (images float32 [N, H, W, C] in [0, 1], labels int32).

  Example:
    >>> ds = dataset_from_arrays(np.zeros((10, 4, 4), np.uint8),
    ...                          np.arange(10) % 3, num_test=4)
    >>> ds.num_train, ds.num_test, ds.image_shape, ds.num_classes
    (6, 4, (4, 4, 1), 3)
  """
  if (test_images is None) != (test_labels is None):
    raise JaxkdError(f"{name}: give both test_images and test_labels, or "
                     "neither.")
  x = as_images(train_images, f"{name} train images", image_shape)
  y = as_labels(train_labels, f"{name} train labels")
  if len(x) != len(y):
    raise JaxkdError(f"{name}: {len(x)} train images but {len(y)} train "
                     "labels.")
  if test_images is None:
    if not num_test:
      raise JaxkdError(
          f"{name} has no test split: set split.test > 0 to split that many "
          "test images off.")
    train, test = split_indices(len(x), num_test, seed)
    x, y, tx, ty = x[train], y[train], x[test], y[test]
  else:
    tx = as_images(test_images, f"{name} test images", image_shape)
    ty = as_labels(test_labels, f"{name} test labels")
    if len(tx) != len(ty):
      raise JaxkdError(f"{name}: {len(tx)} test images but {len(ty)} test "
                       "labels.")
  if not num_classes:
    num_classes = int(max(y.max(initial=0), ty.max(initial=0))) + 1
    absent = np.setdiff1d(np.arange(num_classes), np.concatenate([y, ty]))
    if len(absent):
      raise JaxkdError(
          f"{name}: labels run 0..{num_classes - 1} but {len(absent)} of those "
          f"classes never occur (e.g. {int(absent[0])}): a stray label? Fix "
          "the labels, or set num_classes to say how many classes there are.")
  return Dataset(x, y, tx, ty, num_classes=num_classes, name=name,
                 class_names=class_names)
