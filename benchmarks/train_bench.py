"""Training step speed: jaxkd vs PyTorch eager, lenet5_half (28x28x1).

In one process, after an agreement check (outputs, loss and gradients from
the same weights, copied from the Flax params into the torch model):

  kd          KD step on fixed teacher logits (Adam, T = 4): jaxkd's
              `train.standard_step_fn` (what `fit` runs per step) vs
              RepDistiller-style `DistillKL` + `torch.optim.Adam`;
  kd+teacher  the same with the lenet5 teacher's forward inside the step
              (jaxkd: `unix.unix_train_step` with method "kd");
  unix        UNIX step (Xu et al.): student no-grad pass, entropy sort,
              adaptive mixup, teacher + student step on the k kept images
              (jaxkd: `unix.unix_train_step`, torch: the official loop).

jaxkd runs twice: with its default convolutions (`conv_impl="auto"`: the
banded matmul of `jaxkd.models.conv` for the few-channel layers on CPU) and
with XLA's convolution (`conv_impl="xla"`, the code before this benchmark).
Times are medians of interleaved repeats; speed ratio = torch time / jaxkd
time (> 1: jaxkd faster). % peak = useful FLOPs (XLA's cost analysis of the
`conv_impl="xla"` step) per second over the machine's best float32 matmul
rate, measured here in NumPy and JAX. "first" is the first call (jaxkd:
trace + compile + run; torch: the first eager step); "compile" = first -
median step. torch runs on `peers.TORCH_THREADS` = 2 threads, and once more
on 1 thread ("1 thread" column): on a loaded machine its 2-thread OpenMP
barriers wait for descheduled threads, and the 1-thread figure shows how much
of a ratio is that.

  python benchmarks/train_bench.py           # N = 64 and 256
  python benchmarks/train_bench.py --quick   # smoke run
"""

from __future__ import annotations

import argparse
import functools
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import peers  # noqa: E402
from jaxkd import losses, parallel, train, unix  # noqa: E402
from jaxkd.models import get_model  # noqa: E402

SHAPE = (28, 28, 1)
LR, T = 1e-3, 4.0
IMPLS = ("auto", "xla")


def useful_flops(jitted, *args) -> float:
  cost = jitted.lower(*args).compile().cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0]
  return float(cost["flops"])


class Case:
  """One operation at one size: jaxkd (per conv impl) and torch runners."""

  def __init__(self, op, n, k, seed=0):
    torch = peers.import_torch()
    self.op, self.n, self.k = op, n, k
    rng = np.random.default_rng(seed)
    self.x = rng.uniform(size=(n,) + SHAPE).astype(np.float32)
    t_logits = rng.normal(size=(n, 10)).astype(np.float32) * 3
    self.probs = np.asarray(jax.nn.softmax(t_logits), np.float32)
    self.labels = self.probs.argmax(-1).astype(np.int32)
    self.mesh = parallel.make_mesh()
    self.tx = train.make_optimizer("adam", LR, schedule="constant")
    self.students = {i: get_model("lenet5_half", 10, conv_impl=i)
                     for i in IMPLS}
    self.teachers = {i: get_model("lenet5", 10, conv_impl=i) for i in IMPLS}
    s0 = train.create_train_state(self.students["xla"], jax.random.key(0),
                                  SHAPE, self.tx)
    self.params0 = s0.params
    self.teacher_vars = train.create_train_state(
        self.teachers["xla"], jax.random.key(1), SHAPE, self.tx).variables
    self.xt = torch.from_numpy(peers.nchw(self.x))
    self.tlt = torch.from_numpy(np.log(np.clip(self.probs, 1e-12, 1)))
    if op != "kd":
      self.cfg = unix.method_config("kd" if op == "kd+teacher" else "unix",
                                    batch_size=n, k=k, w=10.0, temperature=T)

  # ---- jaxkd
  def fresh_state(self):
    st = train.TrainState.create(apply_fn=None, params=self.params0,
                                 tx=self.tx, batch_stats={})
    return parallel.replicate(self.mesh, jax.tree.map(jnp.array, st))

  def jax_runner(self, impl):
    student, teacher = self.students[impl], self.teachers[impl]
    holder = {"state": self.fresh_state(), "t": 0}
    if self.op == "kd":
      loss_fn = train.make_loss_fn("kd", temperature=T)
      step_fn = train.standard_step_fn(student, loss_fn, self.mesh, self.n)
      rows = (self.x, self.probs, self.labels)
      one = lambda st, t: step_fn(st, rows, t)
    else:
      tv = parallel.replicate(self.mesh, self.teacher_vars)
      key = jax.random.key(0)
      one = lambda st, t: unix.unix_train_step(
          st, tv, self.x, jax.random.fold_in(key, t), student=student,
          teacher=teacher, config=self.cfg, mesh=self.mesh)

    def run(steps):
      for _ in range(steps):
        holder["state"], m = one(holder["state"], holder["t"])
        holder["t"] += 1
      jax.block_until_ready(m["loss"])
      return m

    return run

  def flops(self):
    student = self.students["xla"]
    st = self.fresh_state()
    if self.op == "kd":
      loss_fn = train.make_loss_fn("kd", temperature=T)
      f = jax.jit(functools.partial(train.train_step, model=student,
                                    loss_fn=loss_fn))
      b = train.Batch(*map(jnp.asarray, (self.x, self.probs, self.labels,
                                         np.ones(self.n, np.float32))))
      return useful_flops(f, st, b)
    f = unix._jitted_unix_step(student, self.teachers["xla"], self.cfg,
                               self.mesh, self.n,
                               unix.kept_padded(self.cfg.k, self.mesh))
    x, _ = parallel.shard_batch(self.mesh, self.x)
    return useful_flops(f, st, parallel.replicate(self.mesh,
                                                  self.teacher_vars),
                        x, jax.random.key(0))

  # ---- torch
  def torch_models(self):
    torch = peers.import_torch()
    s = peers.copy_lenet_params(peers.torch_lenet5((3, 8), (60, 42)),
                                self.params0)
    t = peers.copy_lenet_params(peers.torch_lenet5(),
                                self.teacher_vars["params"])
    for p in t.parameters():
      p.requires_grad_(False)
    return s, t, torch.optim.Adam(s.parameters(), lr=LR)

  def torch_runner(self, threads=peers.TORCH_THREADS):
    torch = peers.import_torch()
    s, t, opt = self.torch_models()

    def run(steps):
      torch.set_num_threads(threads)
      for _ in range(steps):
        if self.op == "kd":
          peers.kd_step(s, opt, self.xt, self.tlt, T)
        elif self.op == "kd+teacher":
          peers.kd_teacher_step(s, t, opt, self.xt, T)
        else:
          peers.unix_step(s, t, opt, self.xt, self.k, w=10.0, temperature=T)
      torch.set_num_threads(peers.TORCH_THREADS)

    return run

  # ---- agreement
  def agreement(self):
    """Max |difference| of outputs, loss and gradients (relative to the
    largest gradient) between jaxkd (default impl) and torch."""
    torch = peers.import_torch()
    s, t, opt = self.torch_models()
    student = self.students["auto"]
    out = {"fwd": float(np.abs(
        np.asarray(student.apply({"params": self.params0}, self.x))
        - s(self.xt).detach().numpy()).max())}
    if self.op == "kd":
      tl = jnp.log(jnp.clip(self.probs, 1e-12, 1))
      loss_j, g = jax.value_and_grad(lambda p: losses.kd_loss(
          student.apply({"params": p}, self.x), tl, T))(self.params0)
      loss_t = peers.distill_kl(s(self.xt), self.tlt, T)
      loss_t.backward()
    else:
      m = self.jax_runner("auto")(1)
      perm = torch.from_numpy(np.asarray(m["partners"], np.int64))
      lam = float(m["lam"])
      if self.op == "kd+teacher":
        loss_t = peers.kd_teacher_step(s, t, opt, self.xt, T)
      else:
        loss_t, order = peers.unix_step(s, t, opt, self.xt, self.k, w=10.0,
                                        temperature=T, perm=perm, lam=lam)
        # Ranks where the two entropy sorts differ (near-equal entropies
        # can swap under float rounding; the loss check covers the rest).
        out["rank_swaps"] = int(np.sum(
            order.numpy() != np.asarray(m["selected"])[:self.k]))
      loss_j, g = m["loss"], None
    out["loss"] = abs(float(loss_j) - float(loss_t.detach()))
    if g is not None:
      ref = peers.lenet_state_dict(g)
      gmax = max(np.abs(v).max() for v in ref.values())
      out["grad"] = float(max(np.abs(ref[n] - p.grad.numpy()).max()
                              for n, p in s.named_parameters()) / gmax)
    return out


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--quick", action="store_true")
  ap.add_argument("--repeats", type=int, default=9)
  ap.add_argument("--min_seconds", type=float, default=0.25,
                  help="steps per repeat sized to take about this long")
  a = ap.parse_args()
  torch = peers.import_torch()
  sizes = ((64, 48), (256, 192))
  if a.quick:
    sizes, a.repeats, a.min_seconds = ((16, 12),), 3, 0.02
  print(f"jax {jax.__version__} ({jax.default_backend()}, "
        f"{jax.device_count()} device), torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), {os.cpu_count()} cpus")
  print(f"start: {peers.load_average()}")
  rows = []
  for op in ("kd", "kd+teacher", "unix"):
    for n, k in sizes:
      case = Case(op, n, k)
      agree = case.agreement()
      ok = agree["fwd"] < 1e-4 and agree["loss"] < 1e-4 and agree.get(
          "grad", 0) < 1e-4
      if not ok:
        raise SystemExit(f"{op} N={n}: jaxkd and torch disagree: {agree}")
      # First-call latency from a cold start: drop what the check compiled.
      jax.clear_caches()
      train._jitted_train_step.cache_clear()
      unix._jitted_unix_step.cache_clear()
      runs = {f"jaxkd-{i}": case.jax_runner(i) for i in IMPLS}
      runs["torch"] = case.torch_runner()
      runs["torch-1t"] = case.torch_runner(1)
      first = {name: peers.first_call(lambda r=r: r(1))
               for name, r in runs.items()}
      probe = peers.interleaved(runs, 1, 2)
      steps = max(1, int(a.min_seconds / max(probe.values())))
      med = peers.interleaved(runs, steps, a.repeats)
      rows.append((op, n, k, agree, first, med, case.flops(),
                   peers.load_average()))
      print(f"  done {op} N={n} ({rows[-1][-1]})", flush=True)
  peak = peers.peak_matmul(1024 if a.quick else 2048)
  print(f"peak float32 matmul: numpy {peak['numpy'] / 1e9:.1f}, jax "
        f"{peak['jax'] / 1e9:.1f} GFLOP/s; end: {peers.load_average()}\n")
  hdr = (f"{'op':<11}{'N':>4}{'k':>4} |{'jaxkd ms':>9}{'xla-conv':>9}"
         f"{'torch ms':>9}{'1 thread':>9} |{'jaxkd/torch':>12}"
         f"{'xla-conv/torch':>15}{'jaxkd/torch-1t':>15} |"
         f"{'%peak jaxkd':>12}{'torch':>6} |{'first s':>8}{'compile s':>10}"
         f"{'torch first':>12} | agreement")
  print(hdr)
  print("-" * len(hdr))
  for op, n, k, agree, first, med, fl, _ in rows:
    j, x, t, t1 = (med["jaxkd-auto"], med["jaxkd-xla"], med["torch"],
                   med["torch-1t"])
    ag = " ".join(f"{name} {v:.0e}" if isinstance(v, float) else
                  f"{name} {v}" for name, v in agree.items())
    print(f"{op:<11}{n:>4}{k if op == 'unix' else '':>4} |{1e3 * j:>9.2f}"
          f"{1e3 * x:>9.2f}{1e3 * t:>9.2f}{1e3 * t1:>9.2f} |{t / j:>11.2f}x"
          f"{t / x:>14.2f}x{t1 / j:>14.2f}x |"
          f"{100 * fl / j / peak['peak']:>11.1f}%"
          f"{100 * fl / t / peak['peak']:>5.1f}% |"
          f"{first['jaxkd-auto']:>8.2f}{first['jaxkd-auto'] - j:>10.2f}"
          f"{first['torch']:>12.3f} | {ag}")
  print("\nload average after each row: " + "; ".join(
      f"{op} {n}: {la.split(' (')[0].replace('load average ', '')}"
      for op, n, *_, la in rows))


if __name__ == "__main__":
  main()
