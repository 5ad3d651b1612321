"""The exception for bad input: entry points print its message as one line, exit 2."""


class BadInput(ValueError):
  """A config, checkpoint or dataset the user gave cannot be used as it is."""
