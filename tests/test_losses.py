"""Hinton KD, soft/hard cross-entropy and their mix against NumPy references.

(AT and SP losses are tested in their own file.)
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxkd import losses

S = np.array([[1.0, 2.0, 3.0], [0.5, -1.0, 0.0]], np.float32)   # student logits
T_LOG = np.array([[3.0, 2.0, 1.0], [1.0, 0.0, -1.0]], np.float32)  # teacher


def np_log_softmax(z):
  z = np.asarray(z, np.float64)
  z = z - z.max(-1, keepdims=True)
  return z - np.log(np.exp(z).sum(-1, keepdims=True))


def np_kd(s, t, temp):
  """T^2 * mean_b KL(softmax(t/T) || softmax(s/T)), written out."""
  lpt, lps = np_log_softmax(t / temp), np_log_softmax(s / temp)
  return temp ** 2 * np.mean(np.sum(np.exp(lpt) * (lpt - lps), -1))


def test_kd_loss_one_row_by_hand():
  # s = [0, 0], t = [ln 3, 0], T = 1: p_t = [3/4, 1/4], p_s = [1/2, 1/2],
  # KL = 3/4 ln(3/2) + 1/4 ln(1/2).
  s = jnp.zeros((1, 2))
  t = jnp.array([[np.log(3.0), 0.0]])
  want = 0.75 * np.log(1.5) + 0.25 * np.log(0.5)
  np.testing.assert_allclose(losses.kd_loss(s, t, 1.0), want, rtol=1e-6)
  # T = 2: p_t = [r3, 1] / (r3 + 1) with r3 = sqrt 3, times T^2 = 4.
  r3 = np.sqrt(3.0)
  p = np.array([r3, 1.0]) / (r3 + 1.0)
  want2 = 4.0 * np.sum(p * np.log(p / 0.5))
  np.testing.assert_allclose(losses.kd_loss(s, t, 2.0), want2, rtol=1e-6)


@pytest.mark.parametrize("temp", [1.0, 2.0, 4.0])
def test_kd_loss_2x3_matches_numpy(temp):
  got = jax.jit(functools.partial(losses.kd_loss, temperature=temp))(S, T_LOG)
  np.testing.assert_allclose(got, np_kd(S, T_LOG, temp), rtol=1e-5)


def test_kd_loss_direction_and_scaling():
  temp = 3.0
  got = float(losses.kd_loss(S, T_LOG, temp))
  # KL(teacher || student), not KL(student || teacher).
  reverse = np_kd(T_LOG, S, temp)
  assert abs(got - reverse) > 1e-3
  # The T^2 factor: equals T^2 times the unscaled mean KL.
  lpt, lps = np_log_softmax(T_LOG / temp), np_log_softmax(S / temp)
  kl = np.mean(np.sum(np.exp(lpt) * (lpt - lps), -1))
  np.testing.assert_allclose(got, 9.0 * kl, rtol=1e-5)
  # Zero when the student matches the teacher.
  np.testing.assert_allclose(losses.kd_loss(T_LOG, T_LOG, temp), 0.0, atol=1e-6)


@pytest.mark.parametrize("temp", [1.0, 4.0])
def test_kd_loss_from_probs_equals_kd_loss_with_logits(temp):
  probs = np.exp(np_log_softmax(T_LOG)).astype(np.float32)
  got = losses.kd_loss_from_probs(S, probs, temp)
  np.testing.assert_allclose(got, losses.kd_loss(S, np.log(probs), temp),
                             rtol=1e-5)
  np.testing.assert_allclose(got, np_kd(S, T_LOG, temp), rtol=1e-5)


def test_kd_loss_from_probs_tolerates_zero_probs():
  probs = np.array([[1.0, 0.0, 0.0], [0.0, 0.5, 0.5]], np.float32)
  got = losses.kd_loss_from_probs(S, probs, 1.0)
  assert np.isfinite(got)
  # 0 log 0 = 0: KL = -sum_c p_c log q_c - H(p).
  lps = np_log_softmax(S)
  want = np.mean([-lps[0, 0], -0.5 * (lps[1, 1] + lps[1, 2]) - np.log(2.0)])
  np.testing.assert_allclose(got, want, rtol=1e-5)


def test_soft_cross_entropy():
  probs = np.array([[0.2, 0.3, 0.5], [1.0, 0.0, 0.0]], np.float32)
  lps = np_log_softmax(S)
  want = np.mean(-np.sum(probs * lps, -1))
  np.testing.assert_allclose(jax.jit(losses.soft_cross_entropy)(S, probs), want,
                             rtol=1e-6)


def test_hard_cross_entropy_by_hand():
  # Uniform logits over 3 classes: CE = ln 3 whatever the label.
  np.testing.assert_allclose(
      losses.hard_cross_entropy(jnp.zeros((2, 3)), jnp.array([0, 2])),
      np.log(3.0), rtol=1e-6)
  labels = np.array([2, 1])
  lps = np_log_softmax(S)
  want = -np.mean(lps[np.arange(2), labels])
  np.testing.assert_allclose(jax.jit(losses.hard_cross_entropy)(S, labels),
                             want, rtol=1e-6)


def test_mixed_loss_is_point1_ce_plus_point9_kd():
  probs = np.exp(np_log_softmax(T_LOG)).astype(np.float32)
  labels = np.array([1, 1])
  lps = np_log_softmax(S)
  ce = -np.mean(lps[np.arange(2), labels])
  want = 0.1 * ce + 0.9 * np_kd(S, T_LOG, 4.0)
  got = losses.mixed_kd_loss(S, probs, labels, temperature=4.0)
  np.testing.assert_allclose(got, want, rtol=1e-5)
  # Without labels the hard term uses the teacher's argmax (class 0 for both).
  ce0 = -np.mean(lps[:, 0])
  np.testing.assert_allclose(
      losses.mixed_kd_loss(S, probs, temperature=2.0, kd_weight=0.5,
                           ce_weight=0.5),
      0.5 * ce0 + 0.5 * np_kd(S, T_LOG, 2.0), rtol=1e-5)


def test_mask_ignores_padded_rows():
  mask = np.array([1.0, 1.0, 0.0, 0.0], np.float32)
  junk = np.array([[50.0, -50.0, 7.0], [-3.0, 100.0, 0.0]], np.float32)
  s = np.concatenate([S, junk])
  t = np.concatenate([T_LOG, junk[::-1]])
  probs = np.exp(np_log_softmax(t)).astype(np.float32)
  labels = np.array([0, 2, 1, 0])
  lps = np_log_softmax(S)
  np.testing.assert_allclose(losses.kd_loss(s, t, 2.0, mask),
                             np_kd(S, T_LOG, 2.0), rtol=1e-5)
  np.testing.assert_allclose(losses.kd_loss_from_probs(s, probs, 2.0, mask),
                             np_kd(S, T_LOG, 2.0), rtol=1e-5)
  np.testing.assert_allclose(
      losses.soft_cross_entropy(s, probs, mask),
      np.mean(-np.sum(probs[:2] * lps, -1)), rtol=1e-5)
  np.testing.assert_allclose(losses.hard_cross_entropy(s, labels, mask),
                             -np.mean(lps[[0, 1], [0, 2]]), rtol=1e-6)
  np.testing.assert_allclose(
      losses.mixed_kd_loss(s, probs, labels, mask=mask),
      0.1 * -np.mean(lps[[0, 1], [0, 2]]) + 0.9 * np_kd(S, T_LOG, 4.0),
      rtol=1e-5)
  # Gradients of padded rows are exactly zero.
  g = jax.grad(lambda z: losses.kd_loss(z, t, 2.0, mask))(s)
  np.testing.assert_array_equal(np.asarray(g)[2:], 0.0)
  # An all-padding batch gives 0, not NaN.
  assert float(losses.soft_cross_entropy(s, probs, np.zeros(4))) == 0.0
