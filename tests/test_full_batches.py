"""Every training step sees a full batch (issue: ragged last batch).

Before the fix, `fit(steps=...)` cut each epoch of n = 130 rows into batches
of 64, 64 and 2 rows and gave the 2-row batch a full Adam step: one step in
three on 2 examples. Now batches come from a continuous stream of shuffled
epochs.
"""

import jax
import numpy as np
import pytest

from jaxkd import data, train
from jaxkd.models import get_model


def _spy_on_steps(monkeypatch):
  """Records the number of real (unmasked) rows of every train step."""
  rows = []
  real = train._jitted_train_step

  def spying(model, loss_fn, mesh):
    step = real(model, loss_fn, mesh)

    def wrapped(state, batch):
      rows.append(int(np.sum(np.asarray(batch.mask))))
      return step(state, batch)
    return wrapped

  monkeypatch.setattr(train, "_jitted_train_step", spying)
  return rows


def _tiny_problem(n, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.random((n, 8, 8, 1), dtype=np.float32)
  y = rng.integers(0, 10, n)
  return x, np.eye(10, dtype=np.float32)[y], y


@pytest.mark.parametrize("n,batch,steps", [(130, 64, 30), (64, 64, 5),
                                           (20, 64, 4), (129, 32, 17)])
def test_every_step_has_min_n_batch_real_rows(monkeypatch, n, batch, steps):
  rows = _spy_on_steps(monkeypatch)
  model = get_model("mlp", 10)
  x, t, y = _tiny_problem(n)
  tx = train.make_optimizer("adam", 1e-3, schedule="constant")
  state = train.create_train_state(model, jax.random.key(0), x.shape[1:], tx)
  train.fit(model, state, x, t, y, steps=steps, batch_size=batch, seed=0,
            loss_fn=train.make_loss_fn("soft_ce"), progress=False)
  assert rows == [min(n, batch)] * steps


@pytest.mark.parametrize("n,batch", [(130, 64), (10, 3), (5, 8)])
def test_batch_stream_is_concatenated_permutations(n, batch):
  stream = train.batch_stream(n, batch, seed=3)
  got = np.concatenate([next(stream) for _ in range(40)])
  size = min(n, batch)
  assert len(got) == 40 * size
  if n >= batch:  # cut into epochs of n: each one is a permutation of 0..n-1
    for e in range(len(got) // n):
      assert sorted(got[e * n:(e + 1) * n]) == list(range(n))
  else:  # every batch is all n rows
    for b in got.reshape(40, size):
      assert sorted(b) == list(range(n))


def test_epochs_mode_counts_steps_from_rows():
  model = get_model("mlp", 10)
  x, t, y = _tiny_problem(130)
  tx = train.make_optimizer("adam", 1e-3, schedule="constant")
  state = train.create_train_state(model, jax.random.key(0), x.shape[1:], tx)
  _, history = train.fit(model, state, x, t, y, epochs=3, batch_size=64,
                         seed=0, loss_fn=train.make_loss_fn("soft_ce"),
                         progress=False)
  # ceil(3 * 130 / 64) = 7 steps, reported in epochs' worth of 3 steps.
  assert len(history) == 3


def test_batch_64_and_65_train_alike_on_130_digits():
  """The issue's case: lenet5_half, 130 digits, KD at T = 4, Adam. With
  64, 64, 2-row batches the 2-row steps cost ~13 points of accuracy against
  batch 65 (measured 74.1% vs 86.9%, 300 steps, 3 seeds). With full batches
  the two batch sizes are nearly the same optimisation, so their accuracies
  must agree within test-set noise (500 test digits: one digit = 0.2%)."""
  ds = data.load_dataset("digits")
  order = np.random.default_rng(0).permutation(len(ds.train_images))
  tr, te = order[:130], order[130:630]
  x, y = ds.train_images, ds.train_labels
  model = get_model("lenet5_half", 10)
  loss = train.make_loss_fn("kd", temperature=4.0)
  acc = {}
  for batch in (64, 65):
    tx = train.make_optimizer("adam", 3e-3, schedule="cosine",
                              total_steps=150)
    state = train.create_train_state(model, jax.random.key(0),
                                     x.shape[1:], tx)
    state, _ = train.fit(model, state, x[tr], y[tr], steps=150,
                         batch_size=batch, seed=0, loss_fn=loss,
                         progress=False)
    acc[batch] = train.accuracy(model, state.variables, x[te], y[te])
  assert acc[65] > 0.7, acc
  assert abs(acc[64] - acc[65]) < 0.03, acc
