"""Tests for jaxkd.data: loaders (on tiny files written here) and pools.

References are built independently in the tests: IDX headers packed with
`struct`, CIFAR rows unpacked with explicit loops, CSV rows that encode their
own row number, and pool splits checked by set algebra.
"""

import gzip
import hashlib
import os
import pickle
import struct

import numpy as np
import pytest

from jaxkd import data
from jaxkd.data import idx as local
from jaxkd.validation import JaxkdError

SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")


# ------------------------------------------------------------------ helpers --

def idx_bytes(arr: np.ndarray, magic: int = None) -> bytes:
  """Independent IDX writer: magic, big-endian dims, raw uint8 values."""
  arr = np.asarray(arr, np.uint8)
  if magic is None:
    magic = 0x800 + arr.ndim
  return (struct.pack(">I", magic)
          + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes())


def write_idx_dir(path, rng, n_train=5, n_test=3, hw=(3, 4), gz=True):
  arrays = {
      "train-images-idx3-ubyte": rng.integers(0, 256, (n_train,) + hw),
      "train-labels-idx1-ubyte": rng.integers(0, 10, n_train),
      "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test,) + hw),
      "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test),
  }
  for name, arr in arrays.items():
    raw = idx_bytes(arr)
    fname = name + (".gz" if gz else "")
    with open(os.path.join(path, fname), "wb") as f:
      f.write(gzip.compress(raw) if gz else raw)
  return {k: np.asarray(v, np.uint8) for k, v in arrays.items()}


@pytest.fixture
def idx_dir(tmp_path):
  arrays = write_idx_dir(tmp_path, np.random.default_rng(0))
  return tmp_path, arrays


# --------------------------------------------------------------------- IDX --

def test_idx_round_trip_exact(idx_dir):
  path, arrays = idx_dir
  ds = data.load_dataset("mnist", data_dir=str(path))
  assert ds.train_images.shape == (5, 3, 4, 1)
  assert ds.test_images.shape == (3, 3, 4, 1)
  assert ds.train_images.dtype == np.float32
  assert ds.train_labels.dtype == np.int32
  # Exact pixel values: uint8 / 255 in float32, and back to the same bytes.
  ref = arrays["train-images-idx3-ubyte"].astype(np.float32) / np.float32(255)
  np.testing.assert_array_equal(ds.train_images[..., 0], ref)
  np.testing.assert_array_equal(
      np.rint(ds.test_images[..., 0] * 255).astype(np.uint8),
      arrays["t10k-images-idx3-ubyte"])
  np.testing.assert_array_equal(ds.train_labels,
                                arrays["train-labels-idx1-ubyte"])
  np.testing.assert_array_equal(ds.test_labels,
                                arrays["t10k-labels-idx1-ubyte"])
  assert ds.num_classes == 10 and ds.name == "mnist"
  fashion = data.load_dataset("fashion_mnist", data_dir=str(path))
  assert fashion.class_names[0] == "T-shirt/top"


def test_idx_uncompressed_files(tmp_path):
  arrays = write_idx_dir(tmp_path, np.random.default_rng(1), gz=False)
  ds = data.load_dataset("mnist", data_dir=str(tmp_path))
  np.testing.assert_array_equal(
      np.rint(ds.train_images[..., 0] * 255).astype(np.uint8),
      arrays["train-images-idx3-ubyte"])


def test_parse_idx_other_dtype():
  values = np.array([[1.5, -2.0], [3.25, 0.0]], ">f4")
  raw = struct.pack(">I", 0x0D02) + struct.pack(">2I", 2, 2) + values.tobytes()
  out = data.parse_idx(raw)
  np.testing.assert_array_equal(out, values.astype(np.float32))
  assert out.dtype == np.float32


def _corrupt(path, case):
  img = os.path.join(path, "train-images-idx3-ubyte.gz")
  lab = os.path.join(path, "train-labels-idx1-ubyte.gz")
  if case == "bad_gzip":
    with open(img, "wb") as f:
      f.write(b"this is not gzip data at all")
    return img, "gzip"
  if case == "gzip_crc":  # valid header, flipped payload bytes.
    raw = bytearray(open(img, "rb").read())
    raw[-12] ^= 0xFF
    raw[-6] ^= 0xFF
    with open(img, "wb") as f:
      f.write(bytes(raw))
    return img, "gzip"
  if case == "truncated_gzip":
    raw = open(img, "rb").read()
    with open(img, "wb") as f:
      f.write(raw[:len(raw) // 2])
    return img, "truncated"
  if case == "truncated_idx":
    raw = idx_bytes(np.zeros((5, 3, 4)))
    with open(img, "wb") as f:
      f.write(gzip.compress(raw[:-7]))
    return img, "truncated"
  if case == "trailing_bytes":
    with open(img, "wb") as f:
      f.write(gzip.compress(idx_bytes(np.zeros((5, 3, 4))) + b"xx"))
    return img, "trailing"
  if case == "wrong_magic":  # a label file where images belong.
    with open(img, "wb") as f:
      f.write(gzip.compress(idx_bytes(np.zeros(5), magic=2049)))
    return img, "magic"
  if case == "missing":
    os.remove(lab)
    return "train-labels-idx1-ubyte.gz", "missing"
  if case == "count_mismatch":
    with open(lab, "wb") as f:
      f.write(gzip.compress(idx_bytes(np.zeros(4))))
    return lab, "4 labels"
  if case == "label_range":
    with open(lab, "wb") as f:
      f.write(gzip.compress(idx_bytes(np.full(5, 10))))
    return lab, "label 10"
  raise AssertionError(case)


@pytest.mark.parametrize("case", [
    "bad_gzip", "gzip_crc", "truncated_gzip", "truncated_idx",
    "trailing_bytes", "wrong_magic", "missing", "count_mismatch",
    "label_range"])
def test_idx_corrupt_files_raise(idx_dir, case):
  path, _ = idx_dir
  fname, phrase = _corrupt(str(path), case)
  with pytest.raises(JaxkdError) as err:
    data.load_dataset("mnist", data_dir=str(path))
  msg = str(err.value)
  assert fname in msg and phrase in msg, msg


def test_idx_missing_dir_and_data_dir():
  with pytest.raises(JaxkdError, match="needs data_dir"):
    data.load_dataset("mnist")
  with pytest.raises(JaxkdError, match="not a directory"):
    data.load_dataset("fashion_mnist", data_dir="/nonexistent/jaxkd/dir")


def test_idx_md5(idx_dir, monkeypatch):
  path, _ = idx_dir
  with pytest.raises(JaxkdError, match="md5 .* does not match"):
    data.load_dataset("mnist", data_dir=str(path), verify_md5=True)
  with pytest.warns(UserWarning, match="published md5"):
    data.load_dataset("mnist", data_dir=str(path), verify_md5="warn")
  with pytest.raises(JaxkdError, match="verify_md5"):
    data.load_dataset("mnist", data_dir=str(path), verify_md5="maybe")
  # With the md5s of the files just written, verification passes.
  md5s = {f: hashlib.md5(open(os.path.join(path, f), "rb").read()).hexdigest()
          for f in os.listdir(path)}
  monkeypatch.setitem(local.PUBLISHED_MD5, "mnist", md5s)
  data.load_dataset("mnist", data_dir=str(path), verify_md5="raise")


# ----------------------------------------------------------------- CIFAR-10 --

def cifar_reference(rows: np.ndarray) -> np.ndarray:
  """Independent CHW-row -> HWC unpacking with explicit indexing."""
  out = np.zeros((len(rows), 32, 32, 3), np.uint8)
  for i, row in enumerate(rows):
    for c in range(3):
      for h in range(32):
        out[i, h, :, c] = row[c * 1024 + h * 32:c * 1024 + h * 32 + 32]
  return out


def write_cifar(root, rng, per_batch=2, n_test=3, str_keys=False):
  os.makedirs(root, exist_ok=True)
  written = {}
  names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
  for name in names:
    n = n_test if name == "test_batch" else per_batch
    rows = rng.integers(0, 256, (n, 3072)).astype(np.uint8)
    labels = rng.integers(0, 10, n).tolist()
    key = (lambda s: s) if str_keys else (lambda s: s.encode())
    with open(os.path.join(root, name), "wb") as f:
      pickle.dump({key("data"): rows, key("labels"): labels,
                   key("batch_label"): key(name)}, f, protocol=2)
    written[name] = (rows, labels)
  with open(os.path.join(root, "batches.meta"), "wb") as f:
    pickle.dump({b"label_names": [f"c{i}".encode() for i in range(10)]}, f)
  return written


def test_cifar_round_trip_exact(tmp_path):
  written = write_cifar(tmp_path / "cifar-10-batches-py",
                        np.random.default_rng(0))
  ds = data.load_dataset("cifar10", data_dir=str(tmp_path))
  assert ds.train_images.shape == (10, 32, 32, 3)
  assert ds.test_images.shape == (3, 32, 32, 3)
  train_rows = np.concatenate([written[f"data_batch_{i}"][0]
                               for i in range(1, 6)])
  train_labels = sum([written[f"data_batch_{i}"][1] for i in range(1, 6)], [])
  np.testing.assert_array_equal(
      np.rint(ds.train_images * 255).astype(np.uint8),
      cifar_reference(train_rows))
  np.testing.assert_array_equal(
      ds.test_images,
      cifar_reference(written["test_batch"][0]).astype(np.float32) / 255)
  np.testing.assert_array_equal(ds.train_labels, train_labels)
  np.testing.assert_array_equal(ds.test_labels, written["test_batch"][1])
  assert ds.class_names == tuple(f"c{i}" for i in range(10))


def test_cifar_flat_dir_str_keys(tmp_path):
  written = write_cifar(tmp_path, np.random.default_rng(1), str_keys=True)
  images, labels = data.read_cifar_batch(str(tmp_path / "test_batch"))
  np.testing.assert_array_equal(images,
                                cifar_reference(written["test_batch"][0]))
  np.testing.assert_array_equal(labels, written["test_batch"][1])


class _Evil:
  def __reduce__(self):
    return (os.system, ("echo pwned",))


@pytest.mark.parametrize("case", ["missing", "truncated", "wrong_shape",
                                  "no_labels", "evil_pickle", "label_range"])
def test_cifar_corrupt_raise(tmp_path, case):
  write_cifar(tmp_path, np.random.default_rng(2))
  target = os.path.join(tmp_path, "data_batch_3")
  if case == "missing":
    os.remove(target)
    phrase = "missing data_batch_3"
  elif case == "truncated":
    raw = open(target, "rb").read()
    open(target, "wb").write(raw[:100])
    phrase = "not a readable CIFAR batch"
  elif case == "wrong_shape":
    pickle.dump({b"data": np.zeros((2, 3000), np.uint8), b"labels": [0, 1]},
                open(target, "wb"))
    phrase = "[N, 3072]"
  elif case == "no_labels":
    pickle.dump({b"data": np.zeros((2, 3072), np.uint8)}, open(target, "wb"))
    phrase = "no 'labels'"
  elif case == "evil_pickle":
    pickle.dump({b"data": _Evil(), b"labels": [0]}, open(target, "wb"))
    phrase = "refusing to load global"
  else:
    pickle.dump({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]},
                open(target, "wb"))
    phrase = "labels must lie in"
  with pytest.raises(JaxkdError) as err:
    data.load_dataset("cifar10", data_dir=str(tmp_path))
  assert "data_batch_3" in str(err.value) and phrase in str(err.value)


# ------------------------------------------------------------------- digits --

def test_digits_shapes_range_and_split():
  from sklearn.datasets import load_digits
  ds = data.load_dataset("digits")
  assert ds.train_images.shape == (1297, 8, 8, 1)
  assert ds.test_images.shape == (500, 8, 8, 1)
  assert ds.train_images.dtype == np.float32
  assert 0.0 <= ds.train_images.min() and ds.train_images.max() == 1.0
  # Train + test is exactly sklearn's data / 16 with its labels, reordered.
  ref = load_digits()
  ref_rows = np.concatenate([ref.images.reshape(-1, 64) / 16.0,
                             ref.target[:, None]], 1)
  got_rows = np.concatenate([
      np.concatenate([ds.train_images, ds.test_images]).reshape(-1, 64),
      np.concatenate([ds.train_labels, ds.test_labels])[:, None]], 1)
  sort = lambda a: a[np.lexsort(a.T[::-1])]
  np.testing.assert_allclose(sort(got_rows), sort(ref_rows), atol=1e-7)
  again = data.load_dataset("digits")
  np.testing.assert_array_equal(again.test_labels, ds.test_labels)
  other = data.load_dataset("digits", seed=1, test_size=300)
  assert other.num_test == 300
  assert not np.array_equal(other.test_labels[:300], ds.test_labels[:300])


# ------------------------------------------------------------------ mnist5k --

def write_mnist5k(path, n=20):
  """Rows sorted by class; pixel 0 holds the row number, pixel 1 the label."""
  rows = np.zeros((n, 785), np.int64)
  rows[:, 0] = np.arange(n)
  rows[:, -1] = np.sort(np.arange(n) % 10)
  rows[:, 1] = rows[:, -1]
  rows[:, 2:784] = np.random.default_rng(0).integers(0, 256, (n, 782))
  text = "\n".join(",".join(map(str, r)) for r in rows) + "\n"
  with gzip.open(path, "wt") as f:
    f.write(text)
  return rows


def test_mnist5k_tiny_file(tmp_path):
  rows = write_mnist5k(tmp_path / "mnist_5k.csv.gz")
  ds = data.load_dataset("mnist5k", data_dir=str(tmp_path), num_test=5, seed=3)
  assert ds.train_images.shape == (15, 28, 28, 1)
  assert ds.test_images.shape == (5, 28, 28, 1)
  images = np.concatenate([ds.train_images, ds.test_images])
  labels = np.concatenate([ds.train_labels, ds.test_labels])
  row_ids = np.rint(images[:, 0, 0, 0] * 255).astype(int)
  assert sorted(row_ids) == list(range(20))  # a permutation of all rows.
  assert not np.array_equal(row_ids, np.arange(20))  # shuffled.
  np.testing.assert_array_equal(labels, rows[row_ids, -1])
  np.testing.assert_array_equal(
      np.rint(images.reshape(20, 784) * 255).astype(np.int64),
      rows[row_ids, :784])
  # The file itself may be passed as data_dir; same seed, same split.
  again = data.load_dataset("mnist5k",
                            data_dir=str(tmp_path / "mnist_5k.csv.gz"),
                            num_test=5, seed=3)
  np.testing.assert_array_equal(again.test_images, ds.test_images)
  with pytest.raises(JaxkdError, match="md5"):
    data.load_dataset("mnist5k", data_dir=str(tmp_path), num_test=5,
                      verify_md5=True)


@pytest.mark.parametrize("content,phrase", [
    ("1,2,3\n", "785 values"),
    ("a,b\n", "CSV of integers"),
    (",".join(["300"] * 784 + ["1"]) + "\n", "0..255"),
])
def test_mnist5k_bad_file(tmp_path, content, phrase):
  with gzip.open(tmp_path / "mnist_5k.csv.gz", "wt") as f:
    f.write(content)
  with pytest.raises(JaxkdError, match=phrase):
    data.load_dataset("mnist5k", data_dir=str(tmp_path))
  with pytest.raises(JaxkdError, match="file not found"):
    data.load_dataset("mnist5k", data_dir=str(tmp_path / "nowhere"))


@pytest.mark.skipif(
    not os.path.isfile(os.path.join(SHARED, "mnist_5k", "mnist_5k.csv.gz")),
    reason="shared mnist_5k data not present")
def test_mnist5k_real_file_smoke():
  ds = data.load_dataset("mnist5k", data_dir=os.path.join(SHARED, "mnist_5k"),
                         verify_md5=True)
  assert ds.train_images.shape == (4000, 28, 28, 1)
  assert ds.test_images.shape == (1000, 28, 28, 1)
  counts = np.bincount(np.concatenate([ds.train_labels, ds.test_labels]))
  np.testing.assert_array_equal(counts, [500] * 10)
  assert 0.1 < ds.train_images.mean() < 0.16  # MNIST mean pixel ~0.13.


# --------------------------------------------------------------------- tfds --

@pytest.mark.parametrize("name,shape", [("mnist", (28, 28, 1)),
                                        ("cifar10", (32, 32, 3))])
def test_tfds_mock_data(tmp_path, name, shape):
  tfds = pytest.importorskip("tensorflow_datasets")
  with tfds.testing.mock_data(num_examples=6):
    ds = data.load_dataset(f"tfds:{name}", data_dir=str(tmp_path))
    # Reference: the raw uint8 examples straight from TFDS.
    raw = tfds.data_source(name, split="test", data_dir=str(tmp_path),
                           download=False,
                           builder_kwargs={"file_format": "array_record"})
    ref_images = np.stack([raw[i]["image"] for i in range(len(raw))])
    ref_labels = np.array([raw[i]["label"] for i in range(len(raw))])
  assert ds.train_images.shape == (6,) + shape
  assert ds.test_images.shape == (6,) + shape
  assert ds.num_classes == 10 and ds.name == f"tfds:{name}"
  assert ds.train_labels.dtype == np.int32
  np.testing.assert_array_equal(ds.test_images,
                                ref_images.astype(np.float32) / 255)
  np.testing.assert_array_equal(ds.test_labels, ref_labels)
  import sys
  assert "tensorflow" not in sys.modules  # the data_source path needs no TF.


def test_tfds_errors(tmp_path):
  tfds = pytest.importorskip("tensorflow_datasets")
  with pytest.raises(JaxkdError, match="unknown dataset"):
    data.load_dataset("tfds:no_such_dataset_xyz", data_dir=str(tmp_path))
  with pytest.raises(JaxkdError, match="not found"):  # not prepared here.
    data.load_dataset("tfds:mnist", data_dir=str(tmp_path))
  with tfds.testing.mock_data(num_examples=2):
    with pytest.raises(JaxkdError, match="no feature 'pixels'"):
      data.load_dataset("tfds:mnist", data_dir=str(tmp_path),
                        image_key="pixels")


# ---------------------------------------------------------------- registry --

def test_registry_errors():
  with pytest.raises(JaxkdError) as err:
    data.load_dataset("imagenet_tiny")
  for known in ("digits", "mnist", "fashion_mnist", "cifar10", "mnist5k",
                "tfds:"):
    assert known in str(err.value)
  with pytest.raises(JaxkdError, match="bad options"):
    data.load_dataset("digits", no_such_option=1)


def _toy(n_train=6, n_test=4, **kw):
  args = dict(train_images=np.zeros((n_train, 2, 2, 1), np.float32),
              train_labels=np.arange(n_train) % 3,
              test_images=np.ones((n_test, 2, 2, 1), np.float32),
              test_labels=np.arange(n_test) % 3, num_classes=3, name="toy")
  args.update(kw)
  return data.Dataset(**args)


@pytest.mark.parametrize("kw,phrase", [
    (dict(train_images=np.zeros((6, 2, 2), np.float32)), "rank 4"),
    (dict(train_images=np.zeros((6, 2, 2, 1), np.uint8)), "floating point"),
    (dict(test_images=np.full((4, 2, 2, 1), np.nan, np.float32)), "NaN"),
    (dict(test_images=np.full((4, 2, 2, 1), 2.0, np.float32)), r"\[0, 1\]"),
    (dict(train_labels=np.array([0, 1, 2, 3, 0, 1])), r"\[0, 3\)"),
    (dict(train_labels=np.arange(5) % 3), "5 labels"),
    (dict(train_labels=np.zeros(6, np.float32)), "integers"),
    (dict(test_images=np.ones((4, 3, 2, 1), np.float32)), "must match"),
    (dict(num_classes=0), "num_classes"),
    (dict(class_names=("a", "b")), "class_names"),
])
def test_dataset_validation(kw, phrase):
  with pytest.raises(JaxkdError, match=phrase):
    _toy(**kw)


def test_dataset_converts_dtypes():
  ds = _toy(train_images=np.zeros((6, 2, 2, 1), np.float64),
            train_labels=np.arange(6, dtype=np.int64) % 3)
  assert ds.train_images.dtype == np.float32
  assert ds.train_labels.dtype == np.int32
  assert ds.image_shape == (2, 2, 1)


# -------------------------------------------------------------------- pools --

def _indexed_dataset(n_train=40, n_test=12):
  """Pixel [0,0,0] of each image encodes its index, so gathers are checkable."""
  tr = np.zeros((n_train, 2, 2, 1), np.float32)
  tr[:, 0, 0, 0] = np.arange(n_train) / 255
  te = np.zeros((n_test, 2, 2, 1), np.float32)
  te[:, 0, 0, 0] = np.arange(n_test) / 255
  te[:, 1, 1, 0] = 1.0  # test images differ from train ones (leak guard)
  return data.Dataset(tr, np.arange(n_train) % 5, te, np.arange(n_test) % 5,
                      num_classes=5, name="indexed")


def test_make_pools_disjoint_sizes_and_gathers():
  ds = _indexed_dataset()
  p = data.make_pools(ds, teacher_train=20, initial=5, pool=10, test=7, seed=4)
  assert p.sizes() == {"teacher_train": 20, "initial": 5, "pool": 10,
                       "test": 7}
  t, i, u = (set(p.teacher_train_indices), set(p.initial_indices),
             set(p.pool_indices))
  assert len(t) == 20 and len(i) == 5 and len(u) == 10
  assert not (t & i) and not (t & u) and not (i & u)
  assert t | i | u <= set(range(40))
  assert len(set(p.test_indices)) == 7 and max(p.test_indices) < 12
  for part in ("teacher_train", "initial", "pool", "test"):
    idx = getattr(p, f"{part}_indices")
    images = getattr(p, f"{part}_images")
    np.testing.assert_array_equal(np.rint(images[:, 0, 0, 0] * 255), idx)
    np.testing.assert_array_equal(getattr(p, f"{part}_labels"), idx % 5)


def test_make_pools_deterministic_and_seeded():
  ds = _indexed_dataset()
  kw = dict(teacher_train=10, initial=5, pool=20)
  a = data.make_pools(ds, seed=0, **kw)
  b = data.make_pools(ds, seed=0, **kw)
  c = data.make_pools(ds, seed=1, **kw)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)
  assert not np.array_equal(a.pool_indices, c.pool_indices)
  np.testing.assert_array_equal(a.test_indices, np.arange(12))  # whole split.
  rest = data.make_pools(ds, teacher_train=10, initial=5, pool=None, seed=0)
  assert len(rest.pool_indices) == 25


@pytest.mark.parametrize("kw,phrase", [
    (dict(teacher_train=30, initial=5, pool=10), "30 \\+ 5 \\+ 10 = 45 exceeds "
     "the 40 training images"),
    (dict(teacher_train=30, initial=15, pool=None), "45 exceeds"),
    (dict(teacher_train=1, initial=1, pool=1, test=13), "test=13 exceeds"),
    (dict(teacher_train=-1, initial=1, pool=1), ">= 0"),
    (dict(teacher_train=1.5, initial=1, pool=1), "must be an int"),
])
def test_make_pools_errors(kw, phrase):
  with pytest.raises(JaxkdError, match=phrase):
    data.make_pools(_indexed_dataset(), seed=0, **kw)
