"""Learning Loss (Yoo & Kweon 2019) as a strategy with a training hook:
ranking loss, module, detaching, joint training, selection, the loop."""

import numpy as np
import jax
import jax.numpy as jnp
import pytest

from jaxkd import loop, parallel, train
from jaxkd.models import apply_model, get_model, init_model
from jaxkd.selection import get_strategy
from jaxkd.selection import learning_loss as ll
from jaxkd.selection.registry import parse_options
from jaxkd.teacher import TeacherOracle
from jaxkd.validation import JaxkdError


def _np_ranking(pred, target, r, margin=1.0):
  """Yoo & Kweon's LossPredLoss on the first r rows: input - input.flip."""
  p, t = np.asarray(pred[:r], np.float64), np.asarray(target[:r], np.float64)
  half = r // 2
  dp = (p - p[::-1])[:half]
  dt = (t - t[::-1])[:half]
  one = 2 * np.sign(np.clip(dt, 0, None)) - 1
  return np.sum(np.clip(margin - one * dp, 0, None)) / max(half, 1)


@pytest.mark.parametrize("b,r,margin", [(8, 8, 1.0), (8, 5, 1.0),
                                        (6, 6, 0.5), (4, 1, 1.0)])
def test_ranking_loss_matches_numpy(b, r, margin):
  rng = np.random.default_rng(b + r)
  pred, target = rng.normal(size=b), rng.normal(size=b)
  target[1] = target[r - 2] if r > 3 else target[1]   # a tie: sign -1
  mask = (np.arange(b) < r).astype(np.float32)
  got = jax.jit(ll.ranking_loss, static_argnames="margin")(
      jnp.asarray(pred, jnp.float32), jnp.asarray(target, jnp.float32),
      jnp.asarray(mask), margin=margin)
  np.testing.assert_allclose(float(got), _np_ranking(pred, target, r, margin),
                             rtol=1e-5, atol=1e-6)


def test_module_pools_stages_and_predicts_one_scalar_per_row():
  model = get_model("lenet5_half", 10)
  v = init_model(model, jax.random.key(0), (8, 8, 1))
  x = jax.random.uniform(jax.random.key(1), (5, 8, 8, 1))
  feats = jax.jit(lambda v, x: apply_model(model, v, x,
                                           return_features=True)[0][1])(v, x)
  stages = ll.student_stages(feats)
  assert [s.shape for s in stages] == [(5, 8, 8, 3), (5, 4, 4, 8), (5, 42)]
  module = ll.LossPredictionModule(width=16)
  params = ll.init_module(model, (8, 8, 1), module, jax.random.key(2))
  out = jax.jit(module.apply)(params, stages)
  assert out.shape == (5,)
  # NumPy: GAP, FC + ReLU per stage, concat, FC.
  p = params["params"]
  hs = []
  for i, f in enumerate(stages):
    f = np.asarray(f, np.float64)
    f = f.mean(axis=(1, 2)) if f.ndim == 4 else f
    d = p[f"Dense_{i}"]
    hs.append(np.maximum(f @ np.asarray(d["kernel"]) + np.asarray(d["bias"]),
                         0))
    assert d["kernel"].shape == (f.shape[1], 16)
  last = p["Dense_3"]
  ref = np.concatenate(hs, 1) @ np.asarray(last["kernel"])[:, 0] + float(
      last["bias"][0])
  np.testing.assert_allclose(np.asarray(out), ref, rtol=1e-4, atol=1e-5)
  # Without the embedding: maps only; an MLP (no maps) keeps its embedding.
  assert len(ll.student_stages(feats, use_embedding=False)) == 2
  assert len(ll.student_stages({"maps": (), "embedding": stages[2]},
                               use_embedding=False)) == 1


def _batch(n=6, seed=0, classes=3):
  rng = np.random.default_rng(seed)
  x = rng.random((n, 4, 4, 1)).astype(np.float32)
  t = rng.dirichlet(np.ones(classes), n).astype(np.float32)
  return train.Batch(jnp.asarray(x), jnp.asarray(t),
                     jnp.asarray(t.argmax(1), jnp.int32), jnp.ones(n))


def test_gradients_stop_reaching_the_student_after_the_detach_fraction():
  assert [ll.detach_gate(t, 10, 0.6) for t in range(10)] == [1.0] * 6 + [
      0.0] * 4
  model = get_model("mlp", 3, hidden=(8, 8))
  v = init_model(model, jax.random.key(0), (4, 4, 1))
  module = ll.LossPredictionModule(width=8)
  lp = ll.init_module(model, (4, 4, 1), module, jax.random.key(1))
  batch = _batch()
  loss_fn = train.make_loss_fn("kd", temperature=4.0)

  @jax.jit
  def grads(gate):
    return jax.grad(lambda p: ll.joint_objective(
        p, lp, {}, batch, gate, model=model, module=module,
        loss_fn=loss_fn)[0])(v["params"])

  # The student's own KD loss alone, computed without the module.
  own = jax.jit(jax.grad(lambda p: loss_fn(
      model.apply({"params": p}, batch.images), batch.targets, batch.labels,
      batch.mask)))(v["params"])
  flat = lambda g: np.concatenate([np.ravel(a) for a in jax.tree.leaves(g)])
  np.testing.assert_allclose(flat(grads(0.0)), flat(own), rtol=1e-5,
                             atol=1e-7)
  assert np.abs(flat(grads(1.0)) - flat(own)).max() > 1e-4
  # The module itself keeps learning after the detach.
  g_mod = jax.jit(jax.grad(lambda q: ll.joint_objective(
      v["params"], q, {}, batch, 0.0, model=model, module=module,
      loss_fn=loss_fn)[0]))(lp)
  assert np.abs(flat(g_mod)).max() > 0


def test_joint_training_learns_to_rank_a_known_loss():
  """The true per-example loss is 5 t0(x) with t0 = sigmoid(a . x): the
  module must rank inputs by a . x from the student's features."""
  rng = np.random.default_rng(0)
  n = 64
  x = rng.normal(size=(n, 4, 4, 1)).astype(np.float32)
  a = rng.normal(size=16)
  t0 = 1 / (1 + np.exp(-(x.reshape(n, -1) @ a)))
  targets = np.stack([t0, 1 - t0], 1).astype(np.float32)
  true_loss = 5 * t0
  # A loss whose value ignores the logits (0 * logits keeps the graph).
  loss_fn = lambda lo, t, y, m: jnp.sum(
      (5 * t[:, 0] + 0 * lo[:, 0]) * m) / jnp.maximum(jnp.sum(m), 1)
  model = get_model("mlp", 2, hidden=(32,))
  module = ll.LossPredictionModule(width=32)
  tx = train.make_optimizer("adam", 3e-3, schedule="constant")
  state = train.create_train_state(model, jax.random.key(0), (4, 4, 1), tx)
  lp = ll.init_module(model, (4, 4, 1), module, jax.random.key(1))
  mesh = parallel.make_mesh(jax.devices()[:1])

  @jax.jit
  def predict(variables, lp):
    (_, feats), _ = apply_model(model, variables, jnp.asarray(x),
                                return_features=True)
    return module.apply(lp, ll.student_stages(feats))

  def rank_loss(state, lp):
    pred = np.asarray(predict(state.variables, lp))
    order = rng.permutation(n)
    return _np_ranking(pred[order], true_loss[order], n), pred

  before, _ = rank_loss(state, lp)
  step_fn = ll.joint_step_fn(model, module, loss_fn, mesh, steps=150,
                             detach_fraction=0.6, weight=1.0, margin=1.0,
                             use_embedding=True)
  (state, lp, _), _ = train.fit(model, (state, lp, tx.init(lp)), x, targets,
                                steps=150, batch_size=32, seed=0,
                                step_fn=step_fn, mesh=mesh, progress=False)
  after, pred = rank_loss(state, lp)
  assert before > 0.6 and after < 0.5 * before
  ranks = lambda v: np.argsort(np.argsort(v))
  assert np.corrcoef(ranks(pred), ranks(true_loss))[0, 1] > 0.9


def test_selection_is_top_k_predicted_loss_among_available():
  rng = np.random.default_rng(3)
  scores = rng.normal(size=50).astype(np.float32)
  scores[7] = scores[9] = 5.0                       # tie: lower index first
  avail = rng.random(50) < 0.7
  avail[[7, 9]] = True
  got = ll.learning_loss_select(jax.random.key(0), scores, avail, 6)
  ref = np.argsort(-np.where(avail, scores, -np.inf), kind="stable")[:6]
  assert got.tolist() == ref.tolist() and got[:2].tolist() == [7, 9]
  # A random subset of `subset` available points when more are available.
  sub = ll.learning_loss_select(jax.random.key(0), scores, avail, 4,
                                subset=10)
  assert len(set(sub.tolist())) == 4 and avail[sub].all()
  with pytest.raises(JaxkdError, match="learning_loss: margin"):
    parse_options(get_strategy("learning_loss"), {"margin": -1.0})
  with pytest.raises(JaxkdError, match="learning_loss: unknown option"):
    parse_options(get_strategy("learning_loss"), {"nope": 1})


def test_select_scores_only_the_drawn_subset(monkeypatch):
  """Above `subset` available candidates only the drawn ones go through
  the student and module: the picks of `learning_loss_select` on every
  candidate's score, with `subset` forwards instead of n."""
  import types
  rng = np.random.default_rng(4)
  n = 60
  images = rng.random((n, 2, 2, 1)).astype(np.float32)
  avail = rng.random(n) < 0.8
  seen = []

  def fake_loss(model, module, variables, lparams, imgs, **kw):
    seen.append(len(imgs))
    return np.asarray(imgs).reshape(len(imgs), -1).sum(1)

  monkeypatch.setattr(ll, "predicted_loss", fake_loss)
  ctx = types.SimpleNamespace(student=None, state=types.SimpleNamespace(
      variables=None), extra={"params": None}, candidate_images=images,
                              mesh=None)
  inputs = types.SimpleNamespace(available=avail)
  strat = get_strategy("learning_loss")
  all_scores = images.reshape(n, -1).sum(1)
  key = jax.random.key(5)
  for subset, forwards in ((10, 10), (n, n)):
    seen.clear()
    got = strat.select(key, ctx, inputs, 4, subset=subset).indices
    assert seen == [forwards]
    assert got.tolist() == ll.learning_loss_select(
        key, all_scores, avail, 4, subset=subset).tolist()
  keep = ll.candidate_subset(key, avail, 4, 10)
  assert keep.sum() == 10 and avail[keep].all()
  assert ll.candidate_subset(key, avail, 12, 10).sum() == 12   # >= k


def test_run_loop_pays_each_round_once_and_resumes_the_module(tmp_path):
  rng = np.random.default_rng(0)
  pool = rng.random((40, 4, 4, 1)).astype(np.float32)
  w = rng.normal(size=(16, 3))
  teacher = lambda x: x.reshape(len(x), -1) @ w
  settings = loop.LoopSettings(rounds=2, per_round=4, train_steps=4,
                               batch_size=8)
  student = get_model("lenet5_half", 3)
  strat = get_strategy("learning_loss")
  assert strat.needs == frozenset()

  def run():
    oracle = TeacherOracle(teacher, pool, budget=18,
                           ledger_path=str(tmp_path / "ledger.sqlite"))
    try:
      recs = loop.run_loop(
          strategy="learning_loss", student=student, oracle=oracle,
          initial_indices=np.arange(10), candidate_indices=10 + np.arange(30),
          test_images=pool[:8], test_labels=np.zeros(8, np.int32),
          teacher_accuracy=1.0, settings=settings, workdir=str(tmp_path),
          progress=False, log=lambda m: None,
          mesh=parallel.make_mesh(jax.devices()[:1]))
      return recs, [e["key"] for e in oracle.entries()]
    finally:
      oracle.close()

  recs, keys = run()
  assert [r["queries"] for r in recs] == [10, 14, 18]
  assert [r["selected"] for r in recs] == [10, 4, 4]
  assert len(set(keys)) == len(keys) == 18
  again, keys2 = run()               # restores student + module: no payment
  assert keys2 == keys and [r["queries"] for r in again] == [10, 14, 18]
