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


# Imported only when a command's work starts: `--help`, a flag typo or a bad
# config must not pay for them (seconds each).
HEAVY = {"jax", "jaxlib", "flax", "optax", "orbax", "tensorflow", "tensorflow_datasets",
         "clu", "torch", "ml_dtypes", "transformers"}


def _eager_import_nodes(tree):
  """Import statements that run when the module is imported: not those in
  functions, `if TYPE_CHECKING:` or `if __name__ == "__main__":` blocks."""
  def skipped(node):
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
      return True
    return isinstance(node, ast.If) and ast.unparse(node.test) in (
        "TYPE_CHECKING", "typing.TYPE_CHECKING", "__name__ == '__main__'")
  stack = list(tree.body)
  while stack:
    node = stack.pop()
    if skipped(node):
      continue
    if isinstance(node, (ast.Import, ast.ImportFrom)):
      yield node
    stack.extend(ast.iter_child_nodes(node))


def eager_imports(name: str, modules: dict[str, str]) -> tuple[set[str], set[str]]:
  """(package modules, top-level external packages) that importing `name`
  imports, transitively: parent packages' `__init__`s included."""
  seen, external, todo = set(), set(), [name]
  while todo:
    module = todo.pop()
    parts = module.split(".")
    for i in range(1, len(parts) + 1):  # importing a.b.c runs a and a.b first
      parent = ".".join(parts[:i])
      if parent in seen or parent not in modules:
        continue
      seen.add(parent)
      path = modules[parent]
      with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
      package = parent if path.endswith("__init__.py") else parent.rpartition(".")[0]
      for node in _eager_import_nodes(tree):
        if isinstance(node, ast.Import):
          targets = [a.name for a in node.names]
        else:
          base = node.module or ""
          if node.level:
            up = package.split(".")[:len(package.split(".")) - node.level + 1]
            base = ".".join(up + ([base] if base else []))
          targets = [base] + [f"{base}.{a.name}" for a in node.names
                              if f"{base}.{a.name}" in modules]
        for target in targets:
          if target.split(".")[0] == "itr_jax":
            todo.append(target)
          elif target != "__future__":
            external.add(target.split(".")[0])
  return seen, external


def test_commands_import_no_heavy_library_at_start():
  """Importing a command's module (what `--help` and flag errors run)
  imports neither JAX nor TensorFlow nor the other heavy libraries."""
  import tomllib  # pylint: disable=import-outside-toplevel
  with open(os.path.join(PACKAGE, "..", "pyproject.toml"), "rb") as f:
    scripts = tomllib.load(f)["project"]["scripts"]
  modules = _modules()
  assert "itr_jax.tools.import_dual_encoder" in {t.split(":")[0] for t in scripts.values()}
  problems = {}
  for script, target in sorted(scripts.items()):
    _, external = eager_imports(target.split(":")[0], modules)
    if external & HEAVY:
      problems[script] = sorted(external & HEAVY)
  assert not problems, problems


def test_eager_imports_follow_packages_and_skip_functions():
  internal, external = eager_imports("itr_jax.training.checkpointing", _modules())
  assert {"itr_jax", "itr_jax.training", "itr_jax.training.integrity"} <= internal
  assert {"jax", "orbax"} <= external
  _, external = eager_imports("itr_jax.cli", _modules())
  assert "jax" not in external and "absl" in external


def test_lazy_imports_leave_the_public_api_intact():
  """A command's lazy imports must not replace package attributes: after
  `itr_jax.evaluate` and the report (which imports `itr_jax.metrics.ndcg`),
  `itr_jax.metrics.ndcg` is still the function (a lazily imported package
  made it the module). The project's packages cannot be lazy-imported."""
  import subprocess  # pylint: disable=import-outside-toplevel
  import sys  # pylint: disable=import-outside-toplevel
  import pytest  # pylint: disable=import-outside-toplevel
  code = ("from itr_jax import evaluate\nfrom itr_jax.report import build\n"
          "from itr_jax import metrics\nprint(callable(metrics.ndcg))")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       cwd=os.path.join(PACKAGE, ".."), timeout=120, check=True).stdout
  assert out.strip() == "True"
  from itr_jax import cli  # pylint: disable=import-outside-toplevel
  with pytest.raises(ValueError, match="is a package; import it directly"):
    cli.lazy_import("itr_jax.metrics")
