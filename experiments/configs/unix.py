"""UNIX vs KD vs Random+KD: accuracy and computation, 3 seeds, one table.

The protocol of "Computation-Efficient Knowledge Distillation via
Uncertainty-Aware Mixup" (Xu, Liu, Loy) scaled to a CPU: a teacher trained on
the train split with hard labels, then a student distilled from it with
plain KD (all N images of every batch), Random+KD (a random k of N, no
mixup) and UNIX (the k most uncertain of N, uncertainty-aware mixup), the
same epochs for all. Computation E = N_t F_t + N_s1 F_s + N_s2 B_s from XLA's
FLOP counts, relative to plain KD (100%).

  python -m jaxkd.main --config=experiments/configs/unix.py:digits \
      --workdir=runs/unix                      # 2-3 minutes on 2 cores
  python -m jaxkd.main --workdir=runs/unix_fmnist \
      --config=experiments/configs/unix.py:fashion_mnist,data_dir=DIR

Variants: digits, fashion_mnist (max_train 10000), full (with
fashion_mnist: all 60,000 training images, the size of issue 11's UNIX
reproduction; data_dir defaults to ../shared/data/fashion_mnist), ablations
(all six methods), quick (2 epochs, 1 seed). Override any field, e.g.
`--config.unix.w=1000` or `--config.unix.uncertainty=margin` (the paper's
w and uncertainty ablations are one run each).
"""

import os

from jaxkd.configs import common

_FMNIST = os.path.normpath(os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "shared",
    "data", "fashion_mnist"))


def get_config(arg: str = "digits"):
  args = common.parse_arg(arg, digits=False, fashion_mnist=False,
                          full=False, ablations=False, quick=False,
                          data_dir="")
  c = common.unix_config()
  c.data_dir = args.data_dir
  if args.fashion_mnist:
    c.dataset = "fashion_mnist"
    c.unix.max_train = 0 if args.full else 10000
    c.data_dir = args.data_dir or (_FMNIST if args.full else "")
    if args.full:
      # 60,000 images: 10 epochs (9,380 steps) and a 15-epoch teacher keep
      # the 9 main runs near 15 minutes on 2 cores.
      c.unix.epochs, c.teacher.epochs = 10, 15
  if args.ablations:
    c.unix.methods = ("kd", "random_kd", "uncertainty", "mixup",
                      "non_adaptive", "unix")
  if args.quick:
    c.unix.epochs, c.teacher.epochs, c.seeds = 2, 2, (0,)
  return c
