"""The notebooks under notebooks/: generated, small, and they run.

Each notebook is executed headless with nbclient (python3 kernel) at its
smallest sizes (`JAXKD_NOTEBOOK_SMALL=1`); a cell that raises fails the
test. The committed .ipynb files must be what notebooks/make_notebooks.py
generates (rerun it after changing a cell) and carry their outputs.
"""

import importlib.util
import json
import os

import pytest

nbformat = pytest.importorskip("nbformat")
pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NB_DIR = os.path.join(ROOT, "notebooks")


def _generator():
  spec = importlib.util.spec_from_file_location(
      "make_notebooks", os.path.join(NB_DIR, "make_notebooks.py"))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


gen = _generator()
NAMES = list(gen.NOTEBOOKS)


def _committed(name):
  return nbformat.read(os.path.join(NB_DIR, f"{name}.ipynb"), as_version=4)


@pytest.mark.parametrize("name", NAMES)
def test_committed_notebook_is_the_generated_one(name):
  nb, want = _committed(name), gen.build(name)
  assert [(c.cell_type, c.source) for c in nb.cells] == [
      (c.cell_type, c.source) for c in want.cells], (
          f"notebooks/{name}.ipynb differs from make_notebooks.py: run "
          "`python notebooks/make_notebooks.py`")


@pytest.mark.parametrize("name", NAMES)
def test_committed_notebook_has_badge_install_switch_and_outputs(name):
  nb = _committed(name)
  first = nb.cells[0].source
  assert ("colab.research.google.com/github/jaxkd-dev/jaxkd/blob/main/"
          f"notebooks/{name}.ipynb") in first
  code = [c for c in nb.cells if c.cell_type == "code"]
  assert '"google.colab" in sys.modules' in code[0].source
  assert 'ON_ACCELERATOR = jax.default_backend() != "cpu"' in code[1].source
  outputs = [o for c in code for o in c.outputs]
  assert all(c.execution_count for c in code), "committed without running"
  assert not [o for o in outputs if o.output_type == "error"]
  pngs = [o for o in outputs if "image/png" in o.get("data", {})]
  assert len(pngs) >= 2, "the figures are missing from the outputs"
  assert max(len(json.dumps(c.outputs)) for c in code) <= gen.MAX_OUTPUT_BYTES
  size = os.path.getsize(os.path.join(NB_DIR, f"{name}.ipynb"))
  assert size < gen.MAX_NOTEBOOK_BYTES


@pytest.mark.parametrize("name", NAMES)
def test_notebook_executes(name, monkeypatch):
  monkeypatch.setenv("JAXKD_NOTEBOOK_SMALL", "1")
  monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
      [ROOT] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep)
                if p]))
  nb = gen.execute(gen.build(name), timeout=300)  # raises on a failing cell
  code = [c for c in nb.cells if c.cell_type == "code"]
  assert all(c.execution_count for c in code)
  assert any("image/png" in o.get("data", {}) for c in code
             for o in c.outputs)
