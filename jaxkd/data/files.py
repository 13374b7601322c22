"""File helpers shared by the dataset readers of `jaxkd.data`.

Reading bytes, gunzipping and md5 checks raise `JaxkdError` naming the file
and the problem, so a broken download never turns into a silently wrong
array. The per-format readers are `jaxkd.data.idx` (IDX files),
`jaxkd.data.cifar` (CIFAR-10 python batches), `jaxkd.data.csv` (the
mnist5k CSV) and `jaxkd.data.npz` (own `.npz` files).
"""

from __future__ import annotations

import hashlib
import os
import warnings
import zlib
from typing import Callable, Optional, Union

from jaxkd.validation import JaxkdError

# verify_md5 values: False / None (skip), True / "raise", or "warn".
Md5Mode = Union[bool, str]


def read_bytes(path: str) -> bytes:
  """The contents of `path`; raises for a missing or unreadable file."""
  if not os.path.isfile(path):
    raise JaxkdError(f"{path}: file not found.")
  try:
    with open(path, "rb") as f:
      return f.read()
  except OSError as e:
    raise JaxkdError(f"{path}: cannot read ({e}).") from e


def gunzip(path: str, data: bytes, max_bytes: Optional[int] = None
           ) -> bytes:
  """gzip-decompresses `data` read from `path` (named in errors), never
  producing more than `max_bytes` (a small file that would expand beyond
  what its format can hold is refused without being expanded)."""
  if max_bytes is None:
    max_bytes = memory_budget()
  try:
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    out = d.decompress(data, max_bytes + 1)
    while d.eof and d.unused_data and len(out) <= max_bytes:  # members
      rest = d.unused_data
      d = zlib.decompressobj(16 + zlib.MAX_WBITS)
      out += d.decompress(rest, max_bytes + 1 - len(out))
    if len(out) > max_bytes:
      raise JaxkdError(
          f"{path}: decompresses to more than {max_bytes} bytes, more than "
          "this file can hold; refused without expanding it.")
    if not d.eof:
      raise EOFError("compressed data ended before the end-of-stream marker")
    return out
  except EOFError as e:
    raise JaxkdError(
        f"{path}: truncated gzip file ({len(data)} bytes; {e}).") from e
  except (OSError, zlib.error) as e:  # gzip.BadGzipFile is an OSError.
    raise JaxkdError(f"{path}: corrupt gzip data ({e}).") from e


def memory_budget() -> int:
  """Bytes one input array may take: half the machine's memory."""
  try:
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2
  except (ValueError, OSError, AttributeError):
    return 8 << 30


def check_inside(path: str, root: Optional[str], spec: str) -> None:
  """A file found under `root` (a relative name resolved in data_dir) must
  not leave it through a symlink; an absolute `spec` is the user's own
  choice and is not checked."""
  if not root or os.path.isabs(spec):
    return
  real, base = os.path.realpath(path), os.path.realpath(root)
  if os.path.commonpath([real, base]) != base:
    raise JaxkdError(
        f"{path} resolves to {real}, outside data_dir {root} (a symlink?); "
        "give its absolute path to use it anyway.")


def md5_mode(verify_md5: Md5Mode) -> Optional[str]:
  """None (skip), "raise" or "warn" for a `verify_md5` argument."""
  if verify_md5 in (False, None):
    return None
  if verify_md5 is True or verify_md5 == "raise":
    return "raise"
  if verify_md5 == "warn":
    return "warn"
  raise JaxkdError(
      f"verify_md5 must be False, True, 'raise' or 'warn', got {verify_md5!r}.")


def check_md5(path: str, data: bytes, expected: str, mode: str) -> None:
  """Compares md5(data) with `expected`; raises or warns (mode) on mismatch."""
  got = hashlib.md5(data).hexdigest()
  if got != expected:
    msg = (f"{path}: md5 {got} does not match the published md5 {expected} "
           "(a different or damaged file).")
    if mode == "raise":
      raise JaxkdError(msg)
    warnings.warn(msg, stacklevel=3)


def under_data_dir(path: str, data_dir: Optional[str],
                   exists: Callable[[str], bool]) -> str:
  """`path` relative to `data_dir` when that exists there, else as given."""
  if data_dir and not os.path.isabs(path) and exists(
      os.path.join(data_dir, path)):
    return os.path.join(data_dir, path)
  return path
