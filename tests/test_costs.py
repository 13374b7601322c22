"""What a round costs the machine: the phase timer, the per-round peak
memory, and the cost columns of the results table and results.json."""

import json
import time

import numpy as np
import pytest

from jaxkd import experiment, report, resources
from jaxkd.configs import common


def test_stopwatch_adds_up_each_phase_against_the_clock():
  watch = resources.Stopwatch()
  for _ in range(2):
    with watch("select"):
      time.sleep(0.05)
  with watch("train"):
    time.sleep(0.02)
  assert 0.095 <= watch.seconds["select"] < 0.5
  assert 0.018 <= watch.seconds["train"] < 0.3


def _rss_mib():
  with open("/proc/self/status") as f:
    return next(int(l.split()[1]) for l in f if l.startswith("VmRSS")) / 1024


@pytest.mark.skipif(not resources.PeakMemory().per_round,
                    reason="the kernel cannot reset the peak RSS here")
def test_peak_memory_sees_a_round_allocation_and_resets_after_it():
  memory = resources.PeakMemory()
  memory.reset()
  before = _rss_mib()
  big = np.ones(300 * 2**20 // 8)  # 300 MiB, touched
  assert memory.host_mib() >= before + 290
  del big
  memory.reset()  # the next round's peak is its own, not the last one's
  assert memory.host_mib() < _rss_mib() + 50


def test_strategy_costs_are_means_over_seeds_of_per_round_means():
  def rec(r, sel, tr, peak):
    return dict(round=r, queries=10 + r, success_rate=0.5, select_seconds=sel,
                train_seconds=tr, pay_seconds=0.0, peak_rss_mib=peak,
                unpaid_teacher_forwards=3)
  seed0 = [rec(0, 0.0, 1.0, 100), rec(1, 2.0, 3.0, 120), rec(2, 4.0, 5.0, 90)]
  seed1 = [rec(0, 0.0, 2.0, 200), rec(1, 1.0, 2.0, 100), rec(2, 1.0, 2.0, 80)]
  c = report.strategy_costs([seed0, seed1])
  assert c["select_seconds_per_round"] == pytest.approx((3.0 + 1.0) / 2)
  assert c["train_seconds_per_round"] == pytest.approx((3.0 + 2.0) / 2)
  assert c["peak_rss_mib"] == pytest.approx((120 + 200) / 2)
  assert c["unpaid_teacher_forwards"] == pytest.approx(9)
  old = report.strategy_costs([[dict(round=0, queries=1, success_rate=1.0)]])
  assert old["select_seconds_per_round"] is None and old["peak_rss_mib"] \
      is None


def test_results_table_and_json_carry_the_cost_columns(tmp_path):
  c = common.active_config(
      split=dict(teacher_train=200, initial=20, pool=80, test=100, seed=0),
      student="mlp", strategies=("random", "coreset"), rounds=2, per_round=5,
      progress=False)
  c.teacher.update(model="mlp", epochs=1)
  c.loop.train_steps = 3
  out = experiment.train_and_evaluate(c, str(tmp_path))
  saved = json.loads((tmp_path / "results.json").read_text())
  for row in saved["ranking"]:
    assert row["select_seconds_per_round"] > 0
    assert row["train_seconds_per_round"] > 0
    assert row["peak_rss_mib"] > 50  # a JAX process holds more than this
  for runs in saved["strategies"].values():
    for rec in runs[0]:
      wall = rec["wall_time"]
      assert rec["select_seconds"] + rec["train_seconds"] <= wall + 1e-3
  header = out["table"].splitlines()[0]
  for col in ("select s/round", "train s/round", "unpaid teacher fwd",
              "peak MiB"):
    assert col in header


def test_results_json_and_table_carry_the_statistics_against_random(
    tmp_path):
  c = common.active_config(
      split=dict(teacher_train=200, initial=20, pool=80, test=100, seed=0),
      student="mlp", strategies=("random", "entropy"), rounds=2,
      per_round=5, seeds=(0, 1), progress=False)
  c.teacher.update(model="mlp", epochs=1)
  c.loop.train_steps = 3
  out = experiment.train_and_evaluate(c, str(tmp_path))
  stats = json.loads((tmp_path / "results.json").read_text())["statistics"]
  assert stats["baseline"] == "random"
  ent = stats["strategies"]["entropy"]
  for key in ("aubc", "p_value", "queries_saved"):
    assert key in ent
  runs = out["strategies"]["entropy"]
  # AUBC of seed 0 by hand: trapezoid over queries / query range.
  q = np.array([r["queries"] for r in runs[0]], float)
  s = np.array([r["success_rate"] for r in runs[0]])
  want = np.sum((s[1:] + s[:-1]) / 2 * np.diff(q)) / (q[-1] - q[0])
  assert ent["aubc"]["values"][0] == pytest.approx(want)
  assert "p vs random" in out["table"]
