"""JSON files written whole or not at all, and read with one line when missing or bad.

Every JSON file the package writes (a run's config, plans, analyses, study
stages) goes through write_json: a reader in another process, or after a crash,
sees the old file or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
from typing import Any

from amd_jax import errors

_REQUIRED = object()


def write_text(path: str, text: str) -> None:
  """Writes text to path atomically (a temporary file beside it, then a rename)."""
  tmp = path + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    f.write(text)
  os.replace(tmp, path)


def write_json(path: str, obj: Any, *, indent: int | None = 2) -> None:
  """Writes obj as JSON to path atomically."""
  write_text(path, json.dumps(obj, indent=indent))


def read_json(path: str, default: Any = _REQUIRED, *, why: str = "") -> Any:
  """The JSON object at path. A missing file returns `default`, or with none is one
  BadInput line (why: who should have written it); unreadable JSON is one line."""
  if not os.path.isfile(path):
    if default is not _REQUIRED:
      return default
    raise errors.BadInput(f"{path} does not exist{f' ({why})' if why else ''}")
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except (OSError, ValueError) as e:
    raise errors.BadInput(f"{path} is not readable JSON ({e})") from None
