"""Reconstruction selection on CIFAR-10 (Singh & Chakraborty, "Knowledge
Distillation in Deep Networks under a Constrained Query Budget", Figure 1b,
Figure 2's budgets, Figure 4a's KD), at the paper's sizes (Table 1): an
AlexNet teacher on 30,000 CIFAR-10 training images (paper: 75.34%), the
AlexNet-half student, initial L = 500, pool U = 5,000, the 10,000 official
test images, k = 300 per round, 15 rounds, alpha = 1e-6, theta = 1e-5,
beta = 0.5 (Eq. 20), Hinton KD, the student retrained every round, 3 seeds.
The dataset is tfds's `cifar10` (`tfds build cifar10
--file_format=array_record` once).

  python -m jaxkd.main --config=experiments/configs/cifar_recon.py \
      --workdir=runs/recon_cifar10
  variants (after the colon, comma separated): k=100|200|300|500 (Figure
  2), hard_labels (the teacher answers one-hot labels), all (every pool
  strategy, not just the paper's five), quick (2 rounds, 1 seed),
  data_dir=DIR (the tfds data_dir).
"""

from jaxkd.configs import common

DATASET = "tfds:cifar10"
TEACHER, STUDENT = "alexnet_cifar", "alexnet_cifar_half"
PAPER_STRATEGIES = ("random", "learning_loss", "coreset", "discriminative",
                    "admm")


def get_config(arg: str = ""):
  args = common.parse_arg(arg, k=300, hard_labels=False, all=False,
                          quick=False, data_dir="")
  strategies = PAPER_STRATEGIES
  if args.all:
    strategies += ("entropy", "margin", "least_confidence", "badge", "rad")
  c = common.active_config(
      dataset=DATASET, data_dir=args.data_dir, student=STUDENT,
      # U = 5,000 holds 15 rounds up to k = 333: k = 500 runs 10 rounds.
      strategies=strategies, rounds=min(15, 5000 // args.k),
      per_round=args.k, seeds=(0, 1, 2), hard_labels=args.hard_labels,
      progress=False)
  c.split.update(teacher_train=30000, initial=500, pool=5000, test=0)
  # The teacher's and student's schedules are in the paper's supplement,
  # not its text: 30 Adam epochs for the teacher; for the student ~20
  # epochs of the largest labelled set (500 + 15 x 300 = 5,000) at batch
  # 64, as in recon_fmnist.py.
  c.teacher.update(model=TEACHER, epochs=30, learning_rate=1e-3)
  c.loop.update(train_steps=1500, batch_size=64)
  c.strategy_options.admm = dict(alpha=1e-6, theta=1e-5, beta=0.5)
  # As in recon_fmnist.py: 5 sub-batches and at most 250 steps (the
  # authors' 20 x 500 cost several times more per round).
  c.strategy_options.discriminative = dict(sub_batches=5, steps=250)
  if args.quick:
    c.rounds, c.seeds, c.loop.train_steps, c.teacher.epochs = 2, (0,), 100, 2
  return c
