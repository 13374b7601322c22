"""The round protocol: registries, plug-ins by import path, the training
hook, the mixup scan's fast path, config checks before paying, resume."""

import json
import os
import sys
import textwrap

import jax
import numpy as np
import pytest

from jaxkd import experiment, loop, losses, run_dir, settings, train
from jaxkd.jobs import active, inputs
from jaxkd.configs import common
from jaxkd.models import MODELS, get_model
from jaxkd.registry import Registry
from jaxkd.selection import (FunctionStrategy, PoolQuery, SelectionInputs,
                             Strategy, get_strategy, mixup, register_strategy,
                             strategy_names)
from jaxkd.selection.registry import STRATEGIES
from jaxkd.teacher import TeacherOracle
from jaxkd.validation import JaxkdError


@pytest.fixture
def plugin_module(tmp_path, monkeypatch):
  """A module outside jaxkd, importable as `my_plugins`."""
  (tmp_path / "my_plugins.py").write_text(textwrap.dedent("""
      import numpy as np
      from jaxkd.selection import PoolQuery, Strategy

      def first_k(key, inputs, k):
        return np.flatnonzero(np.asarray(inputs.available))[:k]
      first_k.needs = ()

      class LastK(Strategy):
        needs = frozenset({"probs"})
        def select(self, key, ctx, inputs, k):
          return PoolQuery(np.flatnonzero(np.asarray(inputs.available))[-k:])

      def tiny_model(num_classes):
        from jaxkd.models import lenet
        return lenet.MLP(num_classes=num_classes, hidden=(4,))
      """))
  monkeypatch.syspath_prepend(str(tmp_path))
  yield "my_plugins"
  sys.modules.pop("my_plugins", None)


def test_registry_names_errors_and_import_paths(plugin_module):
  reg = Registry("widget")
  reg.register("a", 1)
  reg.register("b")(2)
  assert reg.names() == ["a", "b"] and reg.get("b") == 2 and "a" in reg
  with pytest.raises(JaxkdError, match=r"Unknown widget 'c'; known: a, b"):
    reg.get("c")
  with pytest.raises(JaxkdError, match="no attribute"):
    reg.get(f"{plugin_module}:nope")
  with pytest.raises(JaxkdError, match="Cannot import"):
    reg.get("no_such_pkg_xyz:f")
  assert reg.get(f"{plugin_module}:first_k").__name__ == "first_k"
  # Strategies, models, losses and optimizers share the style.
  s = get_strategy(f"{plugin_module}:first_k")
  assert isinstance(s, FunctionStrategy) and s.needs == frozenset()
  assert get_strategy(f"{plugin_module}:LastK").needs == {"probs"}
  assert get_model(f"{plugin_module}:tiny_model", 3).hidden == (4,)
  assert "lenet5" in MODELS.names()
  for reg in (STRATEGIES, losses.LOSSES, train.OPTIMIZERS):
    with pytest.raises(JaxkdError, match="known:"):
      reg.get("nope")


def test_one_line_function_registration():
  fn = lambda key, inputs, k: np.flatnonzero(inputs.available)[:k]
  register_strategy("_test_first", fn, needs=("probs",))
  try:
    s = get_strategy("_test_first")
    assert s.fn is fn and s.needs == {"probs"}
    q = s.select(None, None, SelectionInputs(available=np.array(
        [False, True, True])), 1)
    assert isinstance(q, PoolQuery) and q.indices.tolist() == [1]
    with pytest.raises(JaxkdError, match="unknown inputs"):
      register_strategy("_test_bad", fn, needs=("nope",))
  finally:
    STRATEGIES._entries.pop("_test_first", None)
  assert {"active_mixup", "random_mixup", "rad"} <= set(strategy_names())


def test_job_mixup_scan_uses_the_benchmarked_fast_path(monkeypatch):
  """The job's Active Mixup scan gets (stem_fn, head_fn) from
  mixup.linear_stem_fns, the function benchmarks/mixup_bench.py times."""
  student = get_model("lenet5_half", 10)
  made, seen = [], {}
  real_fns = mixup.linear_stem_fns

  def spy_fns(model):
    made.append(real_fns(model))
    return made[-1]

  def spy_select(apply_fn, params, images, k, lambdas, **kw):
    seen.update(kw)
    return np.array([[0, 1]]), np.array([0.5]), np.array([0.1])

  monkeypatch.setattr(mixup, "linear_stem_fns", spy_fns)
  monkeypatch.setattr(mixup, "select_pairs", spy_select)

  class Ctx:
    round, mesh, state = 1, None, None
    oracle = type("O", (), {"pool_images": np.zeros((3, 28, 28, 1)),
                            "entries": lambda self, **kw: []})()
  Ctx.student = student
  Ctx.state = type("S", (), {"variables": {}})()
  get_strategy("active_mixup").select(None, Ctx, None, 1)
  assert made and (seen["stem_fn"], seen["head_fn"]) == made[0]
  bench = os.path.join(os.path.dirname(__file__), "..", "benchmarks",
                       "mixup_bench.py")
  if os.path.exists(bench):
    assert "mixup.linear_stem_fns(" in open(bench).read()


# ------------------------------------------------------ config checks ---


def _tiny_config(**kw):
  c = common.active_config(
      split=dict(teacher_train=200, initial=20, pool=60, test=100, seed=0),
      student="mlp", strategies=("random",), rounds=1, per_round=5,
      progress=False)
  c.teacher.update(model="mlp", epochs=1)
  c.loop.train_steps = 3
  c.update(kw)
  return c


@pytest.mark.parametrize("path,value,match", [
    ("loop.temperature", 0.0, "temperature"),
    ("loop.temperature", float("nan"), "temperature"),
    ("loop.learning_rate", float("nan"), "learning_rate"),
    ("loop.learning_rate", -1.0, "learning_rate"),
    ("loop.train_steps", 0, "train_steps"),
    ("loop.batch_size", 0, "batch_size"),
    ("teacher.epochs", 0, "epochs"),
    ("teacher.batch_size", -2, "batch_size"),
    ("seeds", (), "seeds"),
    ("strategies", (), "strategies"),
    ("strategies", ("nope",), "Unknown strategy"),
    ("rounds", -1, "rounds"),
    ("per_round", 0, "per_round"),
    ("student", "nope", "Unknown model"),
    ("loop.loss", "nope", "Unknown loss"),
    ("loop.optimizer", "nope", "Unknown optimizer"),
    ("dataset", "nope", "Unknown dataset"),
])
def test_bad_config_values_fail_before_anything_runs(tmp_path, path, value,
                                                     match):
  c = _tiny_config()
  *parents, leaf = path.split(".")
  node = c
  for p in parents:
    node = node[p]
  node[leaf] = value
  with pytest.raises(JaxkdError, match=match) as e:
    experiment.train_and_evaluate(c, str(tmp_path / "w"))
  assert "\n" not in str(e.value)
  assert not os.path.exists(tmp_path / "w")


def test_resume_refuses_changed_config_unless_asked(tmp_path):
  c = _tiny_config()
  w = str(tmp_path)
  assert run_dir.check_resume(settings.parse(c), w) == []
  assert run_dir.check_resume(settings.parse(c), w) == []       # same config: fine
  c.progress, c.seeds, c.strategies = True, (0, 1), ("random", "margin")
  assert run_dir.check_resume(settings.parse(c), w) == []       # do not change results
  c.loop.train_steps = 60
  c.teacher.epochs = 2
  with pytest.raises(JaxkdError) as e:
    run_dir.check_resume(settings.parse(c), w)
  msg = str(e.value)
  assert "\n" not in msg and "loop.train_steps 3 -> 60" in msg
  assert "teacher.epochs 1 -> 2" in msg and "resume_with_changes" in msg
  c.resume_with_changes = True
  accepted = run_dir.check_resume(settings.parse(c), w)
  assert len(accepted) == 1 and "loop.train_steps 3 -> 60" in accepted[0]
  with open(os.path.join(w, "config.json")) as f:
    assert json.load(f)["loop"]["train_steps"] == 60


# ------------------------------------------------- the training hook ---


class _CountingTrain(Strategy):
  """Owns its training: keeps a checkpointed round counter in `extra` and
  selects by it (a stand-in for a jointly trained extra module)."""
  needs = frozenset()

  def init_extra(self, ctx):
    return {"trained": np.zeros((), np.int32)}

  def train(self, ctx, images, targets, *, seed, state, extra):
    state = ctx.fit(images, targets, seed=seed, state=state)
    return state, {"trained": np.asarray(extra["trained"]) + 1}

  def select(self, key, ctx, inputs, k):
    n = int(ctx.extra["trained"])
    return PoolQuery(np.flatnonzero(inputs.available)[n:n + k])


def test_strategy_training_hook_and_extra_survive_resume(tmp_path,
                                                         monkeypatch):
  from jaxkd.checkpoint import Checkpointer
  rng = np.random.default_rng(0)
  pool = rng.random((30, 4, 4, 1)).astype(np.float32)
  w = rng.normal(size=(16, 3))
  teacher = lambda x: x.reshape(len(x), -1) @ w
  settings = loop.LoopSettings(rounds=2, per_round=3, train_steps=2,
                               batch_size=8)

  def run(d):
    oracle = TeacherOracle(teacher, pool, budget=30,
                           ledger_path=str(tmp_path / d / "ledger.sqlite"))
    try:
      recs = loop.run_loop(
          strategy=_CountingTrain(), student=get_model("mlp", 3, hidden=(8,)),
          oracle=oracle, initial_indices=np.arange(5),
          candidate_indices=5 + np.arange(25), test_images=pool[:4],
          test_labels=np.zeros(4, np.int32), teacher_accuracy=1.0,
          settings=settings, workdir=str(tmp_path / d), progress=False,
          log=lambda m: None)
      return recs, [e["key"] for e in oracle.entries()]
    finally:
      oracle.close()

  ref_recs, ref_keys = run("ref")
  # Round 1 selects after one training (round 0's): skips 1 candidate and
  # takes 3; round 2 after two: skips 2 of the 22 still available
  # (positions 0, 4, 5, ...).
  assert ref_keys[5:8] == [f"p:{i}" for i in (6, 7, 8)]
  assert ref_keys[8:] == [f"p:{i}" for i in (10, 11, 12)]
  real_save = Checkpointer.save

  def crashing_save(self, step, state, meta):
    if step == 2:
      raise KeyboardInterrupt("simulated kill")
    return real_save(self, step, state, meta)

  monkeypatch.setattr(Checkpointer, "save", crashing_save)
  with pytest.raises(KeyboardInterrupt):
    run("crashed")
  monkeypatch.setattr(Checkpointer, "save", real_save)
  recs, keys = run("crashed")
  assert keys == ref_keys          # the restored extra selects the same
  assert [r["queries"] for r in recs] == [5, 8, 11]


def test_changed_teacher_is_never_restored_silently(tmp_path):
  c = _tiny_config()
  mesh = jax.sharding.Mesh(np.asarray(jax.devices()[:1]), ("data",))
  dataset, pools = inputs.load_pools(settings.parse(c))
  _, _, acc = active.train_teacher(settings.parse(c), dataset, pools, str(tmp_path), mesh)
  _, _, again = active.train_teacher(settings.parse(c), dataset, pools,
                                     str(tmp_path), mesh)
  assert again == acc                              # same config: restored
  c.teacher.epochs = 2
  with pytest.raises(JaxkdError, match="teacher.epochs 1 -> 2") as e:
    active.train_teacher(settings.parse(c), dataset, pools, str(tmp_path), mesh)
  assert "\n" not in str(e.value)
