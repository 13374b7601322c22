"""What a run paid for: the ledger's rows of one round as images + answers.

Small read-only helpers for notebooks and reports. They read a
`TeacherOracle`'s ledger (`oracle.entries`), never pay, and rebuild the
queried images with `TeacherOracle.entry_images`: pool rows as they are,
mixup rows from their recipe x_ij(lam) = lam x_i + (1 - lam) x_j (Active
Mixup, Wang et al., CVPR 2020).
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Sequence, Tuple

import numpy as np

from jaxkd.validation import JaxkdError, is_int


class PaidRows(NamedTuple):
  """Ledger rows of one round, in payment order (k rows).

  Attributes:
    images: [k, H, W, C] float32, the images the teacher answered.
    probs: [k, C] float32 teacher answers.
    kinds: [k] str, "pool" or "mixup".
    pool_indices: [k] int64 oracle-pool index (-1 for mixup rows).
    pairs: [k, 2] int64 mixup pair (i, j), i < j (-1 for pool rows).
    lams: [k] float64 mixup weight of x_i (NaN for pool rows).
  """
  images: np.ndarray
  probs: np.ndarray
  kinds: Tuple[str, ...]
  pool_indices: np.ndarray
  pairs: np.ndarray
  lams: np.ndarray


def paid_in_round(oracle, round: int, kind: Optional[str] = None
                  ) -> PaidRows:
  """The rows the oracle's ledger records as paid in `round` (never pays).

  Args:
    oracle: a `jaxkd.teacher.TeacherOracle` (its pool images and ledger).
    round: the round whose payments to return (0 = the initial set).
    kind: "pool" or "mixup" to keep one kind; None keeps both (caller-made
      "image" rows have no recipe and are always skipped).

  Returns:
    `PaidRows` in payment order (for Active Mixup: ascending pair
    confidence, the least confident first).

  Raises:
    JaxkdError: unknown kind or a negative round.
  """
  if kind not in (None, "pool", "mixup"):
    raise JaxkdError(f"kind must be None, 'pool' or 'mixup', got {kind!r}.")
  if not is_int(round) or round < 0:
    raise JaxkdError(f"round must be an int >= 0, got {round!r}.")
  pool = oracle.pool_images
  rows = [e for e in oracle.entries(kind=kind, max_round=round)
          if e["round"] == round and e["kind"] in ("pool", "mixup")]
  images = oracle.entry_images(rows)
  idx, pairs, lams = [], [], []
  for e in rows:
    if e["kind"] == "pool":
      idx.append(int(oracle.pool_positions([e["key"]])[0]))
      pairs.append((-1, -1))
      lams.append(np.nan)
    else:
      idx.append(-1)
      pairs.append((e["i"], e["j"]))
      lams.append(float(e["lam"]))
  c = oracle.num_classes or 0
  return PaidRows(
      images=(np.stack(images) if images else
              np.zeros((0,) + pool.shape[1:], np.float32)),
      probs=(np.stack([e["probs"] for e in rows]) if rows else
             np.zeros((0, c), np.float32)),
      kinds=tuple(e["kind"] for e in rows),
      pool_indices=np.asarray(idx, np.int64),
      pairs=np.asarray(pairs, np.int64).reshape(-1, 2),
      lams=np.asarray(lams, np.float64))


def top_answers(probs, k: int = 3) -> Tuple[np.ndarray, np.ndarray]:
  """The k most probable classes of each answer, most probable first.

  Args:
    probs: [n, C] probabilities.
    k: how many classes, 1 <= k <= C.

  Returns:
    (classes [n, k] int64, their probabilities [n, k]); ties go to the
    lower class index.
  """
  probs = np.asarray(probs)
  if probs.ndim != 2:
    raise JaxkdError(f"probs must be [n, C], got shape {probs.shape}.")
  if not 1 <= k <= probs.shape[1]:
    raise JaxkdError(f"k must lie in [1, {probs.shape[1]}], got {k}.")
  classes = np.argsort(-probs, axis=1, kind="stable")[:, :k]
  return classes, np.take_along_axis(probs, classes, axis=1)


def answer_captions(probs, k: int = 3,
                    class_names: Optional[Sequence[str]] = None,
                    sep: str = " ") -> list:
  """One caption per answer: its top-k classes with probabilities, e.g.
  '7 .91 1 .05 9 .02' (class names instead of indices when given)."""
  classes, p = top_answers(probs, k)
  name = (lambda c: str(c)) if class_names is None else (
      lambda c: str(class_names[c]))
  short = lambda v: f"{v:.2f}"[1:] if v < 0.995 else f"{v:.2f}"
  return [sep.join(f"{name(c)} {short(v)}" for c, v in zip(cs, ps))
          for cs, ps in zip(classes, p)]


class MixupPairStats(NamedTuple):
  """How a set of paid mixup pairs spreads over the real images.

  Attributes:
    num_pairs: m, the pairs counted.
    distinct_images: real images in at least one pair (of n).
    top10_share: share of the 2m pair slots held by the 10 most used images
      (10 / n when every image is used equally).
    max_uses: pairs the most used image is in (2m / n when equal).
    same_class: fraction of pairs whose two images have the same label.
    teacher_confidence: mean over pairs of the answer's largest
      probability (how sure the teacher was of the mixed images).
  """
  num_pairs: int
  distinct_images: int
  top10_share: float
  max_uses: int
  same_class: float
  teacher_confidence: float


def mixup_pair_stats(pairs, labels, probs) -> MixupPairStats:
  """Spread, class mix and teacher confidence of paid mixup pairs.

  Active Mixup (Wang et al., CVPR 2020) pays for the pairs of lowest
  student confidence; these statistics say how concentrated on a few real
  images and on which class pairs such a choice is, against random pairs.

  Args:
    pairs: [m, 2] int indices (i, j) into the n real images, m >= 1.
    labels: [n] int label of each real image (e.g. the teacher's argmax).
    probs: [m, C] the teacher's answers for the mixed images.

  Returns:
    `MixupPairStats`. O(m + n log n) (the images sorted by use).
  """
  pairs = np.asarray(pairs)
  labels = np.asarray(labels)
  probs = np.asarray(probs)
  if pairs.ndim != 2 or pairs.shape[1] != 2 or len(pairs) == 0:
    raise JaxkdError(f"pairs must be [m, 2] with m >= 1, got shape "
                     f"{pairs.shape}.")
  if labels.ndim != 1 or pairs.min() < 0 or pairs.max() >= len(labels):
    raise JaxkdError(f"pairs must index the {labels.shape} labels, got "
                     f"indices in [{pairs.min()}, {pairs.max()}].")
  if probs.ndim != 2 or len(probs) != len(pairs):
    raise JaxkdError(f"probs must be [{len(pairs)}, C], got shape "
                     f"{probs.shape}.")
  uses = np.bincount(pairs.ravel(), minlength=len(labels))
  top = np.sort(uses)[::-1]
  return MixupPairStats(
      num_pairs=len(pairs), distinct_images=int((uses > 0).sum()),
      top10_share=float(top[:10].sum() / uses.sum()),
      max_uses=int(top[0]),
      same_class=float(np.mean(labels[pairs[:, 0]] == labels[pairs[:, 1]])),
      teacher_confidence=float(probs.max(axis=1).mean()))
