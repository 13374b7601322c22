"""Builds and executes jaxkd's notebooks from notebooks/src/<name>.py.

  python notebooks/make_notebooks.py              # all three, executed
  python notebooks/make_notebooks.py quickstart   # one of them
  python notebooks/make_notebooks.py --no-execute # sources only

A source is jupytext's percent format: `# %%` starts a code cell, `# %%
[markdown]` a markdown cell of `# `-prefixed lines, line magics are commented
(`# %matplotlib inline`). The .ipynb files are generated, never edited by
hand: change the source and rerun, so they carry their outputs (figures at
dpi 70, outputs <= 200 KB, files < 1 MB; larger ones are refused). nbclient
runs them with the `python3` kernel from notebooks/; `JAXKD_NOTEBOOK_SMALL=1`
picks the smallest sizes (tests/test_notebooks.py). active_mixup uses MNIST
when `JAXKD_MNIST_DIR` names its IDX files (default here:
../shared/data/mnist beside the checkout, if present), else digits.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from typing import Dict, List, Optional, Tuple

import nbformat

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(HERE, "src")
REPO_URL = "https://github.com/jaxkd-dev/jaxkd"  # placeholder owner
COLAB = "https://colab.research.google.com/github/jaxkd-dev/jaxkd/blob/main"
MAX_OUTPUT_BYTES = 200_000
MAX_NOTEBOOK_BYTES = 1_000_000

# name -> its source; the notebooks' own metadata beyond the kernel.
NOTEBOOKS: Dict[str, str] = {
    name: os.path.join(SRC, f"{name}.py")
    for name in ("quickstart", "active_mixup", "solvers_on_tpu")}
METADATA = {"solvers_on_tpu": {"accelerator": "TPU"}}  # Colab opens it so
SHARED = slice(1, 4)  # the install cell and the accelerator switch: the
# same in every notebook, checked against the first notebook's.

Cell = Tuple[str, str]  # ("md" | "code", source)
_MARKER = re.compile(r"^# %%(?: \[(markdown|md)\])?\s*$")
_MAGIC = re.compile(r"^# (%{1,2}[A-Za-z])")  # jupytext's commented magics


def badge(name: str) -> str:
  return (f"[![Open In Colab](https://colab.research.google.com/assets/"
          f"colab-badge.svg)]({COLAB}/notebooks/{name}.ipynb)")


def read_cells(path: str) -> List[Cell]:
  """The cells of a percent-format source. Comment lines before the first
  `# %%` (a jupytext header) are skipped; other cell kinds are refused."""
  cells: List[Cell] = []
  kind, lines = None, []
  for n, line in enumerate(open(path, encoding="utf-8").read().splitlines(),
                           1):
    where = f"{os.path.relpath(path, HERE)}:{n}"
    if line.startswith("# %%") and not _MAGIC.match(line):
      m = _MARKER.match(line)
      if not m:
        raise SystemExit(f"{where}: only `# %%` and `# %% [markdown]` "
                         f"cells are supported, not {line!r}")
      if kind:
        cells.append((kind, "\n".join(lines).strip("\n")))
      kind, lines = ("md" if m.group(1) else "code"), []
    elif kind is None:
      if line.strip() and not line.startswith("#"):
        raise SystemExit(f"{where}: code before the first `# %%` cell")
    elif kind == "md":
      if line and line != "#" and not line.startswith("# "):
        raise SystemExit(f"{where}: a markdown line must start with '# '")
      lines.append(line[2:])
    else:
      lines.append(_MAGIC.sub(r"\1", line))
  if kind:
    cells.append((kind, "\n".join(lines).strip("\n")))
  return cells


def check_cells(name: str, cells: List[Cell]) -> None:
  """The title cell carries the notebook's Colab badge, the install cell
  installs REPO_URL, and the shared cells match the first notebook's."""
  src = os.path.relpath(NOTEBOOKS[name], HERE)
  if not cells or cells[0][0] != "md" or badge(name) not in cells[0][1]:
    raise SystemExit(f"{src}: the first cell must be markdown with the "
                     f"badge {badge(name)}")
  if f"git+{REPO_URL}.git" not in cells[1][1]:
    raise SystemExit(f"{src}: the install cell must install {REPO_URL}")
  first = next(iter(NOTEBOOKS))
  if cells[SHARED] != read_cells(NOTEBOOKS[first])[SHARED]:
    raise SystemExit(f"{src}: cells 1-3 (install, accelerator switch) "
                     f"differ from src/{first}.py's; keep them identical")


def build(name: str) -> nbformat.NotebookNode:
  """The unexecuted notebook `name` from notebooks/src/<name>.py."""
  cells = read_cells(NOTEBOOKS[name])
  check_cells(name, cells)
  nb = nbformat.v4.new_notebook()
  nb.metadata = {
      "kernelspec": {"display_name": "Python 3", "language": "python",
                     "name": "python3"},
      "language_info": {"name": "python"},
      "colab": {"provenance": []},
      **METADATA.get(name, {}),
  }
  nb.cells = [nbformat.v4.new_markdown_cell(src) if kind == "md" else
              nbformat.v4.new_code_cell(src) for kind, src in cells]
  for i, cell in enumerate(nb.cells):
    cell.id = f"{name[:12]}-{i:02d}"  # stable ids: clean diffs
  return nb


def execute(nb: nbformat.NotebookNode, *, timeout: int = 600,
            env: Optional[Dict[str, str]] = None) -> nbformat.NotebookNode:
  """Runs every cell with nbclient (python3 kernel) from notebooks/; raises
  nbclient's CellExecutionError on the first failing cell."""
  from nbclient import NotebookClient
  client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                          record_timing=True,
                          resources={"metadata": {"path": HERE}})
  kernel_env = dict(os.environ if env is None else env)
  # tests/conftest.py fakes 8 CPU devices; a notebook runs on the real ones.
  flags = kernel_env.get("XLA_FLAGS", "").split()
  kernel_env["XLA_FLAGS"] = " ".join(
      f for f in flags if not f.startswith(
          "--xla_force_host_platform_device_count"))
  kernel_env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  client.execute(env=kernel_env)
  return nb


def cell_seconds(nb: nbformat.NotebookNode) -> List[Tuple[int, float]]:
  """(cell index, seconds) of each executed code cell; removes nbclient's
  timestamps from the metadata (they would change every run)."""
  from datetime import datetime
  out = []
  for i, cell in enumerate(nb.cells):
    t = cell.metadata.pop("execution", None)
    if t and "iopub.execute_input" in t and "shell.execute_reply" in t:
      a, b = (datetime.fromisoformat(t[k].replace("Z", "+00:00"))
              for k in ("iopub.execute_input", "shell.execute_reply"))
      out.append((i, (b - a).total_seconds()))
  return out


def output_sizes(nb: nbformat.NotebookNode) -> List[int]:
  """Bytes of each code cell's outputs as JSON."""
  return [len(json.dumps(c.get("outputs", []))) for c in nb.cells
          if c.cell_type == "code"]


def check_sizes(name: str, nb: nbformat.NotebookNode) -> int:
  """Raises if an output or the notebook exceeds the size limits."""
  big = max(output_sizes(nb), default=0)
  if big > MAX_OUTPUT_BYTES:
    raise SystemExit(f"{name}: an output cell has {big} bytes "
                     f"(limit {MAX_OUTPUT_BYTES}).")
  size = len(nbformat.writes(nb).encode())
  if size > MAX_NOTEBOOK_BYTES:
    raise SystemExit(f"{name}: {size} bytes (limit {MAX_NOTEBOOK_BYTES}).")
  return size


def _children_cpu() -> float:
  """CPU seconds (user + sys) of finished child processes (the kernels)."""
  import resource
  r = resource.getrusage(resource.RUSAGE_CHILDREN)
  return r.ru_utime + r.ru_stime


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("names", nargs="*",
                      help=f"notebooks to build: {', '.join(NOTEBOOKS)} "
                      "(default: all)")
  parser.add_argument("--no-execute", action="store_true",
                      help="write the sources without outputs")
  parser.add_argument("--timeout", type=int, default=600,
                      help="seconds per cell")
  args = parser.parse_args(argv)
  unknown = set(args.names) - set(NOTEBOOKS)
  if unknown:
    parser.error(f"unknown notebooks {sorted(unknown)}; known: "
                 f"{', '.join(NOTEBOOKS)}")
  mnist = os.path.join(os.path.dirname(HERE), "..", "shared", "data", "mnist")
  if os.path.isdir(mnist):
    os.environ.setdefault("JAXKD_MNIST_DIR", os.path.abspath(mnist))
  for name in args.names or list(NOTEBOOKS):
    nb = build(name)
    t0, cpu0 = time.time(), _children_cpu()
    cells = ""
    if not args.no_execute:
      execute(nb, timeout=args.timeout)
      cells = " ".join(f"[{i}] {sec:.0f}s" for i, sec in cell_seconds(nb)
                       if sec >= 1)
    wall, cpu = time.time() - t0, _children_cpu() - cpu0
    size = check_sizes(name, nb)
    path = os.path.join(HERE, f"{name}.ipynb")
    nbformat.write(nb, path)
    print(f"{path}: {size / 1000:.0f} KB, largest output "
          f"{max(output_sizes(nb)) / 1000:.0f} KB"
          + ("" if args.no_execute else f", executed in {wall:.0f}s wall, "
             f"{cpu:.0f}s kernel CPU (cells: {cells})"), flush=True)


if __name__ == "__main__":
  sys.path.insert(0, os.path.dirname(HERE))
  main()
