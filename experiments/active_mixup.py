"""Active Mixup (Wang et al., CVPR 2020), Algorithm 1, vs random mixup queries.

  python experiments/active_mixup.py                       # digits, 3 seeds
  python experiments/active_mixup.py --dataset=mnist --data_dir=../shared/data/mnist
  python experiments/active_mixup.py --dataset=fashion_mnist \
      --data_dir=../shared/data/fashion_mnist

A teacher is trained on a teacher-train split. The student's real images are
n further training images (all paid for in round 0); each round pays for
`per_round` mixup images x_ij(lam*) of the least-confident pairs (active) or
of random pairs with random grid lambdas (random), and a new student is
trained on everything paid for. Both selections spend exactly the same number
of queries. Writes results.json and curve.png in --workdir; resumable.
"""

import json
import os
import sys
import time

import numpy as np
from absl import app, flags, logging

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

flags.DEFINE_string("dataset", "digits", "digits | mnist | fashion_mnist | mnist5k")
flags.DEFINE_string("data_dir", "", "Directory of the IDX / CSV files.")
flags.DEFINE_string("workdir", "runs/active_mixup", "Run directory.")
flags.DEFINE_string("teacher", "lenet5", "Teacher model.")
flags.DEFINE_string("student", "lenet5_half", "Student model.")
flags.DEFINE_integer("teacher_train", 700, "Teacher training images.")
flags.DEFINE_integer("n_real", 100, "Real images the student may use (n).")
flags.DEFINE_integer("rounds", 4, "Active rounds T.")
flags.DEFINE_integer("per_round", 100, "Mixup queries per round (k).")
flags.DEFINE_integer("train_steps", 300, "Student SGD steps per round.")
flags.DEFINE_integer("teacher_epochs", 30, "Teacher epochs.")
flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds.")
flags.DEFINE_list("selections", ["active", "random"], "Pair selections.")
flags.DEFINE_bool("progress", False, "Show per-step progress bars.")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  if not FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
  import ml_collections
  from jaxkd import active, experiment, parallel, plotting
  from jaxkd.configs import common
  from jaxkd.models import get_model
  from jaxkd.teacher import TeacherOracle, flax_teacher_fn

  t_start = time.time()
  config = ml_collections.ConfigDict(dict(
      dataset=FLAGS.dataset, data_dir=FLAGS.data_dir, progress=FLAGS.progress,
      split=dict(teacher_train=FLAGS.teacher_train, initial=FLAGS.n_real,
                 pool=0, test=0, seed=0),
      teacher=common.teacher_config(model=FLAGS.teacher,
                                    epochs=FLAGS.teacher_epochs)))
  mesh = parallel.make_mesh()
  dataset, pools = experiment.load_pools(config)
  teacher, teacher_vars, teacher_acc = experiment.train_teacher(
      config, dataset, pools, FLAGS.workdir, mesh)
  real = pools.initial_images  # the n real images (their labels are unused)
  lc = common.loop_config(train_steps=FLAGS.train_steps, loss="soft_ce")
  results = {}
  for selection in FLAGS.selections:
    for seed in map(int, FLAGS.seeds):
      run_dir = os.path.join(FLAGS.workdir, f"mixup_{selection}", f"seed{seed}")
      oracle = TeacherOracle(
          flax_teacher_fn(teacher, teacher_vars), real,
          budget=len(real) + FLAGS.rounds * FLAGS.per_round,
          ledger_path=os.path.join(run_dir, "ledger.sqlite"))
      settings = active.LoopSettings(
          rounds=FLAGS.rounds, per_round=FLAGS.per_round,
          train_steps=lc.train_steps, batch_size=lc.batch_size,
          optimizer=lc.optimizer, learning_rate=lc.learning_rate, loss=lc.loss,
          seed=seed)
      try:
        recs = active.run_mixup_loop(
            selection=selection,
            student=get_model(FLAGS.student, dataset.num_classes),
            oracle=oracle, test_images=pools.test_images,
            test_labels=pools.test_labels, teacher_accuracy=teacher_acc,
            settings=settings, workdir=run_dir, mesh=mesh,
            progress=FLAGS.progress)
      finally:
        oracle.close()
      results.setdefault(f"mixup_{selection}", []).append(recs)
  table = experiment.summary_table(results)
  with open(os.path.join(FLAGS.workdir, "results.json"), "w") as f:
    json.dump({"flags": FLAGS.flag_values_dict(), "teacher_accuracy": teacher_acc,
               "strategies": results, "table": table}, f, indent=1, default=str)
  plotting.plot_success_curves(
      results, os.path.join(FLAGS.workdir, "curve.png"),
      title=f"Active Mixup on {FLAGS.dataset} (n={len(real)})")
  print(f"\nteacher {FLAGS.teacher}: {teacher_acc:.4f}; student {FLAGS.student}, "
        f"n={len(real)} real images, {FLAGS.rounds} x {FLAGS.per_round} mixup queries")
  print(table)
  print(f"({time.time() - t_start:.0f}s)")


if __name__ == "__main__":
  app.run(main)
