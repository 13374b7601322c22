"""Strategy registry for the active loop.

A strategy is a pure function

  fn(key, inputs: SelectionInputs, k: int, **options) -> indices int32 [k]

that returns k distinct pool indices, all with `inputs.available[i] == True`.
`needs` names the fields of `SelectionInputs` the active loop must compute for
it (fields it does not need are left None, so nothing is paid for in vain).
"""

from __future__ import annotations

from typing import Any, Callable, Dict, FrozenSet, NamedTuple, Optional

import jax

from jaxkd.validation import JaxkdError


class SelectionInputs(NamedTuple):
  """What a selection strategy may look at for one round (n = pool size).

  Attributes:
    available: [n] bool, True where the pool point has not been queried yet.
    probs: [n, C] student softmax probabilities on the pool.
    embeddings: [n, D] student penultimate features on the pool.
    pixels: [n, P] flattened pool images (raw features).
    logits: [n, C] student logits on the pool.
    teacher_probs: [n, C] teacher probabilities on the pool; only for
      strategies whose setting assumes a cheap-to-run teacher (gap_diversity);
      the active loop counts those calls separately from paid queries.
    baseline_probs: [n, C] probabilities of a student trained on the labelled
      set alone with hard labels (M_S of the lane-detection paper).
    mistake_rate: scalar estimate of the teacher's error rate (RAD).
  """
  available: jax.Array
  probs: Optional[jax.Array] = None
  embeddings: Optional[jax.Array] = None
  pixels: Optional[jax.Array] = None
  logits: Optional[jax.Array] = None
  teacher_probs: Optional[jax.Array] = None
  baseline_probs: Optional[jax.Array] = None
  mistake_rate: Optional[float] = None


StrategyFn = Callable[..., jax.Array]


class Strategy(NamedTuple):
  name: str
  fn: StrategyFn
  needs: FrozenSet[str]
  description: str = ""


_STRATEGIES: Dict[str, Strategy] = {}


def register_strategy(name: str, fn: StrategyFn, needs=(), description=""):
  """Registers `fn` under `name`; `needs` lists SelectionInputs fields."""
  unknown = set(needs) - set(SelectionInputs._fields)
  if unknown:
    raise JaxkdError(f"Strategy {name!r} needs unknown inputs {sorted(unknown)}.")
  _STRATEGIES[name] = Strategy(name, fn, frozenset(needs), description)
  return fn


def strategy_names() -> list[str]:
  _load_all()
  return sorted(_STRATEGIES)


def get_strategy(name: str) -> Strategy:
  _load_all()
  if name not in _STRATEGIES:
    raise JaxkdError(
        f"Unknown strategy {name!r}; known strategies: "
        f"{', '.join(strategy_names())}.")
  return _STRATEGIES[name]


_MODULES = ("jaxkd.selection.baselines", "jaxkd.selection.admm",
            "jaxkd.selection.rad", "jaxkd.selection.gap_diversity",
            "jaxkd.selection.badge")


def _load_all() -> None:
  import importlib
  for mod in _MODULES:
    try:
      importlib.import_module(mod)
    except ModuleNotFoundError as e:
      if e.name != mod:
        raise
