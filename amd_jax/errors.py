"""Exceptions that entry points print as one line: bad input (exit 2), a failed save (exit 1)."""


class BadInput(ValueError):
  """A config, checkpoint or dataset the user gave cannot be used as it is."""


class SaveFailed(RuntimeError):
  """A checkpoint could not be written (disk full, unwritable): the run stops there."""
