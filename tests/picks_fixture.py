"""Each strategy's picks on a small fixed case, recorded before the round
protocol refactor (issue 12) and compared after it by tests/test_picks.py.

  python tests/picks_fixture.py          # rewrites tests/fixtures/picks.json

fixtures/picks.json was written by this script run against main at 6c89830
(the old loops: active.run_active_loop / run_mixup_loop, with train.fit's
full-batch stream); the refactored branch was also checked against a
recording from 9ceae48 (before that fit change) before merging it. Only the
public job entry (`experiment.train_and_evaluate`) and the ledger files are
used, so the same script runs against either code.

The case: digits, an MLP teacher (2 epochs) and an MLP student, 20 initial
points, a pool of 60, 2 rounds of 5 queries, 3 training steps per round,
seed 0, under the test session's 8 fake CPU devices. The picks are read
straight from each run's SQLite ledger (key and paying round, in payment
order), so they do not depend on the loop's record format.
"""

import json
import os
import sqlite3
import sys

_FLAG = "--xla_force_host_platform_device_count=8"
if _FLAG not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _FLAG).strip()
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

FIXTURE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures",
                       "picks.json")
STRATEGIES = ("random", "entropy", "margin", "least_confidence", "coreset",
              "badge", "admm", "rad", "gap_diversity", "active_mixup",
              "random_mixup")


def config(strategies=STRATEGIES):
  import ml_collections
  from jaxkd.configs import common
  return ml_collections.ConfigDict(dict(
      dataset="digits", data_dir="",
      split=dict(teacher_train=200, initial=20, pool=60, test=100, seed=0),
      teacher=dict(model="mlp", epochs=2, batch_size=64, optimizer="adam",
                   learning_rate=3e-3, seed=0),
      student="mlp", strategies=tuple(strategies), strategy_options={},
      rounds=2, per_round=5, seeds=(0,), hard_labels=False,
      loop=common.loop_config(train_steps=3), progress=False))


def ledger_picks(path):
  db = sqlite3.connect(path)
  try:
    return [[k, r] for k, r in db.execute(
        "SELECT key, round FROM answers ORDER BY seq")]
  finally:
    db.close()


def compute_picks(workdir, strategies=STRATEGIES):
  """{strategy: [[ledger key, round], ...]} of one run of every strategy."""
  import jax
  jax.config.update("jax_default_matmul_precision", "highest")
  from jaxkd import experiment
  experiment.train_and_evaluate(config(strategies), workdir)
  return {s: ledger_picks(os.path.join(workdir, s, "seed0", "ledger.sqlite"))
          for s in strategies}


if __name__ == "__main__":
  import tempfile
  with tempfile.TemporaryDirectory() as d:
    picks = compute_picks(d)
  os.makedirs(os.path.dirname(FIXTURE), exist_ok=True)
  with open(FIXTURE, "w") as f:
    f.write("{\n" + ",\n".join(f"{json.dumps(k)}: {json.dumps(v)}"
                                 for k, v in picks.items()) + "\n}\n")
  print(f"wrote {FIXTURE}")
