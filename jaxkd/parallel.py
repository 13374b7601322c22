"""Device mesh, shardings and batch placement (data parallelism over `data`).

jaxkd parallelises with `jax.jit` over a one-axis `("data",)` mesh of
`NamedSharding`s. The same code runs on one CPU, 8 GPUs or a multi-host TPU
pod (call `jax.distributed.initialize()` first on each host).

Batches whose size does not divide the device count are padded with zeros
and carry a mask, never dropped: `pad_to_multiple` returns the padded array
and a boolean mask of the real rows.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def make_mesh(devices: Optional[Sequence[jax.Device]] = None) -> Mesh:
  """A 1-D ("data",) mesh over `devices` (default: all devices)."""
  devices = list(jax.devices() if devices is None else devices)
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def data_sharding(mesh: Mesh) -> NamedSharding:
  """Shards the leading (batch / pool) axis over the data axis."""
  return NamedSharding(mesh, P(DATA_AXIS))


def num_shards(mesh: Mesh) -> int:
  return mesh.shape[DATA_AXIS]


def pad_to_multiple(x: Any, multiple: int, axis: int = 0
                    ) -> Tuple[Any, np.ndarray]:
  """Pads `x` with zeros along `axis` to a multiple of `multiple`.

  Returns (padded, mask) with mask[i] True for the original rows.
  """
  n = x.shape[axis]
  pad = (-n) % multiple
  mask = np.concatenate([np.ones(n, bool), np.zeros(pad, bool)])
  if pad == 0:
    return x, mask
  widths = [(0, 0)] * x.ndim
  widths[axis] = (0, pad)
  xp = jnp if isinstance(x, jax.Array) else np
  return xp.pad(x, widths), mask


def shard_batch(mesh: Mesh, *arrays: Any) -> Tuple[Any, ...]:
  """Pads each array's leading axis to the device count and shards it.

  Returns the sharded arrays followed by the sharded float32 mask of real
  rows (1.0 real, 0.0 padding).
  """
  k = num_shards(mesh)
  sharding = data_sharding(mesh)
  out = []
  mask = None
  for a in arrays:
    padded, mask = pad_to_multiple(a, k)
    out.append(jax.device_put(padded, sharding))
  out.append(jax.device_put(mask.astype(np.float32), sharding))
  return tuple(out)


def replicate(mesh: Mesh, tree: Any) -> Any:
  """Places a pytree fully replicated on every device of `mesh`."""
  return jax.device_put(tree, replicated_sharding(mesh))
