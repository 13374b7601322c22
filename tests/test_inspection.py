"""jaxkd.inspection (ledger rows of a round) and the notebook plot helpers."""

import json
import os

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from jaxkd import inspection, plotting  # noqa: E402
from jaxkd.teacher import TeacherOracle  # noqa: E402
from jaxkd.validation import JaxkdError  # noqa: E402

_W = np.random.default_rng(1).normal(size=(12, 4)).astype(np.float32)


def _teacher(x):
  return np.asarray(x).reshape(len(x), -1) @ _W


def _softmax(z):
  z = z - z.max(1, keepdims=True)
  e = np.exp(z)
  return e / e.sum(1, keepdims=True)


@pytest.fixture
def oracle(tmp_path):
  pool = np.random.default_rng(0).random((6, 2, 3, 2)).astype(np.float32)
  o = TeacherOracle(_teacher, pool, budget=10,
                    ledger_path=os.path.join(tmp_path, "ledger.sqlite"))
  o.query(np.array([4, 1]), round=0)
  o.query(np.array([0]), round=1)
  # (3, 2, 0.25) is stored canonically as (2, 3, 0.75).
  o.query_mixup(np.array([[0, 5], [3, 2]]), np.array([0.4, 0.25]), round=1)
  o.query(np.array([2]), round=2)
  yield o
  o.close()


def test_paid_in_round_rebuilds_images_and_answers(oracle):
  pool = oracle.pool_images
  rows = inspection.paid_in_round(oracle, 1)
  want = np.stack([pool[0], 0.4 * pool[0] + 0.6 * pool[5],
                   0.75 * pool[2] + 0.25 * pool[3]])
  assert rows.kinds == ("pool", "mixup", "mixup")
  np.testing.assert_allclose(rows.images, want, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(rows.probs, _softmax(
      want.reshape(3, -1).astype(np.float64) @ _W), rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(rows.pool_indices, [0, -1, -1])
  np.testing.assert_array_equal(rows.pairs, [[-1, -1], [0, 5], [2, 3]])
  np.testing.assert_allclose(rows.lams, [np.nan, 0.4, 0.75])


def test_paid_in_round_filters_round_and_kind(oracle):
  r0 = inspection.paid_in_round(oracle, 0)
  np.testing.assert_array_equal(r0.pool_indices, [4, 1])
  np.testing.assert_array_equal(r0.images, oracle.pool_images[[4, 1]])
  mix = inspection.paid_in_round(oracle, 1, kind="mixup")
  assert mix.kinds == ("mixup", "mixup") and mix.images.shape == (2, 2, 3, 2)
  empty = inspection.paid_in_round(oracle, 7)
  assert empty.images.shape == (0, 2, 3, 2) and empty.probs.shape == (0, 4)
  assert oracle.spent == 6  # reading never pays
  with pytest.raises(JaxkdError):
    inspection.paid_in_round(oracle, 1, kind="image")
  with pytest.raises(JaxkdError):
    inspection.paid_in_round(oracle, -1)


def test_top_answers_and_captions():
  p = np.array([[0.1, 0.6, 0.3, 0.0], [0.25, 0.25, 0.5, 0.0]])
  classes, probs = inspection.top_answers(p, 3)
  np.testing.assert_array_equal(classes, [[1, 2, 0], [2, 0, 1]])
  np.testing.assert_allclose(probs, [[0.6, 0.3, 0.1], [0.5, 0.25, 0.25]])
  assert inspection.answer_captions(p, 2) == ["1 .60 2 .30", "2 .50 0 .25"]
  assert inspection.answer_captions(np.array([[0.0, 1.0]]), 1,
                                    class_names=["cat", "dog"]) == ["dog 1.00"]
  with pytest.raises(JaxkdError):
    inspection.top_answers(p, 5)


def test_draw_success_curves_plots_the_mean_over_seeds():
  rec = lambda q, s: {"queries": q, "success_rate": s}
  results = {"b": [[rec(10, 0.5), rec(20, 0.7)], [rec(10, 0.3), rec(20, 0.9)]],
             "a": [[rec(10, 0.2), rec(20, 0.4)]]}
  fig, ax = plt.subplots()
  plotting.draw_success_curves(ax, results, title="t")
  lines = {l.get_label(): l for l in ax.get_lines()}
  assert sorted(lines) == ["a", "b"]
  np.testing.assert_allclose(lines["b"].get_xdata(), [10, 20])
  np.testing.assert_allclose(lines["b"].get_ydata(), [0.4, 0.8])
  np.testing.assert_allclose(lines["a"].get_ydata(), [0.2, 0.4])
  plt.close(fig)


def test_image_grid_one_axis_per_image():
  imgs = np.random.default_rng(0).random((5, 4, 4, 1))
  fig = plotting.image_grid(imgs, [f"x{i}\ny" for i in range(5)], ncols=3,
                            dpi=50)
  shown = [ax for ax in fig.axes if ax.images]
  assert len(shown) == 5 and len(fig.axes) == 6
  assert [ax.get_title() for ax in shown] == [f"x{i}\ny" for i in range(5)]
  np.testing.assert_allclose(shown[2].images[0].get_array(), imgs[2, ..., 0])
  with pytest.raises(JaxkdError):
    plotting.image_grid(np.zeros((0, 4, 4, 1)))


def test_read_entries_reads_a_held_ledger_read_only(oracle, tmp_path):
  from jaxkd import ledger
  path = os.path.join(tmp_path, "ledger.sqlite")
  before = os.path.getmtime(path)
  rows = ledger.read_entries(path)  # the fixture's oracle holds the lock
  assert [(e["kind"], e["round"]) for e in rows] == [
      ("pool", 0), ("pool", 0), ("pool", 1), ("mixup", 1), ("mixup", 1),
      ("pool", 2)]
  mix = ledger.read_entries(path, kind="mixup", max_round=1)
  assert [(e["i"], e["j"], e["lam"]) for e in mix] == [(0, 5, 0.4),
                                                       (2, 3, 0.75)]
  pool = oracle.pool_images
  np.testing.assert_allclose(mix[1]["probs"], _softmax(
      (0.75 * pool[2] + 0.25 * pool[3]).reshape(1, -1).astype(np.float64)
      @ _W)[0], rtol=1e-5, atol=1e-6)
  assert os.path.getmtime(path) == before and oracle.spent == 6
  with pytest.raises(JaxkdError, match="does not exist"):
    ledger.read_entries(os.path.join(tmp_path, "none.sqlite"))


def test_mixup_pair_stats_counts_by_hand():
  # 12 real images, labels 0..2; image 0 in 3 pairs, image 1 in 2.
  labels = np.array([0, 0, 1, 1, 2, 2, 0, 1, 2, 0, 1, 2])
  pairs = np.array([[0, 1], [0, 2], [0, 3], [1, 4], [5, 6], [7, 8]])
  probs = np.array([[0.5, 0.5, 0.0], [0.9, 0.1, 0.0], [0.2, 0.7, 0.1],
                    [0.4, 0.3, 0.3], [0.6, 0.2, 0.2], [0.1, 0.1, 0.8]])
  s = inspection.mixup_pair_stats(pairs, labels, probs)
  assert s.num_pairs == 6 and s.distinct_images == 9 and s.max_uses == 3
  # the 10 most used images (3 + 2 + eight of the ones) hold all 12 slots
  assert s.top10_share == pytest.approx(12 / 12)
  assert s.same_class == pytest.approx(1 / 6)  # only (0, 1): 0 and 0
  assert s.teacher_confidence == pytest.approx(
      (0.5 + 0.9 + 0.7 + 0.4 + 0.6 + 0.8) / 6)
  labels_big = np.arange(40) % 3
  pairs_big = np.array([[i, i + 20] for i in range(20)])
  s2 = inspection.mixup_pair_stats(pairs_big, labels_big,
                                   np.full((20, 3), 1 / 3))
  assert s2.top10_share == pytest.approx(10 / 40) and s2.max_uses == 1
  assert s2.same_class == pytest.approx(
      np.mean([(i % 3) == ((i + 20) % 3) for i in range(20)]))
  with pytest.raises(JaxkdError, match="pairs must index"):
    inspection.mixup_pair_stats([[0, 12]], labels, probs[:1])
  with pytest.raises(JaxkdError, match=r"probs must be \[6, C\]"):
    inspection.mixup_pair_stats(pairs, labels, probs[:5])


def test_mixup_pairs_report_reads_each_strategys_ledgers(tmp_path):
  import importlib.util
  spec = importlib.util.spec_from_file_location(
      "mixup_pairs", os.path.join(os.path.dirname(__file__), "..",
                                  "experiments", "mixup_pairs.py"))
  script = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(script)
  import protocols
  config = protocols.with_fields(
      protocols.load_config("active_mixup_official.py", "multistep,quick"),
      strategies=("active_mixup", "random_mixup"), seeds=(0, 1, 2),
      rounds=1, per_round=2, **{"split.initial": 6})
  part = protocols.Part("multistep", "active", config, str(tmp_path))
  pool = np.random.default_rng(0).random((6, 2, 3, 2)).astype(np.float32)
  labels = _softmax(_teacher(pool)).argmax(1)
  rec = lambda r: dict(round=r, queries=6 + 2 * r, student_accuracy=0.5,
                       teacher_accuracy=0.9, success_rate=0.5, wall_time=1.0)

  def seed(strategy, k, pairs, rounds):
    d = os.path.join(tmp_path, strategy, f"seed{k}")
    o = TeacherOracle(_teacher, pool, budget=10,
                      ledger_path=os.path.join(d, "ledger.sqlite"))
    o.query(np.arange(6), round=0)
    o.query_mixup(np.array(pairs), np.full(len(pairs), 0.5), round=1)
    o.close()
    with open(os.path.join(d, "rounds.json"), "w") as f:
      json.dump([rec(r) for r in range(rounds)], f)

  seed("active_mixup", 0, [[0, 1], [0, 2]], 2)
  seed("active_mixup", 2, [[3, 4], [0, 5]], 2)
  seed("random_mixup", 0, [[1, 2]], 1)  # still in round 1
  text = script.report(part)
  assert "| random_mixup" not in text
  assert ("Not counted, not finished: active_mixup/seed1, "
          "random_mixup/seed0, random_mixup/seed1, random_mixup/seed2."
          ) in text
  row = [l for l in text.splitlines() if l.startswith("| active_mixup")][0]
  cells = [c.strip() for c in row.strip("|").split("|")]
  same = [np.mean([labels[i] == labels[j] for i, j in p]) for p in
          ([[0, 1], [0, 2]], [[3, 4], [0, 5]])]
  assert cells[1] == "2" and cells[2] == "2 ± 0"
  f0 = lambda v: f"{np.mean(v):.0f} ± {np.std(v):.0f}"
  assert cells[3] == f0([3, 4])  # 3 and 4 distinct images
  assert cells[5] == f0([2, 1])  # image 0 in 2 pairs; then none twice
  assert cells[6] == f"{100 * np.mean(same):.1f} ± {100 * np.std(same):.1f}"
  # Class pairs by the dataset's class names (Fashion-MNIST here), the
  # pooled pairs of both finished seeds, at most three distinct.
  from jaxkd.data import FASHION_MNIST_CLASS_NAMES as names
  named = {" + ".join(sorted((names[labels[i]], names[labels[j]])))
           for i, j in [[0, 1], [0, 2], [3, 4], [0, 5]]}
  assert len(named) <= 3 and all(f"{n} (" in cells[8] for n in named), (
      named, cells[8])
  mnist = protocols.Part("multistep", "active", protocols.with_fields(
      config, dataset="mnist"), str(tmp_path))
  digits = [c.strip() for c in [l for l in script.report(mnist).splitlines()
            if l.startswith("| active_mixup")][0].strip("|").split("|")]
  assert not any(n in digits[8] for n in names if not n.isdigit())
