"""`--config.teacher.url`: the active job queries a remote teacher (the
bundled server in a thread, around a NumPy least-squares teacher) instead of
training one."""

import os
import sqlite3

import numpy as np
import pytest

from jaxkd.serve_teacher import make_server
from jaxkd.validation import JaxkdError


def _ledger_keys(path):
  with sqlite3.connect(path) as db:
    return [k for (k,) in db.execute("SELECT key FROM answers")]


def _one_line_error(match):
  return pytest.raises(JaxkdError, match=match)


@pytest.fixture
def serve():
  servers = []

  def start(predict, **kw):
    s = make_server(predict, "127.0.0.1", 0, **kw).start()
    servers.append(s)
    return s
  yield start
  for s in servers:
    s.close()


def test_job_queries_a_teacher_url_instead_of_training_one(serve, tmp_path):
  from jaxkd import experiment, settings, teacher_sources
  from jaxkd.configs import common
  from jaxkd.jobs import inputs
  c = common.active_config(
      split=dict(teacher_train=200, initial=20, pool=60, test=100, seed=0),
      student="mlp", strategies=("random",), rounds=0, per_round=5,
      progress=False)
  c.loop.train_steps = 1
  _, pools = inputs.load_pools(settings.parse(c))
  # A least-squares linear teacher fitted here in NumPy.
  flat = lambda x: np.asarray(x, np.float64).reshape(len(x), -1)
  xt = flat(pools.teacher_train_images)
  w = np.linalg.lstsq(np.c_[xt, np.ones(len(xt))],
                      np.eye(10)[pools.teacher_train_labels], rcond=None)[0]
  predict = lambda x: np.c_[flat(x), np.ones(len(x))] @ w
  want_acc = np.mean(predict(pools.test_images).argmax(1) == pools.test_labels)
  s = serve(predict=predict)
  c.teacher.url = s.url
  out = experiment.train_and_evaluate(c, str(tmp_path))
  assert out["teacher_accuracy"] == pytest.approx(want_acc)
  assert not os.path.exists(tmp_path / "teacher" / "checkpoint")
  keys = _ledger_keys(str(tmp_path / "random" / "seed0" / "ledger.sqlite"))
  assert len(keys) == 20 == out["strategies"]["random"][0][-1]["queries"]
  assert s.stats()["answered_images"] == len(keys) + 100  # + test accuracy
  # A resumed job reads the recorded accuracy; only the 8 probe images are
  # sent (unpaid, counted), and they prove the teacher is the same.
  _, acc = teacher_sources.remote_teacher(
      settings.parse(c).teacher, pools.test_images, pools.test_labels,
      str(tmp_path), 10, "digits")
  assert acc == out["teacher_accuracy"]
  assert s.stats()["answered_images"] == len(keys) + 100 + 8
  import json
  assert json.load(open(tmp_path / "teacher" / "remote.json"))[
      "probes_sent"] == 8
  # Another model behind the same URL is refused in one line, nothing paid.
  w2 = w.copy()
  w2[:, 0] += 0.3  # another model: class 0 scored higher
  port = int(s.url.rsplit(":", 1)[1].strip("/"))
  s.close()
  other = make_server(lambda x: np.c_[flat(x), np.ones(len(x))] @ w2,
                      "127.0.0.1", port).start()
  try:
    assert other.url == s.url
    with _one_line_error("answers the 8 probe images differently"):
      experiment.train_and_evaluate(c, str(tmp_path))
    assert other.stats()["answered_images"] == 8
  finally:
    other.close()
  assert len(_ledger_keys(str(tmp_path / "random" / "seed0" /
                              "ledger.sqlite"))) == 20
  # A teacher with other classes is refused before the budget is touched.
  c.teacher.url = serve(predict=lambda x: predict(x)[:, :3]).url
  with _one_line_error("answers 3 classes, digits has 10; nothing was paid"):
    experiment.train_and_evaluate(c, str(tmp_path / "other"))
  assert not os.path.exists(tmp_path / "other" / "random")
  c.job, c.unix = "unix", common.unix_config().unix
  with _one_line_error("teacher.url is for the active job"):
    experiment.validate_config(c)
  c.job, c.teacher.url = "active", "localhost:1"
  with _one_line_error("must start with http"):
    experiment.validate_config(c)
