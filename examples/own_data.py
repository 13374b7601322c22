"""Your own images, your own teacher, and which strategy to use.

  python examples/own_data.py [--workdir runs/own_data]

The documentation's own-data and own-teacher pages as one
script (tests/test_own_data.py runs it at a tiny size):

1. own arrays -> an .npz in the Keras layout;
2. train, evaluate and save a teacher (Python; `--mode=teacher` is the same
   from the shell);
3. run several strategies against that saved teacher, exactly as
   `python -m jaxkd.main ...` would;
4. read the ranking and the per-round records;
5. the same loop with any teacher function (a paid API, say) through
   `TeacherOracle` + `run_loop`.

The "own" images here are scikit-learn's digits stored as uint8, standing
in for an image set of yours (about 2 minutes on 2 CPU cores).
"""

import argparse
import json
import os

import numpy as np


def my_arrays():
  """Stand-in for your data: uint8 images [N, H, W] and int labels [N],
  train and test (here the bundled 8x8 digits)."""
  from sklearn.datasets import load_digits
  d = load_digits()
  x = np.round(d.images * 255 / 16).astype(np.uint8)  # [1797, 8, 8]
  y = d.target
  return x[:1297], y[:1297], x[1297:], y[1297:]


def main(workdir: str, tiny: bool = False):
  from jaxkd import data, main as cli, teacher_training
  os.makedirs(workdir, exist_ok=True)

  # 1. Own arrays -> .npz (Keras layout: x_train, y_train, x_test, y_test).
  #    Images may be [N, H, W], [N, H, W, C] or flat [N, D] (then give
  #    --config.image_shape), uint8 or float in [0, 1].
  x_train, y_train, x_test, y_test = my_arrays()
  if tiny:
    x_train, y_train, x_test, y_test = (x_train[:200], y_train[:200],
                                        x_test[:100], y_test[:100])
  npz = os.path.join(workdir, "mine.npz")
  np.savez(npz, x_train=x_train, y_train=y_train, x_test=x_test,
           y_test=y_test)

  # The split the job will make: teacher-train / initial L / pool U of the
  # train arrays; split.test=0 means "the npz's whole test split".
  split = (dict(teacher_train=100, initial=30, pool=70) if tiny else
           dict(teacher_train=700, initial=50, pool=547))

  # 2. Train, evaluate and save a teacher on the teacher-train split.
  ds = data.load_dataset(f"npz:{npz}")
  pools = data.make_pools(ds, **split, seed=0)  # refuses shared images
  model, variables, acc = teacher_training.train_teacher(
      "lenet5", pools.teacher_train_images, pools.teacher_train_labels,
      pools.test_images, pools.test_labels, num_classes=ds.num_classes,
      epochs=2 if tiny else 30)
  teacher_dir = os.path.abspath(os.path.join(workdir, "teacher"))
  teacher_training.save_teacher(teacher_dir, "lenet5", variables,
                                accuracy=acc, num_classes=ds.num_classes,
                                input_shape=ds.image_shape)
  print(f"teacher test accuracy {acc:.3f}, saved in {teacher_dir}")

  # 3. Compare strategies with that teacher: the same arguments work as
  #    `python -m jaxkd.main ARGS` from a shell.
  run_dir = os.path.join(workdir, "run")
  args = [f"--config.dataset=npz:{npz}",
          f"--config.teacher.checkpoint={teacher_dir}",
          "--strategy=" + ("random,margin" if tiny else
                           "random,margin,gap_diversity"),
          "--config.seeds=(0, 1)",
          *[f"--config.split.{k}={v}" for k, v in split.items()],
          f"--config.rounds={1 if tiny else 5}",
          f"--config.per_round={10 if tiny else 40}",
          f"--config.loop.train_steps={10 if tiny else 300}",
          f"--config.loop.batch_size={16 if tiny else 64}",
          "--config.progress=False", f"--workdir={run_dir}"]
  if cli.run_cli(["jaxkd", *args]) != 0:
    raise SystemExit("the run failed (see the error above)")

  # 4. Read the results: the ranking, then one run's records per round.
  with open(os.path.join(run_dir, "results.json")) as f:
    results = json.load(f)
  for row in results["ranking"]:
    print(f"{row['rank']}. {row['strategy']}: final success "
          f"{row['final_success_mean']:.3f} ± {row['final_success_std']:.3f}"
          f" ({row['final_vs_next'] or '-'} next)")
  for rec in results["strategies"]["margin"][0]:  # seed 0
    print(f"round {rec['round']}: {rec['queries']} paid queries, student "
          f"{rec['student_accuracy']:.3f} = {rec['success_rate']:.2f} of "
          f"the teacher")

  # 5. Any teacher function: the oracle pays it only for unseen points.
  from jaxkd import loop
  from jaxkd.models import get_model
  from jaxkd.teacher import TeacherOracle, flax_teacher_fn
  teacher_model, teacher_vars, meta = teacher_training.load_teacher(
      teacher_dir)
  my_teacher = flax_teacher_fn(teacher_model, teacher_vars)  # or your API
  pool = np.concatenate([pools.initial_images, pools.pool_images])
  n0 = len(pools.initial_images)
  rounds, per_round = 1, 10
  oracle = TeacherOracle(my_teacher, pool, budget=n0 + rounds * per_round,
                         ledger_path=os.path.join(workdir, "api",
                                                  "ledger.sqlite"))
  try:
    records = loop.run_loop(
        strategy="margin", student=get_model("lenet5_half", ds.num_classes),
        oracle=oracle, initial_indices=np.arange(n0),
        candidate_indices=n0 + np.arange(len(pools.pool_images)),
        initial_labels=pools.initial_labels,
        test_images=pools.test_images, test_labels=pools.test_labels,
        teacher_accuracy=meta["accuracy"],
        settings=loop.LoopSettings(rounds=rounds, per_round=per_round,
                                   train_steps=10 if tiny else 300,
                                   batch_size=16 if tiny else 64),
        workdir=os.path.join(workdir, "api"), progress=False)
  finally:
    oracle.close()
  print(f"run_loop: {records[-1]['queries']} queries, student "
        f"{records[-1]['student_accuracy']:.3f}")
  return results, records


if __name__ == "__main__":
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", default="runs/own_data")
  parser.add_argument("--tiny", action="store_true")
  a = parser.parse_args()
  main(a.workdir, tiny=a.tiny)
