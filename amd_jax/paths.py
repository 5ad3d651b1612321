"""Every command's output paths, checked in one place before any work: a folder or a
file to write, or a new file or folder that nothing may occupy yet.

Missing parent folders are created; a URL, a file where a folder is needed (or
above it), a folder where a file is needed, and a path that cannot be created or
written are refused with one line (errors.BadInput) that names the argument and
the path. Light (no jax): a command checks its outputs before it imports the
heavy parts.
"""

from __future__ import annotations

import contextlib
import os
import re

from amd_jax import errors

# gs://bucket/run, s3://…, file://…: any scheme:// is a URL, not a path.
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_url(path: str) -> bool:
  return bool(_URL.match(path))


def _refuse_empty_or_url(path: str, what: str) -> None:
  if not path:
    raise errors.BadInput(f"{what} is empty: give a path")
  if is_url(path):
    raise errors.BadInput(f"{what} {path} is a URL: this command writes plain files; give "
                          "a local path, or one on a mounted filesystem (NFS, gcsfuse)")


def _file_above(path: str) -> str | None:
  """The nearest existing ancestor of `path` (itself included) when it is not a folder."""
  path = os.path.abspath(path)
  while not os.path.lexists(path):
    path = os.path.dirname(path)
  return None if os.path.isdir(path) else path


def _missing(path: str) -> list[str]:
  """`path` and its ancestors that do not exist, innermost first."""
  out, path = [], os.path.abspath(path)
  while not os.path.lexists(path):
    out.append(path)
    path = os.path.dirname(path)
  return out


def _folder(folder: str, what: str, path: str, *, create: bool) -> None:
  """Makes `folder` (parents included) for the output `what` `path`, or refuses it in
  one line; create=False removes again what it made (a trial). A refusal leaves
  nothing made behind."""
  if folder == path and os.path.lexists(path) and not os.path.isdir(path):
    raise errors.BadInput(f"{what} {path} is a file, not a folder: give a folder's path "
                          "(or move the file away)")
  blocker = _file_above(folder)
  if blocker is not None:
    raise errors.BadInput(f"{what} {path} cannot be created: Not a directory ({blocker} is a "
                          "file): give a path under a folder")
  made = _missing(folder)
  done = False
  try:
    try:
      os.makedirs(folder, exist_ok=True)
    except OSError as e:
      raise errors.BadInput(f"{what} {path} cannot be created: {e.strerror} ({e.filename}): "
                            "give a path you can write to") from None
    if not os.access(folder, os.W_OK | os.X_OK):
      raise errors.BadInput(f"{what} {path} is not writable: give a path you can write to"
                            if folder == path else
                            f"{what} {path} cannot be written: its folder {folder} is not "
                            "writable: give a path you can write to")
    done = True
  finally:
    if not (done and create):
      for made_dir in made:           # innermost first: only what this call made
        with contextlib.suppress(OSError):   # gone, or filled by someone else meanwhile
          os.rmdir(made_dir)


def output_dir(path: str, what: str, *, create: bool = True) -> None:
  """A folder the command writes into: made (parents included), or refused in one line
  naming `what` and `path` (a URL, a file, under a file, uncreatable, unwritable).
  create=False proves only that it can be made (what was made is removed again), for
  a command that makes it once it has something to write (a refusal further on then
  leaves nothing behind)."""
  _refuse_empty_or_url(path, what)
  _folder(path, what, path, create=create)


def output_file(path: str, what: str) -> None:
  """A file the command writes (or appends to): its folder is made (parents included);
  a folder at `path`, or a folder that cannot be, is refused in one line."""
  _refuse_empty_or_url(path, what)
  if os.path.isdir(path):
    raise errors.BadInput(f"{what} {path} is a folder: give a file's path")
  _folder(os.path.dirname(os.path.abspath(path)), what, path, create=True)


def new_output(path: str, what: str) -> None:
  """A file or folder the command creates whole, so nothing may be at `path` yet: its
  folder is made (parents included), or refused in one line as by output_file."""
  _refuse_empty_or_url(path, what)
  if os.path.lexists(path):
    raise errors.BadInput(f"{what} {path} exists: choose another path or remove it")
  _folder(os.path.dirname(os.path.abspath(path)), what, path, create=True)
