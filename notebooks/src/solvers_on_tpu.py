# %% [markdown]
# # jaxkd's jitted solvers in your own pipeline
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/jaxkd-dev/jaxkd/blob/main/notebooks/solvers_on_tpu.ipynb)
#
# The selection math in jaxkd is plain functions over arrays, jitted and
# shardable over a `("data",)` mesh, so it drops into any JAX pipeline without
# the round loop: the l2,1 ADMM reconstruction solver (`admm_solve`,
# `admm_select`; *Knowledge Distillation in Deep Networks under a Constrained
# Query Budget*), Active Mixup's pair scan (`jaxkd.selection.pair_scan`:
# `pair_confidence`, `select_pairs`) on a model that is not a jaxkd model,
# and one UNIX training step (`unix_train_step`; Xu, Liu, Loy). The last
# section times the ADMM solver at growing n. Switch the Colab runtime to a
# TPU to use every core.

# %%
# In Colab: install jaxkd from the repository. Run locally from a checkout,
# this cell only makes sure the checkout's jaxkd is the one imported.
import os
import subprocess
import sys

if "google.colab" in sys.modules:
  subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                  "git+https://github.com/jaxkd-dev/jaxkd.git"], check=True)
elif os.path.isfile(os.path.join("..", "jaxkd", "__init__.py")):
  sys.path.insert(0, os.path.abspath(".."))

# %% [markdown]
# ### The accelerator switch
#
# `ON_ACCELERATOR` is True on a TPU or GPU runtime (in Colab: *Runtime ->
# Change runtime type*). Every size below goes through `pick(cpu, accelerator,
# small)`: the CPU sizes run this notebook in about a minute on 2 cores, the
# accelerator sizes are the paper-scale settings, and `small` is what the test
# suite uses (`JAXKD_NOTEBOOK_SMALL=1`; it also swaps the LeNets for MLPs,
# which compile faster). Nothing else changes between them.

# %%
import warnings

import jax

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm
ON_ACCELERATOR = jax.default_backend() != "cpu"
SMALL = os.environ.get("JAXKD_NOTEBOOK_SMALL") == "1"  # the test suite


def pick(cpu, accelerator, small=None):
  """The size for this runtime: accelerator, CPU, or the test's smallest."""
  if ON_ACCELERATOR:
    return accelerator
  return small if SMALL and small is not None else cpu


print(f"backend {jax.default_backend()}, {jax.device_count()} device(s), "
      f"ON_ACCELERATOR = {ON_ACCELERATOR}")

# %% [markdown]
# ## Devices and the data mesh
#
# `jaxkd.parallel.make_mesh()` is a one-axis `("data",)` mesh over every
# device: the 8 cores of a v2/v3 TPU, or the one CPU here. Solvers shard the
# pool (rows) over it; everything else is replicated.

# %%
# %matplotlib inline
import time

import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
from IPython.display import display
from sklearn.datasets import load_digits

from jaxkd import parallel, plotting, train, unix
from jaxkd.models import get_model
from jaxkd.selection import admm, pair_scan

print(jax.devices())
mesh = parallel.make_mesh()
print("mesh:", dict(mesh.shape), "data sharding:",
      parallel.data_sharding(mesh).spec)
digits = load_digits()
images = (digits.images / 16.0).astype(np.float32)[..., None]  # [N, 8, 8, 1]
labels = digits.target.astype(np.int32)

# %% [markdown]
# ## ADMM: the points whose span reconstructs the pool
#
# `admm_solve(features)` solves min_Q ||X − X Q X||²_F + α ||Q||₂,₁ with X =
# featuresᵀ (rows are samples) in a jitted `lax.while_loop`; `admm_select`
# returns the k rows of Q with the largest norms. Any [n, d] features work;
# here, raw digit pixels. `normalize=True` makes float32 safe and
# `adaptive=True` balances the residuals (fewer iterations, same optimum).

# %%
n = pick(600, 1797, 300)
feats = images[:n].reshape(n, -1)
state = admm.admm_solve(feats, normalize=True, adaptive=True, tol=1e-4)
print(f"n={n}, d={feats.shape[1]}: {int(state.iter_num)} iterations, "
      f"relative residual {float(state.error):.1e}, final theta "
      f"{float(state.rho):.2e}")
k = 16
picked = np.asarray(admm.admm_select(feats, k, normalize=True,
                                     adaptive=True, tol=1e-4))
on_mesh = np.asarray(admm.admm_select(feats, k, normalize=True,
                                      adaptive=True, tol=1e-4, mesh=mesh))
print("same picks sharded over the mesh:", np.array_equal(picked, on_mesh))
norms = np.linalg.norm(np.asarray(state.q), axis=1)
display(plotting.image_grid(
    images[picked], [f"#{i}\n|Q|={norms[i]:.1f}" for i in picked],
    ncols=8, size=0.8, title=f"admm_select: {k} of {n} digits"))

# %% [markdown]
# ## Active Mixup's scan on your own classifier
#
# `pair_scan.pair_confidence` and `pair_scan.select_pairs` take any
# `apply_fn(params, x) -> logits`. Here the "student" is a scikit-learn
# logistic regression turned into a JAX function: the scan returns the pairs
# (i, j) and λ whose mixup it is least sure about.

# %%
from sklearn.linear_model import LogisticRegression

clf = LogisticRegression(max_iter=300).fit(
    images[:300].reshape(300, -1), labels[:300])
params = {"w": jnp.asarray(clf.coef_.T, jnp.float32),
          "b": jnp.asarray(clf.intercept_, jnp.float32)}
apply_fn = lambda p, x: x.reshape(len(x), -1) @ p["w"] + p["b"]
pool = images[300:300 + pick(80, 400, 40)]
lambdas = pair_scan.default_lambdas()  # 0.3, 0.34, ..., 0.7
pairs, lam_star, c2 = pair_scan.select_pairs(apply_fn, params, pool, 8,
                                             lambdas)
mixed = np.asarray(pair_scan.mix_images(pool, pairs, lam_star))
display(plotting.image_grid(
    mixed, [f"({i},{j}) λ={l:.2f}\nC2={c:.2f}"
            for (i, j), l, c in zip(pairs, lam_star, c2)],
    ncols=8, size=1.0, title="select_pairs: least-confident mixups"))
_, c2_all, _ = pair_scan.pair_confidence(apply_fn, params, pool, lambdas)
print(f"{len(c2_all)} pairs; C2 median {np.median(c2_all):.2f}, "
      f"the 8 picked <= {c2.max():.2f}")

# %% [markdown]
# ## One UNIX step at a time
#
# `unix.unix_train_step` is one jitted, data-parallel step of UNIX: rank the
# batch by the student's uncertainty, mix each image with a random partner
# with the correction factor c_i = sigmoid(w (i + ½ − b) / N) (mild mixup for
# the most uncertain), keep the k most uncertain, and distil the teacher's
# answers on those only. Call it from your own training loop; here a small
# teacher is trained with `jaxkd.train.fit` first.

# %%
teacher = get_model(pick("lenet5", "lenet5", small="mlp"), 10)
student = get_model(pick("lenet5_half", "lenet5_half", small="mlp"), 10)
shape = images.shape[1:]
tx = train.make_optimizer("adam", 3e-3, schedule="constant")
t_state = train.create_train_state(teacher, jax.random.key(0), shape, tx)
t_state, _ = train.fit(
    teacher, t_state, images[:1000], np.eye(10, dtype=np.float32)[
        labels[:1000]], labels[:1000], epochs=pick(4, 20, 2), batch_size=64,
    seed=0, loss_fn=train.make_loss_fn("hard_ce"), mesh=mesh, progress=False)
acc = train.accuracy(teacher, t_state.variables, images[1000:],
                     labels[1000:], mesh=mesh)
print(f"teacher accuracy on the other {len(images) - 1000} digits: {acc:.3f}")

cfg = unix.UnixConfig(k=48, w=10.0)  # N = 64 images per step, keep 48
state = parallel.replicate(mesh, train.create_train_state(
    student, jax.random.key(1), shape, tx))
teacher_vars = parallel.replicate(mesh, t_state.variables)
rng = np.random.default_rng(0)
history = []
for t in range(pick(80, 600, 30)):
  batch = images[rng.choice(1000, 64, replace=False)]
  state, metrics = unix.unix_train_step(
      state, teacher_vars, batch, jax.random.key(t), student=student,
      teacher=teacher, config=cfg, mesh=mesh)
  history.append((float(metrics["loss"]), float(metrics["agreement"])))
acc = train.accuracy(student, state.variables, images[1000:], labels[1000:],
                     mesh=mesh)
print(f"student accuracy after {len(history)} UNIX steps: {acc:.3f}")

fig, (a1, a2) = plt.subplots(1, 2, figsize=(8, 2.8), dpi=70)
a1.plot([h[0] for h in history], color="C0")
a1.set_ylabel("KD loss on the kept images", color="C0")
a1.set_xlabel("UNIX step")
a1b = a1.twinx()
a1b.plot([h[1] for h in history], color="C1")
a1b.set_ylabel("agreement with teacher", color="C1")
for w in (1.0, 10.0, 1000.0):
  a2.plot(np.asarray(unix.correction_factor(64, 64, w=w)), label=f"w={w:g}")
a2.axvline(cfg.k - 0.5, color="0.5", ls=":", label="k (kept)")
a2.set_xlabel("uncertainty rank i (0 = most uncertain)")
a2.set_ylabel("correction c_i")
a2.legend(fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Timing the ADMM solver at growing n
#
# A fixed 200 iterations (`tol=0`) on random rank-deficient [n, 64] features,
# sharded over the mesh: each point is the best of 3 runs after a first
# (compiling) call. One iteration is O(n d r) with r = min(n, d), so time
# should grow about linearly in n once the fixed costs are paid (on a busy
# CPU the points are noisy).

# %%
ns = pick([500, 1000, 2000, 4000], [1000, 4000, 16000, 64000, 256000],
          [100, 400])
d, iters = 64, 200
times, compile_times = [], []
for n in ns:
  g = np.random.default_rng(n)
  x = (g.normal(size=(n, 32)) @ g.normal(size=(32, d))).astype(np.float32)
  solve = lambda: admm.admm_solve(x, normalize=True, tol=0.0,
                                  max_iter=iters, mesh=mesh).q
  t0 = time.perf_counter()
  jax.block_until_ready(solve())
  compile_times.append(time.perf_counter() - t0)
  runs = []
  for _ in range(3):
    t0 = time.perf_counter()
    jax.block_until_ready(solve())
    runs.append(time.perf_counter() - t0)
  times.append(min(runs))
  print(f"n={n:6d}: {1000 * times[-1]:8.1f} ms "
        f"({1000 * times[-1] / iters:.2f} ms/iteration; first call "
        f"{compile_times[-1]:.2f}s)")

fig, ax = plt.subplots(figsize=(5, 3.4), dpi=70)
ax.loglog(ns, times, "o-", label=f"{iters} iterations")
ax.loglog(ns, [times[0] * n / ns[0] for n in ns], ":", color="0.5",
          label="linear in n")
ax.xaxis.set_minor_locator(plt.NullLocator())
ax.set_xticks(ns, [str(n) for n in ns])
ax.set_xlabel("n (pool points)")
ax.set_ylabel("seconds")
ax.set_title(f"admm_solve, d={d}, {jax.device_count()} "
             f"{jax.default_backend()} device(s)")
ax.legend(fontsize=8)
fig.tight_layout()
plt.show()
