# %% [markdown]
# # Active Mixup (Algorithm 1) on MNIST
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/jaxkd-dev/jaxkd/blob/main/notebooks/active_mixup.ipynb)
#
# Active Mixup (Wang et al., CVPR 2020) pays the teacher for synthetic images
# instead of pool points: from the n images of the labelled set L it builds
# every mixup x_ij(λ) = λ x_i + (1 − λ) x_j (i < j, λ on the grid 0.3 … 0.7),
# scores each pair by the student's confidence C2(i, j) = min_λ max_y
# P_S(y | x_ij(λ)) and each round queries the k least confident pairs at
# their λ*. Here: the round loop with the registered `active_mixup` strategy
# against `random_mixup` (random pairs, random λ), the least-confident images
# of round 1 with the teacher's answers (the paper's Figure 2), and the pair
# scan called by hand with `jaxkd.selection.pair_scan`.

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
# ## Data: MNIST when its IDX files are there, else digits
#
# Set `JAXKD_MNIST_DIR` to a folder holding MNIST's four IDX files
# (`train-images-idx3-ubyte.gz` and the others, as distributed) to run on
# MNIST. Without them (Colab, CI) the notebook falls back to scikit-learn's
# bundled 8x8 digits.

# %%
# %matplotlib inline
import shutil
import tempfile

import matplotlib.pyplot as plt
import numpy as np
from absl import logging as absl_logging
from IPython.display import display

from jaxkd import experiment, inspection, loop, parallel, plotting, report
from jaxkd.configs import common
from jaxkd.jobs import active, inputs
from jaxkd.models import get_model
from jaxkd.run_dir import run_path
from jaxkd.selection import get_strategy, pair_scan
from jaxkd.selection.registry import ledger_training_set
from jaxkd.teacher import TeacherOracle, flax_teacher_fn

absl_logging.set_verbosity(absl_logging.ERROR)  # orbax's checkpoint notes
MNIST_DIR = os.environ.get("JAXKD_MNIST_DIR", "")
USE_MNIST = bool(MNIST_DIR) and not SMALL and os.path.exists(
    os.path.join(MNIST_DIR, "train-images-idx3-ubyte.gz"))

config = common.active_config(
    dataset="mnist" if USE_MNIST else "digits",
    data_dir=os.path.abspath(MNIST_DIR) if USE_MNIST else "")
config.strategies = ("active_mixup", "random_mixup")
if USE_MNIST:
  config.split.teacher_train = pick(1500, 20000)
  config.split.test = pick(500, 0)  # 0: the whole test split
  config.teacher.epochs = pick(5, 10)
else:
  config.teacher.epochs = pick(10, 30, 3)
config.split.initial = pick(50, 300, 30)  # n real images: n (n-1)/2 pairs
config.split.pool = 0  # Active Mixup never touches a pool U
config.teacher.model = pick("lenet5", "lenet5", small="mlp")  # MLP: the
config.student = pick("lenet5_half", "lenet5_half", small="mlp")  # test
config.rounds = pick(3, 5, 2)
config.per_round = pick(30, 100, 15)
config.loop.train_steps = pick(100, 300, 30)
config.progress = False
settings = experiment.validate_config(config)  # jaxkd.settings.ActiveSettings
for name in settings.strategies:
  print(f"{name}: scope {get_strategy(name).scope!r}")  # "initial": mixup

# %%
workdir = tempfile.mkdtemp(prefix="jaxkd_mixup_")
mesh = parallel.make_mesh()
dataset, pools = inputs.load_pools(settings)
print(dataset.name, pools.sizes())
teacher, teacher_vars, teacher_acc = active.train_teacher(
    settings, dataset, pools, workdir, mesh)

# %% [markdown]
# ## The round loop for both strategies
#
# A strategy of scope `"initial"` gets an oracle over the n images of L only,
# all paid in round 0, and no candidates: its queries are mixup recipes
# (i, j, λ) that the ledger stores, so a resumed run rebuilds the images and
# never pays twice.

# %%
teacher_fn = flax_teacher_fn(teacher, teacher_vars)
n_init = len(pools.initial_images)
budget = settings.paid_budget  # n_init + rounds x per_round
student = get_model(settings.student, dataset.num_classes)

results, oracles = {}, {}
for name in settings.strategies:
  run_dir = run_path(workdir, name, 0)  # workdir/<strategy>/seed0
  oracles[name] = TeacherOracle(
      teacher_fn, pools.initial_images, budget=budget,
      ledger_path=os.path.join(run_dir, "ledger.sqlite"),
      hard_labels=settings.hard_labels)
  results[name] = [loop.run_loop(
      strategy=name, student=student, oracle=oracles[name],
      initial_indices=np.arange(n_init), candidate_indices=None,
      test_images=pools.test_images, test_labels=pools.test_labels,
      teacher_accuracy=teacher_acc,
      settings=settings.loop_settings(0, name), workdir=run_dir,
      initial_labels=pools.initial_labels, mesh=mesh, progress=False,
      log=lambda msg: None)]
print(report.summary_table(results))

# %% [markdown]
# ## The least-confident mixup images of round 1 (cf. Figure 2)
#
# Active Mixup pays in order of ascending pair confidence, so the ledger's
# round-1 rows start with the pairs the round-0 student was least sure about.
# Captions: λ* (the weight of x_i) and the teacher's top-3 answer.

# %%
rows = inspection.paid_in_round(oracles["active_mixup"], 1, kind="mixup")
show = pick(12, 24, 6)
captions = [f"λ={lam:.2f}\n{cap}" for lam, cap in zip(
    rows.lams[:show], inspection.answer_captions(rows.probs[:show], k=3,
                                                 sep=" | "))]
display(plotting.image_grid(rows.images[:show], captions, ncols=6, size=1.5,
                            title="active_mixup, round 1: least confident"))
rnd = inspection.paid_in_round(oracles["random_mixup"], 1, kind="mixup")
captions = [f"λ={lam:.2f}\n{cap}" for lam, cap in zip(
    rnd.lams[:6], inspection.answer_captions(rnd.probs[:6], k=3, sep=" | "))]
display(plotting.image_grid(rnd.images[:6], captions, ncols=6, size=1.5,
                            title="random_mixup, round 1"))

# %% [markdown]
# ## Success rate against queries: Active Mixup vs random mixup
#
# At the CPU sizes (50 real images, 30 mixup queries a round, 100 training
# steps) the curves are noisy, and soft answers on mixed images can even
# lower the accuracy reached from L alone; the paper's gains are measured with
# thousands of queries (the accelerator sizes).

# %%
fig, ax = plt.subplots(figsize=(6, 3.6), dpi=70)
plotting.draw_success_curves(
    ax, results, title=f"{dataset.name}: mixup queries from "
    f"{n_init} real images (teacher {100 * teacher_acc:.1f}%)")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## The pair scan by hand
#
# The loop's round-0 student is `loop.fit_student` on the ledger's round-0
# answers (retrained from the run's fixed initialisation, seed
# `run_settings.seed`). Its first layer is affine and comes before any
# nonlinearity (`has_linear_stem`), so `linear_stem_fns` splits it into
# `stem_fn` and `head_fn` (the model's inference-only `scan_head`): the stem
# runs once per real image and the scan mixes stem outputs, which is exact
# because λ + (1 − λ) = 1. `select_pairs` keeps a running top-k over blocks
# of pairs; `pair_confidence` returns C2 of every pair.

# %%
import time

run_settings = settings.loop_settings(0, "active_mixup")  # LoopSettings
oracle = oracles["active_mixup"]
images0, targets0 = ledger_training_set(oracle, 0)
state0 = loop.fit_student(student, images0.shape[1:], run_settings, images0,
                          targets0, targets0.argmax(-1), run_settings.seed,
                          mesh, run_settings.loss)
stem_fn, head_fn = pair_scan.linear_stem_fns(student)
lambdas = pair_scan.default_lambdas()
print("λ grid:", lambdas)
pairs, lam_star, c2 = pair_scan.select_pairs(
    None, state0.variables, oracle.pool_images, settings.per_round, lambdas,
    stem_fn=stem_fn, head_fn=head_fn)
paid = {tuple(p) for p in rows.pairs}
same = sum(tuple(p) in paid for p in pairs.tolist())
print(f"select_pairs by hand: {same} of {len(pairs)} pairs are the ones the "
      "loop paid for in round 1")

t0 = time.time()
all_pairs, c2_fast, _ = pair_scan.pair_confidence(
    None, state0.variables, oracle.pool_images, lambdas, stem_fn=stem_fn,
    head_fn=head_fn)
t_fast = time.time() - t0
t0 = time.time()
_, c2_plain, _ = pair_scan.pair_confidence(
    lambda v, x: student.apply(v, x), state0.variables, oracle.pool_images,
    lambdas)
t_plain = time.time() - t0
print(f"{len(all_pairs)} pairs x {len(lambdas)} λ: stem fast path "
      f"{t_fast:.2f}s, plain path {t_plain:.2f}s (both with compilation), "
      f"max |C2 difference| {np.abs(c2_fast - c2_plain).max():.1e}")

# %%
fig, ax = plt.subplots(figsize=(6, 3), dpi=70)
ax.hist(c2_fast, bins=40, color="0.6")
ax.axvline(c2.max(), color="C3", label=f"the {len(c2)} queried (C2 below)")
ax.set_xlabel("pair confidence C2 = min over λ of the max softmax")
ax.set_ylabel("pairs")
ax.legend(fontsize=8)
fig.tight_layout()
plt.show()
for o in oracles.values():
  o.close()
shutil.rmtree(workdir)  # the run directory was a temporary one
