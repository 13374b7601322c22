"""Training throughput of the KD step: plain KD vs Random+KD vs UNIX.

Images per second = N (images drawn per step) / median step time, for the
jitted `jaxkd.unix` step (teacher forward inside the step for every method):

  plain KD   : teacher + student fwd/bwd on all N
  Random+KD  : teacher + student fwd/bwd on k of N
  UNIX       : student uncertainty pass on N, mixup, teacher + student
               fwd/bwd on the k most uncertain

Pairs: lenet5 -> lenet5_half on 28x28x1 and resnet32x4 -> resnet8x4 on
32x32x3 (the paper's CIFAR pair). FLOP ratios (XLA cost analysis) are shown
beside the measured ones.

  python benchmarks/train_bench.py            # N = 64, k = 48, 5 repeats
  python benchmarks/train_bench.py --quick    # smoke run, small and fast
"""

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from jaxkd import cost, parallel, train, unix  # noqa: E402
from jaxkd.models import get_model  # noqa: E402

PAIRS = {
    "lenet5_half": ("lenet5", (28, 28, 1)),
    "resnet8x4": ("resnet32x4", (32, 32, 3)),
}


def bench_pair(student_name, batch_size, k, repeats, steps, methods):
  teacher_name, shape = PAIRS[student_name]
  student = get_model(student_name, 10)
  teacher = get_model(teacher_name, 10)
  mesh = parallel.make_mesh()
  tx = train.make_optimizer("sgd", 0.01, schedule="constant")
  teacher_vars = parallel.replicate(mesh, train.create_train_state(
      teacher, jax.random.key(1), shape, tx).variables)
  images = np.random.default_rng(0).uniform(
      size=(batch_size,) + shape).astype(np.float32)
  flops = None
  rows = []
  for method in methods:
    cfg = unix.method_config(method, batch_size=batch_size, k=k)
    state = parallel.replicate(mesh, train.create_train_state(
        student, jax.random.key(0), shape, tx))
    if flops is None:
      flops = cost.kd_cost(student, state.variables, teacher, teacher_vars,
                           shape)
    key = jax.random.key(0)

    def run(state, n):
      for i in range(n):
        state, m = unix.unix_train_step(
            state, teacher_vars, images, jax.random.fold_in(key, i),
            student=student, teacher=teacher, config=cfg, mesh=mesh)
      jax.block_until_ready(m["loss"])
      return state

    state = run(state, 2)  # compile + warm up
    times = []
    for _ in range(repeats):
      t0 = time.perf_counter()
      state = run(state, steps)
      times.append((time.perf_counter() - t0) / steps)
    counter = cost.CostCounter()
    counter.add(batch_size, *unix.step_counts(batch_size, cfg))
    rows.append((method, statistics.median(times),
                 counter.relative_to_kd(flops)))
  base = dict((m, t) for m, t, _ in rows).get("kd", rows[0][1])
  print(f"\n{student_name} student, {teacher_name} teacher, {shape}, "
        f"N = {batch_size}, k = {k}, {jax.device_count()} device(s), "
        f"F_t/F_s = {flops.teacher_student_ratio:.2f}")
  print(f"{'method':<12}{'ms/step':>10}{'images/s':>11}{'speed-up':>10}"
        f"{'FLOPs vs KD':>13}")
  for method, t, rel in rows:
    print(f"{method:<12}{1e3 * t:>10.2f}{batch_size / t:>11.0f}"
          f"{base / t:>9.2f}x{100 * rel:>12.1f}%")


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--quick", action="store_true", help="small smoke run")
  p.add_argument("--students", default="lenet5_half,resnet8x4")
  p.add_argument("--methods", default="kd,random_kd,unix")
  p.add_argument("--batch_size", type=int, default=64)
  p.add_argument("--k", type=int, default=48)
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--steps", type=int, default=10, help="steps per repeat")
  a = p.parse_args()
  if a.quick:
    a.batch_size, a.k, a.repeats, a.steps = 16, 12, 3, 2
  for name in a.students.split(","):
    bench_pair(name, a.batch_size, a.k, a.repeats, a.steps,
               a.methods.split(","))


if __name__ == "__main__":
  main()
