"""The loop's stopping rule (`loop.StopRule`): a target success rate or a
minimum predicted gain per query ends the run early, records why, pays
nothing more, and a run killed after deciding resumes without paying.

What was paid is counted by the teachers themselves (a counter of the pool
rows they saw, or tests/loop_crash_worker.py's fsynced call log), never by
the ledger; targets come from the records of an unstopped reference run."""

import collections
import dataclasses
import importlib.util
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from jaxkd import loop, settings
from jaxkd.configs import common
from jaxkd.models import get_model
from jaxkd.teacher import TeacherOracle
from jaxkd.resources import MEASURED_FIELDS
from jaxkd.validation import JaxkdError

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "loop_crash_worker.py")
N_INIT, N_POOL, ROUNDS, PER_ROUND = 12, 60, 4, 5


def _load_worker():
  spec = importlib.util.spec_from_file_location("loop_crash_worker", WORKER)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


worker = _load_worker()


class CountingTeacher:
  """A fixed linear teacher over 8x8x1 images that counts every image it
  sees (by its pool row) and its calls."""

  def __init__(self, pool):
    self.w = np.random.default_rng(0).normal(size=(64, 4)) * 3
    self.pool = pool.reshape(len(pool), -1)
    self.seen = collections.Counter()
    self.calls = 0

  def __call__(self, images):
    self.calls += 1
    flat = images.reshape(len(images), -1)
    for row in flat:
      self.seen[int(np.argmin(np.abs(self.pool - row).sum(1)))] += 1
    return (flat - 0.5) @ self.w


def _data():
  rng = np.random.default_rng(1)
  pool = rng.random((N_INIT + N_POOL, 8, 8, 1)).astype(np.float32)
  w = np.random.default_rng(0).normal(size=(64, 4)) * 3
  test_x = rng.random((40, 8, 8, 1)).astype(np.float32)
  test_y = np.argmax((test_x.reshape(40, -1) - 0.5) @ w, 1)
  return pool, test_x, test_y


def _run(run_dir, stop=loop.StopRule(), teacher=None, log=None):
  pool, test_x, test_y = _data()
  teacher = teacher or CountingTeacher(pool)
  s = loop.LoopSettings(rounds=ROUNDS, per_round=PER_ROUND, train_steps=10,
                        batch_size=8, stop=stop)
  oracle = TeacherOracle(teacher, pool, budget=N_INIT + ROUNDS * PER_ROUND,
                         ledger_path=os.path.join(run_dir, "ledger.sqlite"))
  try:
    recs = loop.run_loop(
        strategy="entropy", student=get_model("mlp", 4, hidden=(16,)),
        oracle=oracle, initial_indices=np.arange(N_INIT),
        candidate_indices=N_INIT + np.arange(N_POOL), test_images=test_x,
        test_labels=test_y, teacher_accuracy=1.0, settings=s,
        workdir=run_dir, progress=False,
        log=log if log is not None else (lambda m: None))
  finally:
    oracle.close()
  return recs, teacher


def _strip(records):
  return [{k: v for k, v in r.items() if k not in MEASURED_FIELDS}
          for r in records]


def _first_reaching(records, target):
  """The stopping round by hand: the first r < rounds with success >= target."""
  for rec in records[:-1]:
    if rec["success_rate"] >= target:
      return rec["round"]
  return None


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """An unstopped run: its records and its teacher."""
  return _run(str(tmp_path_factory.mktemp("ref") / "run"))


def test_default_rule_is_off_and_changes_nothing(reference):
  recs, teacher = reference
  assert loop.LoopSettings().stop == loop.StopRule(0.0, 0.0, 0.9)
  assert [r["round"] for r in recs] == list(range(ROUNDS + 1))
  assert not any("stopped" in r for r in recs)
  assert sum(teacher.seen.values()) == N_INIT + ROUNDS * PER_ROUND


def test_target_reached_early_stops_and_pays_nothing_more(reference, tmp_path):
  ref, _ = reference
  # The best success of a round before the last: reached early by design.
  target = max(r["success_rate"] for r in ref[:-1])
  stop_round = _first_reaching(ref, target)
  assert target > 0 and stop_round is not None and stop_round < ROUNDS
  lines = []
  recs, teacher = _run(str(tmp_path / "run"), loop.StopRule(target=target),
                       log=lines.append)
  assert [r["round"] for r in recs] == list(range(stop_round + 1))
  assert recs[-1]["stopped"] == (f"target {target:g} reached (success "
                                 f"{recs[-1]['success_rate']:.4f})")
  assert not any("stopped" in r for r in recs[:-1])
  # The rounds it ran are the reference's rounds, to the record.
  assert _strip(recs)[:-1] == _strip(ref[:stop_round])
  assert recs[-1]["success_rate"] == ref[stop_round]["success_rate"]
  # The teacher's own count: L plus per_round per round run, each once.
  assert sum(teacher.seen.values()) == N_INIT + stop_round * PER_ROUND
  assert max(teacher.seen.values()) == 1
  assert sum("stopping after round" in m for m in lines) == 1

  # Running it again (the stopping round was checkpointed) pays nothing.
  again, teacher2 = _run(str(tmp_path / "run"), loop.StopRule(target=target),
                         log=lines.append)
  assert teacher2.calls == 0 and _strip(again) == _strip(recs)
  assert any("no further rounds are run" in m for m in lines)


def test_gain_rule_huge_threshold_stops_at_the_first_fittable_round(tmp_path):
  recs, teacher = _run(str(tmp_path / "run"),
                       loop.StopRule(min_gain_per_query=1e6))
  assert [r["round"] for r in recs] == [0, 1, 2]  # 3 records: first fit
  assert "predicted gain per query" in recs[-1]["stopped"]
  assert recs[-1]["gain_per_query_upper"] < 1e6
  assert "predicted_gain_per_query" not in recs[1]
  assert sum(teacher.seen.values()) == N_INIT + 2 * PER_ROUND


def test_gain_rule_zero_never_stops(tmp_path):
  recs, teacher = _run(str(tmp_path / "run"),
                       loop.StopRule(min_gain_per_query=0.0, confidence=0.5))
  assert [r["round"] for r in recs] == list(range(ROUNDS + 1))
  assert not any("stopped" in r for r in recs)
  assert sum(teacher.seen.values()) == N_INIT + ROUNDS * PER_ROUND


def test_gain_of_an_exact_power_law_by_hand():
  q = np.array([100., 200., 400., 800.])
  recs = [{"queries": x, "success_rate": 0.95 - 3.0 * x ** -0.5} for x in q]
  k = 100
  want = 3.0 * (800 ** -0.5 - 900 ** -0.5) / k
  reason, got = loop.stop_reason(loop.StopRule(min_gain_per_query=1e-9),
                                 recs, k, seed=0)
  assert reason is None
  assert got["predicted_gain_per_query"] == pytest.approx(want, rel=1e-5)
  bound = got["gain_per_query_upper"]
  reason, again = loop.stop_reason(
      loop.StopRule(min_gain_per_query=bound * 1.01), recs, k, seed=0)
  assert again == got and reason.startswith("predicted gain per query")
  # Two records cannot be fitted: the rule never stops on them.
  assert loop.stop_reason(loop.StopRule(min_gain_per_query=1e6), recs[:2],
                          k) == (None, {})


@pytest.mark.parametrize("stop,match", [
    (dict(target=1.5), "stop.target must be a success rate in"),
    (dict(target=-0.1), "stop.target must be a finite number >= 0"),
    (dict(min_gain_per_query=-1e-3), "stop.min_gain_per_query must be"),
    (dict(confidence=0.0), "stop.confidence must be"),
    (dict(confidence=1.0), "stop.confidence must be in"),
])
def test_bad_rules_are_one_line_errors_before_paying(tmp_path, stop, match):
  pool, _, _ = _data()
  teacher = CountingTeacher(pool)
  with pytest.raises(JaxkdError, match=match) as e:
    _run(str(tmp_path / "run"), loop.StopRule(**stop), teacher=teacher)
  assert "\n" not in str(e.value) and teacher.calls == 0
  c = common.active_config()
  for k, v in stop.items():
    c.loop.stop[k] = v
  with pytest.raises(JaxkdError, match="config.loop." + match) as e:
    settings.read(c)
  assert "\n" not in str(e.value)


def test_settings_read_the_rule_from_config():
  c = common.active_config()
  c.loop.stop.target = 0.97
  c.loop.stop.min_gain_per_query = 1e-4
  s = settings.read(c)
  assert s.loop.stop == loop.StopRule(0.97, 1e-4, 0.9)
  assert s.loop_settings(0, "entropy").stop == loop.StopRule(0.97, 1e-4, 0.9)
  c.loop.stop.tagret = 0.9
  with pytest.raises(JaxkdError, match="Unknown config field loop.stop.tagret"):
    settings.read(c)


# A real kill (SIGKILL) of tests/loop_crash_worker.py's run in the middle of
# the stopping round's checkpoint: after the decision, before it is saved.
_KILLED = """
import dataclasses, sys
import jax
jax.config.update("jax_default_matmul_precision", "highest")
sys.path.insert(0, {here!r})
import loop_crash_worker as w
from jaxkd import loop
base = w.settings
w.settings = lambda: dataclasses.replace(base(), stop=loop.StopRule(
    target={target!r}))
w.install_kill("save", {round})
w.run({run_dir!r}, {log!r})
"""


def _log_rows(path):
  with open(path) as f:
    return [[int(i) for i in ln.split()[1:]] for ln in f]


def test_kill_after_the_decision_resumes_to_the_same_records_unpaid(
    tmp_path, monkeypatch):
  ref = worker.run(str(tmp_path / "ref" / "run"), str(tmp_path / "ref.log"))
  ref_paid = _log_rows(tmp_path / "ref.log")
  target = max(r["success_rate"] for r in ref[:-1])
  stop_round = _first_reaching(ref, target)
  assert target > 0 and stop_round is not None
  run_dir, log = str(tmp_path / "run"), str(tmp_path / "teacher.log")
  proc = subprocess.run(
      [sys.executable, "-c", _KILLED.format(
          here=HERE, target=target, round=stop_round, run_dir=run_dir,
          log=log)], capture_output=True, text=True, timeout=300)
  assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
  paid_before = _log_rows(log)

  base = worker.settings
  monkeypatch.setattr(worker, "settings", lambda: dataclasses.replace(
      base(), stop=loop.StopRule(target=target)))
  lines = []
  recs = worker.run(run_dir, log, log=lines.append)
  assert _log_rows(log) == paid_before, "the resumed run paid the teacher"
  assert [r["round"] for r in recs] == list(range(stop_round + 1))
  assert "stopped" in recs[-1]
  assert _strip(recs)[:-1] == _strip(ref[:stop_round])
  assert recs[-1]["success_rate"] == ref[stop_round]["success_rate"]
  # Paid: L and rounds 1..stop_round, each image once, as the reference did.
  n = worker.N_INIT + stop_round * worker.PER_ROUND
  paid = [i for row in paid_before for i in row]
  assert len(paid) == len(set(paid)) == n
  # The reference paid round by round: its first n images are rounds 0..r.
  assert sorted(paid) == sorted([i for row in ref_paid for i in row][:n])
  # And once more: the stopped checkpoint runs nothing.
  again = worker.run(run_dir, log, log=lines.append)
  assert _strip(again) == _strip(recs) and _log_rows(log) == paid_before


def test_report_takes_runs_of_different_lengths():
  from jaxkd import report
  rec = lambda r, s: {"round": r, "queries": 10 + 5 * r, "success_rate": s,
                      "student_accuracy": s, "unpaid_teacher_forwards": 0}
  stopped = [rec(0, 0.5), rec(1, 0.9)]
  stopped[-1]["stopped"] = "target 0.9 reached (success 0.9000)"
  full = [rec(0, 0.5), rec(1, 0.6), rec(2, 0.7)]
  results = {"a": [stopped, full], "b": [full, full]}
  rows = {r["strategy"]: r for r in report.rank_strategies(results)}
  assert rows["a"]["final_success_mean"] == pytest.approx((0.9 + 0.7) / 2)
  assert rows["a"]["mean_success_mean"] == pytest.approx(
      (np.mean([0.5, 0.9]) + np.mean([0.5, 0.6, 0.7])) / 2)
  assert "a" in report.summary_table(results)
