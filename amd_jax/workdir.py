"""A training workdir: the name of everything in it, one run at a time, and no silent
config change on resume.

  DIR/config.json         the resolved config (write_config)
  DIR/config.txt          the same, every key with its meaning (write_config)
  DIR/run.lock            held by the run using the workdir (lock)
  DIR/metrics.jsonl       one JSON row per logged step and evaluation (metrics.Writer)
  DIR/tensorboard/        the same scalars as TensorBoard events
  DIR/checkpoints/STEP/   the saved steps (checkpoint.Checkpointer)
  DIR/bad_files.txt       undecodable training videos (replaced in the pipeline)
  DIR/test_results.json   the test's metrics row and per-class results (write_test_results)
  DIR/test_scores.npz     a classification test's per-video scores (write_test_scores)
  DIR/stage.json          written by the study (amd_jax/proj/study) when a stage completes
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket

import ml_collections
import numpy as np
from flax import traverse_util

from amd_jax import config_files, errors, files, paths

CONFIG_FILE = "config.json"
CONFIG_TEXT_FILE = "config.txt"
LOCK_FILE = "run.lock"
METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"
CHECKPOINTS_DIR = "checkpoints"
BAD_FILES = "bad_files.txt"
TEST_RESULTS_FILE = "test_results.json"
TEST_SCORES_FILE = "test_scores.npz"
STAGE_FILE = "stage.json"

# Keys a resumed run may change freely: where and how often it logs and saves,
# how it is laid out on the devices, and what only the evaluation reads. Any
# other key changes the model, the data order or the schedule.
FREE_KEYS = ("log_every", "ckpt_every", "keep_ckpts", "progress", "eval_batch_size",
             "backend", "data.worker_count", "data.data_dir", "data.test_clips",
             "data.test_crops", "model.remat", "model.attention", "teacher.attention",
             # the evaluations' keys before config.evals: a run made then resumes
             "eval_every", "data.val_split", "data.test_split")
FREE_PREFIXES = ("mesh.", "sharding.", "evals.")


def check_local(workdir: str) -> None:
  """Refuses a workdir given as a URL (gs://, s3://, any scheme://), in one line and
  without touching anything: a run needs a POSIX directory, local or mounted, for
  its lock is an flock on a file in it and its config and metrics are plain file
  writes (os.makedirs would make a folder named "gs:" here instead)."""
  if paths.is_url(workdir):
    raise errors.BadInput(
        f"workdir {workdir} is a URL: a run needs a local or mounted POSIX directory (the "
        "workdir lock is an flock on a file in it; config and metrics are plain file "
        "writes): use a local disk, or for a multi-host run a filesystem mounted on "
        "every host (e.g. a Filestore/NFS mount)")


def check(workdir: str) -> None:
  """Creates the workdir, or says in one line why it cannot be one (a URL, a file, a
  folder under a file, not writable): called before anything heavy runs in it. The
  rule of every command's output folder (paths.output_dir)."""
  check_local(workdir)
  paths.output_dir(workdir, "workdir")


@contextlib.contextmanager
def lock(workdir: str):
  """Holds the workdir for this process; a second run on it is refused with one line.

  An advisory flock on workdir/run.lock, which also names its holder (pid and
  host): the kernel lets go of it when the holder dies in any way (kill -9
  included), so a lock left behind never blocks a restart.
  """
  path = os.path.join(workdir, LOCK_FILE)
  with open(path, "a+") as f:
    try:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      f.seek(0)
      holder = f.read().strip() or "another process"
      raise errors.BadInput(f"workdir {workdir} is in use by {holder}: wait for that run to "
                            "end, stop it, or choose another --workdir") from None
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()} on host {socket.gethostname()}\n")
    f.flush()
    yield


def has_checkpoints(workdir: str) -> bool:
  """Whether DIR/checkpoints holds a step folder (whether it restores is checkpoint.py's
  to say)."""
  folder = os.path.join(workdir, CHECKPOINTS_DIR)
  return os.path.isdir(folder) and any(d.isdigit() for d in os.listdir(folder))


def write_config(workdir: str, config: ml_collections.ConfigDict) -> None:
  """DIR/config.json, atomically (the other processes of the run may be reading it
  in check_resume), and DIR/config.txt: every key with its value and meaning."""
  files.write_text(os.path.join(workdir, CONFIG_FILE), config.to_json_best_effort(indent=2))
  with open(os.path.join(workdir, CONFIG_TEXT_FILE), "w") as f:
    f.write(config_files.describe(config) + "\n")


def write_test_results(workdir: str, row: dict, **per_class) -> None:
  """DIR/test_results.json, one schema for every task: the test's metrics row (as in
  metrics.jsonl) and its per-class results (classification: per_class accuracy,
  class_counts, confusion; AVA: per_class AP)."""
  files.write_json(os.path.join(workdir, TEST_RESULTS_FILE), dict(row, **per_class), indent=1)


def write_test_scores(workdir: str, **arrays: np.ndarray) -> None:
  """DIR/test_scores.npz: a classification test's per-video arrays."""
  np.savez(os.path.join(workdir, TEST_SCORES_FILE), **arrays)


def config_changes(workdir: str, config: ml_collections.ConfigDict) -> dict[str, tuple]:
  """Keys whose value differs from the workdir's config.json, beyond FREE_KEYS: key → (old, new)."""
  old = traverse_util.flatten_dict(files.read_json(os.path.join(workdir, CONFIG_FILE)), sep=".")
  new = traverse_util.flatten_dict(json.loads(config.to_json_best_effort()), sep=".")
  return {k: (old.get(k), new.get(k)) for k in sorted(old.keys() | new.keys())
          if old.get(k) != new.get(k) and k not in FREE_KEYS
          and not k.startswith(FREE_PREFIXES)}


def check_resume(workdir: str, config: ml_collections.ConfigDict, *, allow_change: bool) -> dict:
  """Refuses to resume a workdir's checkpoints with another config unless allowed.

  Called before anything in the workdir is written, so a refusal leaves it as
  it was. Returns the changes (empty for a fresh workdir or the same config).
  """
  if not (has_checkpoints(workdir) and os.path.isfile(os.path.join(workdir, CONFIG_FILE))):
    return {}
  changes = config_changes(workdir, config)
  if changes and not allow_change:
    listed = ", ".join(f"{k} ({old!r} → {new!r})" for k, (old, new) in changes.items())
    raise errors.BadInput(f"workdir {workdir} holds checkpoints of another config: {listed}; "
                          "resume with the same values, or pass --allow_config_change to "
                          "change them deliberately (e.g. a longer schedule)")
  return changes
