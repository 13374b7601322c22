"""Which SGD rate trains the unix_ratio students without dying?

LeNet-5-half (no normalisation layers) distilled by KD from `lenet5_w2` on
all 60,000 Fashion-MNIST images, as `experiments/configs/unix_ratio.py`
(10 epochs, 5 of them linear warm-up, then cosine), at the rates given:
per epoch, the mean training loss, test accuracy on the first 2,000 test
images and the dead units of each layer (a unit is dead when its
pre-activation is <= 0 for every one of 2,000 training images). Prints a
Markdown report and writes it to `docs/results/unix_lr_sweep.md`.

  python experiments/unix_lr_sweep.py                     # 0.02 0.01 0.005
  python experiments/unix_lr_sweep.py --lrs 0.02 --seeds 0

One run is about 2 minutes of one core; the teacher is the one
`reproduce.py unix_ratio` trains (runs/unix_ratio_k48/teacher; trained
here into --teacher_dir if missing).
"""

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "experiments"))

from jaxkd import cost, health, parallel, settings, teacher_sources  # noqa: E402
from jaxkd import train, unix  # noqa: E402
from jaxkd.jobs.inputs import load_data  # noqa: E402
from jaxkd.jobs.unix import student_and_optimizer, train_subset  # noqa: E402
from protocols import load_config  # noqa: E402

LAYERS = ("conv1", "conv2", "fc1", "fc2")


def dead_units(student, variables, probe):
  """{layer: (dead, total)}: units whose pre-activation is <= 0 on all of
  `probe` (captured module outputs, before the ReLU)."""
  _, state = student.apply(variables, probe, capture_intermediates=True)
  out = {}
  for path, value in jax.tree_util.tree_flatten_with_path(
      state["intermediates"])[0]:
    keys = [str(getattr(k, "key", "")) for k in path]
    layer = next((k for k in keys if k in LAYERS), None)
    if layer is None or "__call__" not in keys:
      continue
    v = np.asarray(value).reshape(value.shape[0], -1, value.shape[-1])
    alive = (v > 0).any(axis=(0, 1))
    out[layer] = (int((~alive).sum()), int(alive.size))
  return out


def run(lr, seed, teacher_dir):
  c = load_config("unix_ratio.py", f"k=48,teacher_dir={teacher_dir}")
  c.unix.lr = lr
  st = settings.parse(c)
  uc, mesh = st.unix, parallel.make_mesh()
  ds = load_data(st)
  images, labels = train_subset(st, ds)
  teacher, teacher_vars, _ = teacher_sources.local_teacher(
      st.teacher, ds, images, labels, ds.test_images, ds.test_labels,
      os.path.dirname(teacher_dir), dataset_name=st.dataset, mesh=mesh,
      progress=False)
  student, tx = student_and_optimizer(st, images, ds.num_classes)
  state = train.create_train_state(student, jax.random.key(seed),
                                   images.shape[1:], tx)
  probe = jnp.asarray(images[:2000])
  epochs = []

  def on_epoch(state, epoch):
    acc = train.accuracy(student, state.variables, ds.test_images[:2000],
                         ds.test_labels[:2000], mesh=mesh)
    epochs.append((epoch, acc, dead_units(student, state.variables, probe)))

  step_fn = unix.unix_step_fn(student, teacher, teacher_vars,
                              uc.method_config("kd"),
                              batch_size=uc.batch_size, seed=seed, mesh=mesh,
                              counter=cost.CostCounter())
  t0 = time.time()
  _, history = train.fit(student, state, images, batch_size=uc.batch_size,
                         seed=seed, step_fn=step_fn, epochs=uc.epochs,
                         mesh=mesh, progress=False, on_epoch=on_epoch)
  return [float(h) for h in history], epochs, time.time() - t0


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--lrs", type=float, nargs="+", default=[0.02, 0.01, 0.005])
  p.add_argument("--seeds", type=int, nargs="+", default=[0, 2])
  p.add_argument("--teacher_dir",
                 default=os.path.join(ROOT, "runs", "unix_ratio_k48",
                                      "teacher"))
  p.add_argument("--out", default=os.path.join(ROOT, "docs", "results",
                                               "unix_lr_sweep.md"))
  a = p.parse_args(argv)
  lines = ["# SGD rate of the unix_ratio students (KD, LeNet-5-half from "
           "lenet5_w2, Fashion-MNIST 60,000)", "",
           f"`python experiments/unix_lr_sweep.py --lrs "
           f"{' '.join(map(str, a.lrs))} --seeds "
           f"{' '.join(map(str, a.seeds))}`; 10 epochs, warm-up 5, cosine; "
           "dead = units <= 0 on all of 2,000 training images; accuracy on "
           "the first 2,000 test images.", ""]
  for lr in a.lrs:
    for seed in a.seeds:
      history, epochs, wall = run(lr, seed, a.teacher_dir)
      warning = health.divergence_warning(history, f"lr {lr} seed {seed}")
      lines += [f"## lr {lr}, seed {seed} ({wall:.0f} s)", "",
                "| epoch | loss | test acc % | dead conv1 | dead conv2 | "
                "dead fc1 | dead fc2 |", "|---|---|---|---|---|---|---|"]
      for (epoch, acc, dead), loss in zip(epochs, history):
        cells = [f"{dead[k][0]}/{dead[k][1]}" if k in dead else "-"
                 for k in LAYERS]
        lines.append(f"| {epoch} | {loss:.2f} | {100 * acc:.1f} | "
                     + " | ".join(cells) + " |")
      lines += ["", warning or "No divergence flagged.", ""]
      print("\n".join(lines[-(len(epochs) + 5):]), flush=True)
  os.makedirs(os.path.dirname(a.out), exist_ok=True)
  with open(a.out + ".tmp", "w") as f:
    f.write("\n".join(lines))
  os.replace(a.out + ".tmp", a.out)
  print(f"wrote {a.out}")


if __name__ == "__main__":
  main()
