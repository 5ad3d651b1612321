"""The package's import graph: no cycle, no import hidden in a function to dodge one,
and no import of the top-level `configs` (the library loads config files by path).

Every module of `amd_jax` (as pkgutil walks the package) is read, not imported,
and its `amd_jax` imports found in the syntax tree. Imports outside any function
run when the module loads: they are the graph, which must be acyclic. Imports
inside a function are refused unless listed in LOCAL_IMPORTS with their reason:
a function-local import is how a cycle hides, so each one must say why it is
not one.
"""

import ast
import os
import pkgutil

import amd_jax

# importer → the amd_jax modules it may import inside a function, and why.
LOCAL_IMPORTS = {
    # The command lines parse their flags before loading JAX or TFDS, so that a
    # usage error or --help answers at once.
    "amd_jax.main": {"amd_jax.distributed", "amd_jax.errors", "amd_jax.train",
                     "amd_jax.workdir"},
    # The plan sets JAX_PLATFORMS and XLA_FLAGS for its target before jax loads.
    "amd_jax.plan.cli": {"amd_jax.plan.program"},
    "amd_jax.data.build": {"amd_jax.data.sources"},
    # PyTorch is an optional extra, imported only for `bench step --reference torch`.
    "amd_jax.bench.step": {"amd_jax.bench.torch_reference"},
}


def _modules() -> dict[str, str]:
  """{module name: source file} of every module of the package."""
  out = {"amd_jax": os.path.join(amd_jax.__path__[0], "__init__.py")}
  for info in pkgutil.walk_packages(amd_jax.__path__, "amd_jax."):
    leaf = info.name.rpartition(".")[2]
    folder = info.module_finder.path
    out[info.name] = (os.path.join(folder, leaf, "__init__.py") if info.ispkg
                      else os.path.join(folder, leaf + ".py"))
  return out


def _imported(node: ast.Import | ast.ImportFrom, module: str, modules: dict) -> set[str]:
  """The amd_jax modules an import statement of `module` loads (`from P import x` loads
  P.x when that is a module, else P)."""
  if isinstance(node, ast.Import):
    return {a.name for a in node.names if a.name.split(".")[0] == "amd_jax"}
  base = node.module or ""
  if node.level:
    package = module if modules[module].endswith("__init__.py") else module.rpartition(".")[0]
    parts = package.split(".")
    base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
  if base.split(".")[0] != "amd_jax":
    return set()
  return {f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names}


def _imports(module: str, modules: dict) -> tuple[set[str], set[str]]:
  """(modules imported at load time, modules imported inside functions) by `module`."""
  with open(modules[module], encoding="utf-8") as f:
    tree = ast.parse(f.read(), modules[module])
  top, local = set(), set()

  def visit(node, in_function):
    for child in ast.iter_child_nodes(node):
      if isinstance(child, (ast.Import, ast.ImportFrom)):
        (local if in_function else top).update(_imported(child, module, modules))
      visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)))

  visit(tree, False)
  return top - {module}, local - {module}


def _graph():
  modules = _modules()
  graph, local = {}, {}
  for name in modules:
    graph[name], local[name] = _imports(name, modules)
  return graph, local


def _path(graph: dict, start: str, goal: str) -> list[str] | None:
  """A chain of load-time imports start → … → goal, or None."""
  seen, stack = {start}, [[start]]
  while stack:
    chain = stack.pop()
    if chain[-1] == goal:
      return chain
    for nxt in sorted(graph.get(chain[-1], ())):
      if nxt not in seen:
        seen.add(nxt)
        stack.append(chain + [nxt])
  return None


def test_walk_finds_the_package():
  graph, _ = _graph()
  assert {"amd_jax.train", "amd_jax.data.pipeline", "amd_jax.models.vit"} <= set(graph)
  assert "amd_jax.data.pipeline" in graph["amd_jax.train"]


def test_no_import_cycle():
  graph, _ = _graph()
  cycles, found = [], set()
  for module in sorted(graph):
    for imported in sorted(graph[module]):
      chain = _path(graph, imported, module)
      if chain and frozenset(chain) not in found:     # each cycle once, not once per member
        found.add(frozenset(chain))
        cycles.append(" → ".join([module] + chain))
  assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_no_function_local_imports_beyond_the_list():
  graph, local = _graph()
  refused = []
  for module in sorted(local):
    for imported in sorted(local[module] - LOCAL_IMPORTS.get(module, set())):
      closes = _path(graph, imported, module)
      why = (f": at load time it would close the cycle {' → '.join([module] + closes)}"
             if closes else "")
      refused.append(f"{module} imports {imported} inside a function{why}")
  assert not refused, "\n".join(refused)


def test_local_import_list_is_current():
  """An entry whose import went away is removed, so the list stays short and true."""
  _, local = _graph()
  stale = [f"{module} → {imported}" for module, allowed in LOCAL_IMPORTS.items()
           for imported in sorted(allowed - local.get(module, set()))]
  assert not stale, f"LOCAL_IMPORTS lists imports that are gone: {stale}"


def test_the_library_reads_configs_as_files():
  """amd_jax.config_files loads configs/*.py by path; `import configs` would make the
  config files a second package the library depends on."""
  importers = []
  for module, path in _modules().items():
    with open(path, encoding="utf-8") as f:
      for node in ast.walk(ast.parse(f.read(), path)):
        names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                 else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level
                 else [])
        if any(name.split(".")[0] == "configs" for name in names):
          importers.append(f"{module}:{node.lineno}")
  assert not importers, f"modules importing configs: {importers}"
