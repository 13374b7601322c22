"""Training: loss goes down, sharded step == single-device step, optimizers.

conftest.py gives 8 fake CPU devices: the single-device reference runs on
`make_mesh(jax.devices()[:1])`, the sharded run on `make_mesh()`.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxkd import parallel, train
from jaxkd.models import get_model
from jaxkd.validation import JaxkdError

MODEL = get_model("lenet5_half", 5)
KD = train.make_loss_fn("kd", temperature=2.0)
MIX = train.make_loss_fn("mix", temperature=2.0)
# One optimizer object for all step tests: tx is static in the jitted step,
# so sharing it (and KD, and the 16-row padded shape) shares compiles.
LR = 0.2
TX = train.make_optimizer("sgd", LR, momentum=0.9, schedule="constant")
# Reference forward pass: the model's own apply, jitted once per shape.
_apply = jax.jit(lambda v, x: MODEL.apply(v, x, return_features=True))


def _data(n, seed=0, c=5):
  rng = np.random.default_rng(seed)
  x = rng.random((n, 8, 8, 1)).astype(np.float32)
  t = rng.dirichlet(np.ones(c), size=n).astype(np.float32)
  y = rng.integers(0, c, size=n).astype(np.int32)
  return x, t, y


def _fresh_state(tx=TX, seed=0):
  # A new state each time: the jitted step donates it.
  return train.create_train_state(MODEL, jax.random.key(seed), (8, 8, 1), tx)


def _logits(params, x):
  return np.asarray(_apply({"params": params}, x)[0], np.float64)


def np_log_softmax(z):
  z = np.asarray(z, np.float64)
  z = z - z.max(-1, keepdims=True)
  return z - np.log(np.exp(z).sum(-1, keepdims=True))


def np_soft_ce(logits, targets):
  return float(np.mean(-np.sum(targets * np_log_softmax(logits), -1)))


def np_kd_from_probs(logits, probs, temp):
  """T^2 KL(softmax(log p / T) || softmax(s / T)), averaged over rows."""
  lt = np_log_softmax(np.log(probs) / temp)
  ls = np_log_softmax(np.asarray(logits) / temp)
  return float(temp ** 2 * np.mean(np.sum(np.exp(lt) * (lt - ls), -1)))


def _host(tree):
  return jax.tree.map(np.asarray, jax.device_get(tree))


# ------------------------------------------------------------- training ---


def test_fit_lowers_the_loss():
  # Soft targets far from uniform, so that there is a loss to lower.
  x, _, _ = _data(16)
  t = np.eye(5, dtype=np.float32)[np.arange(16) % 5] * 0.9 + 0.02
  state = _fresh_state()
  before = np_kd_from_probs(_logits(state.params, x), t, 2.0)
  state, history = train.fit(MODEL, state, x, t, epochs=8, batch_size=16,
                             seed=0, loss_fn=KD, progress=False)
  after = np_kd_from_probs(_logits(_host(state.params), x), t, 2.0)
  assert len(history) == 8
  np.testing.assert_allclose(history[0], before, rtol=1e-4)  # pre-update loss
  assert history[-1] < history[0]
  assert after < 0.9 * before, (before, after)
  assert int(state.step) == 8


@pytest.mark.parametrize("n", [16, 13])
def test_sharded_step_equals_single_device(n):
  # Labels travel sharded too: the accuracy metric uses them.
  assert jax.device_count() == 8
  x, t, y = _data(n, seed=n)
  results = []
  for mesh in (parallel.make_mesh(jax.devices()[:1]), parallel.make_mesh()):
    state = parallel.replicate(mesh, _fresh_state())
    for _ in range(2):  # two steps: momentum enters the second update
      state, metrics = train.sharded_train_step(state, x, t, y, model=MODEL,
                                                loss_fn=KD, mesh=mesh)
    results.append((_host(state), _host(metrics)))
  (s1, m1), (s8, m8) = results
  init = _host(_fresh_state().params)
  moved = max(np.abs(a - b).max() for a, b in zip(
      jax.tree.leaves(s1.params), jax.tree.leaves(init)))
  assert moved > 1e-3  # the comparison is not between two untouched states
  for a, b in zip(jax.tree.leaves(s1.params), jax.tree.leaves(s8.params)):
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(s1.opt_state), jax.tree.leaves(s8.opt_state)):
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(m1["loss"], m8["loss"], rtol=1e-5)
  np.testing.assert_allclose(m1["accuracy"], m8["accuracy"], rtol=1e-6)
  assert int(s8.step) == 2


def test_single_step_matches_numpy_loss_and_plain_gradient():
  # The 13-row batch padded to 16 on 8 devices: the reported loss is the
  # mean over the 13 real rows, and the first step is plain SGD on that loss
  # (momentum's trace starts at zero, so step one is p - lr g).
  x, t, y = _data(13, seed=3)
  init = _host(_fresh_state().params)
  mesh = parallel.make_mesh()
  state = parallel.replicate(mesh, _fresh_state())
  state, metrics = train.sharded_train_step(state, x, t, y, model=MODEL,
                                            loss_fn=KD, mesh=mesh)
  logits = _logits(init, x)
  np.testing.assert_allclose(metrics["loss"], np_kd_from_probs(logits, t, 2.0),
                             rtol=1e-5)
  np.testing.assert_allclose(
      metrics["accuracy"], np.mean(logits.argmax(-1) == y), rtol=1e-6)

  @jax.jit
  def plain_grad(p):
    def loss(p):  # KD at T = 2 written directly, teacher logits log t
      pt = jax.nn.softmax(jnp.log(t) / 2.0)
      ls = jax.nn.log_softmax(_apply({"params": p}, x)[0] / 2.0)
      return 4.0 * jnp.mean(jnp.sum(pt * (jnp.log(pt) - ls), -1))
    return jax.grad(loss)(p)

  grads = plain_grad(init)
  want = jax.tree.map(lambda p, g: p - LR * g, init, grads)
  for a, b in zip(jax.tree.leaves(_host(state.params)), jax.tree.leaves(want)):
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)


def test_predict_equals_model_apply():
  x, _, y = _data(13, seed=4)
  params = _host(_fresh_state().params)
  variables = {"params": params}
  want_logits, feats = _apply(variables, x)
  for mesh in (parallel.make_mesh(jax.devices()[:1]), parallel.make_mesh()):
    logits = train.predict(MODEL, variables, x, batch_size=8, mesh=mesh)
    assert logits.shape == (13, 5)
    np.testing.assert_allclose(logits, want_logits, atol=1e-5, rtol=1e-5)
  logits, emb = train.predict(MODEL, variables, x, batch_size=8,
                              return_embeddings=True)
  np.testing.assert_allclose(logits, want_logits, atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(emb, feats["embedding"], atol=1e-5, rtol=1e-5)
  acc = train.accuracy(MODEL, variables, x, y, batch_size=8)
  assert acc == pytest.approx(np.mean(np.argmax(want_logits, -1) == y))


# ----------------------------------------------------------- optimizers ---


def _updates(tx, grads_seq, params):
  """Runs tx over a list of gradients and returns the list of updates."""
  state = tx.init(params)
  out = []
  for g in grads_seq:
    u, state = tx.update(g, state, params)
    out.append(np.asarray(u))
  return out


def test_sgd_momentum_and_weight_decay_by_hand():
  p = jnp.array([1.0, -2.0])
  g1, g2 = jnp.array([0.5, 1.0]), jnp.array([-1.0, 2.0])
  tx = train.make_optimizer("sgd", 0.1, momentum=0.9, schedule="constant")
  u1, u2 = _updates(tx, [g1, g2], p)
  np.testing.assert_allclose(u1, -0.1 * np.array([0.5, 1.0]), rtol=1e-6)
  np.testing.assert_allclose(u2, -0.1 * (np.array([-1.0, 2.0])
                                         + 0.9 * np.array([0.5, 1.0])),
                             rtol=1e-6)
  tx = train.make_optimizer("sgd", 0.1, momentum=0.0, weight_decay=0.01,
                            schedule="constant")
  (u,) = _updates(tx, [g1], p)
  np.testing.assert_allclose(u, -0.1 * (np.array([0.5, 1.0])
                                        + 0.01 * np.array([1.0, -2.0])),
                             rtol=1e-6)


def test_adam_matches_numpy():
  p = np.array([1.0, -2.0, 0.5])
  gs = [np.array([0.5, -1.0, 2.0]), np.array([0.1, 0.3, -0.2]),
        np.array([-1.0, 0.0, 1.0])]
  lr, wd, b1, b2, eps = 0.01, 0.1, 0.9, 0.999, 1e-8
  tx = train.make_optimizer("adam", lr, weight_decay=wd, schedule="constant")
  got = _updates(tx, [jnp.asarray(g, jnp.float32) for g in gs],
                 jnp.asarray(p, jnp.float32))
  m = v = np.zeros(3)
  for step, g in enumerate(gs, start=1):
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    mhat, vhat = m / (1 - b1 ** step), v / (1 - b2 ** step)
    want = -lr * (mhat / (np.sqrt(vhat) + eps) + wd * p)  # decoupled (AdamW)
    np.testing.assert_allclose(got[step - 1], want, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("schedule,warmup,want", [
    ("constant", 0, [1.0] * 8),
    ("step", 0, [1.0] * 4 + [0.1] * 2 + [0.01] * 2),
    ("cosine", 0, [0.5 * (1 + np.cos(np.pi * s / 8)) for s in range(8)]),
    ("cosine", 2, [0.0, 0.5] + [0.5 * (1 + np.cos(np.pi * (s - 2) / 6))
                                for s in range(2, 8)]),
])
def test_schedules(schedule, warmup, want):
  # momentum 0 and unit gradients: the update at step s is -lr(s).
  tx = train.make_optimizer("sgd", 1.0, momentum=0.0, schedule=schedule,
                            total_steps=8, warmup_steps=warmup)
  got = _updates(tx, [jnp.ones(1)] * 8, jnp.zeros(1))
  np.testing.assert_allclose(-np.concatenate(got), want, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------ bad input ---


def test_unknown_names_raise():
  with pytest.raises(JaxkdError, match="optimizer"):
    train.make_optimizer("rmsprop")
  with pytest.raises(JaxkdError, match="schedule"):
    train.make_optimizer("sgd", schedule="linear")
  with pytest.raises(JaxkdError, match="loss"):
    train.make_loss_fn("l2")
  with pytest.raises(JaxkdError, match="no_such_model"):
    get_model("no_such_model", 10)


def test_loss_kinds_compute_the_named_loss():
  rng = np.random.default_rng(0)
  lo = rng.normal(size=(4, 5)).astype(np.float32)
  t = rng.dirichlet(np.ones(5), size=4).astype(np.float32)
  y = np.array([0, 4, 2, 2], np.int32)
  m = np.array([1, 1, 1, 0], np.float32)
  lp = np_log_softmax(lo)
  ce = -np.mean(lp[np.arange(3), y[:3]])
  soft = np_soft_ce(lo[:3], t[:3])
  # KD at T = 2 from probabilities: the teacher's logits are log t.
  ls, lt = np_log_softmax(lo / 2.0), np_log_softmax(np.log(t) / 2.0)
  kd = 4.0 * np.mean(np.sum(np.exp(lt[:3]) * (lt[:3] - ls[:3]), -1))
  np.testing.assert_allclose(train.make_loss_fn("hard_ce")(lo, t, y, m), ce,
                             rtol=1e-5)
  np.testing.assert_allclose(train.make_loss_fn("soft_ce")(lo, t, y, m), soft,
                             rtol=1e-5)
  np.testing.assert_allclose(KD(lo, t, y, m), kd, rtol=1e-5)
  np.testing.assert_allclose(MIX(lo, t, y, m), 0.1 * ce + 0.9 * kd, rtol=1e-5)


def test_fit_rejects_bad_input():
  x, t, y = _data(6)
  tx = TX
  kw = dict(epochs=1, batch_size=4, seed=0, loss_fn=KD, progress=False)
  bad = x.copy()
  bad[2, 3, 3, 0] = np.nan
  with pytest.raises(JaxkdError, match="images.*NaN"):
    train.fit(MODEL, _fresh_state(tx), bad, t, **kw)
  bad_t = t.copy()
  bad_t[0, 0] = np.inf
  with pytest.raises(JaxkdError, match="targets.*NaN or inf"):
    train.fit(MODEL, _fresh_state(tx), x, bad_t, **kw)
  with pytest.raises(JaxkdError, match="targets"):
    train.fit(MODEL, _fresh_state(tx), x, t[:5], **kw)
  with pytest.raises(JaxkdError, match="labels"):
    train.fit(MODEL, _fresh_state(tx), x, t, y[:5], **kw)
  with pytest.raises(JaxkdError, match="rank"):
    train.fit(MODEL, _fresh_state(tx), x[..., 0], t, **kw)
  with pytest.raises(JaxkdError, match="at least one"):
    train.fit(MODEL, _fresh_state(tx), x[:0], t[:0], **kw)
  with pytest.raises(JaxkdError, match="NaN"):
    train.predict(MODEL, {"params": _fresh_state(tx).params}, bad)
