"""RAD against a teacher that is often wrong: Baykal et al., "Robust Active
Distillation" (ICLR 2023), on the reconstruction paper's Fashion-MNIST
protocol (`recon_fmnist.py`) with teachers of three error levels.

The teacher is LeNet-5 trained on the first `teacher_train` images of the
split's permutation (1,000, 5,000 or 30,000: the fewer, the more of its
soft labels are wrong); the student, LeNet-5-half distilled with Hinton KD
and retrained every round, starts from L = 500 and picks k = 300 a round
from U = 5,000 for 12 rounds with RAD (`selection/rad.py`, its
parameter-free m = estimated teacher error x k), margin, entropy, coreset
or random, 5 seeds. With `teacher_dir`, the split skips the first 30,000
images (every teacher's training images), so L, U and the 10,000 official
test images are the same at every teacher level: 30,000 + 500 + 5,000 of
the 60,000 training images. Run all of it with `python
experiments/reproduce.py rad_noisy_teacher`; by hand:

  python -m jaxkd.main --mode=teacher \
      --workdir=runs/rad_noisy_teacher_t1000_teacher \
      --config=experiments/configs/rad_noisy_teacher.py:teacher,\
teacher_train=1000
  python -m jaxkd.main --workdir=runs/rad_noisy_teacher_t1000 \
      --config=experiments/configs/rad_noisy_teacher.py:teacher_dir=\
runs/rad_noisy_teacher_t1000_teacher/teacher

Variants (after the colon, comma separated): teacher_train=N (default
30,000); teacher (train and save only the teacher, on those N images);
teacher_dir=PATH (the saved teacher; without it the job trains its own on
the first N images and L, U follow them, so they differ between levels);
quick (2 rounds, 1 seed, 100 student steps, a 2-epoch teacher);
data_dir=DIR (default ../shared/data/fashion_mnist).
"""

import os

from jaxkd.configs import common

_DATA = os.path.normpath(os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "shared",
    "data", "fashion_mnist"))

STRATEGIES = ("random", "rad", "margin", "entropy", "coreset")
TEACHER_SIZES = (1000, 5000, 30000)
# Skipped by the student's split when the teacher is loaded: the largest
# teacher's training images, which hold every smaller teacher's.
SKIP = max(TEACHER_SIZES)


def get_config(arg: str = ""):
  args = common.parse_arg(arg, teacher_train=30000, teacher=False,
                          teacher_dir="", quick=False, data_dir="")
  c = common.active_config(
      dataset="fashion_mnist", data_dir=args.data_dir or _DATA,
      # 12 rounds (500 -> 4,100 queries), not recon_fmnist's 15: 5 seeds x
      # 5 strategies x 3 teachers x 13 trainings of 1,500 steps fit about
      # 3 hours of one core; 15 rounds would not.
      student="lenet5_half", strategies=STRATEGIES, rounds=12,
      per_round=300, seeds=(0, 1, 2, 3, 4), progress=False)
  # recon_fmnist.py's teacher and student recipes, unchanged.
  c.teacher.update(model="lenet5", epochs=20, learning_rate=2e-3)
  c.loop.update(train_steps=1500, batch_size=64)
  if args.teacher:
    c.split.update(teacher_train=args.teacher_train, initial=0, pool=0,
                   test=0)
  elif args.teacher_dir:
    c.teacher.checkpoint = args.teacher_dir
    c.split.update(teacher_train=SKIP, initial=500, pool=5000, test=0)
  else:
    c.split.update(teacher_train=args.teacher_train, initial=500, pool=5000,
                   test=0)
  if args.quick:
    c.rounds, c.seeds, c.loop.train_steps, c.teacher.epochs = 2, (0,), 100, 2
  return c
