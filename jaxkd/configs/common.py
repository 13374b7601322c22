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
from jaxkd.validation import JaxkdError

__all__ = ["ALL_STRATEGIES", "active_config", "unix_config", "loop_config",
           "teacher_config", "parse_arg"]


def parse_arg(arg: str, **defaults):
  """Parses 'a=1,b=x' or a bare flag like 'runlocal' into a ConfigDict.

  Only the names in `defaults` exist: another name (a misspelt variant
  such as 'quik', or a field such as 'rounds=3' that belongs in
  `--config.rounds=3`) is a one-line JaxkdError listing the variants.
  """
  out = ml_collections.ConfigDict(defaults)
  for part in filter(None, (arg or "").split(",")):
    k, eq, v = part.partition("=")
    if k not in defaults:
      known = ", ".join(sorted(defaults)) or "none"
      raise JaxkdError(
          f"Unknown config variant {k!r} in {arg!r}; this config takes: "
          f"{known} (set other fields with --config.<field>=...).")
    kind = type(defaults[k])
    if not eq:
      if kind is not bool:
        raise JaxkdError(f"Config variant {k!r} needs a value: {k}=...")
      out[k] = True
    elif kind is bool:
      out[k] = v.lower() in ("1", "true", "yes")
    else:
      try:
        out[k] = kind(v)
      except ValueError:
        raise JaxkdError(f"Config variant {k}={v!r} is not a valid "
                         f"{kind.__name__}.") from None
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
