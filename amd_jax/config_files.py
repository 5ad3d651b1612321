"""The config files of configs/, loaded by path as `--config=configs/FILE.py:ARGS` loads them.

The library reads them as files, not as an imported package, so configs/ stays
what a user edits and passes on the command line, and the library depends on no
second top-level package. Paths are the repository's (beside amd_jax/), whatever
the current directory.
"""

from __future__ import annotations

import importlib.util
import os

import ml_collections

CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


def load(name: str, *arg: str) -> ml_collections.ConfigDict:
  """configs/`name`.py's get_config(*arg): the text after ':' in --config, if any."""
  path = os.path.join(CONFIG_DIR, f"{name}.py")
  spec = importlib.util.spec_from_file_location(f"{name}_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(*arg)
