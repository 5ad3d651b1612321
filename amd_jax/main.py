r"""Command line: python -m amd_jax.main --config=configs/FILE.py[:ARGS] --workdir=DIR [--config.KEY=VALUE ...]

  --config=FILE[:ARGS]    the config file and its argument, e.g.
                          configs/pretrain.py:data=k400,model=B (ARGS: each
                          file's docstring); --config.KEY=VALUE overrides any key
  --workdir=DIR           checkpoints, metrics, config.json and config.txt
  --print_config          print every key of the resolved config with its value and
                          meaning, and exit (no --workdir needed)
  --allow_config_change   resume DIR with a config that changes the model, the data
                          order or the schedule

Resumes from DIR when it holds a checkpoint (with the same config, unless
--allow_config_change). Bad input (an unknown config key or argument, a missing
teacher checkpoint, a workdir another run holds, ...) ends with one line and exit
code 2.
"""

import functools
import logging
import os
import signal
import sys

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

from amd_jax import config_files, quiet

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file, e.g. configs/pretrain.py:data=ssv2,model=B",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints and metrics go.")
_ALLOW_CONFIG_CHANGE = flags.DEFINE_bool(
    "allow_config_change", False, "Resume a workdir's checkpoints with a config that changes "
    "the model, the data order or the schedule (refused otherwise).")
_PRINT_CONFIG = flags.DEFINE_bool(
    "print_config", False, "Print every key of the resolved config with its value and "
    "meaning, and exit.")
flags.mark_flags_as_required(["config"])


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
  logging.getLogger("amd_jax").setLevel(logging.INFO)
  try:
    config = _CONFIG.value
    config.get("mode")  # config_flags defers a config file it failed to load to first use
  except OSError as e:
    print(f"error: {str(e).strip().splitlines()[-1].strip()}", file=sys.stderr)
    sys.exit(2)
  if _PRINT_CONFIG.value:
    print(config_files.describe(config))
    return
  if not _WORKDIR.value:
    print("error: --workdir is required (or --print_config to list the config's keys)",
          file=sys.stderr)
    sys.exit(2)
  from amd_jax import distributed, errors, train, workdir  # after flag parsing: usage errors need no jax
  try:
    with errors.exit_on_bad_input(FloatingPointError):   # a diverged run: its config
      workdir.check_local(_WORKDIR.value)   # before the hosts of a pod join each other
      distributed.initialize()
      train.train(config, _WORKDIR.value, allow_config_change=_ALLOW_CONFIG_CHANGE.value)
  except errors.SaveFailed as e:
    print(f"error: {e}", file=sys.stderr, flush=True)
    # At once: the failed save's writer threads, still running, would print
    # tracebacks while the interpreter shuts down ("sys.meta_path is None").
    os._exit(1)


if __name__ == "__main__":
  quiet.quiet_third_party()
  app.run(_main, flags_parser=functools.partial(config_files.parse_flags, usage=__doc__))
