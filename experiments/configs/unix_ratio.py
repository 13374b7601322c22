"""UNIX in its regime: a teacher 12 times the student's FLOPs, on all 60,000
Fashion-MNIST training images.

Xu, Liu & Loy's UNIX saves computation only when F_t >> F_s: a step keeping
k of N images costs k / N + 1 / (r + 2) of plain KD with r = F_t / F_s (the
paper's B_s = F_s; `jaxkd.cost`), and its Table 1 pairs have r = 8.22 to
174. `unix.py`'s LeNet-5 -> LeNet-5-half has r of about 3; here the teacher
is `lenet5_w2` (LeNet-5 with every width doubled, `jaxkd.models.wide`),
r = 12.05 by XLA's count against the same LeNet-5-half student, between the
paper's WRN-40-2 -> ShuffleV1 (8.22) and ResNet50 -> VGG8 (13.56). KD,
Random+KD and UNIX (w = 10, entropy) at N = 64 and k = 48 or 40, 10 epochs
(9,380 steps) each, 3 seeds; the teacher trains 15 epochs on the same
60,000 images with hard labels. The students' SGD rate is 0.005, not the
digits job's 0.02: at 0.02 this pair's KD loss climbed once the warm-up
passed about 0.01 (epochs 2-4), then blew up and left most fc2 units dead
(2 of 3 KD seeds and 1 Random+KD seed at the uniform output); 0.01 trained
but its loss rose at the peak rate; 0.005 is the largest rate of the
halving grid whose loss never rose (`python experiments/unix_lr_sweep.py`).
Run all of it with `python experiments/reproduce.py unix_ratio`; by hand:

  python -m jaxkd.main --workdir=runs/unix_ratio_k48 \
      --config=experiments/configs/unix_ratio.py:k=48
  python -m jaxkd.main --workdir=runs/unix_ratio_k40 \
      --config=experiments/configs/unix_ratio.py:k=40,\
teacher_dir=runs/unix_ratio_k48/teacher

Variants (after the colon, comma separated): k=48|40 (images kept of
N = 64); teacher_dir=PATH (a saved teacher instead of training one);
methods=a+b (a subset of kd, random_kd, unix, '+'-separated); quick
(2 epochs, 1 seed, 10,000 train images, a 2-epoch teacher); data_dir=DIR
(default ../shared/data/fashion_mnist).
"""

import os

from jaxkd.configs import common

_FMNIST = os.path.normpath(os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "shared",
    "data", "fashion_mnist"))

TEACHER, STUDENT = "lenet5_w2", "lenet5_half"
METHODS = ("kd", "random_kd", "unix")
LR = 0.005  # the largest stable rate of experiments/unix_lr_sweep.py


def get_config(arg: str = ""):
  args = common.parse_arg(arg, k=48, teacher_dir="", methods="+".join(METHODS),
                          quick=False, data_dir="")
  c = common.unix_config(dataset="fashion_mnist",
                         data_dir=args.data_dir or _FMNIST, student=STUDENT,
                         progress=False)
  c.unix.update(k=args.k, max_train=0, epochs=10, lr=LR,
                methods=tuple(filter(None, args.methods.split("+"))))
  c.teacher.update(model=TEACHER, epochs=15, checkpoint=args.teacher_dir)
  if args.quick:
    c.unix.update(epochs=2, max_train=10000)
    c.teacher.epochs, c.seeds = 2, (0,)
  return c
