"""Every registered strategy under one protocol, 3 seeds, one table + plot.

The protocol of "Knowledge Distillation in Deep Networks under a Constrained
Query Budget", scaled to the 5,000 real MNIST digits of mnist5k: a teacher
trained on its own split, an initial labelled set L paid for in round 0, then
rounds of a fixed budget chosen from the unlabelled pool U, the student
retrained each round and evaluated on a held-out test split.

  python experiments/compare.py --workdir runs/compare_mnist5k \
      --config experiments/configs/compare_mnist5k.py

--config.data_dir defaults to ../shared/data/mnist_5k beside the
repository. Resumable: rerun the same command after a kill and finished
rounds are not repeated or re-paid.
"""

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_DEFAULT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs",
                        "compare_mnist5k.py")
config_flags.DEFINE_config_file("config", _DEFAULT, "Experiment config.",
                                lock_config=True)
flags.DEFINE_string("workdir", "runs/compare_mnist5k", "Run directory.")


def main(argv):
  del argv
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
  from jaxkd import experiment
  experiment.train_and_evaluate(flags.FLAGS.config, flags.FLAGS.workdir)


if __name__ == "__main__":
  app.run(main)
