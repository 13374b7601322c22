"""The round protocol: what a selection strategy is, and its registry.

Every method, built in or not, is a `Strategy` run by the one round loop
(`jaxkd.loop.run_loop`). Each round t >= 1 the loop

  1. computes the `SelectionInputs` fields the strategy `needs` (student
     probs/logits/embeddings on the candidates, pixels, unpaid teacher
     probs), and nothing else;
  2. calls `strategy.prepare(ctx)`, which may add method-specific fields
     (a baseline student's probs, a mistake-rate estimate) and keep state in
     `ctx.cache` (in memory) or `ctx.extra` (checkpointed with the student);
  3. calls `strategy.select(key, ctx, inputs, k, **options)` with every
     field of the run's options (`strategy.options`, a frozen dataclass
     built once per run by `parse_options`); it returns a query:
     `PoolQuery` (positions in the candidate set) or `MixupQuery` (a
     synthetic recipe (i, j, lam) the ledger stores and can rebuild);
  4. pays for it (`query.pay`: only answers not in the ledger cost);
  5. turns the ledger's paid answers into training data
     (`strategy.training_data`, default: every paid row, mixup rows rebuilt
     from their recipe) and trains (`strategy.train`, default: the config's
     loss and optimizer; a strategy may own the step, e.g. to train an extra
     module jointly with the student and use it when selecting).

Plain functions register with a one-liner:

  register_strategy("mine", lambda key, inputs, k: ..., needs=("probs",))

where `fn(key, inputs, k, **options) -> indices [k]` returns k distinct
positions with `inputs.available` True. A config may also name a strategy by
import path, `"my_package.my_module:my_strategy"` (a `Strategy` instance or
subclass, or such a function with optional `needs` and `options`
attributes).

Options. A strategy's options (`config.strategy_options.<name>`) are one
frozen dataclass, its `options` attribute, declared where the strategy
lives with a default and a meaning per field (`jaxkd.fields.setting`) and
an optional `validate()`; a strategy without one takes none (`NoOptions`):

  @dataclasses.dataclass(frozen=True)
  class MineOptions:
    depth: int = setting(3, "How deep to look (>= 1).")

  register_strategy("mine", fn, needs=("probs",), options=MineOptions)

`parse_options(strategy, {"depth": 5})` builds them strictly (an unknown
option is a one-line `JaxkdError`), before round 0 pays anything.
"""

from __future__ import annotations

import dataclasses
import inspect
import difflib
import json
from typing import (Any, Callable, Dict, FrozenSet, List, NamedTuple,
                    Optional, Tuple)

import jax
import numpy as np

from jaxkd import fields
from jaxkd.ledger import entry_image
from jaxkd.registry import Registry
from jaxkd.validation import JaxkdError, is_int


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
      set alone with hard labels (M_S of the lane-detection paper); supplied
      by gap_diversity's `prepare` hook.
    mistake_rate: scalar estimate of the teacher's error rate (RAD's
      `prepare` hook).
  """
  available: jax.Array
  probs: Optional[jax.Array] = None
  embeddings: Optional[jax.Array] = None
  pixels: Optional[jax.Array] = None
  logits: Optional[jax.Array] = None
  teacher_probs: Optional[jax.Array] = None
  baseline_probs: Optional[jax.Array] = None
  mistake_rate: Optional[float] = None


# Fields the loop computes itself when declared in `needs`; the others come
# from a strategy's `prepare` hook.
LOOP_FIELDS = frozenset({"available", "probs", "logits", "embeddings",
                         "pixels", "teacher_probs"})


# ----------------------------------------------------------------- queries ---


class PoolQuery(NamedTuple):
  """Pool points to pay for: `indices` [k] are positions in the candidate
  set (`ctx.candidate_indices`), distinct and available."""
  indices: np.ndarray

  @property
  def size(self) -> int:
    """How many points this query pays for (0 for None)."""
    return 0 if self.indices is None else int(np.size(self.indices))

  def pay(self, ctx, round: int) -> int:
    local = np.asarray(self.indices).reshape(-1)
    if not np.issubdtype(local.dtype, np.integer):
      raise JaxkdError(f"strategy returned non-integer indices "
                       f"({local.dtype}).")
    n = len(ctx.candidate_indices)
    if (len(np.unique(local)) != len(local) or local.size and (
        local.min() < 0 or local.max() >= n) or not ctx.available[local].all()):
      raise JaxkdError("strategy returned repeated, out-of-range or already "
                       "queried points.")
    ctx.oracle.query(ctx.candidate_indices[local], round=round)
    return len(local)


class MixupQuery(NamedTuple):
  """Synthetic images x_ij(lam) = lam x_i + (1 - lam) x_j of oracle-pool
  images: `pairs` [k, 2] int, `lams` [k] in [0, 1]. The ledger stores the
  recipe, so a resumed run rebuilds the images and never pays twice."""
  pairs: np.ndarray
  lams: np.ndarray

  @property
  def size(self) -> int:
    """How many mixup images this query pays for."""
    return len(np.asarray(self.pairs).reshape(-1, 2))

  def pay(self, ctx, round: int) -> int:
    ctx.oracle.query_mixup(np.asarray(self.pairs), np.asarray(self.lams),
                           round=round)
    return len(self.pairs)


def ledger_training_set(oracle, max_round: int) -> Tuple[np.ndarray,
                                                         np.ndarray]:
  """Images and teacher answers of every ledger row of rounds <= max_round,
  in payment order: pool rows read from the item their key names, mixup
  rows rebuilt from (i, j, lam) (`TeacherOracle.entry_images`). Caller-made
  "image" rows have no recipe and are skipped."""
  rows = oracle.entries(max_round=max_round)
  images, targets = [], []
  for e, image in zip(rows, oracle.entry_images(rows)):
    if image is not None:
      images.append(image)
      targets.append(e["probs"])
  if not images:
    raise JaxkdError(f"no paid answers in rounds <= {max_round} to train on.")
  return np.stack(images), np.stack(targets)


# ---------------------------------------------------------------- options ---


@dataclasses.dataclass(frozen=True)
class NoOptions:
  """The options of a strategy that takes none."""


def _is_options_class(obj: Any) -> bool:
  return isinstance(obj, type) and dataclasses.is_dataclass(obj)


def _check_options_class(name: str, cls: Any) -> type:
  """`cls` if it is a frozen dataclass whose fields all have defaults."""
  if not (_is_options_class(cls) and cls.__dataclass_params__.frozen):
    raise JaxkdError(f"Strategy {name!r}: options must be a frozen dataclass "
                     f"class, got {cls!r}.")
  required = [f.name for f in dataclasses.fields(cls)
              if f.default is dataclasses.MISSING
              and f.default_factory is dataclasses.MISSING]
  if required:
    raise JaxkdError(f"Strategy {name!r}: options {', '.join(required)} of "
                     f"{cls.__name__} need a default.")
  return cls


def check_option_ranges(owner: str, options: Any, *, counts=(),
                        nonnegative=()) -> None:
  """One-line JaxkdErrors for options that must be ints >= 1 (`counts`) or
  finite numbers >= 0 (`nonnegative`), named as `owner: name`."""
  for name in counts:
    v = getattr(options, name)
    if not is_int(v) or v < 1:
      raise JaxkdError(f"{owner}: {name} must be an int >= 1, got {v!r}.")
  for name in nonnegative:
    v = getattr(options, name)
    if not np.isfinite(v) or v < 0:
      raise JaxkdError(f"{owner}: {name} must be >= 0, got {v!r}.")


def parse_options(strategy: Any, options: Any = None, *,
                  name: Optional[str] = None) -> Any:
  """The options instance of `strategy` built from a user mapping.

  Args:
    strategy: a `Strategy` (its `options` class is used) or an options
      dataclass itself.
    options: {option: value} (a dict or ConfigDict; None: all defaults),
      e.g. `config.strategy_options.<name>`.
    name: the strategy's name in messages (default: `strategy.name`).

  Returns:
    The frozen options dataclass, missing options at their defaults, after
    its `validate()` (if it has one; a returned instance replaces it, so
    `validate` may normalise, e.g. a list to a tuple).

  Raises:
    JaxkdError: one line, on an option the strategy does not take (naming
      the ones it takes) or a value its `validate()` refuses (its message,
      after `config.strategy_options.<name>: ` unless it names the
      strategy first).

  Example:
    >>> from jaxkd.selection import get_strategy
    >>> parse_options(get_strategy("rad"), {"gain": "entropy"})
    RadOptions(num_mistakes=None, gain='entropy')
  """
  if _is_options_class(strategy):
    cls = strategy
  else:
    cls = getattr(strategy, "options", NoOptions)
  name = name or getattr(strategy, "name", "") or getattr(
      cls, "__name__", "strategy")
  _check_options_class(name, cls)
  where = f"config.strategy_options.{name}"
  known = [f.name for f in dataclasses.fields(cls)]
  keys = list(options.keys()) if hasattr(options, "keys") else []
  for key in keys:
    if key not in known:
      near = difflib.get_close_matches(str(key), known, n=1)
      hint = f" (did you mean {near[0]!r}?)" if near else ""
      raise JaxkdError(
          f"{where}: unknown option {key!r}{hint}; {name} takes "
          f"{', '.join(known) or 'no options'}.")
  opts = fields.from_config(cls, options, prefix=f"strategy_options.{name}.")
  validate = getattr(opts, "validate", None)
  if callable(validate):
    try:
      checked = validate()
    except JaxkdError as e:
      if str(e).startswith(f"{name}:"):
        raise
      raise JaxkdError(f"{where}: {e}") from None
    except (TypeError, ValueError) as e:  # e.g. a string where a number goes
      raise JaxkdError(f"{where}: bad option value "
                       f"({' '.join(str(e).split())}).") from None
    if isinstance(checked, cls):
      opts = checked
  return opts


def options_lines(name: str, options: Any) -> List[str]:
  """`strategy_options.<name>.<option> = value  # meaning`, one per option
  of the options instance `options` (as `--list_config` prints them)."""
  rows = [(f"strategy_options.{name}.{key} = "
           f"{json.dumps(value, default=str)}", fields.doc_of(f))
          for key, value, f in fields.flat_fields(options)]
  if not rows:
    return []
  width = min(max(len(r[0]) for r in rows), 36)
  return [f"{a.ljust(width)}  # {b}" for a, b in rows]


# --------------------------------------------------------------- strategy ---


class Strategy:
  """Base class of a round-protocol plug-in (override what differs).

  Attributes:
    name: registry name (set by `register_strategy`).
    needs: SelectionInputs fields the loop computes before `select`.
    description: one line for listings.
    scope: "pool" (the oracle covers L and U; queries come from U) or
      "initial" (the oracle covers L only; queries are synthetic images made
      from L, as Active Mixup's).
    options: frozen dataclass of the strategy's options
      (`config.strategy_options.<name>`); the loop builds it once per run
      (`parse_options`, also `ctx.options`) and calls `select` with its
      fields as keywords. Default `NoOptions`: none.

  Training hook. A method that trains something jointly with the student
  (learning loss, Yoo & Kweon 2019: a loss-prediction module with a margin
  ranking loss) overrides three methods and needs no loop change:

    def init_extra(self, ctx):           # restore template, checkpointed
      return lossnet_params(ctx.student, ctx.input_shape)
    def train(self, ctx, images, targets, *, seed, state, extra):
      joint = joint_state(state or fresh_student(ctx), extra)
      joint, _ = jaxkd.train.fit(ctx.student, joint, images, targets,
                                 batch_size=..., seed=seed, steps=...,
                                 step_fn=my_joint_step, mesh=ctx.mesh)
      return split(joint)                # (student TrainState, new extra)
    def select(self, key, ctx, inputs, k):
      scores = predicted_loss(ctx.state, ctx.extra, ctx.candidate_images)
      return PoolQuery(top_k(scores, inputs.available, k))

  The loop evaluates `state` as the student, saves `extra` with it after
  every round and restores both on resume.
  """
  name: str = ""
  needs: FrozenSet[str] = frozenset()
  description: str = ""
  scope: str = "pool"
  options: type = NoOptions

  def capacity(self, num_initial: int, num_candidates: int) -> int:
    """How many distinct queries exist (rounds x per_round must fit)."""
    return num_candidates

  def needs_for(self, options) -> FrozenSet[str]:
    """The fields this run computes: `needs`, except that when the options
    have a `features` field ("embeddings" or "pixels", as ADMM's) only the
    one chosen of those two is computed (pixels of a large pool are big)."""
    needs = frozenset(self.needs)
    chosen = getattr(options, "features", None)
    if chosen in ("embeddings", "pixels"):
      needs = (needs - {"embeddings", "pixels"}) | {chosen}
    return needs

  def prepare(self, ctx) -> Dict[str, Any]:
    """Method-specific state before `select`; returns extra SelectionInputs
    fields. `ctx.cache` persists over the rounds of one run (in memory)."""
    del ctx
    return {}

  def select(self, key: jax.Array, ctx, inputs: SelectionInputs, k: int,
             **options):
    """Returns the round's query (`PoolQuery`, `MixupQuery` or any object
    with `pay(ctx, round) -> number queried`); `options` are the fields of
    the run's `self.options`."""
    raise NotImplementedError

  def training_data(self, ctx, max_round: int):
    """(images, targets) the student trains on after round `max_round`."""
    return ledger_training_set(ctx.oracle, max_round)

  def init_extra(self, ctx) -> Any:
    """Strategy-owned pytree checkpointed beside the student (e.g. the
    params of a loss-prediction module), or None. Called once per run,
    before round 0 or before restoring; it is the restore template."""
    del ctx
    return None

  def train(self, ctx, images, targets, *, seed: int, state, extra):
    """Trains the round's student; returns (state, extra).

    Default: `ctx.fit` (the config's loss, optimizer and steps, from the
    run's fixed init, or from `state` when fine-tuning). A strategy that
    owns its training step builds it here and calls `jaxkd.train.fit`
    with `step_fn=` (see `ctx.fit`'s arguments), returning its updated
    `extra` so `select` can use it next round."""
    return ctx.fit(images, targets, seed=seed, state=state), extra


@dataclasses.dataclass
class FunctionStrategy(Strategy):
  """A pure `fn(key, inputs, k, **options) -> indices [k]` as a strategy,
  with an optional `prepare_fn(ctx) -> dict` hook and `options`, the
  frozen dataclass of its options (their fields are `fn`'s keywords)."""
  fn: Callable[..., Any] = None
  needs: FrozenSet[str] = frozenset()
  description: str = ""
  name: str = ""
  prepare_fn: Optional[Callable[[Any], Dict[str, Any]]] = None
  options: type = NoOptions

  def prepare(self, ctx):
    return {} if self.prepare_fn is None else dict(self.prepare_fn(ctx))

  def select(self, key, ctx, inputs, k, **options):
    del ctx
    out = self.fn(key, inputs, k, **options)
    return PoolQuery(None if out is None else np.asarray(out))


def _check_needs(name, needs):
  unknown = set(needs) - set(SelectionInputs._fields)
  if unknown:
    raise JaxkdError(
        f"Strategy {name!r} needs unknown inputs {sorted(unknown)}.")
  return frozenset(needs)


def as_strategy(name: str, obj: Any) -> Strategy:
  """A `Strategy` from an instance, a subclass or a plain function."""
  if isinstance(obj, type) and issubclass(obj, Strategy):
    obj = obj()
  if isinstance(obj, Strategy):
    obj.needs = _check_needs(name, obj.needs)
    _check_options_class(name, obj.options)
    if not obj.name:
      obj.name = name
    return obj
  if callable(obj):
    # A function its module registered (with its needs and options) is that
    # strategy, also when a config names it by import path.
    for entry in STRATEGIES.entries():
      if isinstance(entry, FunctionStrategy) and entry.fn is obj:
        return entry
    if isinstance(obj, type):
      raise JaxkdError(f"Strategy {name!r} is a class but not a Strategy "
                       "subclass.")
    try:
      inspect.signature(obj).bind(None, None, 1)
    except (TypeError, ValueError):
      raise JaxkdError(
          f"Strategy {name!r} does not take (key, inputs, k): a strategy "
          "function is fn(key, inputs, k, **options) -> indices.") from None
    return FunctionStrategy(
        fn=obj, name=name, needs=_check_needs(name, getattr(obj, "needs", ())),
        description=getattr(obj, "description", ""),
        options=_check_options_class(name, getattr(obj, "options",
                                                   NoOptions)))
  raise JaxkdError(f"Strategy {name!r} is neither a Strategy nor a function.")


STRATEGIES = Registry(
    "strategy", modules=(
        "jaxkd.selection.baselines", "jaxkd.selection.admm",
        "jaxkd.selection.rad", "jaxkd.selection.gap_diversity",
        "jaxkd.selection.badge", "jaxkd.selection.mixup",
        "jaxkd.selection.discriminative", "jaxkd.selection.learning_loss"),
    convert=as_strategy)


def register_strategy(name: str, fn: Any, needs=(), description: str = "",
                      prepare: Optional[Callable] = None,
                      options: Optional[type] = None):
  """Registers a strategy under `name`; returns `fn`.

  `fn` is a `Strategy` (instance or subclass), or a pure function
  `fn(key, inputs, k, **options) -> indices` whose `needs` lists the
  SelectionInputs fields it reads, whose optional `prepare(ctx) -> dict`
  hook supplies the fields the loop does not compute and whose `options`
  (a frozen dataclass, default `NoOptions`) declares its keywords.
  A Strategy declares its options as its `options` class attribute (an
  `options=` given here replaces it on the registered instance).
  """
  if isinstance(fn, Strategy) or (isinstance(fn, type)
                                  and issubclass(fn, Strategy)):
    if options is None:
      STRATEGIES.register(name, fn)
    else:
      obj = fn() if isinstance(fn, type) else fn
      obj.options = _check_options_class(name, options)
      STRATEGIES.register(name, obj)
  else:
    STRATEGIES.register(name, FunctionStrategy(
        fn=fn, needs=_check_needs(name, needs), description=description,
        name=name, prepare_fn=prepare,
        options=_check_options_class(name, options or NoOptions)))
  return fn


def strategy_names() -> list[str]:
  return STRATEGIES.names()


def get_strategy(name: str) -> Strategy:
  """The registered strategy `name`, or one at import path 'pkg.mod:attr'."""
  return STRATEGIES.get(name)
