"""The strategy guide's runs: every default pool strategy, 3 seeds, on four
datasets, with what each costs (seconds per round, unpaid teacher
forwards, peak memory) measured by the job.

  python experiments/strategy_guide.py            # all four, resumable
  python -m jaxkd.main --config=experiments/configs/strategy_guide.py:fmnist \
      --workdir=runs/guide_fmnist

Variants: digits (the main job's split, 3 seeds), fmnist (Fashion-MNIST:
teacher lenet5 on 10,000 training images, initial L 200, pool U 3,000,
5 rounds of 200, the 10,000 official test images), folder=DIR (own data:
a folder of PNGs in class sub-folders, e.g. the 10,000 MNIST test digits
written by `experiments/strategy_guide.py --make_folder=DIR`: teacher on
4,000, L 100, U 3,000, 5 rounds of 100, test 2,000). mnist5k is
experiments/configs/compare_mnist5k.py with the same strategies.
"""

import os

from jaxkd.configs import common

_DATA = os.path.normpath(os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "shared",
    "data", "fashion_mnist"))

STRATEGIES = ("random", "entropy", "margin", "least_confidence", "coreset",
              "admm", "rad", "gap_diversity", "badge")


def get_config(arg: str = ""):
  args = common.parse_arg(arg, digits=False, fmnist=False, folder="")
  if args.fmnist:
    c = common.active_config(
        dataset="fashion_mnist", data_dir=_DATA, student="lenet5_half",
        strategies=STRATEGIES, rounds=5, per_round=200, seeds=(0, 1, 2),
        progress=False)
    c.split.update(teacher_train=10000, initial=200, pool=3000, test=0)
    c.teacher.update(model="lenet5", epochs=10, learning_rate=2e-3)
    c.loop.update(train_steps=800, batch_size=64)
  elif args.folder:
    c = common.active_config(
        dataset=f"folder:{args.folder}", student="lenet5_half",
        strategies=STRATEGIES, rounds=5, per_round=100, seeds=(0, 1, 2),
        progress=False)
    c.split.update(teacher_train=4000, initial=100, pool=3000, test=2000)
    c.teacher.update(model="lenet5", epochs=10, learning_rate=2e-3)
  else:  # digits: the main job's split and schedule, 3 seeds
    c = common.active_config(strategies=STRATEGIES, seeds=(0, 1, 2),
                             progress=False)
  return c
