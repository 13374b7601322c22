"""ADMM to the same optimum: jaxkd's adaptive penalty vs the paper's fixed one.

`admm_bench.py` fixes 100 iterations, so it compares BLAS with BLAS (all
forms do the same matmuls per iteration). This benchmark compares what a
user waits for: the time until the stopping rule (Boyd et al. Sec. 3.3.1,
relative tol, the rule `admm_solve` uses) holds, on the same normalized
features (divided by their largest singular value, `normalize=True`), paper
alpha = 1e-6, theta = 1e-5, float32:

  numpy-thin    the paper's fixed-theta ADMM in its thin-SVD form, NumPy;
  torch-thin    the same, line for line, in PyTorch (2 threads);
  jaxkd-fixed   `admm_solve(..., adaptive=False)`: the same iterates;
  jaxkd         `admm_solve(..., adaptive=True)`: residual balancing (the
                `admm` strategy's default), same fixed point (proof in
                `admm_solve`'s docstring).

Agreement is checked before timing: the objective of each Q_hat relative to
numpy-thin's, and the overlap of the top-10% rows by ||Q_i|| (what the
selection uses). Medians of interleaved repeats; ratio = other / jaxkd.

  python benchmarks/admm_to_tol.py [--sizes 2000x256,5000x512] [--tol 1e-4]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402

import peers  # noqa: E402
from jaxkd.selection import admm  # noqa: E402

ALPHA, THETA = 1e-6, 1e-5


def _converged(q, q_hat, dq, lam, th, tol):
  prim = np.linalg.norm(q - q_hat)
  dual = th * np.linalg.norm(dq)
  return (prim <= tol * max(np.linalg.norm(q), np.linalg.norm(q_hat))
          and dual <= tol * np.linalg.norm(lam))


def numpy_thin(f, tol, max_iter):
  """Fixed-theta thin-SVD ADMM with the stopping rule; (q, q_hat, iters)."""
  n, d = f.shape
  dt = f.dtype
  th = dt.type(THETA)
  z, s, wt = np.linalg.svd(f, full_matrices=False)
  w = wt.T
  c = (1 / (s + th / (2 * s**3))).astype(dt)
  r = (1 / (1 + th / (2 * np.outer(s**2, s**2)))).astype(dt)
  t = ALPHA / THETA
  q = np.zeros((n, d), dt)
  q_hat = np.zeros((n, d), dt)
  lam = np.zeros((n, d), dt)
  for it in range(1, max_iter + 1):
    u_ = lam / th
    m = q_hat - u_
    k = (z.T @ m) @ w
    q = m + z @ ((np.diag(c) - k * r) @ wt)
    sv = q + u_
    nrm = np.linalg.norm(sv, axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
      new = (np.where(nrm > t, 1.0 - t / nrm, 0.0) * sv).astype(dt)
    lam = lam + th * (q - new)
    dq, q_hat = new - q_hat, new
    if _converged(q, q_hat, dq, lam, th, tol):
      break
  return q, q_hat, it


def torch_thin(f, tol, max_iter):
  """`numpy_thin` line for line in PyTorch."""
  torch = peers.import_torch()
  f = torch.from_numpy(f)
  n, d = f.shape
  th = THETA
  z, s, wt = torch.linalg.svd(f, full_matrices=False)
  w = wt.T
  c = 1 / (s + th / (2 * s**3))
  r = 1 / (1 + th / (2 * torch.outer(s**2, s**2)))
  t = ALPHA / THETA
  q = torch.zeros((n, d), dtype=f.dtype)
  q_hat = torch.zeros_like(q)
  lam = torch.zeros_like(q)
  nm = torch.linalg.norm
  for it in range(1, max_iter + 1):
    u_ = lam / th
    m = q_hat - u_
    k = (z.T @ m) @ w
    q = m + z @ ((torch.diag(c) - k * r) @ wt)
    sv = q + u_
    nrm = torch.linalg.vector_norm(sv, dim=1, keepdim=True)
    new = torch.where(nrm > t, 1.0 - t / nrm, torch.zeros_like(nrm)) * sv
    lam = lam + th * (q - new)
    dq, q_hat = new - q_hat, new
    if (nm(q - q_hat) <= tol * max(nm(q), nm(q_hat))
        and th * nm(dq) <= tol * nm(lam)):
      break
  return q.numpy(), q_hat.numpy(), it


def jaxkd_run(f, tol, max_iter, adaptive):
  st = admm.admm_solve(f, alpha=ALPHA, theta=THETA, tol=tol,
                       max_iter=max_iter, adaptive=adaptive)
  jax.block_until_ready(st.q)
  return np.asarray(st.q), np.asarray(st.q_hat), int(st.iter_num)


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--sizes", default="2000x256,5000x512")
  ap.add_argument("--tol", type=float, default=1e-4)
  ap.add_argument("--max_iter", type=int, default=5000)
  ap.add_argument("--repeats", type=int, default=3)
  a = ap.parse_args(argv)
  torch = peers.import_torch()
  print(f"jax {jax.__version__}, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), numpy {np.__version__}, "
        f"{os.cpu_count()} cpus; float32, normalized Gaussian features, "
        f"alpha={ALPHA}, theta={THETA}, tol={a.tol}; start: "
        f"{peers.load_average()}\n")
  hdr = (f"{'n x d':>10} | {'method':>11} | {'iters':>5} | {'median':>8} | "
         f"{'ratio':>6} | {'objective rel diff':>18} | top-10% overlap")
  print(hdr)
  print("-" * len(hdr))
  for size in a.sizes.split(","):
    n, d = (int(v) for v in size.split("x"))
    f = np.random.default_rng(0).standard_normal((n, d)).astype(np.float32)
    f = f / np.linalg.svd(f, compute_uv=False)[0]
    runs = {
        "numpy-thin": lambda: numpy_thin(f, a.tol, a.max_iter),
        "torch-thin": lambda: torch_thin(f, a.tol, a.max_iter),
        "jaxkd-fixed": lambda: jaxkd_run(f, a.tol, a.max_iter, False),
        "jaxkd": lambda: jaxkd_run(f, a.tol, a.max_iter, True),
    }
    out, first = {}, {}
    for name, run in runs.items():  # warm-up (compiles), agreement
      t0 = time.perf_counter()
      out[name] = run()
      first[name] = time.perf_counter() - t0
    ref_q, ref_qh, _ = out["numpy-thin"]
    ref_obj = float(admm.admm_objective(f, ref_qh, alpha=ALPHA))
    k = max(1, n // 10)
    ref_top = set(np.argsort(-np.linalg.norm(ref_q, axis=1))[:k].tolist())
    med = peers.interleaved({m: (lambda _, r=r: r()) for m, r in runs.items()},
                            1, a.repeats)
    for name, (q, qh, iters) in out.items():
      obj = float(admm.admm_objective(f, qh, alpha=ALPHA))
      top = set(np.argsort(-np.linalg.norm(q, axis=1))[:k].tolist())
      print(f"{size:>10} | {name:>11} | {iters:>5} | {med[name]:>7.3g}s | "
            f"{med[name] / med['jaxkd']:>5.2f}x | "
            f"{(obj - ref_obj) / ref_obj:>18.1e} | "
            f"{len(top & ref_top) / k:.3f}", flush=True)
    print(f"{'':>10}   jaxkd first call (compile + run) "
          f"{first['jaxkd']:.2f}s; {peers.load_average()}")


if __name__ == "__main__":
  main()
