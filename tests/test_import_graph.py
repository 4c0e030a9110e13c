"""The package's import graph has no cycle (imports inside functions included).

Static: every `import` statement of every module under itr_jax/ is read with
`ast`, so this costs milliseconds and imports nothing.
"""
import ast
import os

PACKAGE = os.path.join(os.path.dirname(__file__), "..", "itr_jax")


def _modules() -> dict[str, str]:
  """{dotted module name: path} of every .py file of the package."""
  found = {}
  for root, _, files in os.walk(PACKAGE):
    for name in files:
      if name.endswith(".py"):
        path = os.path.join(root, name)
        rel = os.path.relpath(path, os.path.join(PACKAGE, ".."))[:-3].split(os.sep)
        if rel[-1] == "__init__":
          rel = rel[:-1]
        found[".".join(rel)] = path
  return found


def import_graph() -> dict[str, set[str]]:
  """{module: the package modules it imports}. `from a import b` counts as
  importing `a.b` when that is a module, else `a`; a package's `__init__`
  imports are edges of the package module itself."""
  modules = _modules()
  graph = {}
  for name, path in modules.items():
    with open(path, encoding="utf-8") as f:
      tree = ast.parse(f.read(), path)
    package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
    edges = set()
    for node in ast.walk(tree):
      if isinstance(node, ast.Import):
        targets = [a.name for a in node.names]
      elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
          parts = package.split(".")
          base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
        targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                   for a in node.names]
      else:
        continue
      for target in targets:
        while target and target not in modules:
          target = target.rpartition(".")[0]
        if target and target != name:
          edges.add(target)
    graph[name] = edges
  return graph


def find_cycle(graph: dict[str, set[str]]):
  """One cycle [a, b, ..., a] of `graph`, or None."""
  state, stack = {}, []

  def visit(node):
    state[node] = "open"
    stack.append(node)
    for nxt in sorted(graph.get(node, ())):
      if state.get(nxt) == "open":
        return stack[stack.index(nxt):] + [nxt]
      if nxt not in state:
        cycle = visit(nxt)
        if cycle:
          return cycle
    state[node] = "done"
    stack.pop()
    return None

  for node in sorted(graph):
    if node not in state:
      cycle = visit(node)
      if cycle:
        return cycle
  return None


def _without_package_inits(graph):
  """Edges to and from package `__init__`s dropped: importing `itr_jax.x.y`
  runs `itr_jax.x`'s __init__, which re-exports its modules, so every
  module would otherwise be on a cycle through its own package."""
  packages = {n for n in graph if any(m.startswith(n + ".") for m in graph)}
  return {n: {m for m in e if m not in packages} for n, e in graph.items()
          if n not in packages}


def test_finder_sees_a_cycle():
  assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
  assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_module_import_cycle():
  graph = import_graph()
  assert "itr_jax.training.train_step" in graph
  assert "itr_jax.data.caption_embeddings" in graph["itr_jax.data.precomputed"]
  cycle = find_cycle(_without_package_inits(graph))
  assert cycle is None, " -> ".join(cycle)
