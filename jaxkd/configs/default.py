"""Default job: active distillation on the bundled scikit-learn digits.

Runs offline in a few minutes on 2 CPU cores:

  python -m jaxkd.main --workdir runs/digits

Trains a LeNet-5 teacher on 700 digits, then for each strategy pays the
teacher for an initial 50 points and 5 rounds of 40 more from a pool of 547,
retraining a half-width LeNet-5 student every round. `active_mixup` and
`random_mixup` instead spend the 5 x 40 queries on mixup images of the 50
initial digits (Active Mixup, Algorithm 1). Override anything from
the command line, e.g. `--config.rounds=8 --config.strategies='("random",)'`.
`--config=jaxkd/configs/default.py:quick` runs a 2-round smoke test.
"""

from jaxkd.configs import common


def get_config(arg: str = ""):
  args = common.parse_arg(arg, quick=False)
  c = common.active_config()
  if args.quick:
    c.rounds = 2
    c.strategies = ("random", "entropy")
    c.loop.train_steps = 60
    c.teacher.epochs = 10
  return c
