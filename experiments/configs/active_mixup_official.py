"""Active Mixup on the authors' protocol (Wang et al., CVPR 2020; official
code dwang181/active-mixup, `active_train.py`).

The student is retrained from scratch at every step with the official
schedule: SGD (momentum 0.9, weight decay 5e-4), batch 128, 200 epochs in
blocks of 80, 60, 40 and 20 from lr 0.01, divided by 10 after each block,
soft-target cross-entropy on the teacher's softmax, random crops of the
image's size after zero padding (the official `RandomCrop(32, padding=4)`
on 32 x 32 CIFAR images; here padding 2 on 28 x 28 digits and clothes, the
same 1/8 of the side; no flips, which would change a digit's meaning and
are not in the official crop-only transform). The test accuracy is also
tracked after every epoch: the official code keeps the best test epoch,
recorded here as `best_test_accuracy` beside the last epoch's.

Variants (comma separated):
  mnist | fashion_mnist  T = 1, Table 1's sizes: 2,000 real + 22,000
                         mixup (MNIST) or 2,000 + 46,000 (Fashion-MNIST)
  multistep              Figure 4-style, Fashion-MNIST: 1,000 real
                         images, `steps` active steps of `per_step` mixup
                         queries each, active vs random mixup vs vanilla
  steps=6, per_step=4000 the multi-step plan
  epochs=200             the schedule's length; blocks keep the 80:60:40:20
                         proportions at any length
  teacher                the teacher on all 60,000 training images
  teacher_dir=PATH       the saved teacher (required except with teacher)
  quick                  2 epochs, 200 + 400 queries, one seed (smoke)
  data_dir=DIR

  python experiments/reproduce.py active_mixup_official
  python experiments/reproduce.py active_mixup_multistep
"""

import os

from jaxkd.configs import common

_DATA = os.path.normpath(os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "shared",
    "data"))

SIZES = {"mnist": (2000, 22000), "fashion_mnist": (2000, 46000)}
STRATEGIES = ("active_mixup", "random_mixup", "vanilla_mixup")


def official_student(c, epochs: float) -> None:
  """The official student schedule on config `c` (see the docstring)."""
  c.loop.update(optimizer="sgd", learning_rate=0.01, momentum=0.9,
                weight_decay=5e-4, batch_size=128, epochs=float(epochs),
                train_steps=1, schedule="blocks", lr_blocks=(80, 60, 40, 20),
                augment="random_crop", crop_padding=2, loss="soft_ce",
                track_best_test=True, retrain=True)


def get_config(arg: str = "mnist"):
  args = common.parse_arg(arg, mnist=False, fashion_mnist=False,
                          multistep=False, steps=6, per_step=4000,
                          epochs=200.0, teacher=False, teacher_dir="",
                          quick=False, data_dir="")
  dataset = ("fashion_mnist" if args.fashion_mnist or args.multistep
             else "mnist")
  real, mixup = SIZES[dataset]
  rounds = 1
  if args.multistep:
    real, mixup, rounds = 1000, args.per_step, args.steps
  if args.quick:
    real, mixup = 200, 400
  c = common.active_config(
      dataset=dataset, data_dir=args.data_dir or os.path.join(_DATA, dataset),
      student="lenet5_half", strategies=STRATEGIES, rounds=rounds,
      per_round=mixup, seeds=(0,) if args.quick else (0, 1, 2),
      progress=False)
  official_student(c, 2 if args.quick else args.epochs)
  # The teacher: LeNet-5 on all 60,000 training images (10 epochs of Adam,
  # as in the T = 1 reproduction; the paper's teacher is trained apart).
  c.teacher.update(model="lenet5", epochs=1 if args.quick else 10,
                   learning_rate=2e-3)
  if args.teacher:
    c.split.update(teacher_train=60000, initial=0, pool=0, test=0)
    return c
  c.teacher.checkpoint = args.teacher_dir
  c.split.update(teacher_train=0, initial=real, pool=0, test=0)
  return c
