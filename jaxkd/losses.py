"""Distillation losses: Hinton KD, soft/hard cross-entropy, AT and SP.

All losses take per-example arrays and a optional `mask` [B] of real rows
(padding added for sharding has mask 0) and return the masked mean.

`LOSSES` names the training losses a config can pick (`loop.loss`): each
entry is a factory `factory(*, temperature, kd_weight, ce_weight)` returning
`loss(logits [B, C], targets [B, C] teacher probs, labels [B], mask [B])`
(`jaxkd.train.make_loss_fn` builds and caches them). Register more with
`LOSSES.register(name, factory)`, or name one by import path
'pkg.mod:factory'.

References:
  Hinton, Vinyals, Dean. Distilling the Knowledge in a Neural Network, 2015.
  Zagoruyko, Komodakis. Paying More Attention to Attention (AT), ICLR 2017.
  Tung, Mori. Similarity-Preserving Knowledge Distillation (SP), ICCV 2019.
"""

from __future__ import annotations

from typing import Optional, Sequence

import jax
import jax.numpy as jnp

from jaxkd.registry import Registry


def _masked_mean(per_example: jax.Array, mask: Optional[jax.Array]) -> jax.Array:
  if mask is None:
    return jnp.mean(per_example)
  mask = mask.astype(per_example.dtype)
  return jnp.sum(per_example * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def soft_cross_entropy(logits: jax.Array, target_probs: jax.Array,
                       mask: Optional[jax.Array] = None) -> jax.Array:
  """Cross-entropy -sum_c t_c log softmax(logits)_c. logits, target: [B, C]."""
  per = -jnp.sum(target_probs * jax.nn.log_softmax(logits), axis=-1)
  return _masked_mean(per, mask)


def hard_cross_entropy(logits: jax.Array, labels: jax.Array,
                       mask: Optional[jax.Array] = None) -> jax.Array:
  """Cross-entropy with integer labels. logits: [B, C], labels: [B] int."""
  logp = jax.nn.log_softmax(logits)
  per = -jnp.take_along_axis(logp, labels[:, None].astype(jnp.int32), -1)[:, 0]
  return _masked_mean(per, mask)


def kd_loss(student_logits: jax.Array, teacher_logits: jax.Array,
            temperature: float = 4.0,
            mask: Optional[jax.Array] = None) -> jax.Array:
  """Hinton KD: T^2 KL(softmax(t/T) || softmax(s/T)). Both [B, C]."""
  t = temperature
  p_t = jax.nn.softmax(teacher_logits / t)
  log_p_t = jax.nn.log_softmax(teacher_logits / t)
  log_p_s = jax.nn.log_softmax(student_logits / t)
  per = jnp.sum(p_t * (log_p_t - log_p_s), axis=-1)
  return (t * t) * _masked_mean(per, mask)


def kd_loss_from_probs(student_logits: jax.Array, teacher_probs: jax.Array,
                       temperature: float = 4.0,
                       mask: Optional[jax.Array] = None,
                       eps: float = 1e-12) -> jax.Array:
  """Hinton KD when the teacher returned probabilities at T = 1.

  A black-box teacher answers softmax probabilities; log(p) recovers its
  logits up to a per-row constant, which softmax ignores, so this equals
  `kd_loss(s, log p, T)`.
  """
  teacher_logits = jnp.log(jnp.clip(teacher_probs, eps, 1.0))
  return kd_loss(student_logits, teacher_logits, temperature, mask)


def mixed_kd_loss(student_logits: jax.Array, teacher_probs: jax.Array,
                  labels: Optional[jax.Array] = None, *,
                  temperature: float = 4.0, kd_weight: float = 0.9,
                  ce_weight: float = 0.1,
                  mask: Optional[jax.Array] = None) -> jax.Array:
  """ce_weight * CE(labels) + kd_weight * KD(teacher), e.g. 0.1 CE + 0.9 KD.

  Without `labels` the hard term uses the teacher's argmax.
  """
  if labels is None:
    labels = jnp.argmax(teacher_probs, axis=-1)
  ce = hard_cross_entropy(student_logits, labels, mask)
  kd = kd_loss_from_probs(student_logits, teacher_probs, temperature, mask)
  return ce_weight * ce + kd_weight * kd


def attention_map(feature_map: jax.Array, p: float = 2.0) -> jax.Array:
  """AT map: L2-normalised mean over channels of |f|^p. [B,H,W,C] -> [B,HW]."""
  am = jnp.mean(jnp.abs(feature_map) ** p, axis=-1)
  am = am.reshape((am.shape[0], -1))
  return am / jnp.maximum(jnp.linalg.norm(am, axis=-1, keepdims=True), 1e-12)


def attention_transfer_loss(student_maps: Sequence[jax.Array],
                            teacher_maps: Sequence[jax.Array], p: float = 2.0,
                            mask: Optional[jax.Array] = None) -> jax.Array:
  """AT (Zagoruyko & Komodakis): sum over matched maps of mean_b mean_hw
  (a_s - a_t)^2, as in RepDistiller's `Attention` (use weight 1000).

  Maps are matched in order and must share spatial size; channels may differ.
  """
  if len(student_maps) != len(teacher_maps):
    raise ValueError(f"AT needs matched maps: {len(student_maps)} student vs "
                     f"{len(teacher_maps)} teacher.")
  total = 0.0
  for fs, ft in zip(student_maps, teacher_maps):
    if fs.shape[1:3] != ft.shape[1:3]:
      raise ValueError(f"AT maps differ in spatial size: {fs.shape} vs {ft.shape}.")
    per = jnp.mean((attention_map(fs, p) - attention_map(ft, p)) ** 2, axis=-1)
    total = total + _masked_mean(per, mask)
  return total


def similarity_preserving_loss(student_maps: Sequence[jax.Array],
                               teacher_maps: Sequence[jax.Array],
                               mask: Optional[jax.Array] = None) -> jax.Array:
  """SP (Tung & Mori): ||G_s - G_t||_F^2 / B^2 per map pair, G the
  row-L2-normalised batch Gram matrix of flattened features (use weight 3000).

  With a mask, padded rows are zeroed and B counts real rows only.
  """
  total = 0.0
  for fs, ft in zip(student_maps, teacher_maps):
    gs, gt = _similarity(fs, mask), _similarity(ft, mask)
    b = fs.shape[0] if mask is None else jnp.sum(mask)
    total = total + jnp.sum((gs - gt) ** 2) / (b * b)
  return total


def _similarity(f: jax.Array, mask: Optional[jax.Array]) -> jax.Array:
  f = f.reshape((f.shape[0], -1))
  if mask is not None:
    f = f * mask[:, None].astype(f.dtype)
  g = f @ f.T
  return g / jnp.maximum(jnp.linalg.norm(g, axis=1, keepdims=True), 1e-12)


# ---------------------------------------------------------------- registry --


def _kd_factory(temperature, **_):
  return lambda lo, t, y, m: kd_loss_from_probs(lo, t, temperature, m)


def _soft_ce_factory(**_):
  return lambda lo, t, y, m: soft_cross_entropy(lo, t, m)


def _hard_ce_factory(**_):
  return lambda lo, t, y, m: hard_cross_entropy(lo, y, m)


def _mix_factory(temperature, kd_weight, ce_weight):
  return lambda lo, t, y, m: mixed_kd_loss(
      lo, t, y, temperature=temperature, kd_weight=kd_weight,
      ce_weight=ce_weight, mask=m)


# Losses by name: factory(*, temperature, kd_weight, ce_weight) ->
# loss(logits, targets, labels, mask).
LOSSES = Registry("loss")
LOSSES.register("kd", _kd_factory)
LOSSES.register("soft_ce", _soft_ce_factory)
LOSSES.register("hard_ce", _hard_ce_factory)
LOSSES.register("mix", _mix_factory)
