"""jaxkd.inspection (ledger rows of a round) and the notebook plot helpers."""

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
