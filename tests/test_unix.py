"""UNIX step: correction factor, mixing, selection, sharding, config checks."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxkd import parallel, train, unix
from jaxkd.models import get_model
from jaxkd.validation import JaxkdError


def _sigmoid(z):
  return 1.0 / (1.0 + math.exp(-z))


def _np_entropy(logits):
  z = logits - logits.max(-1, keepdims=True)
  p = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
  return -(p * np.log(p)).sum(-1)


# ---------------------------------------------------------------- formulas ---


def test_correction_factor_hand_values():
  # N = 4, w = 10, default b = N/2 = 2: c_i = sigmoid(10 (i + 0.5 - 2) / 4).
  got = np.asarray(jax.jit(lambda: unix.correction_factor(4, 4, w=10.0))())
  want = [_sigmoid(-3.75), _sigmoid(-1.25), _sigmoid(1.25), _sigmoid(3.75)]
  np.testing.assert_allclose(got, want, rtol=1e-6)
  # explicit b = 1, N = 8, w = 1000, first 3 ranks: a step between rank 0 and 1.
  got = np.asarray(unix.correction_factor(3, 8, w=1000.0, b=1.0))
  np.testing.assert_allclose(got, [_sigmoid(-62.5), _sigmoid(62.5),
                                   _sigmoid(187.5)], atol=1e-7)
  assert got[0] < 0.5 < got[1]


def test_mix_images_hand_values():
  xs = jnp.array([1.0, 2.0]).reshape(2, 1, 1, 1)
  xp = jnp.array([3.0, 5.0]).reshape(2, 1, 1, 1)
  got = jax.jit(unix.mix_images)(xs, xp, 0.5, jnp.array([0.2, 1.0]))
  # m = c lam = [0.1, 0.5]: 0.9 * 1 + 0.1 * 3 = 1.2; 0.5 * 2 + 0.5 * 5 = 3.5.
  np.testing.assert_allclose(np.asarray(got).ravel(), [1.2, 3.5], rtol=1e-6)


def test_uncertainty_scores_match_numpy():
  logits = np.array([[2.0, 1.0, 0.0], [0.0, 0.0, 0.0], [5.0, -1.0, 4.5]],
                    np.float32)
  z = np.exp(logits - logits.max(-1, keepdims=True))
  p = z / z.sum(-1, keepdims=True)
  ps = np.sort(p, -1)
  want = {"entropy": -(p * np.log(p)).sum(-1), "confidence": -p.max(-1),
          "margin": -(ps[:, -1] - ps[:, -2])}
  for kind, ref in want.items():
    got = jax.jit(unix.uncertainty_scores, static_argnums=1)(logits, kind)
    np.testing.assert_allclose(np.asarray(got), ref, rtol=1e-5, atol=1e-6)


def test_select_keeps_most_uncertain_and_never_padding():
  # 5 real rows padded to 8; padding gets huge scores and must be ignored.
  scores = jnp.array([0.3, 0.9, 0.1, 0.7, 0.5, 100.0, 100.0, 100.0])
  images = jnp.arange(8, dtype=jnp.float32).reshape(8, 1, 1, 1) + 1.0
  cfg = unix.UnixConfig(k=3, w=10.0)
  fn = jax.jit(unix.select_and_mix, static_argnums=(3, 4, 5))
  x, mask, info = fn(jax.random.key(3), images, scores, 5, 8, cfg)
  sel, par = np.asarray(info["selected"]), np.asarray(info["partners"])
  np.testing.assert_array_equal(sel[:3], [1, 3, 4])   # 0.9, 0.7, 0.5
  np.testing.assert_array_equal(np.asarray(mask), [1, 1, 1, 0, 0, 0, 0, 0])
  assert set(sel[:5]) == set(range(5))                 # padding sorted last
  assert sorted(par[:5]) == list(range(5))             # partners: real rows
  lam = float(info["lam"])
  c = [_sigmoid(10 * (i + 0.5 - 2.5) / 5) for i in range(8)]
  want = [(1 - c[i] * lam) * (sel[i] + 1) + c[i] * lam * (par[i] + 1)
          for i in range(3)]
  np.testing.assert_allclose(np.asarray(x).ravel()[:3], want, rtol=1e-5)
  # without mixup the kept images are the selected rows themselves
  cfg = unix.UnixConfig(k=3, mixup=False)
  x, _, _ = fn(jax.random.key(3), images, scores, 5, 8, cfg)
  np.testing.assert_array_equal(np.asarray(x).ravel()[:3], [2.0, 4.0, 5.0])
  # non-adaptive mixup: c = 1 for every rank
  cfg = unix.UnixConfig(k=3, adaptive=False)
  _, _, info = fn(jax.random.key(3), images, scores, 5, 8, cfg)
  np.testing.assert_array_equal(np.asarray(info["correction"]), np.ones(8))


# ------------------------------------------------------------- full step ---

_S = get_model("lenet5_half", 10)
_T = get_model("lenet5", 10)


def _init(model, seed):
  # Shapes from eval_shape, values from NumPy: no per-op compiles (fast).
  shapes = jax.eval_shape(lambda: model.init(
      jax.random.key(0), jnp.zeros((1, 8, 8, 1)), train=False))
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: (rng.normal(size=s.shape) / np.sqrt(
      np.prod(s.shape[:-1]) if len(s.shape) > 1 else 10.0)).astype(np.float32),
                      dict(shapes))


def _states():
  tx = train.make_optimizer("sgd", 0.1, schedule="constant")
  st = train.TrainState.create(apply_fn=_S.apply, params=_init(_S, 0)["params"],
                               tx=tx, batch_stats={})
  return st, _init(_T, 1)


def _images(n):
  return np.random.default_rng(0).uniform(size=(n, 8, 8, 1)).astype(np.float32)


@pytest.mark.parametrize("n,cfg", [
    (60, unix.UnixConfig(k=45, ce_weight=0.1, kd_weight=0.9,
                         feature_loss="at")),
    (64, unix.UnixConfig(k=48, uncertainty="margin", feature_loss="sp",
                         w=1000.0)),
])
def test_sharded_step_equals_single_device(n, cfg):
  images = _images(n)
  key = jax.random.key(7)
  out = []
  for mesh in (parallel.make_mesh(jax.devices()[:1]), parallel.make_mesh()):
    st, tv = _states()
    st = parallel.replicate(mesh, st)
    tv = parallel.replicate(mesh, tv)
    st, m = unix.unix_train_step(st, tv, images, key, student=_S, teacher=_T,
                                 config=cfg, mesh=mesh)
    out.append((jax.device_get(st.params), jax.device_get(m)))
  (p1, m1), (p8, m8) = out
  assert parallel.num_shards(parallel.make_mesh()) == 8
  k = cfg.k
  np.testing.assert_array_equal(m1["selected"][:k], m8["selected"][:k])
  np.testing.assert_array_equal(m1["partners"][:k], m8["partners"][:k])
  assert np.all(m8["selected"][:k] < n) and np.all(m8["partners"][:k] < n)
  for key_ in ("loss", "kd", "lam"):
    np.testing.assert_allclose(m1[key_], m8[key_], rtol=1e-5, atol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5,
                                                       atol=1e-6), p1, p8)
  # the kept images are the k most uncertain under the student's eval logits
  st, _ = _states()
  logits = np.asarray(jax.jit(_S.apply)({"params": st.params}, images),
                      np.float64)
  if cfg.uncertainty == "entropy":
    score = _np_entropy(logits)
  else:
    z = np.exp(logits - logits.max(-1, keepdims=True))
    p = np.sort(z / z.sum(-1, keepdims=True), -1)
    score = -(p[:, -1] - p[:, -2])
  assert set(m8["selected"][:k]) == set(np.argsort(-score)[:k])


def test_plain_kd_keeps_all_in_order_and_counts():
  cfg = unix.method_config("kd", batch_size=12, k=5)
  assert cfg.k == 12 and not cfg.needs_student_pass
  st, tv = _states()
  mesh = parallel.make_mesh()
  st, m = unix.unix_train_step(parallel.replicate(mesh, st), tv, _images(12),
                               jax.random.key(0), student=_S, teacher=_T,
                               config=cfg, mesh=mesh)
  np.testing.assert_array_equal(jax.device_get(m["selected"])[:12],
                                np.arange(12))
  assert unix.step_counts(64, unix.method_config("kd", batch_size=64, k=48)) \
      == (64, 64, 64)
  assert unix.step_counts(64, unix.method_config("unix", batch_size=64, k=48)) \
      == (48, 112, 48)
  assert unix.step_counts(64, unix.method_config("random_kd", batch_size=64,
                                                 k=48)) == (48, 48, 48)
  # a partial batch keeps ceil(k n / N)
  assert unix.config_for_batch(unix.UnixConfig(k=48), 10, 64).k == 8


@pytest.mark.parametrize("kw", [dict(k=65), dict(k=0), dict(k=-3), dict(w=0.0),
                                dict(w=-1.0), dict(alpha=0.0),
                                dict(alpha=-1.0), dict(uncertainty="bald"),
                                dict(feature_loss="fitnet")])
def test_bad_configs_raise(kw):
  cfg = unix.UnixConfig(**kw)
  with pytest.raises(JaxkdError):
    cfg.validate(64)
  if "k" in kw:  # the public step checks k against the actual batch
    st, tv = _states()
    with pytest.raises(JaxkdError, match="k"):
      unix.unix_train_step(st, tv, _images(64), jax.random.key(0), student=_S,
                           teacher=_T, config=cfg)


def test_bad_method_and_feature_mismatch_raise():
  with pytest.raises(JaxkdError, match="method"):
    unix.method_config("mixmatch", batch_size=64, k=48)
  st, tv = _states()
  mlp = get_model("mlp", 10)
  with pytest.raises(JaxkdError, match="maps"):
    unix.check_feature_maps(_S, st.variables, mlp, _init(mlp, 0), (8, 8, 1),
                            "at")


def test_nan_host_batch_raises_before_the_step():
  st, tv = _states()
  x = _images(64)
  x[3, 0, 0, 0] = np.nan
  with pytest.raises(JaxkdError, match="NaN"):
    unix.unix_train_step(st, tv, x, jax.random.key(0), student=_S,
                         teacher=_T, config=unix.UnixConfig(k=48))


# ------------------------------------------------- training through fit ---


def test_unix_fit_trains_through_train_fit_as_the_paper_loop():
  """unix_fit (train.fit with the UNIX step) equals the loop written out
  here: ceil(epochs N / B) steps on full batches cut from concatenated
  seeded permutations, step t keyed fold_in(key(seed), t)."""
  from jaxkd import cost
  cfg = unix.method_config("unix", batch_size=8, k=6)
  images = _images(20)
  mesh = parallel.make_mesh(jax.devices()[:1])
  st, tv = _states()
  counter = cost.CostCounter()
  got, history = unix.unix_fit(_S, st, _T, tv, images, epochs=2, batch_size=8,
                               seed=3, config=cfg, mesh=mesh, counter=counter,
                               progress=False)
  want, _ = _states()
  want = parallel.replicate(mesh, want)
  rng, key = np.random.default_rng(3), jax.random.key(3)
  order = np.concatenate([rng.permutation(20) for _ in range(3)])
  for t in range(5):                      # ceil(2 * 20 / 8)
    idx = order[8 * t:8 * (t + 1)]
    want, _ = unix.unix_train_step(want, tv, images[idx],
                                   jax.random.fold_in(key, t), student=_S,
                                   teacher=_T, config=cfg, mesh=mesh)
  for a, b in zip(jax.tree.leaves(jax.device_get(got.params)),
                  jax.tree.leaves(jax.device_get(want.params))):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
  assert len(history) == 2 and int(got.step) == 5
  assert counter.as_dict()["teacher_forwards"] == 5 * 6


def test_unix_job_runs_through_the_one_entry_point(tmp_path):
  from jaxkd import experiment
  from jaxkd.configs import common
  c = common.unix_config(student="mlp", seeds=(0,), progress=False)
  c.teacher.update(model="mlp", epochs=1)
  c.unix.update(methods=("kd", "unix"), epochs=1, max_train=32,
                batch_size=16, k=12)
  out = experiment.train_and_evaluate(c, str(tmp_path))
  assert out["job"] == "unix" and set(out["strategies"]) == {"kd", "unix"}
  kd, ux = (out["strategies"][m][0][0] for m in ("kd", "unix"))
  f = out["flops_per_image"]
  ft, fs, bs = (f["teacher_forward"], f["student_forward"],
                f["student_backward"])
  # 2 steps of N = 16: KD pays all 16 once; UNIX keeps 12 and adds the
  # 16-image uncertainty pass of the student.
  assert kd["computation"] == pytest.approx(1.0)
  assert ux["computation"] == pytest.approx(
      (12 * ft + (12 + 16) * fs + 12 * bs) / (16 * (ft + fs + bs)))
  assert ux["counts"]["teacher_forwards"] == 2 * 12
  # the paper's convention B_s = F_s (Eq. 11) beside XLA's, and F_t / F_s
  assert ux["flops_ratio"] == pytest.approx(ft / fs)
  assert out["flops_ratio"] == pytest.approx(ft / fs)
  assert kd["computation_paper"] == pytest.approx(1.0)
  assert ux["computation_paper"] == pytest.approx(
      (12 * ft + (12 + 16) * fs + 12 * fs) / (16 * (ft + 2 * fs)))
  assert "UNIX" in out["table"] and (tmp_path / "results.json").exists()


def test_unix_job_resumes_finished_runs_without_training_them(tmp_path,
                                                              monkeypatch):
  """A killed UNIX job restores each finished (method, seed) from its
  seed<s>.json and trains only the rest."""
  from jaxkd import experiment, unix
  from jaxkd.configs import common
  c = common.unix_config(student="mlp", seeds=(0, 1), progress=False)
  c.teacher.update(model="mlp", epochs=1)
  c.unix.update(methods=("kd", "unix"), epochs=1, max_train=32,
                batch_size=16, k=12)
  first = experiment.train_and_evaluate(c, str(tmp_path))
  # Lose one finished run (as if killed before it was written).
  (tmp_path / "unix" / "seed1.json").unlink()
  calls = []
  real_fit = unix.unix_fit
  monkeypatch.setattr(unix, "unix_fit", lambda *a, **k: (
      calls.append(k["desc"]), real_fit(*a, **k))[1])
  again = experiment.train_and_evaluate(c, str(tmp_path))
  assert calls == ["unix seed 1"]
  for m in ("kd", "unix"):
    for a, b in zip(first["strategies"][m][0], again["strategies"][m][0]):
      assert a["student_accuracy"] == b["student_accuracy"]
      assert a["counts"] == b["counts"]
