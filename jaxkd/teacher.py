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
    answer and the spent budget exactly.

The teacher is any `fn(images [B, H, W, C]) -> logits [B, C]`: a trained Flax
model (`flax_teacher_fn`) or a remote black box. Answers are stored as
float32 probabilities (softmax of the logits), or as one-hot vectors when the
teacher only gives hard labels (`hard_labels=True`).
"""

from __future__ import annotations

import hashlib
import os

try:
  import fcntl
except ImportError:  # not POSIX: no cross-process lock
  fcntl = None
import sqlite3
import time
from typing import Callable, Iterable, Optional, Sequence

import numpy as np

from jaxkd.validation import (BudgetExceededError, JaxkdError, check_finite,
                              check_rank)

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
  batch INTEGER NOT NULL,      -- teacher batch (one transaction each)
  created REAL NOT NULL,
  probs BLOB NOT NULL          -- float32 [num_classes]
);
"""


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


class TeacherOracle:
  """Budgeted, ledgered access to a teacher over a fixed pool of images.

  Args:
    teacher_fn: images [B, H, W, C] float32 -> logits [B, C].
    pool_images: [n, H, W, C] float32, the images pool indices refer to.
    budget: total number of paid teacher answers allowed (over all runs that
      share this ledger).
    ledger_path: SQLite file; created if missing, resumed if present (it must
      belong to the same pool and budget).
    hard_labels: store and return one-hot argmax answers only.
    batch_size: images per teacher call (and per ledger transaction).
  """

  def __init__(self, teacher_fn: TeacherFn, pool_images: np.ndarray, *,
               budget: int, ledger_path: str, hard_labels: bool = False,
               batch_size: int = 256):
    check_rank("pool_images", pool_images, 4)
    check_finite("pool_images", pool_images)
    if not isinstance(budget, (int, np.integer)) or budget < 0:
      raise JaxkdError(f"budget must be a non-negative int, got {budget!r}.")
    if batch_size <= 0:
      raise JaxkdError(f"batch_size must be positive, got {batch_size}.")
    self.teacher_fn = teacher_fn
    self.pool_images = np.asarray(pool_images, np.float32)
    self.budget = int(budget)
    self.hard_labels = bool(hard_labels)
    self.batch_size = int(batch_size)
    self.ledger_path = os.path.abspath(ledger_path)
    self.unpaid_forwards = 0  # teacher forwards that were not paid queries
    os.makedirs(os.path.dirname(self.ledger_path), exist_ok=True)
    self._lock = _lock_ledger(self.ledger_path)
    self._db = sqlite3.connect(self.ledger_path, isolation_level=None)
    self._db.execute("PRAGMA journal_mode=WAL")
    self._db.execute("PRAGMA synchronous=FULL")
    self._db.executescript(_SCHEMA)
    self._check_meta()
    self._cache = {}
    self._rounds = {}
    self.num_classes: Optional[int] = None
    for key, rnd, blob in self._db.execute(
        "SELECT key, round, probs FROM answers ORDER BY seq"):
      self._cache[key] = np.frombuffer(blob, np.float32).copy()
      self._rounds[key] = rnd
    if self._cache:
      self.num_classes = len(next(iter(self._cache.values())))
    self._seq = len(self._cache)
    self._batch = self._db.execute(
        "SELECT COALESCE(MAX(batch) + 1, 0) FROM answers").fetchone()[0]

  # --------------------------------------------------------------- state --

  def _check_meta(self):
    want = {"pool": fingerprint(self.pool_images), "budget": str(self.budget),
            "hard_labels": str(int(self.hard_labels))}
    have = dict(self._db.execute("SELECT key, value FROM meta"))
    if not have:
      with self._db:
        self._db.execute("BEGIN")
        self._db.executemany("INSERT INTO meta VALUES (?, ?)", want.items())
      return
    for k, v in want.items():
      if have.get(k) != v:
        raise JaxkdError(
            f"Ledger {self.ledger_path} was written for {k}={have.get(k)!r}, "
            f"not {v!r}: refusing to mix answers from different runs. Use a "
            "new run directory or the original settings.")

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
    return np.asarray([k in self._cache for k in keys], bool)

  def close(self):
    self._db.close()
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
    new = np.asarray(new, np.int64)
    for start in range(0, len(new), self.batch_size):
      sel = new[start:start + self.batch_size]
      images = np.asarray(make_images(sel), np.float32)
      probs = self._probs(np.asarray(self.teacher_fn(images)), len(sel))
      self._commit([keys[p] for p in sel], probs, meta, round)
    return np.stack([self._cache[k] for k in keys]) if keys else np.zeros(
        (0, self.num_classes or 0), np.float32)

  def _commit(self, keys, probs, meta, round):
    now = time.time()
    rows = []
    for k, p in zip(keys, probs):
      m = meta[k]
      rows.append((k, m["kind"], m.get("pool_index"), m.get("i"), m.get("j"),
                   m.get("lam"), int(round), self._seq + len(rows), self._batch,
                   now, np.asarray(p, np.float32).tobytes()))
    with self._db:  # one transaction per teacher batch, durable on commit
      self._db.execute("BEGIN IMMEDIATE")
      self._db.executemany(
          "INSERT INTO answers VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    # Only after the commit does anything outside the ledger see the answers.
    for k, p in zip(keys, probs):
      self._cache[k] = np.asarray(p, np.float32)
      self._rounds[k] = int(round)
    self.num_classes = probs.shape[1]
    self._seq += len(rows)
    self._batch += 1


def round_lam(lam: float) -> float:
  return float(f"{float(lam):.6f}")
