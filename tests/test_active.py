"""The round loop: rounds, budget, resume with no repeated query, for pool
and mixup strategies alike."""

import collections

import numpy as np
import pytest

from jaxkd import loop
from jaxkd.checkpoint import Checkpointer
from jaxkd.models import get_model
from jaxkd.teacher import TeacherOracle
from jaxkd.validation import JaxkdError

N_INIT, N_POOL = 12, 60


class CountingTeacher:
  """A fixed linear teacher over 8x8x1 images that logs every image it sees."""

  def __init__(self, pool):
    rng = np.random.default_rng(0)
    self.w = rng.normal(size=(64, 4)) * 3
    self.pool = pool.reshape(len(pool), -1)
    self.seen = collections.Counter()

  def __call__(self, images):
    flat = images.reshape(len(images), -1)
    for row in flat:  # identify each image by its pool row
      self.seen[int(np.argmin(np.abs(self.pool - row).sum(1)))] += 1
    return flat @ self.w


def _setup(tmp_path, name="run"):
  rng = np.random.default_rng(1)
  pool = rng.random((N_INIT + N_POOL, 8, 8, 1)).astype(np.float32)
  teacher = CountingTeacher(pool)
  test_x = rng.random((20, 8, 8, 1)).astype(np.float32)
  test_y = np.argmax(test_x.reshape(20, -1) @ teacher.w, 1)
  settings = loop.LoopSettings(rounds=3, per_round=5, train_steps=4,
                                 batch_size=8)
  run_dir = str(tmp_path / name)
  return pool, teacher, test_x, test_y, settings, run_dir


def _run(pool, teacher, test_x, test_y, settings, run_dir, strategy="entropy"):
  oracle = TeacherOracle(teacher, pool, budget=N_INIT + 3 * 5,
                         ledger_path=run_dir + "/ledger.sqlite")
  try:
    recs = loop.run_loop(
        strategy=strategy, student=get_model("mlp", 4, hidden=(16,)),
        oracle=oracle, initial_indices=np.arange(N_INIT),
        candidate_indices=N_INIT + np.arange(N_POOL), test_images=test_x,
        test_labels=test_y, teacher_accuracy=1.0, settings=settings,
        workdir=run_dir, progress=False, log=lambda m: None)
    ledger = [(e["key"], e["round"]) for e in oracle.entries()]
  finally:
    oracle.close()
  return recs, ledger


def test_rounds_and_records(tmp_path):
  pool, teacher, tx, ty, settings, run_dir = _setup(tmp_path)
  recs, ledger = _run(pool, teacher, tx, ty, settings, run_dir)
  assert [r["round"] for r in recs] == [0, 1, 2, 3]
  assert [r["queries"] for r in recs] == [12, 17, 22, 27]
  assert len(ledger) == 27 and len({k for k, _ in ledger}) == 27
  assert max(teacher.seen.values()) == 1
  for r in recs:
    assert 0 <= r["student_accuracy"] <= 1
    assert r["success_rate"] == pytest.approx(r["student_accuracy"])


def test_resume_after_crash_between_query_and_checkpoint(tmp_path, monkeypatch):
  pool, teacher, tx, ty, settings, run_dir = _setup(tmp_path, "crashed")
  ref_pool, ref_teacher, *_ = _setup(tmp_path, "ref")
  ref_recs, ref_ledger = _run(ref_pool, ref_teacher, tx, ty, settings,
                              str(tmp_path / "ref"))

  real_save = Checkpointer.save

  def crashing_save(self, step, state, meta):
    if step == 2:  # round 2 was paid for, but the run dies before its checkpoint
      raise KeyboardInterrupt("simulated kill")
    return real_save(self, step, state, meta)

  monkeypatch.setattr(Checkpointer, "save", crashing_save)
  with pytest.raises(KeyboardInterrupt):
    _run(pool, teacher, tx, ty, settings, run_dir)
  monkeypatch.setattr(Checkpointer, "save", real_save)
  recs, ledger = _run(pool, teacher, tx, ty, settings, run_dir)

  assert max(teacher.seen.values()) == 1, "a point was sent to the teacher twice"
  assert ledger == ref_ledger
  assert [r["queries"] for r in recs] == [r["queries"] for r in ref_recs]


def test_records_count_queries_paid_up_to_their_round(tmp_path):
  """With the checkpoints lost, a rerun restarts at round 0 while the
  ledger already holds every round: each record still counts only the
  answers paid in rounds <= its own (issue 15), and nothing is paid again."""
  import shutil
  pool, teacher, tx, ty, settings, run_dir = _setup(tmp_path)
  _run(pool, teacher, tx, ty, settings, run_dir)
  shutil.rmtree(run_dir + "/checkpoints")
  recs, ledger = _run(pool, teacher, tx, ty, settings, run_dir)
  assert [r["queries"] for r in recs] == [12, 17, 22, 27]
  assert max(teacher.seen.values()) == 1 and len(ledger) == 27


def test_budget_and_names_are_checked(tmp_path):
  pool, teacher, tx, ty, settings, run_dir = _setup(tmp_path)
  oracle = TeacherOracle(teacher, pool, budget=N_INIT + 2,
                         ledger_path=run_dir + "/ledger.sqlite")
  kw = dict(student=get_model("mlp", 4), oracle=oracle,
            initial_indices=np.arange(N_INIT),
            candidate_indices=N_INIT + np.arange(N_POOL), test_images=tx,
            test_labels=ty, teacher_accuracy=1.0, settings=settings,
            workdir=run_dir, progress=False, log=lambda m: None)
  with pytest.raises(JaxkdError, match="exceed the budget"):
    loop.run_loop(strategy="random", **kw)
  with pytest.raises(JaxkdError, match="Unknown strategy"):
    loop.run_loop(strategy="nope", **kw)
  assert oracle.spent == 0
  oracle.close()


# ------------------------------------------------- Active Mixup, Algorithm 1


class HashingTeacher:
  """Linear teacher that counts how often it sees each exact image."""

  def __init__(self):
    self.w = np.random.default_rng(0).normal(size=(64, 4)) * 3
    self.seen = collections.Counter()

  def __call__(self, images):
    flat = np.asarray(images, np.float32).reshape(len(images), -1)
    for row in flat:
      self.seen[row.tobytes()] += 1
    return flat @ self.w


def _run_mixup(real, teacher, run_dir, selection="active"):
  """Active Mixup through the same loop: the oracle covers the real images
  (all of them L), the strategy queries mixup recipes of L."""
  settings = loop.LoopSettings(rounds=2, per_round=4, train_steps=4,
                                 batch_size=8)
  oracle = TeacherOracle(teacher, real, budget=len(real) + 8,
                         ledger_path=run_dir + "/ledger.sqlite")
  test_x = real[:4]
  try:
    recs = loop.run_loop(
        strategy=f"{selection}_mixup",
        student=get_model("mlp", 4, hidden=(16,)), oracle=oracle,
        initial_indices=np.arange(len(real)), test_images=test_x,
        test_labels=np.zeros(4, np.int32),
        teacher_accuracy=1.0, settings=settings, workdir=run_dir,
        progress=False, log=lambda m: None)
    rows = oracle.entries()
  finally:
    oracle.close()
  return recs, rows


@pytest.mark.parametrize("selection", ["active", "random"])
def test_mixup_loop_pays_real_images_then_distinct_pairs(tmp_path, selection):
  real = np.random.default_rng(2).random((8, 8, 8, 1)).astype(np.float32)
  teacher = HashingTeacher()
  recs, rows = _run_mixup(real, teacher, str(tmp_path / selection), selection)
  assert [r["queries"] for r in recs] == [8, 12, 16]
  assert [r["round"] for r in rows] == [0] * 8 + [1] * 4 + [2] * 4
  assert sorted(r["pool_index"] for r in rows[:8]) == list(range(8))
  pairs = [(r["i"], r["j"]) for r in rows[8:]]
  assert all(0 <= i < j < 8 for i, j in pairs)
  assert len(set(pairs)) == 8, "a pair was queried twice"
  grid = np.round(np.arange(0.3, 0.7001, 0.04), 6)
  assert all(np.isclose(grid, r["lam"]).any() for r in rows[8:])
  assert max(teacher.seen.values()) == 1
  # The ledger's answers are the teacher's answers on x_ij(lam).
  for r in rows[8:]:
    x = r["lam"] * real[r["i"]] + (1 - r["lam"]) * real[r["j"]]
    logits = x.reshape(-1) @ teacher.w
    p = np.exp(logits - logits.max())
    np.testing.assert_allclose(r["probs"], p / p.sum(), rtol=1e-4, atol=1e-6)


def test_mixup_loop_resumes_without_paying_twice(tmp_path, monkeypatch):
  real = np.random.default_rng(3).random((8, 8, 8, 1)).astype(np.float32)
  _, ref_rows = _run_mixup(real, HashingTeacher(), str(tmp_path / "ref"))

  real_save = Checkpointer.save

  def crashing_save(self, step, state, meta):
    if step == 1:  # round 1 paid for, killed before its checkpoint
      raise KeyboardInterrupt("simulated kill")
    return real_save(self, step, state, meta)

  teacher = HashingTeacher()
  monkeypatch.setattr(Checkpointer, "save", crashing_save)
  with pytest.raises(KeyboardInterrupt):
    _run_mixup(real, teacher, str(tmp_path / "crashed"))
  monkeypatch.setattr(Checkpointer, "save", real_save)
  recs, rows = _run_mixup(real, teacher, str(tmp_path / "crashed"))
  assert max(teacher.seen.values()) == 1, "an image was sent to the teacher twice"
  key = lambda rs: [(r["key"], r["round"]) for r in rs]
  assert key(rows) == key(ref_rows)
  assert [r["queries"] for r in recs] == [8, 12, 16]


def test_experiment_runs_registered_and_mixup_strategies(tmp_path):
  import json
  import os

  import ml_collections

  from jaxkd import experiment
  from jaxkd.configs import common
  c = ml_collections.ConfigDict(dict(
      dataset="digits", data_dir="",
      split=dict(teacher_train=200, initial=20, pool=60, test=100, seed=0),
      teacher=dict(model="mlp", epochs=2, batch_size=64, optimizer="adam",
                   learning_rate=3e-3, seed=0),
      student="mlp", strategies=("margin", "active_mixup", "vanilla_mixup"),
      strategy_options={}, rounds=1, per_round=5, seeds=(0,),
      hard_labels=False, loop=common.loop_config(train_steps=3),
      progress=False))
  out = experiment.train_and_evaluate(c, str(tmp_path))
  assert set(out["strategies"]) == {"margin", "active_mixup", "vanilla_mixup"}
  for runs in out["strategies"].values():
    assert [r["queries"] for r in runs[0]] == [20, 25]
  assert os.path.exists(tmp_path / "curve.png")
  with open(tmp_path / "results.json") as f:
    saved = json.load(f)
  assert "active_mixup" in saved["table"]
  assert saved["unpaid_teacher_forwards"] == sum(
      r["unpaid_teacher_forwards"] for runs in out["strategies"].values()
      for r in runs[0])
  # A lost ledger is never taken for a new one when the run has checkpoints
  # (issue 15): the rerun refuses, naming the file, before paying anything.
  ledger = tmp_path / "margin" / "seed0" / "ledger.sqlite"
  os.remove(ledger)
  with pytest.raises(JaxkdError, match="is missing or empty") as e:
    experiment.train_and_evaluate(c, str(tmp_path))
  assert str(ledger) in str(e.value) and "\n" not in str(e.value)
  assert not os.path.exists(ledger)
  c.strategies = ("nope",)
  with pytest.raises(JaxkdError, match="Unknown strategy"):
    experiment.train_and_evaluate(c, str(tmp_path / "bad"))
