"""Benchmark: the paper's literal ADMM vs hoisted NumPy vs jaxkd's solver.

For each (n, d) runs the same number of ADMM iterations (tol = 0, paper
alpha = 1e-6, theta = 1e-5, random Gaussian features) with

  literal      NumPy transcription of the paper: eigendecomposes the n x n
               A = 2 X^T X and X X^T every iteration (O(n^3) per iteration),
  hoisted      NumPy with both eigendecompositions done once before the loop
               (O(n^2 d) per iteration, O(n^2) memory),
  numpy-thin   jaxkd's thin-SVD update written in NumPy (O(n d r)),
  jaxkd        `jaxkd.selection.admm.admm_solve` (jit + lax.while_loop;
               compile time reported separately, excluded from the ratio),

all in one process and in the same dtype (float32 by default). Times are the
median of --repeats runs (literal and hoisted: one run). A method whose
estimate (from one measured iteration, or from the n^3 / n^2 d scaling of a
smaller measured size) exceeds --max-seconds, or whose memory estimate
exceeds --max-mem-gib, is skipped and its estimate printed with a `~`.

Peak memory is the process's peak resident set (VmHWM) during that method,
reset through /proc/self/clear_refs before each method (Linux >= 4.0); it is
absolute (it includes the interpreter, JAX and the input), which is what a
user of the machine pays. `rel diff` is ||Q_jaxkd - Q_numpy-thin|| / ||Q||.

Full run (about 25 min on a 2-core CPU, mostly the literal at n = 2000 and
the hoisted run at n = 5000):

  python benchmarks/admm_bench.py

Smoke run: python benchmarks/admm_bench.py --quick
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                ".."))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from jaxkd.selection import admm  # noqa: E402

ALPHA, THETA = 1e-6, 1e-5
FULL_SIZES = ((2000, 256), (5000, 512), (20000, 512), (100000, 256))
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


def available_gib():
  with open("/proc/meminfo") as fh:
    for line in fh:
      if line.startswith("MemAvailable:"):
        return int(line.split()[1]) / 2**20
  return float("inf")


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


def thin_admm(f, iters):
  """jaxkd's thin-SVD update (module docstring of jaxkd.selection.admm)."""
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
  for _ in range(iters):
    u_ = lam / th
    m = q_hat - u_
    k = (z.T @ m) @ w
    q = m + z @ ((np.diag(c) - k * r) @ wt)
    q_hat = _shrink(q + u_, ALPHA / THETA)
    lam = lam + th * (q - q_hat)
  return q


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


def timed(fn, repeats):
  times, out = [], None
  reset_peak()
  for _ in range(repeats):
    t0 = time.perf_counter()
    out = fn()
    times.append(time.perf_counter() - t0)
  return statistics.median(times), peak_gib(), out


def fmt_t(t, est=False):
  if t is None:
    return "-"
  s = f"{t:.3g}s" if t < 100 else f"{t / 60:.3g}min"
  return ("~" + s) if est else s


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--quick", action="store_true", help="small sizes, 10 iters")
  ap.add_argument("--iters", type=int, default=None, help="default 100")
  ap.add_argument("--repeats", type=int, default=3)
  ap.add_argument("--max-seconds", type=float, default=600.0)
  ap.add_argument("--max-mem-gib", type=float, default=None,
                  help="default: half of MemAvailable")
  ap.add_argument("--dtype", default="float32", choices=("float32", "float64"))
  ap.add_argument("--sizes", default=None,
                  help="e.g. 2000x256,100000x256 (default: the issue's four)")
  ap.add_argument("--methods", default="literal,hoisted,numpy-thin,jaxkd")
  args = ap.parse_args(argv)
  if args.dtype == "float64":
    jax.config.update("jax_enable_x64", True)
  iters = args.iters or (10 if args.quick else 100)
  sizes = QUICK_SIZES if args.quick else FULL_SIZES
  if args.sizes:
    sizes = tuple(tuple(int(v) for v in s.split("x"))
                  for s in args.sizes.split(","))
  methods = args.methods.split(",")
  max_mem = args.max_mem_gib or available_gib() / 2
  dt = np.dtype(args.dtype)
  item = dt.itemsize
  gib = 2**30
  print(f"jax {jax.__version__} on {jax.devices()[0].platform} "
        f"({os.cpu_count()} cpus), {args.dtype}, {iters} iterations, "
        f"alpha={ALPHA}, theta={THETA}; memory cap {max_mem:.1f} GiB, "
        f"time cap {args.max_seconds:.0f}s; peak reset "
        f"{'ok' if reset_peak() else 'UNAVAILABLE (peaks are cumulative)'}")
  # Per-iteration cost models, calibrated on the first measured size:
  # literal ~ n^3 (eigh of A), hoisted ~ n^3 once + n^2 d per iteration.
  cal = {}
  rows = []
  for n, d in sizes:
    rng = np.random.default_rng(0)
    f = rng.standard_normal((n, d)).astype(dt)
    row = dict(n=n, d=d)
    notes = []
    # ---- literal
    if "literal" in methods:
      mem = (4 * n * n + 8 * n * d) * item / gib
      est1 = cal["lit"] * n**3 if "lit" in cal else None
      if mem > max_mem:
        row["literal"] = (est1 * iters if est1 else None, True)
        notes.append(f"literal skipped: needs ~{mem:.0f} GiB")
      elif est1 is not None and est1 > args.max_seconds / 2:
        row["literal"] = (est1 * iters, True)
        notes.append("literal skipped: one iteration alone is estimated at "
                     f"{fmt_t(est1)}")
      else:
        t1, pk, _ = timed(lambda: literal_admm(f, 1), 1)
        cal.setdefault("lit", t1 / n**3)
        if t1 * iters > args.max_seconds:
          row["literal"] = (t1 * iters, True)
          notes.append(f"literal skipped: 1 iteration took {t1:.1f}s")
        else:
          t, pk, q_lit = timed(lambda: literal_admm(f, iters), 1)
          row["literal"] = (t, False)
          row["literal_mem"] = pk
    # ---- hoisted
    if "hoisted" in methods:
      mem = (3 * n * n + 8 * n * d) * item / gib
      est = None
      if "hoist" in cal:
        a, b = cal["hoist"]
        est = a * n**3 + iters * b * n * n * d
      if mem > max_mem:
        row["hoisted"] = (est, True)
        notes.append(f"hoisted skipped: needs ~{mem:.0f} GiB")
      elif est is not None and est > args.max_seconds:
        row["hoisted"] = (est, True)
        notes.append("hoisted skipped: estimated from the n^3 + n^2 d "
                     "scaling of the first size")
      else:
        t1, _, _ = timed(lambda: hoisted_admm(f, 1), 1)
        t2, _, _ = timed(lambda: hoisted_admm(f, 3), 1)
        per = max(t2 - t1, 1e-9) / 2
        setup = max(t1 - per, 0.0)
        cal.setdefault("hoist", (setup / n**3, per / (n * n * d)))
        if setup + iters * per > args.max_seconds:
          row["hoisted"] = (setup + iters * per, True)
          notes.append("hoisted skipped: estimated from 1 and 3 iterations")
        else:
          t, pk, _ = timed(lambda: hoisted_admm(f, iters), 1)
          row["hoisted"] = (t, False)
          row["hoisted_mem"] = pk
    # ---- numpy-thin
    q_thin = None
    if "numpy-thin" in methods:
      t, pk, q_thin = timed(lambda: thin_admm(f, iters), args.repeats)
      row["numpy-thin"] = (t, False)
      row["numpy-thin_mem"] = pk
    # ---- jaxkd
    if "jaxkd" in methods:
      reset_peak()
      compile_s, run = jaxkd_runner(f, iters)
      run()  # warm-up (first execution allocates)
      t, pk, q_j = timed(run, args.repeats)
      row["jaxkd"] = (t, False)
      row["jaxkd_mem"] = pk
      row["compile"] = compile_s
      if q_thin is not None:
        row["rel"] = float(np.linalg.norm(q_j.astype(np.float64) - q_thin) /
                           np.linalg.norm(q_thin))
      del run
    row["notes"] = notes
    rows.append(row)
    _print_row(row, methods, header=len(rows) == 1)
  print()
  for row in rows:
    for note in row["notes"]:
      print(f"  n={row['n']} d={row['d']}: {note}")
  return rows


def _print_row(row, methods, header):
  cols = [m for m in ("literal", "hoisted", "numpy-thin", "jaxkd")
          if m in methods]
  if header:
    h = f"{'n':>7} {'d':>4} | " + " | ".join(f"{m:>17}" for m in cols)
    h += " | compile | " + " | ".join(f"{m + '/jaxkd':>16}" for m in cols
                                       if m != "jaxkd") + " | rel diff"
    print(h)
    print("-" * len(h))
  cells = []
  for m in cols:
    t, est = row.get(m, (None, False))
    mem = row.get(m + "_mem")
    cell = fmt_t(t, est) + (f" {mem:.2f}GiB" if mem is not None else "")
    cells.append(f"{cell:>17}")
  line = f"{row['n']:>7} {row['d']:>4} | " + " | ".join(cells)
  line += f" | {row.get('compile', float('nan')):6.2f}s | "
  jt = row.get("jaxkd", (None, False))[0]
  ratios = []
  for m in cols:
    if m == "jaxkd":
      continue
    t, est = row.get(m, (None, False))
    r = "-" if t is None or not jt else (("~" if est else "") +
                                         f"{t / jt:.3g}x")
    ratios.append(f"{r:>16}")
  line += " | ".join(ratios)
  line += f" | {row['rel']:.1e}" if "rel" in row else " | -"
  print(line, flush=True)


if __name__ == "__main__":
  main()
