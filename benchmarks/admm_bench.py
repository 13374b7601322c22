"""ADMM (l2,1 reconstruction selection): jaxkd vs NumPy and PyTorch.

For each (n, d) runs the same number of ADMM iterations (tol = 0, paper
alpha = 1e-6, theta = 1e-5, random Gaussian features, float32) with

  numpy-thin   the thin-SVD update (module docstring of
               jaxkd.selection.admm) written in NumPy: what a NumPy user
               would write once they know the algebra (O(n d r) per
               iteration);
  torch-thin   the same update, line for line, in PyTorch (2 threads);
  jaxkd        `jaxkd.selection.admm.admm_solve`'s jitted core
               (jit + lax.while_loop; compile time reported separately),

in one process, timed as medians of interleaved repeats; ratio = other time /
jaxkd time (> 1: jaxkd faster). Agreement: `rel diff` is
||Q - Q_numpy-thin|| / ||Q_numpy-thin|| for jaxkd and torch. The paper's
literal algorithm (an n x n eigendecomposition every iteration) and its
hoisted variant are still available (--methods literal,hoisted,...) but are
not default: at n = 2000 they take minutes (275x and 18x the jaxkd time in
the earlier results).

Peak memory is the process's peak resident set (VmHWM) during one run of the
method, reset through /proc/self/clear_refs before it (Linux >= 4.0); it is
absolute (it includes the interpreter, JAX, torch and the input).

  python benchmarks/admm_bench.py            # 2000x256 and 5000x512
  python benchmarks/admm_bench.py --quick    # smoke run
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                ".."))

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import peers  # noqa: E402
from jaxkd.selection import admm  # noqa: E402

ALPHA, THETA = 1e-6, 1e-5
FULL_SIZES = ((2000, 256), (5000, 512))
QUICK_SIZES = ((300, 32), (600, 64))


# ------------------------------------------------------------------ memory


def _status_kib(field):
  with open("/proc/self/status") as fh:
    for line in fh:
      if line.startswith(field + ":"):
        return int(line.split()[1])
  return 0


def reset_peak():
  """Resets VmHWM to the current RSS; returns whether that worked."""
  try:
    with open("/proc/self/clear_refs", "w") as fh:
      fh.write("5")
    return True
  except OSError:
    return False


def peak_gib():
  return _status_kib("VmHWM") / 2**20


# ----------------------------------------------------------------- methods


def _shrink(s, t):
  nrm = np.linalg.norm(s, axis=1, keepdims=True)
  with np.errstate(divide="ignore", invalid="ignore"):
    fac = np.where(nrm > t, 1.0 - t / nrm, 0.0)
  return (fac * s).astype(s.dtype)


def literal_admm(f, iters, time_one=False):
  """The paper's algorithm; eigendecompositions every iteration."""
  x = f.T
  d, n = x.shape
  dt = f.dtype
  th = dt.type(THETA)
  q = np.zeros((n, d), dt)
  q_hat = np.zeros((n, d), dt)
  lam = np.zeros((n, d), dt)
  for _ in range(iters):
    a = 2 * (x.T @ x)
    b = 2 * (x.T @ (x @ x.T)) + th * (q_hat - lam / th)
    s1, u = np.linalg.eigh(a)
    del a
    s2, v = np.linalg.eigh(x @ x.T)
    dmat = (u.T @ b @ v) / (s1[:, None] * s2[None, :] + th)
    q = u @ dmat @ v.T
    del u
    q_hat = _shrink(q + lam / th, ALPHA / THETA)
    lam = lam + th * (q - q_hat)
  return q


def hoisted_admm(f, iters):
  """Both eigendecompositions once, outside the loop."""
  x = f.T
  d, n = x.shape
  dt = f.dtype
  th = dt.type(THETA)
  s1, u = np.linalg.eigh(2 * (x.T @ x))
  s2, v = np.linalg.eigh(x @ x.T)
  b0 = 2 * (x.T @ (x @ x.T))
  denom = s1[:, None] * s2[None, :] + th
  q = np.zeros((n, d), dt)
  q_hat = np.zeros((n, d), dt)
  lam = np.zeros((n, d), dt)
  for _ in range(iters):
    b = b0 + th * (q_hat - lam / th)
    q = u @ (((u.T @ b) @ v) / denom) @ v.T
    q_hat = _shrink(q + lam / th, ALPHA / THETA)
    lam = lam + th * (q - q_hat)
  return q


def _converged(norm, q, q_hat, dq, lam, th, tol):
  """Boyd Sec. 3.3.1 relative stopping rule, as `admm_solve` applies it."""
  return (norm(q - q_hat) <= tol * max(norm(q), norm(q_hat))
          and th * norm(dq) <= tol * norm(lam))


def thin_admm(f, iters, tol=0.0, info=False):
  """jaxkd's thin-SVD update (module docstring of jaxkd.selection.admm).

  With tol > 0 stops on the relative stopping rule; with info=True returns
  (q, q_hat, iterations run) instead of q.
  """
  n, d = f.shape
  dt = f.dtype
  th = dt.type(THETA)
  z, s, wt = np.linalg.svd(f, full_matrices=False)
  w = wt.T
  with np.errstate(divide="ignore", over="ignore"):
    c = (1 / (s + th / (2 * s**3))).astype(dt)
    r = (1 / (1 + th / (2 * np.outer(s**2, s**2)))).astype(dt)
  q = np.zeros((n, d), dt)
  q_hat = np.zeros((n, d), dt)
  lam = np.zeros((n, d), dt)
  it = 0
  for it in range(1, iters + 1):
    u_ = lam / th
    m = q_hat - u_
    k = (z.T @ m) @ w
    q = m + z @ ((np.diag(c) - k * r) @ wt)
    new = _shrink(q + u_, ALPHA / THETA)
    lam = lam + th * (q - new)
    dq, q_hat = new - q_hat, new
    if tol > 0 and _converged(np.linalg.norm, q, q_hat, dq, lam, th, tol):
      break
  return (q, q_hat, it) if info else q


def torch_thin_admm(f, iters, tol=0.0, info=False):
  """`thin_admm` line for line in PyTorch (same tol / info)."""
  torch = peers.import_torch()
  f = torch.from_numpy(f)
  n, d = f.shape
  th = THETA
  z, s, wt = torch.linalg.svd(f, full_matrices=False)
  w = wt.T
  c = 1 / (s + th / (2 * s**3))
  r = 1 / (1 + th / (2 * torch.outer(s**2, s**2)))
  q = torch.zeros((n, d), dtype=f.dtype)
  q_hat = torch.zeros_like(q)
  lam = torch.zeros_like(q)
  t = ALPHA / THETA
  it = 0
  for it in range(1, iters + 1):
    u_ = lam / th
    m = q_hat - u_
    k = (z.T @ m) @ w
    q = m + z @ ((torch.diag(c) - k * r) @ wt)
    sv = q + u_
    nrm = torch.linalg.vector_norm(sv, dim=1, keepdim=True)
    fac = torch.where(nrm > t, 1.0 - t / nrm, torch.zeros_like(nrm))
    new = fac * sv
    lam = lam + th * (q - new)
    dq, q_hat = new - q_hat, new
    if tol > 0 and _converged(torch.linalg.norm, q, q_hat, dq, lam, th, tol):
      break
  return (q.numpy(), q_hat.numpy(), it) if info else q.numpy()


def jaxkd_runner(f, iters):
  """(compile seconds, run callable) for admm_solve's jitted core."""
  solver = admm._compiled_solver(None, False, False)  # what admm_solve calls
  dt = f.dtype
  args = (jnp.asarray(f), jnp.asarray(ALPHA, dt), jnp.asarray(THETA, dt),
          jnp.asarray(iters, jnp.int32), jnp.asarray(0.0, dt),
          jnp.asarray(0.0, dt))
  t0 = time.perf_counter()
  compiled = solver.lower(*args).compile()
  compile_s = time.perf_counter() - t0

  def run():
    st = compiled(*args)
    jax.block_until_ready(st)
    assert int(st.iter_num) == iters
    return np.asarray(st.q)
  return compile_s, run


# ------------------------------------------------------------------ driver


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--quick", action="store_true", help="small sizes, 10 iters")
  ap.add_argument("--iters", type=int, default=None, help="default 100")
  ap.add_argument("--repeats", type=int, default=5)
  ap.add_argument("--sizes", default=None,
                  help="e.g. 2000x256,5000x512 (the default)")
  ap.add_argument("--methods", default="numpy-thin,torch-thin,jaxkd",
                  help="also: literal, hoisted (the paper's forms, slow)")
  args = ap.parse_args(argv)
  torch = peers.import_torch()
  iters = args.iters or (10 if args.quick else 100)
  sizes = QUICK_SIZES if args.quick else FULL_SIZES
  if args.sizes:
    sizes = tuple(tuple(int(v) for v in s.split("x"))
                  for s in args.sizes.split(","))
  methods = args.methods.split(",")
  print(f"jax {jax.__version__} on {jax.devices()[0].platform}, torch "
        f"{torch.__version__} ({torch.get_num_threads()} threads), numpy "
        f"{np.__version__}, {os.cpu_count()} cpus; float32, {iters} "
        f"iterations, alpha={ALPHA}, theta={THETA}; peak reset "
        f"{'ok' if reset_peak() else 'UNAVAILABLE (peaks are cumulative)'}")
  print(f"start: {peers.load_average()}")
  slow = {"literal": literal_admm, "hoisted": hoisted_admm}
  fast = {"numpy-thin": thin_admm, "torch-thin": torch_thin_admm}
  rows = []
  for n, d in sizes:
    f = np.random.default_rng(0).standard_normal((n, d)).astype(np.float32)
    runs, mem, out, first = {}, {}, {}, {}
    for name in methods:
      if name in fast:
        runs[name] = functools.partial(fast[name], f, iters)
      elif name in slow:
        runs[name] = functools.partial(slow[name], f, iters)
      elif name == "jaxkd":
        reset_peak()
        t0 = time.perf_counter()
        compile_s, runs[name] = jaxkd_runner(f, iters)
      else:
        raise SystemExit(f"unknown method {name!r}")
      if name != "jaxkd":
        reset_peak()
        t0 = time.perf_counter()
      out[name] = runs[name]()            # warm-up, agreement, memory
      first[name] = time.perf_counter() - t0
      mem[name] = peak_gib()
    timed_runs = {m: (lambda _, r=r: r()) for m, r in runs.items()
                  if m not in slow}
    med = peers.interleaved(timed_runs, 1, args.repeats)
    for m in slow:
      if m in runs:
        t0 = time.perf_counter()
        runs[m]()
        med[m] = time.perf_counter() - t0
    ref = out.get("numpy-thin")
    rel = {m: float(np.linalg.norm(q.astype(np.float64) - ref)
                    / np.linalg.norm(ref))
           for m, q in out.items() if ref is not None and m != "numpy-thin"}
    rows.append(dict(n=n, d=d, med=med, mem=mem, first=first, rel=rel,
                     compile=compile_s if "jaxkd" in runs else None,
                     load=peers.load_average()))
    print(f"  done {n}x{d} ({rows[-1]['load']})", flush=True)
  peak = peers.peak_matmul(1024 if args.quick else 2048)
  print(f"peak float32 matmul: numpy {peak['numpy'] / 1e9:.1f}, jax "
        f"{peak['jax'] / 1e9:.1f} GFLOP/s; % peak counts 4 n d r + 4 r^2 d "
        "FLOPs per iteration (the thin-SVD update's four matmuls)\n")
  _print_rows(rows, methods, iters, peak["peak"])
  return rows


def _print_rows(rows, methods, iters, peak):
  hdr = (f"{'n':>6} {'d':>4} | " + "".join(f"{m:>18}" for m in methods)
         + " | % peak: " + " ".join(m.split("-")[0] for m in methods)
         + " | " + "".join(f"{m + '/jaxkd':>17}" for m in methods
                           if m != "jaxkd")
         + " | jaxkd compile, first call | rel diff vs numpy-thin")
  print(hdr)
  print("-" * len(hdr))
  for row in rows:
    med, mem = row["med"], row["mem"]
    cells = "".join(f"{f'{med[m]:.3g}s {mem[m]:.2f}GiB':>18}" for m in methods)
    n, d = row["n"], row["d"]
    r = min(n, d)
    fl = iters * (4 * n * d * r + 4 * r * r * d)
    cells += " | " + " ".join(f"{100 * fl / med[m] / peak:.0f}%"
                              for m in methods)
    jt = med.get("jaxkd")
    ratios = "".join(f"{f'{med[m] / jt:.2f}x' if jt else '-':>17}"
                     for m in methods if m != "jaxkd")
    extra = (f"{row['compile']:.2f}s, {row['first'].get('jaxkd', 0):.2f}s"
             if row["compile"] is not None else "-")
    rel = ", ".join(f"{m} {v:.1e}" for m, v in row["rel"].items())
    print(f"{row['n']:>6} {row['d']:>4} | {cells} | {ratios} | {extra:>25} | "
          f"{rel}")
  print("load average after each size: " + "; ".join(
      f"{r['n']}x{r['d']}: {r['load']}" for r in rows))


if __name__ == "__main__":
  main()
