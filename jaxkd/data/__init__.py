"""Datasets as NumPy arrays, and the active-distillation pool split.

`load_dataset(name, data_dir=None, **options)` returns a `Dataset` (images
NHWC float32 in [0, 1], labels int32, train and test splits) for `digits`
(bundled, the offline default), `mnist` / `fashion_mnist` (IDX files),
`cifar10` (python batches), `mnist5k` (CSV) and `tfds:<name>`.
`make_pools` cuts the train split into teacher-train / initial L / pool U;
`iterate_batches` yields seeded minibatch indices.
"""

from jaxkd.data.datasets import (CIFAR10_CLASS_NAMES, DIGIT_CLASS_NAMES,
                                 FASHION_MNIST_CLASS_NAMES, Dataset,
                                 dataset_names, load_dataset,
                                 load_digits_dataset, register_dataset,
                                 split_indices)
from jaxkd.data.local import (load_cifar10, load_fashion_mnist,
                              load_idx_dataset, load_mnist, load_mnist5k,
                              parse_idx, read_cifar_batch, read_idx,
                              read_mnist5k_csv)
from jaxkd.data.pool import Pools, iterate_batches, make_pools

__all__ = [
    "CIFAR10_CLASS_NAMES", "DIGIT_CLASS_NAMES", "FASHION_MNIST_CLASS_NAMES",
    "Dataset", "Pools", "dataset_names", "iterate_batches", "load_cifar10",
    "load_dataset", "load_digits_dataset", "load_fashion_mnist",
    "load_idx_dataset", "load_mnist", "load_mnist5k", "make_pools",
    "parse_idx", "read_cifar_batch", "read_idx", "read_mnist5k_csv",
    "register_dataset", "split_indices",
]
