"""The config files of configs/, loaded by path as `--config=configs/FILE.py:ARGS` loads them.

The library reads them as files, not as an imported package, so configs/ stays
what a user edits and passes on the command line, and the library depends on no
second top-level package. Paths are the repository's (beside amd_jax/), whatever
the current directory.

Config files import each other as the package `configs` (`from configs import
common`), which is not installed (setup.cfg installs amd_jax alone): loading a file
makes `configs` its own folder when that holds common.py (configs/ of a checkout,
or a copy of it), else the repository's configs/ (a config file of one's own
elsewhere), whatever the current directory.
"""

from __future__ import annotations

import difflib
import importlib.machinery
import importlib.util
import os
import sys

import ml_collections
from absl import flags
from ml_collections import config_flags

CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


def _configs_package(path: str) -> None:
  """Makes `configs` the package of the config file at `path` (see the docstring above).
  Its modules already loaded from another folder are dropped, so that none is mixed in."""
  folder = os.path.dirname(os.path.abspath(path))
  if not os.path.isfile(os.path.join(folder, "common.py")):
    folder = CONFIG_DIR
  loaded = sys.modules.get("configs")
  if [os.path.realpath(p) for p in getattr(loaded, "__path__", ())] == [os.path.realpath(folder)]:
    return
  for name in [n for n in sys.modules if n == "configs" or n.startswith("configs.")]:
    del sys.modules[name]
  package = importlib.util.module_from_spec(
      importlib.machinery.ModuleSpec("configs", None, is_package=True))
  package.__path__ = [folder]
  sys.modules["configs"] = package


def _module(path: str):
  """The config file at `path`, executed as a module."""
  _configs_package(path)
  name = os.path.splitext(os.path.basename(path))[0]
  spec = importlib.util.spec_from_file_location(f"{name}_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def load(name: str, *arg: str) -> ml_collections.ConfigDict:
  """configs/`name`.py's get_config(*arg): the text after ':' in --config, if any."""
  return _module(os.path.join(CONFIG_DIR, f"{name}.py")).get_config(*arg)


def keys(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
  """Every leaf key of a config, dotted ('optim.base_lr'), in the config's order."""
  out = []
  for key, value in config.items():
    if isinstance(value, ml_collections.ConfigDict):
      out += keys(value, f"{prefix}{key}.")
    else:
      out.append(prefix + key)
  return out


def value(config: ml_collections.ConfigDict, dotted: str):
  """config's value at a dotted key ('optim.base_lr')."""
  for name in dotted.split("."):
    config = config[name]
  return config


def describe(config: ml_collections.ConfigDict) -> str:
  """`key = value  # meaning`, one line per key (configs/common.py MEANINGS): what
  --print_config prints and config.txt holds."""
  meanings = _module(os.path.join(CONFIG_DIR, "common.py")).MEANINGS
  rows = [(k, repr(value(config, k))) for k in keys(config)]
  width = max(len(k) + len(v) for k, v in rows if len(k) + len(v) < 60) + 3
  return "\n".join(f"{f'{k} = {v}':<{width}}  # {meanings.get(k, '')}".rstrip()
                   for k, v in rows)


def nearest_keys(key: str, config: ml_collections.ConfigDict) -> list[str]:
  """The config's keys closest in spelling to an unknown one."""
  return difflib.get_close_matches(key, keys(config), n=3, cutoff=0.8)


HELP_FLAGS = ("-h", "--help", "--helpshort", "--helpfull", "-?")


def _config_text(argv) -> str:
  """FILE[:ARGS] of --config=FILE[:ARGS] (or --config FILE[:ARGS]) in argv; '' if none."""
  for arg, following in zip(argv[1:], [*argv[2:], ""]):
    if arg.startswith("--config="):
      return arg.partition("=")[2]
    if arg == "--config":
      return following
  return ""


def _config_of(argv) -> ml_collections.ConfigDict:
  """The config that --config=FILE[:ARGS] in argv names (it loaded: only a key failed)."""
  path, _, arg = _config_text(argv).partition(":")
  module = _module(path)
  return module.get_config(arg) if arg else module.get_config()


def _unknown_key(argv, part: str) -> str:
  """The dotted key of the --config.KEY=VALUE argument that `part` (the name
  ml-collections could not find) belongs to; `part` itself when none does."""
  for arg in argv[1:]:
    if arg.startswith("--config."):
      key = arg[len("--config."):].partition("=")[0]
      if part in key.split("."):
        return key
  return part


def parse_flags(argv, usage: str = ""):
  """absl's parser for the command lines that take --config (amd_jax.main, amd_jax.plan),
  but --help prints `usage` and exits 0, and a bad config file, argument or key ends
  in one line, exit 2 (an unknown key with the nearest known ones)."""
  if any(a in HELP_FLAGS for a in argv[1:]):
    print(usage.strip())
    sys.exit(0)
  text = _config_text(argv)
  if text:         # ml-collections loads the file by path too: its `configs` first
    _configs_package(text.partition(":")[0])
  try:
    return flags.FLAGS(argv)
  except Exception as e:  # everything here comes from the command line the user typed
    cause = e
    while cause.__cause__ or cause.__context__:
      cause = cause.__cause__ or cause.__context__
    if isinstance(cause, (AttributeError, KeyError)):
      key = _unknown_key(argv, str(cause).strip(chr(39) + chr(34)))
      message = f"unknown config key {key!r}"
      near = nearest_keys(key, _config_of(argv))
      if near:
        message += f" (did you mean {' or '.join(near)}?)"
    else:
      message = str(e).strip().splitlines()[0]
      # config_flags puts the config file's own error (a bad config argument)
      # at the end of an embedded traceback: its last line is the reason.
      reason = str(cause).strip().splitlines()[-1] if cause is not e else ""
      if reason and reason not in message:
        message = f"{message} {reason}"
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def flag_text(name: str = "config") -> str:
  """The --config value as typed (FILE[:ARGS]), for reports."""
  return config_flags.get_config_filename(flags.FLAGS[name])
