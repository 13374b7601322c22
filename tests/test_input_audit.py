"""Inputs an audit found silently wrong or failing late: each is a one-line
JaxkdError before anything is trained or paid (jobs: no ledger, no teacher
folder; library: the teacher's own call count stays 0)."""

import gzip
import io
import multiprocessing
import os
import subprocess
import sys

import numpy as np
import pytest

from jaxkd import data, experiment, settings, teacher_training
from jaxkd.configs import common
from jaxkd.data import files, npz
from jaxkd.teacher import TeacherOracle
from jaxkd.validation import JaxkdError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _one_line(excinfo):
  msg = str(excinfo.value)
  assert "\n" not in msg, msg
  return msg


def _tiny(**kw):
  c = common.active_config(
      split=dict(teacher_train=200, initial=20, pool=60, test=100, seed=0),
      student="mlp", strategies=("random",), rounds=1, per_round=5,
      progress=False)
  c.teacher.update(model="mlp", epochs=1)
  c.loop.train_steps = 2
  c.update(kw)
  return c


def _nothing_written(workdir):
  return not os.path.exists(os.path.join(workdir, "teacher")) and not any(
      f == "ledger.sqlite" for _, _, fs in os.walk(workdir) for f in fs)


# ------------------------------------------------------ job settings ---


@pytest.mark.parametrize("change,match", [
    (dict(seeds=(0, 0)), "seeds lists 0 twice"),
    (dict(strategies=("random", "random")), "strategies lists 'random' twice"),
    (dict(num_classes=3), "num_classes is for own files"),
    (dict(image_shape=(4, 4)), "image_shape is for own files"),
])
def test_job_settings_refused_before_paying(tmp_path, change, match):
  w = str(tmp_path / "w")
  with pytest.raises(JaxkdError, match=match) as e:
    experiment.train_and_evaluate(_tiny(**change), w)
  _one_line(e)
  assert _nothing_written(w)


def test_two_strategies_that_would_share_a_folder_are_refused(tmp_path):
  body = ("from jaxkd.selection.baselines import random_select\n"
          "def {0}(key, inputs, k):\n"
          "  return random_select(key, inputs.available, k)\n")
  (tmp_path / "audit_few.py").write_text(body.format("few"))
  (tmp_path / "audit.py").write_text(body.format("few_few"))
  sys.path.insert(0, str(tmp_path))
  try:
    c = _tiny(strategies=("audit_few:few", "audit:few_few"))
    with pytest.raises(JaxkdError, match="share the run folder") as e:
      settings.read(c)
  finally:
    sys.path.remove(str(tmp_path))
  _one_line(e)


def test_unix_max_train_must_not_be_negative():
  c = common.unix_config()
  c.unix.max_train = -5
  with pytest.raises(JaxkdError, match="unix.max_train must be an int >= 0"):
    settings.read(c)


@pytest.mark.parametrize("arg,match", [
    ("quik", "Unknown config variant 'quik'"),
    ("rounds=3", "Unknown config variant 'rounds'"),
])
def test_config_variants_are_checked(arg, match):
  from jaxkd.configs import default
  with pytest.raises(JaxkdError, match=match):
    default.get_config(arg)


def test_cli_tuple_field_given_a_bare_value_is_one_line(tmp_path):
  out = subprocess.run(
      [sys.executable, "-m", "jaxkd.main", "--config.seeds=3",
       f"--workdir={tmp_path}"], capture_output=True, text=True, cwd=ROOT)
  assert out.returncode == 2
  assert out.stderr.strip().count("\n") == 0
  assert "config.seeds is a tuple" in out.stderr
  assert not os.listdir(tmp_path)


# ------------------------------------------------------------- data ---


def test_a_stray_label_is_not_a_hundred_class_job(tmp_path):
  x = np.random.default_rng(0).integers(0, 255, (40, 8, 8), np.uint8)
  y = np.arange(40) % 10
  y[3] = 99
  with pytest.raises(JaxkdError, match="never occur") as e:
    data.dataset_from_arrays(x, y, num_test=10)
  _one_line(e)
  # Saying how many classes there are is the way out.
  with pytest.raises(JaxkdError):
    data.dataset_from_arrays(x, y, num_test=10, num_classes=10)
  y[3] = 3
  assert data.dataset_from_arrays(x, y, num_test=10).num_classes == 10


def test_npz_with_test_images_but_no_test_labels(tmp_path):
  p = tmp_path / "half.npz"
  x = np.zeros((10, 4, 4), np.uint8)
  np.savez(p, x_train=x, y_train=np.arange(10) % 2, x_test=x)
  with pytest.raises(JaxkdError, match="x_test but no y_test") as e:
    npz.load_npz(str(p), num_test=2)
  _one_line(e)


def test_npz_entry_larger_than_its_header_declares(tmp_path):
  import zipfile
  p = tmp_path / "lie.npz"
  buf = io.BytesIO()
  np.lib.format.write_array(buf, np.zeros((4, 4), np.uint8))
  body = buf.getvalue() + b"\0" * 4096  # more bytes than shape (4, 4)
  with zipfile.ZipFile(p, "w", zipfile.ZIP_DEFLATED) as z:
    z.writestr("images.npy", body)
  with pytest.raises(JaxkdError, match="declares shape") as e:
    npz.check_npz_sizes(str(p))
  _one_line(e)


def test_npz_declaring_more_than_memory_is_refused(tmp_path, monkeypatch):
  p = tmp_path / "big.npz"
  np.savez_compressed(p, images=np.zeros((64, 32, 32), np.uint8),
                      labels=np.zeros(64, np.int64))
  monkeypatch.setattr(npz, "memory_budget", lambda: 1 << 16)
  with pytest.raises(JaxkdError, match="GiB as float32") as e:
    npz.load_npz(str(p), num_test=2)
  _one_line(e)


def test_gzip_bomb_is_refused_unexpanded():
  bomb = gzip.compress(b"\0" * (8 << 20))
  with pytest.raises(JaxkdError, match="more than 1024 bytes"):
    files.gunzip("bomb.gz", bomb, 1024)
  assert files.gunzip("ok.gz", gzip.compress(b"abc"), 1024) == b"abc"
  two = gzip.compress(b"ab") + gzip.compress(b"cd")  # two members
  assert files.gunzip("two.gz", two, 1024) == b"abcd"
  with pytest.raises(JaxkdError, match="truncated"):
    files.gunzip("cut.gz", gzip.compress(b"abc" * 100)[:-12], 1024)


def test_idx_and_npz_symlinks_out_of_data_dir_are_refused(tmp_path):
  outside = tmp_path / "outside"
  outside.mkdir()
  np.savez(outside / "own.npz", images=np.zeros((10, 4, 4), np.uint8),
           labels=np.arange(10) % 2)
  root = tmp_path / "data"
  root.mkdir()
  os.symlink(outside / "own.npz", root / "own.npz")
  with pytest.raises(JaxkdError, match="outside data_dir") as e:
    npz.load_npz("own.npz", str(root), num_test=2)
  _one_line(e)
  # An absolute path is the user's own choice.
  assert npz.load_npz(str(root / "own.npz"), num_test=2).num_train == 8


# ---------------------------------------------------------- teachers ---


def test_one_class_teacher_is_refused_and_nothing_recorded(tmp_path):
  calls = []

  def teacher(x):
    calls.append(len(x))
    return np.ones((len(x), 1))

  pool = np.random.default_rng(0).random((6, 2, 2, 1)).astype(np.float32)
  oracle = TeacherOracle(teacher, pool, budget=6,
                         ledger_path=str(tmp_path / "l.sqlite"))
  with pytest.raises(JaxkdError, match="returned 1 class") as e:
    oracle.query(np.arange(3))
  _one_line(e)
  assert oracle.spent == 0
  oracle.close()


def test_saved_teacher_naming_an_import_path_is_not_imported(tmp_path):
  import json
  folder = tmp_path / "t"
  folder.mkdir()
  (folder / "teacher.json").write_text(json.dumps(dict(
      model="os:system", num_classes=10, input_shape=[8, 8, 1],
      accuracy=0.9)))
  with pytest.raises(JaxkdError, match="registry only") as e:
    teacher_training.load_teacher(str(folder))
  _one_line(e)
  with pytest.raises(JaxkdError, match="registry only"):
    teacher_training.save_teacher(str(tmp_path / "u"), "pkg.mod:Net", {},
                                  accuracy=0.5, num_classes=2,
                                  input_shape=(2, 2, 1))


# ----------------------------------------------------------- workdir ---


def _hold(workdir, started, release):
  from jaxkd import run_dir
  with run_dir.workdir_lock(workdir):
    started.set()
    release.wait(30)


def test_second_process_on_a_workdir_is_refused_with_the_pid(tmp_path):
  from jaxkd import run_dir
  ctx = multiprocessing.get_context("spawn")
  started, release = ctx.Event(), ctx.Event()
  p = ctx.Process(target=_hold, args=(str(tmp_path), started, release))
  p.start()
  try:
    assert started.wait(60)
    with pytest.raises(JaxkdError, match=f"pid {p.pid}") as e:
      with run_dir.workdir_lock(str(tmp_path)):
        pass
    _one_line(e)
  finally:
    release.set()
    p.join(30)
  with run_dir.workdir_lock(str(tmp_path)):  # released when it ended
    pass


def test_two_jobs_started_together_one_runs_one_exits_2(tmp_path):
  w = str(tmp_path / "w")
  cmd = [sys.executable, "-m", "jaxkd.main", "--strategy=random",
         "--config.rounds=0", "--config.teacher.epochs=1",
         "--config.teacher.model=mlp", "--config.student=mlp",
         "--config.loop.train_steps=1", "--config.progress=False",
         f"--workdir={w}"]
  procs = [subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
           for _ in range(2)]
  outs = [p.communicate(timeout=600) for p in procs]
  codes = sorted(p.returncode for p in procs)
  assert codes == [0, 2], outs
  err = outs[[p.returncode for p in procs].index(2)][1].strip()
  assert err.count("\n") == 0 and "in use by another jaxkd process" in err


def test_deleted_config_json_does_not_turn_the_guard_off(tmp_path):
  # The config is in every checkpoint: the guard reads it from there.
  w = str(tmp_path)
  experiment.train_and_evaluate(_tiny(rounds=0), w)
  os.remove(os.path.join(w, "config.json"))
  c = _tiny(rounds=0)
  c.loop.train_steps = 3
  with pytest.raises(JaxkdError, match=r"another config \(loop.train_steps "
                     r"2 -> 3\)") as e:
    experiment.train_and_evaluate(c, w)
  _one_line(e)
  # The same config resumes (and config.json is written again).
  experiment.train_and_evaluate(_tiny(rounds=0), w)
  assert os.path.isfile(os.path.join(w, "config.json"))
  # Without any checkpoint that recorded it, the run is refused.
  os.remove(os.path.join(w, "config.json"))
  import shutil
  for d in os.listdir(w):
    ck = os.path.join(w, d, "seed0", "checkpoints")
    if os.path.isdir(ck):
      shutil.rmtree(ck)
  with pytest.raises(JaxkdError, match="config.json is missing") as e:
    experiment.train_and_evaluate(c, w)
  _one_line(e)


def test_an_interrupted_teacher_save_does_not_block_the_rerun(tmp_path):
  """A kill between the teacher's checkpoint and its teacher.json (as the
  old non-atomic save could leave it) is cleaned up on the rerun."""
  w = tmp_path / "w"
  (w / "teacher" / "0").mkdir(parents=True)       # a checkpoint step, no json
  (w / "teacher.partial-12345").mkdir()            # a new-style leftover
  out = experiment.train_and_evaluate(_tiny(rounds=0), str(w))
  assert out["teacher_accuracy"] > 0
  assert os.path.isfile(w / "teacher" / "teacher.json")
  assert not (w / "teacher.partial-12345").exists()


@pytest.mark.parametrize("bad", ["negative", "scaled", "one_class"])
def test_uncertainty_scores_need_probabilities(bad):
  from jaxkd.selection import baselines
  rng = np.random.default_rng(0)
  p = rng.dirichlet(np.ones(3), size=6).astype(np.float32)
  p = {"negative": -p, "scaled": 5 * p, "one_class": p[:, :1]}[bad]
  avail = np.ones(6, bool)
  for select in (baselines.entropy_select, baselines.margin_select,
                 baselines.least_confidence_select):
    with pytest.raises(JaxkdError) as e:
      select(p, avail, 3)
    _one_line(e)


def test_progress_bars_only_on_a_terminal(tmp_path):
  """stderr to a file gets no progress bars (tqdm disable=None)."""
  log = tmp_path / "err.txt"
  with open(log, "w") as err:
    out = subprocess.run(
        [sys.executable, "-m", "jaxkd.main", "--strategy=random",
         "--config.rounds=0", "--config.teacher.epochs=1",
         "--config.teacher.model=mlp", "--config.student=mlp",
         "--config.loop.train_steps=5", f"--workdir={tmp_path / 'w'}"],
        stdout=subprocess.DEVNULL, stderr=err, cwd=ROOT)
  assert out.returncode == 0
  assert "it/s" not in log.read_text() and "\r" not in log.read_text()


# ------------------------------------------------- the library's loop ---


def _loop_run(tmp_path, settings, strategy="random"):
  from jaxkd import loop
  from jaxkd.models import get_model
  rng = np.random.default_rng(1)
  pool = rng.random((30, 4, 4, 1)).astype(np.float32)
  w = rng.normal(size=(16, 3))
  calls = []

  def teacher(x):
    calls.append(len(x))
    return x.reshape(len(x), -1) @ w

  oracle = TeacherOracle(teacher, pool, budget=30,
                         ledger_path=str(tmp_path / "ledger.sqlite"))
  try:
    loop.run_loop(
        strategy=strategy, student=get_model("mlp", 3, hidden=(8,)),
        oracle=oracle, initial_indices=np.arange(5),
        candidate_indices=5 + np.arange(25), test_images=pool[:6],
        test_labels=np.zeros(6, np.int64), teacher_accuracy=1.0,
        settings=settings, workdir=str(tmp_path / "run"), progress=False,
        log=lambda m: None)
  finally:
    spent = oracle.spent
    oracle.close()
  return calls, spent


@pytest.mark.parametrize("field,value", [
    ("batch_size", 0), ("optimizer", "bogus"), ("loss", "bogus"),
    ("temperature", 0.0), ("train_steps", 0), ("learning_rate", float("nan")),
])
def test_bad_loop_settings_fail_before_round_0_pays(tmp_path, field, value):
  from jaxkd import loop
  kw = dict(rounds=1, per_round=2, train_steps=1, batch_size=4)
  kw[field] = value
  s = loop.LoopSettings(**kw)
  calls = []
  with pytest.raises(JaxkdError) as e:
    calls, _ = _loop_run(tmp_path, s)
  _one_line(e)
  assert not calls
  assert not os.path.exists(tmp_path / "ledger.sqlite") or (
      _ledger_rows(tmp_path / "ledger.sqlite") == 0)


def _ledger_rows(path):
  import sqlite3
  db = sqlite3.connect(str(path))
  try:
    return db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]
  finally:
    db.close()


@pytest.mark.parametrize("extra", [-1, 2])
def test_plugin_returning_other_than_per_round_pays_nothing_of_it(
    tmp_path, extra):
  from jaxkd import loop
  from jaxkd.selection import register_strategy
  from jaxkd.selection.baselines import random_select
  k_real = 3 + extra
  register_strategy(
      f"audit_count_{k_real}",
      lambda key, inputs, k: random_select(key, inputs.available, k_real))
  s = loop.LoopSettings(rounds=2, per_round=3, train_steps=1, batch_size=4)
  with pytest.raises(JaxkdError, match=f"returned {k_real} items for "
                     "per_round=3") as e:
    _loop_run(tmp_path, s, f"audit_count_{k_real}")
  _one_line(e)
  assert _ledger_rows(tmp_path / "ledger.sqlite") == 5  # round 0 only


@pytest.mark.parametrize("returns,match", [
    ("none", "returned None instead of 3 indices"),
    ("floats", "non-integer indices"),
    ("repeated", "repeated, out-of-range or already queried")])
def test_plugin_returning_bad_indices_pays_nothing_of_it(tmp_path, returns,
                                                         match):
  from jaxkd import loop
  from jaxkd.selection import register_strategy
  out = {"none": lambda k: None, "floats": lambda k: np.arange(k) + 0.5,
         "repeated": lambda k: np.zeros(k, np.int64)}[returns]
  register_strategy(f"audit_bad_{returns}",
                    lambda key, inputs, k: out(k))
  s = loop.LoopSettings(rounds=2, per_round=3, train_steps=1, batch_size=4)
  with pytest.raises(JaxkdError, match=match) as e:
    _loop_run(tmp_path, s, f"audit_bad_{returns}")
  _one_line(e)
  assert _ledger_rows(tmp_path / "ledger.sqlite") == 5  # round 0 only


def test_a_teacher_with_other_parameters_under_the_same_json_is_refused(
    tmp_path):
  """The ledger records the hash of the teacher that paid it; a resume
  whose teacher.json is unchanged but whose parameters are not is refused
  in one line, and the changed teacher answers nothing."""
  import json
  import shutil
  import jax
  w = tmp_path / "w"
  c = _tiny(rounds=1)
  experiment.train_and_evaluate(c, str(w))
  folder = w / "teacher"
  model, variables, meta = teacher_training.load_teacher(str(folder))
  changed = jax.tree_util.tree_map(lambda a: a + 1e-3, variables)
  saved = json.loads((folder / "teacher.json").read_text())
  shutil.rmtree(folder)
  teacher_training.save_teacher(
      str(folder), meta["model"], changed, accuracy=meta["accuracy"],
      num_classes=meta["num_classes"], input_shape=meta["input_shape"],
      extra={k: v for k, v in saved.items()
             if k not in ("model", "num_classes", "input_shape",
                          "accuracy")})
  assert json.loads((folder / "teacher.json").read_text()) == saved
  ledger = w / "random" / "seed0" / "ledger.sqlite"
  rows = _ledger_rows(ledger)
  with pytest.raises(JaxkdError, match="other parameters") as e:
    experiment.train_and_evaluate(c, str(w))
  _one_line(e)
  assert _ledger_rows(ledger) == rows


def test_late_library_errors_are_one_line_before_paying(tmp_path):
  """Cases of the audit that were tracebacks: each is one line now, and
  nothing is paid or even intended."""
  from jaxkd.selection import get_strategy
  from jaxkd.teacher import TeacherOracle
  pool = np.random.default_rng(0).random((6, 2, 2, 1)).astype(np.float32)
  calls = []
  teacher = lambda x: calls.append(len(x)) or np.asarray(x).reshape(
      len(x), -1)[:, :3]
  oracle = TeacherOracle(teacher, pool, budget=5,
                         ledger_path=str(tmp_path / "l.sqlite"))
  with pytest.raises(JaxkdError, match="pairs must be integer") as e:
    oracle.query_mixup(np.array([[0.5, 1.2]]), np.array([0.3]))
  _one_line(e)
  assert oracle.pending() == [] and calls == [] and oracle.spent == 0
  oracle.close()
  (tmp_path / "afile").write_text("")
  with pytest.raises(JaxkdError, match="cannot be created") as e:
    TeacherOracle(teacher, pool, budget=5,
                  ledger_path=str(tmp_path / "afile" / "l.sqlite"))
  _one_line(e)
  (tmp_path / "boom_plugin.py").write_text("raise RuntimeError('boom')\n")
  sys.path.insert(0, str(tmp_path))
  try:
    with pytest.raises(JaxkdError, match="raised RuntimeError: boom") as e:
      get_strategy("boom_plugin:select")
    _one_line(e)
  finally:
    sys.path.remove(str(tmp_path))


def test_workdir_that_is_a_file_is_one_line(tmp_path):
  (tmp_path / "f").write_text("")
  for w in (tmp_path / "f", tmp_path / "f" / "under"):
    with pytest.raises(JaxkdError, match="cannot be used") as e:
      experiment.train_and_evaluate(_tiny(rounds=0), str(w))
    _one_line(e)


def test_images_of_another_shape_than_the_model_are_one_line():
  import jax
  from jaxkd import loop, train
  from jaxkd.models import get_model
  m = get_model("mlp", 10)
  state = train.create_train_state(m, jax.random.key(0), (8, 8, 1),
                                   train.student_optimizer(loop.LoopSettings()))
  x = np.random.default_rng(0).random((4, 28, 28, 1)).astype(np.float32)
  with pytest.raises(JaxkdError, match=r"shape \(28, 28, 1\) do not fit") as e:
    train.fit(m, state, x, np.eye(10, dtype=np.float32)[:4], None, steps=1,
              batch_size=2, seed=0,
              loss_fn=train.make_loss_fn("kd", temperature=4.0))
  _one_line(e)
  with pytest.raises(JaxkdError, match="do not fit") as e:
    train.predict(m, state.variables, x)
  _one_line(e)
