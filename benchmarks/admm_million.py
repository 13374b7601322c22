"""ADMM at n = 1,000,000, d = 256 (issue 16's size target): wall time of
100 iterations (tol = 0, so exactly max_iter), its compile + first call, and
the process's peak RSS. Float32, Gaussian features, paper alpha/theta,
normalize=True. jaxkd only (NumPy / torch at this size would be minutes more
each); a measurement, not a test.

  python benchmarks/admm_million.py [--n 1000000] [--d 256] [--iters 100]
"""

import argparse
import os
import resource
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from jaxkd.selection import admm  # noqa: E402


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--n", type=int, default=1_000_000)
  ap.add_argument("--d", type=int, default=256)
  ap.add_argument("--iters", type=int, default=100)
  a = ap.parse_args()
  f = np.random.default_rng(0).standard_normal((a.n, a.d), np.float32)
  print(f"jax {jax.__version__} ({jax.devices()[0].platform}), "
        f"{os.cpu_count()} cpus, n={a.n} d={a.d} iters={a.iters}, "
        f"load {os.getloadavg()}", flush=True)
  t0 = time.perf_counter()
  s = admm.admm_solve(f, alpha=1e-6, theta=1e-5, max_iter=1, tol=0.0,
                      normalize=True)
  jax.block_until_ready(s.q)
  first = time.perf_counter() - t0
  del s
  t0 = time.perf_counter()
  s = admm.admm_solve(f, alpha=1e-6, theta=1e-5, max_iter=a.iters, tol=0.0,
                      normalize=True)
  jax.block_until_ready(s.q)
  wall = time.perf_counter() - t0
  rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
  print(f"first call (compile + 1 iteration): {first:.1f} s; "
        f"{int(s.iter_num)} iterations: {wall:.1f} s "
        f"({wall / max(int(s.iter_num), 1):.2f} s each, SVD included); "
        f"peak RSS {rss:.2f} GiB; finite {bool(np.isfinite(s.q).all())}; "
        f"load {os.getloadavg()}")


if __name__ == "__main__":
  main()
