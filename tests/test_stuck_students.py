"""No stuck students: 10 seeds of the UNIX job on digits all leave chance.

Before the students' inputs were standardized, one lenet5_half student in
ten stayed at the uniform output (10.6% test accuracy, every conv1 channel
dead): its escape from the initial plateau, near the end of the 5-epoch
warm-up, ended in a gradient spike that momentum carried on until every
conv1 pre-activation w . x + b was negative for all x >= 0. It happened by
step ~90 of 105, so 5 epochs (the warm-up alone: the first 105 steps are
those of the 30-epoch job) reproduce it.
"""

import functools

import pytest

from jaxkd import experiment, health
from jaxkd.configs import common
from jaxkd.models import lenet, register_model

SEEDS = tuple(range(10))

# The same students and teachers with XLA's convolution everywhere (the
# default "auto" runs the few-channel layers as a banded matmul on CPU).
register_model("lenet5_half_xla", functools.partial(
    lenet.LeNet5, channels=(3, 8), hidden=(60, 42), conv_impl="xla"))
register_model("lenet5_xla", functools.partial(lenet.LeNet5,
                                               conv_impl="xla"))


@pytest.mark.parametrize("student,teacher", [
    ("lenet5_half", "lenet5"), ("lenet5_half_xla", "lenet5_xla")])
def test_no_unix_job_student_is_stuck_at_chance(tmp_path, student, teacher):
  c = common.unix_config(student=student, seeds=SEEDS, progress=False)
  c.teacher.model = teacher
  c.unix.update(methods=("kd",), epochs=5)
  out = experiment.train_and_evaluate(c, str(tmp_path))
  runs = out["strategies"]["kd"][0]
  assert [r["seed"] for r in runs] == list(SEEDS)
  stuck = [w for w in (health.chance_warning(
      r["student_accuracy"], 10, f"kd seed {r['seed']}") for r in runs) if w]
  assert not stuck, "\n".join(stuck)
