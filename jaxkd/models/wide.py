"""Wider LeNet-5 teachers: an order of magnitude the cost of LeNet-5-half.

UNIX (Xu, Liu & Loy) saves computation only when the teacher's forward
pass F_t is much costlier than the student's F_s: a step keeping k of N
images costs k / N + 1 / (r + 2) of plain KD (r = F_t / F_s, the paper's
B_s = F_s convention; `jaxkd.cost`), and its cross-architecture pairs
(Table 1) have r from 8 to 174. LeNet-5 -> LeNet-5-half has r near 3.
`lenet5_w2` doubles every channel and hidden width of LeNet-5 (channels
(12, 32), hidden (240, 168)), about 3.6 times LeNet-5's FLOPs and 12 times
LeNet-5-half's (XLA's count, `cost.model_cost`); `lenet5_w4` quadruples
them (about 46 times LeNet-5-half's). Same module, same calling
convention and same linear stem as `jaxkd.models.lenet.LeNet5`.
"""

from __future__ import annotations

import functools
from typing import Callable, Dict

import flax.linen as nn

from jaxkd import models as _models
from jaxkd.models.lenet import LeNet5

# ----------------------------------------------------------------------------
# Registry entries (`jaxkd.models.MODELS` imports this module on its first
# lookup; a name a user registered before that keeps the user's entry)
# ----------------------------------------------------------------------------

MODELS: Dict[str, Callable[..., nn.Module]] = {
    "lenet5_w2": functools.partial(LeNet5, channels=(12, 32),
                                   hidden=(240, 168)),
    "lenet5_w4": functools.partial(LeNet5, channels=(24, 64),
                                   hidden=(480, 336)),
}


def _register() -> None:
  for name, factory in MODELS.items():
    if name not in _models.MODELS:
      _models.register_model(name, factory)


_register()
