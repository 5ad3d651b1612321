"""The process-wide settings of our command lines, in one call: quiet_third_party().

Importing an amd_jax module changes nothing in the process that imports it
(tests/test_imports.py checks it): a library must not filter another program's
logs or replace its hooks. Each command line (amd_jax.main, .convert, .analysis,
.bench, .plan, .data.build, the study and its workers) and the test suite call
quiet_third_party() first. It drops third-party messages that are no news to our
users, and draws figures into files only.
"""

from __future__ import annotations

import logging
import os
import sys

import matplotlib
from absl import logging as absl_logging


class _NoItemMetadataWarning(logging.Filter):
  """Reading one item of a step (checkpoint.tree_shapes, read_tree: a workdir's state)
  makes orbax warn, on every load, that the item folder lacks _CHECKPOINT_METADATA:
  only a step folder has one."""

  def filter(self, record):
    message = record.getMessage()
    return not (message.startswith("Metadata file does not exist")
                and message.endswith("_CHECKPOINT_METADATA"))


class _NoTfdsNews(logging.Filter):
  """TFDS warns "Variant folder ... has no dataset_info.json" when it looks for a
  dataset that is not built yet (before every first build), and "Using custom data
  configuration" for a config its class does not declare (every video folder's):
  no news either way."""

  def filter(self, record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith(("Variant folder", "Using custom data configuration"))


class _NoOrbaxThreadTracebacks(logging.Filter):
  """orbax logs a failed background write with its traceback from each writer thread,
  then raises the error in the next save or wait, where it becomes one line."""

  def filter(self, record):
    return not (record.exc_info and f"{os.sep}orbax{os.sep}" in record.pathname)


class _WithoutClosedLoops:
  """sys.unraisablehook without orbax's echo of a failed read or write: orbax closes
  that operation's event loop, and each tensorstore request still in flight then
  reports RuntimeError('Event loop is closed') from its callback (hundreds at a time)."""

  def __init__(self, hook):
    self._hook = hook

  def __call__(self, unraisable):
    if not (isinstance(unraisable.exc_value, RuntimeError)
            and str(unraisable.exc_value) == "Event loop is closed"):
      self._hook(unraisable)


def _add_once(target: logging.Filterer, kind: type[logging.Filter]) -> None:
  if not any(isinstance(f, kind) for f in target.filters):
    target.addFilter(kind())


def quiet_third_party() -> None:
  """Filters orbax's and TFDS's noise from the absl logger and absl's handler, and
  orbax's closed event loops from sys.unraisablehook; selects matplotlib's Agg
  backend (files only: no display on servers and CI). A second call adds nothing."""
  absl = logging.getLogger("absl")
  _add_once(absl, _NoItemMetadataWarning)
  _add_once(absl, _NoTfdsNews)
  # On absl's handler, which app.run puts on the root logger: it sees the records of
  # every logger, whichever orbax writes through.
  _add_once(absl_logging.get_absl_handler(), _NoOrbaxThreadTracebacks)
  if not isinstance(sys.unraisablehook, _WithoutClosedLoops):
    sys.unraisablehook = _WithoutClosedLoops(sys.unraisablehook)
  matplotlib.use("Agg")
