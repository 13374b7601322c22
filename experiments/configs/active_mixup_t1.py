"""Active Mixup, Table 1 (T = 1), at the paper's sizes on MNIST / FMNIST.

Wang et al., CVPR 2020: a LeNet-5 teacher trained on all 60,000 training
images; the student (LeNet-5-half) sees n real images (all paid, round 0)
and, in the one active step (T = 1), pays for the mixup images of the
least-confident pairs: MNIST 2,000 real + 22,000 mixup (paper: 98.74%,
success 99.45%), Fashion-MNIST 2,000 + 46,000 (paper: 80.90%, 89.10%).
Compared with random mixup of the same count, "vanilla AL" (the lowest C1
over every pair and lambda, near-duplicates allowed; Figure 4) and the KD
upper bound (the student on all 60,000 training images with the teacher's
answers). Run all of it with `python experiments/reproduce.py
active_mixup_t1`; by hand:

  python -m jaxkd.main --mode=teacher --workdir=runs/am_t1_mnist_teacher \
      --config=experiments/configs/active_mixup_t1.py:mnist,teacher
  python -m jaxkd.main --workdir=runs/am_t1_mnist \
      --config=experiments/configs/active_mixup_t1.py:mnist,teacher_dir=\
runs/am_t1_mnist_teacher/teacher

Variants: mnist | fashion_mnist; teacher (the teacher on all 60,000);
half (1,000 real + half the mixup queries); upper (KD on all 60,000, no
active step); teacher_dir=PATH (the saved teacher, required except with
`teacher`); data_dir=DIR (default ../shared/data/<dataset>).
"""

import os

from jaxkd.configs import common

_DATA = os.path.normpath(os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "shared",
    "data"))

# Table 1 of the paper: (real images, mixup queries) at T = 1.
SIZES = {"mnist": (2000, 22000), "fashion_mnist": (2000, 46000)}
STRATEGIES = ("active_mixup", "random_mixup", "vanilla_mixup")


def get_config(arg: str = "mnist"):
  args = common.parse_arg(arg, mnist=False, fashion_mnist=False,
                          teacher=False, half=False, upper=False,
                          teacher_dir="", data_dir="")
  dataset = "fashion_mnist" if args.fashion_mnist else "mnist"
  real, mixup = SIZES[dataset]
  if args.half:
    real, mixup = real // 2, mixup // 2
  c = common.active_config(
      dataset=dataset, data_dir=args.data_dir or os.path.join(_DATA, dataset),
      student="lenet5_half", strategies=STRATEGIES, rounds=1,
      per_round=mixup, seeds=(0,) if not args.half else (0, 1, 2),
      progress=False)
  c.loop.loss = "soft_ce"
  # The student's schedule is not in the paper: 5,000 Adam steps at batch
  # 64 (13 epochs of 24,000 images, 7 of 48,000, 5 of 60,000), the same
  # for every method and round.
  c.loop.update(train_steps=5000, batch_size=64)
  # 10 epochs of 60,000 images (9,380 steps).
  c.teacher.update(model="lenet5", epochs=10, learning_rate=2e-3)
  if args.teacher:
    c.split.update(teacher_train=60000, initial=0, pool=0, test=0)
    return c
  # The teacher saw all 60,000 images (the paper's setting): it is loaded
  # from its folder, so the split below has no teacher-train part and the
  # student's real images come from the same 60,000.
  c.teacher.checkpoint = args.teacher_dir
  c.split.update(teacher_train=0, initial=real, pool=0, test=0)
  if args.upper:
    c.strategies, c.rounds, c.per_round = ("random",), 0, 1
    c.split.initial = 60000
    c.seeds = (0, 1, 2)
  return c
