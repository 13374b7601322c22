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


# Epoch losses measured on Fashion-MNIST (LeNet-5-half from lenet5_w2, SGD,
# 5 warm-up epochs of 10): at lr 0.02 every fc2 unit died in epoch 5.
DIVERGED_LR_002 = [10.28, 4.30, 4.32, 5.82, 27.03, 33.18, 33.18, 33.18,
                   33.17, 33.17]
STABLE_LR_001 = [12.02, 4.31, 3.76, 3.60, 3.85, 3.72, 3.12, 2.44, 1.94, 1.66]
STABLE_LR_0005 = [14.33, 4.75, 3.71, 3.30, 3.23, 3.01, 2.51, 2.09, 1.71, 1.50]


def test_divergence_warning_names_the_first_epoch_past_the_factor():
  msg = health.divergence_warning(DIVERGED_LR_002, "kd seed 0",
                                  "config.unix.lr")
  # Lowest before epoch 5 is 4.30 (epoch 2); 5.82 < 1.5 x 4.30 = 6.45 is not
  # flagged, 27.03 is.
  assert msg == ("kd seed 0: the training loss diverged (4.3 at epoch 2, "
                 "27.03 at epoch 5): the step size is past what this "
                 "student tolerates; lower config.unix.lr.")
  assert health.divergence_warning(STABLE_LR_001, "x") is None
  assert health.divergence_warning(STABLE_LR_0005, "x") is None
  assert health.divergence_warning([], "x") is None
  assert health.divergence_warning([2.0, 3.0], "x") is None       # 1.5 x
  assert "epoch 2" in health.divergence_warning([2.0, 3.01], "x")
  assert "nan at epoch 3" in health.divergence_warning(
      [2.0, 1.0, float("nan")], "x")
  assert "inf at epoch 1" in health.divergence_warning([float("inf")], "x")


def test_the_unix_job_checks_every_students_loss_history(tmp_path, capsys,
                                                         monkeypatch):
  # On digits a student that diverges dies inside its first epoch (21
  # steps), so no epoch mean falls first; the Fashion-MNIST history above
  # stands in for the real one the job gets back from unix_fit.
  from jaxkd import experiment, unix
  from jaxkd.configs import common
  real_fit = unix.unix_fit
  seen = []

  def fit(*args, **kwargs):
    state, history = real_fit(*args, **kwargs)
    seen.append(list(history))
    return state, (DIVERGED_LR_002 if len(seen) == 2 else history)

  monkeypatch.setattr(unix, "unix_fit", fit)
  c = common.unix_config(seeds=(0, 1), progress=False)
  c.teacher.epochs = 5
  c.unix.update(methods=("kd",), epochs=2)
  experiment.train_and_evaluate(c, str(tmp_path))
  out = capsys.readouterr()
  lines = [l for l in (out.out + out.err).splitlines() if "diverged (" in l]
  assert len(seen) == 2 and all(len(h) == 2 for h in seen)
  assert lines == ["KD seed 1: the training loss diverged (4.3 at epoch 2, "
                   "27.03 at epoch 5): the step size is past what this "
                   "student tolerates; lower config.unix.lr."]
