"""KD, attention transfer and similarity-preserving losses vs NumPy."""

import math

import jax
import numpy as np
import pytest

from jaxkd import losses


def _np_at(fs_list, ft_list, p=2.0):
  # Zagoruyko & Komodakis: a = normalize(mean_c |f|^p), mean over b, hw of
  # (a_s - a_t)^2, summed over maps.
  total = 0.0
  for fs, ft in zip(fs_list, ft_list):
    def att(f):
      a = (np.abs(f) ** p).mean(-1).reshape(len(f), -1)
      return a / np.linalg.norm(a, axis=1, keepdims=True)
    total += ((att(fs) - att(ft)) ** 2).mean()
  return total


def _np_sp(fs, ft):
  # Tung & Mori: G = F F^T, row-L2-normalised; ||G_s - G_t||_F^2 / b^2.
  def sim(f):
    f = f.reshape(len(f), -1)
    g = f @ f.T
    return g / np.linalg.norm(g, axis=1, keepdims=True)
  b = len(fs)
  return ((sim(fs) - sim(ft)) ** 2).sum() / (b * b)


def _maps(rng, b):
  return ([rng.normal(size=(b, 4, 4, 3)), rng.normal(size=(b, 2, 2, 5))],
          [rng.normal(size=(b, 4, 4, 6)), rng.normal(size=(b, 2, 2, 2))])


def test_kd_loss_hand_value():
  # One example, two classes, T = 2: t = [2, 0] -> p_t = softmax([1, 0]),
  # s = [0, 0] -> p_s = [1/2, 1/2]; loss = T^2 KL(p_t || p_s).
  pt1 = math.exp(1) / (math.exp(1) + 1)
  kl = pt1 * math.log(pt1 / 0.5) + (1 - pt1) * math.log((1 - pt1) / 0.5)
  got = jax.jit(losses.kd_loss, static_argnums=2)(
      np.array([[0.0, 0.0]]), np.array([[2.0, 0.0]]), 2.0)
  assert float(got) == pytest.approx(4 * kl, rel=1e-5)


def test_attention_transfer_matches_numpy():
  rng = np.random.default_rng(0)
  s, t = _maps(rng, 5)
  got = jax.jit(losses.attention_transfer_loss)(s, t)
  assert float(got) == pytest.approx(_np_at(s, t), rel=1e-5)
  # masked rows (padding) do not count
  mask = np.array([1, 1, 1, 0, 0], np.float32)
  got = jax.jit(losses.attention_transfer_loss)(s, t, mask=mask)
  want = _np_at([m[:3] for m in s], [m[:3] for m in t])
  assert float(got) == pytest.approx(want, rel=1e-5)


def test_similarity_preserving_matches_numpy():
  rng = np.random.default_rng(1)
  s, t = _maps(rng, 6)
  got = jax.jit(losses.similarity_preserving_loss)(s[-1:], t[-1:])
  assert float(got) == pytest.approx(_np_sp(s[-1], t[-1]), rel=1e-5)
  mask = np.array([1, 1, 1, 1, 0, 0], np.float32)
  got = jax.jit(losses.similarity_preserving_loss)(s[-1:], t[-1:], mask=mask)
  assert float(got) == pytest.approx(_np_sp(s[-1][:4], t[-1][:4]), rel=1e-5)
