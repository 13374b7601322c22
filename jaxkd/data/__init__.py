"""Datasets as NumPy arrays, and the active-distillation pool split.

`load_dataset(name, data_dir=None, **options)` returns a `Dataset` (images
NHWC float32 in [0, 1], labels int32, train and test splits) for `digits`
(bundled, the offline default), `mnist` / `fashion_mnist` (IDX files,
`jaxkd.data.idx`), `cifar10` (python batches, `jaxkd.data.cifar`), `mnist5k`
(CSV, `jaxkd.data.csv`), `tfds:<name>`, and own files `npz:<path.npz>`
(`jaxkd.data.npz`) / `idx:<dir>` (`dataset_from_arrays` for arrays in
memory), and, read from disk in batches rather than loaded, `npy:<path>`
(memory-mapped) / `folder:<dir>` (image files) (`jaxkd.data.on_disk`,
`jaxkd.data.sources`).
`make_pools` cuts the train split into teacher-train / initial L / pool U.
"""

from jaxkd.data.arrays import as_images, as_labels, dataset_from_arrays
from jaxkd.data.cifar import load_cifar10, read_cifar_batch
from jaxkd.data.csv import load_mnist5k, read_mnist5k_csv
from jaxkd.data.datasets import (CIFAR10_CLASS_NAMES, DIGIT_CLASS_NAMES,
                                 FASHION_MNIST_CLASS_NAMES, OWN_FILE_PREFIXES,
                                 Dataset,
                                 dataset_loader, dataset_names, load_dataset,
                                 loader_options,
                                 load_digits_dataset, register_dataset,
                                 split_indices)
from jaxkd.data.idx import (find_idx_pairs, load_fashion_mnist, load_idx_dir,
                            load_idx_dataset, load_mnist, parse_idx, read_idx)
from jaxkd.data.npz import load_npz
from jaxkd.data.pool import Pools, check_overlap, make_pools, split_overlaps

__all__ = [
    "CIFAR10_CLASS_NAMES", "DIGIT_CLASS_NAMES", "FASHION_MNIST_CLASS_NAMES",
    "Dataset", "OWN_FILE_PREFIXES", "Pools", "as_images", "as_labels", "dataset_from_arrays",
    "dataset_loader", "dataset_names", "find_idx_pairs", "load_idx_dir",
    "load_npz", "loader_options", "split_overlaps", "check_overlap",
    "load_cifar10",
    "load_dataset", "load_digits_dataset", "load_fashion_mnist",
    "load_idx_dataset", "load_mnist", "load_mnist5k", "make_pools",
    "parse_idx", "read_cifar_batch", "read_idx", "read_mnist5k_csv",
    "register_dataset", "split_indices",
]
