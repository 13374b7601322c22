"""The one round loop: select -> pay the teacher -> train -> evaluate.

Every selection method runs through `run_loop`: pool strategies, Active
Mixup and random mixup, and plug-ins from outside the package (the protocol
is `jaxkd.selection.registry.Strategy`). Round 0 pays the teacher for the
initial set L; each round t >= 1 the strategy returns a query of
`per_round` items (pool points, or synthetic images described by a recipe),
the oracle answers it (paying only for answers not yet in the ledger) and
the student is retrained (from the run's fixed init, as the papers do, or
fine-tuned) on every answer paid so far.

The loop owns resume, records, checkpoints, progress and the round log.
After every round the student state (and the strategy's `extra` pytree) and
the round records are checkpointed with orbax; the ledger holds every paid
answer with the round that paid for it, and each checkpoint records the
ledger's fingerprint (row count, digest of its keys). A resumed run first
proves the ledger still holds those rows (refusing, with nothing paid, a
ledger that is missing, empty, shorter or different), reports teacher calls
that were never committed (pending requests), restores the last
checkpointed round and recomputes the interrupted round's selection from
ledger rows of earlier rounds only, so it picks the same items and gets
them from the ledger for free: no query is ever paid twice.

References: Knowledge Distillation in Deep Networks under a Constrained Query
Budget; Active Mixup (Wang et al., CVPR 2020).
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import flax.linen as nn
import jax
import numpy as np

from jaxkd import health, multihost, resources, train
from jaxkd.fields import setting
from jaxkd.checkpoint import Checkpointer, write_json_atomic
from jaxkd.data import sources
from jaxkd.selection import SelectionInputs, Strategy, get_strategy
from jaxkd.selection.registry import LOOP_FIELDS, parse_options
from jaxkd.ledger import ledger_error
from jaxkd.teacher import TeacherOracle
from jaxkd.validation import JaxkdError, check_k, check_number


@dataclasses.dataclass(frozen=True)
class StopRule:
  """When the loop stops before `rounds` (the config's `loop.stop`); off by
  default. After round r < rounds it stops if

    success_r >= target                                  (target > 0), or
    U_conf[(s(q_r + k) - s(q_r)) / k] < min_gain_per_query  (gain > 0),

  where s(q) = a - b q^(-c) is `jaxkd.curves.fit_power_law` fitted to the
  (queries, success) records of rounds 0..r (at least three), k is
  `per_round` and U_conf the `confidence` percentile of that gain over a
  bootstrap of the rounds (`jaxkd.curves.bootstrap`, seeded by the run's
  seed). A curve that cannot be fitted never stops the run.
  """
  target: float = setting(0.0, "Stop after the first round whose success "
                          "rate reaches this (in [0, 1]; 0 = off).")
  min_gain_per_query: float = setting(
      0.0, "Stop when the learning curve's upper bound on the success the "
      "next round would gain per query is below this (0 = off; needs 3 "
      "rounds).")
  confidence: float = setting(0.9, "Confidence of that upper bound "
                              "(bootstrap over rounds), in (0, 1).")

  def validate(self, prefix: str = "") -> "StopRule":
    """One-line JaxkdError for a rule that cannot be applied."""
    check_number(f"{prefix}target", self.target, zero_ok=True)
    check_number(f"{prefix}min_gain_per_query", self.min_gain_per_query,
                 zero_ok=True)
    check_number(f"{prefix}confidence", self.confidence)
    if self.target > 1.0:
      raise JaxkdError(
          f"{prefix}target must be a success rate in [0, 1] (0 = off), got "
          f"{self.target}.")
    if self.confidence >= 1.0:
      raise JaxkdError(
          f"{prefix}confidence must be in (0, 1), got {self.confidence}.")
    return self


SCHEDULES = ("cosine", "constant", "step", "blocks")
AUGMENTATIONS = ("", "random_crop", "random_crop_flip")


@dataclasses.dataclass(frozen=True)
class StudentTraining:
  """How the student is trained each round (the config's `loop` section)."""
  train_steps: int = setting(300, "Student training steps per round.")
  batch_size: int = setting(64, "Student batch size.")
  optimizer: str = setting("adam", "Student optimizer (a registered name, "
                           "e.g. adam, sgd).")
  learning_rate: float = setting(3e-3, "Student peak learning rate.")
  epochs: float = setting(0.0, "Train each round for this many epochs of "
                          "its training set instead of train_steps (0: "
                          "train_steps).")
  schedule: str = setting("cosine", "Learning-rate schedule over a round: "
                          "cosine, constant, step (x0.1 at 50% and 75%) or "
                          "blocks (lr_blocks).")
  lr_blocks: Tuple[float, ...] = setting(
      (80, 60, 40, 20), "With schedule='blocks': relative block lengths; "
      "the rate is divided by 10 after each (Active Mixup's official "
      "80/60/40/20 epochs).")
  momentum: float = setting(0.9, "SGD momentum (optimizer='sgd').")
  weight_decay: float = setting(0.0, "Weight decay (SGD: added to the "
                                "gradient, as PyTorch's; adam: AdamW's).")
  augment: str = setting("", "Training augmentation: '' (none), "
                         "random_crop (zero-pad by crop_padding, cut a "
                         "random window of the image's size) or "
                         "random_crop_flip (and mirror half the images).")
  crop_padding: int = setting(4, "Padding of random_crop, in pixels.")
  track_best_test: bool = setting(
      False, "Also evaluate the test split after every epoch and record the "
      "best test accuracy and its epoch (how the papers' official code "
      "selects its result; the last epoch's stays the reported one).")
  loss: str = setting("kd", "Student loss: kd (soft targets), hard_ce, mix, "
                      "or an import path.")
  temperature: float = setting(4.0, "KD temperature T (> 0).")
  retrain: bool = setting(True, "Retrain the student from its fixed init "
                          "each round (False: fine-tune).")
  stop: StopRule = setting(factory=StopRule,
                           doc="When to stop before `rounds` (off by default).")

  def __post_init__(self):
    # dataclasses.asdict (ActiveSettings.loop_settings) turns `stop` into a
    # dict; take it back as the rule (a misspelt key is a TypeError here).
    if isinstance(self.stop, dict):
      object.__setattr__(self, "stop", StopRule(**self.stop))

  def validate(self, prefix: str = "") -> "StudentTraining":
    """One-line JaxkdError for a value that would fail after paying."""
    from jaxkd import losses
    if not isinstance(self.stop, StopRule):
      raise JaxkdError(f"{prefix}stop must be a StopRule, got "
                       f"{self.stop!r}.")
    self.stop.validate(f"{prefix}stop.")
    check_number(f"{prefix}train_steps", self.train_steps, integer=True)
    check_number(f"{prefix}epochs", self.epochs, zero_ok=True)
    check_number(f"{prefix}momentum", self.momentum, zero_ok=True)
    check_number(f"{prefix}weight_decay", self.weight_decay, zero_ok=True)
    check_number(f"{prefix}crop_padding", self.crop_padding, integer=True,
                 zero_ok=True)
    if self.momentum >= 1:
      raise JaxkdError(f"{prefix}momentum must be in [0, 1), got "
                       f"{self.momentum}.")
    if self.schedule not in SCHEDULES:
      raise JaxkdError(f"{prefix}schedule must be one of {SCHEDULES}, got "
                       f"{self.schedule!r}.")
    if not self.lr_blocks or any(not isinstance(b, (int, float))
                                 or isinstance(b, bool) or b <= 0
                                 for b in self.lr_blocks):
      raise JaxkdError(f"{prefix}lr_blocks must be positive numbers, got "
                       f"{self.lr_blocks!r}.")
    if self.augment not in AUGMENTATIONS:
      raise JaxkdError(f"{prefix}augment must be one of {AUGMENTATIONS}, "
                       f"got {self.augment!r}.")
    check_number(f"{prefix}batch_size", self.batch_size, integer=True)
    check_number(f"{prefix}learning_rate", self.learning_rate)
    check_number(f"{prefix}temperature", self.temperature)
    train.OPTIMIZERS.get(self.optimizer)
    losses.LOSSES.get(self.loss)
    return self


@dataclasses.dataclass(frozen=True)
class LoopSettings(StudentTraining):
  """Everything `run_loop` needs for one run: the student training plus the
  run's plan (no config reading below this)."""
  rounds: int = setting(5, "Selection rounds after round 0.")
  per_round: int = setting(40, "Teacher queries paid per round.")
  seed: int = setting(0, "Seed of this run (student init, shuffling, "
                      "selection keys).")
  strategy_options: Dict[str, Any] = setting(
      {}, "Keyword options of this run's strategy.")


def round_steps(settings: StudentTraining, n: int) -> int:
  """Training steps of a round on n examples: `train_steps`, or
  ceil(epochs n / batch_size) when `epochs` is set."""
  if settings.epochs:
    return max(1, math.ceil(settings.epochs * n / settings.batch_size))
  return settings.train_steps


def fit_student(model, input_shape, settings: LoopSettings, images, targets,
                labels, seed, mesh, loss, state=None, progress=False,
                desc="student", test=None, best=None):
  """`round_steps` steps on the given data, from the run's fixed
  initialisation (key `settings.seed`; `seed` only shuffles), or from `state`
  when fine-tuning. Every round starting from the same init keeps the curve
  about the data, not about init luck. The optimizer and loss are cached
  objects, so rounds of one length reuse one compiled step.

  With `settings.track_best_test` and `test` = (images, labels), the test
  accuracy after every epoch goes into the dict `best` as
  `best_test_accuracy` / `best_test_epoch` (the highest, first epoch on
  ties)."""
  steps = round_steps(settings, len(images))
  if state is None:
    state = train.create_train_state(
        model, jax.random.key(settings.seed), input_shape,
        train.student_optimizer(settings, total_steps=steps))
  loss_fn = train.make_loss_fn(loss, temperature=settings.temperature)
  augment = None
  if settings.augment:
    rng = np.random.default_rng([settings.seed, seed])
    flip = settings.augment == "random_crop_flip"

    def augment(x, t):
      del t
      x = train.random_crop(x, settings.crop_padding, rng)
      return train.random_flip(x, rng) if flip else x
  on_epoch = None
  if settings.track_best_test and test is not None and best is not None:
    best.clear()

    def on_epoch(st, epoch):
      acc = train.accuracy(model, st.variables, test[0], test[1], mesh=mesh)
      if acc > best.get("best_test_accuracy", -1.0):
        best.update(best_test_accuracy=acc, best_test_epoch=epoch)
  state, _ = train.fit(model, state, images, targets, labels,
                       steps=steps, batch_size=settings.batch_size,
                       seed=seed, loss_fn=loss_fn, mesh=mesh,
                       progress=progress, desc=desc, augment=augment,
                       on_epoch=on_epoch)
  return state


@dataclasses.dataclass
class RoundContext:
  """What a strategy's hooks see. `state` is the student after the previous
  round (None before round 0), `extra` the strategy's checkpointed pytree,
  `cache` its in-memory state for this run, `available` [|U|] bool marks
  candidates not paid in earlier rounds, `options` is the run's instance of
  the strategy's options dataclass (built once from
  `settings.strategy_options`)."""
  round: int
  student: nn.Module
  oracle: TeacherOracle
  initial_indices: np.ndarray
  candidate_indices: np.ndarray
  settings: LoopSettings
  initial_labels: Optional[np.ndarray] = None
  mesh: Any = None
  progress: bool = False
  state: Any = None
  extra: Any = None
  available: Optional[np.ndarray] = None
  cache: Dict[str, Any] = dataclasses.field(default_factory=dict)
  log: Callable[[str], None] = print
  options: Any = None
  job_config: Optional[Dict[str, Any]] = None  # kept in every checkpoint
  test: Optional[Tuple[Any, np.ndarray]] = None  # (images, labels)

  @property
  def input_shape(self):
    return self.oracle.pool_images.shape[1:]

  @property
  def candidate_images(self) -> np.ndarray:
    """[|U|, H, W, C] float32 candidates: an array, or for a pool on disk a
    `jaxkd.data.sources.SubsetSource` view read in batches."""
    return sources.take(self.oracle.pool_images, self.candidate_indices)

  def paid_answers(self, items) -> np.ndarray:
    """Ledger answers [k, C] of already-paid pool indices or ledger keys;
    never pays (`TeacherOracle.paid_answers`)."""
    return self.oracle.paid_answers(items)

  def fit(self, images, targets, labels=None, *, seed: int,
          loss: Optional[str] = None, state=None, desc: Optional[str] = None):
    """The standard student training of this run (see `fit_student`)."""
    if labels is None:
      labels = np.argmax(targets, -1)
    return fit_student(
        self.student, self.input_shape, self.settings, images, targets,
        labels, seed, self.mesh, loss or self.settings.loss, state=state,
        progress=self.progress, desc=desc or f"r{self.round}",
        test=self.test, best=self.cache.setdefault("best_test", {}))

  def predict(self, variables, images, return_embeddings=False):
    """Eval-mode logits (and embeddings) of `images` (an array or a
    source). In a multi-process run each process scores its share of the
    rows (`jaxkd.multihost.sharded_rows`) and all get every row."""
    fn = lambda rows: train.predict(
        self.student, variables, sources.take(images, rows), mesh=self.mesh,
        return_embeddings=return_embeddings)
    return multihost.sharded_rows(fn, len(images))


def run_loop(*, strategy: Union[str, Strategy], student: nn.Module,
             oracle: TeacherOracle, initial_indices: np.ndarray,
             candidate_indices: Optional[np.ndarray] = None,
             test_images: np.ndarray, test_labels: np.ndarray,
             teacher_accuracy: float, settings: LoopSettings, workdir: str,
             initial_labels: Optional[np.ndarray] = None,
             name: Optional[str] = None, mesh=None, progress: bool = True,
             log: Callable[[str], None] = print,
             config: Optional[Dict[str, Any]] = None) -> List[Dict[str, Any]]:
  """Runs (or resumes) one strategy's active distillation; returns records.

  Args:
    strategy: a registered name, an import path 'pkg.mod:attr', or a
      `Strategy`.
    student: the student Flax module.
    oracle: the teacher oracle over `oracle.pool_images`.
    initial_indices: [|L|] oracle-pool indices paid for in round 0.
    candidate_indices: [|U|] oracle-pool indices pool strategies choose from
      (empty for strategies with scope "initial").
    test_images, test_labels: held-out evaluation set.
    teacher_accuracy: the teacher's test accuracy (for the success rate).
    settings: LoopSettings.
    workdir: this run's directory (checkpoints/ and rounds.json live here).
    initial_labels: ground-truth labels of L if known (RAD's mistake rate,
      gap_diversity's baseline student).
    name: label of the records and log lines (default: the strategy name).
    config: the job's settings as JSON, kept in every checkpoint (the job's
      changed-config guard reads it when config.json is lost).

  Returns:
    One dict per round: round, queries (paid in rounds <= this one),
    student_accuracy, teacher_accuracy, success_rate, wall_time (s),
    selected, train_size, unpaid_teacher_forwards, the round's cost
    (`jaxkd.resources.round_costs`: select_seconds, pay_seconds,
    train_seconds, peak_rss_mib, peak_device_mib where reported); with
    `track_best_test`, best_test_accuracy and best_test_epoch; with the gain
    rule of
    `settings.stop` on, from the third round, predicted_gain_per_query and
    gain_per_query_upper; on the round where `settings.stop` ends the run
    (fewer than rounds + 1 records), stopped: the reason.

  Stopping: the rule (`StopRule`, `stop_reason`) is decided after round r's
  evaluation and written into round r's record before that record is
  checkpointed, and nothing of round r + 1 is selected or paid. A resumed
  run whose last checkpointed record has `stopped` runs no round. A kill
  between the decision and the checkpoint resumes at round r, which gets its
  answers from the ledger for free and retrains to the same record; the
  decision is a pure function of the (queries, success_rate) of rounds
  0..r, the rule, `per_round` and `seed` (the bootstrap's seed), so it is
  recomputed identically and the run stops again before paying round r + 1.
  """
  strat = get_strategy(strategy) if isinstance(strategy, str) else strategy
  name = name or (strategy if isinstance(strategy, str) else strat.name)
  initial_indices = np.asarray(initial_indices, np.int64)
  candidate_indices = np.asarray(
      [] if candidate_indices is None else candidate_indices, np.int64)
  # Bad options fail here, before round 0 pays anything.
  options = parse_options(strat, settings.strategy_options,
                          name=strat.name or name)
  _check_plan(settings, strat, initial_indices, candidate_indices, oracle)
  os.makedirs(workdir, exist_ok=True)
  ctx = RoundContext(round=0, student=student, oracle=oracle,
                     initial_indices=initial_indices,
                     candidate_indices=candidate_indices, settings=settings,
                     initial_labels=initial_labels, mesh=mesh,
                     progress=progress, log=log, options=options,
                     job_config=config, test=(test_images, test_labels))
  ctx.extra = strat.init_extra(ctx)
  ckpt = Checkpointer(os.path.join(workdir, "checkpoints"))
  try:
    records, start = _resume(ckpt, ctx, name, log)
    for req in oracle.pending():
      log(f"[{name}] {len(req.keys)} answers may have been paid twice: "
          f"request {req.request}, round {req.round} (killed between the "
          f"teacher call and the commit); re-sent as {req.request_id} when "
          "needed")
    if records and records[-1].get("stopped"):
      # The decision was checkpointed with its round: stopped stays stopped.
      log(f"[{name}] stopped after round {records[-1]['round']} "
          f"({records[-1]['stopped']}); no further rounds are run")
      start = settings.rounds + 1
    memory = resources.PeakMemory()
    for r in range(start, settings.rounds + 1):
      t0 = time.time()
      watch = resources.Stopwatch()
      memory.reset()
      forwards_before = oracle.unpaid_forwards
      ctx.round = r
      if r == 0:
        with watch("pay"):
          oracle.query(initial_indices, round=0)
        selected = len(initial_indices)
      else:
        with watch("select"):
          paid = oracle.queried_indices(max_round=r - 1)
          ctx.available = ~np.isin(candidate_indices, paid)
          inputs = _selection_inputs(strat, ctx)
          key = jax.random.fold_in(jax.random.key(settings.seed), r)
          query = strat.select(key, ctx, inputs, settings.per_round,
                               **dataclasses.asdict(options))
          _check_query_size(name, query, settings.per_round)
          jax.block_until_ready(query)
        with watch("pay"):
          selected = query.pay(ctx, round=r)
      ctx.cache.pop("best_test", None)
      with watch("train"):
        images, targets = strat.training_data(ctx, r)
        prev = None if settings.retrain else ctx.state
        ctx.state, ctx.extra = strat.train(
            ctx, images, targets, seed=settings.seed + 1000 * r, state=prev,
            extra=ctx.extra)
        jax.block_until_ready(ctx.state)
      rec = _finish_round(r, ctx, records, ckpt, workdir, name, test_images,
                          test_labels, teacher_accuracy, log, t0,
                          costs=resources.round_costs(watch, memory),
                          selected=selected, train_size=len(images),
                          unpaid_teacher_forwards=(oracle.unpaid_forwards
                                                   - forwards_before))
      if rec.get("stopped"):
        break
  finally:
    ckpt.close()
  return records


def _check_query_size(name, query, k):
  """A strategy's query must hold exactly `per_round` items: fewer or more
  would be paid as is and shift every later round."""
  if query is None or getattr(query, "indices", 0) is None:
    raise JaxkdError(f"strategy {name!r} returned None instead of {k} "
                     "indices; nothing of this round was paid.")
  size = getattr(query, "size", k)
  if size != k:
    raise JaxkdError(
        f"strategy {name!r} returned {size} items for per_round={k}; nothing "
        "of this round was paid.")


def _check_plan(settings, strat, initial, candidates, oracle):
  """Settings, budget and capacity, before anything is paid."""
  settings.validate("LoopSettings.")
  if settings.rounds < 0:
    raise JaxkdError(f"rounds must be >= 0, got {settings.rounds}.")
  if settings.rounds:
    capacity = strat.capacity(len(initial), len(candidates))
    what = "pool points" if strat.scope == "pool" else "candidate queries"
    check_k(settings.per_round, capacity, what)
    if settings.rounds * settings.per_round > capacity:
      raise JaxkdError(
          f"{settings.rounds} rounds x {settings.per_round} need more than the "
          f"{capacity} {what}.")
  need = len(initial) + settings.rounds * settings.per_round
  if need > oracle.budget:
    raise JaxkdError(
        f"{len(initial)} initial + {settings.rounds} rounds x "
        f"{settings.per_round} = {need} queries exceed the budget of "
        f"{oracle.budget}.")


def _template(ctx: RoundContext):
  state = train.create_train_state(
      ctx.student, jax.random.key(ctx.settings.seed), ctx.input_shape,
      train.student_optimizer(ctx.settings))
  return state if ctx.extra is None else {"student": state,
                                          "extra": ctx.extra}


def _resume(ckpt: Checkpointer, ctx: RoundContext, name, log):
  """Restores ctx.state/extra; returns (records, first round to run)."""
  if ckpt.latest_step() is None:
    return [], 0
  restored, meta = ckpt.restore(_template(ctx))
  _check_ledger(ctx.oracle, meta, ckpt, log, name)
  if ctx.extra is None:
    ctx.state = restored
  else:
    ctx.state, ctx.extra = restored["student"], restored["extra"]
  log(f"[{name}] resumed after round {meta['round']} "
      f"({ctx.oracle.spent} answers in the ledger)")
  return meta["records"], meta["round"] + 1


def _check_ledger(oracle: TeacherOracle, meta, ckpt, log, name):
  """The ledger must start with the rows the checkpoint saw (count and
  digest of keys in payment order); rows paid after it (a round killed
  before its checkpoint) are fine. Anything else would re-pay answers."""
  want = meta.get("ledger")
  where = f"checkpoint round {meta['round']} in {ckpt.directory}"
  if want is None:
    log(f"[{name}] {where} predates ledger fingerprints: ledger not checked")
    return
  rows, digest = int(want["rows"]), want["digest"]
  have = oracle.spent
  if have < rows:
    what = "is empty" if have == 0 else f"has {have} rows"
    raise ledger_error(oracle.ledger_path,
                       f"{what} but {where} recorded {rows} paid answers")
  have_fp = oracle.fingerprint(rows)
  if have_fp.digest != digest:
    raise ledger_error(oracle.ledger_path,
                       f"differs from the {rows} paid answers {where} "
                       "recorded (other keys or order)")
  if want.get("content") and have_fp.content != want["content"]:
    raise ledger_error(oracle.ledger_path,
                       f"holds other answers, recipes or rounds for the "
                       f"{rows} paid answers {where} recorded (their keys "
                       "match)")


def _finish_round(r, ctx, records, ckpt, workdir, name, test_images,
                  test_labels, teacher_accuracy, log, t0, costs=None,
                  **extra):
  """Evaluates, records, checkpoints (state + records) and logs one round."""
  acc = train.accuracy(ctx.student, ctx.state.variables, test_images,
                       test_labels, mesh=ctx.mesh)
  classes = ctx.oracle.num_classes or getattr(ctx.student, "num_classes", 0)
  if classes and classes >= 2:
    warning = health.chance_warning(acc, classes, f"[{name}] round {r}")
    if warning:
      log(warning)
  # Paid in rounds <= r: the ledger may already hold rows of a later round
  # that was interrupted before its checkpoint.
  queries = len(ctx.oracle.entries(max_round=r))
  rec = dict(round=r, queries=queries, student_accuracy=acc,
             teacher_accuracy=float(teacher_accuracy),
             success_rate=acc / max(float(teacher_accuracy), 1e-12),
             wall_time=time.time() - t0,
             **{k: int(v) for k, v in extra.items()}, **(costs or {}),
             **ctx.cache.get("best_test", {}))
  if r < ctx.settings.rounds:
    reason, fields = stop_reason(ctx.settings.stop, records + [rec],
                                 ctx.settings.per_round, ctx.settings.seed)
    rec.update(fields)
    if reason:
      rec["stopped"] = reason  # checkpointed with the round, below
  records.append(rec)
  saved = ctx.state if ctx.extra is None else {"student": ctx.state,
                                               "extra": ctx.extra}
  ckpt.save(r, jax.device_get(saved),
            {"round": r, "records": records,
             "ledger": ctx.oracle.fingerprint()._asdict(),
             **({} if ctx.job_config is None else
                {"config": ctx.job_config})})
  write_json_atomic(os.path.join(workdir, "rounds.json"), records)
  log(f"[{name}] round {r}: queries={rec['queries']} "
      f"student={acc:.4f} success={rec['success_rate']:.3f} "
      f"({rec['wall_time']:.1f}s)")
  if rec.get("stopped"):
    log(f"[{name}] stopping after round {r}: {rec['stopped']}; rounds "
        f"{r + 1}..{ctx.settings.rounds} are not run (nothing more is paid)")
  return rec


STOP_BOOTSTRAPS = 200  # resamples of the gain rule's upper bound


def stop_reason(rule: StopRule, records: List[Dict[str, Any]],
                per_round: int, seed: int = 0
                ) -> Tuple[Optional[str], Dict[str, float]]:
  """Whether `rule` stops the run after the last of `records`.

  Args:
    rule: the `StopRule`.
    records: round records of rounds 0..r (queries, success_rate).
    per_round: k, the queries the next round would pay.
    seed: seed of the bootstrap (equal inputs give equal answers).

  Returns:
    (reason, fields): reason is None to go on, else why to stop; fields is
    {} or, when the gain rule fitted a curve, predicted_gain_per_query
    (s(q_r + k) - s(q_r)) / k of the fit and gain_per_query_upper (its
    `rule.confidence` percentile over bootstrap refits on resampled rounds).
    A curve that cannot be fitted (fewer than three rounds with distinct
    positive counts, or no resample with three distinct rounds) never stops.
  """
  last = records[-1]
  if rule.target > 0 and last["success_rate"] >= rule.target:
    return (f"target {rule.target:g} reached (success "
            f"{last['success_rate']:.4f})"), {}
  if rule.min_gain_per_query <= 0:
    return None, {}
  gain = _gain_per_query(rule, records, per_round, seed)
  if gain is None:
    return None, {}
  point, upper = gain
  fields = {"predicted_gain_per_query": point, "gain_per_query_upper": upper}
  if upper < rule.min_gain_per_query:
    return (f"predicted gain per query {upper:.3g} (upper "
            f"{rule.confidence:g} bound; fit {point:.3g}) < "
            f"{rule.min_gain_per_query:g}"), fields
  return None, fields


def _gain_per_query(rule, records, per_round, seed):
  """(fit, upper bound) of the next round's success gain per query, or None
  when no curve can be fitted. With s = a - b q^(-c), the gain of k more
  queries is b (q^(-c) - (q + k)^(-c))."""
  q = np.asarray([r["queries"] for r in records], np.float64)
  s = np.asarray([r["success_rate"] for r in records], np.float64)
  # A round whose count is not above every earlier one (and 0) paid nothing
  # new: it adds no point to the curve.
  keep = q > np.maximum.accumulate(np.concatenate([[0.0], q]))[:-1]
  q, s = q[keep], s[keep]
  if len(q) < 3:
    return None
  q_now, q_next = q[-1], q[-1] + per_round
  # Imported here: scipy's optimizer costs ~0.8 s of start-up, and only a
  # run with the gain rule on needs it.
  from jaxkd import curves
  try:
    boot = curves.bootstrap([(q, s)], target=1.0, budget=q_next,
                            n_boot=STOP_BOOTSTRAPS, level=rule.confidence,
                            seed=seed, resample_rounds=True)
  except (JaxkdError, ValueError, FloatingPointError, np.linalg.LinAlgError):
    return None
  if not len(boot.params):
    return None
  gain = lambda a, b, c: b * (q_now ** -c - q_next ** -c) / per_round
  point = float(gain(*boot.fit.params))
  upper = float(np.percentile(gain(*boot.params.T), 100 * rule.confidence,
                              method="higher"))
  if not (np.isfinite(point) and np.isfinite(upper)):
    return None
  return point, upper


PIXELS_LIMIT = 1 << 30  # bytes of float32 [n, H W C] the `pixels` field may take


def _pixels(pool) -> np.ndarray:
  """[n, H W C] float32 flattened candidates, read in batches; refused above
  `PIXELS_LIMIT` bytes (a strategy on raw pixels at that scale should use
  embeddings)."""
  n, size = len(pool), int(np.prod(pool.shape[1:]))
  if n * size * 4 > PIXELS_LIMIT:
    raise JaxkdError(
        f"the 'pixels' feature of {n:,} candidates of {size} values would "
        f"take {n * size * 4 / 2**30:.1f} GiB (limit "
        f"{PIXELS_LIMIT / 2**30:.0f} GiB); use the strategy on embeddings, or "
        "a smaller pool. Nothing of this round was paid.")
  if not sources.is_source(pool):
    return pool.reshape(n, -1)
  out = np.empty((n, size), np.float32)
  at = 0
  for batch in sources.iter_batches(pool, 4096):
    out[at:at + len(batch)] = batch.reshape(len(batch), -1)
    at += len(batch)
  return out


def _selection_inputs(strat: Strategy, ctx: RoundContext) -> SelectionInputs:
  """The declared loop-computed fields, plus the strategy's `prepare`. A
  strategy whose inputs depend on its options (ADMM's `features`) narrows
  `needs` with `needs_for(options)`."""
  needs = frozenset(strat.needs_for(ctx.options)
                    if hasattr(strat, "needs_for") else strat.needs)
  fields: Dict[str, Any] = {"available": ctx.available}
  if needs & LOOP_FIELDS - {"available"}:
    pool = ctx.candidate_images
    if needs & {"probs", "logits", "embeddings"}:
      logits, emb = ctx.predict(ctx.state.variables, pool,
                                return_embeddings=True)
      fields.update(logits=logits, probs=np.asarray(jax.nn.softmax(logits)),
                    embeddings=emb)
    if "pixels" in needs:
      fields["pixels"] = _pixels(pool)
    if "teacher_probs" in needs:
      if "teacher_probs" not in ctx.cache:  # the teacher is fixed: one pass.
        ctx.cache["teacher_probs"] = ctx.oracle.peek(pool)
      fields["teacher_probs"] = ctx.cache["teacher_probs"]
  fields.update(strat.prepare(ctx))
  return SelectionInputs(**fields)
