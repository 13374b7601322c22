"""`tfds:<name>` datasets through `tensorflow_datasets`, as NumPy arrays.

The default path is `tfds.data_source`, TFDS's random-access reader over
ArrayRecord files: it decodes examples with NumPy and needs no TensorFlow.
Data prepared in the TFRecord format (the default of `tfds build` and
`tfds.load`) cannot be read that way; for it, `method="load"` (or the
automatic fallback) uses `tfds.load(..., batch_size=-1)` + `tfds.as_numpy`,
which needs TensorFlow installed.

With `lazy=True` the splits stay on disk: the images are
`jaxkd.data.grain_source.GrainSource`s over the `tfds.data_source` splits,
read (and decoded by TFDS) batch by batch; opening streams over each split
once for its labels (int32 [n], in memory), the shape check and the pixel
digests. Lazy mode needs the `data_source` path (ArrayRecord data).

Tests run `tfds.testing.mock_data`, which fakes `tfds.data_source` without
TensorFlow.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np

from jaxkd.data.datasets import Dataset
from jaxkd.data.grain_source import GrainSource
from jaxkd.validation import JaxkdError


def _import_tfds():
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise JaxkdError(
        "tfds: datasets need tensorflow-datasets (pip install "
        "'jaxkd[tfds]' or pip install tensorflow-datasets).") from e
  return tfds


def _has_tensorflow() -> bool:
  import importlib.util
  return importlib.util.find_spec("tensorflow") is not None


def _to_images(name: str, split: str, x: np.ndarray) -> np.ndarray:
  """uint8 [N, H, W(, C)] or float [0, 1] -> float32 [N, H, W, C]."""
  if x.ndim == 3:
    x = x[..., None]
  if x.ndim != 4:
    raise JaxkdError(
        f"tfds:{name} {split}: images of shape {x.shape[1:]} are not HxWxC.")
  if x.dtype == np.uint8:
    return x.astype(np.float32) / 255.0
  if np.issubdtype(x.dtype, np.floating):
    return x.astype(np.float32)
  raise JaxkdError(
      f"tfds:{name} {split}: images of dtype {x.dtype} are neither uint8 nor "
      "floating point.")


def _from_data_source(ds, name: str, split: str, image_key: str,
                      label_key: str) -> Tuple[np.ndarray, np.ndarray]:
  n = len(ds)
  if n == 0:
    raise JaxkdError(f"tfds:{name} split {split!r} is empty.")
  images, labels = [], []
  for i in range(n):  # each item: a dict of NumPy arrays, decoded by TFDS.
    example = ds[i]
    images.append(np.asarray(example[image_key]))
    labels.append(np.asarray(example[label_key]))
  return np.stack(images), np.stack(labels)


def _keys(info, image_key: Optional[str], label_key: Optional[str],
          name: str) -> Tuple[str, str]:
  supervised = info.supervised_keys or (None, None)
  image_key = image_key or supervised[0] or "image"
  label_key = label_key or supervised[1] or "label"
  features = info.features
  for key in (image_key, label_key):
    if features is not None and key not in features:
      raise JaxkdError(
          f"tfds:{name} has no feature {key!r} (features: "
          f"{sorted(features.keys())}); pass image_key= / label_key=.")
  return image_key, label_key


def _label_info(info, label_key: str, labels: Sequence[np.ndarray], name: str
                ) -> Tuple[int, Optional[Tuple[str, ...]]]:
  feature = info.features[label_key] if info.features is not None else None
  num_classes = getattr(feature, "num_classes", None)
  names = getattr(feature, "names", None)
  if not num_classes:
    num_classes = int(max(int(np.max(y)) for y in labels if y.size)) + 1
  return int(num_classes), (tuple(names) if names else None)


def load_tfds_dataset(name: str, data_dir: Optional[str] = None, *,
                      train_split: str = "train", test_split: str = "test",
                      image_key: Optional[str] = None,
                      label_key: Optional[str] = None,
                      download: bool = False, method: str = "auto",
                      builder_kwargs: Optional[Dict[str, Any]] = None,
                      lazy: bool = False) -> Dataset:
  """Loads a TFDS image-classification dataset into a `Dataset`.

  Args:
    name: the TFDS name, optionally with config/version
      (`mnist`, `cifar10`, `fashion_mnist:3.0.1`, ...).
    data_dir: the TFDS data folder (default: TFDS's own, `TFDS_DATA_DIR` or
      `~/tensorflow_datasets`).
    train_split, test_split: TFDS split strings (slices such as
      `"train[:10%]"` work).
    image_key, label_key: feature names; default: the dataset's
      `supervised_keys`, else "image" / "label".
    download: let TFDS download and prepare the data if it is not in
      `data_dir` (default False: jaxkd never touches the network unasked).
    method: "data_source" (no TensorFlow; needs ArrayRecord data), "load"
      (`tfds.load` + `tfds.as_numpy`; needs TensorFlow), or "auto": the
      first, falling back to the second for TFRecord data when TensorFlow is
      installed.
    builder_kwargs: passed to the TFDS builder (default for "data_source":
      `{"file_format": "array_record"}`).
    lazy: keep the images on disk as `GrainSource`s over the
      `tfds.data_source` splits (read in batches; opening streams over each
      split once, O(n H W C) time, O(n) memory) instead of float32 arrays
      (O(n H W C) memory). Needs the "data_source" path.

  Returns:
    A `Dataset` named "tfds:<name>", images float32 in [0, 1] (uint8 / 255):
    arrays, or with `lazy` sources that read the same values.

  Raises:
    JaxkdError: tensorflow-datasets missing, unknown dataset, data not
      prepared in `data_dir`, unreadable format, unexpected features.
  """
  if method not in ("auto", "data_source", "load"):
    raise JaxkdError(
        f"method must be 'auto', 'data_source' or 'load', got {method!r}.")
  if not name:
    raise JaxkdError("tfds: dataset name is empty (use e.g. 'tfds:mnist').")
  if not isinstance(lazy, bool):
    raise JaxkdError(f"lazy must be True or False, got {lazy!r}.")
  if lazy and method == "load":
    raise JaxkdError(f"tfds:{name}: lazy=True reads through tfds.data_source;"
                     " it cannot be combined with method='load'.")
  tfds = _import_tfds()
  data_dir = os.fspath(data_dir) if data_dir else None
  splits = [train_split, test_split]
  where = f" in {data_dir}" if data_dir else ""
  try:
    if method == "load":
      return _load_with_tf(tfds, name, data_dir, splits, image_key, label_key,
                           download, builder_kwargs)
    kwargs = dict(builder_kwargs or {"file_format": "array_record"})
    try:
      sources = tfds.data_source(name, split=splits, data_dir=data_dir,
                                 download=download, builder_kwargs=kwargs)
    except NotImplementedError as e:  # data prepared as TFRecord.
      if method == "auto" and _has_tensorflow() and not lazy:
        return _load_with_tf(tfds, name, data_dir, splits, image_key,
                             label_key, download, builder_kwargs)
      raise JaxkdError(
          f"tfds:{name}{where} is not stored in a random-access format "
          "(ArrayRecord), so it cannot be read without TensorFlow. Prepare it "
          "with `tfds build --file_format=array_record`, or install "
          f"tensorflow and pass method='load'. ({e})") from e
  except JaxkdError:
    raise
  except tfds.core.registered.DatasetNotFoundError as e:
    raise JaxkdError(f"tfds: unknown dataset {name!r}.") from e
  except (KeyError, AssertionError, FileNotFoundError) as e:
    raise JaxkdError(
        f"tfds:{name}: splits {splits} not found{where} (not prepared? pass "
        f"download=True, or data_dir=). ({e})") from e
  except ValueError as e:  # bad split strings, unknown config, ...
    raise JaxkdError(f"tfds:{name}: {e}") from e

  info = sources[0].dataset_info
  image_key, label_key = _keys(info, image_key, label_key, name)
  if lazy:
    return _lazy_dataset(name, info, sources, splits, image_key, label_key)
  arrays = [_from_data_source(ds, name, split, image_key, label_key)
            for ds, split in zip(sources, splits)]
  return _make_dataset(name, info, arrays, splits, label_key)


def _load_with_tf(tfds, name, data_dir, splits, image_key, label_key,
                  download, builder_kwargs) -> Dataset:
  """`tfds.load` path (TFRecord data); needs TensorFlow."""
  if not _has_tensorflow():
    raise JaxkdError(
        f"tfds:{name}: method='load' needs tensorflow, which is not "
        "installed; use method='data_source' with ArrayRecord data.")
  datasets, info = tfds.load(name, split=splits, data_dir=data_dir,
                             download=download, batch_size=-1, with_info=True,
                             builder_kwargs=builder_kwargs)
  image_key, label_key = _keys(info, image_key, label_key, name)
  arrays = []
  for batch in datasets:
    batch = tfds.as_numpy(batch)
    arrays.append((np.asarray(batch[image_key]),
                   np.asarray(batch[label_key])))
  return _make_dataset(name, info, arrays, splits, label_key)


def _lazy_dataset(name, info, sources, splits, image_key, label_key
                  ) -> Dataset:
  """`GrainSource` splits over `tfds.data_source` (see `lazy`)."""
  images = []
  for ds, split in zip(sources, splits):
    if len(ds) == 0:
      raise JaxkdError(f"tfds:{name} split {split!r} is empty.")
    images.append(GrainSource(ds, image_key=image_key, label_key=label_key,
                              name=f"tfds:{name} {split}"))
  train, test = images
  if train.image_shape != test.image_shape:
    raise JaxkdError(
        f"tfds:{name}: {splits[0]} images are {train.image_shape} but "
        f"{splits[1]} images are {test.image_shape} (H, W, C must match).")
  num_classes, class_names = _label_info(info, label_key,
                                         [train.labels, test.labels], name)
  return Dataset(train, train.labels, test, test.labels,
                 num_classes=num_classes, name=f"tfds:{name}",
                 class_names=class_names)


def _make_dataset(name, info, arrays, splits, label_key) -> Dataset:
  num_classes, class_names = _label_info(info, label_key,
                                         [y for _, y in arrays], name)
  (train_x, train_y), (test_x, test_y) = arrays
  for split, y in ((splits[0], train_y), (splits[1], test_y)):
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
      raise JaxkdError(
          f"tfds:{name} {split}: labels must be integer class ids, got "
          f"{y.dtype} of shape {y.shape}.")
  return Dataset(_to_images(name, splits[0], train_x), train_y,
                 _to_images(name, splits[1], test_x), test_y,
                 num_classes=num_classes, name=f"tfds:{name}",
                 class_names=class_names)
