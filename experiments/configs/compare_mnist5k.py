"""Strategy comparison on mnist5k (5,000 real MNIST digits), 3 seeds.

  python experiments/compare.py --config experiments/configs/compare_mnist5k.py

Split of the 4,000 training digits: teacher-train 2,000 / initial L 100 /
pool U 1,900; the 1,000 test digits evaluate. 5 rounds of 100 queries.
`:quick` runs 2 rounds, 1 seed.
"""

import os

import ml_collections

from jaxkd.configs import common

# ../shared/data/mnist_5k next to the repository (the brief's layout),
# wherever the command is run from; override with --config.data_dir.
_DATA = os.path.normpath(os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "shared",
    "data", "mnist_5k"))


def get_config(arg: str = ""):
  args = common.parse_arg(arg, quick=False)
  c = ml_collections.ConfigDict()
  c.dataset = "mnist5k"
  c.data_dir = _DATA
  c.split = ml_collections.ConfigDict(dict(
      teacher_train=2000, initial=100, pool=1900, test=0, seed=0))
  c.teacher = common.teacher_config(epochs=15, learning_rate=2e-3)
  c.student = "lenet5_half"
  c.strategies = ("random", "entropy", "margin", "least_confidence",
                  "coreset", "admm", "rad", "gap_diversity", "badge")
  c.strategy_options = ml_collections.ConfigDict()
  c.rounds = 5
  c.per_round = 100
  c.seeds = (0, 1, 2)
  c.hard_labels = False
  c.loop = common.loop_config(train_steps=300)
  c.progress = False
  if args.quick:
    c.rounds, c.seeds, c.loop.train_steps = 2, (0,), 60
  return c
