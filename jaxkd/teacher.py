"""The teacher as a paid query oracle with a durable SQLite ledger.

Every teacher answer costs money, so `TeacherOracle`:
  * counts queries and refuses, before calling the teacher, any query that
    would exceed the budget (`BudgetExceededError`);
  * never pays twice for the same item: a pool index (or a synthetic image
    key such as a mixup pair and lambda) already in the ledger is answered
    from the ledger for free;
  * writes each answered batch to SQLite (WAL mode, synchronous=FULL, one
    transaction per teacher batch) *before* returning it, so a killed run
    loses at most the batch in flight and a reopened ledger restores every
    answer and the spent budget exactly;
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
    different instead of paying again.

The teacher is any `fn(images [B, H, W, C]) -> logits [B, C]`: a trained Flax
model (`flax_teacher_fn`) or a remote black box. A teacher fn with the
attribute `accepts_request_id = True` is called as
`fn(images, request_id=str)`; the id ('<ledger uuid>-<request>') is unique
across ledgers and repeated only when the same batch is re-sent. Answers
are stored as float32 probabilities (softmax of the logits), or as one-hot
vectors when the teacher only gives hard labels (`hard_labels=True`).
"""

from __future__ import annotations

import hashlib
import os
import uuid

try:
  import fcntl
except ImportError:  # not POSIX: no cross-process lock
  fcntl = None
import sqlite3
import time
from typing import (Callable, Iterable, List, NamedTuple, Optional,
                    Sequence, Tuple, Union)

import numpy as np

from jaxkd.validation import (BudgetExceededError, JaxkdError, check_finite,
                              check_rank, is_int)

TeacherFn = Callable[[np.ndarray], np.ndarray]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS answers (
  key TEXT PRIMARY KEY,        -- 'p:<index>' or 'mix:<i>:<j>:<lam>' or custom
  kind TEXT NOT NULL,          -- 'pool' | 'mixup' | 'image'
  pool_index INTEGER,          -- pool index for kind 'pool'
  i INTEGER, j INTEGER, lam REAL,  -- mixup pair and lambda
  round INTEGER NOT NULL,      -- active-learning round that paid for it
  seq INTEGER NOT NULL,        -- order of payment
  batch INTEGER NOT NULL,      -- request number of the teacher call (one
                               -- transaction each)
  created REAL NOT NULL,
  probs BLOB NOT NULL          -- float32 [num_classes]
);
CREATE TABLE IF NOT EXISTS pending (  -- write-ahead intent of a teacher call
  key TEXT PRIMARY KEY,
  request INTEGER NOT NULL,    -- request number (the answers' batch)
  pos INTEGER NOT NULL,        -- position in the request's batch
  round INTEGER NOT NULL,
  created REAL NOT NULL
);
"""

# Key prefixes the oracle builds itself; `query_images` keys may not use them.
RESERVED_PREFIXES = ("p:", "mix:")


class LedgerFingerprint(NamedTuple):
  """`rows` paid answers whose keys, in payment order, hash to `digest`
  (sha256 hex over 'key\\n' per row)."""
  rows: int
  digest: str


class PendingRequest(NamedTuple):
  """A teacher call whose answers were never committed: `keys` in batch
  order, sent (or about to be sent) as `request_id` in `round`."""
  request: int
  request_id: str
  round: int
  keys: Tuple[str, ...]


def keys_digest(keys: Iterable[str]) -> str:
  """Running sha256 over ledger keys in payment order."""
  h = hashlib.sha256()
  for k in keys:
    h.update(k.encode() + b"\n")
  return h.hexdigest()


def pool_key(index: int) -> str:
  return f"p:{int(index)}"


def mixup_key(i: int, j: int, lam: float) -> str:
  """Ledger key of lam x_i + (1 - lam) x_j, canonical: (j, i, 1 - lam) is the
  same image and gets the same key."""
  if i == j:
    raise JaxkdError(f"mixup pair needs two distinct indices, got ({i}, {j}).")
  if i > j:
    i, j, lam = j, i, 1.0 - float(lam)
  return f"mix:{int(i)}:{int(j)}:{float(lam):.6f}"


def flax_teacher_fn(model, variables, *, batch_size: int = 1024) -> TeacherFn:
  """Wraps a Flax model as a teacher fn (eval mode, sharded batches)."""
  from jaxkd import train  # local import: keeps the oracle importable alone.

  def fn(images):
    return train.predict(model, variables, images, batch_size=batch_size)
  return fn


def _softmax(logits: np.ndarray) -> np.ndarray:
  z = logits - logits.max(axis=1, keepdims=True)
  e = np.exp(z)
  return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def fingerprint(images: np.ndarray) -> str:
  """A short hash of the pool, so a ledger is never reused on other data."""
  arr = np.ascontiguousarray(images, np.float32)
  h = hashlib.sha256(str(arr.shape).encode())
  h.update(arr.tobytes())
  return h.hexdigest()[:16]


def _lock_ledger(ledger_path: str):
  """Exclusive advisory lock on `<ledger>.lock` for this oracle's lifetime.

  Two processes sharing one ledger could both pay the teacher for the same
  point before either commits; the second oracle on a ledger is refused
  instead. The kernel drops the lock when its process dies (even by
  SIGKILL), so a killed run can always be resumed.
  """
  if fcntl is None:
    return None
  fh = open(ledger_path + ".lock", "a+")
  try:
    fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
  except OSError:
    fh.close()
    raise JaxkdError(
        f"Ledger {ledger_path} is in use by another TeacherOracle (another "
        "process, or an oracle in this one that was not closed). Close it or "
        "wait for that run to finish; sharing a ledger could pay twice.")
  return fh


RECOVERY = ("restore it from a backup, or rerun from round 0 in a new run "
            "directory (which pays the teacher again for the lost answers)")


def ledger_error(path: str, what: str) -> JaxkdError:
  """The one-line error for a ledger that cannot be trusted."""
  return JaxkdError(f"Ledger {path} {what}; nothing was paid. To recover, "
                    f"{RECOVERY}.")


class TeacherOracle:
  """Budgeted, ledgered access to a teacher over a fixed pool of images.

  Args:
    teacher_fn: images [B, H, W, C] float32 -> logits [B, C] (called with
      `request_id=` too when it has `accepts_request_id = True`).
    pool_images: [n, H, W, C] float32, the images pool indices refer to.
    budget: total number of paid teacher answers allowed (over all runs that
      share this ledger).
    ledger_path: SQLite file; created if missing, resumed if present (it must
      belong to the same pool and budget).
    hard_labels: store and return one-hot argmax answers only.
    batch_size: images per teacher call (and per ledger transaction).
    must_exist: the ledger must already exist and hold its metadata (a run
      directory with checkpoints): a missing or empty file is refused
      instead of being taken for a new ledger.

  Accessors: counters are properties (`spent`, `remaining`, `budget`,
  `unpaid_forwards`, `num_classes`); reads of ledger rows are methods, most
  with filters: `queried_indices(max_round=)`, `entries(kind=, max_round=)`,
  `paid_answers(items)`, `is_paid(keys)`, `fingerprint(rows=)`, `pending()`.
  """

  def __init__(self, teacher_fn: TeacherFn, pool_images: np.ndarray, *,
               budget: int, ledger_path: str, hard_labels: bool = False,
               batch_size: int = 256, must_exist: bool = False):
    check_rank("pool_images", pool_images, 4)
    check_finite("pool_images", pool_images)
    if not is_int(budget) or budget < 0:
      raise JaxkdError(f"budget must be a non-negative int, got {budget!r}.")
    if not is_int(batch_size) or batch_size <= 0:
      raise JaxkdError(f"batch_size must be a positive int, got "
                       f"{batch_size!r}.")
    self.teacher_fn = teacher_fn
    self.pool_images = np.asarray(pool_images, np.float32)
    self.budget = int(budget)
    self.hard_labels = bool(hard_labels)
    self.batch_size = int(batch_size)
    self.ledger_path = os.path.abspath(ledger_path)
    self.unpaid_forwards = 0  # teacher forwards that were not paid queries
    self.num_classes: Optional[int] = None
    self._db = self._lock = None
    if must_exist and not (os.path.exists(self.ledger_path)
                           and os.path.getsize(self.ledger_path) > 0):
      raise ledger_error(self.ledger_path,
                         "is missing or empty but this run has checkpoints: "
                         "it is not taken for a new ledger")
    os.makedirs(os.path.dirname(self.ledger_path), exist_ok=True)
    self._lock = _lock_ledger(self.ledger_path)
    try:
      self._open(must_exist)
    except sqlite3.DatabaseError as e:
      self.close()
      raise ledger_error(self.ledger_path, f"cannot be read ({e})") from None
    except BaseException:
      self.close()
      raise

  def _open(self, must_exist: bool):
    self._db = sqlite3.connect(self.ledger_path, isolation_level=None)
    if must_exist:
      tables = {r[0] for r in self._db.execute(
          "SELECT name FROM sqlite_master WHERE type='table'")}
      if "meta" not in tables or not self._db.execute(
          "SELECT COUNT(*) FROM meta").fetchone()[0]:
        raise ledger_error(self.ledger_path,
                           "is empty but this run has checkpoints: it is not "
                           "taken for a new ledger")
    self._db.execute("PRAGMA journal_mode=WAL")
    self._db.execute("PRAGMA synchronous=FULL")
    self._db.executescript(_SCHEMA)
    self._check_meta()
    self._cache = {}
    self._rounds = {}
    self._keys: List[str] = []  # payment order
    self._hash = hashlib.sha256()  # running digest of self._keys
    for key, rnd, blob in self._db.execute(
        "SELECT key, round, probs FROM answers ORDER BY seq"):
      self._remember(key, rnd, np.frombuffer(blob, np.float32).copy())
    if self._cache:
      self.num_classes = len(next(iter(self._cache.values())))
    self._seq = len(self._cache)
    self._request = self._db.execute(
        "SELECT MAX(COALESCE((SELECT MAX(batch) FROM answers), -1), "
        "COALESCE((SELECT MAX(request) FROM pending), -1)) + 1").fetchone()[0]

  def _remember(self, key, rnd, probs):
    self._cache[key] = probs
    self._rounds[key] = int(rnd)
    self._keys.append(key)
    self._hash.update(key.encode() + b"\n")

  # --------------------------------------------------------------- state --

  def _check_meta(self):
    want = {"pool": fingerprint(self.pool_images), "budget": str(self.budget),
            "hard_labels": str(int(self.hard_labels))}
    have = dict(self._db.execute("SELECT key, value FROM meta"))
    if have:
      for k, v in want.items():
        if have.get(k) != v:
          raise JaxkdError(
              f"Ledger {self.ledger_path} was written for {k}={have.get(k)!r},"
              f" not {v!r}: refusing to mix answers from different runs. Use "
              "a new run directory or the original settings.")
    if "ledger_id" not in have:  # unique prefix of this ledger's request ids
      want["ledger_id"] = uuid.uuid4().hex
      with self._db:
        self._db.execute("BEGIN IMMEDIATE")
        self._db.executemany("INSERT OR IGNORE INTO meta VALUES (?, ?)",
                             want.items())
      have = dict(self._db.execute("SELECT key, value FROM meta"))
    self.ledger_id = have["ledger_id"]

  @property
  def spent(self) -> int:
    """Number of paid teacher answers so far (persisted in the ledger)."""
    return len(self._cache)

  @property
  def remaining(self) -> int:
    return self.budget - self.spent

  def queried_indices(self, max_round: Optional[int] = None) -> np.ndarray:
    """Sorted pool indices paid for (in rounds <= max_round if given)."""
    out = [int(k[2:]) for k, r in self._rounds.items() if k.startswith("p:")
           and (max_round is None or r <= max_round)]
    return np.asarray(sorted(out), np.int64)

  def entries(self, kind: Optional[str] = None,
              max_round: Optional[int] = None):
    """Ledger rows as dicts (key, kind, pool_index, i, j, lam, round, probs),
    in payment order."""
    rows = self._db.execute(
        "SELECT key, kind, pool_index, i, j, lam, round, probs FROM answers "
        "ORDER BY seq").fetchall()
    out = []
    for key, knd, idx, i, j, lam, rnd, blob in rows:
      if (kind is None or knd == kind) and (max_round is None or rnd <= max_round):
        out.append(dict(key=key, kind=knd, pool_index=idx, i=i, j=j, lam=lam,
                        round=rnd, probs=np.frombuffer(blob, np.float32).copy()))
    return out

  def is_paid(self, keys: Iterable[str]) -> np.ndarray:
    """[k] bool: which ledger keys are paid."""
    return np.asarray([k in self._cache for k in keys], bool)

  def paid_answers(self, items: Sequence[Union[int, str]]) -> np.ndarray:
    """Ledger answers [k, C] of already-paid items: pool indices (ints) or
    ledger keys (str). Never calls the teacher: raises JaxkdError if any is
    not in the ledger. Every "free" re-read of paid answers goes here."""
    keys = []
    for it in items:
      if isinstance(it, (str, np.str_)):
        keys.append(str(it))
      elif isinstance(it, (int, np.integer)) and not isinstance(it, bool):
        keys.append(pool_key(it))
      else:
        raise JaxkdError(f"paid_answers takes pool indices or ledger keys, "
                         f"got {it!r}.")
    missing = [k for k in keys if k not in self._cache]
    if missing:
      raise JaxkdError(
          f"{len(missing)} of {len(keys)} answers (e.g. {missing[0]}) are not "
          f"in ledger {self.ledger_path}; paid_answers never pays.")
    if not keys:
      return np.zeros((0, self.num_classes or 0), np.float32)
    return np.stack([self._cache[k] for k in keys])

  def fingerprint(self, rows: Optional[int] = None) -> LedgerFingerprint:
    """(rows, sha256 of the first `rows` keys in payment order); default all
    rows. The round loop stores it in each checkpoint and a resume checks
    that the ledger still starts with those rows."""
    if rows is None:
      return LedgerFingerprint(len(self._keys), self._hash.hexdigest())
    rows = int(rows)
    if not 0 <= rows <= len(self._keys):
      raise JaxkdError(f"the ledger has {len(self._keys)} rows, not {rows}.")
    return LedgerFingerprint(rows, keys_digest(self._keys[:rows]))

  def request_id(self, request: int) -> str:
    """The id a teacher sees for request number `request`: unique across
    ledgers, repeated only when the same batch is re-sent."""
    return f"{self.ledger_id}-{int(request)}"

  def pending(self) -> List[PendingRequest]:
    """Teacher calls whose answers were never committed (the run was killed
    or the teacher failed between the intent and the commit): the teacher
    may have answered, and charged for, these keys. The next query that
    needs all of a request's keys re-sends them under the same request id."""
    out = {}
    for req, rnd, key in self._db.execute(
        "SELECT request, round, key FROM pending ORDER BY request, pos"):
      out.setdefault(req, (rnd, []))[1].append(key)
    return [PendingRequest(req, self.request_id(req), rnd, tuple(keys))
            for req, (rnd, keys) in out.items()]

  def close(self):
    if self._db is not None:
      self._db.close()
      self._db = None
    if self._lock is not None:
      self._lock.close()  # releases the flock
      self._lock = None

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
    keys = [pool_key(i) for i in idx]
    meta = {pool_key(i): dict(kind="pool", pool_index=int(i)) for i in idx}
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
    if np.any((lams < 0) | (lams > 1)) or not np.all(np.isfinite(lams)):
      raise JaxkdError("mixup lambdas must lie in [0, 1].")
    n = len(self.pool_images)
    if pairs.size and (pairs.min() < 0 or pairs.max() >= n):
      raise JaxkdError(f"pair indices must lie in [0, {n}).")
    keys, meta = [], {}
    for (i, j), lam in zip(pairs, lams):
      # x_ij(lam) == x_ji(1 - lam): store canonically with i < j.
      a, b, l = (i, j, lam) if i < j else (j, i, 1.0 - lam)
      key = mixup_key(a, b, l)
      keys.append(key)
      meta[key] = dict(kind="mixup", i=int(a), j=int(b), lam=float(round_lam(l)))

    def images(sel):
      p, l = pairs[sel], lams[sel].astype(np.float32)[:, None, None, None]
      return l * self.pool_images[p[:, 0]] + (1 - l) * self.pool_images[p[:, 1]]

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
    lane-detection paper). Counted in `unpaid_forwards`."""
    check_rank("images", images, 4)
    check_finite("images", images)
    self.unpaid_forwards += len(images)
    return self._probs(np.asarray(self.teacher_fn(np.asarray(images, np.float32))),
                       len(images))

  def _probs(self, logits: np.ndarray, k: int) -> np.ndarray:
    if logits.ndim != 2 or logits.shape[0] != k:
      raise JaxkdError(f"teacher returned shape {logits.shape}, expected [{k}, C].")
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
      if k not in self._cache and k not in seen:
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
    for start in range(0, len(rest), self.batch_size):
      calls.append((None, rest[start:start + self.batch_size]))
    for request, sel in calls:
      sel = np.asarray(sel, np.int64)
      batch_keys = [keys[p] for p in sel]
      if request is None:
        request = self._intend(batch_keys, round)
      images = np.asarray(make_images(sel), np.float32)
      probs = self._probs(np.asarray(self._call(images, request)), len(sel))
      self._commit(batch_keys, probs, meta, round, request)
    return np.stack([self._cache[k] for k in keys]) if keys else np.zeros(
        (0, self.num_classes or 0), np.float32)

  def _call(self, images, request):
    if getattr(self.teacher_fn, "accepts_request_id", False):
      return self.teacher_fn(images, request_id=self.request_id(request))
    return self.teacher_fn(images)

  def _intend(self, keys, round) -> int:
    """Commits `keys` as pending under a new request number (write-ahead
    intent) before the teacher is called; returns the number. Pending
    requests that share a key are dropped: they can no longer be re-sent
    whole."""
    request = self._request
    now = time.time()
    with self._db:
      self._db.execute("BEGIN IMMEDIATE")
      self._db.executemany(
          "DELETE FROM pending WHERE request IN (SELECT request FROM pending "
          "WHERE key = ?)", [(k,) for k in keys])
      self._db.executemany(
          "INSERT INTO pending VALUES (?, ?, ?, ?, ?)",
          [(k, request, pos, int(round), now) for pos, k in enumerate(keys)])
    self._request += 1
    return request

  def _commit(self, keys, probs, meta, round, request):
    """Answers of request `request` and the clearing of its pending mark,
    in one durable transaction."""
    now = time.time()
    rows = []
    for k, p in zip(keys, probs):
      m = meta[k]
      rows.append((k, m["kind"], m.get("pool_index"), m.get("i"), m.get("j"),
                   m.get("lam"), int(round), self._seq + len(rows), request,
                   now, np.asarray(p, np.float32).tobytes()))
    with self._db:  # one transaction per teacher batch, durable on commit
      self._db.execute("BEGIN IMMEDIATE")
      self._db.executemany(
          "INSERT INTO answers VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
      self._db.execute("DELETE FROM pending WHERE request = ?", (request,))
    # Only after the commit does anything outside the ledger see the answers.
    for k, p in zip(keys, probs):
      self._remember(k, round, np.asarray(p, np.float32))
    self.num_classes = probs.shape[1]
    self._seq += len(rows)


def round_lam(lam: float) -> float:
  return float(f"{float(lam):.6f}")


# The remote teacher fn (a paid API over HTTP), re-exported so that
# `jaxkd.teacher.http_teacher(url)` works as documented.
from jaxkd.http_teacher import http_teacher  # noqa: E402,F401
