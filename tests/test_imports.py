"""No import circle among jaxkd's modules (module-level imports)."""

import ast
import os

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))), "jaxkd")


def _module_graph():
  graph = {}
  for dirpath, _, files in os.walk(ROOT):
    for f in files:
      if not f.endswith(".py"):
        continue
      path = os.path.join(dirpath, f)
      rel = os.path.relpath(path, os.path.dirname(ROOT))[:-3]
      name = rel.replace(os.sep, ".").removesuffix(".__init__")
      deps = set()
      for node in ast.parse(open(path).read()).body:  # top level only
        if isinstance(node, ast.ImportFrom) and node.module and (
            node.module.startswith("jaxkd")):
          deps.add(node.module)
          deps.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
          deps.update(a.name for a in node.names if a.name.startswith("jaxkd"))
      graph[name] = deps
  return {k: {d for d in v if d in graph and d != k} for k, v in graph.items()}


def _cycles(graph):
  out, state = [], {}

  def visit(n, stack):
    state[n] = 1
    stack.append(n)
    for d in sorted(graph[n]):
      if state.get(d) == 1:
        out.append(stack[stack.index(d):] + [d])
      elif d not in state:
        visit(d, stack)
    stack.pop()
    state[n] = 2

  for n in sorted(graph):
    if n not in state:
      visit(n, [])
  return out


def test_no_import_circle():
  assert not _cycles(_module_graph())
