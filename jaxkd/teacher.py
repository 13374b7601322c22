"""The teacher as a paid query oracle over a durable ledger.

Every teacher answer costs money, so `TeacherOracle`:
  * counts queries and refuses, before calling the teacher, any query that
    would exceed the budget (`BudgetExceededError`);
  * never pays twice for the same item: a pool index (or a synthetic image
    key such as a mixup pair and lambda) already in the ledger is answered
    from the ledger for free;
  * writes each answered batch to its `jaxkd.ledger.Ledger` (SQLite, one
    durable transaction per teacher batch) *before* returning it, so a
    killed run loses at most the batch in flight and a reopened ledger
    restores every answer and the spent budget exactly;
  * writes its intent ahead: before each teacher call the batch's keys are
    committed as *pending* under a request id; the answers and the clearing
    of that mark are one transaction. A run killed between the call and the
    commit leaves the pending rows: `pending()` reports them ("may have been
    paid twice") and the next query of those keys re-sends the same batch
    under the same request id, so a teacher service that honours idempotency
    keys charges it once;
  * proves itself: `fingerprint()` is (row count, running sha256 of the keys
    in payment order); the round loop stores it in every checkpoint and a
    resumed run refuses a ledger that is missing, empty, shorter or
    different instead of paying again;
  * optionally counts money (`price`, `money_budget`): each answer's cost is
    fixed at the intent, stored with its pending key and moved to its row at
    the commit. Money spent = committed + pending + abandoned
    (`jaxkd.ledger.Money`): everything the teacher may have charged, so a
    kill between the call and the commit never lets a resume overspend. A
    query whose new requests would cost more than the money left is refused
    before the teacher is called. A pending request re-sent to a teacher
    without `accepts_request_id` costs its price again (such a teacher
    charges every call); with request ids the re-send is free.

The store, its schema and the item recipes (keys, mixup rebuilds) live in
`jaxkd.ledger`; this module holds the policy: budget, batching, the teacher
call and the answer format.

The teacher is any `fn(images [B, H, W, C]) -> logits [B, C]`: a trained Flax
model (`flax_teacher_fn`) or a remote black box (`jaxkd.http_teacher`). A
teacher fn with the attribute `accepts_request_id = True` is called as
`fn(images, request_id=str)`; the id ('<ledger uuid>-<request>') is unique
across ledgers and repeated only when the same batch is re-sent. Answers
are stored as float32 probabilities (softmax of the logits), or as one-hot
vectors when the teacher only gives hard labels (`hard_labels=True`).
"""

from __future__ import annotations

import math
from typing import Callable, Iterable, List, Optional, Sequence, Union

import numpy as np

from jaxkd.data import sources
from jaxkd.ledger import (RESERVED_PREFIXES, Ledger, LedgerFingerprint,
                          PendingRequest, canonical_pair, fingerprint,
                          mixup_images, mixup_key, pool_key, round_lam)
from jaxkd.validation import (BudgetExceededError, JaxkdError, check_finite,
                              check_rank, is_int)

TeacherFn = Callable[[np.ndarray], np.ndarray]
PriceFn = Callable[[str, np.ndarray], float]

# Relative slack of the money check (sums of float prices).
_MONEY_TOL = 1e-9


def flax_teacher_fn(model, variables, *, batch_size: int = 1024,
                    mesh=None) -> TeacherFn:
  """Wraps a Flax model as a teacher fn (eval mode, batches sharded over
  `mesh`, default all devices). Its
  `teacher_id` (a hash of the variables, `teacher_training.model_id`) is
  what a ledger records of the teacher that paid it."""
  # Local imports: keep the oracle importable alone.
  from jaxkd import teacher_training, train

  def fn(images):
    return train.predict(model, variables, images, batch_size=batch_size,
                         mesh=mesh)
  fn.teacher_id = teacher_training.model_id(variables)
  return fn


def _price_label(price) -> Optional[str]:
  """The ledger's record of `price`: the constant, or the function's
  'module:qualname'; a one-line JaxkdError for anything else."""
  if price is None:
    return None
  if callable(price):
    return (f"fn:{getattr(price, '__module__', '?')}:"
            f"{getattr(price, '__qualname__', type(price).__qualname__)}")
  if (isinstance(price, bool)
      or not isinstance(price, (int, float, np.integer, np.floating))
      or not math.isfinite(price) or price < 0):
    raise JaxkdError(f"price must be a finite number >= 0 or a function "
                     f"price(key, image) -> float, got {price!r}.")
  return repr(float(price))


def _item_price(price_fn: PriceFn, key: str, image: np.ndarray) -> float:
  cost = price_fn(key, image)
  try:
    cost = float(cost)
  except (TypeError, ValueError):
    cost = float("nan")
  if not math.isfinite(cost) or cost < 0:
    raise JaxkdError(f"price({key!r}, image) returned {cost!r}; a price is a "
                     "finite number >= 0. Nothing was queried.")
  return cost


def _softmax(logits: np.ndarray) -> np.ndarray:
  z = logits - logits.max(axis=1, keepdims=True)
  e = np.exp(z)
  return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


class TeacherOracle:
  """Budgeted, ledgered access to a teacher over a fixed pool of images.

  Args:
    teacher_fn: images [B, H, W, C] float32 -> logits [B, C] (called with
      `request_id=` too when it has `accepts_request_id = True`).
    pool_images: [n, H, W, C] float32, the images pool indices refer to.
    budget: total number of paid teacher answers allowed (over all runs that
      share this ledger).
    ledger_path: SQLite file; created if missing, resumed if present (it must
      belong to the same pool and budget, and, when `teacher_fn.teacher_id`
      is set, as by `flax_teacher_fn`, to the same teacher: a ledger paid by
      other parameters is refused).
    hard_labels: store and return one-hot argmax answers only.
    batch_size: images per teacher call (and per ledger transaction).
    must_exist: the ledger must already exist and hold its metadata (a run
      directory with checkpoints): a missing or empty file is refused
      instead of being taken for a new ledger.
    price: money per answer: a constant float >= 0, or
      `price(key, image [H, W, C]) -> float >= 0` per item; None = unpriced
      (no cost recorded, the ledger as before). Recorded in the ledger's
      meta (a function by its module and name) and required on reopen.
    money_budget: total money allowed (over all runs that share this
      ledger); None = no money limit. Needs a price.

  Attributes:
    ledger: the `jaxkd.ledger.Ledger` that stores the paid answers.

  Accessors: counters are properties (`spent`, `remaining`, `budget`,
  `money_spent`, `money_remaining`, `unpaid_forwards`, `num_classes`);
  reads of ledger rows are methods, most with filters:
  `queried_indices(max_round=)`, `entries(kind=, max_round=)`,
  `paid_answers(items)`, `is_paid(keys)`, `fingerprint(rows=)`, `pending()`.
  """

  def __init__(self, teacher_fn: TeacherFn, pool_images: np.ndarray, *,
               budget: int, ledger_path: str, hard_labels: bool = False,
               batch_size: int = 256, must_exist: bool = False,
               price: Union[None, float, PriceFn] = None,
               money_budget: Optional[float] = None):
    check_rank("pool_images", pool_images, 4)
    if not sources.is_source(pool_images):  # a source checks as it reads
      check_finite("pool_images", pool_images)
    if not is_int(budget) or budget < 0:
      raise JaxkdError(f"budget must be a non-negative int, got {budget!r}.")
    if not is_int(batch_size) or batch_size <= 0:
      raise JaxkdError(f"batch_size must be a positive int, got "
                       f"{batch_size!r}.")
    price_label = _price_label(price)
    if money_budget is not None:
      if (isinstance(money_budget, bool)
          or not isinstance(money_budget, (int, float, np.integer,
                                           np.floating))
          or not math.isfinite(money_budget) or money_budget < 0):
        raise JaxkdError(f"money_budget must be a finite number >= 0, got "
                         f"{money_budget!r}.")
      if price is None:
        raise JaxkdError("money_budget needs a price (per query, or a "
                         "function of the item); none was given.")
    self.price = price
    self.money_budget = None if money_budget is None else float(money_budget)
    self.teacher_fn = teacher_fn
    self.pool_images = (pool_images if sources.is_source(pool_images)
                        else np.asarray(pool_images, np.float32))
    self.budget = int(budget)
    self.hard_labels = bool(hard_labels)
    self.batch_size = int(batch_size)
    self.unpaid_forwards = 0  # teacher forwards that were not paid queries
    self.ledger = Ledger(ledger_path,
                         pool=sources.fingerprint(self.pool_images),
                         budget=self.budget, hard_labels=self.hard_labels,
                         must_exist=must_exist, price=price_label,
                         money_budget=self.money_budget,
                         teacher=getattr(teacher_fn, "teacher_id", None))

  # ---------------------------------------------------- ledger accessors --

  @property
  def ledger_path(self) -> str:
    return self.ledger.ledger_path

  @property
  def ledger_id(self) -> str:
    return self.ledger.ledger_id

  @property
  def num_classes(self) -> Optional[int]:
    """Answer width C, None while the ledger is empty."""
    return self.ledger.num_classes

  @property
  def spent(self) -> int:
    """Number of paid teacher answers so far (persisted in the ledger)."""
    return len(self.ledger)

  @property
  def remaining(self) -> int:
    return self.budget - self.spent

  @property
  def money_spent(self) -> float:
    """Money the teacher may have charged: committed answers' cost plus
    pending (and abandoned) requests' (`jaxkd.ledger.Money.total`); 0 when
    unpriced."""
    return self.ledger.money().total

  @property
  def money_remaining(self) -> Optional[float]:
    """money_budget - money_spent; None without a money budget."""
    if self.money_budget is None:
      return None
    return self.money_budget - self.money_spent

  # ---------------------------------------------------------- item keys --

  def pool_keys(self, indices: Sequence[int]) -> List[str]:
    """Ledger keys of pool positions: 'p:<item key>', the item key being the
    position for an in-memory array and the source's stable key otherwise
    (a file's path in its folder, a record's index)."""
    if sources.is_source(self.pool_images):
      return ["p:" + self.pool_images.item_key(int(i)) for i in indices]
    return [pool_key(i) for i in indices]

  def pool_positions(self, keys: Sequence[str]) -> np.ndarray:
    """int64 pool positions of 'p:' ledger keys; a key this pool does not
    hold is a one-line JaxkdError (the ledger belongs to other data)."""
    items = [k[2:] for k in keys]
    if sources.is_source(self.pool_images):
      pos = self.pool_images.positions(items)
    else:
      n = len(self.pool_images)
      pos = np.asarray([int(k) if k.isdigit() and int(k) < n else -1
                        for k in items], np.int64)
    if pos.size and pos.min() < 0:
      bad = keys[int(np.flatnonzero(pos < 0)[0])]
      raise JaxkdError(f"ledger {self.ledger_path} holds {bad!r}, which is not "
                       "an item of this pool; nothing was paid.")
    return pos

  def queried_indices(self, max_round: Optional[int] = None) -> np.ndarray:
    """Sorted pool positions paid for (in rounds <= max_round if given),
    from the ledger's keys."""
    keys = self.ledger.paid_keys("p:", max_round)
    return np.sort(self.pool_positions(keys)) if keys else np.zeros(0, np.int64)

  def entry_images(self, rows: Sequence[dict]) -> List[Optional[np.ndarray]]:
    """The image each ledger row paid for, rebuilt from its key (a pool
    row: the item its key names, read in one batch) or its recipe (a mixup
    row: lam x_i + (1 - lam) x_j); None for a caller-made "image" row."""
    out: List[Optional[np.ndarray]] = [None] * len(rows)
    pool = [r for r, e in enumerate(rows) if e["kind"] == "pool"]
    if pool:
      pos = self.pool_positions([rows[r]["key"] for r in pool])
      images = sources.gather(self.pool_images, pos)
      for r, img in zip(pool, images):
        out[r] = img
    for r, e in enumerate(rows):
      if e["kind"] == "mixup":
        out[r] = mixup_images(self.pool_images, e["i"], e["j"], e["lam"])
    return out

  def entries(self, kind: Optional[str] = None,
              max_round: Optional[int] = None):
    """Ledger rows as dicts (key, kind, pool_index, i, j, lam, round, probs),
    in payment order."""
    return self.ledger.entries(kind=kind, max_round=max_round)

  def is_paid(self, keys: Iterable[str]) -> np.ndarray:
    """[k] bool: which ledger keys are paid."""
    return self.ledger.is_paid(keys)

  def paid_answers(self, items: Sequence[Union[int, str]]) -> np.ndarray:
    """Ledger answers [k, C] of already-paid items: pool indices (ints) or
    ledger keys (str). Never calls the teacher: raises JaxkdError if any is
    not in the ledger. Every "free" re-read of paid answers goes here."""
    keys = []
    for it in items:
      if isinstance(it, (str, np.str_)):
        keys.append(str(it))
      elif isinstance(it, (int, np.integer)) and not isinstance(it, bool):
        keys.append(self.pool_keys([it])[0])
      else:
        raise JaxkdError(f"paid_answers takes pool indices or ledger keys, "
                         f"got {it!r}.")
    missing = [k for k in keys if k not in self.ledger]
    if missing:
      raise JaxkdError(
          f"{len(missing)} of {len(keys)} answers (e.g. {missing[0]}) are not "
          f"in ledger {self.ledger_path}; paid_answers never pays.")
    return self.ledger.answers(keys)

  def fingerprint(self, rows: Optional[int] = None) -> LedgerFingerprint:
    """(rows, sha256 of the first `rows` keys in payment order); default all
    rows. The round loop stores it in each checkpoint and a resume checks
    that the ledger still starts with those rows."""
    return self.ledger.fingerprint(rows)

  def request_id(self, request: int) -> str:
    """The id a teacher sees for request number `request`: unique across
    ledgers, repeated only when the same batch is re-sent."""
    return self.ledger.request_id(request)

  def pending(self) -> List[PendingRequest]:
    """Teacher calls whose answers were never committed (see
    `jaxkd.ledger.Ledger.pending`); the next query that needs all of a
    request's keys re-sends them under the same request id."""
    return self.ledger.pending()

  def close(self):
    self.ledger.close()

  # ------------------------------------------------------------- queries --


  def query(self, indices: Sequence[int], *, round: int = 0) -> np.ndarray:
    """Teacher answers [k, C] for pool `indices` [k], paying only new ones."""
    idx = np.asarray(indices)
    if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
      raise JaxkdError(f"indices must be a 1-D integer array, got shape "
                       f"{idx.shape} dtype {idx.dtype}.")
    n = len(self.pool_images)
    if idx.size and (idx.min() < 0 or idx.max() >= n):
      raise JaxkdError(f"indices must lie in [0, {n}), got range "
                       f"[{idx.min()}, {idx.max()}].")
    keys = self.pool_keys(idx)
    meta = {k: dict(kind="pool", pool_index=int(i)) for k, i in zip(keys, idx)}
    return self._answer(keys, lambda sel: self.pool_images[idx[sel]], meta,
                        round)

  def query_mixup(self, pairs: np.ndarray, lams: np.ndarray, *,
                  round: int = 0) -> np.ndarray:
    """Answers for mixup images lam x_i + (1 - lam) x_j of pool images.

    pairs: [k, 2] int pool indices; lams: [k] in [0, 1]. The ledger stores
    the pair and lambda (not an image), so a resumed run never pays twice.
    """
    pairs = np.asarray(pairs)
    lams = np.asarray(lams, np.float64)
    if pairs.ndim != 2 or pairs.shape[1] != 2 or lams.shape != (len(pairs),):
      raise JaxkdError(f"pairs must be [k, 2] and lams [k], got {pairs.shape} "
                       f"and {lams.shape}.")
    if pairs.size and not np.issubdtype(pairs.dtype, np.integer):
      raise JaxkdError(f"pairs must be integer pool indices, got dtype "
                       f"{pairs.dtype}; nothing was queried.")
    if np.any((lams < 0) | (lams > 1)) or not np.all(np.isfinite(lams)):
      raise JaxkdError("mixup lambdas must lie in [0, 1].")
    n = len(self.pool_images)
    if pairs.size and (pairs.min() < 0 or pairs.max() >= n):
      raise JaxkdError(f"pair indices must lie in [0, {n}).")
    keys, meta = [], {}
    for (i, j), lam in zip(pairs, lams):
      a, b, l = canonical_pair(i, j, lam)  # the row stores i < j
      key = mixup_key(a, b, l)
      keys.append(key)
      meta[key] = dict(kind="mixup", i=a, j=b, lam=round_lam(l))

    def images(sel):  # as asked (i, j, lam), not canonicalised
      p = pairs[sel]
      return mixup_images(self.pool_images, p[:, 0], p[:, 1], lams[sel])

    return self._answer(keys, images, meta, round)

  def query_images(self, keys: Sequence[str], images: np.ndarray, *,
                   round: int = 0) -> np.ndarray:
    """Answers for caller-made images identified by unique string `keys`."""
    check_rank("images", images, 4)
    check_finite("images", images)
    if len(keys) != len(images):
      raise JaxkdError(f"{len(keys)} keys for {len(images)} images.")
    for k in keys:
      if not isinstance(k, (str, np.str_)) or not k:
        raise JaxkdError(f"query_images keys must be non-empty strings, got "
                         f"{k!r}.")
      if str(k).startswith(RESERVED_PREFIXES):
        raise JaxkdError(
            f"query_images key {str(k)!r} uses a prefix the oracle reserves "
            f"for pool points and mixup images ({', '.join(RESERVED_PREFIXES)})"
            "; it would collide with their answers.")
    keys = [str(k) for k in keys]
    meta = {k: dict(kind="image") for k in keys}
    images = np.asarray(images, np.float32)
    return self._answer(list(keys), lambda sel: images[sel], meta, round)

  def peek(self, images: np.ndarray) -> np.ndarray:
    """Teacher probabilities WITHOUT paying or recording: only for settings
    where running the teacher is cheap and labels are what cost (e.g. the
    lane-detection paper). Counted in `unpaid_forwards`. A source is read
    in batches of 4,096."""
    check_rank("images", images, 4)
    if not sources.is_source(images):
      check_finite("images", images)
      self.unpaid_forwards += len(images)
      logits = self.teacher_fn(np.asarray(images, np.float32))
      return self._probs(np.asarray(logits), len(images))
    out = []
    for batch in sources.iter_batches(images, 4096):
      self.unpaid_forwards += len(batch)
      out.append(self._probs(np.asarray(self.teacher_fn(batch)), len(batch)))
    return np.concatenate(out)

  def _probs(self, logits: np.ndarray, k: int) -> np.ndarray:
    if logits.ndim != 2 or logits.shape[0] != k:
      raise JaxkdError(f"teacher returned shape {logits.shape}, expected "
                       f"[{k}, C].")
    if logits.shape[1] < 2:
      raise JaxkdError(f"teacher returned {logits.shape[1]} class; a teacher "
                       "answers at least 2. Nothing was recorded.")
    if not np.all(np.isfinite(logits)):
      raise JaxkdError("teacher returned NaN or inf; nothing was recorded.")
    probs = _softmax(logits.astype(np.float64))
    if self.hard_labels:
      probs = np.eye(probs.shape[1], dtype=np.float32)[probs.argmax(1)]
    if self.num_classes is not None and probs.shape[1] != self.num_classes:
      raise JaxkdError(f"teacher returned {probs.shape[1]} classes, ledger has "
                       f"{self.num_classes}.")
    return probs

  def _answer(self, keys, make_images, meta, round):
    # Unique new keys, in first-seen order.
    new, seen = [], set()
    for pos, k in enumerate(keys):
      if k not in self.ledger and k not in seen:
        seen.add(k)
        new.append(pos)
    if len(new) > self.remaining:
      raise BudgetExceededError(
          f"Query needs {len(new)} new teacher answers but only "
          f"{self.remaining} of the budget of {self.budget} remain "
          f"({self.spent} spent). Nothing was queried.")
    # Pending requests this query needs whole are re-sent first, as the
    # same batch under the same request id; the rest go in new requests.
    todo = {keys[p]: p for p in new}
    calls = []
    if todo:
      for req in self.pending():
        if all(k in todo for k in req.keys):
          calls.append((req.request, [todo.pop(k) for k in req.keys]))
    rest = [p for p in new if keys[p] in todo]
    costs = self._check_money(keys, make_images, rest, calls)
    for start in range(0, len(rest), self.batch_size):
      calls.append((None, rest[start:start + self.batch_size]))
    resend_pays = not getattr(self.teacher_fn, "accepts_request_id", False)
    for request, sel in calls:
      sel = np.asarray(sel, np.int64)
      batch_keys = [keys[p] for p in sel]
      if request is None:
        request = self.ledger.intend(
            batch_keys, round,
            None if costs is None else [costs[p] for p in sel])
      elif resend_pays and self.price is not None:
        self.ledger.charge_again(request)
      images = np.asarray(make_images(sel), np.float32)
      probs = self._probs(np.asarray(self._call(images, request)), len(sel))
      self._commit(batch_keys, probs, meta, round, request)
    return self.ledger.answers(keys)

  def _check_money(self, keys, make_images, rest, resend):
    """Prices of the new requests' items (position -> cost; None when
    unpriced); refuses, before anything is sent, a query whose new money
    (new requests, plus re-sent pending ones when the teacher ignores
    request ids) exceeds the money left."""
    if self.price is None:
      return None
    if callable(self.price):
      images = np.asarray(make_images(np.asarray(rest, np.int64)), np.float32)
      costs = {p: _item_price(self.price, keys[p], img)
               for p, img in zip(rest, images)}
    else:
      costs = {p: float(self.price) for p in rest}
    need = math.fsum(costs.values())
    if resend and not getattr(self.teacher_fn, "accepts_request_id", False):
      need += math.fsum(self.ledger.money_of(req) for req, _ in resend)
    if self.money_budget is None:
      return costs
    money = self.ledger.money()
    left = self.money_budget - money.total
    if need > left + _MONEY_TOL * max(1.0, self.money_budget):
      raise BudgetExceededError(
          f"Query needs {need:g} more money for {len(rest)} new teacher "
          f"answers but only {left:g} of the money budget of "
          f"{self.money_budget:g} remain ({money.total:g} spent, of which "
          f"{money.pending + money.abandoned:g} by pending or lost requests)."
          " Nothing was queried.")
    return costs

  def _call(self, images, request):
    if getattr(self.teacher_fn, "accepts_request_id", False):
      return self.teacher_fn(images, request_id=self.request_id(request))
    return self.teacher_fn(images)


  def _commit(self, keys, probs, meta, round, request):
    # The one place answers enter the ledger (tests/loop_crash_worker.py
    # kills a run around it).
    self.ledger.commit(keys, probs, meta, round, request)
