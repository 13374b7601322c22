"""Active Mixup on CIFAR-10 (Wang et al., CVPR 2020, Figure 4, left).

The paper's CIFAR-10 study: a VGG-16 teacher trained on the 50,000 training
images (paper: 93.31%); the VGG-16 student sees n = 500 real images (all
paid, round 0; paper: 43.67% from them alone) and then T = 10 active steps
of 10,000 mixup queries each (100,000 of the 124,750 pairs of 500 images,
lambda grid 0.30, 0.34, ..., 0.70), trained on the teacher's softmax
answers (soft cross-entropy). Compared, as in Figure 4, with random search
(random pairs at the single lambda = 0.5) and vanilla AL (the lowest C1 over
every pair and lambda). The dataset is tfds's `cifar10`, prepared once with
`tfds build cifar10 --file_format=array_record` (or any prepared copy:
`tfds.load`'s TFRecords are read through TensorFlow).

  python -m jaxkd.main --mode=teacher --workdir=runs/am_cifar10_teacher \
      --config=experiments/configs/cifar_active_mixup.py:teacher
  python -m jaxkd.main --workdir=runs/am_cifar10 \
      --config=experiments/configs/cifar_active_mixup.py:teacher_dir=\
runs/am_cifar10_teacher/teacher

Variants: teacher (train the teacher on all 50,000); teacher_dir=PATH (the
saved teacher, required except with `teacher`); data_dir=DIR (the tfds
data_dir; default tfds's own).
"""

from jaxkd.configs import common

DATASET = "tfds:cifar10"
MODEL = "vgg16_am"  # models/vgg.py VGG('VGG16') of the official code
REAL, STEPS, PER_STEP = 500, 10, 10000
STRATEGIES = ("active_mixup", "random_mixup", "vanilla_mixup")

# The official student schedule (dwang181/active-mixup active_train.py):
# SGD, momentum 0.9, weight decay 5e-4, batch 128, random crop (pad 4) and
# horizontal flip, 200 epochs of each step's labelled set in blocks of
# 80/60/40/20 epochs from lr 0.01, divided by 10 after each block (a fresh
# SGD, so fresh momentum, per block), a fresh student every step.
EPOCH_BLOCKS = (80, 60, 40, 20)
LR, MOMENTUM, WEIGHT_DECAY, BATCH = 0.01, 0.9, 5e-4, 128


def official_steps(real: int = REAL, steps: int = STEPS,
                   per_step: int = PER_STEP) -> list:
  """Student steps the official code trains at step t = 0..T: 200 epochs of
  the real + t x per_step images at batch 128."""
  return [sum(EPOCH_BLOCKS) * -(-(real + t * per_step) // BATCH)
          for t in range(steps + 1)]


def get_config(arg: str = ""):
  args = common.parse_arg(arg, teacher=False, teacher_dir="", data_dir="")
  c = common.active_config(
      dataset=DATASET, data_dir=args.data_dir, student=MODEL,
      strategies=STRATEGIES, rounds=STEPS, per_round=PER_STEP, seeds=(0,),
      progress=False)
  # The official student schedule: epochs of each step's labelled set,
  # blocks of 80/60/40/20 from lr 0.01 (one SGD over the blocks: its
  # momentum is not reset between blocks as the official fresh optimizer's
  # is), random crops after 4-pixel padding and horizontal flips; the best
  # test epoch is recorded beside the last (the official code keeps it).
  c.loop.update(optimizer="sgd", learning_rate=LR, momentum=MOMENTUM,
                weight_decay=WEIGHT_DECAY, batch_size=BATCH,
                epochs=float(sum(EPOCH_BLOCKS)), schedule="blocks",
                lr_blocks=EPOCH_BLOCKS, augment="random_crop_flip",
                crop_padding=4, loss="soft_ce", track_best_test=True,
                retrain=True)
  # Figure 4's random search: one lambda, 0.5, so no two random picks share
  # a pair's image.
  c.strategy_options.random_mixup = dict(lambdas=(0.5,))
  # The teacher's recipe is not in the official code (it loads a trained
  # cifar10_vgg16_teacher.pth): the student's optimizer, lr and batch here.
  c.teacher.update(model=MODEL, epochs=sum(EPOCH_BLOCKS), batch_size=BATCH,
                   optimizer="sgd", learning_rate=LR)
  if args.teacher:
    c.split.update(teacher_train=50000, initial=0, pool=0, test=0)
    return c
  # The teacher saw all 50,000 training images; the student's 500 real
  # images come from the same 50,000 (test=0: the official 10,000 test).
  c.teacher.checkpoint = args.teacher_dir
  c.split.update(teacher_train=0, initial=REAL, pool=0, test=0)
  return c
