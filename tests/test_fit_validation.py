"""`fit` and its factories refuse nonsense with one-line JaxkdErrors."""

import jax
import numpy as np
import pytest

from jaxkd import train
from jaxkd.models import get_model
from jaxkd.validation import JaxkdError

MODEL = get_model("mlp", 3)


def _setup(n=6):
  rng = np.random.default_rng(0)
  x = rng.random((n, 4, 4, 1), dtype=np.float32)
  y = np.arange(n) % 3
  tx = train.make_optimizer("adam", 1e-3, schedule="constant")
  state = train.create_train_state(MODEL, jax.random.key(0), x.shape[1:], tx)
  return state, x, y


def _fit(state, x, targets, labels=None, **kw):
  args = dict(steps=2, batch_size=4, seed=0,
              loss_fn=train.make_loss_fn("soft_ce"), progress=False)
  args.update(kw)
  return train.fit(MODEL, state, x, targets, labels, **args)


@pytest.mark.parametrize("labels,match", [
    (np.array([0, 1, 2, 3, 0, 1]), r"\[0, 3\)"),
    (np.array([0, 1, -1, 2, 0, 1]), r"\[0, 3\)"),
    (np.array([0, 1, np.nan, 2, 0, 1]), "integers"),
])
def test_labels_out_of_range(labels, match):
  state, x, y = _setup()
  with pytest.raises(JaxkdError, match=match):
    _fit(state, x, np.eye(3, dtype=np.float32)[y], labels)
  with pytest.raises(JaxkdError, match=match):
    _fit(state, x, labels)  # as integer targets


def test_integer_targets_equal_one_hot():
  state, x, y = _setup()
  s1, h1 = _fit(state, x, y)
  state, _, _ = _setup()
  s2, h2 = _fit(state, x, np.eye(3, dtype=np.float32)[y])
  np.testing.assert_allclose(h1, h2, rtol=1e-6)


@pytest.mark.parametrize("targets", [
    np.full((6, 3), 0.5, np.float32),             # rows sum to 1.5
    np.tile(np.float32([1.5, -0.5, 0.0]), (6, 1)),  # negative entries
])
def test_non_probability_targets(targets):
  state, x, _ = _setup()
  with pytest.raises(JaxkdError, match="probability rows"):
    _fit(state, x, targets)


@pytest.mark.parametrize("kw", [dict(steps=0), dict(steps=-1),
                                dict(batch_size=0), dict(batch_size=-4),
                                dict(steps=None, epochs=0)])
def test_nonpositive_counts(kw):
  state, x, y = _setup()
  with pytest.raises(JaxkdError, match="positive int"):
    _fit(state, x, y, **kw)


@pytest.mark.parametrize("t", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_temperature(t):
  with pytest.raises(JaxkdError, match="temperature"):
    train.make_loss_fn("kd", temperature=t)


@pytest.mark.parametrize("lr", [0.0, -1e-3, float("nan")])
def test_bad_learning_rate(lr):
  with pytest.raises(JaxkdError, match="learning_rate"):
    train.make_optimizer("adam", lr)
