"""Entry point: `python -m jaxkd.main [--config=FILE.py[:arg]] [--workdir=DIR]`.

With no flags it runs the default digits job (jaxkd/configs/default.py) in
./runs/digits. On several hosts, call with `--multihost` so that
`jax.distributed.initialize()` runs before JAX touches a device.
"""

import os

from absl import app, flags, logging
from ml_collections import config_flags

_DEFAULT = os.path.join(os.path.dirname(__file__), "configs", "default.py")
config_flags.DEFINE_config_file("config", _DEFAULT, "Experiment config file.",
                                lock_config=True)
flags.DEFINE_string("workdir", "runs/digits", "Run directory (resumable).")
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
  experiment.train_and_evaluate(FLAGS.config, FLAGS.workdir)


if __name__ == "__main__":
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  app.run(main)
