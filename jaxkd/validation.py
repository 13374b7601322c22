"""Input checks for public boundaries.

Every public entry point of jaxkd validates its inputs on the host before it
hands them to jitted code, so bad input gives a clear exception instead of a
silent wrong answer. Checks that need concrete values (NaN/inf, counts) are
skipped when the argument is a tracer, i.e. when the caller already jitted the
public function itself; the jitted cores assume valid input.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import jax
import numpy as np


class JaxkdError(ValueError):
  """Base class for jaxkd input errors (a ValueError, so callers may catch either)."""


class BudgetExceededError(JaxkdError):
  """Raised when a teacher query would spend more than the remaining budget."""


def is_concrete(x: Any) -> bool:
  """True if `x` holds concrete values (not a tracer under jit/vmap/grad)."""
  return not isinstance(x, jax.core.Tracer)


def check_rank(name: str, x: Any, rank: int | Sequence[int]) -> None:
  """Raise if `x` does not have one of the given ranks."""
  ranks = (rank,) if isinstance(rank, int) else tuple(rank)
  if np.ndim(x) not in ranks:
    raise JaxkdError(
        f"{name} must have rank {' or '.join(map(str, ranks))}, got shape "
        f"{tuple(np.shape(x))}.")


def check_floating(name: str, x: Any) -> None:
  """Raise if `x` is not a floating-point array."""
  dtype = np.asarray(x).dtype if is_concrete(x) else x.dtype
  if not np.issubdtype(dtype, np.floating) and dtype != jax.numpy.bfloat16:
    raise JaxkdError(f"{name} must be a floating-point array, got dtype {dtype}.")


def check_finite(name: str, x: Any) -> None:
  """Raise if `x` contains NaN or inf (no-op for tracers, and for image
  sources, which check each batch as it is read)."""
  if not is_concrete(x) or getattr(x, "checks_on_read", False):
    return
  arr = np.asarray(x)
  if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
    bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
    raise JaxkdError(f"{name} contains {bad} NaN or inf value(s).")


def is_int(value: Any) -> bool:
  """A Python or NumPy integer, not a bool (True is an int in Python)."""
  return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def check_k(k: Any, available: int, what: str = "pool points") -> int:
  """Validate a selection size against the number of available candidates."""
  if not is_int(k):
    raise JaxkdError(f"k must be a Python int, got {k!r}.")
  k = int(k)
  if k <= 0:
    raise JaxkdError(f"k must be positive, got {k}.")
  if k > available:
    raise JaxkdError(
        f"k={k} is larger than the {available} available {what}.")
  return k


def check_features(name: str, x: Any, rank: int | Sequence[int] = 2) -> None:
  """Rank, floating dtype and finiteness of a feature array."""
  check_rank(name, x, rank)
  check_floating(name, x)
  check_finite(name, x)


def check_positive(name: str, value: float, *, strict: bool = True) -> None:
  """Raise unless value > 0 (strict) or value >= 0."""
  ok = value > 0 if strict else value >= 0
  if not ok or not np.isfinite(value):
    rel = "> 0" if strict else ">= 0"
    raise JaxkdError(f"{name} must be {rel}, got {value}.")


def check_number(name: str, value: Any, *, integer: bool = False,
                 zero_ok: bool = False) -> None:
  """`name` must be a finite number (an int when `integer`) > 0, or >= 0
  when `zero_ok`; a one-line JaxkdError otherwise."""
  ok_type = is_int(value) if integer else isinstance(
      value, (int, float, np.number))
  if not ok_type or not math.isfinite(value) or (
      value < 0 if zero_ok else value <= 0):
    kind = "an int" if integer else "a finite number"
    rel = ">= 0" if zero_ok else "> 0"
    raise JaxkdError(f"{name} must be {kind} {rel}, got {value!r}.")
