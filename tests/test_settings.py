"""Settings are declared once: every field has a meaning, no default is
written twice, and the ConfigDicts are built from the dataclasses."""

import ast
import dataclasses
import os

import pytest

from jaxkd import fields, loop, settings, unix
from jaxkd.configs import common
from jaxkd.validation import JaxkdError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Every settings dataclass of the package (the config's sections and the
# dataclasses whose fields they share).
SECTIONS = (settings.SplitSettings, settings.TeacherSettings,
            settings.UnixSettings, settings.JobSettings,
            settings.ActiveSettings, settings.UnixJobSettings,
            loop.StudentTraining, loop.LoopSettings, unix.UnixConfig)

# Fields with one name and one default that are different settings, each
# with the reason; anything else declared twice must use `same_as`.
DIFFERENT_SETTINGS = {
    "batch_size": "teacher / student / UNIX batches are set apart",
    "optimizer": "the teacher's and the student's optimizers",
    "learning_rate": "the teacher's and the student's learning rates",
    "seed": "the split's, the teacher's and a run's seeds",
    "epochs": "teacher epochs and UNIX student epochs",
    "temperature": "the active loop's KD temperature and the UNIX step's",
    "strategy_options": "the job's options of every strategy; one run's",
}


def _own_fields(cls):
  """Fields `cls` declares itself (not inherited unchanged)."""
  inherited = {}
  for base in cls.__mro__[1:]:
    if dataclasses.is_dataclass(base):
      for f in dataclasses.fields(base):
        inherited.setdefault(f.name, f)
  return [f for f in dataclasses.fields(cls)
          if inherited.get(f.name) is not f]


def _default(f):
  if f.default_factory is not dataclasses.MISSING:
    return f.default_factory()
  return f.default


@pytest.mark.parametrize("cls", SECTIONS, ids=lambda c: c.__name__)
def test_every_field_has_a_meaning(cls):
  for f in dataclasses.fields(cls):
    assert fields.doc_of(f).strip(), f"{cls.__name__}.{f.name} has no doc"


def test_no_default_is_declared_twice():
  declared = {}
  for cls in SECTIONS:
    for f in _own_fields(cls):
      if fields.SOURCE in f.metadata:  # same_as / override: not a new one
        continue
      value = _default(f)
      if dataclasses.is_dataclass(value):
        continue  # a section; its fields are checked in their class
      declared.setdefault((f.name, repr(value)), []).append(cls.__name__)
  twice = {k: v for k, v in declared.items()
           if len(v) > 1 and k[0] not in DIFFERENT_SETTINGS}
  assert not twice, f"declared twice (use fields.same_as): {twice}"


def test_the_configs_are_built_from_the_settings():
  assert common.active_config().to_dict() == fields.to_config(
      settings.ActiveSettings()).to_dict()
  assert common.unix_config().to_dict() == fields.to_config(
      settings.UnixJobSettings()).to_dict()
  assert settings.parse(common.active_config()) == settings.ActiveSettings()
  assert settings.parse(common.unix_config()) == settings.UnixJobSettings()
  # The drifts that two declarations had allowed are gone.
  assert settings.ActiveSettings().per_round == loop.LoopSettings().per_round
  assert settings.UnixSettings().k == unix.UnixConfig().k
  assert settings.UnixSettings().w == unix.UnixConfig().w


def test_config_modules_write_no_default_of_their_own():
  """jaxkd/configs/common.py builds; it assigns no literal to a field."""
  path = os.path.join(ROOT, "jaxkd", "configs", "common.py")
  tree = ast.parse(open(path).read())
  for node in ast.walk(tree):
    if isinstance(node, ast.Assign):
      for t in node.targets:
        assert not isinstance(t, ast.Attribute), ast.unparse(node)
    if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "dict":
      pytest.fail(f"literal settings in common.py: {ast.unparse(node)}")


def test_describe_lists_every_field_once_with_its_meaning():
  out = fields.describe(settings.UnixJobSettings())
  names = [line.split(" = ")[0] for line in out.splitlines()]
  assert len(names) == len(set(names))
  assert "unix.k" in names and "teacher.seed" in names
  assert "# Images kept per step" in out


@pytest.mark.parametrize("config,match", [
    ({"rouns": 3}, "Unknown config field rouns"),
    ({"loop": {"train_step": 3}}, "Unknown config field loop.train_step"),
    ({"seeds": 3}, "config.seeds is a tuple"),
    ({"job": "nope"}, "Unknown job 'nope'"),
])
def test_misspelt_or_ill_typed_fields_are_one_line_errors(config, match):
  with pytest.raises(JaxkdError, match=match) as e:
    settings.parse(config)
  assert "\n" not in str(e.value)


def test_strategy_options_must_be_options_of_the_strategy():
  c = common.active_config()
  c.strategy_options.admm = {"rho": 1.0}
  with pytest.raises(JaxkdError, match="admm: unknown option 'rho'"):
    settings.read(c)
  c.strategy_options.admm = {"theta": 1e-4}
  assert settings.read(c).strategy_options == {"admm": {"theta": 1e-4}}


def test_a_run_gets_its_strategy_options_and_the_shared_training():
  c = common.active_config(rounds=2, per_round=7)
  c.strategy_options.admm = {"theta": 1e-4}
  s = settings.read(c).loop_settings(3, "admm")
  assert (s.rounds, s.per_round, s.seed) == (2, 7, 3)
  assert s.strategy_options == {"theta": 1e-4}
  assert s.train_steps == settings.ActiveSettings().loop.train_steps


def test_docs_field_tables_are_the_generated_ones():
  with open(os.path.join(ROOT, "docs", "configuration.md")) as f:
    text = f.read()
  start = text.index(settings.TABLES_BEGIN)
  end = text.index(settings.TABLES_END) + len(settings.TABLES_END)
  assert text[start:end] == settings.readme_tables(), (
      "rerun python docs/gen_pages.py (it writes python -m jaxkd.settings' "
      "tables into docs/configuration.md)")


def test_a_setting_added_since_a_run_is_no_change_at_its_default(tmp_path):
  """A workdir written before a setting existed resumes while the new
  setting keeps its default; set to another value, it is a change."""
  import json
  from jaxkd import run_dir
  s = settings.ActiveSettings()
  run_dir.check_resume(s, str(tmp_path))
  path = tmp_path / "config.json"
  old = json.loads(path.read_text())
  del old["loop"]["retrain"]            # as if written before it existed
  path.write_text(json.dumps(old))
  assert run_dir.check_resume(s, str(tmp_path)) == []
  old = json.loads(path.read_text())
  del old["loop"]["retrain"]
  path.write_text(json.dumps(old))
  changed = dataclasses.replace(
      s, loop=dataclasses.replace(s.loop, retrain=False))
  with pytest.raises(JaxkdError, match="loop.retrain"):
    run_dir.check_resume(changed, str(tmp_path))
