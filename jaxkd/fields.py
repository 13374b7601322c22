"""Settings declared once: dataclass fields with a default and a meaning.

Every setting of jaxkd is a field of a frozen dataclass, declared with
`setting(default, doc)`: the default and its one-line meaning stand
together, once. A field that is the same setting as one declared elsewhere
(the UNIX job's `k` is `UnixConfig.k`) is declared `same_as(UnixConfig,
"k")`: it takes that field's default and meaning, so the two cannot drift.

The ml_collections `ConfigDict` that absl's `--config` flags edit is built
from the dataclasses (`to_config`), and read back into them at one boundary
(`from_config`, strict: an unknown or misspelt field is an error, a tuple
field given a bare value is an error). `describe` lists every field with
its value and meaning (`python -m jaxkd.main --list_config`).

  >>> import dataclasses
  >>> @dataclasses.dataclass(frozen=True)
  ... class Solver:
  ...   tol: float = setting(1e-4, "Stop when the residual is below tol.")
  >>> to_config(Solver()).tol
  0.0001
  >>> from_config(Solver, {"tol": 1e-6})
  Solver(tol=1e-06)
"""

from __future__ import annotations

import dataclasses
import json
import typing
from typing import Any, Dict, List, Mapping, Tuple, Type

import ml_collections

from jaxkd.validation import JaxkdError

DOC = "doc"  # field metadata key: the field's one line of meaning
SOURCE = "same_as"  # field metadata key: (class, name) it was taken from


def setting(default: Any = dataclasses.MISSING, doc: str = "", *,
            factory: Any = dataclasses.MISSING) -> Any:
  """A dataclass field with its default (or `factory`) and its meaning."""
  if not doc:
    raise ValueError("every setting needs a one-line meaning")
  meta = {DOC: doc}
  if factory is not dataclasses.MISSING:
    return dataclasses.field(default_factory=factory, metadata=meta)
  if isinstance(default, (dict, list)):
    frozen = dict(default) if isinstance(default, dict) else list(default)
    return dataclasses.field(
        default_factory=lambda: type(frozen)(frozen), metadata=meta)
  return dataclasses.field(default=default, metadata=meta)


def same_as(cls: type, name: str, doc: str = "") -> Any:
  """The field `cls.name` again: its default and meaning (or `doc`)."""
  src = {f.name: f for f in dataclasses.fields(cls)}[name]
  meta = {DOC: doc or src.metadata[DOC], SOURCE: (cls, name)}
  if src.default_factory is not dataclasses.MISSING:
    return dataclasses.field(default_factory=src.default_factory,
                             metadata=meta)
  return dataclasses.field(default=src.default, metadata=meta)


def override(cls: type, name: str, default: Any = dataclasses.MISSING, *,
             factory: Any = dataclasses.MISSING) -> Any:
  """`cls.name` with another default (a subclass's job-specific default):
  the same setting and meaning."""
  src = {f.name: f for f in dataclasses.fields(cls)}[name]
  meta = {DOC: src.metadata[DOC], SOURCE: (cls, name)}
  if factory is not dataclasses.MISSING:
    return dataclasses.field(default_factory=factory, metadata=meta)
  return dataclasses.field(default=default, metadata=meta)


def doc_of(field: dataclasses.Field) -> str:
  return field.metadata.get(DOC, "")


def _hints(cls: type) -> Dict[str, Any]:
  return typing.get_type_hints(cls)


def _is_settings(tp: Any) -> bool:
  return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _optional_of(tp: Any):
  """float for Optional[float]; None for other types."""
  args = typing.get_args(tp)
  if typing.get_origin(tp) is typing.Union and type(None) in args:
    rest = [a for a in args if a is not type(None)]
    return rest[0] if len(rest) == 1 else None
  return None


def to_config(obj: Any) -> ml_collections.ConfigDict:
  """The ConfigDict of a settings object (nested dataclasses -> sections;
  None fields keep their type so `--config.x=1.5` can set them)."""
  out = ml_collections.ConfigDict()
  hints = _hints(type(obj))
  for f in dataclasses.fields(obj):
    value = getattr(obj, f.name)
    if dataclasses.is_dataclass(value):
      out[f.name] = to_config(value)
    elif value is None:
      inner = _optional_of(hints[f.name])
      out[f.name] = ml_collections.FieldReference(None, field_type=inner)
    elif isinstance(value, Mapping):
      out[f.name] = ml_collections.ConfigDict(
          {k: dict(v) if isinstance(v, Mapping) else v
           for k, v in value.items()})
    else:
      out[f.name] = value
  return out


def _plain(value: Any) -> Any:
  if isinstance(value, ml_collections.ConfigDict):
    return value.to_dict()
  if isinstance(value, ml_collections.FieldReference):
    return value.get()
  return value


def from_config(cls: Type, config: Any, prefix: str = "") -> Any:
  """`cls` filled from a ConfigDict or dict: every key must be a field (a
  misspelt one is a one-line JaxkdError naming the known fields); missing
  keys keep their defaults; nested dataclass fields read their section."""
  data = _plain(config)
  if data is None:
    data = {}
  if not isinstance(data, Mapping):
    raise JaxkdError(f"config.{prefix.rstrip('.')} must be a section of "
                     f"fields, got {data!r}.")
  fields = {f.name: f for f in dataclasses.fields(cls)}
  unknown = sorted(set(data) - set(fields))
  if unknown:
    raise JaxkdError(
        f"Unknown config field {prefix}{unknown[0]}; the fields of "
        f"{'config.' + prefix.rstrip('.') if prefix else 'the config'} are "
        f"{', '.join(sorted(fields))} (python -m jaxkd.main --list_config).")
  hints = _hints(cls)
  kwargs = {}
  for name, value in data.items():
    tp = hints[name]
    if _is_settings(tp):
      kwargs[name] = from_config(tp, value, f"{prefix}{name}.")
    else:
      kwargs[name] = _coerce(f"{prefix}{name}", tp, _plain(value))
  return cls(**kwargs)


def _coerce(name: str, tp: Any, value: Any) -> Any:
  """Tuple fields stay tuples (a bare string or number is refused: absl
  would otherwise take `--config.seeds=3` for one seed, seed 3)."""
  origin = typing.get_origin(tp)
  if origin is tuple or tp is tuple:
    if isinstance(value, (list, tuple)):
      return tuple(value)
    raise JaxkdError(
        f"config.{name} is a tuple; got {value!r}. Write it as a tuple, e.g. "
        f"--config.{name}='({value!r},)'.")
  if isinstance(value, Mapping):
    return {k: _plain(v) for k, v in value.items()}
  return value


def flat_fields(obj: Any, prefix: str = ""
                ) -> List[Tuple[str, Any, dataclasses.Field]]:
  """(dotted name, value, field) of every leaf setting of `obj`."""
  out = []
  for f in dataclasses.fields(obj):
    value = getattr(obj, f.name)
    if dataclasses.is_dataclass(value):
      out += flat_fields(value, f"{prefix}{f.name}.")
    else:
      out.append((f"{prefix}{f.name}", value, f))
  return out


def describe(obj: Any) -> str:
  """One line per setting: `name = value  # meaning`."""
  rows = [(f"{name} = {json.dumps(value, default=str)}", doc_of(f))
          for name, value, f in flat_fields(obj)]
  width = min(max(len(r[0]) for r in rows), 36)
  return "\n".join(f"{a.ljust(width)}  # {b}" for a, b in rows)


def field_table(obj: Any, prefix: str = "") -> str:
  """The settings as a Markdown table (field, default, meaning)."""
  lines = ["| field | default | meaning |", "| --- | --- | --- |"]
  for name, value, f in flat_fields(obj, prefix):
    shown = json.dumps(value, default=str).replace("|", "\\|")
    lines.append(f"| `{name}` | `{shown}` | {doc_of(f)} |")
  return "\n".join(lines)
