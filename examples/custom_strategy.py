"""Writing your own selection strategy: a plug-in defined outside jaxkd.

  python examples/custom_strategy.py [--workdir runs/custom_strategy]

The strategy below lives in this file, not in jaxkd. The config names it by
import path ("custom_strategy:ClassBalancedEntropy", the same form as
"my_package.my_module:my_strategy"), and the one round loop runs it beside
two built-in strategies on the bundled digits, exactly as
`python -m jaxkd.main --config=...` would (under a minute on 2 cores).

A strategy declares what the loop must compute for it (`needs`), may keep
method-specific state in a `prepare` hook, and returns a query from
`select`. Everything else (paying the teacher through the ledger, training,
evaluation, checkpoints and resume) is the loop's job.
"""

import argparse
import os
import sys

import numpy as np

from jaxkd.selection import PoolQuery, Strategy


class ClassBalancedEntropy(Strategy):
  """Highest student entropy, taken round-robin over the predicted classes,
  the classes with the fewest paid answers first."""
  needs = frozenset({"probs"})      # computed by the loop on the candidates
  description = "entropy, balanced over predicted classes"

  def prepare(self, ctx):
    # Method-specific state: how often each class was paid for so far
    # (read from the ledger; reading never pays).
    paid = np.stack([e["probs"] for e in ctx.oracle.entries(kind="pool")])
    ctx.cache["paid_per_class"] = np.bincount(
        paid.argmax(1), minlength=paid.shape[1])
    return {}                       # no extra SelectionInputs fields

  def select(self, key, ctx, inputs, k):
    probs = np.asarray(inputs.probs)
    ent = -np.sum(probs * np.log(np.clip(probs, 1e-12, 1.0)), axis=1)
    ent[~np.asarray(inputs.available)] = -np.inf
    pred = probs.argmax(1)
    queues = {c: list(np.flatnonzero(pred == c)[np.argsort(
        -ent[pred == c], kind="stable")]) for c in np.unique(pred)}
    picked = []
    for c in np.argsort(ctx.cache["paid_per_class"], kind="stable"):
      queues.setdefault(int(c), [])
    while len(picked) < k:
      for c in np.argsort(ctx.cache["paid_per_class"], kind="stable"):
        q = queues[int(c)]
        while q and not np.isfinite(ent[q[0]]):
          q.pop(0)
        if q and len(picked) < k:
          picked.append(q.pop(0))
          ent[picked[-1]] = -np.inf
    return PoolQuery(np.asarray(picked, np.int64))  # positions in U


def config(tiny: bool = False):
  """The digits job with the plug-in named by import path."""
  from jaxkd.configs import common
  c = common.active_config(
      strategies=("custom_strategy:ClassBalancedEntropy", "entropy",
                  "random"),
      student="lenet5_half", rounds=3, per_round=20, progress=False)
  c.teacher.update(epochs=5)
  c.loop.train_steps = 100
  if tiny:  # the test's size
    c.split.update(teacher_train=200, initial=20, pool=60, test=100)
    c.teacher.update(model="mlp", epochs=1)
    c.student = "mlp"
    c.rounds, c.per_round, c.loop.train_steps = 1, 5, 3
  return c


def main(workdir: str, tiny: bool = False):
  # The import path resolves against sys.path, like any installed package.
  sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
  from jaxkd import experiment
  return experiment.train_and_evaluate(config(tiny), workdir)


if __name__ == "__main__":
  p = argparse.ArgumentParser()
  p.add_argument("--workdir", default="runs/custom_strategy")
  p.add_argument("--tiny", action="store_true")
  a = p.parse_args()
  main(a.workdir, a.tiny)
