"""Active loop: rounds, budget, resume with no repeated query."""

import collections

import numpy as np
import pytest

from jaxkd import active
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
  settings = active.LoopSettings(rounds=3, per_round=5, train_steps=4,
                                 batch_size=8)
  run_dir = str(tmp_path / name)
  return pool, teacher, test_x, test_y, settings, run_dir


def _run(pool, teacher, test_x, test_y, settings, run_dir, strategy="entropy"):
  oracle = TeacherOracle(teacher, pool, budget=N_INIT + 3 * 5,
                         ledger_path=run_dir + "/ledger.sqlite")
  try:
    recs = active.run_active_loop(
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
    active.run_active_loop(strategy="random", **kw)
  with pytest.raises(JaxkdError, match="Unknown strategy"):
    active.run_active_loop(strategy="nope", **kw)
  assert oracle.spent == 0
  oracle.close()
