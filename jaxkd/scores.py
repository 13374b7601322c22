"""Per-example uncertainty scores of class probabilities or logits.

Shared by the pool strategies (`jaxkd.selection.baselines`, RAD) and the
UNIX step (`jaxkd.unix`): larger means more uncertain, except where a
docstring says otherwise. Pure and vectorised over leading axes.

References:
  Settles. Active Learning Literature Survey, 2009 (entropy, margin, LC).
  Xu, Liu, Loy. Computation-Efficient Knowledge Distillation via
  Uncertainty-Aware Mixup, arXiv:2012.09413 (entropy, confidence, margin).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxkd.validation import JaxkdError

SCORE_KINDS = ("entropy", "confidence", "margin")


def entropy(probs: jax.Array) -> jax.Array:
  """Predictive entropy -sum p log p. probs [..., C] -> [...]."""
  return -jnp.sum(jnp.where(probs > 0, probs * jnp.log(probs), 0.0), axis=-1)


def margin_uncertainty(probs: jax.Array) -> jax.Array:
  """-(p1 - p2), higher when the top two classes are closer. [..., C] -> [...]
  """
  top2 = jax.lax.top_k(probs, 2)[0]
  return -(top2[..., 0] - top2[..., 1])


def least_confidence(probs: jax.Array) -> jax.Array:
  """1 - max p. [..., C] -> [...]."""
  return 1.0 - jnp.max(probs, axis=-1)


def uncertainty_scores(logits: jax.Array, kind: str = "entropy") -> jax.Array:
  """Per-image uncertainty from logits, larger = more uncertain.

  Args:
    logits: [B, C].
    kind: "entropy" (-sum p log p), "confidence" (-max p) or "margin"
      (-(p1 - p2), p1 >= p2 the two largest probabilities).

  Returns:
    [B] float scores.
  """
  logp = jax.nn.log_softmax(logits, axis=-1)
  p = jnp.exp(logp)
  if kind == "entropy":
    return -jnp.sum(p * logp, axis=-1)
  if kind == "confidence":
    return -jnp.max(p, axis=-1)
  if kind == "margin":
    return margin_uncertainty(p)
  raise JaxkdError(f"Unknown uncertainty {kind!r}; use one of "
                   f"{', '.join(SCORE_KINDS)}.")
