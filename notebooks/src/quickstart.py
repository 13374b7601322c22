# %% [markdown]
# # jaxkd quickstart: active distillation on digits
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/jaxkd-dev/jaxkd/blob/main/notebooks/quickstart.ipynb)
#
# Active knowledge distillation trains a small *student* from an expensive
# *teacher* whose every answer costs money (an API, a big model, a human). The
# student starts from a few paid answers and, round after round, a selection
# strategy chooses which unlabelled inputs are worth paying the teacher for
# next. A good strategy reaches the teacher's accuracy with fewer paid queries
# than picking at random; this notebook runs a few strategies through the same
# config and round loop as the command line and compares them.

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
# ## The config the CLI uses
#
# `jaxkd.configs.common.active_config()` is the default job of
# `python -m jaxkd.main` (`jaxkd/configs/default.py`): scikit-learn's 8x8
# digits, a LeNet-5 teacher trained on 700 of them, an initial labelled set L
# of 50 and a pool U of 547 to choose from, a half-width LeNet-5 student. Only
# the sizes change here; each override is a `--config.x=...` flag on the
# command line. `experiment.validate_config` reads the config into the typed,
# validated settings object that everything below takes.

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
# The validated settings (jaxkd.settings.ActiveSettings), or a one-line
# JaxkdError before anything is trained or paid.
settings = experiment.validate_config(config)
print("python -m jaxkd.main --workdir runs/digits"
      f" --strategy={','.join(config.strategies)}"
      f" --config.teacher.model={config.teacher.model}"
      f" --config.student={config.student}"
      f" --config.teacher.epochs={config.teacher.epochs}"
      f" --config.rounds={config.rounds} --config.per_round={config.per_round}"
      f" --config.loop.train_steps={config.loop.train_steps}")

# %% [markdown]
# ## Data and teacher
#
# `jaxkd.jobs.inputs.load_pools` cuts the dataset into teacher-train / L / U
# / test exactly as the job does; `jaxkd.jobs.active.train_teacher` trains
# the teacher once and checkpoints it in the run directory.

# %%
workdir = tempfile.mkdtemp(prefix="jaxkd_quickstart_")
mesh = parallel.make_mesh()  # ("data",) mesh over every device
dataset, pools = inputs.load_pools(settings)
print(pools.sizes())
teacher, teacher_vars, teacher_acc = active.train_teacher(
    settings, dataset, pools, workdir, mesh)

# %% [markdown]
# ## The round loop, one run per strategy
#
# This is the body of the active job (`jaxkd.jobs.active.run`, what
# `python -m jaxkd.main` runs) spelled out: one
# `TeacherOracle` (budget + SQLite ledger of every paid answer) per run and
# `jaxkd.loop.run_loop`, which pays for L in round 0, then each round lets the
# strategy pick `per_round` points of U, pays for them and retrains the
# student. The oracles stay open so we can read their ledgers afterwards.

# %%
teacher_fn = flax_teacher_fn(teacher, teacher_vars)
oracle_pool = np.concatenate([pools.initial_images, pools.pool_images])
n_init = len(pools.initial_images)
candidates = n_init + np.arange(len(pools.pool_images))
budget = settings.paid_budget  # n_init + rounds x per_round
student = get_model(settings.student, dataset.num_classes)

results, oracles = {}, {}
for name in settings.strategies:
  run_dir = run_path(workdir, name, 0)  # workdir/<strategy>/seed0
  oracles[name] = TeacherOracle(
      teacher_fn, oracle_pool, budget=budget,
      ledger_path=os.path.join(run_dir, "ledger.sqlite"),
      hard_labels=settings.hard_labels)
  records = loop.run_loop(
      strategy=name, student=student, oracle=oracles[name],
      initial_indices=np.arange(n_init), candidate_indices=candidates,
      test_images=pools.test_images, test_labels=pools.test_labels,
      teacher_accuracy=teacher_acc,
      settings=settings.loop_settings(0, name), workdir=run_dir,
      initial_labels=pools.initial_labels, mesh=mesh, progress=False,
      log=lambda msg: None)
  results[name] = [records]  # one list of round records per seed
print(report.summary_table(results))

# %% [markdown]
# ## Success rate against queries
#
# Success rate = student accuracy / teacher accuracy on the test split, after
# each round, against the number of teacher answers paid so far.

# %%
fig, ax = plt.subplots(figsize=(6, 3.6), dpi=70)
plotting.draw_success_curves(
    ax, results, title=f"digits: {settings.student} from "
    f"{settings.teacher.model} (teacher {100 * teacher_acc:.1f}%)")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## What the best strategy paid for in round 1, beside random
#
# Each ledger row records the round that paid for it; `jaxkd.inspection`
# reads one round back as images and teacher answers (`oracle.entries`, never
# paying). Each image is captioned with the teacher's two most likely classes
# and their probabilities (`9 .85`: class 9 with probability 0.85).

# %%
def final_success(name):
  recs = results[name][0]
  return (recs[-1]["success_rate"],
          np.mean([r["success_rate"] for r in recs]))

best = max((n for n in results if n != "random"), key=final_success)
show = pick(16, 24, 8)
for name in (best, "random"):
  rows = inspection.paid_in_round(oracles[name], 1)
  captions = inspection.answer_captions(rows.probs[:show], k=2, sep="\n")
  display(plotting.image_grid(
      rows.images[:show], captions, ncols=8, size=0.8,
      title=f"{name}: {show} images paid for in round 1, teacher's top-2"))

# %%
rows = inspection.paid_in_round(oracles[best], 1)
classes, probs = inspection.top_answers(rows.probs[:5], k=3)
for idx, c, p in zip(rows.pool_indices, classes, probs):
  print(f"pool point {idx:4d}: teacher top-3 " + ", ".join(
      f"{k} ({v:.3f})" for k, v in zip(c, p)))
for oracle in oracles.values():
  oracle.close()
shutil.rmtree(workdir)  # the run directory was a temporary one
