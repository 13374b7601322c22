"""The official Active Mixup student schedule: SGD with momentum and
PyTorch-style weight decay, learning-rate blocks divided by 10, training by
epochs, random crops with padding, and the best-test-epoch record."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxkd import loop, train
from jaxkd.validation import JaxkdError


def test_blocks_schedule_divides_by_ten_after_each_block():
  tx = train.make_optimizer("sgd", 0.01, momentum=0.0, schedule="blocks",
                            total_steps=200, blocks=(80, 60, 40, 20))
  # With momentum 0 and no decay, one step on loss = w moves w by -lr.
  w = {"w": jnp.zeros(())}
  state = tx.init(w)
  seen = []
  for _ in range(200):
    upd, state = tx.update({"w": jnp.ones(())}, state, w)
    seen.append(-float(upd["w"]))
  want = [0.01] * 80 + [1e-3] * 60 + [1e-4] * 40 + [1e-5] * 20
  np.testing.assert_allclose(seen, want, rtol=1e-5)
  assert train.block_boundaries(10, (80, 60, 40, 20)) == [4, 7, 9]


def test_sgd_weight_decay_is_pytorchs():
  # torch.optim.SGD(lr, momentum=m, weight_decay=wd): g' = g + wd w;
  # buf = m buf + g'; w -= lr buf (first step buf = g').
  lr, m, wd = 0.1, 0.9, 5e-4
  tx = train.make_optimizer("sgd", lr, momentum=m, weight_decay=wd,
                            schedule="constant")
  w = np.array([1.0, -2.0])
  params = {"w": jnp.asarray(w)}
  state = tx.init(params)
  buf = np.zeros(2)
  for t in range(5):
    g = 2 * w  # loss = |w|^2
    upd, state = tx.update({"w": jnp.asarray(g)}, state, params)
    params = {"w": params["w"] + upd["w"]}
    gp = g + wd * w
    buf = gp if t == 0 else m * buf + gp
    w = w - lr * buf
    np.testing.assert_allclose(np.asarray(params["w"]), w, rtol=1e-5)


def test_random_crop_matches_a_loop_over_images():
  rng = np.random.default_rng(0)
  x = rng.random((6, 5, 4, 2)).astype(np.float32)
  got = train.random_crop(x, 2, np.random.default_rng(7))
  r2 = np.random.default_rng(7)
  dy, dx = r2.integers(0, 5, 6), r2.integers(0, 5, 6)
  for i in range(6):
    p = np.zeros((9, 8, 2), np.float32)
    p[2:7, 2:6] = x[i]
    np.testing.assert_array_equal(got[i], p[dy[i]:dy[i] + 5, dx[i]:dx[i] + 4])
  assert train.random_crop(x, 0, rng) is x


def test_epochs_set_the_steps_of_a_round():
  s = loop.StudentTraining(epochs=2.5, batch_size=128)
  assert loop.round_steps(s, 1000) == math.ceil(2.5 * 1000 / 128)
  assert loop.round_steps(loop.StudentTraining(train_steps=7), 1000) == 7


@pytest.mark.parametrize("field,value", [
    ("schedule", "linear"), ("augment", "flip"), ("momentum", 1.0),
    ("lr_blocks", ()), ("lr_blocks", (80, 0)), ("epochs", -1.0),
    ("crop_padding", -1)])
def test_bad_schedule_settings_are_one_line(field, value):
  with pytest.raises(JaxkdError) as e:
    loop.StudentTraining(**{field: value}).validate("loop.")
  assert "\n" not in str(e.value) and field in str(e.value)


def test_best_test_epoch_is_the_max_of_the_per_epoch_accuracies():
  from jaxkd.models import get_model
  rng = np.random.default_rng(0)
  x = rng.random((96, 8, 8, 1)).astype(np.float32)
  y = (x.mean((1, 2, 3)) > 0.5).astype(np.int32)
  t = np.eye(2, dtype=np.float32)[y] * 0.9 + 0.05
  model = get_model("mlp", 2)
  s = loop.LoopSettings(epochs=4, batch_size=32, learning_rate=0.05,
                        track_best_test=True, seed=0)
  best = {}
  loop.fit_student(model, (8, 8, 1), s, x, t, y, seed=1, mesh=None,
                   loss="kd", test=(x[:48], y[:48]), best=best)
  # The same run again, recording every epoch's accuracy independently.
  accs = []
  state = train.create_train_state(model, jax.random.key(0), (8, 8, 1),
                                   train.student_optimizer(s, total_steps=12))
  train.fit(model, state, x, t, y, steps=12, batch_size=32, seed=1,
            loss_fn=train.make_loss_fn("kd", temperature=s.temperature),
            progress=False,
            on_epoch=lambda st, e: accs.append(train.accuracy(
                model, st.variables, x[:48], y[:48])))
  assert len(accs) == 4
  assert best["best_test_accuracy"] == max(accs)
  assert best["best_test_epoch"] == int(np.argmax(accs)) + 1


def test_random_flip_mirrors_about_half_and_leaves_the_rest():
  x = np.random.default_rng(1).random((400, 3, 5, 1)).astype(np.float32)
  got = train.random_flip(x, np.random.default_rng(3))
  flipped = np.array([np.array_equal(g, xi[:, ::-1]) for g, xi in zip(got, x)])
  kept = np.array([np.array_equal(g, xi) for g, xi in zip(got, x)])
  assert np.all(flipped ^ kept) and 150 < flipped.sum() < 250
