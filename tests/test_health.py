"""chance_warning: a trained student at chance is named, others are not."""

import pytest

from jaxkd import health
from jaxkd.validation import JaxkdError


def test_chance_warning_flags_below_one_and_a_half_times_chance():
  # 10 classes: chance 10%, flagged below 15%.
  msg = health.chance_warning(0.106, 10, "kd seed 7")
  assert msg.startswith("kd seed 7: test accuracy 10.60% is at chance")
  assert "\n" not in msg and "15.00%" in msg
  assert health.chance_warning(0.0, 10, "x") is not None
  assert health.chance_warning(0.1499, 10, "x") is not None
  assert health.chance_warning(0.15, 10, "x") is None
  assert health.chance_warning(0.95, 10, "x") is None
  # 100 classes: flagged below 1.5%; 2 classes: below 75%.
  assert health.chance_warning(0.012, 100, "x") is not None
  assert health.chance_warning(0.02, 100, "x") is None
  assert health.chance_warning(0.6, 2, "x") is not None
  assert health.chance_warning(0.8, 2, "x") is None


@pytest.mark.parametrize("acc,c", [(0.5, 1), (0.5, 0), (0.5, 2.5), (0.5, True),
                                   (-0.1, 10), (1.2, 10),
                                   (float("nan"), 10)])
def test_chance_warning_rejects_bad_arguments(acc, c):
  with pytest.raises(JaxkdError):
    health.chance_warning(acc, c, "x")


def test_the_loop_warns_when_a_trained_student_is_at_chance(tmp_path):
  import numpy as np
  from jaxkd import loop
  from jaxkd.models import get_model
  from jaxkd.teacher import TeacherOracle
  rng = np.random.default_rng(0)
  pool = rng.random((40, 8, 8, 1)).astype(np.float32)
  probs = np.full((40, 10), 0.1, np.float32)
  oracle = TeacherOracle(lambda x: probs[:len(x)], pool,
                         budget=40, ledger_path=str(tmp_path / "ledger.sqlite"))
  test_labels = np.arange(50) % 10  # balanced: a constant output is 10%
  lines = []
  loop.run_loop(strategy="random", student=get_model("mlp", 10),
                oracle=oracle, initial_indices=np.arange(10),
                candidate_indices=np.arange(10, 40),
                test_images=rng.random((50, 8, 8, 1)).astype(np.float32),
                test_labels=test_labels, teacher_accuracy=0.9,
                settings=loop.LoopSettings(rounds=0, train_steps=1),
                workdir=str(tmp_path / "w"), progress=False,
                log=lines.append)
  assert any("chance" in l for l in lines), lines
