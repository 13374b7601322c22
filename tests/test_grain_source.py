"""Record sources: lazy `tfds:` and `arrayrecord:` datasets as GrainSources.

Lazy tfds reads are checked against the eager tfds arrays (both through
`tfds.testing.mock_data`, TFDS's own loading code); ArrayRecord datasets
against the arrays the test wrote, split with `split_indices` here.
"""

import io
import os
import sys

import numpy as np
import pytest
from PIL import Image

from jaxkd import data
from jaxkd.data import grain_source, sources
from jaxkd.data.grain_source import (ArrayRecordRecords, GrainSource,
                                     write_array_records)
from jaxkd.validation import JaxkdError


def _one_line_error(match, fn, *args, **kw):
  with pytest.raises(JaxkdError, match=match) as err:
    fn(*args, **kw)
  assert "\n" not in str(err.value), str(err.value)
  return str(err.value)


def _uint8(n, shape, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (n,) + shape, np.uint8)


# ---------------------------------------------------------------- tfds --

@pytest.mark.parametrize("name", ["mnist", "cifar10"])
def test_tfds_lazy_reads_equal_eager_arrays(tmp_path, name):
  tfds = pytest.importorskip("tensorflow_datasets")
  with tfds.testing.mock_data(num_examples=7):
    eager = data.load_dataset(f"tfds:{name}", data_dir=str(tmp_path))
    lazy = data.load_dataset(f"tfds:{name}", data_dir=str(tmp_path),
                             lazy=True)
    assert isinstance(lazy.train_images, GrainSource)
    assert isinstance(lazy.test_images, GrainSource)
    for split in ("train", "test"):
      want = getattr(eager, f"{split}_images")
      got = getattr(lazy, f"{split}_images")
      assert got.shape == want.shape
      np.testing.assert_array_equal(np.asarray(got), want)
      np.testing.assert_array_equal(got[np.array([5, 0, 5])], want[[5, 0, 5]])
      np.testing.assert_array_equal(
          np.concatenate(list(sources.iter_batches(got, 3))), want)
      labels = getattr(lazy, f"{split}_labels")
      assert labels.dtype == np.int32
      np.testing.assert_array_equal(labels, getattr(eager, f"{split}_labels"))
    assert (lazy.num_classes, lazy.class_names, lazy.name) == (
        eager.num_classes, eager.class_names, eager.name)
    # Digests (taken while opening) are the pixels': a fresh open agrees.
    again = data.load_dataset(f"tfds:{name}", data_dir=str(tmp_path),
                              lazy=True)
    assert (sources.fingerprint(again.train_images)
            == sources.fingerprint(lazy.train_images))
  assert "tensorflow" not in sys.modules  # data_source needs no TF.


def test_tfds_lazy_errors(tmp_path):
  tfds = pytest.importorskip("tensorflow_datasets")
  _one_line_error("method='load'", data.load_dataset, "tfds:mnist",
                  data_dir=str(tmp_path), lazy=True, method="load")
  _one_line_error("lazy must be True or False", data.load_dataset,
                  "tfds:mnist", data_dir=str(tmp_path), lazy="yes")
  _one_line_error("not found", data.load_dataset, "tfds:mnist",
                  data_dir=str(tmp_path), lazy=True)
  with tfds.testing.mock_data(num_examples=2):
    _one_line_error("no feature 'pixels'", data.load_dataset, "tfds:mnist",
                    data_dir=str(tmp_path), image_key="pixels", lazy=True)


# --------------------------------------------------------- GrainSource --

def test_grain_source_over_a_list_of_records():
  x = _uint8(9, (4, 3))
  recs = [{"image": x[i], "label": np.int64(i % 2)} for i in range(9)]
  src = GrainSource(recs, name="toy", batch_size=4)
  assert src.shape == (9, 4, 3, 1) and src.item_key(7) == "7"
  assert src.labels.dtype == np.int32
  np.testing.assert_array_equal(src.labels, np.arange(9) % 2)
  want = x[..., None].astype(np.float32) / 255
  np.testing.assert_array_equal(src[np.array([8, 1])], want[[8, 1]])
  np.testing.assert_array_equal(src.take([3, 2])[1], want[2])
  # Given labels (a label-only path): no opening pass, digests on demand.
  given = GrainSource(recs, labels=np.arange(9) % 2, name="toy")
  assert given._digests is None
  assert list(given.item_digests()) == list(src.item_digests())
  assert sources.fingerprint(given) == sources.fingerprint(src)
  changed = [dict(r) for r in recs]
  changed[4] = {"image": x[4] ^ 1, "label": 0}
  assert sources.fingerprint(GrainSource(changed)) != sources.fingerprint(src)
  # Encoded PNG bytes are decoded with Pillow; floats are kept.
  png = io.BytesIO()
  Image.fromarray(x[0]).save(png, format="PNG")
  enc = GrainSource([{"image": png.getvalue(), "label": 1}])
  np.testing.assert_array_equal(enc[0], want[0])
  flt = GrainSource([{"image": want[0], "label": 1}])
  np.testing.assert_array_equal(flt[0], want[0])


def test_grain_source_bad_records():
  good = {"image": np.zeros((4, 4), np.uint8), "label": 0}
  msg = _one_line_error(r"record 2 has an image of shape \(4, 5, 1\)",
                        GrainSource, [good, good,
                                      dict(good, image=np.zeros((4, 5)))])
  assert "record 0 has (4, 4, 1)" in msg
  # Given labels, the shape is checked when the record is read.
  src = GrainSource([good, dict(good, image=np.zeros((3, 4), np.uint8))],
                    labels=[0, 0])
  _one_line_error("record 1 has an image of shape", src.__getitem__, 1)
  _one_line_error("record 1 has no field 'label'", GrainSource,
                  [good, {"image": good["image"]}])
  _one_line_error("record 1 has label -1", GrainSource,
                  [good, dict(good, label=-1)])
  _one_line_error("record 0 has label 0.5", GrainSource,
                  [dict(good, label=0.5)])
  _one_line_error("dtype int64", GrainSource,
                  [dict(good, image=np.zeros((2, 2), np.int64))])
  _one_line_error("record 0 is a bytes, not a dict", GrainSource, [b"raw"])
  _one_line_error("record 0: the image bytes are not a readable image",
                  GrainSource, [dict(good, image=b"not a png")])
  _one_line_error("no records", GrainSource, [])
  _one_line_error("values outside", GrainSource(
      [dict(good, image=np.full((2, 2), 2.0, np.float32))]).__getitem__, 0)


# --------------------------------------------------------- ArrayRecord --

def test_arrayrecord_dataset_equals_written_arrays(tmp_path):
  x, y = _uint8(30, (6, 5)), np.arange(30) % 4
  assert write_array_records(tmp_path / "pool.array_record", x, y) == 30
  ds = data.load_dataset("arrayrecord:pool.array_record",
                         data_dir=str(tmp_path), num_test=8, seed=3)
  train, test = data.split_indices(30, 8, 3)
  want = x[..., None].astype(np.float32) / 255
  assert ds.name == "pool" and ds.num_classes == 4
  assert isinstance(ds.train_images, sources.SubsetSource)
  assert isinstance(ds.train_images.base, GrainSource)
  np.testing.assert_array_equal(np.asarray(ds.train_images), want[train])
  np.testing.assert_array_equal(np.asarray(ds.test_images), want[test])
  np.testing.assert_array_equal(ds.train_labels, y[train])
  np.testing.assert_array_equal(ds.test_labels, y[test])
  # Pools are views of the records, equal to the arrays gathered here.
  pools = data.make_pools(ds, teacher_train=6, initial=4, pool=None, seed=1)
  for part in ("teacher_train", "initial", "pool", "test"):
    images = getattr(pools, f"{part}_images")
    assert isinstance(images, sources.SubsetSource), part
    base = train if part != "test" else test
    idx = base[getattr(pools, f"{part}_indices")]
    np.testing.assert_array_equal(np.asarray(images), want[idx])
    np.testing.assert_array_equal(getattr(pools, f"{part}_labels"), y[idx])
  assert pools.sizes()["pool"] == 12 and not any(pools.overlap.values())


def test_arrayrecord_layouts_and_formats(tmp_path):
  x = _uint8(12, (4, 4, 3), seed=1)
  y = np.arange(12) % 3
  # A folder with train*/test* shards; records in several formats.
  folder = tmp_path / "ds"
  folder.mkdir()
  write_array_records(folder / "train-0.array_record", x[:4], y[:4])
  write_array_records(folder / "train-1.array_record",
                      list(x[4:8].astype(np.float32) / 255), y[4:8])
  pngs = []
  for img in x[8:]:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    pngs.append(buf.getvalue())
  write_array_records(folder / "test.array_record", pngs, y[8:])
  ds = data.load_dataset(f"arrayrecord:{folder}", image_shape=(4, 4))
  want = x.astype(np.float32) / 255
  assert (ds.num_train, ds.num_test, ds.name) == (8, 4, "ds")
  np.testing.assert_array_equal(np.asarray(ds.train_images), want[:8])
  np.testing.assert_array_equal(np.asarray(ds.test_images), want[8:])
  np.testing.assert_array_equal(ds.test_labels, y[8:])
  # A glob over shards; flax msgpack records of arrays are accepted too.
  from array_record.python import array_record_module
  from flax import serialization
  w = array_record_module.ArrayRecordWriter(
      str(tmp_path / "flax-0.array_record"), "group_size:1")
  for i in range(12):
    w.write(serialization.msgpack_serialize({"image": x[i],
                                             "label": int(y[i])}))
  w.close()
  ds = data.load_dataset(f"arrayrecord:{tmp_path}/flax-*.array_record",
                         num_test=3, num_classes=5)
  assert ds.num_classes == 5 and ds.num_train == 9
  train, _ = data.split_indices(12, 3, 0)
  np.testing.assert_array_equal(np.asarray(ds.train_images), want[train])


def test_arrayrecord_bad_inputs(tmp_path):
  _one_line_error("file not found", data.load_dataset,
                  f"arrayrecord:{tmp_path}/missing.array_record", num_test=1)
  _one_line_error("matches no files", data.load_dataset,
                  f"arrayrecord:{tmp_path}/none-*.array_record", num_test=1)
  _one_line_error("no .array_record files", data.load_dataset,
                  f"arrayrecord:{tmp_path}", num_test=1)
  (tmp_path / "junk.array_record").write_bytes(b"junk" * 100)
  _one_line_error("junk.array_record: not a readable ArrayRecord file",
                  data.load_dataset, f"arrayrecord:{tmp_path}", num_test=1)
  os.remove(tmp_path / "junk.array_record")
  # Records of mixed shapes: the first odd one is named.
  images = [np.zeros((4, 4), np.uint8)] * 3 + [np.zeros((5, 4), np.uint8)]
  write_array_records(tmp_path / "mixed.array_record", images, [0, 1, 0, 1])
  msg = _one_line_error("record 3 has an image of shape", data.load_dataset,
                        f"arrayrecord:{tmp_path}/mixed.array_record",
                        num_test=1)
  assert msg.startswith("mixed: ")
  # Not msgpack records; records without labels; no test split.
  from array_record.python import array_record_module
  w = array_record_module.ArrayRecordWriter(
      str(tmp_path / "raw.array_record"), "group_size:1")
  w.write(b"\xc1 not msgpack")
  w.close()
  _one_line_error("raw: record 0: not a msgpack record", data.load_dataset,
                  f"arrayrecord:{tmp_path}/raw.array_record", num_test=1)
  write_array_records(tmp_path / "nolabel.array_record",
                      np.zeros((3, 2, 2), np.uint8))
  _one_line_error("record 0 has no field 'label'", data.load_dataset,
                  f"arrayrecord:{tmp_path}/nolabel.array_record", num_test=1)
  write_array_records(tmp_path / "ok.array_record",
                      np.zeros((3, 2, 2), np.uint8), [0, 1, 1])
  _one_line_error("no test split", data.load_dataset,
                  f"arrayrecord:{tmp_path}/ok.array_record")
  _one_line_error("not image_shape", data.load_dataset,
                  f"arrayrecord:{tmp_path}/ok.array_record", num_test=1,
                  image_shape=(3, 3))
  # The writer refuses what the format cannot hold.
  _one_line_error("expected uint8 or float32", write_array_records,
                  tmp_path / "w.array_record", np.zeros((2, 2, 2), np.int64))
  _one_line_error(r"labels must be \[2\] ints", write_array_records,
                  tmp_path / "w.array_record", np.zeros((2, 2, 2), np.uint8),
                  [0])
  _one_line_error("cannot be written", write_array_records,
                  tmp_path / "no" / "dir.array_record",
                  np.zeros((2, 2, 2), np.uint8), [0, 1])
  # A record whose pixels do not fill its shape.
  import msgpack
  w = array_record_module.ArrayRecordWriter(
      str(tmp_path / "short.array_record"), "group_size:1")
  w.write(msgpack.packb({"image": b"\0" * 3, "shape": [2, 2], "label": 0}))
  w.close()
  _one_line_error(r"record 0: 3 image bytes for shape \[2, 2\]",
                  ArrayRecordRecords([tmp_path / "short.array_record"])
                  .__getitem__, 0)


def test_arrayrecord_overlap_is_detected(tmp_path):
  x, y = _uint8(10, (3, 3), seed=2), np.arange(10) % 2
  folder = tmp_path / "dup"
  folder.mkdir()
  write_array_records(folder / "train.array_record", x[:8], y[:8])
  write_array_records(folder / "test.array_record", x[6:], y[6:])
  ds = data.load_dataset(f"arrayrecord:{folder}")
  _one_line_error("share images", data.make_pools, ds, teacher_train=2,
                  initial=2, pool=None, seed=0)
  assert grain_source.RECORD_DTYPES == ("uint8", "float32")
