"""Writes and executes jaxkd's notebooks from the Python source below.

  python notebooks/make_notebooks.py              # all three, executed
  python notebooks/make_notebooks.py quickstart   # one of them
  python notebooks/make_notebooks.py --no-execute # sources only

The notebooks are generated, never edited by hand: change the cells here
and rerun, so a review reads Python and the committed .ipynb files carry
their outputs (figures at dpi 70, no output over ~200 KB, files < 1 MB; the
script refuses to write larger ones). Execution uses nbclient with the
`python3` kernel of the running interpreter, from the notebooks/ folder.
`JAXKD_NOTEBOOK_SMALL=1` makes every notebook pick its smallest sizes (the
test suite's setting, tests/test_notebooks.py).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Dict, List, Optional, Tuple

import nbformat

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_URL = "https://github.com/jaxkd-dev/jaxkd"  # placeholder owner
COLAB = "https://colab.research.google.com/github/jaxkd-dev/jaxkd/blob/main"
MAX_OUTPUT_BYTES = 200_000
MAX_NOTEBOOK_BYTES = 1_000_000

Cell = Tuple[str, str]  # ("md" | "code", source)


def md(text: str) -> Cell:
  return ("md", text.strip("\n"))


def code(text: str) -> Cell:
  return ("code", text.strip("\n"))


def badge(name: str) -> str:
  return (f"[![Open In Colab](https://colab.research.google.com/assets/"
          f"colab-badge.svg)]({COLAB}/notebooks/{name}.ipynb)")


# Shared cells: the Colab install, and the accelerator switch.
INSTALL = code(f'''
# In Colab: install jaxkd from the repository. Run locally from a checkout,
# this cell only makes sure the checkout's jaxkd is the one imported.
import os
import subprocess
import sys

if "google.colab" in sys.modules:
  subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                  "git+{REPO_URL}.git"], check=True)
elif os.path.isfile(os.path.join("..", "jaxkd", "__init__.py")):
  sys.path.insert(0, os.path.abspath(".."))
''')

SWITCH_MD = md('''
### The accelerator switch

`ON_ACCELERATOR` is True on a TPU or GPU runtime (in Colab: *Runtime ->
Change runtime type*). Every size below goes through `pick(cpu, accelerator,
small)`: the CPU sizes run this notebook in about a minute on 2 cores, the
accelerator sizes are the paper-scale settings, and `small` is what the test
suite uses (`JAXKD_NOTEBOOK_SMALL=1`; it also swaps the LeNets for MLPs,
which compile faster). Nothing else changes between them.
''')

SWITCH = code('''
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
''')

# ------------------------------------------------------------ quickstart ---

QUICKSTART: List[Cell] = [
    md(f'''
# jaxkd quickstart: active distillation on digits

{badge("quickstart")}

Active knowledge distillation trains a small *student* from an expensive
*teacher* whose every answer costs money (an API, a big model, a human). The
student starts from a few paid answers and, round after round, a selection
strategy chooses which unlabelled inputs are worth paying the teacher for
next. A good strategy reaches the teacher's accuracy with fewer paid queries
than picking at random; this notebook runs a few strategies through the same
config and round loop as the command line and compares them.
'''),
    INSTALL,
    SWITCH_MD,
    SWITCH,
    md('''
## The config the CLI uses

`jaxkd.configs.common.active_config()` is the default job of
`python -m jaxkd.main` (`jaxkd/configs/default.py`): scikit-learn's 8x8
digits, a LeNet-5 teacher trained on 700 of them, an initial labelled set L
of 50 and a pool U of 547 to choose from, a half-width LeNet-5 student. Only
the sizes change here; each override is a `--config.x=...` flag on the
command line.
'''),
    code('''
%matplotlib inline
import shutil
import tempfile

import matplotlib.pyplot as plt
import numpy as np
from absl import logging as absl_logging
from IPython.display import display

from jaxkd import experiment, inspection, loop, parallel, plotting
from jaxkd.configs import common
from jaxkd.models import get_model
from jaxkd.teacher import TeacherOracle, flax_teacher_fn

absl_logging.set_verbosity(absl_logging.ERROR)  # orbax's checkpoint notes
config = common.active_config()
config.strategies = pick(
    cpu=("random", "entropy", "margin"),
    accelerator=("random", "entropy", "margin", "coreset", "badge", "admm"),
    small=("random", "margin"))
config.teacher.epochs = pick(10, 30, 3)
# The test's smallest run uses MLPs: the same code, a fraction of the
# compile time.
config.teacher.model = pick("lenet5", "lenet5", small="mlp")
config.student = pick("lenet5_half", "lenet5_half", small="mlp")
config.rounds = pick(4, 5, 2)
config.per_round = pick(40, 40, 20)
config.loop.train_steps = pick(120, 300, 30)
config.progress = False
experiment.validate_config(config)  # one-line JaxkdError before paying
print("python -m jaxkd.main --workdir runs/digits"
      f" --strategy={','.join(config.strategies)}"
      f" --config.teacher.model={config.teacher.model}"
      f" --config.student={config.student}"
      f" --config.teacher.epochs={config.teacher.epochs}"
      f" --config.rounds={config.rounds} --config.per_round={config.per_round}"
      f" --config.loop.train_steps={config.loop.train_steps}")
'''),
    md('''
## Data and teacher

`load_pools` cuts the dataset into teacher-train / L / U / test exactly as
the job does; `train_teacher` trains the teacher once and checkpoints it in
the run directory.
'''),
    code('''
workdir = tempfile.mkdtemp(prefix="jaxkd_quickstart_")
mesh = parallel.make_mesh()  # ("data",) mesh over every device
dataset, pools = experiment.load_pools(config)
print(pools.sizes())
teacher, teacher_vars, teacher_acc = experiment.train_teacher(
    config, dataset, pools, workdir, mesh)
'''),
    md('''
## The round loop, one run per strategy

This is the body of `experiment.train_and_evaluate` spelled out: one
`TeacherOracle` (budget + SQLite ledger of every paid answer) per run and
`jaxkd.loop.run_loop`, which pays for L in round 0, then each round lets the
strategy pick `per_round` points of U, pays for them and retrains the
student. The oracles stay open so we can read their ledgers afterwards.
'''),
    code('''
teacher_fn = flax_teacher_fn(teacher, teacher_vars)
oracle_pool = np.concatenate([pools.initial_images, pools.pool_images])
n_init = len(pools.initial_images)
candidates = n_init + np.arange(len(pools.pool_images))
budget = n_init + config.rounds * config.per_round
student = get_model(config.student, dataset.num_classes)

results, oracles = {}, {}
for name in config.strategies:
  run_dir = os.path.join(workdir, name, "seed0")
  oracles[name] = TeacherOracle(
      teacher_fn, oracle_pool, budget=budget,
      ledger_path=os.path.join(run_dir, "ledger.sqlite"),
      hard_labels=config.hard_labels)
  records = loop.run_loop(
      strategy=name, student=student, oracle=oracles[name],
      initial_indices=np.arange(n_init), candidate_indices=candidates,
      test_images=pools.test_images, test_labels=pools.test_labels,
      teacher_accuracy=teacher_acc,
      settings=experiment.loop_settings(config, 0, name), workdir=run_dir,
      initial_labels=pools.initial_labels, mesh=mesh, progress=False,
      log=lambda msg: None)
  results[name] = [records]  # one list of round records per seed
print(experiment.summary_table(results))
'''),
    md('''
## Success rate against queries

Success rate = student accuracy / teacher accuracy on the test split, after
each round, against the number of teacher answers paid so far.
'''),
    code('''
fig, ax = plt.subplots(figsize=(6, 3.6), dpi=70)
plotting.draw_success_curves(
    ax, results, title=f"digits: {config.student} from {config.teacher.model}"
    f" (teacher {100 * teacher_acc:.1f}%)")
fig.tight_layout()
plt.show()
'''),
    md('''
## What the best strategy paid for in round 1, beside random

Each ledger row records the round that paid for it; `jaxkd.inspection`
reads one round back as images and teacher answers (`oracle.entries`, never
paying). Captions: the teacher's top classes with their probabilities.
'''),
    code('''
def final_success(name):
  recs = results[name][0]
  return (recs[-1]["success_rate"],
          np.mean([r["success_rate"] for r in recs]))

best = max((n for n in results if n != "random"), key=final_success)
show = pick(16, 24, 8)
for name in (best, "random"):
  rows = inspection.paid_in_round(oracles[name], 1)
  captions = inspection.answer_captions(rows.probs[:show], k=2, sep="\\n")
  display(plotting.image_grid(rows.images[:show], captions, ncols=8,
                              size=0.8, title=f"{name}: round 1"))
'''),
    code('''
rows = inspection.paid_in_round(oracles[best], 1)
classes, probs = inspection.top_answers(rows.probs[:5], k=3)
for idx, c, p in zip(rows.pool_indices, classes, probs):
  print(f"pool point {idx:4d}: teacher top-3 " + ", ".join(
      f"{k} ({v:.3f})" for k, v in zip(c, p)))
for oracle in oracles.values():
  oracle.close()
shutil.rmtree(workdir)  # the run directory was a temporary one
'''),
]

# ---------------------------------------------------------- active mixup ---

ACTIVE_MIXUP: List[Cell] = [
    md(f'''
# Active Mixup (Algorithm 1) on MNIST

{badge("active_mixup")}

Active Mixup (Wang et al., CVPR 2020) pays the teacher for synthetic images
instead of pool points: from the n images of the labelled set L it builds
every mixup x_ij(λ) = λ x_i + (1 − λ) x_j (i < j, λ on the grid 0.3 … 0.7),
scores each pair by the student's confidence C2(i, j) = min_λ max_y
P_S(y | x_ij(λ)) and each round queries the k least confident pairs at
their λ*. Here: the round loop with the registered `active_mixup` strategy
against `random_mixup` (random pairs, random λ), the least-confident images
of round 1 with the teacher's answers (the paper's Figure 2), and the pair
scan called by hand with `jaxkd.selection.mixup`.
'''),
    INSTALL,
    SWITCH_MD,
    SWITCH,
    md('''
## Data: MNIST when its IDX files are there, else digits

The repository's convention is `../shared/data/mnist` beside the checkout
(set `JAXKD_MNIST_DIR` to point elsewhere). Without them (Colab, CI) the
notebook falls back to the bundled 8x8 digits.
'''),
    code('''
%matplotlib inline
import shutil
import tempfile

import matplotlib.pyplot as plt
import numpy as np
from absl import logging as absl_logging
from IPython.display import display

from jaxkd import experiment, inspection, loop, parallel, plotting
from jaxkd.configs import common
from jaxkd.models import get_model
from jaxkd.selection import get_strategy, mixup
from jaxkd.selection.registry import ledger_training_set
from jaxkd.teacher import TeacherOracle, flax_teacher_fn

absl_logging.set_verbosity(absl_logging.ERROR)  # orbax's checkpoint notes
MNIST_DIR = os.environ.get("JAXKD_MNIST_DIR") or os.path.join(
    "..", "..", "shared", "data", "mnist")
USE_MNIST = not SMALL and os.path.exists(
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
experiment.validate_config(config)
for name in config.strategies:
  print(f"{name}: scope {get_strategy(name).scope!r}")  # "initial": mixup
'''),
    code('''
workdir = tempfile.mkdtemp(prefix="jaxkd_mixup_")
mesh = parallel.make_mesh()
dataset, pools = experiment.load_pools(config)
print(dataset.name, pools.sizes())
teacher, teacher_vars, teacher_acc = experiment.train_teacher(
    config, dataset, pools, workdir, mesh)
'''),
    md('''
## The round loop for both strategies

A strategy of scope `"initial"` gets an oracle over the n images of L only,
all paid in round 0, and no candidates: its queries are mixup recipes
(i, j, λ) that the ledger stores, so a resumed run rebuilds the images and
never pays twice.
'''),
    code('''
teacher_fn = flax_teacher_fn(teacher, teacher_vars)
n_init = len(pools.initial_images)
budget = n_init + config.rounds * config.per_round
student = get_model(config.student, dataset.num_classes)

results, oracles = {}, {}
for name in config.strategies:
  run_dir = os.path.join(workdir, name, "seed0")
  oracles[name] = TeacherOracle(
      teacher_fn, pools.initial_images, budget=budget,
      ledger_path=os.path.join(run_dir, "ledger.sqlite"),
      hard_labels=config.hard_labels)
  results[name] = [loop.run_loop(
      strategy=name, student=student, oracle=oracles[name],
      initial_indices=np.arange(n_init), candidate_indices=None,
      test_images=pools.test_images, test_labels=pools.test_labels,
      teacher_accuracy=teacher_acc,
      settings=experiment.loop_settings(config, 0, name), workdir=run_dir,
      initial_labels=pools.initial_labels, mesh=mesh, progress=False,
      log=lambda msg: None)]
print(experiment.summary_table(results))
'''),
    md('''
## The least-confident mixup images of round 1 (cf. Figure 2)

Active Mixup pays in order of ascending pair confidence, so the ledger's
round-1 rows start with the pairs the round-0 student was least sure about.
Captions: λ* (the weight of x_i) and the teacher's top-3 answer.
'''),
    code('''
rows = inspection.paid_in_round(oracles["active_mixup"], 1, kind="mixup")
show = pick(12, 24, 6)
captions = [f"λ={lam:.2f}\\n{cap}" for lam, cap in zip(
    rows.lams[:show], inspection.answer_captions(rows.probs[:show], k=3,
                                                 sep=" | "))]
display(plotting.image_grid(rows.images[:show], captions, ncols=6, size=1.5,
                            title="active_mixup, round 1: least confident"))
rnd = inspection.paid_in_round(oracles["random_mixup"], 1, kind="mixup")
captions = [f"λ={lam:.2f}\\n{cap}" for lam, cap in zip(
    rnd.lams[:6], inspection.answer_captions(rnd.probs[:6], k=3, sep=" | "))]
display(plotting.image_grid(rnd.images[:6], captions, ncols=6, size=1.5,
                            title="random_mixup, round 1"))
'''),
    md('''
## Success rate against queries: Active Mixup vs random mixup

At the CPU sizes (50 real images, 30 mixup queries a round, 100 training
steps) the curves are noisy, and soft answers on mixed images can even
lower the accuracy reached from L alone; the paper's gains are measured with
thousands of queries (the accelerator sizes).
'''),
    code('''
fig, ax = plt.subplots(figsize=(6, 3.6), dpi=70)
plotting.draw_success_curves(
    ax, results, title=f"{dataset.name}: mixup queries from "
    f"{n_init} real images (teacher {100 * teacher_acc:.1f}%)")
fig.tight_layout()
plt.show()
'''),
    md('''
## The pair scan by hand

The loop's round-0 student is `loop.fit_student` on the ledger's round-0
answers (retrained from the run's fixed initialisation, seed
`settings.seed`). Its first layer is affine and comes before any
nonlinearity (`has_linear_stem`), so `linear_stem_fns` splits it into
`stem_fn` and `head_fn` (the model's inference-only `scan_head`): the stem
runs once per real image and the scan mixes stem outputs, which is exact
because λ + (1 − λ) = 1. `select_pairs` keeps a running top-k over blocks
of pairs; `pair_confidence` returns C2 of every pair.
'''),
    code('''
import time

settings = experiment.loop_settings(config, 0, "active_mixup")
oracle = oracles["active_mixup"]
images0, targets0 = ledger_training_set(oracle, 0)
state0 = loop.fit_student(student, images0.shape[1:], settings, images0,
                          targets0, targets0.argmax(-1), settings.seed, mesh,
                          settings.loss)
stem_fn, head_fn = mixup.linear_stem_fns(student)
lambdas = mixup.default_lambdas()
print("λ grid:", lambdas)
pairs, lam_star, c2 = mixup.select_pairs(
    None, state0.variables, oracle.pool_images, config.per_round, lambdas,
    stem_fn=stem_fn, head_fn=head_fn)
paid = {tuple(p) for p in rows.pairs}
same = sum(tuple(p) in paid for p in pairs.tolist())
print(f"select_pairs by hand: {same} of {len(pairs)} pairs are the ones the "
      "loop paid for in round 1")

t0 = time.time()
all_pairs, c2_fast, _ = mixup.pair_confidence(
    None, state0.variables, oracle.pool_images, lambdas, stem_fn=stem_fn,
    head_fn=head_fn)
t_fast = time.time() - t0
t0 = time.time()
_, c2_plain, _ = mixup.pair_confidence(
    lambda v, x: student.apply(v, x), state0.variables, oracle.pool_images,
    lambdas)
t_plain = time.time() - t0
print(f"{len(all_pairs)} pairs x {len(lambdas)} λ: stem fast path "
      f"{t_fast:.2f}s, plain path {t_plain:.2f}s (both with compilation), "
      f"max |C2 difference| {np.abs(c2_fast - c2_plain).max():.1e}")
'''),
    code('''
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
'''),
]

# -------------------------------------------------------- solvers on TPU ---

SOLVERS: List[Cell] = [
    md(f'''
# jaxkd's jitted solvers in your own pipeline

{badge("solvers_on_tpu")}

The selection math in jaxkd is plain functions over arrays, jitted and
shardable over a `("data",)` mesh, so it drops into any JAX pipeline without
the round loop: the l2,1 ADMM reconstruction solver (`admm_solve`,
`admm_select`; *Knowledge Distillation in Deep Networks under a Constrained
Query Budget*), Active Mixup's pair scan (`pair_confidence`,
`select_pairs`) on a model that is not a jaxkd model, and one UNIX training
step (`unix_train_step`; Xu, Liu, Loy). The last section times the ADMM
solver at growing n. Switch the Colab runtime to a TPU to use every core.
'''),
    INSTALL,
    SWITCH_MD,
    SWITCH,
    md('''
## Devices and the data mesh

`jaxkd.parallel.make_mesh()` is a one-axis `("data",)` mesh over every
device: the 8 cores of a v2/v3 TPU, or the one CPU here. Solvers shard the
pool (rows) over it; everything else is replicated.
'''),
    code('''
%matplotlib inline
import time

import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
from IPython.display import display
from sklearn.datasets import load_digits

from jaxkd import parallel, plotting, train, unix
from jaxkd.models import get_model
from jaxkd.selection import admm, mixup

print(jax.devices())
mesh = parallel.make_mesh()
print("mesh:", dict(mesh.shape), "data sharding:",
      parallel.data_sharding(mesh).spec)
digits = load_digits()
images = (digits.images / 16.0).astype(np.float32)[..., None]  # [N, 8, 8, 1]
labels = digits.target.astype(np.int32)
'''),
    md('''
## ADMM: the points whose span reconstructs the pool

`admm_solve(features)` solves min_Q ||X − X Q X||²_F + α ||Q||₂,₁ with X =
featuresᵀ (rows are samples) in a jitted `lax.while_loop`; `admm_select`
returns the k rows of Q with the largest norms. Any [n, d] features work;
here, raw digit pixels. `normalize=True` makes float32 safe and
`adaptive=True` balances the residuals (fewer iterations, same optimum).
'''),
    code('''
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
    images[picked], [f"#{i}\\n|Q|={norms[i]:.1f}" for i in picked],
    ncols=8, size=0.8, title=f"admm_select: {k} of {n} digits"))
'''),
    md('''
## Active Mixup's scan on your own classifier

`pair_confidence` and `select_pairs` take any `apply_fn(params, x) ->
logits`. Here the "student" is a scikit-learn logistic regression turned
into a JAX function: the scan returns the pairs (i, j) and λ whose mixup it
is least sure about.
'''),
    code('''
from sklearn.linear_model import LogisticRegression

clf = LogisticRegression(max_iter=300).fit(
    images[:300].reshape(300, -1), labels[:300])
params = {"w": jnp.asarray(clf.coef_.T, jnp.float32),
          "b": jnp.asarray(clf.intercept_, jnp.float32)}
apply_fn = lambda p, x: x.reshape(len(x), -1) @ p["w"] + p["b"]
pool = images[300:300 + pick(80, 400, 40)]
pairs, lam_star, c2 = mixup.select_pairs(apply_fn, params, pool, 8,
                                         mixup.default_lambdas())
mixed = np.asarray(mixup.mix_images(pool, pairs, lam_star))
display(plotting.image_grid(
    mixed, [f"({i},{j}) λ={l:.2f}\\nC2={c:.2f}"
            for (i, j), l, c in zip(pairs, lam_star, c2)],
    ncols=8, size=1.0, title="select_pairs: least-confident mixups"))
_, c2_all, _ = mixup.pair_confidence(apply_fn, params, pool,
                                     mixup.default_lambdas())
print(f"{len(c2_all)} pairs; C2 median {np.median(c2_all):.2f}, "
      f"the 8 picked <= {c2.max():.2f}")
'''),
    md('''
## One UNIX step at a time

`unix.unix_train_step` is one jitted, data-parallel step of UNIX: rank the
batch by the student's uncertainty, mix each image with a random partner
with the correction factor c_i = sigmoid(w (i + ½ − b) / N) (mild mixup for
the most uncertain), keep the k most uncertain, and distil the teacher's
answers on those only. Call it from your own training loop; here a small
teacher is trained with `jaxkd.train.fit` first.
'''),
    code('''
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
'''),
    md('''
## Timing the ADMM solver at growing n

A fixed 200 iterations (`tol=0`) on random rank-deficient [n, 64] features,
sharded over the mesh: each point is the best of 3 runs after a first
(compiling) call. One iteration is O(n d r) with r = min(n, d), so time
should grow about linearly in n once the fixed costs are paid (on a busy
CPU the points are noisy).
'''),
    code('''
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
'''),
]

NOTEBOOKS: Dict[str, List[Cell]] = {
    "quickstart": QUICKSTART,
    "active_mixup": ACTIVE_MIXUP,
    "solvers_on_tpu": SOLVERS,
}


# ------------------------------------------------------------- building ---


def build(name: str) -> nbformat.NotebookNode:
  """The unexecuted notebook `name` from its cells above."""
  nb = nbformat.v4.new_notebook()
  nb.metadata = {
      "kernelspec": {"display_name": "Python 3", "language": "python",
                     "name": "python3"},
      "language_info": {"name": "python"},
      "colab": {"provenance": []},
  }
  if name == "solvers_on_tpu":
    nb.metadata["accelerator"] = "TPU"  # Colab opens it on a TPU runtime
  nb.cells = [nbformat.v4.new_markdown_cell(src) if kind == "md" else
              nbformat.v4.new_code_cell(src)
              for kind, src in NOTEBOOKS[name]]
  for i, cell in enumerate(nb.cells):
    cell.id = f"{name[:12]}-{i:02d}"  # stable ids: clean diffs
  return nb


def execute(nb: nbformat.NotebookNode, *, timeout: int = 600,
            env: Optional[Dict[str, str]] = None) -> nbformat.NotebookNode:
  """Runs every cell with nbclient (python3 kernel) from notebooks/; raises
  nbclient's CellExecutionError on the first failing cell."""
  from nbclient import NotebookClient
  client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                          record_timing=True,
                          resources={"metadata": {"path": HERE}})
  kernel_env = dict(os.environ if env is None else env)
  # tests/conftest.py fakes 8 CPU devices; a notebook runs on the real ones.
  flags = kernel_env.get("XLA_FLAGS", "").split()
  kernel_env["XLA_FLAGS"] = " ".join(
      f for f in flags if not f.startswith(
          "--xla_force_host_platform_device_count"))
  kernel_env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  client.execute(env=kernel_env)
  return nb


def cell_seconds(nb: nbformat.NotebookNode) -> List[Tuple[int, float]]:
  """(cell index, seconds) of each executed code cell; removes nbclient's
  timestamps from the metadata (they would change every run)."""
  from datetime import datetime
  out = []
  for i, cell in enumerate(nb.cells):
    t = cell.metadata.pop("execution", None)
    if t and "iopub.execute_input" in t and "shell.execute_reply" in t:
      a, b = (datetime.fromisoformat(t[k].replace("Z", "+00:00"))
              for k in ("iopub.execute_input", "shell.execute_reply"))
      out.append((i, (b - a).total_seconds()))
  return out


def output_sizes(nb: nbformat.NotebookNode) -> List[int]:
  """Bytes of each code cell's outputs as JSON."""
  return [len(json.dumps(c.get("outputs", []))) for c in nb.cells
          if c.cell_type == "code"]


def check_sizes(name: str, nb: nbformat.NotebookNode) -> int:
  """Raises if an output or the notebook exceeds the size limits."""
  big = max(output_sizes(nb), default=0)
  if big > MAX_OUTPUT_BYTES:
    raise SystemExit(f"{name}: an output cell has {big} bytes "
                     f"(limit {MAX_OUTPUT_BYTES}).")
  size = len(nbformat.writes(nb).encode())
  if size > MAX_NOTEBOOK_BYTES:
    raise SystemExit(f"{name}: {size} bytes (limit {MAX_NOTEBOOK_BYTES}).")
  return size


def _children_cpu() -> float:
  """CPU seconds (user + sys) of finished child processes (the kernels)."""
  import resource
  r = resource.getrusage(resource.RUSAGE_CHILDREN)
  return r.ru_utime + r.ru_stime


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("names", nargs="*",
                      help=f"notebooks to build: {', '.join(NOTEBOOKS)} "
                      "(default: all)")
  parser.add_argument("--no-execute", action="store_true",
                      help="write the sources without outputs")
  parser.add_argument("--timeout", type=int, default=600,
                      help="seconds per cell")
  args = parser.parse_args(argv)
  unknown = set(args.names) - set(NOTEBOOKS)
  if unknown:
    parser.error(f"unknown notebooks {sorted(unknown)}; known: "
                 f"{', '.join(NOTEBOOKS)}")
  for name in args.names or list(NOTEBOOKS):
    nb = build(name)
    t0, cpu0 = time.time(), _children_cpu()
    cells = ""
    if not args.no_execute:
      execute(nb, timeout=args.timeout)
      cells = " ".join(f"[{i}] {sec:.0f}s" for i, sec in cell_seconds(nb)
                       if sec >= 1)
    wall, cpu = time.time() - t0, _children_cpu() - cpu0
    size = check_sizes(name, nb)
    path = os.path.join(HERE, f"{name}.ipynb")
    nbformat.write(nb, path)
    print(f"{path}: {size / 1000:.0f} KB, largest output "
          f"{max(output_sizes(nb)) / 1000:.0f} KB"
          + ("" if args.no_execute else f", executed in {wall:.0f}s wall, "
             f"{cpu:.0f}s kernel CPU (cells: {cells})"), flush=True)


if __name__ == "__main__":
  sys.path.insert(0, os.path.dirname(HERE))
  main()
