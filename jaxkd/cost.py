"""Computation accounting for distillation, as in the UNIX paper.

Per example, the forward FLOPs F of a model come from XLA's compiled cost
analysis of `apply` (`jax.jit(f).lower(...).compile().cost_analysis()`), and
the backward FLOPs B from the cost of `value_and_grad` of a scalar loss of
the logits minus the forward cost. A run that did N_t teacher forwards, N_s1
student forwards and N_s2 student backwards costs

  E = N_t F_t + N_s1 F_s + N_s2 B_s,

and plain KD on the same N images costs N (F_t + F_s + B_s) (one teacher
forward, one student forward and one backward per image): the paper reports
E relative to that (KD = 100%). UNIX spends N student forwards on the
uncertainty pass and k of each kind on the kept images.

Two conventions for B_s. XLA's count of the gradient (`KDCost` from
`kd_cost`) makes B_s about 2 F_s (weight and input gradients). The paper
counts a student backward as one forward, B_s = F_s (`KDCost.paper`): then
a UNIX step of N images keeping k costs, relative to KD,

  (k F_t + (N + k) F_s + k F_s) / (N (F_t + 2 F_s)) = k / N + 1 / (r + 2),

with r = F_t / F_s; every computation cell of the paper's tables is this
(r = 38.17, k = 48, N = 64 gives 77.49%, Table 1).

References:
  Xu, Liu, Loy. Computation-Efficient Knowledge Distillation via
  Uncertainty-Aware Mixup, arXiv:2012.09413, Sec. 3 (computation cost).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxkd.models import apply_model
from jaxkd.validation import JaxkdError


@dataclasses.dataclass(frozen=True)
class ModelCost:
  """Per-example FLOPs of one model: `forward` and `backward`."""
  forward: float
  backward: float


@dataclasses.dataclass(frozen=True)
class KDCost:
  """Per-example FLOPs: F_t, F_s and B_s."""
  teacher_forward: float
  student_forward: float
  student_backward: float

  @property
  def teacher_student_ratio(self) -> float:
    """F_t / F_s, the paper's column."""
    return self.teacher_forward / self.student_forward

  def paper(self) -> "KDCost":
    """The paper's convention: a student backward costs one forward
    (B_s = F_s, Eq. 11), F_t and F_s unchanged."""
    return dataclasses.replace(self, student_backward=self.student_forward)

  @property
  def kd_per_example(self) -> float:
    """F_t + F_s + B_s: plain KD's cost of one image."""
    return self.teacher_forward + self.student_forward + self.student_backward


def compiled_flops(fn, *args) -> float:
  """FLOPs of `jax.jit(fn)(*args)` from XLA's compiled cost analysis."""
  analysis = jax.jit(fn).lower(*args).compile().cost_analysis()
  if isinstance(analysis, (list, tuple)):  # older JAX: one dict per program
    analysis = analysis[0]
  if not analysis or "flops" not in analysis:
    raise JaxkdError("XLA cost analysis reported no FLOPs on this backend.")
  return float(analysis["flops"])


def model_cost(model: nn.Module, variables: Dict[str, Any],
               input_shape: Sequence[int], *, batch_size: int = 8) -> ModelCost:
  """Per-example forward and backward FLOPs of `model` (eval-mode graph).

  Args:
    model: Flax module following the `jaxkd.models` convention.
    variables: its variables (only shapes matter).
    input_shape: [H, W, C] of one image.
    batch_size: batch measured; FLOPs are divided by it.

  Returns:
    `ModelCost`: forward = apply, backward = value_and_grad(sum of logits)
    w.r.t. params minus forward.

  The count is the model's arithmetic, not one implementation's: a model
  with a `conv_impl` field (jaxkd's LeNets) is measured with XLA's
  convolution (`conv_impl="xla"`), whose count is the convolution's
  multiply-adds, since the banded-matmul form computes the same function
  with several times the FLOPs.
  """
  if batch_size < 1:
    raise JaxkdError(f"batch_size must be >= 1, got {batch_size}.")
  model = _xla_form(model)
  x = jax.ShapeDtypeStruct((batch_size,) + tuple(input_shape), jnp.float32)
  variables = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype),
                           variables)
  params = variables["params"]
  rest = {k: v for k, v in variables.items() if k != "params"}

  def forward(params, rest, x):
    return apply_model(model, dict(rest, params=params), x)[0]

  def loss(params, rest, x):
    return jnp.sum(forward(params, rest, x))

  fwd = compiled_flops(forward, params, rest, x)
  both = compiled_flops(jax.value_and_grad(loss), params, rest, x)
  return ModelCost(forward=fwd / batch_size,
                   backward=max(both - fwd, 0.0) / batch_size)


def _xla_form(model: nn.Module) -> nn.Module:
  """`model` with XLA's convolution (`conv_impl="xla"`), also inside a
  wrapper holding it as `model` (`jaxkd.unix.Standardized`)."""
  if getattr(model, "conv_impl", "xla") != "xla":
    return model.clone(conv_impl="xla")
  inner = getattr(model, "model", None)
  if isinstance(inner, nn.Module):
    return model.clone(model=_xla_form(inner))
  return model


def kd_cost(student: nn.Module, student_variables, teacher: nn.Module,
            teacher_variables, input_shape: Sequence[int], *,
            batch_size: int = 8) -> KDCost:
  """F_t, F_s, B_s per example for a teacher-student pair."""
  s = model_cost(student, student_variables, input_shape,
                 batch_size=batch_size)
  t = model_cost(teacher, teacher_variables, input_shape,
                 batch_size=batch_size)
  return KDCost(teacher_forward=t.forward, student_forward=s.forward,
                student_backward=s.backward)


def computation(teacher_forwards: float, student_forwards: float,
                student_backwards: float, cost: KDCost) -> float:
  """E = N_t F_t + N_s1 F_s + N_s2 B_s."""
  return (teacher_forwards * cost.teacher_forward
          + student_forwards * cost.student_forward
          + student_backwards * cost.student_backward)


class CostCounter:
  """Counts passes during training; the loop calls `add` once per step.

  Attributes:
    images: images drawn from the loader (N per batch); plain KD spends
      `images * (F_t + F_s + B_s)` on them.
    teacher_forwards, student_forwards, student_backwards: N_t, N_s1, N_s2.
  """

  def __init__(self):
    self.images = 0
    self.teacher_forwards = 0
    self.student_forwards = 0
    self.student_backwards = 0

  def add(self, images: int, teacher_forwards: int, student_forwards: int,
          student_backwards: int) -> None:
    self.images += int(images)
    self.teacher_forwards += int(teacher_forwards)
    self.student_forwards += int(student_forwards)
    self.student_backwards += int(student_backwards)

  def flops(self, cost: KDCost) -> float:
    """E of everything counted so far."""
    return computation(self.teacher_forwards, self.student_forwards,
                       self.student_backwards, cost)

  def relative_to_kd(self, cost: KDCost) -> float:
    """E / (images (F_t + F_s + B_s)): 1.0 for plain KD."""
    if self.images == 0:
      raise JaxkdError("No steps counted yet.")
    return self.flops(cost) / (self.images * cost.kd_per_example)

  @classmethod
  def from_dict(cls, counts: Dict[str, int]) -> "CostCounter":
    """The counter `as_dict` wrote (a run record's "counts")."""
    c = cls()
    c.add(counts["images"], counts["teacher_forwards"],
          counts["student_forwards"], counts["student_backwards"])
    return c

  def as_dict(self) -> Dict[str, int]:
    return {"images": self.images, "teacher_forwards": self.teacher_forwards,
            "student_forwards": self.student_forwards,
            "student_backwards": self.student_backwards}

  def __repr__(self) -> str:
    return f"CostCounter({self.as_dict()})"


def unix_step_counts(n: int, config) -> tuple:
  """(teacher forwards, student forwards, student backwards) of one UNIX
  step on n images keeping `config.k` (`jaxkd.unix.UnixConfig`): the N-image
  uncertainty pass only when the ranking needs the student."""
  return (config.k, config.k + (n if config.needs_student_pass else 0),
          config.k)
