"""Rough edges a new user hits at the command line: --help, Ctrl-C and
SIGTERM, a job's workdir as teacher.checkpoint."""

import os
import signal
import subprocess
import sys
import time

import pytest

from jaxkd import experiment, teacher_training
from jaxkd.configs import common

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--strategy=random", "--config.teacher.model=mlp",
        "--config.student=mlp", "--config.teacher.epochs=1",
        "--config.loop.train_steps=2", "--config.progress=False"]


def test_help_exits_0_and_lists_names():
  out = subprocess.run([sys.executable, "-m", "jaxkd.main", "--help"],
                       capture_output=True, text=True, cwd=ROOT)
  assert out.returncode == 0, out.stderr
  for name in ("learning_loss", "discriminative", "vanilla_mixup", "lenet5",
               "npz:<path.npz>", "--workdir"):
    assert name in out.stdout


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_is_one_line_that_says_rerun_resumes(tmp_path, sig):
  w = str(tmp_path / "w")
  # Ctrl-C as a terminal delivers it: a test run launched in the background
  # (`cmd &`, nohup, setsid) starts with SIGINT ignored, Python then installs
  # no handler and every child ignores the signal, so the child restores
  # Python's handler before it runs the job's command line.
  cmd = [sys.executable, "-c",
         "import runpy, signal, sys; "
         "signal.signal(signal.SIGINT, signal.default_int_handler); "
         "sys.argv = ['jaxkd.main'] + sys.argv[1:]; "
         "runpy.run_module('jaxkd.main', run_name='__main__', "
         "alter_sys=True)",
         *TINY, "--config.rounds=50",
         "--config.per_round=5", "--config.loop.train_steps=200",
         f"--workdir={w}"]
  p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True)
  deadline = time.time() + 300
  ledger = os.path.join(w, "random", "seed0", "rounds.json")
  while not os.path.exists(ledger) and time.time() < deadline:
    time.sleep(0.2)  # round 0 finished: the run is paying rounds
  sent = time.time()
  p.send_signal(sig)
  out, err = p.communicate(timeout=120)
  # On failure, say how far the run got and how long it took to end.
  assert p.returncode == 130, (p.returncode, err[-1000:], out[-1500:],
                               f"ended {time.time() - sent:.1f}s after")
  lines = [l for l in err.splitlines() if l.strip()]
  assert len(lines) == 1 and "rerun the same command to resume" in lines[0]
  assert "Traceback" not in err


def test_teacher_checkpoint_accepts_a_jobs_workdir(tmp_path):
  c = common.active_config(
      split=dict(teacher_train=200, initial=20, pool=60, test=100, seed=0),
      student="mlp", strategies=("random",), rounds=0, per_round=5,
      progress=False)
  c.teacher.update(model="mlp", epochs=1)
  c.loop.train_steps = 2
  first = experiment.train_and_evaluate(c, str(tmp_path / "a"))
  assert teacher_training.read_teacher_meta(str(tmp_path / "a"))["model"] \
      == "mlp"
  c.teacher.checkpoint = str(tmp_path / "a")  # the workdir, not a/teacher
  again = experiment.train_and_evaluate(c, str(tmp_path / "b"))
  assert again["teacher_accuracy"] == first["teacher_accuracy"]


def test_a_run_refused_before_paying_does_not_block_its_corrected_rerun(
    tmp_path):
  c = common.active_config(
      dataset=f"npz:{tmp_path / 'missing.npz'}", student="mlp",
      strategies=("random",), rounds=0, per_round=5, progress=False)
  c.split.update(teacher_train=20, initial=5, pool=10, test=10)
  c.teacher.update(model="mlp", epochs=1)
  w = str(tmp_path / "w")
  with pytest.raises(Exception, match="file not found"):
    experiment.train_and_evaluate(c, w)
  assert not os.path.exists(os.path.join(w, "config.json"))
  c.dataset = "digits"
  c.split.update(teacher_train=200, initial=20, pool=60, test=100)
  c.loop.train_steps = 2
  out = experiment.train_and_evaluate(c, w)   # not "another config"
  assert out["strategies"]["random"][0][-1]["queries"] == 20


def test_a_registered_function_named_by_import_path_keeps_its_needs(
    tmp_path, monkeypatch):
  (tmp_path / "first_hour_plugin.py").write_text(
      "from jaxkd.selection import register_strategy\n"
      "from jaxkd.selection.baselines import entropy_select\n"
      "def most_uncertain(key, inputs, k):\n"
      "  return entropy_select(inputs.probs, inputs.available, k)\n"
      "register_strategy('first_hour_mine', most_uncertain, "
      "needs=('probs',))\n")
  monkeypatch.syspath_prepend(str(tmp_path))
  from jaxkd.selection import get_strategy
  strat = get_strategy("first_hour_plugin:most_uncertain")
  assert strat.needs == frozenset({"probs"})


@pytest.mark.parametrize("path", ["os:getcwd", "collections:OrderedDict"])
def test_a_callable_that_is_no_strategy_is_refused_before_training(path):
  from jaxkd import settings
  from jaxkd.validation import JaxkdError
  c = common.active_config(strategies=(path,))
  with pytest.raises(JaxkdError) as e:
    settings.read(c)
  assert "\n" not in str(e.value)


def test_a_resume_with_fewer_strategies_keeps_the_others(tmp_path, capsys):
  c = common.active_config(
      split=dict(teacher_train=200, initial=20, pool=60, test=100, seed=0),
      student="mlp", strategies=("random", "entropy"), rounds=1, per_round=5,
      progress=False)
  c.teacher.update(model="mlp", epochs=1)
  c.loop.train_steps = 2
  both = experiment.train_and_evaluate(c, str(tmp_path))
  c.strategies = ("random",)
  again = experiment.train_and_evaluate(c, str(tmp_path))
  assert set(again["strategies"]) == {"random", "entropy"}
  assert again["strategies"]["entropy"] == both["strategies"]["entropy"]
  assert {r["strategy"] for r in again["ranking"]} == {"random", "entropy"}
  assert "entropy: not run this time" in capsys.readouterr().out


def test_table_shows_the_range_of_queries_when_seeds_stopped_apart():
  from jaxkd import report
  rec = lambda q: [{"queries": q, "student_accuracy": 0.5,
                    "success_rate": 0.6}]
  row = report.summary_table({"a": [rec(10), rec(12)]}).splitlines()[2]
  assert "| 10-12 " in row
  row = report.summary_table({"a": [rec(10), rec(10)]}).splitlines()[2]
  assert "| 10 " in row
