"""`python -m jaxkd.main` with bad input: one line `error: ...` on stderr and
exit status 2, before anything is trained or paid. Most cases run the CLI's
own entry (`jaxkd.main.run_cli`) in-process; two run it as a real process.
"""

import gzip
import os
import subprocess
import sys

import numpy as np
import pytest

from jaxkd import fields, main, settings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = ["--config.split.teacher_train=20", "--config.split.initial=5",
         "--config.split.pool=10", "--config.rounds=1",
         "--config.per_round=2", "--strategy=random"]


def _images(n, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (n, 6, 6), np.uint8)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
  """Bad input files, written once: name -> path."""
  d = tmp_path_factory.mktemp("bad")
  x, tx = _images(40), _images(10, seed=1)
  y, ty = np.arange(40) % 3, np.arange(10) % 3
  nan = (x / 255.0).astype(np.float32)
  nan[3, 1, 1] = np.nan
  out = {"nan": d / "nan.npz", "labels": d / "labels.npz",
         "flat": d / "flat.npz", "overlap": d / "overlap.npz",
         "keys": d / "keys.npz", "mnist": d / "mnist", "empty": d / "empty"}
  np.savez(out["nan"], x_train=nan, y_train=y, x_test=tx, y_test=ty)
  np.savez(out["labels"], x_train=x, y_train=np.arange(40) % 6, x_test=tx,
           y_test=ty)
  np.savez(out["flat"], images=x.reshape(40, 36), labels=y)
  np.savez(out["overlap"], x_train=x, y_train=y, x_test=x[:10],
           y_test=y[:10])
  np.savez(out["keys"], a=x, b=y)
  out["mnist"].mkdir()
  out["empty"].mkdir()
  for name, a in [("train-images-idx3-ubyte.gz", x),
                  ("train-labels-idx1-ubyte.gz", y),
                  ("t10k-images-idx3-ubyte.gz", tx),
                  ("t10k-labels-idx1-ubyte.gz", ty)]:
    a = np.asarray(a, np.uint8)
    raw = bytes([0, 0, 8, a.ndim]) + b"".join(
        int(s).to_bytes(4, "big") for s in a.shape) + a.tobytes()
    (out["mnist"] / name).write_bytes(gzip.compress(raw))
  return out


CASES = {  # id -> (args, text the one line must contain)
    "unknown strategy": (["--strategy=nope"], "Unknown strategy 'nope'"),
    "unknown model": (["--config.student=nope"], "Unknown model 'nope'"),
    "unknown dataset": (["--config.dataset=nope"], "Unknown dataset 'nope'"),
    "unknown config field": (["--config.nope=1"], "bad --config override"),
    "bad flag value": (["--config.rounds=abc"], "config.rounds=abc"),
    "unknown mode": (["--mode=nope"], "--mode"),
    "temperature 0": (["--config.loop.temperature=0"], "loop.temperature"),
    "k larger than pool": (
        ["--config.split.pool=3", "--config.per_round=5", "--strategy=random"],
        "need more than the 3 pool points"),
    "budget overrun": (["--config.budget=10"], "exceed config.budget=10"),
    "split too large": (["--config.split.teacher_train=5000"],
                        "exceeds the 1297 training images"),
    "missing file": (["--config.dataset=npz:/no/such/file.npz"],
                     "file not found"),
    "missing teacher": (["--config.teacher.checkpoint=/no/such/dir"],
                        "teacher.json missing"),
    "bad image_shape": (["--config.image_shape=(0, 3)"], "image_shape"),
    "NaN images": (["--config.dataset=npz:{nan}", *SMALL], "NaN"),
    "labels out of range": (
        ["--config.dataset=npz:{labels}", "--config.num_classes=3", *SMALL],
        "must lie in [0, 3)"),
    "flat without shape": (["--config.dataset=npz:{flat}",
                            "--config.split.test=5", *SMALL], "image_shape"),
    "shape mismatch": (["--config.dataset=npz:{flat}",
                        "--config.image_shape=(5, 5)",
                        "--config.split.test=5", *SMALL], "holds 25"),
    "npz keys": (["--config.dataset=npz:{keys}"], "expected x_train"),
    "overlap": (["--config.dataset=npz:{overlap}", *SMALL],
                "splits share images"),
    "wrong md5": (["--config.dataset=mnist", "--config.data_dir={mnist}",
                   "--config.data_verify_md5=True", *SMALL],
                  "does not match the published md5"),
    "no idx files": (["--config.dataset=idx:{empty}"], "IDX files found: none"),
    "missing config file": (["--config=/no/such/config.py"],
                            "cannot load --config: [Errno 2]"),
    "empty image folder": (["--config.dataset=folder:{empty}"],
                           "no image files found"),
    "lazy for a built-in": (["--config.data_lazy=True"], "data_lazy is for"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_and_exit_2(case, files, tmp_path, capsys):
  args, text = CASES[case]
  args = [a.format(**files) for a in args]
  rc = main.run_cli(["jaxkd", f"--workdir={tmp_path}/w", *args])
  err = capsys.readouterr().err
  assert rc == 2
  assert err.count("\n") == 1 and err.startswith("error: "), err
  assert text in err, err
  assert not (tmp_path / "w" / "teacher").exists()  # nothing trained


def test_verbose_shows_the_traceback(tmp_path, capsys, monkeypatch):
  assert main.run_cli(["jaxkd", "--verbose", "--strategy=nope",
                       f"--workdir={tmp_path}"]) == 2
  err = capsys.readouterr().err
  assert "Traceback" in err and err.splitlines()[-1].startswith("error: ")
  monkeypatch.setenv("JAXKD_DEBUG", "1")
  assert main.run_cli(["jaxkd", "--strategy=nope",
                       f"--workdir={tmp_path}"]) == 2
  assert "Traceback" in capsys.readouterr().err


def test_unexpected_errors_keep_their_traceback(tmp_path, monkeypatch):
  from jaxkd import experiment

  def boom(config, workdir):
    raise RuntimeError("a bug, not bad input")
  monkeypatch.setattr(experiment, "train_and_evaluate", boom)
  with pytest.raises(RuntimeError, match="a bug"):
    main.run_cli(["jaxkd", f"--workdir={tmp_path}"])


def test_list_config_describes_every_field(capsys):
  assert main.run_cli(["jaxkd", "--list_config"]) == 0
  out = capsys.readouterr().out
  names = [line.split(" = ")[0] for line in out.splitlines()]
  assert "split.test" in names and "teacher.checkpoint" in names
  assert "(no description)" not in out
  docs = {n: fields.doc_of(f) for n, _, f in
          fields.flat_fields(settings.ActiveSettings())}
  assert set(names) == set(docs)
  for name in names:
    assert docs[name] and docs[name] in out


@pytest.mark.parametrize("args,text", [
    (["--strategy=nope"], "Unknown strategy 'nope'"),
    (["--config.nope=1"], "bad --config override"),   # fails at import
])
def test_real_process(args, text, tmp_path):
  env = dict(os.environ, XLA_FLAGS="", PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
  p = subprocess.run([sys.executable, "-m", "jaxkd.main", *args,
                      f"--workdir={tmp_path}"], env=env, capture_output=True,
                     text=True, timeout=120)
  assert p.returncode == 2
  assert p.stderr.count("\n") == 1 and p.stderr.startswith("error: ")
  assert text in p.stderr
