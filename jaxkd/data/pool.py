"""Pool builder for active distillation.

The train split of a `Dataset` is cut into three disjoint parts, as in the
active-distillation papers:

* teacher-train: the data the teacher is trained on (in practice the
  teacher's owner holds it; the student never sees it);
* initial L: a first random batch the student pays the teacher for;
* unlabelled pool U: the candidates each selection round picks from;

and the test split (optionally subsampled) evaluates both networks. For
example Fashion-MNIST 30,000 / 500 / 5,000 with the 10,000 test images.

References:
  D. Wang, Y. Li, L. Wang, B. Gong. Neural networks are more productive
    teachers than human raters: Active mixup for data-efficient knowledge
    distillation from a blackbox model. CVPR 2020.
"""

from __future__ import annotations

import hashlib
from typing import Any, Dict, NamedTuple, Optional

import numpy as np

from jaxkd.data.sources import concat, is_source, take
from jaxkd.data.datasets import Dataset
from jaxkd.validation import JaxkdError


class Pools(NamedTuple):
  """Disjoint teacher-train / initial L / pool U splits plus the test split.

  Images are [n, H, W, C] float32 and labels [n] int32 (gathered copies;
  for a dataset on disk, `jaxkd.data.sources.SubsetSource` views);
  each `*_indices` holds the int64 positions in the dataset's train split
  (or test split for `test_indices`) the rows came from.
  """

  teacher_train_images: np.ndarray
  teacher_train_labels: np.ndarray
  teacher_train_indices: np.ndarray
  initial_images: np.ndarray
  initial_labels: np.ndarray
  initial_indices: np.ndarray
  pool_images: np.ndarray
  pool_labels: np.ndarray
  pool_indices: np.ndarray
  test_images: np.ndarray
  test_labels: np.ndarray
  test_indices: np.ndarray
  overlap: Optional[dict] = None  # split_overlaps counts (all 0 if clean)

  def sizes(self) -> dict:
    """{"teacher_train": n, "initial": n, "pool": n, "test": n}."""
    return {"teacher_train": len(self.teacher_train_indices),
            "initial": len(self.initial_indices),
            "pool": len(self.pool_indices), "test": len(self.test_indices)}


def _count(name: str, value: Any, allow_none: bool = False) -> Optional[int]:
  if value is None and allow_none:
    return None
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
    raise JaxkdError(f"{name} must be an int, got {value!r}.")
  if value < 0:
    raise JaxkdError(f"{name} must be >= 0, got {value}.")
  return int(value)


def _image_hashes(images: Any) -> set:
  """blake2b digests of each image's bytes ([n, ...] -> n digests); a
  source streams its own (`ImageSource.item_digests`)."""
  if len(images) == 0:  # an empty split (e.g. initial=0) shares nothing
    return set()
  if is_source(images):
    return set(images.item_digests())
  flat = np.ascontiguousarray(images).reshape(len(images), -1)
  return {hashlib.blake2b(row.tobytes(), digest_size=16).digest()
          for row in flat}


def split_overlaps(**splits: np.ndarray) -> Dict[str, int]:
  """Distinct images shared by each pair of splits (exact byte equality).

  Args:
    **splits: name -> images [n, H, W, C] (same dtype for all).

  Returns:
    {"a&b": count} for each pair of names, in argument order.

  Example:
    >>> x = np.arange(4, dtype=np.float32).reshape(4, 1, 1, 1)
    >>> split_overlaps(train=x[:3], test=x[2:])
    {'train&test': 1}
  """
  hashes = {k: _image_hashes(v) for k, v in splits.items()}
  names = list(hashes)
  return {f"{a}&{b}": len(hashes[a] & hashes[b])
          for i, a in enumerate(names) for b in names[i + 1:]}


def check_overlap(overlap: Dict[str, int], allow_overlap: bool,
                  what: str = "") -> None:
  """One-line JaxkdError naming the counts unless all are 0 or allowed."""
  if allow_overlap or not any(overlap.values()):
    return
  counts = ", ".join(f"{k} {v}" for k, v in overlap.items())
  raise JaxkdError(
      f"{what}splits share images ({counts}): the student would be tested "
      "on (or the teacher trained on) the images it learns from; remove "
      "the duplicates, or set allow_overlap=True to run anyway.")


def make_pools(dataset: Dataset, *, teacher_train: int, initial: int,
               pool: Optional[int], test: Optional[int] = None,
               seed: int, allow_overlap: bool = False) -> Pools:
  """Splits a dataset into teacher-train / initial L / pool U / test.

  One permutation `np.random.default_rng(seed).permutation(num_train)` of
  the train split is cut in order: the first `teacher_train` indices, the
  next `initial`, the next `pool`; leftovers are unused. The test split is
  used whole (in order) when `test` is None, else `test` of its images are
  drawn without replacement (sorted) with `np.random.default_rng([seed, 1])`.

  Args:
    dataset: the `Dataset` to split.
    teacher_train: number of teacher-training images (may be 0).
    initial: size of the initial labelled set L.
    pool: size of the unlabelled pool U; None takes every image left.
    test: number of test images, or None (or 0) for the whole test split.
    seed: seed of the split; the same seed gives the same split.
    allow_overlap: run even when splits share images.

  Every image is hashed: teacher-train, pool (initial L + U) and test must
  not share an image (a file copied under two names leaks the test set into
  training). The counts are in `Pools.overlap`.

  Returns:
    `Pools` with gathered arrays and their original indices.

  Raises:
    JaxkdError: negative or non-integer sizes, sizes that do not fit
      (the message gives the numbers), or shared images (the message gives
      the counts) unless `allow_overlap`.

  Example:
    >>> from jaxkd.data import load_dataset
    >>> p = make_pools(load_dataset("digits"), teacher_train=700, initial=50,
    ...                pool=547, seed=0)
    >>> p.sizes()
    {'teacher_train': 700, 'initial': 50, 'pool': 547, 'test': 500}
  """
  if not isinstance(dataset, Dataset):
    raise JaxkdError(
        f"make_pools needs a jaxkd.data.Dataset, got {type(dataset).__name__}.")
  a = _count("teacher_train", teacher_train)
  b = _count("initial", initial)
  c = _count("pool", pool, allow_none=True)
  t = _count("test", test, allow_none=True) or None
  n = dataset.num_train
  if c is None:
    c = n - a - b
    if c < 0:
      raise JaxkdError(
          f"teacher_train + initial = {a} + {b} = {a + b} exceeds the {n} "
          f"training images of {dataset.name!r}.")
  if a + b + c > n:
    raise JaxkdError(
        f"teacher_train + initial + pool = {a} + {b} + {c} = {a + b + c} "
        f"exceeds the {n} training images of {dataset.name!r}.")
  if t is not None and t > dataset.num_test:
    raise JaxkdError(
        f"test={t} exceeds the {dataset.num_test} test images of "
        f"{dataset.name!r}.")
  perm = np.random.default_rng(seed).permutation(n)
  parts = np.split(perm[:a + b + c], [a, a + b])
  if t is None:
    test_idx = np.arange(dataset.num_test)
  else:
    test_idx = np.sort(np.random.default_rng([seed, 1]).choice(
        dataset.num_test, size=t, replace=False))
  out = []
  for idx in parts:
    out += [take(dataset.train_images, idx),
            dataset.train_labels[idx], idx.astype(np.int64)]
  out += [take(dataset.test_images, test_idx),
          dataset.test_labels[test_idx], test_idx.astype(np.int64)]
  overlap = split_overlaps(teacher_train=out[0],
                           pool=concat(out[3], out[6]),
                           test=out[9])
  check_overlap(overlap, allow_overlap, f"{dataset.name}: ")
  return Pools(*out, overlap=overlap)
