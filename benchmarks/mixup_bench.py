"""Active Mixup pair-confidence scan: jaxkd vs batched PyTorch eager.

Scans every pair i < j of n pool images (28x28x1, lenet5_half, the paper's 11
lambdas 0.3..0.7) for C2(i, j) = min_lam max_y softmax(student(x_ij(lam)))
and keeps the k = 100 lowest, in one process, after an agreement check
(C2 of every pair of a small pool, and the picks, against torch with the
same weights):

  plain  jaxkd `select_pairs(apply_fn, ...)` (the whole student per mixed
         image) vs torch eager in channels_last: blocks of 64 pairs x 11
         lambdas gathered, mixed and run as one batch, C2 collected, then a
         stable sort for the top k;
  fast   jaxkd's first-layer fast path (`linear_stem_fns`: conv1 once per
         image in `scan_stem`'s pool-phase layout, the mixed maps through
         `scan_head`; the path the job runs, `mixup.scan_fns`) vs the same
         torch scan with the same first-layer trick (conv1 once,
         `head_from_stem` on mixed maps).

The torch block (64 pairs, `--torch_block`) is torch's fastest here: a sweep
of 16 / 32 / 64 / 128 / 256 / 1024 pairs gave plain 3.58 / 3.22 / 3.23 /
3.70 / 3.70 / 4.97 s and fast 2.69 / 2.46 / 2.47 / 2.51 / 2.63 / 4.76 s
(n = 200, quiet machine). Earlier runs used 256 pairs, 7-15% slower for
torch.

Medians of interleaved repeats; speed ratio = torch time / jaxkd time.
fwd/s counts student forwards (pairs x lambdas); % peak = useful FLOPs
(XLA's cost analysis of the XLA-conv model, or of its `head_from_stem` for
the fast paths) per second over the best float32 matmul rate measured here.
"first" is the first call of a cold scan (jaxkd: trace + compile + run).
torch runs on 2 threads.

  python benchmarks/mixup_bench.py            # n = 200
  python benchmarks/mixup_bench.py --quick    # n = 60 smoke run
"""

from __future__ import annotations

import argparse
import gzip
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import peers  # noqa: E402
from jaxkd.models import get_model, init_model  # noqa: E402
from jaxkd.selection import pair_scan as mixup  # noqa: E402

K = 100
TORCH_BLOCK_PAIRS = 64


def load_images(n: int, data_dir: str, seed: int = 0) -> np.ndarray:
  path = os.path.join(data_dir, "train-images-idx3-ubyte.gz")
  if os.path.exists(path):
    with gzip.open(path, "rb") as f:
      raw = np.frombuffer(f.read(), np.uint8, offset=16)
    return raw.reshape(-1, 28, 28, 1)[:n].astype(np.float32) / 255.0
  return np.random.default_rng(seed).uniform(size=(n, 28, 28, 1)).astype(
      np.float32)


def flops_per_row(fn, variables, x) -> float:
  cost = jax.jit(fn).lower(variables, x).compile().cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0]
  return float(cost["flops"]) / x.shape[0]


def torch_pair_confidence(model, x, lambdas, fast, block=TORCH_BLOCK_PAIRS):
  """C2 and argmin-lambda index of every pair i < j, row-major, batched as
  a PyTorch user writes it (channels_last, inference_mode), `block` pairs
  per batch."""
  torch = peers.import_torch()
  F = torch.nn.functional
  cl = torch.channels_last
  n, num_lams = x.shape[0], len(lambdas)
  ii, jj = torch.triu_indices(n, n, 1)
  lam = torch.tensor(np.asarray(lambdas, np.float32)).view(1, -1, 1, 1, 1)
  c2s, lis = [], []
  with torch.inference_mode():
    src = model.stem(x) if fast else x
    for s in range(0, ii.shape[0], block):
      i, j = ii[s:s + block], jj[s:s + block]
      mixed = lam * src[i][:, None] + (1 - lam) * src[j][:, None]
      mixed = mixed.flatten(0, 1).contiguous(memory_format=cl)
      logits = model.head_from_stem(mixed) if fast else model(mixed)
      c1 = F.softmax(logits, dim=1).max(dim=1).values.view(-1, num_lams)
      c2, li = c1.min(dim=1)
      c2s.append(c2)
      lis.append(li)
  return torch.cat(c2s), torch.cat(lis)


def torch_select_pairs(model, x, lambdas, k, fast, block=TORCH_BLOCK_PAIRS):
  """Top-k lowest C2 pairs (ties by pair order) -> (pairs [k, 2], c2 [k])."""
  torch = peers.import_torch()
  c2, _ = torch_pair_confidence(model, x, lambdas, fast, block)
  order = torch.sort(c2, stable=True).indices[:k]
  ii, jj = torch.triu_indices(x.shape[0], x.shape[0], 1)
  return torch.stack([ii[order], jj[order]], 1).numpy(), c2[order].numpy()


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--quick", action="store_true")
  ap.add_argument("--n", type=int, default=200)
  ap.add_argument("--repeats", type=int, default=5)
  ap.add_argument("--data_dir", default="/work/shared/data/mnist")
  ap.add_argument("--torch_block", type=int, default=TORCH_BLOCK_PAIRS,
                  help="pairs per torch batch")
  a = ap.parse_args()
  torch = peers.import_torch()
  if a.quick:
    a.n, a.repeats = 60, 3
  print(f"jax {jax.__version__} ({jax.default_backend()}), torch "
        f"{torch.__version__} ({torch.get_num_threads()} threads), "
        f"{os.cpu_count()} cpus; start: {peers.load_average()}")

  model = get_model("lenet5_half", 10, conv_impl="auto")
  variables = init_model(model, jax.random.key(0), (28, 28, 1))
  apply_fn = lambda v, x: model.apply(v, x)
  stem_fn, head_fn = mixup.linear_stem_fns(model)   # = mixup.scan_fns(model)
  lambdas = mixup.default_lambdas()
  tmodel = peers.copy_lenet_params(peers.torch_lenet5((3, 8), (60, 42)),
                                   variables["params"]).eval()
  tmodel = tmodel.to(memory_format=torch.channels_last)

  # Agreement: C2 of every pair of a small pool, both paths, and the picks.
  small = load_images(40, a.data_dir, seed=1)
  xs_t = torch.from_numpy(peers.nchw(small)).contiguous(
      memory_format=torch.channels_last)
  agree = {}
  for name, kw, fast in (("plain", {}, False),
                         ("fast", dict(stem_fn=stem_fn, head_fn=head_fn),
                          True)):
    _, c2_j, _ = mixup.pair_confidence(apply_fn, variables, small, lambdas,
                                       **kw)
    c2_t, _ = torch_pair_confidence(tmodel, xs_t, lambdas, fast,
                                    a.torch_block)
    pj, _, _ = mixup.select_pairs(apply_fn, variables, small, 20, lambdas,
                                  **kw)
    pt, _ = torch_select_pairs(tmodel, xs_t, lambdas, 20, fast,
                               a.torch_block)
    agree[name] = (float(np.abs(c2_j - c2_t.numpy()).max()),
                   bool(np.array_equal(pj, pt)))
    if agree[name][0] > 1e-5:
      raise SystemExit(f"{name}: jaxkd and torch C2 disagree: {agree}")
  jax.clear_caches()
  mixup._jitted_scan_block.cache_clear()
  mixup._jitted_stem.cache_clear()

  images = load_images(a.n, a.data_dir)
  xt = torch.from_numpy(peers.nchw(images)).contiguous(
      memory_format=torch.channels_last)
  forwards = a.n * (a.n - 1) // 2 * len(lambdas)
  runs = {
      "jaxkd plain": lambda _: mixup.select_pairs(
          apply_fn, variables, images, K, lambdas),
      "torch plain": lambda _: torch_select_pairs(tmodel, xt, lambdas, K,
                                                  False, a.torch_block),
      "jaxkd fast": lambda _: mixup.select_pairs(
          apply_fn, variables, images, K, lambdas, stem_fn=stem_fn,
          head_fn=head_fn),
      "torch fast": lambda _: torch_select_pairs(tmodel, xt, lambdas, K,
                                                 True, a.torch_block),
  }
  first = {name: peers.first_call(lambda r=r: r(1)) for name, r in
           runs.items()}
  med = peers.interleaved(runs, 1, a.repeats)
  end_load = peers.load_average()
  peak = peers.peak_matmul(1024 if a.quick else 2048)

  ref = get_model("lenet5_half", 10, conv_impl="xla")
  x1 = jnp.zeros((256, 28, 28, 1), jnp.float32)
  full_fl = flops_per_row(lambda v, x: ref.apply(v, x), variables, x1)
  head_fl = flops_per_row(
      lambda v, h: ref.apply(v, h, method=ref.head_from_stem), variables,
      ref.apply(variables, x1, method=ref.stem))
  print(f"peak float32 matmul: numpy {peak['numpy'] / 1e9:.1f}, jax "
        f"{peak['jax'] / 1e9:.1f} GFLOP/s; lenet5_half forward "
        f"{full_fl / 1e3:.1f} kFLOP, head after stem {head_fl / 1e3:.1f}")
  print(f"agreement (n = 40, all pairs): " + "; ".join(
      f"{k} max |C2 diff| {d:.1e}, same top-20 {s}"
      for k, (d, s) in agree.items()))
  print(f"n = {a.n}: {a.n * (a.n - 1) // 2} pairs x {len(lambdas)} lambdas "
        f"= {forwards} forwards, k = {K}, torch {a.torch_block} pairs per "
        f"batch, {a.repeats} interleaved repeats; "
        f"end: {end_load}\n")
  hdr = (f"{'path':<12}{'scan s':>8}{'fwd/s':>10}{'% peak':>8}"
         f"{'first s':>9}{'compile s':>10} | jaxkd / torch speed")
  print(hdr)
  print("-" * len(hdr))
  for path, fl in (("plain", full_fl), ("fast", head_fl)):
    for who in ("jaxkd", "torch"):
      name = f"{who} {path}"
      t = med[name]
      rate = forwards / t
      comp = f"{first[name] - t:>10.2f}" if who == "jaxkd" else f"{'':>10}"
      ratio = (f" | {med['torch ' + path] / t:.2f}x" if who == "jaxkd"
               else "")
      print(f"{name:<12}{t:>8.2f}{rate:>10.0f}"
            f"{100 * rate * fl / peak['peak']:>7.1f}%{first[name]:>9.2f}"
            f"{comp}{ratio}")
  print(f"\njaxkd fast / jaxkd plain = "
        f"{med['jaxkd plain'] / med['jaxkd fast']:.2f}x; torch fast / torch "
        f"plain = {med['torch plain'] / med['torch fast']:.2f}x")


if __name__ == "__main__":
  main()
