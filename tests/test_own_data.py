"""Own data: npz / IDX-directory loaders, the leak guard, teacher save/load,
strategy ranking, config help, and two end-to-end runs of
`python -m jaxkd.main` on files the test writes (no Python from the user).

Expected values are computed here with NumPy from the arrays written to
disk, never read back from jaxkd.
"""

import gzip
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from jaxkd import data, report, train
from jaxkd.validation import JaxkdError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def idx_bytes(a: np.ndarray) -> bytes:
  a = np.asarray(a, np.uint8)
  head = bytes([0, 0, 8, a.ndim]) + b"".join(
      int(d).to_bytes(4, "big") for d in a.shape)
  return head + a.tobytes()


def write_idx(path, a, gz):
  raw = idx_bytes(a)
  with open(path, "wb") as f:
    f.write(gzip.compress(raw) if gz else raw)


def synthetic(n, hw=8, classes=3, seed=0):
  """Distinct random uint8 images [n, hw, hw] and labels [n]."""
  rng = np.random.default_rng(seed)
  x = rng.integers(0, 256, size=(n, hw, hw), dtype=np.uint8)
  return x, (np.arange(n) % classes).astype(np.int64)


# ------------------------------------------------------------ loaders ---


def test_npz_keras_layout(tmp_path):
  x, y = synthetic(30)
  tx, ty = synthetic(10, seed=1)
  path = tmp_path / "own.npz"
  np.savez(path, x_train=x, y_train=y, x_test=tx, y_test=ty)
  ds = data.load_dataset(f"npz:{path}")
  np.testing.assert_array_equal(ds.train_images,
                                (x / np.float32(255))[..., None])
  np.testing.assert_array_equal(ds.test_labels, ty)
  assert ds.num_classes == 3 and ds.name == "own"


def test_npz_images_labels_split_and_flat(tmp_path):
  x, y = synthetic(20, hw=4)
  xf = (x.reshape(20, 16) / 255.0).astype(np.float64)  # flat float
  np.savez(tmp_path / "a.npz", images=xf, labels=y.astype(np.float32))
  ds = data.load_dataset(f"npz:{tmp_path / 'a.npz'}", image_shape=(4, 4),
                         num_test=5, seed=3)
  perm = np.random.default_rng(3).permutation(20)
  np.testing.assert_allclose(ds.test_images[..., 0],
                             xf.reshape(20, 4, 4)[perm[:5]], rtol=1e-6)
  np.testing.assert_array_equal(ds.train_labels, y[perm[5:]])
  with pytest.raises(JaxkdError, match="image_shape"):
    data.load_dataset(f"npz:{tmp_path / 'a.npz'}", num_test=5)
  with pytest.raises(JaxkdError, match="split.test > 0"):
    data.load_dataset(f"npz:{tmp_path / 'a.npz'}", image_shape=(4, 4))


def test_hwc_images_and_bad_inputs(tmp_path):
  x = np.random.default_rng(0).random((6, 3, 3, 2), np.float32)
  ds = data.dataset_from_arrays(x, np.arange(6) % 2, num_test=2)
  assert ds.image_shape == (3, 3, 2)
  bad = x.copy()
  bad[1, 0, 0, 0] = np.nan
  for images, labels, kw, match in [
      (bad, np.arange(6) % 2, {}, "NaN"),
      (x, np.arange(6), dict(num_classes=3), r"\[0, 3\)"),
      (x, np.arange(5), {}, "6 train images but 5"),
      (x, -np.ones(6), {}, ">= 0"),
      (x.astype(np.int32), np.arange(6) % 2, {}, "uint8"),
      (x, np.arange(6) % 2, dict(image_shape=(3, 3, 1)), "image_shape"),
      (x * 255, np.arange(6) % 2, {}, r"\[0, 1\]"),
  ]:
    with pytest.raises(JaxkdError, match=match) as e:
      data.dataset_from_arrays(images, labels, num_test=2, **kw)
    assert "\n" not in str(e.value)


def test_idx_dir_any_names(tmp_path):
  x, y = synthetic(12)
  tx, ty = synthetic(5, seed=1)
  write_idx(tmp_path / "pics.bin.gz", x, gz=True)
  write_idx(tmp_path / "answers", y, gz=False)
  write_idx(tmp_path / "eval_imgs.gz", tx, gz=True)
  write_idx(tmp_path / "eval_lbl.dat", ty, gz=False)
  (tmp_path / "README.txt").write_text("not idx")
  pairs = data.find_idx_pairs(str(tmp_path))
  assert [tuple(os.path.basename(p) for p in pair) for pair in pairs] == [
      ("pics.bin.gz", "answers"), ("eval_imgs.gz", "eval_lbl.dat")]
  ds = data.load_dataset(f"idx:{tmp_path}")
  np.testing.assert_array_equal(ds.train_images[..., 0], x / np.float32(255))
  np.testing.assert_array_equal(ds.test_labels, ty)


def test_idx_dir_equal_sizes_by_name_and_one_pair(tmp_path):
  x, y = synthetic(6)
  tx, ty = synthetic(6, seed=1)
  for name, a in [("a_img", x), ("a_lab", y), ("test_img", tx),
                  ("test_lab", ty)]:
    write_idx(tmp_path / name, a, gz=False)
  ds = data.load_dataset(f"idx:{tmp_path}")
  np.testing.assert_array_equal(ds.test_labels, ty)
  one = tmp_path / "one"
  one.mkdir()
  write_idx(one / "i.gz", x, gz=True)
  write_idx(one / "l.gz", y, gz=True)
  ds = data.load_dataset(f"idx:{one}", num_test=2, seed=0)
  assert (ds.num_train, ds.num_test) == (4, 2)
  write_idx(one / "extra_labels", y[:5], gz=False)
  with pytest.raises(JaxkdError, match="label file"):
    data.load_dataset(f"idx:{one}", num_test=2)


def test_idx_gzip_read_is_bounded(tmp_path):
  # 20-byte header declaring 10^4 x 10^4 x 10^4 bytes, nothing behind it.
  head = bytes([0, 0, 8, 3]) + (10**4).to_bytes(4, "big") * 3
  (tmp_path / "bomb.gz").write_bytes(gzip.compress(head))
  with pytest.raises(JaxkdError, match="declares"):
    data.read_idx(str(tmp_path / "bomb.gz"))


def test_idx_md5sums(tmp_path):
  x, y = synthetic(6)
  write_idx(tmp_path / "i", x, gz=False)
  write_idx(tmp_path / "l", y, gz=False)
  (tmp_path / "MD5SUMS").write_text("0" * 32 + "  i\n")
  with pytest.raises(JaxkdError, match="md5"):
    data.load_dataset(f"idx:{tmp_path}", num_test=2, verify_md5=True)
  data.load_dataset(f"idx:{tmp_path}", num_test=2, verify_md5=False)


# ---------------------------------------------------------- leak guard ---


def test_overlap_refused_with_counts():
  x, y = synthetic(40)
  xf = (x / np.float32(255))[..., None]
  # test = train images 0..9 again: the leak of copying a file twice.
  ds = data.Dataset(xf, y, xf[:10], y[:10], num_classes=3, name="leaky")
  perm = np.random.default_rng(0).permutation(40)
  tt, pool = set(perm[:20]), set(perm[20:40])
  want = (f"teacher_train&pool 0, teacher_train&test "
          f"{len(tt & set(range(10)))}, pool&test {len(pool & set(range(10)))}")
  with pytest.raises(JaxkdError, match="splits share images") as e:
    data.make_pools(ds, teacher_train=20, initial=5, pool=15, seed=0)
  assert want in str(e.value) and "\n" not in str(e.value)
  p = data.make_pools(ds, teacher_train=20, initial=5, pool=15, seed=0,
                      allow_overlap=True)
  assert p.overlap["pool&test"] == len(pool & set(range(10)))


def test_empty_splits_share_nothing():
  """A teacher-only split (initial = pool = 0) or a run whose teacher was
  trained elsewhere (teacher_train = 0) hashes an empty split: no overlap."""
  x, y = synthetic(40)
  xf = (x / np.float32(255))[..., None]
  ds = data.Dataset(xf, y, np.full((4,) + xf.shape[1:], 0.3, np.float32),
                    y[:4], num_classes=3, name="e")
  p = data.make_pools(ds, teacher_train=40, initial=0, pool=0, seed=0)
  assert p.sizes()["initial"] == 0 and p.sizes()["pool"] == 0
  q = data.make_pools(ds, teacher_train=0, initial=30, pool=0, seed=0)
  assert q.sizes()["teacher_train"] == 0
  assert set(p.overlap.values()) == set(q.overlap.values()) == {0}


# ------------------------------------------------------------- teacher ---


def test_teacher_save_load_roundtrip(tmp_path):
  from jaxkd import teacher_training as tt
  x, y = synthetic(24)
  xf = (x / np.float32(255))[..., None]
  model, variables, acc = tt.train_teacher(
      "mlp", xf, y, xf[:8], y[:8], epochs=1, batch_size=8)
  want = np.mean(np.argmax(np.asarray(train.predict(model, variables,
                                                    xf[:8])), -1) == y[:8])
  assert acc == pytest.approx(want)
  tt.save_teacher(str(tmp_path / "t"), "mlp", variables, accuracy=acc,
                  num_classes=3, input_shape=xf.shape[1:])
  meta = json.loads((tmp_path / "t" / "teacher.json").read_text())
  assert meta["input_shape"] == [8, 8, 1] and meta["num_classes"] == 3
  model2, variables2, _ = tt.load_teacher(str(tmp_path / "t"))
  jax.tree.map(np.testing.assert_array_equal, variables, variables2)
  with pytest.raises(JaxkdError, match="teacher.json"):
    tt.load_teacher(str(tmp_path))


# ------------------------------------------------------------- ranking ---


def test_rank_strategies_marks_spread():
  def runs(finals):
    return [[{"success_rate": 0.5}, {"success_rate": f}] for f in finals]
  results = {"a": runs([0.60, 0.62]), "b": runs([0.90, 0.92]),
             "c": runs([0.59, 0.65])}
  rows = report.rank_strategies(results)
  assert [r["strategy"] for r in rows] == ["b", "c", "a"]
  b, c, a = rows
  assert b["final_success_std"] == pytest.approx(np.std([0.90, 0.92]))
  assert c["mean_success_mean"] == pytest.approx(np.mean([0.545, 0.575]))
  assert b["final_vs_next"] == ">"   # 0.91 - 0.62 > max std 0.03
  assert c["final_vs_next"] == "≈"   # 0.62 vs 0.61, stds 0.03 / 0.01
  assert a["final_vs_next"] is None
  table = report.summary_table(
      {k: [[dict(r, student_accuracy=0.5, queries=10) for r in run]
           for run in v] for k, v in results.items()})
  assert table.index("| b ") < table.index("| c ") < table.index("| a ")


# -------------------------------------------------------------- config ---


# ------------------------------------------------- end to end, the CLI ---

TINY = ["--strategy=random", "--config.rounds=1", "--config.per_round=4",
        "--config.loop.train_steps=5", "--config.loop.batch_size=8",
        "--config.teacher.epochs=1", "--config.teacher.batch_size=16",
        "--config.teacher.model=mlp", "--config.student=mlp",
        "--config.progress=False", "--config.split.teacher_train=30",
        "--config.split.initial=8", "--config.split.pool=12"]


def _cli(args, tmp_path):
  env = dict(os.environ, XLA_FLAGS="", PYTHONPATH=ROOT,
             JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, "-m", "jaxkd.main", *args],
                        cwd=tmp_path, env=env, capture_output=True,
                        text=True, timeout=300)


def _records(workdir):
  out = json.loads((workdir / "results.json").read_text())
  return out, out["strategies"]["random"][0]


def test_cli_npz_keras_layout(tmp_path):
  x, y = synthetic(60)
  tx, ty = synthetic(15, seed=1)
  np.savez(tmp_path / "mine.npz", x_train=x, y_train=y, x_test=tx,
           y_test=ty)
  p = _cli(["--config.dataset=npz:mine.npz", "--workdir=w", *TINY],
           tmp_path)
  assert p.returncode == 0, p.stderr[-3000:]
  out, recs = _records(tmp_path / "w")
  assert [r["queries"] for r in recs] == [8, 12]
  assert recs[-1]["teacher_accuracy"] == out["teacher_accuracy"]
  assert out["split_overlap"] == {"teacher_train&pool": 0,
                                  "teacher_train&test": 0, "pool&test": 0}
  assert out["allow_overlap"] is False
  assert json.loads((tmp_path / "w" / "teacher" / "teacher.json").read_text()
                    )["input_shape"] == [8, 8, 1]


def test_cli_idx_dir_odd_names_flat_and_saved_teacher(tmp_path):
  from jaxkd import main, teacher_training
  x, y = synthetic(60)
  tx, ty = synthetic(15, seed=1)
  d = tmp_path / "my files"
  d.mkdir()
  write_idx(d / "imgs.gz", x.reshape(60, 64), gz=True)  # flat [N, 64]
  write_idx(d / "lbls", y, gz=False)
  write_idx(d / "holdout-x", tx.reshape(15, 64), gz=False)
  write_idx(d / "holdout-y.gz", ty, gz=True)
  data_args = [f"--config.dataset=idx:{d}", "--config.image_shape=(8, 8)"]
  # Teacher first, in-process (the same entry point as the CLI).
  assert main.run_cli(["jaxkd", "--mode=teacher", f"--workdir={tmp_path}/t",
                       *data_args, *TINY]) == 0
  saved = str(tmp_path / "t" / "teacher")
  _, _, meta = teacher_training.load_teacher(saved)
  p = _cli([*data_args, "--workdir=w", f"--config.teacher.checkpoint={saved}",
            *TINY], tmp_path)
  assert p.returncode == 0, p.stderr[-3000:]
  out, recs = _records(tmp_path / "w")
  assert [r["queries"] for r in recs] == [8, 12]
  assert not (tmp_path / "w" / "teacher").exists()   # loaded, not trained
  assert out["teacher_accuracy"] == pytest.approx(meta["accuracy"])


# ---------------------------------------------- the own-data docs example ---


def test_own_data_example_runs(tmp_path):
  # A process of its own: one CPU device, as a user runs it.
  env = dict(os.environ, XLA_FLAGS="", PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
  p = subprocess.run([sys.executable, os.path.join(ROOT, "examples",
                                                   "own_data.py"),
                      "--tiny", f"--workdir={tmp_path}"], env=env,
                     capture_output=True, text=True, timeout=600)
  assert p.returncode == 0, p.stderr[-3000:]
  results = json.loads((tmp_path / "run" / "results.json").read_text())
  ranking = results["ranking"]
  assert sorted(r["strategy"] for r in ranking) == ["margin", "random"]
  finals = {k: [run[-1]["success_rate"] for run in v]
            for k, v in results["strategies"].items()}
  assert all(len(v) == 2 for v in finals.values())     # two seeds each
  top = ranking[0]
  assert top["final_success_mean"] == pytest.approx(
      max(np.mean(v) for v in finals.values()))
  assert top["final_success_std"] == pytest.approx(
      np.std(finals[top["strategy"]]))
  assert not (tmp_path / "run" / "teacher").exists()  # the saved one is used
  records = json.loads((tmp_path / "api" / "rounds.json").read_text())
  assert [r["queries"] for r in records] == [30, 40]
  assert "1. " in p.stdout and "run_loop: 40 queries" in p.stdout
