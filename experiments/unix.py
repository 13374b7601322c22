"""UNIX vs KD vs Random+KD: accuracy and computation, 3 seeds, one table.

The protocol of "Computation-Efficient Knowledge Distillation via
Uncertainty-Aware Mixup" (Xu, Liu, Loy) scaled to a CPU: train a teacher on
the train split with hard labels, then distil a student from it with plain KD
(all N images of every batch), Random+KD (a random k of N, no mixup) and UNIX
(the k most uncertain of N, uncertainty-aware mixup), the same epochs for
all. Computation is E = N_t F_t + N_s1 F_s + N_s2 B_s from XLA's FLOP counts,
relative to plain KD (100%). Default (digits, lenet5 -> lenet5_half, about
2-3 minutes on 2 cores):

  python experiments/unix.py

Fashion-MNIST (28x28; --max_train subsamples the 60k train split):

  python experiments/unix.py --dataset fashion_mnist \
      --data_dir /work/shared/data/fashion_mnist --max_train 10000

Ablations: --methods kd,random_kd,uncertainty,mixup,non_adaptive,unix and
--w 1 / 10 / 1000. Writes <workdir>/results.json.
"""

import json
import os
import sys
import time

from absl import app, flags, logging

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

flags.DEFINE_string("dataset", "digits", "jaxkd.data dataset name.")
flags.DEFINE_string("data_dir", None, "Folder with the dataset files.")
flags.DEFINE_integer("max_train", 0, "Subsample the train split (0: all).")
flags.DEFINE_string("teacher", "lenet5", "Teacher model.")
flags.DEFINE_string("student", "lenet5_half", "Student model.")
flags.DEFINE_list("methods", ["kd", "random_kd", "unix"],
                  "Methods (jaxkd.unix.METHODS).")
flags.DEFINE_list("seeds", ["0", "1", "2"], "Student seeds.")
flags.DEFINE_integer("epochs", 30, "Student epochs (all methods).")
flags.DEFINE_integer("teacher_epochs", 30, "Teacher epochs.")
flags.DEFINE_integer("batch_size", 64, "N: images drawn per step.")
flags.DEFINE_integer("k", 48, "Images kept per step by selective methods.")
flags.DEFINE_float("w", 10.0, "Correction-factor slope.")
flags.DEFINE_float("b", None, "Correction-factor bias (default N/2).")
flags.DEFINE_float("alpha", 1.0, "Beta(alpha, alpha) for lam.")
flags.DEFINE_string("uncertainty", "entropy",
                    "entropy, confidence or margin (UNIX-style methods).")
flags.DEFINE_float("temperature", 4.0, "KD temperature.")
flags.DEFINE_float("ce_weight", 0.0, "CE weight (teacher argmax labels).")
flags.DEFINE_float("kd_weight", 1.0, "KD weight.")
flags.DEFINE_enum("feature_loss", "none", ["none", "at", "sp"],
                  "Extra feature-based term (AT weight 1000, SP 3000).")
flags.DEFINE_float("lr", 0.02, "Student SGD learning rate (cosine).")
flags.DEFINE_float("weight_decay", 5e-4, "Student weight decay.")
flags.DEFINE_integer("warmup_epochs", 2,
                     "Linear lr warm-up; without it one of 3 lenet5_half seeds "
                     "never left the uniform output (KD loss x T^2 = 16).")
flags.DEFINE_string("workdir", "runs/unix", "Output folder.")
flags.DEFINE_bool("progress", True, "Show progress bars.")
FLAGS = flags.FLAGS

NAMES = {"kd": "KD", "random_kd": "Random+KD", "uncertainty": "Uncertainty",
         "mixup": "Mixup", "non_adaptive": "Non-adaptive mixup",
         "unix": "UNIX"}


def train_teacher(ds, model, mesh):
  import jax
  import numpy as np
  from jaxkd import train
  steps = FLAGS.teacher_epochs * -(-ds.num_train // FLAGS.batch_size)
  tx = train.make_optimizer("adam", 3e-3, total_steps=steps)
  state = train.create_train_state(model, jax.random.key(1234),
                                   ds.image_shape, tx)
  onehot = np.eye(ds.num_classes, dtype=np.float32)[ds.train_labels]
  state, _ = train.fit(model, state, ds.train_images, onehot,
                       ds.train_labels, epochs=FLAGS.teacher_epochs,
                       batch_size=FLAGS.batch_size, seed=1234,
                       loss_fn=train.make_loss_fn("hard_ce"), mesh=mesh,
                       desc="teacher", progress=FLAGS.progress)
  return state.variables


def main(argv):
  del argv
  if not FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  import jax
  import numpy as np
  from jaxkd import cost, parallel, train, unix
  from jaxkd.data import load_dataset
  from jaxkd.models import get_model

  t_start = time.time()
  ds = load_dataset(FLAGS.dataset, FLAGS.data_dir)
  train_x, train_y = ds.train_images, ds.train_labels
  if FLAGS.max_train and FLAGS.max_train < len(train_x):
    idx = np.random.default_rng(0).permutation(len(train_x))[:FLAGS.max_train]
    train_x, train_y = train_x[idx], train_y[idx]
    ds = type(ds)(train_x, train_y, ds.test_images, ds.test_labels,
                  num_classes=ds.num_classes, name=ds.name)
  mesh = parallel.make_mesh()
  teacher = get_model(FLAGS.teacher, ds.num_classes)
  student = get_model(FLAGS.student, ds.num_classes)

  teacher_vars = train_teacher(ds, teacher, mesh)
  teacher_acc = train.accuracy(teacher, teacher_vars, ds.test_images,
                               ds.test_labels, mesh=mesh)
  print(f"teacher {FLAGS.teacher}: test accuracy {100 * teacher_acc:.2f}%")

  steps = FLAGS.epochs * -(-len(train_x) // FLAGS.batch_size)
  tx = train.make_optimizer(
      "sgd", FLAGS.lr, weight_decay=FLAGS.weight_decay, total_steps=steps,
      warmup_steps=FLAGS.warmup_epochs * -(-len(train_x) // FLAGS.batch_size))
  probe = train.create_train_state(student, jax.random.key(0), ds.image_shape,
                                   tx)
  flops = cost.kd_cost(student, probe.variables, teacher, teacher_vars,
                       ds.image_shape)
  print(f"F_t {flops.teacher_forward:.3g}, F_s {flops.student_forward:.3g}, "
        f"B_s {flops.student_backward:.3g} FLOPs/image; "
        f"F_t/F_s = {flops.teacher_student_ratio:.2f}")

  overrides = dict(w=FLAGS.w, b=FLAGS.b, alpha=FLAGS.alpha,
                   temperature=FLAGS.temperature, ce_weight=FLAGS.ce_weight,
                   kd_weight=FLAGS.kd_weight,
                   feature_loss=None if FLAGS.feature_loss == "none"
                   else FLAGS.feature_loss)
  results = {}
  for method in FLAGS.methods:
    kw = dict(overrides)
    if unix.METHODS.get(method, {}).get("uncertainty") == "entropy":
      kw["uncertainty"] = FLAGS.uncertainty
    config = unix.method_config(method, batch_size=FLAGS.batch_size,
                                k=FLAGS.k, **kw)
    runs = []
    for seed in map(int, FLAGS.seeds):
      t0 = time.time()
      state = train.create_train_state(student, jax.random.key(seed),
                                       ds.image_shape, tx)
      counter = cost.CostCounter()
      state, history = unix.unix_fit(
          student, state, teacher, teacher_vars, train_x,
          epochs=FLAGS.epochs, batch_size=FLAGS.batch_size, seed=seed,
          config=config, mesh=mesh, counter=counter,
          progress=FLAGS.progress, desc=f"{method} seed {seed}")
      acc = train.accuracy(student, state.variables, ds.test_images,
                           ds.test_labels, mesh=mesh)
      runs.append({"seed": seed, "accuracy": acc,
                   "computation": counter.relative_to_kd(flops),
                   "counts": counter.as_dict(), "final_loss": history[-1],
                   "seconds": time.time() - t0})
      print(f"{NAMES.get(method, method)} seed {seed}: "
            f"{100 * acc:.2f}% in {runs[-1]['seconds']:.1f}s")
    accs = np.array([r["accuracy"] for r in runs])
    results[method] = {
        "config": {k: v for k, v in vars(config).items()},
        "runs": runs, "accuracy_mean": float(accs.mean()),
        "accuracy_std": float(accs.std()),
        "computation": float(np.mean([r["computation"] for r in runs]))}

  lines = [f"dataset {FLAGS.dataset} ({len(train_x)} train / "
           f"{len(ds.test_labels)} test), teacher {FLAGS.teacher} "
           f"{100 * teacher_acc:.2f}%, student {FLAGS.student}, "
           f"F_t/F_s = {flops.teacher_student_ratio:.2f}, N = "
           f"{FLAGS.batch_size}, k = {FLAGS.k}, w = {FLAGS.w:g}, "
           f"{FLAGS.epochs} epochs, seeds {','.join(FLAGS.seeds)}",
           "",
           "| method | accuracy (%) | computation |",
           "| --- | --- | --- |"]
  for method, r in results.items():
    lines.append(f"| {NAMES.get(method, method)} | "
                 f"{100 * r['accuracy_mean']:.2f} ± "
                 f"{100 * r['accuracy_std']:.2f} | "
                 f"{100 * r['computation']:.2f}% |")
  table = "\n".join(lines)
  print()
  print(table)
  os.makedirs(FLAGS.workdir, exist_ok=True)
  out = {"dataset": FLAGS.dataset, "teacher": FLAGS.teacher,
         "student": FLAGS.student, "teacher_accuracy": teacher_acc,
         "flops_per_image": vars(flops),
         "teacher_student_ratio": flops.teacher_student_ratio,
         "flags": {f: FLAGS[f].value for f in (
             "batch_size", "k", "w", "b", "alpha", "epochs", "teacher_epochs",
             "lr", "warmup_epochs", "weight_decay", "temperature", "ce_weight", "kd_weight",
             "feature_loss", "uncertainty", "max_train", "seeds")},
         "methods": results, "table": table,
         "wall_seconds": time.time() - t_start}
  path = os.path.join(FLAGS.workdir, "results.json")
  with open(path, "w") as f:
    json.dump(out, f, indent=2)
  print(f"\nwrote {path} ({time.time() - t_start:.0f}s)")


if __name__ == "__main__":
  app.run(main)
