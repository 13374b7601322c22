"""Active Mixup (Wang et al., CVPR 2020), Algorithm 1, vs random mixup.

  python -m jaxkd.main --config=experiments/configs/active_mixup.py:digits \
      --workdir=runs/active_mixup
  python -m jaxkd.main \
      --config=experiments/configs/active_mixup.py:mnist,data_dir=DIR
  (variants: digits, mnist, fashion_mnist, mnist5k; add `,quick` for a
  2-round, 1-seed smoke run)

A teacher is trained on a teacher-train split of 700 images. The student's
real images are n = 100 further training images (all paid for in round 0);
each of 4 rounds pays for 100 mixup images x_ij(lam*) of the least-confident
pairs (active_mixup) or of random pairs with random grid lambdas
(random_mixup), and a new student is trained (soft cross-entropy) on
everything paid for. Both spend exactly the same queries; 3 seeds.
"""

from jaxkd.configs import common


def get_config(arg: str = "digits"):
  args = common.parse_arg(arg, digits=False, mnist=False,
                          fashion_mnist=False, mnist5k=False, quick=False,
                          data_dir="")
  c = common.active_config(
      strategies=("active_mixup", "random_mixup"), rounds=4, per_round=100,
      seeds=(0, 1, 2), progress=False)
  c.split.update(teacher_train=700, initial=100, pool=0)
  c.loop.loss = "soft_ce"
  for name in ("mnist", "fashion_mnist", "mnist5k"):
    if args[name]:
      c.dataset = name
  c.data_dir = args.data_dir
  if args.quick:
    c.rounds, c.seeds, c.loop.train_steps, c.teacher.epochs = 2, (0,), 60, 10
  return c
