r"""Command line: python -m amd_jax.main --config=configs/FILE.py[:ARGS] --workdir=DIR [--config.KEY=VALUE ...]

Resumes from DIR when it holds a checkpoint (with the same config, unless
--allow_config_change). Bad input (an unknown config key or argument, a missing
teacher checkpoint, a workdir another run holds, ...) ends with one line and exit
code 2.
"""

import logging
import os
import signal
import sys

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file, e.g. configs/pretrain.py:data=ssv2,model=B",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints and metrics go.")
_ALLOW_CONFIG_CHANGE = flags.DEFINE_bool(
    "allow_config_change", False, "Resume a workdir's checkpoints with a config that changes "
    "the model, the data order or the schedule (refused otherwise).")
flags.mark_flags_as_required(["config", "workdir"])


def _parse_flags(argv):
  """absl's parser, but a bad config file, argument or key ends in one line, exit 2."""
  try:
    return flags.FLAGS(argv)
  except Exception as e:  # everything here comes from the command line the user typed
    cause = e
    while cause.__cause__ or cause.__context__:
      cause = cause.__cause__ or cause.__context__
    if isinstance(cause, (AttributeError, KeyError)):
      message = f"unknown config key {str(cause).strip(chr(39) + chr(34))!r}"
    else:
      message = str(e).strip().splitlines()[0]
      # config_flags puts the config file's own error (a bad config argument)
      # at the end of an embedded traceback: its last line is the reason.
      reason = str(cause).strip().splitlines()[-1] if cause is not e else ""
      if reason and reason not in message:
        message = f"{message} {reason}"
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


class _NoOrbaxThreadTracebacks(logging.Filter):
  """orbax logs a failed background write with its traceback from each writer thread,
  then raises the error in the next save or wait, where it becomes one line."""

  def filter(self, record):
    return not (record.exc_info and f"{os.sep}orbax{os.sep}" in record.pathname)


def _exit_at_once(signum, frame):
  print("interrupted: exiting at once (the last committed checkpoint is kept)",
        file=sys.stderr, flush=True)
  os._exit(128 + signum)


def _main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  # Ctrl-C outside the train loop (set-up, compilation, the end): nothing to save
  # there, so no KeyboardInterrupt traceback either. The loop saves on the first.
  signal.signal(signal.SIGINT, _exit_at_once)
  # Our own lines at INFO; orbax and friends log every save through absl at INFO.
  absl_logging.set_verbosity(absl_logging.WARNING)
  absl_logging.get_absl_handler().addFilter(_NoOrbaxThreadTracebacks())
  logging.getLogger("amd_jax").setLevel(logging.INFO)
  from amd_jax import distributed, errors, train  # after flag parsing: usage errors need no jax
  try:
    config = _CONFIG.value
    config.get("mode")  # config_flags defers a config file it failed to load to first use
  except OSError as e:
    print(f"error: {str(e).strip().splitlines()[-1].strip()}", file=sys.stderr)
    sys.exit(2)
  try:
    with errors.exit_on_bad_input(FloatingPointError):   # a diverged run: its config
      distributed.initialize()
      train.train(config, _WORKDIR.value, allow_config_change=_ALLOW_CONFIG_CHANGE.value)
  except errors.SaveFailed as e:
    print(f"error: {e}", file=sys.stderr, flush=True)
    # At once: the failed save's writer threads, still running, would print
    # tracebacks while the interpreter shuts down ("sys.meta_path is None").
    os._exit(1)


if __name__ == "__main__":
  app.run(_main, flags_parser=_parse_flags)
