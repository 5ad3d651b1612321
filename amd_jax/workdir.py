"""A training workdir's integrity: one run at a time, and no silent config change on resume."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket

import ml_collections

from amd_jax import errors

LOCK_FILE = "run.lock"
CONFIG_FILE = "config.json"
# Keys a resumed run may change freely: where and how often it logs and saves,
# how it is laid out on the devices, and what only the evaluation reads. Any
# other key changes the model, the data order or the schedule.
FREE_KEYS = ("log_every", "ckpt_every", "keep_ckpts", "progress", "eval_every",
             "eval_batch_size", "backend", "data.worker_count", "data.data_dir", "data.val_split",
             "data.test_split", "data.test_clips", "data.test_crops", "model.remat",
             "model.attention", "teacher.attention")
FREE_PREFIXES = ("mesh.", "sharding.")


def check(workdir: str) -> None:
  """Creates the workdir, or says in one line why it cannot be one (a file, a folder
  under a file, not writable): called before anything heavy runs in it."""
  try:
    os.makedirs(workdir, exist_ok=True)
  except FileExistsError:
    raise errors.BadInput(f"workdir {workdir} is a file, not a directory") from None
  except OSError as e:
    raise errors.BadInput(f"workdir {workdir} cannot be created: {e.strerror} "
                          f"({e.filename})") from None
  if not os.access(workdir, os.W_OK | os.X_OK):
    raise errors.BadInput(f"workdir {workdir} is not writable")


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


def flat(tree: dict, prefix: str = "") -> dict:
  out = {}
  for k, v in tree.items():
    if isinstance(v, dict):
      out.update(flat(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def config_changes(workdir: str, config: ml_collections.ConfigDict) -> dict[str, tuple]:
  """Keys whose value differs from the workdir's config.json, beyond FREE_KEYS: key → (old, new)."""
  path = os.path.join(workdir, CONFIG_FILE)
  with open(path) as f:
    old = flat(json.load(f))
  new = flat(json.loads(config.to_json_best_effort()))
  return {k: (old.get(k), new.get(k)) for k in sorted(old.keys() | new.keys())
          if old.get(k) != new.get(k) and k not in FREE_KEYS
          and not k.startswith(FREE_PREFIXES)}


def check_resume(workdir: str, config: ml_collections.ConfigDict, *, allow_change: bool) -> dict:
  """Refuses to resume a workdir's checkpoints with another config unless allowed.

  Called before anything in the workdir is written, so a refusal leaves it as
  it was. Returns the changes (empty for a fresh workdir or the same config).
  """
  has_steps = os.path.isdir(os.path.join(workdir, "checkpoints")) and any(
      d.isdigit() for d in os.listdir(os.path.join(workdir, "checkpoints")))
  if not (has_steps and os.path.isfile(os.path.join(workdir, CONFIG_FILE))):
    return {}
  changes = config_changes(workdir, config)
  if changes and not allow_change:
    listed = ", ".join(f"{k} ({old!r} → {new!r})" for k, (old, new) in changes.items())
    raise errors.BadInput(f"workdir {workdir} holds checkpoints of another config: {listed}; "
                          "resume with the same values, or pass --allow_config_change to "
                          "change them deliberately (e.g. a longer schedule)")
  return changes
