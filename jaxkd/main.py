"""Entry point: `python -m jaxkd.main [--config=FILE.py[:arg]] [--workdir=DIR]`.

With no flags it runs the default digits job (jaxkd/configs/default.py) in
./runs/digits; `--strategy=admm,random` picks the strategies to compare. On several hosts, call with `--multihost` so that
`jax.distributed.initialize()` runs before JAX touches a device.
"""

import os

from absl import app, flags, logging
from ml_collections import config_flags

_DEFAULT = os.path.join(os.path.dirname(__file__), "configs", "default.py")
config_flags.DEFINE_config_file("config", _DEFAULT, "Experiment config file.",
                                lock_config=True)
flags.DEFINE_string("workdir", "runs/digits", "Run directory (resumable).")
flags.DEFINE_list("strategy", None,
                  "Strategies to compare, overriding config.strategies, e.g. "
                  "--strategy=random,admm (any registered name, or "
                  "active_mixup / random_mixup).")
flags.DEFINE_bool("multihost", False, "Call jax.distributed.initialize().")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  if not FLAGS["verbosity"].present:  # orbax logs every save at INFO
    logging.set_verbosity(logging.WARNING)
  import jax
  if FLAGS.multihost:
    jax.distributed.initialize()
  from jaxkd import experiment
  config = FLAGS.config
  if FLAGS.strategy:
    config = config.copy_and_resolve_references()
    config.strategies = tuple(FLAGS.strategy)
  experiment.train_and_evaluate(config, FLAGS.workdir)


if __name__ == "__main__":
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  app.run(main)
