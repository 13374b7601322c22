"""Config builders from the settings dataclasses, and `parse_arg`.

Every experiment config starts from `active_config()` (the active loop job)
or `unix_config()` (the UNIX job) and changes only what differs. Their
defaults and meanings are the fields of `jaxkd.settings` (declared once
there); this module only builds ConfigDicts from them. Run any config with

  python -m jaxkd.main --config=experiments/configs/<x>.py:<variant> \
      --workdir=runs/<x>
"""

import ml_collections

from jaxkd import fields, loop, settings
from jaxkd.settings import ALL_STRATEGIES, active_config, unix_config

__all__ = ["ALL_STRATEGIES", "active_config", "unix_config", "loop_config",
           "teacher_config", "parse_arg"]


def parse_arg(arg: str, **defaults):
  """Parses 'a=1,b=x' or a bare flag like 'runlocal' into a ConfigDict."""
  out = ml_collections.ConfigDict(defaults)
  for part in filter(None, (arg or "").split(",")):
    if "=" in part:
      k, v = part.split("=", 1)
      kind = type(defaults.get(k, ""))
      out[k] = (v.lower() in ("1", "true", "yes")) if kind is bool else kind(v)
    else:
      out[part] = True
  return out


def loop_config(**overrides) -> ml_collections.ConfigDict:
  """The student-training section (`config.loop`), from
  `loop.StudentTraining`."""
  c = fields.to_config(loop.StudentTraining())
  c.update(overrides)
  return c


def teacher_config(**overrides) -> ml_collections.ConfigDict:
  """The teacher section (`config.teacher`), from
  `settings.TeacherSettings`."""
  c = fields.to_config(settings.TeacherSettings())
  c.update(overrides)
  return c
