"""The README as a front door, the docs site's build, and the docs' examples.

* README.md stays short, keeps CI's two set-up commands, links only to docs
  pages that exist, and holds no history (issue numbers) or paths of a
  development machine.
* `mkdocs build --strict` (the site of mkdocs.yml + docs/, API pages from
  the docstrings) passes; skipped, saying what to install, where the docs
  builder is not installed.
* The generated blocks of the docs pages are current (docs/gen_pages.py).
* The "Writing your own strategy" page's example, written to a module from
  the page's own text, runs through the CLI in both forms (function and
  Strategy class), named by import path.
"""

import importlib.util
import json
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(ROOT, "docs")
SETUP_COMMANDS = ("pip install -e . && python -m jaxkd.main",
                  "pip install -e '.[test]' && python -m pytest -n 2 tests")
BUILDER = ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers",
           "mkdocs_jupyter")


def _read(*path):
  with open(os.path.join(ROOT, *path), encoding="utf-8") as f:
    return f.read()


def _env(**extra):
  # A process of its own: one CPU device, as a user runs it.
  return dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu",
              NO_MKDOCS_2_WARNING="1", **extra)


# ---------------------------------------------------------------- README ---


def test_readme_is_a_front_door():
  text = _read("README.md")
  assert len(text.splitlines()) <= 300
  assert not re.search(r"\bissues?\s*#?\d", text, re.IGNORECASE), (
      "history (issue numbers) goes in CHANGELOG.md")
  for path in ("/work/", "../shared"):
    assert path not in text, f"a development machine's path {path!r}"
  setup = text.split("## Set up", 1)[1].split("\n## ", 1)[0]
  for command in SETUP_COMMANDS:
    assert f"```bash\n{command}\n```" in setup, command


def test_readme_links_to_files_that_exist():
  text = _read("README.md")
  links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
  local = [l for l in links if "://" not in l]
  assert any(l.startswith("docs/") for l in local)
  missing = [l for l in local if not os.path.exists(os.path.join(ROOT, l))]
  assert not missing, missing


# ------------------------------------------------------------- the site ---


def test_generated_blocks_of_the_docs_are_current():
  spec = importlib.util.spec_from_file_location(
      "gen_pages", os.path.join(DOCS, "gen_pages.py"))
  gen_pages = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(gen_pages)
  assert gen_pages.stale_pages() == [], "run python docs/gen_pages.py"


def test_mkdocs_build_strict(tmp_path):
  absent = [m for m in BUILDER if importlib.util.find_spec(m) is None]
  if absent:
    pytest.skip(f"the docs builder is not installed ({', '.join(absent)}): "
                "pip install -e '.[docs]'")
  site = tmp_path / "site"
  p = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict",
                      "-f", os.path.join(ROOT, "mkdocs.yml"), "-d", str(site)],
                     cwd=ROOT, env=_env(), capture_output=True, text=True,
                     timeout=300)
  assert p.returncode == 0, (p.stdout + p.stderr)[-4000:]
  assert not os.path.exists(os.path.join(ROOT, ".cache", "mkdocs-jupyter"))
  page = lambda *parts: (site.joinpath(*parts, "index.html")
                         ).read_text(encoding="utf-8")
  assert "run_loop" in page("api", "loop")                # mkdocstrings
  assert "SelectionInputs" in page("api", "selection")
  assert "strategy_options.admm.theta" in page("configuration")  # hook
  assert "Active Mixup" in page("notebooks", "active_mixup")  # mkdocs-jupyter
  results = os.path.join(ROOT, "benchmarks", "results")
  bench = page("benchmarks")
  for name in sorted(os.listdir(results)):
    if name.endswith(".md"):
      assert f'href="results/{name[:-3]}/"' in bench, name
      assert (site / "benchmarks" / "results" / name[:-3] / "index.html"
              ).exists()


# ----------------------------------------------- writing your own strategy ---


def _code_block(text: str, first_line: str) -> str:
  blocks = re.findall(r"```python\n(.*?)```", text, re.DOTALL)
  found = [b for b in blocks if b.startswith(first_line)]
  assert len(found) == 1, f"one python block starting {first_line!r}"
  return found[0]


def test_custom_strategy_example_runs_in_both_forms(tmp_path):
  page = _read("docs", "custom-strategy.md")
  (tmp_path / "mymod.py").write_text(_code_block(page, "# mymod.py"))
  strategies = re.search(r"--strategy=(\S+)", page).group(1).split(",")
  ours = [s for s in strategies if s.startswith("mymod:")]
  assert ours == ["mymod:select", "mymod:BalancedMargin"]  # both forms
  workdir = tmp_path / "run"
  env = _env(PYTHONPATH=os.pathsep.join([str(tmp_path), ROOT]))
  p = subprocess.run(
      [sys.executable, "-m", "jaxkd.main", f"--strategy={','.join(ours)}",
       "--config=jaxkd/configs/default.py:quick", "--config.rounds=1",
       "--config.teacher.model=mlp", "--config.student=mlp",   # tiny models
       "--config.teacher.epochs=3", "--config.loop.train_steps=20",
       "--config.progress=False",
       f"--workdir={workdir}"],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert p.returncode == 0, p.stderr[-3000:]
  results = json.loads((workdir / "results.json").read_text())
  assert sorted(results["strategies"]) == sorted(ours)
  for name in ours:
    (records,) = results["strategies"][name]            # one seed
    assert [r["queries"] for r in records] == [50, 90]  # L, then k = 40
    assert [r["selected"] for r in records] == [50, 40]
