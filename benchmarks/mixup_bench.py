"""Active Mixup pair-confidence scan: student forwards per second.

Times `jaxkd.selection.mixup.select_pairs` on lenet5_half (28x28x1 inputs,
11 lambdas) with the plain path and the first-layer fast path, against a
straightforward baseline that loops in Python over pairs and calls the
jitted student on the 11 mixed images of one pair at a time; all in the same
process. Also reports the fraction of the CPU's measured peak float32 matmul
rate that each method reaches, in useful model FLOPs (XLA's cost analysis of
the model's forward, or of `head_from_stem` for the fast path).

  python benchmarks/mixup_bench.py            # n = 500 and 2000
  python benchmarks/mixup_bench.py --quick    # n = 120 smoke run

A jaxkd scan whose predicted time (from the smaller n) exceeds
--max_scan_seconds is run on the first pairs only and extrapolated (marked
"~" in the table); the baseline is always timed on --baseline_pairs pairs and
extrapolated. Images are MNIST from --data_dir when present, else uniform
random in [0, 1]; params are random-init (the cost does not depend on them).
"""

from __future__ import annotations

import argparse
import gzip
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from jaxkd.models import get_model, init_model  # noqa: E402
from jaxkd.selection import mixup  # noqa: E402


def load_images(n: int, data_dir: str, seed: int = 0) -> np.ndarray:
  path = os.path.join(data_dir, "train-images-idx3-ubyte.gz")
  if os.path.exists(path):
    with gzip.open(path, "rb") as f:
      raw = np.frombuffer(f.read(), np.uint8, offset=16)
    x = raw.reshape(-1, 28, 28, 1)[:n].astype(np.float32) / 255.0
    return x
  return np.random.default_rng(seed).uniform(size=(n, 28, 28, 1)).astype(
      np.float32)


def peak_matmul_flops(size: int = 4096, reps: int = 5) -> float:
  """Best observed float32 FLOP/s of one big jitted matmul."""
  a = jax.random.normal(jax.random.key(0), (size, size), jnp.float32)
  f = jax.jit(lambda a: a @ a)
  f(a).block_until_ready()
  best = np.inf
  for _ in range(reps):
    t = time.perf_counter()
    f(a).block_until_ready()
    best = min(best, time.perf_counter() - t)
  return 2 * size ** 3 / best


def flops_per_forward(fn, variables, x) -> float:
  """XLA's FLOP count of fn(variables, x) divided by the batch size."""
  cost = jax.jit(fn).lower(variables, x).compile().cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0]
  return float(cost["flops"]) / x.shape[0]


def time_scan(apply_fn, variables, images, lambdas, kw, max_pairs, k=100,
              batch_size=mixup.DEFAULT_BATCH_SIZE):
  """Seconds for select_pairs over all pairs, or over the first `max_pairs`
  pairs (extrapolated) via the same jitted block the public function runs.

  Returns (seconds for the full scan, pairs actually timed, compile seconds).
  """
  n = len(images)
  total = n * (n - 1) // 2
  n_, lam, source, model_fn, block, offsets, params = mixup._prepare(
      apply_fn, variables, images, lambdas, batch_size,
      kw.get("stem_fn"), kw.get("head_fn"), None)
  step = mixup._jitted_scan_block(model_fn, n, block, k, None)
  excluded = jnp.asarray(mixup._excluded_numbers(None, n)[0])
  lam_dev = jnp.asarray(lam)
  t = time.perf_counter()
  jax.block_until_ready(step(params, source, offsets, lam_dev, excluded,
                             jnp.int32(0), mixup._init_topk(k)))
  compile_s = time.perf_counter() - t
  if max_pairs >= total:
    t = time.perf_counter()
    mixup.select_pairs(apply_fn, variables, images, k, lambdas,
                       batch_size=batch_size, **kw)
    return time.perf_counter() - t, total, compile_s
  state = mixup._init_topk(k)
  t = time.perf_counter()
  for s in range(0, max_pairs, block):
    state = step(params, source, offsets, lam_dev, excluded, jnp.int32(s),
                 state)
  jax.block_until_ready(state)
  dt = time.perf_counter() - t
  timed = -(-max_pairs // block) * block
  return dt * total / timed, timed, compile_s


def time_baseline(apply_fn, variables, images, lambdas, num_pairs, seed=0):
  """Python loop over random pairs, jitted student on one pair's 11 images.

  Returns seconds per pair (median of 3 runs over `num_pairs` pairs).
  """
  f = jax.jit(apply_fn)
  lam = jnp.asarray(lambdas, jnp.float32)[:, None, None, None]
  x = jnp.asarray(images)
  rng = np.random.default_rng(seed)
  n = len(images)
  pairs = [tuple(sorted(rng.choice(n, 2, replace=False)))
           for _ in range(num_pairs)]
  f(variables, lam * x[0] + (1 - lam) * x[1]).block_until_ready()
  runs = []
  for _ in range(3):
    best_c2, best = np.inf, None
    t = time.perf_counter()
    for i, j in pairs:
      logits = np.asarray(f(variables, lam * x[i] + (1 - lam) * x[j]))
      p = np.exp(logits - logits.max(1, keepdims=True))
      c1 = (p / p.sum(1, keepdims=True)).max(1)
      c2 = c1.min()
      if c2 < best_c2:
        best_c2, best = c2, (i, j, int(c1.argmin()))
    runs.append((time.perf_counter() - t) / num_pairs)
  return float(np.median(runs))


def main():
  ap = argparse.ArgumentParser(description=__doc__,
                               formatter_class=argparse.RawTextHelpFormatter)
  ap.add_argument("--quick", action="store_true")
  ap.add_argument("--sizes", default="500,2000")
  ap.add_argument("--batch_size", type=int, default=mixup.DEFAULT_BATCH_SIZE)
  ap.add_argument("--baseline_pairs", type=int, default=300)
  ap.add_argument("--max_scan_seconds", type=float, default=400.0,
                  help="extrapolate a jaxkd scan predicted to take longer")
  ap.add_argument("--data_dir", default="/work/shared/data/mnist")
  args = ap.parse_args()
  sizes = [120] if args.quick else [int(s) for s in args.sizes.split(",")]
  if args.quick:
    args.baseline_pairs = min(args.baseline_pairs, 50)

  model = get_model("lenet5_half", 10)
  variables = init_model(model, jax.random.key(0), (28, 28, 1))
  apply_fn = lambda v, x: model.apply(v, x)
  stem_fn, head_fn = mixup.linear_stem_fns(model)
  lambdas = mixup.default_lambdas()
  num_lams = len(lambdas)

  x1 = jnp.zeros((256, 28, 28, 1), jnp.float32)
  full_flops = flops_per_forward(apply_fn, variables, x1)
  h1 = stem_fn(variables, x1)
  # Useful FLOPs: the model's own head (`scan_head` executes more, through
  # its unrolled conv2 matmul, but the rate of useful work is what counts).
  head_flops = flops_per_forward(
      lambda v, h: model.apply(v, h, method=model.head_from_stem),
      variables, h1)
  executed = flops_per_forward(head_fn, variables, h1)
  peak = peak_matmul_flops(2048 if args.quick else 4096)
  print(f"devices: {jax.devices()}  cpu count: {os.cpu_count()}")
  print(f"peak float32 matmul: {peak / 1e9:.1f} GFLOP/s; lenet5_half forward "
        f"{full_flops / 1e3:.1f} kFLOP (head after stem {head_flops / 1e3:.1f}"
        f"; scan_head executes {executed / 1e3:.1f})")
  print(f"batch_size={args.batch_size} forwards per block, "
        f"{num_lams} lambdas\n")

  header = (f"{'n':>5} {'method':<12} {'pairs timed':>12} {'scan s':>9} "
            f"{'fwd/s':>10} {'x baseline':>10} {'GFLOP/s':>8} {'% peak':>7}")
  print(header)
  print("-" * len(header))
  rate = {}
  for n in sizes:
    images = load_images(n, args.data_dir)
    total = n * (n - 1) // 2
    forwards = total * num_lams
    rows = []
    sec_pair = time_baseline(apply_fn, variables, images, lambdas,
                             args.baseline_pairs)
    base_rate = num_lams / sec_pair
    rows.append(("baseline", args.baseline_pairs, sec_pair * total,
                 base_rate, full_flops, True))
    for name, kw, fl in (
        ("jaxkd plain", {}, full_flops),
        ("jaxkd fast", dict(stem_fn=stem_fn, head_fn=head_fn), head_flops)):
      guess = forwards / rate.get(name, np.inf)
      max_pairs = (total if guess <= args.max_scan_seconds else
                   int(total * args.max_scan_seconds / guess / 4))
      secs, timed, _ = time_scan(apply_fn, variables, images, lambdas, kw,
                                 max_pairs, batch_size=args.batch_size)
      rate[name] = forwards / secs
      rows.append((name, timed, secs, rate[name], fl, timed < total))
    for name, timed, secs, r, fl, extrap in rows:
      mark = "~" if extrap else " "
      print(f"{n:>5} {name:<12} {timed:>12} {mark}{secs:>8.1f} {r:>10.0f} "
            f"{r / base_rate:>10.1f} {r * fl / 1e9:>8.1f} "
            f"{100 * r * fl / peak:>6.1f}%")
    fast_vs_plain = rate["jaxkd fast"] / rate["jaxkd plain"]
    print(f"{n:>5} fast / plain = {fast_vs_plain:.2f}x\n")


if __name__ == "__main__":
  main()
