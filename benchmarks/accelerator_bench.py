"""Absolute figures on one accelerator, in one process, under a time guard.

Sections (each timed after a warm-up call, `jax.block_until_ready` on every
result, median of `--repeats`; compile time is the first call minus one
steady call):

  train_step  the round loop's student step (`train.standard_step_fn`: the
              host batch placed and the jitted, donated `train_step`, KD at
              T = 4, SGD) and the same step on a batch already on the
              device, at batch 256 and 1,024, for lenet5 (28x28x1, 10
              classes) and resnet8x4 (32x32x3, 100 classes): ms per step
              and images per second;
  pair_scan   Active Mixup's pair-confidence scan (`pair_scan`'s blocked
              top-k, the first-layer fast path, 11 lambdas, k = 100) over
              all n (n - 1) / 2 pairs of n = 20,000 images (199,990,000
              pairs, the paper's Places365 pool) for lenet5_half 28x28x1:
              pairs and student forwards per second; when the time guard
              stops the scan early the full-scan time is extrapolated from
              the blocks run (and marked so);
  admm        `admm_solve` at n = 1,000,000 x d = 256 (float32, Gaussian,
              the paper's alpha / theta, tol = 0 so exactly `iters`
              iterations): seconds per iteration, SVD included;
  cifar_job   a short active job on CIFAR-shaped data (random 32x32x3
              images in an npz file, 10 classes): alexnet_cifar ->
              alexnet_cifar_half, random and entropy, 2 rounds of 1,000
              from a pool of 10,000; wall time of the whole job, compiles
              included (`--smoke`: LeNets, random only).

  python benchmarks/accelerator_bench.py [--smoke] [--out DIR]
      [--budget SECONDS]

`--smoke` shrinks every size (a CPU run of well under a minute) and, unless
`--out` is given, writes to a fresh temporary folder, never to
benchmarks/results/. The guard (`--budget`, default 540 s, 120 s with
`--smoke`) skips whatever would start after it and cuts the pair scan
short; results are written after every section.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from jaxkd import parallel, train  # noqa: E402
from jaxkd.models import get_model  # noqa: E402
from jaxkd.selection import admm, pair_scan  # noqa: E402

FULL = dict(
    train_models=(("lenet5", (28, 28, 1), 10), ("resnet8x4", (32, 32, 3),
                                                100)),
    train_batches=(256, 1024), train_steps=20,
    scan_n=20000, scan_k=100, scan_batch=65536, scan_cap_s=240.0,
    admm_n=1_000_000, admm_d=256, admm_iters=100,
    job=dict(teacher="alexnet_cifar", student="alexnet_cifar_half",
             teacher_train=5000, initial=1000, pool=10000, test=2000,
             rounds=2, per_round=1000, train_steps=200, batch_size=256,
             teacher_epochs=2, strategies=("random", "entropy")),
    budget_s=540.0, repeats=3)
SMOKE = dict(
    train_models=(("lenet5", (28, 28, 1), 10), ("resnet8x4", (16, 16, 3),
                                                100)),
    train_batches=(8,), train_steps=2,
    scan_n=40, scan_k=5, scan_batch=4096, scan_cap_s=10.0,
    admm_n=2000, admm_d=16, admm_iters=5,
    # LeNets on the 32x32x3 images: AlexNet's CPU compiles alone would
    # take most of a minute.
    job=dict(teacher="lenet5", student="lenet5_half", teacher_train=32,
             initial=16, pool=32, test=16, rounds=1, per_round=8,
             train_steps=2, batch_size=8, teacher_epochs=1,
             strategies=("random",)),
    budget_s=120.0, repeats=2)
T = 4.0


class Guard:
  """The time budget: `left()` seconds remain; `ok(need)` if `need` fit."""

  def __init__(self, budget_s: float):
    self.t0, self.budget = time.perf_counter(), budget_s

  def left(self) -> float:
    return self.budget - (time.perf_counter() - self.t0)

  def ok(self, need: float = 0.0) -> bool:
    return self.left() > need


def timed(fn, repeats: int):
  """(first call s, median of `repeats` further calls s); fn blocks."""
  t0 = time.perf_counter()
  fn()
  first = time.perf_counter() - t0
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return first, statistics.median(times)


def device_info():
  d = jax.devices()
  return {"devices": [str(x) for x in d], "platform": d[0].platform,
          "device_kind": d[0].device_kind, "device_count": len(d),
          "jax": jax.__version__, "host": platform.node(),
          "cpus": os.cpu_count()}


# -------------------------------------------------------------- sections ---


def bench_train_step(sz, guard):
  mesh = parallel.make_mesh()
  rows = []
  loss_fn = train.make_loss_fn("kd", temperature=T)
  tx = train.make_optimizer("sgd", 0.01, weight_decay=5e-4,
                            schedule="constant")
  for name, shape, classes in sz["train_models"]:
    model = get_model(name, classes)
    for n in sz["train_batches"]:
      if not guard.ok(10):
        rows.append({"model": name, "batch": n, "skipped": "time guard"})
        continue
      rng = np.random.default_rng(0)
      x = rng.uniform(size=(n,) + shape).astype(np.float32)
      probs = np.asarray(jax.nn.softmax(rng.normal(size=(n, classes)) * 3),
                         np.float32)
      labels = probs.argmax(-1).astype(np.int32)
      state = parallel.replicate(mesh, train.create_train_state(
          model, jax.random.key(0), shape, tx))
      holder = {"state": state}
      steps = sz["train_steps"]
      # What `fit` runs per step: host rows placed, then the donated step.
      step_fn = train.standard_step_fn(model, loss_fn, mesh, n)

      def run_fit():
        for t in range(steps):
          holder["state"], m = step_fn(holder["state"], (x, probs, labels), t)
        jax.block_until_ready((holder["state"], m["loss"]))

      first, med = timed(run_fit, sz["repeats"])
      # The step alone, on a batch already on the device.
      jitted = train._jitted_train_step(model, loss_fn, mesh)
      sharding = parallel.data_sharding(mesh)
      k = parallel.num_shards(mesh)
      padded = -(-n // k) * k
      batch = train.Batch(*(jax.device_put(train._pad_rows(a, padded),
                                           sharding)
                            for a in (x, probs, labels,
                                      np.ones(n, np.float32))))

      def run_dev():
        for _ in range(steps):
          holder["state"], m = jitted(holder["state"], batch)
        jax.block_until_ready((holder["state"], m["loss"]))

      dev_first, dev_med = timed(run_dev, sz["repeats"])
      rows.append({
          "model": name, "input": list(shape), "classes": classes, "batch": n,
          "steps_timed": steps,
          "fit_step_ms": 1e3 * med / steps,
          "fit_images_per_s": n * steps / med,
          "device_step_ms": 1e3 * dev_med / steps,
          "device_images_per_s": n * steps / dev_med,
          "compile_s": max(first - med, 0.0),
          "device_compile_s": max(dev_first - dev_med, 0.0)})
      print(f"train_step {name} batch {n}: fit {rows[-1]['fit_step_ms']:.2f}"
            f" ms/step, device {rows[-1]['device_step_ms']:.2f} ms/step, "
            f"{rows[-1]['device_images_per_s']:.0f} img/s", flush=True)
  return rows


def bench_pair_scan(sz, guard):
  n, k = sz["scan_n"], sz["scan_k"]
  cap = min(sz["scan_cap_s"], max(guard.left() - 60.0, 5.0))
  model = get_model("lenet5_half", 10)
  shape = (28, 28, 1)
  variables = jax.device_get(train.create_train_state(
      model, jax.random.key(0), shape,
      train.make_optimizer("sgd", 0.01, schedule="constant")).variables)
  images = np.random.default_rng(0).uniform(size=(n,) + shape).astype(
      np.float32)
  lam = pair_scan.default_lambdas()
  stem_fn, head_fn = pair_scan.linear_stem_fns(model)
  mesh = parallel.make_mesh()
  t0 = time.perf_counter()
  (n_, lam_, source, model_fn, block, chunk, offsets,
   params) = pair_scan._prepare(None, variables, images, lam,
                                sz["scan_batch"], stem_fn, head_fn, mesh)
  excluded, _ = pair_scan._excluded_numbers(None, n)
  step = pair_scan._jitted_scan_block(model_fn, n, block, k, mesh, chunk)
  lam_dev, excluded = jnp.asarray(lam_), jnp.asarray(excluded)
  num_pairs = n * (n - 1) // 2
  state = pair_scan._init_topk(k)
  # First block: trace + compile + one block.
  state = step(params, source, offsets, lam_dev, excluded, jnp.int32(0),
               state)
  jax.block_until_ready(state)
  first = time.perf_counter() - t0
  t1 = time.perf_counter()
  done, s = 1, block
  while s < num_pairs and time.perf_counter() - t1 < cap:
    state = step(params, source, offsets, lam_dev, excluded, jnp.int32(s),
                 state)
    s += block
    done += 1
    if done % 16 == 0:
      jax.block_until_ready(state)
  jax.block_until_ready(state)
  steady = time.perf_counter() - t1
  pairs_steady = min(s, num_pairs) - min(block, num_pairs)
  complete = s >= num_pairs
  if pairs_steady > 0:
    pairs_per_s = pairs_steady / steady
    block_s = steady / (done - 1)
  else:   # one block held every pair
    pairs_per_s, block_s = num_pairs / first, first
  full_s = num_pairs / pairs_per_s
  out = {"model": "lenet5_half", "input": list(shape), "n": n,
         "pairs": num_pairs, "lambdas": len(lam_), "k": k,
         "forwards": num_pairs * len(lam_), "block_pairs": block,
         "blocks_run": done, "complete": complete,
         "first_block_s": first, "compile_s": max(first - block_s, 0.0),
         "pairs_per_s": pairs_per_s,
         "forwards_per_s": pairs_per_s * len(lam_),
         "full_scan_s": (steady + block_s) if complete else full_s,
         "full_scan_how": "measured" if complete else
                          f"extrapolated from {pairs_steady:,} pairs"}
  print(f"pair_scan n={n}: {pairs_per_s:,.0f} pairs/s, full scan "
        f"{out['full_scan_s']:.1f} s ({out['full_scan_how']})", flush=True)
  return out


def bench_admm(sz, guard):
  n, d, iters = sz["admm_n"], sz["admm_d"], sz["admm_iters"]
  f = np.random.default_rng(0).standard_normal((n, d), np.float32)
  f = jax.device_put(f)

  def solve(max_iter):
    s = admm.admm_solve(f, alpha=1e-6, theta=1e-5, max_iter=max_iter,
                        tol=0.0, normalize=True)
    jax.block_until_ready(s.q)
    return s

  t0 = time.perf_counter()
  solve(1)
  first = time.perf_counter() - t0
  one = []
  for _ in range(sz["repeats"]):
    t0 = time.perf_counter()
    solve(1)
    one.append(time.perf_counter() - t0)
  runs, last = [], None
  for _ in range(sz["repeats"] if guard.ok(30) else 1):
    t0 = time.perf_counter()
    last = solve(iters)
    runs.append(time.perf_counter() - t0)
  wall = statistics.median(runs)
  it = int(last.iter_num)
  one_s = statistics.median(one)
  out = {"n": n, "d": d, "iters": it, "first_call_s": first,
         "compile_s": max(first - one_s, 0.0), "one_iter_call_s": one_s,
         "wall_s": wall, "per_iter_s": wall / max(it, 1),
         "per_extra_iter_s": max(wall - one_s, 0.0) / max(it - 1, 1),
         "finite": bool(np.isfinite(np.asarray(last.q)).all())}
  print(f"admm {n}x{d}: {it} iterations {wall:.2f} s "
        f"({out['per_extra_iter_s'] * 1e3:.1f} ms/iteration after the first)",
        flush=True)
  return out


def bench_cifar_job(sz, guard, workdir):
  from jaxkd import experiment
  from jaxkd.configs import common
  j = sz["job"]
  n_train = j["teacher_train"] + j["initial"] + j["pool"]
  rng = np.random.default_rng(0)
  path = os.path.join(workdir, "cifar_shaped.npz")
  np.savez(path,
           x_train=rng.integers(0, 256, (n_train, 32, 32, 3), np.uint8),
           y_train=rng.integers(0, 10, n_train).astype(np.int64),
           x_test=rng.integers(0, 256, (j["test"], 32, 32, 3), np.uint8),
           y_test=rng.integers(0, 10, j["test"]).astype(np.int64))
  c = common.active_config(
      dataset=f"npz:{path}", student=j["student"],
      strategies=j["strategies"], rounds=j["rounds"],
      per_round=j["per_round"], seeds=(0,), progress=False)
  c.split.update(teacher_train=j["teacher_train"], initial=j["initial"],
                 pool=j["pool"], test=0)
  c.loop.update(train_steps=j["train_steps"], batch_size=j["batch_size"])
  c.teacher.update(model=j["teacher"], epochs=j["teacher_epochs"],
                   batch_size=j["batch_size"])
  t0 = time.perf_counter()
  res = experiment.train_and_evaluate(c, os.path.join(workdir, "job"))
  wall = time.perf_counter() - t0
  out = {"images": n_train, **j,
         "wall_s": wall,
         "teacher_accuracy": res.get("teacher_accuracy")}
  print(f"cifar_job: {wall:.1f} s", flush=True)
  return out


# ---------------------------------------------------------------- output ---


def write(out_dir, result):
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, "accelerator.json"), "w") as f:
    json.dump(result, f, indent=1, default=str)
  with open(os.path.join(out_dir, "accelerator.md"), "w") as f:
    f.write(markdown(result))


def _fmt(v, spec=".2f"):
  return format(v, spec) if isinstance(v, (int, float)) else str(v)


def markdown(r) -> str:
  info = r["device"]
  lines = [f"# Accelerator benchmark ({r['date']})", "",
           f"`{r['command']}`; {info['device_count']} x {info['device_kind']}"
           f" ({info['platform']}), jax {info['jax']}, {info['cpus']} cpus; "
           f"sizes: {'smoke' if r['smoke'] else 'full'}; total "
           f"{r['total_s']:.1f} s. Times are medians of {r['repeats']} "
           "repeats after a warm-up call; compile = first call - one "
           "steady call.", ""]
  if "train_step" in r:
    lines += ["## Train step (KD, SGD)", "",
              "| model | input | batch | fit step ms | fit img/s | device "
              "step ms | device img/s | compile s |",
              "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in r["train_step"]:
      if "skipped" in row:
        lines.append(f"| {row['model']} | | {row['batch']} | "
                     f"{row['skipped']} | | | | |")
        continue
      lines.append(
          f"| {row['model']} | {'x'.join(map(str, row['input']))} | "
          f"{row['batch']} | {row['fit_step_ms']:.2f} | "
          f"{row['fit_images_per_s']:,.0f} | {row['device_step_ms']:.2f} | "
          f"{row['device_images_per_s']:,.0f} | {row['compile_s']:.2f} |")
    lines.append("")
  if "pair_scan" in r:
    p = r["pair_scan"]
    lines += ["## Pair scan (Active Mixup C2, fast path)", "",
              f"{p['model']} {'x'.join(map(str, p['input']))}, n = "
              f"{p['n']:,}: {p['pairs']:,} pairs x {p['lambdas']} lambdas, "
              f"k = {p['k']}, {p['block_pairs']:,} pairs a block.", "",
              "| pairs/s | forwards/s | full scan s | how | first block s |",
              "| --- | --- | --- | --- | --- |",
              f"| {p['pairs_per_s']:,.0f} | {p['forwards_per_s']:,.0f} | "
              f"{p['full_scan_s']:.1f} | {p['full_scan_how']} | "
              f"{p['first_block_s']:.2f} |", ""]
  if "admm" in r:
    a = r["admm"]
    lines += ["## ADMM", "",
              f"n = {a['n']:,}, d = {a['d']}, {a['iters']} iterations "
              f"(tol = 0): {a['wall_s']:.2f} s, "
              f"{1e3 * a['per_extra_iter_s']:.1f} ms an iteration after the "
              f"first (the one SVD is in the first); first call (compile + 1 "
              f"iteration) {a['first_call_s']:.2f} s; finite {a['finite']}.",
              ""]
  if "cifar_job" in r:
    j = r["cifar_job"]
    lines += ["## Short CIFAR-shaped job", "",
              f"{j['teacher']} -> {j['student']}, {j['images']:,} random "
              f"32x32x3 images, {', '.join(j['strategies'])}, "
              f"{j['rounds']} rounds of {j['per_round']}, "
              f"{j['train_steps']} student steps at batch {j['batch_size']}:"
              f" {j['wall_s']:.1f} s wall (compiles included).", ""]
  if r.get("skipped"):
    lines += ["Skipped by the time guard: " + ", ".join(r["skipped"]), ""]
  return "\n".join(lines)


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--smoke", action="store_true")
  ap.add_argument("--out", default=None)
  ap.add_argument("--budget", type=float, default=None)
  ap.add_argument("--sections", default="train_step,pair_scan,admm,cifar_job")
  ap.add_argument("--scan_n", type=int, default=None)
  ap.add_argument("--scan_batch", type=int, default=None,
                  help="student forwards per scan block")
  ap.add_argument("--admm_n", type=int, default=None)
  ap.add_argument("--repeats", type=int, default=None)
  a = ap.parse_args(argv)
  sz = dict(SMOKE if a.smoke else FULL)
  for key in ("scan_n", "scan_batch", "admm_n", "repeats"):
    if getattr(a, key):
      sz[key] = getattr(a, key)
  if a.budget:
    sz["budget_s"] = a.budget
  out_dir = a.out or (tempfile.mkdtemp(prefix="jaxkd_accel_") if a.smoke
                      else os.path.join(os.path.dirname(
                          os.path.abspath(__file__)), "results"))
  guard = Guard(sz["budget_s"])
  result = {"date": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": " ".join(["benchmarks/on_accelerator.sh"] + list(
                sys.argv[1:] if argv is None else argv)),
            "smoke": a.smoke, "repeats": sz["repeats"],
            "budget_s": sz["budget_s"], "device": device_info(),
            "skipped": []}
  print(f"jaxkd accelerator benchmark on {result['device']['devices']}; "
        f"writing to {out_dir}", flush=True)
  # Seconds a section needs left to start (a full-size section that would
  # start later than this is skipped, not cut off).
  need = {"train_step": 30, "pair_scan": 60, "admm": 60, "cifar_job": 60}
  if a.smoke:
    need = {k: 5 for k in need}
  work = tempfile.mkdtemp(prefix="jaxkd_accel_work_")
  for name in a.sections.split(","):
    if not guard.ok(need[name]):
      result["skipped"].append(name)
      print(f"{name}: skipped (time guard)", flush=True)
      continue
    if name == "train_step":
      result[name] = bench_train_step(sz, guard)
    elif name == "pair_scan":
      result[name] = bench_pair_scan(sz, guard)
    elif name == "admm":
      result[name] = bench_admm(sz, guard)
    elif name == "cifar_job":
      result[name] = bench_cifar_job(sz, guard, work)
    result["total_s"] = time.perf_counter() - guard.t0
    write(out_dir, result)
  result["total_s"] = time.perf_counter() - guard.t0
  write(out_dir, result)
  print(f"total {result['total_s']:.1f} s; wrote "
        f"{os.path.join(out_dir, 'accelerator.md')} and accelerator.json",
        flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
