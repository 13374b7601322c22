"""The durable SQLite ledger of paid teacher answers, and the item recipes.

`Ledger` is the store behind `jaxkd.teacher.TeacherOracle`; it decides
nothing about budgets or teachers. It

  * holds one row per paid answer (float32 probabilities, the round that
    paid, the payment order) in SQLite (WAL mode, synchronous=FULL, one
    transaction per teacher batch), and a reopened ledger restores every
    answer exactly;
  * writes intent ahead: `intend(keys, round)` commits a batch's keys as
    *pending* under a new request number before the teacher is called, and
    `commit(...)` stores the answers and clears that mark in one
    transaction. A run killed in between leaves the pending rows, reported
    by `pending()`;
  * proves itself: `fingerprint()` is (row count, running sha256 of the keys
    in payment order), which the round loop stores in every checkpoint;
  * belongs to one pool, budget and answer kind (the `meta` table), and to
    one process at a time (an exclusive lock on `<ledger>.lock`);
  * keeps money, when priced: each answer's `cost` and each pending key's
    cost (set by `intend`, moved to the answer by `commit`). `money()` is
    committed + pending + abandoned (pending money dropped by a later
    intent, or re-sent to a teacher that ignores request ids): everything
    the teacher may have charged, so a kill between the teacher call and
    the commit never hides money.

Item recipes (one place, used by the oracle, the loop and the inspection
helpers): a pool point is keyed 'p:<item key>', its position `pool_key(i)`
= 'p:<i>' in an in-memory pool and the source's stable key in a pool on
disk ('p:cat/01.png' in a folder; `TeacherOracle.pool_keys`), and training
reads the item its key names, never the `pool_index` column; a mixup image
x_ij(lam) = lam x_i + (1 - lam) x_j (Active Mixup, Wang et al., CVPR 2020)
is keyed `mixup_key(i, j, lam)` on its canonical pair (`canonical_pair`:
i < j, since x_ji(1 - lam) is the same image) and rebuilt from a row by
`mixup_images` / `entry_image`.
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
from typing import (Any, Dict, Iterable, List, NamedTuple, Optional,
                    Sequence, Tuple)

import numpy as np

from jaxkd.validation import JaxkdError

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
  probs BLOB NOT NULL,         -- float32 [num_classes]
  cost REAL                    -- money paid for it; NULL = unpriced
);
CREATE TABLE IF NOT EXISTS committed (  -- what each commit wrote, to prove it
  request INTEGER PRIMARY KEY, -- the answers' batch
  rows INTEGER NOT NULL,       -- answers it committed
  digest TEXT NOT NULL         -- sha256 of their contents (`row_bytes`)
);
CREATE TABLE IF NOT EXISTS pending (  -- write-ahead intent of a teacher call
  key TEXT PRIMARY KEY,
  request INTEGER NOT NULL,    -- request number (the answers' batch)
  pos INTEGER NOT NULL,        -- position in the request's batch
  round INTEGER NOT NULL,
  created REAL NOT NULL,
  cost REAL                    -- money it costs if sent; NULL = unpriced
);
"""

# Columns added after the first release: an older ledger gets them on open
# (`ALTER TABLE ... ADD COLUMN`); its rows keep NULL.
_ADDED_COLUMNS = (("answers", "cost", "REAL"), ("pending", "cost", "REAL"))

# Meta keys written only when given (a ledger without them is unpriced):
# once written, every reopen must give the same value.
_OPTIONAL_META = ("price", "money_budget", "teacher")

# Meta key of the money of pending requests that were dropped or re-sent to
# a teacher without idempotency keys: the teacher may have charged it.
_ABANDONED = "money_abandoned"

# Key prefixes the oracle builds itself; `query_images` keys may not use them.
RESERVED_PREFIXES = ("p:", "mix:")

RECOVERY = ("restore it from a backup, or rerun from round 0 in a new run "
            "directory (which pays the teacher again for the lost answers)")


class LedgerFingerprint(NamedTuple):
  """`rows` paid answers whose keys, in payment order, hash to `digest`
  (sha256 hex over 'key\\n' per row), and whose every byte that matters
  (key, kind, recipe, round, request, answer, cost: `row_bytes`) hashes to
  `content`."""
  rows: int
  digest: str
  content: str = ""


class PendingRequest(NamedTuple):
  """A teacher call whose answers were never committed: `keys` in batch
  order, sent (or about to be sent) as `request_id` in `round`."""
  request: int
  request_id: str
  round: int
  keys: Tuple[str, ...]


class Money(NamedTuple):
  """Money of a priced ledger: `committed` (sum of the answers' cost),
  `pending` (cost of pending requests: the teacher may have charged them)
  and `abandoned` (pending money dropped by a later intent or re-sent to a
  teacher without idempotency keys). `total` is what may have been paid."""
  committed: float
  pending: float
  abandoned: float

  @property
  def total(self) -> float:
    return self.committed + self.pending + self.abandoned


def ledger_error(path: str, what: str) -> JaxkdError:
  """The one-line error for a ledger that cannot be trusted."""
  return JaxkdError(f"Ledger {path} {what}; nothing was paid. To recover, "
                    f"{RECOVERY}.")


# ------------------------------------------------------------ recipes ---


_ROW_COLUMNS = "key, kind, i, j, lam, round, batch, probs, cost"


def row_bytes(key, kind, i, j, lam, rnd, batch, probs, cost) -> bytes:
  """The bytes of one ledger row that a proof covers (not `pool_index`,
  which training never reads, nor the time it was written)."""
  head = repr((str(key), str(kind), i, j, lam, int(rnd), int(batch),
               None if cost is None else float(cost)))
  return head.encode() + b"|" + bytes(probs) + b"\n"


def keys_digest(keys: Iterable[str]) -> str:
  """Running sha256 over ledger keys in payment order."""
  h = hashlib.sha256()
  for k in keys:
    h.update(k.encode() + b"\n")
  return h.hexdigest()


def fingerprint(images: np.ndarray) -> str:
  """A short hash of the pool, so a ledger is never reused on other data.

  Args:
    images: [n, H, W, C] pool images (hashed as float32, with their shape).

  Returns:
    16 hex digits of sha256.
  """
  arr = np.ascontiguousarray(images, np.float32)
  h = hashlib.sha256(str(arr.shape).encode())
  h.update(arr.tobytes())
  return h.hexdigest()[:16]


def pool_key(index: int) -> str:
  """Ledger key 'p:<index>' of pool point `index`."""
  return f"p:{int(index)}"


def round_lam(lam: float) -> float:
  """`lam` rounded to the 6 decimals a mixup key and row store."""
  return float(f"{float(lam):.6f}")


def canonical_pair(i: int, j: int, lam: float) -> Tuple[int, int, float]:
  """The canonical (i, j, lam), i < j, of the mixup image lam x_i +
  (1 - lam) x_j: (j, i, 1 - lam) is the same image.

  Raises:
    JaxkdError: if i == j.
  """
  if i == j:
    raise JaxkdError(f"mixup pair needs two distinct indices, got ({i}, {j}).")
  if i > j:
    return int(j), int(i), 1.0 - float(lam)
  return int(i), int(j), float(lam)


def mixup_key(i: int, j: int, lam: float) -> str:
  """Ledger key of lam x_i + (1 - lam) x_j, canonical: (j, i, 1 - lam) is the
  same image and gets the same key."""
  i, j, lam = canonical_pair(i, j, lam)
  return f"mix:{i}:{j}:{lam:.6f}"


def mixup_images(pool_images: np.ndarray, i: Any, j: Any,
                 lam: Any) -> np.ndarray:
  """Mixup images lam x_i + (1 - lam) x_j rebuilt from their recipe.

  The arithmetic is float32 (lam cast to float32 first), so a rebuilt image
  has the bytes of the image the teacher was sent.

  Args:
    pool_images: [n, H, W, C] float32 pool images.
    i: int index, or [k] int indices, of x_i.
    j: as `i`, of x_j.
    lam: float, or [k] floats: the weight of x_i.

  Returns:
    [H, W, C] float32 (scalar i, j, lam) or [k, H, W, C] float32.
  """
  lam = np.asarray(lam, np.float32)
  lam = lam.reshape(lam.shape + (1,) * (np.ndim(pool_images) - 1))
  return lam * pool_images[i] + (1 - lam) * pool_images[j]


def entry_image(pool_images: np.ndarray,
                entry: Dict[str, Any]) -> Optional[np.ndarray]:
  """The image a ledger row (`Ledger.entries` dict) paid for.

  Args:
    pool_images: [n, H, W, C] float32 pool images.
    entry: a row with kind, pool_index, i, j, lam.

  Returns:
    [H, W, C] float32: the pool image of a "pool" row, the mixup image of a
    "mixup" row; None for a caller-made "image" row (it has no recipe).
  """
  if entry["kind"] == "pool":
    return pool_images[entry["pool_index"]]
  if entry["kind"] == "mixup":
    return mixup_images(pool_images, entry["i"], entry["j"], entry["lam"])
  return None


# --------------------------------------------------------------- lock ---


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


def _entries(db, kind: Optional[str], max_round: Optional[int]):
  """The rows of `Ledger.entries` from an open SQLite connection."""
  rows = db.execute(
      "SELECT key, kind, pool_index, i, j, lam, round, probs, cost FROM "
      "answers ORDER BY seq").fetchall()
  out = []
  for key, knd, idx, i, j, lam, rnd, blob, cost in rows:
    if (kind is None or knd == kind) and (max_round is None
                                          or rnd <= max_round):
      out.append(dict(key=key, kind=knd, pool_index=idx, i=i, j=j, lam=lam,
                      round=rnd,
                      probs=np.frombuffer(blob, np.float32).copy(),
                      cost=cost))
  return out


def read_entries(ledger_path: str, kind: Optional[str] = None,
                 max_round: Optional[int] = None):
  """`Ledger.entries` of a ledger file, read-only, for reports.

  Opens the SQLite file in read-only mode without the oracle's lock, so it
  can read a ledger a running job is writing (SQLite's WAL gives it the
  last committed state); it never writes, never pays and checks no
  fingerprint. O(rows).

  Raises:
    JaxkdError: a missing or unreadable file.
  """
  path = os.path.abspath(ledger_path)
  if not os.path.isfile(path):
    raise JaxkdError(f"Ledger {path} does not exist.")
  try:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
      return _entries(db, kind, max_round)
    finally:
      db.close()
  except sqlite3.DatabaseError as e:
    raise JaxkdError(f"Ledger {path} cannot be read ({e}).") from None


# ------------------------------------------------------------- ledger ---


class Ledger:
  """The durable store of paid answers for one pool, budget and answer kind.

  Args:
    ledger_path: SQLite file; created if missing, resumed if present (its
      meta must match `pool`, `budget` and `hard_labels`).
    pool: `fingerprint` of the pool images the keys refer to.
    budget: the budget recorded with the ledger.
    hard_labels: whether the answers are one-hot.
    must_exist: the ledger must already exist and hold its metadata: a
      missing or empty file is refused instead of being taken for a new
      ledger.
    price: how answers are priced (a string: the constant or the price
      function's name), None = unpriced. Written to the meta when given
      (the first priced open) and then required to match on every reopen.
    money_budget: the money budget recorded with the ledger, as `price`.
    teacher: the identity of the teacher paying (`teacher_fn.teacher_id`,
      a hash of its parameters); recorded on the first open that knows it,
      and a different one on a later open is refused.

  Attributes:
    ledger_path: absolute path of the SQLite file.
    ledger_id: uuid hex of this ledger (the prefix of its request ids).
    num_classes: answer width C, None while the ledger is empty.

  Raises:
    JaxkdError: a missing or empty ledger with `must_exist`, an unreadable
      file, other meta, or a ledger held by another oracle.
  """

  def __init__(self, ledger_path: str, *, pool: str, budget: int,
               hard_labels: bool, must_exist: bool = False,
               price: Optional[str] = None,
               money_budget: Optional[float] = None,
               teacher: Optional[str] = None):
    self.ledger_path = os.path.abspath(ledger_path)
    self.num_classes: Optional[int] = None
    self._meta = {"pool": pool, "budget": str(int(budget)),
                  "hard_labels": str(int(bool(hard_labels)))}
    self._optional_meta = {
        "price": None if price is None else str(price),
        "money_budget": (None if money_budget is None
                         else repr(float(money_budget))),
        "teacher": None if teacher is None else str(teacher)}
    self._db = self._lock = None
    if must_exist and not (os.path.exists(self.ledger_path)
                           and os.path.getsize(self.ledger_path) > 0):
      raise ledger_error(self.ledger_path,
                         "is missing or empty but this run has checkpoints: "
                         "it is not taken for a new ledger")
    try:
      os.makedirs(os.path.dirname(self.ledger_path), exist_ok=True)
      self._lock = _lock_ledger(self.ledger_path)
    except OSError as e:
      raise JaxkdError(f"Ledger {self.ledger_path} cannot be created "
                       f"({e.strerror}: {e.filename}); give a writable "
                       "folder. Nothing was paid.") from None
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
    self._migrate()
    self._check_meta()
    self._cache = {}
    self._rounds = {}
    self._keys: List[str] = []  # payment order
    self._hash = hashlib.sha256()  # running digest of self._keys
    self._content = hashlib.sha256()  # running digest of every row
    by_request: Dict[int, Any] = {}
    for row in self._db.execute(
        f"SELECT {_ROW_COLUMNS} FROM answers ORDER BY seq"):
      key, rnd, batch, blob = row[0], row[5], row[6], row[7]
      data = row_bytes(*row)
      self._content.update(data)
      by_request.setdefault(batch, [0, hashlib.sha256()])
      by_request[batch][0] += 1
      by_request[batch][1].update(data)
      self._remember(key, rnd, np.frombuffer(blob, np.float32).copy())
    self._check_commits(by_request)
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

  def _check_commits(self, by_request):
    """Every commit's rows must still be there as written: a deleted or
    changed paid row is refused (it would be paid again, or train on other
    answers). A ledger from before this record gets it now, once."""
    have = {r: (n, d) for r, n, d in self._db.execute(
        "SELECT request, rows, digest FROM committed")}
    missing = {}
    for request, (n, h) in by_request.items():
      if request not in have:
        missing[request] = (n, h.hexdigest())
      elif have[request] != (n, h.hexdigest()):
        want_n = have[request][0]
        what = (f"holds {n} of the {want_n} answers request {request} paid"
                if n != want_n else
                f"holds other contents for the {n} answers request {request} "
                "paid")
        raise ledger_error(self.ledger_path,
                           f"{what} (rows deleted or changed after they were "
                           "committed); they are not paid again")
    gone = sorted(set(have) - set(by_request))
    if gone:
      raise ledger_error(self.ledger_path,
                         f"has lost all {have[gone[0]][0]} answers request "
                         f"{gone[0]} paid (rows deleted after they were "
                         "committed); they are not paid again")
    if missing and not have:  # an older ledger: record its commits once
      with self._db:
        self._db.execute("BEGIN IMMEDIATE")
        self._db.executemany("INSERT INTO committed VALUES (?, ?, ?)",
                             [(r, n, d) for r, (n, d) in missing.items()])
    elif missing:
      request = min(missing)
      raise ledger_error(self.ledger_path,
                         f"holds answers of request {request} that no commit "
                         "recorded (rows added after the fact)")

  def _migrate(self):
    """Adds the columns of `_ADDED_COLUMNS` an older ledger lacks (its rows
    keep NULL); the keys, and so the fingerprint, are untouched."""
    missing = []
    for table, column, kind in _ADDED_COLUMNS:
      have = {r[1] for r in self._db.execute(f"PRAGMA table_info({table})")}
      if column not in have:
        missing.append(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
    if missing:
      with self._db:
        self._db.execute("BEGIN IMMEDIATE")
        for sql in missing:
          self._db.execute(sql)

  def _check_meta(self):
    want = dict(self._meta)
    have = dict(self._db.execute("SELECT key, value FROM meta"))
    if have:
      for k, v in want.items():
        if have.get(k) != v:
          raise JaxkdError(
              f"Ledger {self.ledger_path} was written for {k}={have.get(k)!r},"
              f" not {v!r}: refusing to mix answers from different runs. Use "
              "a new run directory or the original settings.")
    for k in _OPTIONAL_META:  # only when given, or once recorded
      v = self._optional_meta[k]
      if k == "teacher":  # checked when known on both sides
        if v is not None and have.get(k, v) != v:
          raise ledger_error(
              self.ledger_path,
              f"holds the answers of teacher {have[k]}, but this run's "
              f"teacher is {v} (other parameters); a resume must use the "
              "teacher that paid them")
      elif k in have and have[k] != v:
        raise JaxkdError(
            f"Ledger {self.ledger_path} was written for {k}={have[k]!r}, not "
            f"{v!r}: refusing to mix money from different budgets or prices. "
            "Use a new run directory or the original settings.")
      if v is not None and k not in have:
        want[k] = v
    if any(k not in have for k in want) or "ledger_id" not in have:
      if "ledger_id" not in have:  # unique prefix of this ledger's request ids
        want["ledger_id"] = uuid.uuid4().hex
      with self._db:
        self._db.execute("BEGIN IMMEDIATE")
        self._db.executemany("INSERT OR IGNORE INTO meta VALUES (?, ?)",
                             want.items())
      have = dict(self._db.execute("SELECT key, value FROM meta"))
    self.ledger_id = have["ledger_id"]

  # --------------------------------------------------------------- reads --

  def __len__(self) -> int:
    """Number of paid answers."""
    return len(self._cache)

  def __contains__(self, key: str) -> bool:
    return key in self._cache

  def answers(self, keys: Sequence[str]) -> np.ndarray:
    """[k, C] float32 answers of paid `keys` (KeyError if one is unpaid);
    [0, C] (C = 0 while empty) for no keys."""
    if not keys:
      return np.zeros((0, self.num_classes or 0), np.float32)
    return np.stack([self._cache[k] for k in keys])

  def paid_keys(self, prefix: str = "",
                max_round: Optional[int] = None) -> List[str]:
    """Paid keys starting with `prefix` (in rounds <= max_round if given),
    in payment order."""
    return [k for k, r in self._rounds.items() if k.startswith(prefix)
            and (max_round is None or r <= max_round)]

  def queried_indices(self, max_round: Optional[int] = None) -> np.ndarray:
    """Sorted pool indices paid for (in rounds <= max_round if given)."""
    out = [int(k[2:]) for k, r in self._rounds.items() if k.startswith("p:")
           and (max_round is None or r <= max_round)]
    return np.asarray(sorted(out), np.int64)

  def entries(self, kind: Optional[str] = None,
              max_round: Optional[int] = None):
    """Ledger rows as dicts (key, kind, pool_index, i, j, lam, round, probs,
    cost: None when unpriced), in payment order."""
    return _entries(self._db, kind, max_round)

  def money(self) -> Money:
    """(committed, pending, abandoned) money; unpriced rows count 0."""
    committed = self._db.execute(
        "SELECT COALESCE(SUM(cost), 0) FROM answers").fetchone()[0]
    pending = self._db.execute(
        "SELECT COALESCE(SUM(cost), 0) FROM pending").fetchone()[0]
    row = self._db.execute("SELECT value FROM meta WHERE key = ?",
                           (_ABANDONED,)).fetchone()
    return Money(float(committed), float(pending),
                 float(row[0]) if row else 0.0)

  def is_paid(self, keys: Iterable[str]) -> np.ndarray:
    """[k] bool: which ledger keys are paid."""
    return np.asarray([k in self._cache for k in keys], bool)

  def fingerprint(self, rows: Optional[int] = None) -> LedgerFingerprint:
    """(rows, sha256 of the first `rows` keys in payment order); default all
    rows. The round loop stores it in each checkpoint and a resume checks
    that the ledger still starts with those rows."""
    if rows is None:
      return LedgerFingerprint(len(self._keys), self._hash.hexdigest(),
                               self._content.hexdigest())
    rows = int(rows)
    if not 0 <= rows <= len(self._keys):
      raise JaxkdError(f"the ledger has {len(self._keys)} rows, not {rows}.")
    content = hashlib.sha256()
    for row in self._db.execute(
        f"SELECT {_ROW_COLUMNS} FROM answers ORDER BY seq LIMIT ?", (rows,)):
      content.update(row_bytes(*row))
    return LedgerFingerprint(rows, keys_digest(self._keys[:rows]),
                             content.hexdigest())

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

  # -------------------------------------------------------------- writes --

  def intend(self, keys: Sequence[str], round: int,
             costs: Optional[Sequence[float]] = None) -> int:
    """Commits `keys` as pending under a new request number (write-ahead
    intent) before the teacher is called; returns the number. Pending
    requests that share a key are dropped: they can no longer be re-sent
    whole (their money, which the teacher may have charged, is kept as
    abandoned). `costs` [k]: each key's price (None: unpriced)."""
    request = self._request
    now = time.time()
    costs = [None] * len(keys) if costs is None else [float(c) for c in costs]
    with self._db:
      self._db.execute("BEGIN IMMEDIATE")
      dropped = sorted({r[0] for k in keys for r in self._db.execute(
          "SELECT request FROM pending WHERE key = ?", (k,))})
      if dropped:
        marks = ",".join("?" * len(dropped))
        lost = self._db.execute(
            f"SELECT SUM(cost) FROM pending WHERE request IN ({marks})",
            dropped).fetchone()[0]
        self._abandon(lost)
        self._db.execute(f"DELETE FROM pending WHERE request IN ({marks})",
                         dropped)
      self._db.executemany(
          "INSERT INTO pending (key, request, pos, round, created, cost) "
          "VALUES (?, ?, ?, ?, ?, ?)",
          [(k, request, pos, int(round), now, c)
           for pos, (k, c) in enumerate(zip(keys, costs))])
    self._request += 1
    return request

  def money_of(self, request: int) -> float:
    """The pending money of `request` (0 when unpriced or not pending)."""
    return float(self._db.execute(
        "SELECT COALESCE(SUM(cost), 0) FROM pending WHERE request = ?",
        (int(request),)).fetchone()[0])

  def charge_again(self, request: int) -> float:
    """Before pending `request` is re-sent to a teacher that ignores request
    ids (so it charges again): its pending money is kept as abandoned too,
    durably. Returns that money (0 when unpriced)."""
    with self._db:
      self._db.execute("BEGIN IMMEDIATE")
      lost = self._db.execute("SELECT SUM(cost) FROM pending WHERE request = ?",
                              (int(request),)).fetchone()[0]
      self._abandon(lost)
    return float(lost or 0.0)

  def _abandon(self, money: Optional[float]):
    # Inside the caller's transaction; nothing is written when unpriced.
    if not money:
      return
    row = self._db.execute("SELECT value FROM meta WHERE key = ?",
                           (_ABANDONED,)).fetchone()
    total = (float(row[0]) if row else 0.0) + float(money)
    self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                     (_ABANDONED, repr(total)))

  def commit(self, keys: Sequence[str], probs: np.ndarray,
             meta: Dict[str, Dict[str, Any]], round: int, request: int):
    """Answers of request `request` and the clearing of its pending mark,
    in one durable transaction.

    Args:
      keys: [k] ledger keys, in batch order.
      probs: [k, C] float32 answers.
      meta: key -> row fields (kind, and pool_index or i, j, lam).
      round: the round that paid.
      request: the request number `intend` returned.

    Each answer's cost is its pending key's cost, moved in the same
    transaction (NULL when unpriced).
    """
    now = time.time()
    rows = []
    for k, p in zip(keys, probs):
      m = meta[k]
      rows.append((k, m["kind"], m.get("pool_index"), m.get("i"), m.get("j"),
                   m.get("lam"), int(round), self._seq + len(rows), request,
                   now, np.asarray(p, np.float32).tobytes(), request, k))
    with self._db:  # one transaction per teacher batch, durable on commit
      self._db.execute("BEGIN IMMEDIATE")
      self._db.executemany(
          "INSERT INTO answers (key, kind, pool_index, i, j, lam, round, seq, "
          "batch, created, probs, cost) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, "
          "?, (SELECT cost FROM pending WHERE request = ? AND key = ?))", rows)
      self._db.execute("DELETE FROM pending WHERE request = ?", (request,))
      written = self._db.execute(
          f"SELECT {_ROW_COLUMNS} FROM answers WHERE batch = ? ORDER BY seq",
          (request,)).fetchall()
      digest = hashlib.sha256()
      for row in written:
        digest.update(row_bytes(*row))
      self._db.execute("INSERT INTO committed VALUES (?, ?, ?)",
                       (request, len(written), digest.hexdigest()))
    for row in written:
      self._content.update(row_bytes(*row))
    # Only after the commit does anything outside the ledger see the answers.
    for k, p in zip(keys, probs):
      self._remember(k, round, np.asarray(p, np.float32))
    self.num_classes = probs.shape[1]
    self._seq += len(rows)

  def close(self):
    """Closes the database and releases the lock (idempotent)."""
    if self._db is not None:
      self._db.close()
      self._db = None
    if self._lock is not None:
      self._lock.close()  # releases the flock
      self._lock = None
