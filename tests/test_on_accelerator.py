"""benchmarks/on_accelerator.sh --smoke: the accelerator script's every
section runs on CPU at tiny sizes and writes its figures to --out (never to
benchmarks/results/)."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "on_accelerator.sh")
COMMITTED = os.path.join(ROOT, "benchmarks", "results", "accelerator.json")


def _mtime(path):
  return os.path.getmtime(path) if os.path.exists(path) else None


def test_smoke_run_writes_every_section(tmp_path):
  before = _mtime(COMMITTED)
  env = dict(os.environ, PYTHON=sys.executable, JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)   # one CPU device, not conftest's eight
  proc = subprocess.run(["bash", SCRIPT, "--smoke", "--out", str(tmp_path)],
                        env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
  with open(tmp_path / "accelerator.json") as f:
    r = json.load(f)
  assert r["smoke"] and r["skipped"] == []
  assert r["device"]["platform"] == "cpu" and r["device"]["devices"]
  steps = r["train_step"]
  assert [s["model"] for s in steps] == ["lenet5", "resnet8x4"]
  for s in steps:
    assert s["device_step_ms"] > 0 and s["fit_images_per_s"] > 0
  scan = r["pair_scan"]
  assert scan["pairs"] == scan["n"] * (scan["n"] - 1) // 2
  assert scan["complete"] and scan["full_scan_how"] == "measured"
  assert scan["forwards_per_s"] == scan["pairs_per_s"] * scan["lambdas"]
  admm = r["admm"]
  assert admm["iters"] == 5 and admm["finite"] and admm["wall_s"] > 0
  assert r["cifar_job"]["wall_s"] > 0
  md = (tmp_path / "accelerator.md").read_text()
  for heading in ("## Train step", "## Pair scan", "## ADMM",
                  "## Short CIFAR-shaped job"):
    assert heading in md
  assert _mtime(COMMITTED) == before


def test_time_guard_skips_what_would_not_fit(tmp_path):
  env = dict(os.environ, PYTHON=sys.executable, JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)
  proc = subprocess.run(
      ["bash", SCRIPT, "--smoke", "--out", str(tmp_path), "--budget", "1",
       "--sections", "admm,cifar_job"],
      env=env, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
  with open(tmp_path / "accelerator.json") as f:
    r = json.load(f)
  assert r["skipped"] == ["admm", "cifar_job"]
  assert "Skipped by the time guard: admm, cifar_job" in (
      tmp_path / "accelerator.md").read_text()
