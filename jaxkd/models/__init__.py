"""Model registry: `get_model(name, num_classes)` returns a Flax Linen module.

Every model follows one calling convention:

  logits = model.apply(variables, x)                         # eval
  logits, feats = model.apply(variables, x, return_features=True)
  # feats = {"embedding": [B, D] penultimate features,
  #          "maps": tuple of intermediate [B, H, W, C] maps (for AT)}
  (logits, ...), updates = model.apply(variables, x, train=True,
                                       mutable=["batch_stats"])  # BN models

`x` is [B, H, W, C] float32 in [0, 1]. Models with BatchNorm keep running
statistics in the "batch_stats" collection; `has_batch_norm(variables)`
tells them apart. Use `apply_model` to call any of them uniformly.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Dict

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxkd.models import lenet
from jaxkd.registry import Registry
from jaxkd.validation import JaxkdError

# Models by name: factory(num_classes=..., **kwargs) -> nn.Module. The small
# LeNet family is registered here; the larger families register themselves
# when their module (listed in `modules`) is imported on the first lookup.
# Register more with `register_model`, or name one by import path
# 'pkg.mod:factory'.
MODELS = Registry("model", modules=("jaxkd.models.cifar",
                                     "jaxkd.models.wide"))
MODELS.register("mlp", lenet.MLP)
MODELS.register("lenet5", lenet.LeNet5)
MODELS.register("lenet5_half", functools.partial(
    lenet.LeNet5, channels=(3, 8), hidden=(60, 42)))


def register_model(name: str, factory: Callable[..., nn.Module]) -> None:
  """Adds a model factory `factory(num_classes=...) -> nn.Module`."""
  MODELS.register(name, factory)


def model_names() -> list[str]:
  """Names of all registered models (optional families included)."""
  return MODELS.names()


def get_model(name: str, num_classes: int, **kwargs: Any) -> nn.Module:
  """Builds the registered model `name` (or import path) with `num_classes`
  outputs."""
  factory = MODELS.get(name)
  if not isinstance(num_classes, int) or num_classes < 2:
    raise JaxkdError(f"num_classes must be an int >= 2, got {num_classes!r}.")
  return factory(num_classes=num_classes, **kwargs)


def init_model(model: nn.Module, key: jax.Array, input_shape) -> Dict[str, Any]:
  """Initialises variables for inputs of shape [H, W, C] (batch added)."""
  x = jnp.zeros((1,) + tuple(input_shape), jnp.float32)
  # One compiled init instead of hundreds of op-by-op dispatches, compiled
  # once per model (the round loop re-initialises the student every round).
  try:
    init = _jitted_init(model)
  except TypeError:  # an unhashable module
    init = jax.jit(lambda k, v: model.init(k, v, train=False))
  return dict(init(key, x))


@functools.lru_cache(maxsize=64)
def _jitted_init(model: nn.Module):
  return jax.jit(lambda k, v: model.init(k, v, train=False))


def has_batch_norm(variables: Dict[str, Any]) -> bool:
  return bool(variables.get("batch_stats"))


def apply_model(model: nn.Module, variables: Dict[str, Any], x: jax.Array, *,
                train: bool = False, return_features: bool = False):
  """Calls `model` uniformly. Returns (outputs, new_batch_stats).

  `outputs` is logits, or (logits, feats) when return_features. In train mode
  BatchNorm statistics are updated and returned; otherwise the input
  batch_stats are returned unchanged (possibly an empty dict).
  """
  batch_stats = variables.get("batch_stats", {})
  if train and batch_stats:
    out, updates = model.apply(variables, x, train=True,
                               return_features=return_features,
                               mutable=["batch_stats"])
    return out, updates["batch_stats"]
  out = model.apply(variables, x, train=train, return_features=return_features)
  return out, batch_stats

