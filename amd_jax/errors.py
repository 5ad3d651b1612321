"""Exceptions that entry points print as one line: bad input (exit 2), a failed save (exit 1)."""

import contextlib
import sys


class BadInput(ValueError):
  """A config, checkpoint or dataset the user gave cannot be used as it is."""


class SaveFailed(RuntimeError):
  """A checkpoint could not be written (disk full, unwritable): the run stops there."""


@contextlib.contextmanager
def exit_on_bad_input(*also: type[Exception]):
  """The command lines' wrapper: BadInput (and the `also` exceptions, input errors of
  that command) ends the process with one line on stderr and exit status 2, not a
  traceback. (`python -m amd_jax.convert`'s main returns its status instead.)"""
  try:
    yield
  except (BadInput, *also) as e:
    print(f"error: {e}", file=sys.stderr, flush=True)
    sys.exit(2)
