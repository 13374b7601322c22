"""Library inputs that used to pass silently (issue 15): each raises a
one-line JaxkdError, and no teacher query is paid."""

import gzip
import os
import sqlite3
import tracemalloc

import jax
import numpy as np
import pytest

from jaxkd.data import idx as local
from jaxkd.selection.baselines import coreset_select, random_select
from jaxkd.teacher import TeacherOracle
from jaxkd.validation import JaxkdError


class Teacher:
  def __init__(self):
    self.calls = 0
    self.w = np.random.default_rng(0).normal(size=(4, 3))

  def __call__(self, images):
    self.calls += 1
    return images.reshape(len(images), -1).astype(np.float64) @ self.w


def _pool(n=6):
  return np.random.default_rng(1).random((n, 2, 2, 1)).astype(np.float32)


def _one_line(excinfo):
  msg = str(excinfo.value)
  assert "\n" not in msg, msg
  return msg


def _rows(path):
  if not os.path.exists(path):
    return []
  db = sqlite3.connect(path)
  try:
    return db.execute("SELECT key FROM answers").fetchall()
  finally:
    db.close()


@pytest.mark.parametrize("key", ["p:3", "mix:0:1:0.500000", "", 3])
def test_query_images_reserved_or_bad_keys(tmp_path, key):
  pool, t = _pool(), Teacher()
  path = str(tmp_path / "ledger.sqlite")
  oracle = TeacherOracle(t, pool, budget=5, ledger_path=path)
  with pytest.raises(JaxkdError) as e:
    oracle.query_images([key], pool[:1] * 0.5)
  _one_line(e)
  assert t.calls == 0 and oracle.spent == 0 and _rows(path) == []
  # Pool point 3 is still paid for with its own image, not the custom one.
  np.testing.assert_allclose(
      oracle.query([3])[0],
      jax.nn.softmax(pool[3].reshape(-1).astype(np.float64) @ t.w),
      rtol=1e-5)
  oracle.close()


@pytest.mark.parametrize("batch_size", [2.5, True, 0, -1, "3"])
def test_oracle_batch_size_must_be_a_positive_int(tmp_path, batch_size):
  path = str(tmp_path / "ledger.sqlite")
  with pytest.raises(JaxkdError, match="batch_size") as e:
    TeacherOracle(Teacher(), _pool(), budget=5, ledger_path=path,
                  batch_size=batch_size)
  _one_line(e)
  assert not os.path.exists(path)


def test_random_select_integer_mask():
  key = jax.random.key(0)
  with pytest.raises(JaxkdError, match="bool mask") as e:
    random_select(key, np.array([0, 2, 0, 3, 0, 0]), 2)
  _one_line(e)
  # 0/1 integers are a mask: only the available points are picked.
  for seed in range(5):
    picks = np.asarray(random_select(jax.random.key(seed),
                                     np.array([0, 1, 0, 1, 1, 0]), 3))
    assert sorted(picks.tolist()) == [1, 3, 4]


@pytest.mark.parametrize("what", ["available", "centers"])
def test_coreset_select_mask_length(what):
  emb = np.random.default_rng(0).normal(size=(6, 3)).astype(np.float32)
  kw = dict(available=np.ones(6, bool), centers=None)
  kw[what] = np.ones(5, bool) if what == "available" else np.zeros(7, bool)
  with pytest.raises(JaxkdError, match=what) as e:
    coreset_select(emb, kw["available"], 2, centers=kw["centers"])
  _one_line(e)


def test_corrupt_ledger_names_the_file(tmp_path):
  path = str(tmp_path / "ledger.sqlite")
  with open(path, "wb") as f:
    f.write(os.urandom(8192))
  t = Teacher()
  with pytest.raises(JaxkdError) as e:
    TeacherOracle(t, _pool(), budget=5, ledger_path=path)
  msg = _one_line(e)
  assert path in msg and "To recover" in msg
  assert t.calls == 0


def _idx(arr):
  head = bytes([0, 0, 8, arr.ndim]) + b"".join(
      int(d).to_bytes(4, "big") for d in arr.shape)
  return head + arr.astype(np.uint8).tobytes()


def test_gzip_reads_are_bounded_by_the_idx_header(tmp_path):
  arr = np.arange(24).reshape(2, 3, 4)
  path = str(tmp_path / "x-idx3-ubyte.gz")
  # 64 MiB of zeros after a 24-byte image file: ~64 KiB compressed.
  with open(path, "wb") as f:
    f.write(gzip.compress(_idx(arr) + bytes(64 << 20)))
  assert os.path.getsize(path) < 1 << 20
  tracemalloc.start()
  try:
    with pytest.raises(JaxkdError, match="trailing data after the 24 bytes"
                       ) as e:
      local.read_idx(path)
    peak = tracemalloc.get_traced_memory()[1]
  finally:
    tracemalloc.stop()
  assert path in _one_line(e)
  assert peak < 4 << 20, peak  # gzip.decompress would hold 64 MiB
  # A well-formed file in two gzip members still reads exactly.
  raw = _idx(arr)
  with open(path, "wb") as f:
    f.write(gzip.compress(raw[:9]) + gzip.compress(raw[9:]))
  np.testing.assert_array_equal(local.read_idx(path), arr)


def test_lost_teacher_next_to_ledgers_is_refused_not_retrained(tmp_path,
                                                               monkeypatch):
  """workdir/teacher deleted while run ledgers exist: one line, no training."""
  from jaxkd import settings, teacher_training
  from jaxkd.configs import common
  from jaxkd.jobs import active, inputs
  config = common.active_config(progress=False)
  dataset, pools = inputs.load_pools(settings.parse(config))
  run = tmp_path / "random" / "seed0"
  run.mkdir(parents=True)
  (run / "ledger.sqlite").write_bytes(b"")
  trained = []
  monkeypatch.setattr(teacher_training, "train_teacher",
                      lambda *a, **k: trained.append(1))
  with pytest.raises(JaxkdError) as e:
    active.train_teacher(settings.parse(config), dataset, pools,
                         str(tmp_path), None)
  assert "ledger" in _one_line(e) and not trained
