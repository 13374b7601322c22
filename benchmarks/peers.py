"""PyTorch peers and timing helpers shared by the benchmarks.

The peers are written the way the papers' official code is (RepDistiller's
`DistillKL`, UNIXKD's training loop, plain `nn.Conv2d`/`nn.Linear` LeNet-5 in
NCHW); weights are copied from the Flax params so outputs agree before any
timing. torch is a benchmark-only dependency (`pip install -e '.[bench]'`).

Timing: `interleaved` runs every contender once per repeat, in a rotating
order, and returns medians, so a change of machine load hits all of them
alike; `load_average` is printed beside every result.
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Callable, Dict

import numpy as np

TORCH_THREADS = 2


def import_torch():
  """torch with `TORCH_THREADS` intra-op threads (SystemExit if missing)."""
  try:
    import torch
  except ModuleNotFoundError:
    raise SystemExit("These benchmarks compare against PyTorch: "
                     "pip install -e '.[bench]'")
  torch.set_num_threads(TORCH_THREADS)
  return torch


def load_average() -> str:
  one, five, fifteen = os.getloadavg()
  return (f"load average {one:.2f} {five:.2f} {fifteen:.2f} "
          f"({os.cpu_count()} cpus)")


def peak_matmul(size: int = 2048, reps: int = 5) -> Dict[str, float]:
  """Best float32 FLOP/s of one size x size matmul in NumPy and in JAX."""
  import jax
  import jax.numpy as jnp
  a = np.random.default_rng(0).standard_normal((size, size)).astype(
      np.float32)
  out = {}
  aj = jnp.asarray(a)
  f = jax.jit(lambda a: a @ a)
  for name, fn in (("numpy", lambda: a @ a),
                   ("jax", lambda: f(aj).block_until_ready())):
    fn()
    best = min(_timed(fn) for _ in range(reps))
    out[name] = 2 * size ** 3 / best
  out["peak"] = max(out.values())
  return out


def _timed(fn):
  t = time.perf_counter()
  fn()
  return time.perf_counter() - t


def interleaved(runs: Dict[str, Callable[[int], None]], steps: int,
                repeats: int) -> Dict[str, float]:
  """Median seconds per step of each `runs[name](steps)` (which must block
  until its work is done), over `repeats` interleaved rounds."""
  names = list(runs)
  times = {n: [] for n in names}
  for r in range(repeats):
    order = names[r % len(names):] + names[:r % len(names)]
    for n in order:
      t = time.perf_counter()
      runs[n](steps)
      times[n].append((time.perf_counter() - t) / steps)
  return {n: statistics.median(v) for n, v in times.items()}


def first_call(fn: Callable[[], None]) -> float:
  """Seconds of one call (the first: trace + compile + run for jax)."""
  return _timed(fn)


# --------------------------------------------------------------- models ---


def torch_lenet5(channels=(6, 16), hidden=(120, 84), num_classes=10,
                 in_channels=1, spatial=28):
  """LeNet-5 as jaxkd.models.lenet.LeNet5 (SAME 5x5 convs, 2x2 max pools),
  written in NCHW as the official PyTorch code is."""
  torch = import_torch()
  nn, F = torch.nn, torch.nn.functional
  flat = channels[1] * (spatial // 4) ** 2

  class LeNet5(nn.Module):

    def __init__(self):
      super().__init__()
      self.conv1 = nn.Conv2d(in_channels, channels[0], 5, padding=2)
      self.conv2 = nn.Conv2d(channels[0], channels[1], 5, padding=2)
      self.fc1 = nn.Linear(flat, hidden[0])
      self.fc2 = nn.Linear(hidden[0], hidden[1])
      self.fc3 = nn.Linear(hidden[1], num_classes)

    def stem(self, x):
      return self.conv1(x)

    def head_from_stem(self, h):
      x = F.max_pool2d(F.relu(h), 2)
      x = F.max_pool2d(F.relu(self.conv2(x)), 2)
      x = x.flatten(1)
      x = F.relu(self.fc1(x))
      x = F.relu(self.fc2(x))
      return self.fc3(x)

    def forward(self, x):
      return self.head_from_stem(self.stem(x))

  return LeNet5()


def lenet_state_dict(params, spatial=28) -> Dict[str, np.ndarray]:
  """Flax LeNet5 params (HWIO kernels, [in, out] dense, NHWC flatten) in the
  NCHW torch model's layout, as NumPy arrays keyed like its state_dict."""
  p = {k: {n: np.asarray(a) for n, a in v.items()} for k, v in params.items()}
  s = spatial // 4
  c1 = p["conv2"]["kernel"].shape[-1]
  w_fc1 = p["fc1"]["kernel"]                      # [(h, w, c), out]
  w_fc1 = w_fc1.reshape(s, s, c1, -1).transpose(3, 2, 0, 1).reshape(
      w_fc1.shape[1], -1)                         # [out, (c, h, w)]
  return {
      "conv1.weight": p["conv1"]["kernel"].transpose(3, 2, 0, 1),
      "conv1.bias": p["conv1"]["bias"],
      "conv2.weight": p["conv2"]["kernel"].transpose(3, 2, 0, 1),
      "conv2.bias": p["conv2"]["bias"],
      "fc1.weight": w_fc1, "fc1.bias": p["fc1"]["bias"],
      "fc2.weight": p["fc2"]["kernel"].T, "fc2.bias": p["fc2"]["bias"],
      "fc3.weight": p["head"]["kernel"].T, "fc3.bias": p["head"]["bias"],
  }


def copy_lenet_params(torch_model, params, spatial=28):
  """Loads Flax LeNet5 params into the NCHW torch model."""
  torch = import_torch()
  torch_model.load_state_dict(
      {k: torch.from_numpy(np.array(v, np.float32))
       for k, v in lenet_state_dict(params, spatial).items()})
  return torch_model


def nchw(x: np.ndarray) -> np.ndarray:
  return np.ascontiguousarray(np.asarray(x, np.float32).transpose(0, 3, 1, 2))


# ----------------------------------------------------------------- steps ---


def distill_kl(y_s, y_t, temperature):
  """RepDistiller's DistillKL: T^2 KL(softmax(y_t/T) || softmax(y_s/T))."""
  torch = import_torch()
  F = torch.nn.functional
  p_s = F.log_softmax(y_s / temperature, dim=1)
  p_t = F.softmax(y_t / temperature, dim=1)
  return (F.kl_div(p_s, p_t, reduction="sum") * temperature ** 2
          / y_s.shape[0])


def kd_step(model, opt, x, t_logits, temperature=4.0):
  """One student step on fixed teacher logits (the official loop body)."""
  opt.zero_grad(set_to_none=True)
  loss = distill_kl(model(x), t_logits, temperature)
  loss.backward()
  opt.step()
  return loss


def kd_teacher_step(model, teacher, opt, x, temperature=4.0):
  """KD step with the teacher forward inside (no grad through it)."""
  torch = import_torch()
  with torch.no_grad():
    t_logits = teacher(x)
  return kd_step(model, opt, x, t_logits, temperature)


def unix_step(model, teacher, opt, x, k, *, w=10.0, alpha=1.0,
              temperature=4.0, perm=None, lam=None):
  """UNIX step (Xu et al. 2020) as in the official UNIXKD loop: entropy of
  the student's no-grad forward, sort descending, mix the first k with
  random partners with correction c_i = sigmoid(w (i + 1/2 - N/2) / N),
  teacher on the k mixed images, student KD step on them. `perm`/`lam`
  override the random draws (agreement checks)."""
  torch = import_torch()
  F = torch.nn.functional
  n = x.shape[0]
  with torch.no_grad():
    logp = F.log_softmax(model(x), dim=1)
    ent = -(logp.exp() * logp).sum(1)
    order = torch.sort(ent, descending=True, stable=True)[1][:k]
    if perm is None:
      perm = torch.randperm(n)
    if lam is None:
      lam = float(np.random.beta(alpha, alpha))
    c = torch.sigmoid(w * (torch.arange(k, dtype=torch.float32) + 0.5 - n / 2)
                      / n)
    m = (c * lam).view(-1, 1, 1, 1)
    x_mix = (1 - m) * x[order] + m * x[perm[:k]]
    t_logits = teacher(x_mix)
  return kd_step(model, opt, x_mix, t_logits, temperature), order
