"""The package's import graph: no cycle, no import hidden in a function to dodge one,
and no import of the top-level `configs` (the library loads config files by path).

Every module of `amd_jax` (as pkgutil walks the package) is read, not imported,
and its `amd_jax` imports found in the syntax tree. Imports outside any function
run when the module loads: they are the graph, which must be acyclic. Imports
inside a function are refused unless listed in LOCAL_IMPORTS with their reason:
a function-local import is how a cycle hides, so each one must say why it is
not one. Between packages (each subpackage of amd_jax one node, each top-level
module its own) the imports run one way too.

Importing the modules, in a fresh interpreter, changes no process-wide setting: a
library must not filter its user's logs or replace their hooks (the command lines
call amd_jax.quiet.quiet_third_party() for that).
"""

import ast
import inspect
import json
import logging
import os
import pkgutil
import subprocess
import sys
import types

import matplotlib
from absl import logging as absl_logging

import amd_jax
from amd_jax import quiet

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The convert extra: modules that need it are not imported where it is not installed.
OPTIONAL = ("torch", "transformers", "huggingface_hub", "safetensors")

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


def _cycles(graph: dict) -> list[list[str]]:
  """Each cycle of the graph once (not once per member), as [a, b, …, a]."""
  cycles, found = [], set()
  for node in sorted(graph):
    for nxt in sorted(graph[node]):
      chain = _path(graph, nxt, node)
      if chain and frozenset(chain) not in found:
        found.add(frozenset(chain))
        cycles.append([node] + chain)
  return cycles


def test_no_import_cycle():
  graph, _ = _graph()
  cycles = [" → ".join(c) for c in _cycles(graph)]
  assert not cycles, "import cycles:\n" + "\n".join(cycles)


def _package(module: str) -> str:
  """The node of `module` in the graph between packages: the subpackage of amd_jax it
  lies in (amd_jax.data for amd_jax.data.builders.ava), else the top-level module itself."""
  return ".".join(module.split(".")[:2])


def test_no_cycle_between_packages():
  """A package may import another, or be imported by it, not both: models ↔ losses
  would make neither readable, testable or movable alone, even with no cycle between
  their modules. Each cycle is printed with the module imports that make it."""
  graph, _ = _graph()
  packages, because = {}, {}
  for module in sorted(graph):
    for imported in sorted(graph[module]):
      edge = _package(module), _package(imported)
      if edge[0] != edge[1]:
        packages.setdefault(edge[0], set()).add(edge[1])
        because.setdefault(edge, []).append(f"{module} imports {imported}")
  cycles = [" → ".join(c) + "".join(f"\n  {line}" for edge in zip(c, c[1:])
                                   for line in because[edge])
            for c in _cycles(packages)]
  assert not cycles, "import cycles between packages:\n" + "\n".join(cycles)


def test_the_library_never_imports_its_experiments():
  """amd_jax/proj/ (the embedded study) is built on the library: no module outside it
  imports it, at load time or in a function, so the library stands without it."""
  graph, local = _graph()
  importers = sorted(m for m in graph if not m.startswith("amd_jax.proj")
                     and any(i.startswith("amd_jax.proj") for i in graph[m] | local[m]))
  assert {"amd_jax.proj.study.run"} <= set(graph)
  assert not importers, importers


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


def _report_side_effects(external: list[str], modules: list[str], optional: tuple) -> None:
  """Run alone in a fresh interpreter (its source is the program): imports `external`
  (what the modules import from other projects, whose own settings are not ours),
  records the process-wide settings, imports `modules` and prints, as one JSON line,
  the settings that changed and the modules skipped for want of an optional extra."""
  import importlib
  import json
  import logging
  import os
  import signal
  import sys
  import threading
  import warnings

  def load(name: str) -> bool:
    try:
      importlib.import_module(name)
    except ModuleNotFoundError as e:
      # `from P import x` where x is no module, or an extra that is not installed.
      if (e.name == name and name not in modules) or (e.name or "").split(".")[0] in optional:
        return False
      raise
    return True

  def logger(log: logging.Logger):
    return (log.level, log.propagate, log.disabled, list(log.filters),
            [(h, h.level, list(h.filters)) for h in log.handlers])

  def settings() -> dict:
    loggers = {"": logging.root, **{name: log for name, log in
                                    logging.Logger.manager.loggerDict.items()
                                    if isinstance(log, logging.Logger)}}
    out = {f"logger {name!r}": logger(log) for name, log in loggers.items()}
    out.update({"sys.unraisablehook": sys.unraisablehook, "sys.excepthook": sys.excepthook,
                "threading.excepthook": threading.excepthook,
                "warnings.showwarning": warnings.showwarning,
                "warnings.filters": list(warnings.filters),
                "logging.getLoggerClass()": logging.getLoggerClass(),
                "logging.disable": logging.root.manager.disable,
                "os.environ": dict(os.environ),
                "signal handlers": [signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)]})
    if "absl.logging" in sys.modules:       # its handler, on no logger until app.run
      absl_logging = sys.modules["absl.logging"]
      handler = absl_logging.get_absl_handler()
      out["absl handler"] = (handler.level, list(handler.filters))
      out["absl verbosity"] = absl_logging.get_verbosity()
    if "matplotlib" in sys.modules:         # read without resolving it
      out["matplotlib backend"] = dict.__getitem__(sys.modules["matplotlib"].rcParams, "backend")
    return out

  for name in external:
    load(name)
  before = settings()
  skipped = [name for name in modules if not load(name)]
  after = settings()
  new_logger = logger(logging.Logger("new"))
  changed = [f"{key}: {before.get(key, new_logger)!r} → {after.get(key)!r}"
             for key in sorted(after) if before.get(key, new_logger) != after[key]]
  changed += [f"{key}: gone" for key in sorted(before.keys() - after.keys())]
  print(json.dumps({"changed": changed, "skipped": skipped}))


def _loaded(graph: dict, modules: list[str]) -> set[str]:
  """The modules that importing `modules` loads: their packages and load-time imports."""
  out, todo = set(), list(modules)
  while todo:
    module = todo.pop()
    if module not in out:
      out.add(module)
      parts = module.split(".")
      todo += [".".join(parts[:i]) for i in range(1, len(parts))] + sorted(graph[module])
  return out


def _external_imports(paths) -> list[str]:
  """What the modules at `paths` import at load time from other projects: `import P` →
  P, `from P import x` → P and P.x (tried: x may be no module)."""
  out = set()
  for path in paths:
    with open(path, encoding="utf-8") as f:
      tree = ast.parse(f.read(), path)

    def visit(node):
      for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.Import):
          out.update(a.name for a in child.names)
        elif isinstance(child, ast.ImportFrom) and not child.level:
          out.add(child.module)
          out.update(f"{child.module}.{a.name}" for a in child.names)
        if not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
          visit(child)

    visit(tree)
  return sorted(name for name in out if name.split(".")[0] not in ("amd_jax", "__future__"))


def _defines_flags(path: str) -> bool:
  """Whether the module defines absl flags when it loads (a command line run by app.run)."""
  with open(path, encoding="utf-8") as f:
    tree = ast.parse(f.read(), path)
  return any(isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
             and node.func.attr.startswith("DEFINE_")
             for statement in tree.body for node in ast.walk(statement)
             if not isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)))


def test_importing_changes_no_process_setting():
  """Importing every module leaves the process as it was: hooks, warnings filters, the
  loggers' handlers, filters and levels, absl's handler, the environment, the signal
  handlers and matplotlib's backend. Two command lines that define absl flags (both
  define --config) cannot load in one process: each loads in its own, with the
  modules that import it; every other module loads with the first."""
  modules = _modules()
  graph, _ = _graph()
  programs = sorted(m for m, path in modules.items() if _defines_flags(path))
  groups = {p: [] for p in programs}
  for module in sorted(modules):
    reached = [p for p in programs if _path(graph, module, p)]
    groups[reached[0] if reached else programs[0]].append(module)
  changed = []
  for group in groups.values():
    external = _external_imports(modules[m] for m in sorted(_loaded(graph, group)))
    program = (inspect.getsource(_report_side_effects)
               + f"\n_report_side_effects({external!r}, {group!r}, {OPTIONAL!r})\n")
    proc = subprocess.run([sys.executable, "-c", program], cwd=ROOT, capture_output=True,
                          text=True, timeout=600, env=dict(os.environ, JAX_PLATFORMS="cpu"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.splitlines()[-1])
    assert len(report["skipped"]) < len(group)
    changed += report["changed"]
  assert not changed, "importing amd_jax changed:\n" + "\n".join(changed)


def test_quiet_third_party_drops_the_noise_once(monkeypatch):
  """What the command lines (and conftest) install: each filter once however often it is
  called, dropping only its messages, and the hook passing on every other error."""
  seen = []
  monkeypatch.setattr(sys, "unraisablehook", seen.append)
  absl, handler = logging.getLogger("absl"), absl_logging.get_absl_handler()
  quiet.quiet_third_party()
  installed = list(absl.filters), list(handler.filters), sys.unraisablehook
  quiet.quiet_third_party()
  assert (list(absl.filters), list(handler.filters), sys.unraisablehook) == installed

  def passes(filterer, msg, path="x.py", exc_info=None):
    return bool(filterer.filter(logging.LogRecord("absl", logging.WARNING, path, 1, msg, None,
                                                  exc_info)))

  assert not passes(absl, "Metadata file does not exist: /w/1/state/_CHECKPOINT_METADATA")
  assert not passes(absl, "Variant folder /d/moving_digits/4.0.0 has no dataset_info.json")
  assert not passes(absl, "Using custom data configuration mine")
  assert passes(absl, "Metadata file does not exist: /w/1/state/other")
  failed = (OSError, OSError("disk full"), None)
  assert not passes(handler, "write failed", f"{os.sep}orbax{os.sep}x.py", failed)
  assert passes(handler, "write failed", f"{os.sep}orbax{os.sep}x.py")
  assert passes(handler, "failed", "x.py", failed)
  closed, other = RuntimeError("Event loop is closed"), RuntimeError("other")
  for error in (closed, other):
    sys.unraisablehook(types.SimpleNamespace(exc_value=error))
  assert [u.exc_value for u in seen] == [other]
  assert matplotlib.get_backend().lower() == "agg"
