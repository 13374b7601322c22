"""What a round costs the machine: wall seconds of a phase and peak memory.

`Stopwatch` times the phases of a round (selection, paying, training) with
`time.perf_counter`, waiting for JAX's asynchronous work only where the
caller blocks on a result. `PeakMemory` reads the process's peak resident
set size (Linux `VmHWM`, reset per round through `/proc/self/clear_refs`;
elsewhere the lifetime peak from `resource.getrusage`, which never goes
down, said by `per_round = False`) and, on accelerators whose runtime
reports it, the device's peak bytes in use.

Host memory is the whole process's: the JAX runtime, the pool's reads, the
jitted programs and every strategy that ran before in the same process; the
per-round reset makes a round's peak its own where the kernel allows it.
"""

from __future__ import annotations

import contextlib
import resource
import sys
import time
from typing import Dict, Iterator, Optional

import jax

_CLEAR_REFS = "/proc/self/clear_refs"
_STATUS = "/proc/self/status"


def _read_hwm_kib() -> Optional[int]:
  try:
    with open(_STATUS) as f:
      for line in f:
        if line.startswith("VmHWM:"):
          return int(line.split()[1])
  except OSError:
    pass
  return None


def _reset_hwm() -> bool:
  """Resets the kernel's peak RSS to the current RSS (Linux >= 4.0)."""
  try:
    with open(_CLEAR_REFS, "w") as f:
      f.write("5")
    return True
  except OSError:
    return False


class PeakMemory:
  """Peak host RSS (MiB) since `reset()`, and the devices' peak if known.

  `per_round` is False where the peak cannot be reset (not Linux): then
  `host_mib()` is the process's lifetime peak.
  """

  def __init__(self):
    self.per_round = _read_hwm_kib() is not None and _reset_hwm()

  def reset(self) -> None:
    if self.per_round:
      _reset_hwm()

  def host_mib(self) -> float:
    kib = _read_hwm_kib() if self.per_round else None
    if kib is None:
      kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
      if sys.platform == "darwin":  # bytes there, KiB on Linux
        kib //= 1024
    return kib / 1024.0

  @staticmethod
  def device_mib() -> Optional[float]:
    """Largest `peak_bytes_in_use` over the local devices (GPU, TPU);
    None where the runtime does not report it (CPU)."""
    peaks = []
    for d in jax.local_devices():
      try:
        stats = d.memory_stats()
      except Exception:  # noqa: BLE001 - some backends raise, others None
        stats = None
      if stats and "peak_bytes_in_use" in stats:
        peaks.append(stats["peak_bytes_in_use"])
    return max(peaks) / 2**20 if peaks else None


class Stopwatch:
  """Accumulates wall seconds per phase name: `with watch("select"): ...`."""

  def __init__(self):
    self.seconds: Dict[str, float] = {}

  @contextlib.contextmanager
  def __call__(self, phase: str) -> Iterator[None]:
    t0 = time.perf_counter()
    try:
      yield
    finally:
      self.seconds[phase] = (self.seconds.get(phase, 0.0)
                             + time.perf_counter() - t0)


def round_costs(watch: Stopwatch, memory: PeakMemory) -> Dict[str, float]:
  """The cost fields of one round record: `select_seconds` (scoring the
  pool and choosing), `pay_seconds` (the teacher's answers, or the ledger's
  for a resumed round), `train_seconds`, `peak_rss_mib` and, where the
  device reports it, `peak_device_mib`."""
  out = {f"{p}_seconds": round(watch.seconds.get(p, 0.0), 4)
         for p in ("select", "pay", "train")}
  out["peak_rss_mib"] = round(memory.host_mib(), 1)
  dev = memory.device_mib()
  if dev is not None:
    out["peak_device_mib"] = round(dev, 1)
  return out



# Fields of a round record that measure the machine, not the run: two runs
# with the same seeds agree on every other field.
MEASURED_FIELDS = ("wall_time", "select_seconds", "pay_seconds",
                   "train_seconds", "peak_rss_mib", "peak_device_mib")
