"""k-center greedy (coreset) at growing pool sizes: the nearest-center start
over the m paid centers against the masked pass over all n points.

  python benchmarks/coreset_scale.py [--sizes 5000,20000,100000] [--k 200]

Random 84-d embeddings, 500 points already paid (the centers), k picks.
Both forms are checked to pick the same points in the same order first;
then the median of `--repeats` timed calls (after one compile call) of
each is printed. The masked form is O(n^2 D) and is only timed up to
`--masked_max` points. Not a test.
"""

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from jaxkd.selection import baselines  # noqa: E402


def _time(fn, repeats):
  fn().block_until_ready()  # compile
  out = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn().block_until_ready()
    out.append(time.perf_counter() - t0)
  return float(np.median(out))


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--sizes", default="5000,20000,100000")
  ap.add_argument("--k", type=int, default=200)
  ap.add_argument("--paid", type=int, default=500)
  ap.add_argument("--repeats", type=int, default=3)
  ap.add_argument("--masked_max", type=int, default=20000)
  args = ap.parse_args(argv)
  print(f"jax {jax.__version__}, {jax.devices()[0].platform}, "
        f"{os.cpu_count()} cpus; D = 84, paid = {args.paid}, k = {args.k}")
  print("n, centers loop s, masked pass s, speed-up, same picks")
  rng = np.random.default_rng(0)
  for n in map(int, args.sizes.split(",")):
    emb = rng.normal(size=(n, 84)).astype(np.float32)
    avail = np.ones(n, bool)
    avail[rng.choice(n, args.paid, replace=False)] = False
    fast = lambda: baselines.coreset_select(emb, avail, args.k)
    t_fast = _time(fast, args.repeats)
    if n <= args.masked_max:
      e, a = jnp.asarray(emb), jnp.asarray(avail)
      masked = lambda: baselines._kcenter_greedy(e, a, ~a, args.k)
      same = bool(np.array_equal(np.asarray(fast()), np.asarray(masked())))
      t_masked = _time(masked, args.repeats)
      print(f"{n}, {t_fast:.3f}, {t_masked:.3f}, {t_masked / t_fast:.1f}x, "
            f"{same}")
    else:
      print(f"{n}, {t_fast:.3f}, -, -, -")


if __name__ == "__main__":
  main()
