"""Discriminative Active Learning (Gissin & Shalev-Shwartz 2019): the
classifier against scikit-learn, sub-batch retraining against a brute-force
re-implementation, the loop, and `python -m jaxkd.main`."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from jaxkd import loop, parallel
from jaxkd.models import get_model
from jaxkd.selection import discriminative as dal
from jaxkd.selection import get_strategy
from jaxkd.selection.baselines import random_subset
from jaxkd.selection.registry import parse_options
from jaxkd.teacher import TeacherOracle
from jaxkd.validation import JaxkdError

L2 = 0.05
LOGISTIC = dict(hidden=(), solver="lbfgs", steps=2000, l2=L2,
                unlabelled_ratio=0)


def _sklearn_picks(lab, feat, avail, sizes):
  """Brute force: refit sklearn's balanced L2 logistic regression on
  labelled (L + unavailable + picked) vs available after every sub-batch;
  pick the top decision values, highest first. Our objective is sklearn's
  divided by C n, so C = 1 / (l2 n)."""
  x = np.concatenate([lab, feat]).astype(np.float64)
  avail = avail.copy()
  picks = []
  for size in sizes:
    y = np.concatenate([np.zeros(len(lab)), avail]).astype(int)
    clf = LogisticRegression(C=1 / (L2 * len(x)), class_weight="balanced",
                             tol=1e-12, max_iter=100000).fit(x, y)
    s = np.where(avail, clf.decision_function(feat), -np.inf)
    chosen = np.argsort(-s, kind="stable")[:size]
    picks += chosen.tolist()
    avail[chosen] = False
  return picks


def _toy(seed=0, m=8, n=40, d=3):
  rng = np.random.default_rng(seed)
  lab = (rng.normal(size=(m, d)) - 2.0).astype(np.float32)
  feat = rng.normal(size=(n, d)).astype(np.float32)
  feat[: n // 4] -= 2.0     # some candidates look like the labelled set
  avail = np.ones(n, bool)
  avail[[0, 11, 12]] = False
  return lab, feat, avail


def test_one_sub_batch_equals_sklearn_logistic_regression():
  """A separable toy set: labelled points far from most candidates."""
  lab, feat, avail = _toy()
  got = dal.discriminative_select(jax.random.key(0), lab, feat, avail, 6,
                                  sub_batches=1, **LOGISTIC)
  assert got.tolist() == _sklearn_picks(lab, feat, avail, [6])


def test_sub_batch_retraining_equals_brute_force():
  lab, feat, avail = _toy(seed=1)
  assert dal.sub_batch_sizes(7, 3) == [3, 2, 2]
  assert dal.sub_batch_sizes(2, 20) == [1, 1]
  got = dal.discriminative_select(jax.random.key(0), lab, feat, avail, 7,
                                  sub_batches=3, **LOGISTIC)
  ref = _sklearn_picks(lab, feat, avail, [3, 2, 2])
  assert got.tolist() == ref
  # Retraining matters here: one fit would pick a different set.
  assert set(ref) != set(_sklearn_picks(lab, feat, avail, [7]))


def test_default_mlp_discriminator_and_unlabelled_subsets():
  rng = np.random.default_rng(2)
  lab = rng.normal(size=(6, 40)).astype(np.float32) + 1.0
  feat = rng.normal(size=(200, 40)).astype(np.float32)
  feat[:10] += 1.0
  avail = np.ones(200, bool)
  params, iters = dal.discriminator_fit(
      jax.random.key(0), np.concatenate([lab, feat]),
      np.r_[np.zeros(6, bool), avail], np.r_[np.ones(6, bool), ~avail])
  assert [params["params"][f"Dense_{i}"]["kernel"].shape[1]
          for i in range(4)] == [256, 256, 256, 1]       # the authors' MLP
  assert 1 <= iters < 500                                 # stopped at 98%
  # Each sub-batch fits on <= 10 x |labelled| random unlabelled points and
  # picks among them only: 20 sub-batches of 1.
  picks = dal.discriminative_select(jax.random.key(1), lab, feat, avail, 20)
  assert len(set(picks.tolist())) == 20 and avail[picks].all()
  with pytest.raises(JaxkdError, match="sub_batches"):
    dal.discriminative_select(jax.random.key(1), lab, feat, avail, 2,
                              sub_batches=0)
  with pytest.raises(JaxkdError, match="discriminative: unknown option"):
    parse_options(get_strategy("discriminative"), {"widths": 3})
  with pytest.raises(JaxkdError, match="labelled"):
    dal.discriminative_select(jax.random.key(1), lab[:0], feat, avail, 2)


def test_gathered_fit_of_a_large_pool_equals_the_masked_one(monkeypatch):
  """Above `_GATHER_ROWS` rows the fit and the scores run on the gathered
  (padded) rows of each sub-batch: the same picks as brute force, with
  every available row or a ratio-sized random subset."""
  lab, feat, avail = _toy(seed=1)
  masked = dal.discriminative_select(jax.random.key(0), lab, feat, avail, 7,
                                     sub_batches=3,
                                     **dict(LOGISTIC, unlabelled_ratio=1.0))
  monkeypatch.setattr(dal, "_GATHER_ROWS", 0)
  got = dal.discriminative_select(jax.random.key(0), lab, feat, avail, 7,
                                  sub_batches=3, **LOGISTIC)
  assert got.tolist() == _sklearn_picks(lab, feat, avail, [3, 2, 2])
  got = dal.discriminative_select(jax.random.key(0), lab, feat, avail, 7,
                                  sub_batches=3,
                                  **dict(LOGISTIC, unlabelled_ratio=1.0))
  assert got.tolist() == masked.tolist()


def test_one_forward_fit_takes_the_same_steps():
  """Adam's stopping accuracy read off each step's own forward pass: the
  same number of steps and, up to float rounding, the same parameters."""
  rng = np.random.default_rng(3)
  x = rng.normal(size=(120, 8)).astype(np.float32)
  x[:20] += 1.5
  unl, lab = np.arange(120) >= 20, np.arange(120) < 20
  for stop in (0.9, None):
    kw = dict(hidden=(16,), steps=60, learning_rate=1e-2, stop_accuracy=stop)
    a, ia = dal.discriminator_fit(jax.random.key(0), x, unl, lab, **kw)
    b, ib = dal.discriminator_fit(jax.random.key(0), x, unl, lab,
                                  one_forward=True, **kw)
    assert ia == ib and (ia < 60) == (stop is not None)
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
      np.testing.assert_allclose(u, v, rtol=1e-4, atol=1e-5)


def test_max_train_subsamples_both_sides_in_proportion(monkeypatch):
  assert dal._capped_sizes(100, 1000, 5, 110) == (10, 100)
  assert dal._capped_sizes(100, 1000, 105, 110) == (10, 105)  # >= sub-batch
  assert dal._capped_sizes(3, 4, 1, 10) == (3, 4)              # under the cap
  assert dal._capped_sizes(3, 4, 1, None) == (3, 4)
  lab, feat, avail = _toy(seed=2)
  opts = dict(LOGISTIC, unlabelled_ratio=2.0)
  key = jax.random.key(4)
  # Under the cap: the uncapped picks.
  assert (dal.discriminative_select(key, lab, feat, avail, 6, max_train=100,
                                    **opts).tolist()
          == dal.discriminative_select(key, lab, feat, avail, 6,
                                       max_train=None, **opts).tolist())
  fits = []
  real = dal.discriminator_fit

  def spy(k, x, unl, labelled, **kw):
    fits.append((int(np.sum(labelled)), int(np.sum(unl))))
    return real(k, x, unl, labelled, **kw)

  monkeypatch.setattr(dal, "discriminator_fit", spy)
  # One fit of 11 labelled vs 22 unlabelled, capped at 12 rows: 4 vs 8.
  got = dal.discriminative_select(key, lab, feat, avail, 3, sub_batches=1,
                                  max_train=12, **opts)
  assert fits == [(4, 8)]
  # Brute force on the same rows: the first 8 of the uniform order of the
  # available points, 4 of the 11 labelled by `random_subset`.
  k_sub, _ = jax.random.split(jax.random.fold_in(key, 0))
  u = np.where(avail, np.asarray(jax.random.uniform(k_sub, (len(feat),))),
               np.inf)
  sample = np.sort(np.argsort(u, kind="stable")[:8])
  is_lab = np.r_[np.ones(len(lab), bool), ~avail]
  rows = random_subset(jax.random.fold_in(k_sub, 1), is_lab, 4)
  x_all = np.concatenate([lab, feat]).astype(np.float64)
  x = np.concatenate([x_all[rows], feat[sample]])
  y = np.r_[np.zeros(4), np.ones(8)].astype(int)
  clf = LogisticRegression(C=1 / (L2 * len(x)), class_weight="balanced",
                           tol=1e-12, max_iter=100000).fit(x, y)
  s = clf.decision_function(feat[sample].astype(np.float64))
  assert got.tolist() == sample[np.argsort(-s, kind="stable")[:3]].tolist()
  with pytest.raises(JaxkdError, match="max_train"):
    parse_options(get_strategy("discriminative"), {"max_train": 1})


def test_run_loop_labels_initial_and_paid_points(tmp_path, monkeypatch):
  rng = np.random.default_rng(0)
  pool = rng.random((40, 4, 4, 1)).astype(np.float32)
  w = rng.normal(size=(16, 3))
  teacher = lambda x: x.reshape(len(x), -1) @ w
  seen = []
  real = dal.discriminative_select

  def spy(key, labelled, features, available, k, **kw):
    seen.append((len(labelled), int(np.sum(available)), kw))
    return real(key, labelled, features, available, k, **kw)

  monkeypatch.setattr(dal, "discriminative_select", spy)
  settings = loop.LoopSettings(rounds=2, per_round=4, train_steps=3,
                               batch_size=8,
                               strategy_options={"sub_batches": 2})
  assert get_strategy("discriminative").needs == {"embeddings"}
  oracle = TeacherOracle(teacher, pool, budget=18,
                         ledger_path=str(tmp_path / "ledger.sqlite"))
  try:
    recs = loop.run_loop(
        strategy="discriminative", student=get_model("mlp", 3, hidden=(16,)),
        oracle=oracle, initial_indices=np.arange(10),
        candidate_indices=10 + np.arange(30), test_images=pool[:8],
        test_labels=np.zeros(8, np.int32), teacher_accuracy=1.0,
        settings=settings, workdir=str(tmp_path), progress=False,
        log=lambda m: None, mesh=parallel.make_mesh(jax.devices()[:1]))
    keys = [e["key"] for e in oracle.entries()]
  finally:
    oracle.close()
  assert [r["queries"] for r in recs] == [10, 14, 18]
  assert len(set(keys)) == 18
  # L (10 points) is embedded separately; paid candidates are unavailable.
  assert [s[:2] for s in seen] == [(10, 30), (10, 26)]
  # The run's options, whole: the given one and every other at its default.
  assert seen[0][2] == dict(sub_batches=2, unlabelled_ratio=10.0, hidden=None,
                            solver="adam", steps=500, learning_rate=3e-4,
                            l2=0.0, stop_accuracy=0.98, max_train=8192)


def test_bad_options_fail_before_anything_is_paid(tmp_path):
  oracle = TeacherOracle(lambda x: np.zeros((len(x), 3)),
                         np.zeros((20, 4, 4, 1), np.float32), budget=20,
                         ledger_path=str(tmp_path / "ledger.sqlite"))
  try:
    for name, opts in (("discriminative", {"sub_batches": 0}),
                       ("learning_loss", {"detach_fraction": 2.0})):
      with pytest.raises(JaxkdError, match=name):
        loop.run_loop(
            strategy=name, student=get_model("mlp", 3, hidden=(4,)),
            oracle=oracle, initial_indices=np.arange(5),
            candidate_indices=5 + np.arange(15),
            test_images=np.zeros((2, 4, 4, 1), np.float32),
            test_labels=np.zeros(2, np.int32), teacher_accuracy=1.0,
            settings=loop.LoopSettings(rounds=1, per_round=2, train_steps=1,
                                       strategy_options=opts),
            workdir=str(tmp_path / name), progress=False, log=lambda m: None)
    assert oracle.spent == 0
  finally:
    oracle.close()


def test_main_runs_both_strategies(tmp_path):
  """`python -m jaxkd.main --strategy=learning_loss,discriminative` on a
  tiny digits config."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = dict(os.environ, PYTHONPATH=root, JAX_PLATFORMS="cpu",
             XLA_FLAGS="")
  cmd = [sys.executable, "-m", "jaxkd.main",
         "--strategy=learning_loss,discriminative",
         f"--workdir={tmp_path}", "--config.split.teacher_train=200",
         "--config.split.initial=20", "--config.split.pool=40",
         "--config.split.test=100", "--config.student=mlp",
         "--config.teacher.model=mlp", "--config.teacher.epochs=1",
         "--config.rounds=1", "--config.per_round=5",
         "--config.loop.train_steps=3", "--config.progress=False"]
  out = subprocess.run(cmd, env=env, cwd=root, capture_output=True,
                       text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-2000:]
  with open(tmp_path / "results.json") as f:
    res = json.load(f)
  for name in ("learning_loss", "discriminative"):
    (records,) = res["strategies"][name]
    assert [r["queries"] for r in records] == [20, 25]
