"""Each strategy's options are one frozen dataclass: declared once with a
meaning per field, refused when unknown before the teacher is paid, and
listed by `--list_config`."""

import dataclasses
import inspect
import sys
import textwrap

import numpy as np
import pytest

from jaxkd import fields, loop, main, settings
from jaxkd.configs import common
from jaxkd.models import get_model
from jaxkd.selection import (FunctionStrategy, get_strategy,
                             register_strategy, strategy_names)
from jaxkd.selection.registry import STRATEGIES, NoOptions, parse_options
from jaxkd.teacher import TeacherOracle
from jaxkd.validation import JaxkdError

# Built-in strategies and the options each declares (the rest take none).
WITH_OPTIONS = {
    "admm": {"alpha", "theta", "max_iter", "tol", "beta", "features",
             "normalize", "adaptive", "use_entropy", "max_rows"},
    "gap_diversity": {"num_neighbors", "beta", "distance", "eps", "max_pool"},
    "rad": {"num_mistakes", "gain"},
    "learning_loss": {"width", "margin", "weight", "detach_fraction",
                      "subset", "use_embedding"},
    "discriminative": {"sub_batches", "unlabelled_ratio", "hidden", "solver",
                       "steps", "learning_rate", "l2", "stop_accuracy",
                       "max_train"},
    "active_mixup": {"lambdas", "scan_batch_size", "use_fast_path"},
    "vanilla_mixup": {"lambdas", "scan_batch_size", "use_fast_path"},
    "random_mixup": {"lambdas"},
}


def _option_fields(name):
  return dataclasses.fields(get_strategy(name).options)


def test_builtin_options_are_frozen_dataclasses_with_a_meaning_per_field():
  for name in strategy_names():
    cls = get_strategy(name).options
    assert dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen
    names = {f.name for f in dataclasses.fields(cls)}
    assert names == WITH_OPTIONS.get(name, set()), name
    for f in dataclasses.fields(cls):
      assert fields.doc_of(f).strip(), f"{name}.{f.name} has no meaning"
  assert get_strategy("random").options is NoOptions


def _glue(strat):
  """The function the options reach: a plain strategy's `fn`, else the
  class's `select`."""
  if isinstance(strat, FunctionStrategy):
    return strat.fn
  return type(strat).select


@pytest.mark.parametrize("name", sorted(WITH_OPTIONS))
def test_a_default_is_declared_once(name):
  """The glue takes its options as **options; no keyword of it repeats an
  option (with or without a default of its own)."""
  params = inspect.signature(_glue(get_strategy(name))).parameters.values()
  options = {f.name for f in _option_fields(name)}
  assert not [p.name for p in params if p.name in options]
  assert [p.kind for p in params][-1] == inspect.Parameter.VAR_KEYWORD


def test_defaults_are_the_documented_ones():
  """The values moved out of the glue functions and DEFAULTS dicts."""
  want = {
      "admm": dict(alpha=1e-6, theta=1e-5, max_iter=500, tol=1e-4, beta=0.5,
                   features="embeddings", normalize=True, adaptive=True,
                   use_entropy=True),
      "gap_diversity": dict(num_neighbors=10, beta=1.0, distance="tv",
                            eps=1e-6),
      "rad": dict(num_mistakes=None, gain="margin"),
      "learning_loss": dict(width=128, margin=1.0, weight=1.0,
                            detach_fraction=0.6, subset=10000,
                            use_embedding=True),
      "discriminative": dict(sub_batches=20, unlabelled_ratio=10.0,
                             hidden=None, solver="adam", steps=500,
                             learning_rate=3e-4, l2=0.0, stop_accuracy=0.98),
      "active_mixup": dict(scan_batch_size=4096, use_fast_path=True),
  }
  for name, values in want.items():
    got = dataclasses.asdict(parse_options(get_strategy(name)))
    assert {k: got[k] for k in values} == values, name
  grid = [round(0.3 + 0.04 * i, 2) for i in range(11)]  # the paper's grid
  for name in ("active_mixup", "vanilla_mixup", "random_mixup"):
    assert list(parse_options(get_strategy(name)).lambdas) == grid


class CountingTeacher:
  """A linear teacher that counts its calls."""

  def __init__(self):
    self.w = np.random.default_rng(0).normal(size=(16, 3))
    self.calls = 0

  def __call__(self, images):
    self.calls += 1
    return np.asarray(images).reshape(len(images), -1) @ self.w


def _run(tmp_path, strategy, options, teacher, rounds=1):
  pool = np.random.default_rng(1).random((20, 4, 4, 1)).astype(np.float32)
  mixup = getattr(get_strategy(strategy) if isinstance(strategy, str)
                  else strategy, "scope", "pool") == "initial"
  oracle = TeacherOracle(teacher, pool, budget=20,
                         ledger_path=str(tmp_path / "ledger.sqlite"))
  try:
    loop.run_loop(
        strategy=strategy, student=get_model("mlp", 3, hidden=(4,)),
        oracle=oracle,
        initial_indices=np.arange(8 if mixup else 5),
        candidate_indices=None if mixup else 5 + np.arange(15),
        test_images=pool[:2], test_labels=np.zeros(2, np.int32),
        teacher_accuracy=1.0,
        settings=loop.LoopSettings(rounds=rounds, per_round=2, train_steps=1,
                                   batch_size=8, strategy_options=options),
        workdir=str(tmp_path / "run"), progress=False, log=lambda m: None)
    return oracle.entries(), oracle.spent
  finally:
    oracle.close()


@pytest.mark.parametrize("strategy,options,match", [
    ("random_mixup", {"lambda": 0.5},
     r"random_mixup: unknown option 'lambda' \(did you mean 'lambdas'\?\)"),
    ("admm", {"rho": 1.0}, "admm: unknown option 'rho'"),
    ("learning_loss", {"nope": 1}, "learning_loss: unknown option 'nope'"),
    ("random", {"k": 3}, "random: unknown option 'k'; random takes no "
     "options"),
    ("admm", {"features": "logits"}, "features must be 'embeddings' or "
     "'pixels'"),
])
def test_bad_options_fail_before_the_teacher_is_paid(tmp_path, strategy,
                                                     options, match):
  teacher = CountingTeacher()
  with pytest.raises(JaxkdError, match=match) as e:
    _run(tmp_path, strategy, options, teacher)
  assert "\n" not in str(e.value)
  assert teacher.calls == 0


def test_good_options_reach_the_strategy(tmp_path):
  """random_mixup draws every lambda from the given grid (it ignored a
  misspelt one before)."""
  teacher = CountingTeacher()
  rows, spent = _run(tmp_path, "random_mixup", {"lambdas": [0.25]}, teacher)
  mixed = [r for r in rows if r["kind"] == "mixup"]
  assert spent == 10 and len(mixed) == 2 and teacher.calls > 0
  assert [r["lam"] for r in mixed] == [0.25, 0.25]


@dataclasses.dataclass(frozen=True)
class _DepthOptions:
  depth: int = fields.setting(2, "How many points to skip.")
  scale: float = fields.setting(1.5, "Unused.")

  def validate(self):
    if self.depth < 0:
      raise JaxkdError(f"depth must be >= 0, got {self.depth}.")
    return self


def test_plugin_options_are_declared_parsed_and_passed_whole(tmp_path):
  seen = []

  def skip_first(key, inputs, k, **options):
    seen.append(options)
    d = options["depth"]
    return np.flatnonzero(np.asarray(inputs.available))[d:d + k]

  register_strategy("_test_depth", skip_first, options=_DepthOptions)
  try:
    assert get_strategy("_test_depth").options is _DepthOptions
    rows, _ = _run(tmp_path / "a", "_test_depth", {"depth": 3},
                   CountingTeacher())
    # Every field of the run's options, the unset one at its default.
    assert seen == [{"depth": 3, "scale": 1.5}]
    assert [r["pool_index"] for r in rows[5:]] == [8, 9]   # 5 + 3, 5 + 4
    teacher = CountingTeacher()
    with pytest.raises(JaxkdError, match="depth must be >= 0, got -1"):
      _run(tmp_path / "b", "_test_depth", {"depth": -1}, teacher)
    assert teacher.calls == 0
  finally:
    STRATEGIES._entries.pop("_test_depth", None)


def test_options_must_be_a_frozen_dataclass_with_defaults():
  @dataclasses.dataclass
  class Mutable:
    x: int = 1

  @dataclasses.dataclass(frozen=True)
  class NoDefault:
    x: int

  fn = lambda key, inputs, k: np.arange(k)
  for cls, match in ((Mutable, "frozen dataclass"), (dict, "frozen dataclass"),
                     (NoDefault, "need a default")):
    with pytest.raises(JaxkdError, match=match):
      register_strategy("_test_bad_options", fn, options=cls)
  assert "_test_bad_options" not in STRATEGIES._entries


@pytest.fixture
def plugin_module(tmp_path, monkeypatch):
  (tmp_path / "opt_plugins.py").write_text(textwrap.dedent("""
      import dataclasses
      import numpy as np
      from jaxkd.fields import setting

      @dataclasses.dataclass(frozen=True)
      class Opts:
        depth: int = setting(1, "How many points to skip.")

      def skip(key, inputs, k, **options):
        return np.flatnonzero(inputs.available)[options["depth"]:][:k]
      skip.options = Opts
      """))
  monkeypatch.syspath_prepend(str(tmp_path))
  yield "opt_plugins"
  sys.modules.pop("opt_plugins", None)


def test_settings_read_refuses_options_of_no_strategy(plugin_module):
  c = common.active_config()
  c.strategy_options.randomm = {"k": 1}
  with pytest.raises(JaxkdError, match=r"config.strategy_options.randomm: "
                     r"Unknown strategy 'randomm'") as e:
    settings.read(c)
  assert "\n" not in str(e.value)
  c = common.active_config()
  c.strategy_options.random_mixup = {"lambda": 0.5}
  with pytest.raises(JaxkdError, match="random_mixup: unknown option "
                     "'lambda'"):
    settings.read(c)
  c.strategy_options.random_mixup = {"lambdas": (0.5,)}
  assert settings.read(c).strategy_options == {
      "random_mixup": {"lambdas": (0.5,)}}
  # A key may be an import path; its declared options are checked too.
  path = f"{plugin_module}:skip"
  ok = settings.ActiveSettings(strategy_options={path: {"depth": 2}})
  assert ok.validate() is ok
  with pytest.raises(JaxkdError, match=f"{path}: unknown option 'deep'"):
    settings.ActiveSettings(strategy_options={path: {"deep": 2}}).validate()


def test_list_config_lists_the_configured_strategies_options(tmp_path,
                                                             capsys):
  cfg = tmp_path / "with_options.py"
  cfg.write_text(textwrap.dedent("""
      from jaxkd.configs import common

      def get_config():
        c = common.active_config()
        c.strategy_options.admm = {"theta": 1e-4}
        c.strategy_options.random = {}
        return c
      """))
  assert main.run_cli(["jaxkd", f"--config={cfg}", "--list_config"]) == 0
  lines = capsys.readouterr().out.splitlines()
  rows = {l.split(" = ")[0]: l for l in lines
          if l.startswith("strategy_options.")}
  want = {f"strategy_options.admm.{f.name}": f for f in _option_fields("admm")}
  assert set(rows) == set(want)          # random takes no options
  for name, f in want.items():
    value = 1e-4 if f.name == "theta" else f.default
    a, _, doc = rows[name].partition("  # ")
    assert a.split(" = ")[1].strip() == (
        str(value).lower() if isinstance(value, bool) else
        f'"{value}"' if isinstance(value, str) else repr(value))
    assert doc == fields.doc_of(f)
  # The main fields come first, as before.
  assert lines.index(rows["strategy_options.admm.alpha"]) > lines.index(
      next(l for l in lines if l.startswith("split.test ")))
