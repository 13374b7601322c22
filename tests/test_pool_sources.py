"""Pools on disk: `npy:` memmaps and `folder:` image files as sources.

Reads are checked against NumPy / Pillow computed here; a job on an `npy:`
memmap equals the same job on the same uint8 images in an `.npz`.
"""

import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from jaxkd.data import load_dataset, make_pools, sources
from jaxkd.data.folder import FolderSource
from jaxkd.validation import JaxkdError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _digits_uint8():
  from sklearn.datasets import load_digits
  d = load_digits()
  x = np.round(d.images / 16 * 255).astype(np.uint8)
  return x, d.target.astype(np.int64)


def test_npy_source_reads_like_numpy(tmp_path):
  x = np.random.default_rng(0).integers(0, 256, (50, 5, 4, 3), np.uint8)
  np.save(tmp_path / "a.npy", x)
  src = sources.NpySource(str(tmp_path / "a.npy"))
  assert src.shape == (50, 5, 4, 3) and len(src) == 50
  want = x.astype(np.float32) / 255.0
  idx = np.array([7, 3, 3, 49, 0])
  np.testing.assert_array_equal(src[idx], want[idx])
  np.testing.assert_array_equal(src[10:13], want[10:13])
  np.testing.assert_array_equal(src[-1], want[-1])
  sub = src.take([4, 9, 2])
  np.testing.assert_array_equal(sub[np.array([2, 0])], want[[2, 4]])
  np.testing.assert_array_equal(sub.take([1])[0], want[9])
  batches = list(sources.iter_batches(src, 16))
  assert [len(b) for b in batches] == [16, 16, 16, 2]
  np.testing.assert_array_equal(np.concatenate(batches), want)
  # The fingerprint is streamed, stable, and sees a changed pixel.
  fp = sources.fingerprint(src)
  assert fp == sources.fingerprint(sources.NpySource(str(tmp_path / "a.npy")))
  x[3, 0, 0, 0] ^= 1
  np.save(tmp_path / "b.npy", x)
  assert fp != sources.fingerprint(sources.NpySource(str(tmp_path / "b.npy")))
  # An in-memory array keeps its old fingerprint (hash of float32 bytes).
  h = hashlib.sha256(str(want.shape).encode())
  h.update(want.tobytes())
  assert sources.fingerprint(want) == h.hexdigest()[:16]


def test_npy_bad_inputs(tmp_path):
  np.save(tmp_path / "flat.npy", np.zeros((4, 9), np.uint8))
  with pytest.raises(JaxkdError, match=r"\[n, H, W\] or \[n, H, W, C\]"):
    sources.NpySource(str(tmp_path / "flat.npy"))
  np.save(tmp_path / "i64.npy", np.zeros((4, 3, 3), np.int64))
  with pytest.raises(JaxkdError, match="uint8 or floating"):
    sources.NpySource(str(tmp_path / "i64.npy"))
  np.save(tmp_path / "big.npy", np.full((4, 3, 3), 2.0, np.float32))
  src = sources.NpySource(str(tmp_path / "big.npy"))
  with pytest.raises(JaxkdError, match="item 0 has values outside"):
    src[0:2]
  # npy: dataset: labels of another length, a missing labels file.
  np.save(tmp_path / "img.npy", np.zeros((6, 3, 3), np.uint8))
  with pytest.raises(JaxkdError, match="img_labels.npy: missing"):
    load_dataset(f"npy:{tmp_path}/img.npy", num_test=2)
  np.save(tmp_path / "img_labels.npy", np.arange(5) % 2)
  with pytest.raises(JaxkdError, match="5 labels for the 6 images"):
    load_dataset(f"npy:{tmp_path}/img.npy", num_test=2)
  np.save(tmp_path / "img_labels.npy", np.arange(6) % 2)
  with pytest.raises(JaxkdError, match="no test split"):
    load_dataset(f"npy:{tmp_path}/img.npy")
  with pytest.raises(JaxkdError, match="not image_shape"):
    load_dataset(f"npy:{tmp_path}/img.npy", num_test=2, image_shape=(4, 4))
  ds = load_dataset(f"npy:{tmp_path}/img.npy", num_test=2)
  assert (ds.num_train, ds.num_test, ds.num_classes) == (4, 2, 2)


def _png(path, array):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(array).save(path)


def _class_folder(root, n_per_class=6, size=(8, 8), seed=0):
  rng = np.random.default_rng(seed)
  arrays = {}
  for c in ("cat", "dog", "emu"):
    for i in range(n_per_class):
      a = rng.integers(0, 256, size, np.uint8)
      rel = f"{c}/{i:02d}.png"
      _png(os.path.join(root, rel), a)
      arrays[rel] = a
  return arrays


def test_folder_source_labels_and_pixels(tmp_path):
  arrays = _class_folder(str(tmp_path))
  src = FolderSource(str(tmp_path))
  assert src.class_names == ("cat", "dog", "emu")
  assert src.files == sorted(arrays)
  np.testing.assert_array_equal(src.labels, np.repeat([0, 1, 2], 6))
  got = src[np.arange(len(src))]
  want = np.stack([arrays[f] for f in src.files])[..., None] / np.float32(255)
  np.testing.assert_array_equal(got, want.astype(np.float32))
  assert src.item_key(7) == "dog/01.png"


def test_folder_mixed_sizes_center_crop_and_resize(tmp_path):
  rng = np.random.default_rng(1)
  big = rng.integers(0, 256, (12, 16, 3), np.uint8)
  small = rng.integers(0, 256, (6, 6, 3), np.uint8)
  _png(str(tmp_path / "a" / "big.png"), big)
  _png(str(tmp_path / "a" / "small.png"), small)
  with pytest.raises(JaxkdError, match="2 sizes.*set image_shape"):
    FolderSource(str(tmp_path))
  src = FolderSource(str(tmp_path), image_shape=(6, 6))
  # Reference: Pillow by hand (scale the shorter side to 6, crop centre).
  ref = Image.fromarray(big).resize((8, 6), Image.BILINEAR).crop((1, 0, 7, 6))
  np.testing.assert_array_equal(src[0], np.asarray(ref) / np.float32(255))
  np.testing.assert_array_equal(src[1], small / np.float32(255))
  res = FolderSource(str(tmp_path), image_shape=(6, 6), fit="resize")
  ref = Image.fromarray(big).resize((6, 6), Image.BILINEAR)
  np.testing.assert_array_equal(res[0], np.asarray(ref) / np.float32(255))


def test_folder_bad_inputs(tmp_path):
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(JaxkdError, match="no image files"):
    FolderSource(str(empty))
  bad = tmp_path / "bad"
  _class_folder(str(bad), n_per_class=2)
  (bad / "dog" / "notes.txt").write_text("not an image")
  with pytest.raises(JaxkdError, match=r"notes.txt: not a readable image"):
    FolderSource(str(bad))
  src = FolderSource(str(bad), skip_bad_files=True)
  assert len(src) == 6 and [f for f, _ in src.skipped] == ["dog/notes.txt"]
  chans = tmp_path / "chans"
  _png(str(chans / "x" / "grey.png"), np.zeros((4, 4), np.uint8))
  _png(str(chans / "x" / "rgb.png"), np.zeros((4, 4, 3), np.uint8))
  with pytest.raises(JaxkdError, match="different channel counts"):
    FolderSource(str(chans))
  assert FolderSource(str(chans), image_shape=(4, 4, 3)).shape == (2, 4, 4, 3)
  flat = tmp_path / "flat"
  _png(str(flat / "a.png"), np.zeros((4, 4), np.uint8))
  _png(str(flat / "b.png"), np.ones((4, 4), np.uint8))
  (flat / "labels.csv").write_text("file,label\na.png,1\nb.png,0\nc.png,1\n")
  with pytest.raises(JaxkdError, match=r"names 1 file\(s\) not in .*c.png"):
    FolderSource(str(flat))
  (flat / "labels.csv").write_text("file,label\na.png,1\nb.png,0\n")
  np.testing.assert_array_equal(FolderSource(str(flat)).labels, [1, 0])
  os.remove(flat / "labels.csv")
  assert FolderSource(str(flat)).labels is None
  with pytest.raises(JaxkdError, match="without labels"):
    load_dataset(f"folder:{flat}", num_test=1)


def test_folder_pools_are_views_and_overlap_is_checked(tmp_path):
  arrays = _class_folder(str(tmp_path / "d"), n_per_class=10)
  ds = load_dataset(f"folder:{tmp_path / 'd'}", num_test=6, seed=0)
  assert ds.num_classes == 3 and ds.num_train == 24
  p = make_pools(ds, teacher_train=10, initial=4, pool=8, seed=0)
  assert isinstance(p.pool_images, sources.SubsetSource)
  # The pool's images are the files the indices name.
  base = p.pool_images.base
  for row, i in enumerate(p.pool_indices[:3]):
    f = base.files[ds.train_images.indices[i]]
    np.testing.assert_array_equal(p.pool_images[row][..., 0],
                                  arrays[f] / np.float32(255))
  # A copy of a test image under another name is found.
  dup = tmp_path / "dup"
  _class_folder(str(dup), n_per_class=10)
  src = open(dup / "cat" / "00.png", "rb").read()
  for c in ("dog", "emu"):
    open(dup / c / "copy.png", "wb").write(src)
  ds = load_dataset(f"folder:{dup}", num_test=10, seed=3)
  with pytest.raises(JaxkdError, match="splits share images"):
    make_pools(ds, teacher_train=10, initial=4, pool=None, seed=0)


def _cli(workdir, *flags, timeout=600):
  cmd = [sys.executable, "-m", "jaxkd.main", f"--workdir={workdir}",
         "--config.rounds=2", "--config.per_round=10", "--config.seeds=(0,)",
         "--config.loop.train_steps=30", "--config.teacher.epochs=3",
         *flags]
  env = dict(os.environ, PYTHONPATH=ROOT)
  return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT,
                        timeout=timeout, env=env)


def test_npy_job_equals_npz_job(tmp_path):
  x, y = _digits_uint8()
  np.savez(tmp_path / "d.npz", images=x, labels=y)
  os.makedirs(tmp_path / "m")
  np.save(tmp_path / "m" / "d.npy", x)
  np.save(tmp_path / "m" / "d_labels.npy", y)
  common = ("--strategy=entropy,coreset,random", "--config.split.test=300",
            "--config.split.teacher_train=700", "--config.split.initial=40",
            "--config.split.pool=500")
  a = _cli(tmp_path / "wa", f"--config.dataset=npz:{tmp_path}/d.npz", *common)
  b = _cli(tmp_path / "wb", f"--config.dataset=npy:{tmp_path}/m/d.npy",
           *common)
  assert a.returncode == 0, a.stderr[-3000:]
  assert b.returncode == 0, b.stderr[-3000:]
  ra = json.load(open(tmp_path / "wa" / "results.json"))
  rb = json.load(open(tmp_path / "wb" / "results.json"))
  assert ra["teacher_accuracy"] == rb["teacher_accuracy"]
  for s in ("entropy", "coreset", "random"):
    acc = lambda r: [(x["queries"], x["student_accuracy"])
                     for x in r["strategies"][s][0]]
    assert acc(ra) == acc(rb), s


def test_folder_job_with_corrupt_file_and_mixed_sizes(tmp_path):
  x, y = _digits_uint8()
  root = tmp_path / "imgs"
  for i in range(600):
    a = x[i]
    if i % 7 == 0:  # mixed sizes: some images stored at 16x16
      a = np.asarray(Image.fromarray(a).resize((16, 16)))
    _png(str(root / f"class_{y[i]}" / f"{i:04d}.png"), a)
  (root / "class_3" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
  flags = ("--strategy=margin", f"--config.dataset=folder:{root}",
           "--config.image_shape=(8,8)", "--config.split.test=100",
           "--config.split.teacher_train=300", "--config.split.initial=40",
           "--config.split.pool=150")
  r = _cli(tmp_path / "w1", *flags)
  assert r.returncode != 0
  last = [l for l in r.stderr.strip().splitlines() if l.strip()][-1]
  assert "broken.png: not a readable image" in last, r.stderr[-2000:]
  assert not os.path.exists(tmp_path / "w1" / "margin")  # nothing paid
  r = _cli(tmp_path / "w2", *flags, "--config.data_skip_bad_files=True")
  assert r.returncode == 0, r.stderr[-3000:]
  assert "skipped 1 unreadable file(s)" in r.stdout + r.stderr
  res = json.load(open(tmp_path / "w2" / "results.json"))
  recs = res["strategies"]["margin"][0]
  assert [x["queries"] for x in recs] == [40, 50, 60]


def test_ledger_keys_are_item_keys_and_images_come_from_them(tmp_path):
  import sqlite3
  from jaxkd.teacher import TeacherOracle
  arrays = _class_folder(str(tmp_path / "d"), n_per_class=5)
  src = FolderSource(str(tmp_path / "d"))
  pool = src.take([14, 2, 9, 0, 7])  # positions 0..4 of the oracle's pool
  w = np.random.default_rng(0).normal(size=(64, 3)).astype(np.float32)
  teacher = lambda x: np.asarray(x).reshape(len(x), -1) @ w
  path = str(tmp_path / "ledger.sqlite")
  oracle = TeacherOracle(teacher, pool, budget=5, ledger_path=path)
  oracle.query(np.array([3, 1]), round=0)
  oracle.query(np.array([4]), round=1)
  want = ["p:" + src.files[i] for i in (0, 2, 7)]
  assert [e["key"] for e in oracle.entries()] == want
  np.testing.assert_array_equal(oracle.queried_indices(), [1, 3, 4])
  np.testing.assert_array_equal(oracle.queried_indices(max_round=0), [1, 3])
  oracle.close()
  # A damaged pool_index column does not change what training reads.
  db = sqlite3.connect(path)
  db.execute("UPDATE answers SET pool_index = 0")
  db.commit()
  db.close()
  oracle = TeacherOracle(teacher, pool, budget=5, ledger_path=path)
  images = oracle.entry_images(oracle.entries())
  for img, f in zip(images, [src.files[i] for i in (0, 2, 7)]):
    np.testing.assert_array_equal(img[..., 0], arrays[f] / np.float32(255))
  # The same answers are found by position, never paid again.
  oracle.query(np.array([1, 3, 4]), round=2)
  assert oracle.spent == 3
  oracle.close()
