"""UNIX on CIFAR-100 (Xu, Liu & Loy), the official teacher -> student pairs.

The pairs, learning rates and schedule of xuguodong03/UNIXKD
(`command/command.sh`, `student_v0.py`, `teacher.py`): a teacher trained on
the 50,000 CIFAR-100 training images with hard labels, then each student
distilled from it by KD (all N = 64 images of a batch), Random+KD and UNIX
(k = 48 of N = 64 kept, b = 32, w = 10, entropy ranking, Beta(1, 1) mixup,
KD at T = 4 with no CE term), 240 epochs, SGD momentum 0.9, weight decay
5e-4, 4 seeds (the README averages 4 runs). The dataset is tfds's
`cifar100` (`tfds build cifar100 --file_format=array_record` once).

  python -m jaxkd.main --mode=teacher --workdir=runs/unix_c100_wrn_40_2 \
      --config=experiments/configs/cifar_unix.py:pair=wrn_40_2-wrn_16_2
  python -m jaxkd.main --workdir=runs/unix_c100_wrn_40_2-wrn_16_2 \
      --config=experiments/configs/cifar_unix.py:pair=wrn_40_2-wrn_16_2,\
teacher_dir=runs/unix_c100_wrn_40_2/teacher

Variants: pair=TEACHER-STUDENT (official names, default
resnet32x4-resnet8x4: `student_v0.py`'s defaults); teacher_dir=PATH (a
saved teacher: one per teacher serves all its students); ablations (all six
methods); data_dir=DIR (the tfds data_dir). Without teacher_dir the job
trains its teacher first (in WORKDIR/teacher).
"""

from jaxkd.configs import common
from jaxkd.validation import JaxkdError

DATASET = "tfds:cifar100"

# command/command.sh, in its order: (teacher, student, student lr).
OFFICIAL_PAIRS = (
    ("vgg13", "MobileNetV2", 0.01),
    ("ResNet50", "vgg8", 0.05),
    ("ResNet50", "MobileNetV2", 0.01),
    ("wrn_40_2", "ShuffleV1", 0.01),
    ("resnet32x4", "ShuffleV1", 0.01),
    ("resnet32x4", "ShuffleV2", 0.01),
    ("wrn_40_2", "wrn_16_2", 0.05),
    ("resnet32x4", "resnet8x4", 0.05),
    ("wrn_40_2", "wrn_40_1", 0.05),
    ("resnet56", "resnet20", 0.05),
    ("vgg13", "vgg8", 0.05),
    ("vgg16", "vgg8", 0.05),
)
# Official (models/__init__.py model_dict) name -> jaxkd model name; None:
# not in jaxkd.models yet.
JAXKD_NAMES = {
    "resnet20": "resnet20", "resnet56": "resnet56", "resnet8x4": "resnet8x4",
    "resnet32x4": "resnet32x4", "ResNet50": None, "wrn_16_2": "wrn_16_2",
    "wrn_40_1": "wrn_40_1", "wrn_40_2": "wrn_40_2", "vgg8": "vgg8",
    "vgg13": "vgg13", "vgg16": "vgg16", "MobileNetV2": "mobilenetv2",
    "ShuffleV1": "shufflenet_v1", "ShuffleV2": None,
}

# student_v0.py / teacher.py defaults (both: 240 epochs, batch 64, SGD
# momentum 0.9, weight decay 5e-4, lr / 10 at epochs 150, 180, 210).
EPOCHS, BATCH, K, B, W, T = 240, 64, 48, 32.0, 10.0, 4.0
MILESTONES = (150, 180, 210)
TEACHER_LR = 0.05


def pair_names():
  """The official pairs as 'teacher-student' variant values."""
  return [f"{t}-{s}" for t, s, _ in OFFICIAL_PAIRS]


def _jaxkd_name(name: str) -> str:
  model = JAXKD_NAMES[name]
  if model is None:
    raise JaxkdError(f"The official UNIX model {name!r} is not in "
                     "jaxkd.models yet; pick another pair.")
  return model


def get_config(arg: str = ""):
  args = common.parse_arg(arg, pair="resnet32x4-resnet8x4", teacher_dir="",
                          ablations=False, data_dir="")
  lrs = {f"{t}-{s}": lr for t, s, lr in OFFICIAL_PAIRS}
  if args.pair not in lrs:
    raise JaxkdError(f"pair={args.pair!r} is not an official UNIX pair; "
                     f"use one of: {', '.join(pair_names())}.")
  teacher, student = args.pair.split("-")
  c = common.unix_config(dataset=DATASET, data_dir=args.data_dir,
                         student=_jaxkd_name(student), seeds=(0, 1, 2, 3),
                         progress=False)
  # jaxkd's UNIX job has a cosine schedule (with linear warm-up, off here)
  # and no augmentation: the closest to the official step schedule.
  c.unix.update(epochs=EPOCHS, batch_size=BATCH, k=K, b=B, w=W, alpha=1.0,
                uncertainty="entropy", temperature=T, ce_weight=0.0,
                kd_weight=1.0, optimizer="sgd", lr=lrs[args.pair],
                weight_decay=5e-4, warmup_epochs=0, max_train=0)
  if args.ablations:
    c.unix.methods = ("kd", "random_kd", "uncertainty", "mixup",
                      "non_adaptive", "unix")
  c.teacher.update(model=_jaxkd_name(teacher), epochs=EPOCHS,
                   batch_size=BATCH, optimizer="sgd",
                   learning_rate=TEACHER_LR, checkpoint=args.teacher_dir)
  return c
