"""Datasets as NumPy arrays, and the active-distillation pool split.

`load_dataset(name, data_dir=None, **options)` returns a `Dataset` (images
NHWC float32 in [0, 1], labels int32, train and test splits) for `digits`
(bundled, the offline default), `mnist` / `fashion_mnist` (IDX files),
`cifar10` (python batches), `mnist5k` (CSV), `tfds:<name>`, and own files
`npz:<path.npz>` / `idx:<dir>` (`dataset_from_arrays` for arrays in
memory).
`make_pools` cuts the train split into teacher-train / initial L / pool U;
`iterate_batches` yields seeded minibatch indices.
"""

from jaxkd.data.arrays import as_images, as_labels, dataset_from_arrays
from jaxkd.data.datasets import (CIFAR10_CLASS_NAMES, DIGIT_CLASS_NAMES,
                                 FASHION_MNIST_CLASS_NAMES, Dataset,
                                 dataset_loader, dataset_names, load_dataset,
                                 loader_options,
                                 load_digits_dataset, register_dataset,
                                 split_indices)
from jaxkd.data.local import (load_cifar10, load_fashion_mnist,
                              load_idx_dataset, load_mnist, load_mnist5k,
                              parse_idx, read_cifar_batch, read_idx,
                              read_mnist5k_csv)
from jaxkd.data.files import find_idx_pairs, load_idx_dir, load_npz
from jaxkd.data.pool import (Pools, check_overlap, iterate_batches,
                             make_pools, split_overlaps)

__all__ = [
    "CIFAR10_CLASS_NAMES", "DIGIT_CLASS_NAMES", "FASHION_MNIST_CLASS_NAMES",
    "Dataset", "Pools", "as_images", "as_labels", "dataset_from_arrays",
    "dataset_loader", "dataset_names", "find_idx_pairs", "load_idx_dir",
    "load_npz", "loader_options", "split_overlaps", "check_overlap",
    "iterate_batches", "load_cifar10",
    "load_dataset", "load_digits_dataset", "load_fashion_mnist",
    "load_idx_dataset", "load_mnist", "load_mnist5k", "make_pools",
    "parse_idx", "read_cifar_batch", "read_idx", "read_mnist5k_csv",
    "register_dataset", "split_indices",
]
