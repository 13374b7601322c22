"""One registry style for every pluggable part of jaxkd.

Strategies (`jaxkd.selection.STRATEGIES`), models (`jaxkd.models.MODELS`),
datasets (`jaxkd.data.datasets.DATASETS`), losses (`jaxkd.losses.LOSSES`)
and optimizers (`jaxkd.train.OPTIMIZERS`) are looked up by name in a
`Registry`. Built-in entries that live in their own modules (one module per
strategy, model family or file format) register themselves when imported;
the registry lists those modules as `modules=` and imports them on its first
lookup.

A name may also be an import path `"my_package.my_module:attr"`: the module
is imported on first use and `attr` is returned (and cached under that
name), so a config can name a plug-in that lives outside jaxkd without
editing jaxkd (dataset names are the exception: `jaxkd.data.datasets`
resolves its `tfds:` / `npz:` / `idx:` prefixes in front of its registry and
takes no import path):

  >>> from jaxkd.registry import Registry
  >>> colors = Registry("color")
  >>> _ = colors.register("red", (255, 0, 0))
  >>> colors.get("red")
  (255, 0, 0)
  >>> colors.get("math:pi")
  3.141592653589793
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Dict, Iterable, List, Optional

from jaxkd.validation import JaxkdError


def load_import_path(path: str) -> Any:
  """Returns `attr` of `"pkg.module:attr"` (dotted attrs allowed)."""
  module, _, attr = path.partition(":")
  if not module or not attr:
    raise JaxkdError(f"Import path {path!r} must look like 'pkg.module:attr'.")
  try:
    obj = importlib.import_module(module)
  except ImportError as e:
    raise JaxkdError(f"Cannot import {module!r} for {path!r}: {e}.") from None
  except Exception as e:  # pylint: disable=broad-except
    # A plug-in module that fails at import (any error): one line, before
    # anything is paid.
    first = (str(e).strip().splitlines() or [""])[0][:200]
    raise JaxkdError(f"Importing {module!r} for {path!r} raised "
                     f"{type(e).__name__}: {first}.") from None
  for part in attr.split("."):
    if not hasattr(obj, part):
      raise JaxkdError(f"Module {module!r} has no attribute {attr!r}.")
    obj = getattr(obj, part)
  return obj


class Registry:
  """Names -> objects, with lazy built-in modules and import-path names.

  Args:
    kind: what is registered ("strategy", "model", ...), for messages.
    modules: modules imported before the first lookup; they register their
      entries at import (a missing optional module is skipped).
    convert: applied to every registered or imported object (e.g. wrapping
      a plain function as a strategy); gets (name, obj).
  """

  def __init__(self, kind: str, modules: Iterable[str] = (),
               convert: Optional[Callable[[str, Any], Any]] = None):
    self.kind = kind
    self._modules = tuple(modules)
    self._loaded = False
    self._convert = convert
    self._entries: Dict[str, Any] = {}

  def register(self, name: str, obj: Any = None):
    """Registers `obj` under `name` (usable as a decorator when obj is
    omitted); returns `obj` unchanged."""
    if not isinstance(name, str) or not name or ":" in name:
      raise JaxkdError(f"A {self.kind} name must be a non-empty string "
                       f"without ':', got {name!r}.")
    if obj is None:
      return lambda o: self.register(name, o)
    self._entries[name] = self._convert(name, obj) if self._convert else obj
    return obj

  def entries(self) -> List[Any]:
    """The registered objects (built-ins loaded), import paths included."""
    self._load()
    return list(self._entries.values())

  def names(self) -> List[str]:
    """Sorted names of the registered entries (built-ins loaded)."""
    self._load()
    return sorted(n for n in self._entries if ":" not in n)

  def __contains__(self, name: str) -> bool:
    self._load()
    return name in self._entries

  def get(self, name: str) -> Any:
    """The entry `name`, or the object at import path `"pkg.mod:attr"`."""
    self._load()
    if name in self._entries:
      return self._entries[name]
    if isinstance(name, str) and ":" in name:
      obj = load_import_path(name)
      self._entries[name] = self._convert(name, obj) if self._convert else obj
      return self._entries[name]
    raise JaxkdError(
        f"Unknown {self.kind} {name!r}; known: {', '.join(self.names())} "
        "(or an import path 'pkg.module:attr').")

  def _load(self) -> None:
    if self._loaded:
      return
    self._loaded = True
    for mod in self._modules:
      try:
        importlib.import_module(mod)
      except ModuleNotFoundError as e:
        if e.name != mod:
          raise
