"""Strategy comparison on mnist5k (5,000 real MNIST digits), 3 seeds.

  python -m jaxkd.main --config=experiments/configs/compare_mnist5k.py \
      --workdir=runs/compare_mnist5k

Split of the 4,000 training digits: teacher-train 2,000 / initial L 100 /
pool U 1,900; the 1,000 test digits evaluate. 5 rounds of 100 queries.
`:quick` runs 2 rounds, 1 seed.
"""

import os

from jaxkd.configs import common

# ../shared/data/mnist_5k next to the repository (the brief's layout),
# wherever the command is run from; override with --config.data_dir.
_DATA = os.path.normpath(os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "shared",
    "data", "mnist_5k"))


def get_config(arg: str = ""):
  args = common.parse_arg(arg, quick=False)
  c = common.active_config(
      dataset="mnist5k", data_dir=_DATA, student="lenet5_half",
      strategies=("random", "entropy", "margin", "least_confidence",
                  "coreset", "admm", "rad", "gap_diversity", "badge"),
      rounds=5, per_round=100, seeds=(0, 1, 2), progress=False)
  c.split.update(teacher_train=2000, initial=100, pool=1900, test=0)
  c.teacher.update(epochs=15, learning_rate=2e-3)
  if args.quick:
    c.rounds, c.seeds, c.loop.train_steps = 2, (0,), 60
  return c
