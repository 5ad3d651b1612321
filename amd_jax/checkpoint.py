"""Checkpoints: the one module that talks to orbax.

A step directory holds two items: "state" (a pytree of jax.Arrays, written by
every process for its own shards) and "data" (the input iterator's JSON state,
one file per process because every process reads its own slice of the data).

Orbax writes a step into a temporary directory and renames it when complete,
so a process killed mid-save leaves the previous step as the latest one.

Converted checkpoints (amd_jax.convert) hold one tree of weights, written and
read with `save_tree` / `read_tree`, beside their model.json.

Every path reaches orbax through `_absolute`: orbax refuses a relative path to
save to ("Checkpoint path should be absolute") and finds no metadata under a
relative one, while users type relative workdirs and checkpoints.

Orbax's warnings that are no news, and its echoes of a failed read or write, are
filtered by amd_jax.quiet.quiet_third_party(), which the command lines call: not here,
as importing a module must leave the process's logging and hooks alone.
"""

from __future__ import annotations

import logging
import os
import re

import jax
import numpy as np
import orbax.checkpoint as ocp

from amd_jax import errors
from amd_jax import workdir as workdir_lib

log = logging.getLogger("amd_jax")
DAMAGED = ".damaged"     # suffix of a step moved aside: not a number, so orbax ignores it


def _absolute(path: str | os.PathLike) -> str:
  return os.path.abspath(os.fspath(path))


class Checkpointer:
  """Orbax CheckpointManager (V0 API: ocp.CheckpointManager with ocp.args.Composite) over a directory."""

  def __init__(self, directory: str | os.PathLike, *, save_every: int,
               keep: int = 3, async_save: bool = True):
    if save_every <= 0:
      raise ValueError(f"save_every must be positive, got {save_every}")
    self._save_every = save_every
    self._directory = _absolute(directory)
    self._pending: int | None = None  # step of the last async save
    options = ocp.CheckpointManagerOptions(
        # Interval 1: `should_save` below decides; orbax then only refuses a
        # step at or before its latest one (unless forced).
        save_interval_steps=1,
        max_to_keep=keep,
        enable_async_checkpointing=async_save,
        # Leftovers of a killed save are never read as steps; this just frees
        # their disk space.
        cleanup_tmp_directories=True,
    )
    # JsonCheckpointHandler writes only on the primary process by default;
    # primary_host=None with a per-process file name keeps every iterator state.
    # Not grain's own handler (grain.checkpoint.CheckpointHandler): it reads the
    # live iterator at save time, one batch past the state train.py saves (the
    # state taken before the loop fetched the next batch), and it names its files
    # process_I-of-N.json, so existing checkpoints would not restore.
    data_handler = ocp.JsonCheckpointHandler(
        filename=f"process_{jax.process_index()}.json",
        multiprocessing_options=ocp.options.MultiprocessingOptions(
            primary_host=None),
    )
    self._mngr = ocp.CheckpointManager(
        self._directory,
        options=options,
        item_handlers={"state": ocp.StandardCheckpointHandler(),
                       "data": data_handler},
    )

  def latest_step(self) -> int | None:
    """Last committed step, or None."""
    steps = self._mngr.all_steps()
    # Orbax lists a step as soon as its async save starts.
    if self._mngr.is_saving_in_progress():
      steps = [s for s in steps if s != self._pending]
    return max(steps, default=None)

  def should_save(self, step: int) -> bool:
    return step > 0 and step % self._save_every == 0

  def save(self, step: int, state, data_state: dict, *,
           force: bool = False) -> bool:
    """Starts saving `step`; True if a save was started."""
    if not (force or self.should_save(step)):
      return False
    # A forced save may repeat a step just saved on schedule (SIGTERM, end of
    # run); orbax would raise StepAlreadyExistsError.
    if step in self._mngr.all_steps():
      return False
    try:
      saved = self._mngr.save(
          step,
          args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                  data=ocp.args.JsonSave(data_state)),
          force=force,
      )
    except Exception as e:  # noqa: BLE001 -- this save's, or an earlier async save's, failure
      raise self._failure(step, e) from None
    if saved:
      self._pending = step
    return saved

  def restore(self, step: int, abstract_state) -> tuple[object, dict]:
    """Restores `step` onto the shardings of `abstract_state`'s leaves.

    The leaves are jax.ShapeDtypeStruct with `.sharding` set; the mesh may
    differ from the one the step was saved from.
    """
    out = self._mngr.restore(
        step,
        args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state),
                                data=ocp.args.JsonRestore()),
    )
    return out.state, dict(out.data)

  def restore_newest(self, abstract_state) -> tuple[int, object, dict] | None:
    """(step, state, data state) of the newest step that restores; None without steps.

    A step that does not fit `abstract_state` (another model) is refused: that
    is the config's fault, not the checkpoint's. A step that fits but fails to
    read (a truncated or missing file, a corrupt _METADATA or iterator JSON) is
    damaged: one line says which and why, it is moved aside to STEP.damaged
    (never deleted) and the next older step is tried.
    """
    steps = sorted(self._mngr.all_steps(), reverse=True)
    for step in steps:
      step_dir = os.path.join(self._directory, str(step))
      try:
        fits = _by_path(tree_shapes(os.path.join(step_dir, "state"))) == _by_path(
            abstract_state)
      except Exception as e:  # noqa: BLE001 -- whatever reading a damaged step raises
        why = e
      else:
        if not fits:
          raise errors.BadInput(f"checkpoint {step_dir} holds another model than the config "
                                "builds (different parameters or shapes)")
        try:
          state, data = self.restore(step, abstract_state)
          return step, state, data
        except Exception as e:  # noqa: BLE001 -- tensorstore, json, orbax: all mean damage
          why = e
      reason = (str(why).strip().splitlines() or [type(why).__name__])[0][:200]
      aside, n = step_dir + DAMAGED, 1
      while os.path.exists(aside):      # the same step damaged before, by another run
        aside, n = f"{step_dir}{DAMAGED}{n}", n + 1
      if jax.process_index() == 0:
        os.rename(step_dir, aside)
      log.warning("checkpoint step %d is damaged (%s: %s); moved to %s, trying the one "
                  "before", step, type(why).__name__, reason, aside)
      self._mngr.reload()
    if steps:
      raise errors.BadInput(f"no checkpoint in {self._directory} restores (steps "
                            f"{', '.join(map(str, steps))} damaged, moved aside to "
                            f"STEP{DAMAGED}); remove the workdir's checkpoints to start over")
    return None

  def wait(self) -> None:
    try:
      self._mngr.wait_until_finished()
    except Exception as e:  # noqa: BLE001 -- the async save's failure
      raise self._failure(None, e) from None

  def _failure(self, step: int | None, e: Exception) -> errors.SaveFailed:
    """One line for a failed save: which step, where, and the OS error when there is one."""
    committed = sorted(int(d) for d in os.listdir(self._directory) if d.isdigit())
    # A failure surfacing in a later call is the pending async save's, unless that committed.
    if self._pending is not None and self._pending not in committed:
      step = self._pending
    # tensorstore reports OS errors inside its message: "... File too large [os_error_code='27']"
    found = re.search(r"\[os_error_code='(\d+)'\]", str(e))
    if found:
      why = f"{os.strerror(int(found[1]))} (errno {found[1]})"
    elif isinstance(e, OSError) and e.errno:
      why = f"{e.strerror} (errno {e.errno})"
    else:
      why = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
    kept = f"step {committed[-1]}" if committed else "none yet"
    return errors.SaveFailed(f"saving checkpoint step {step} in {self._directory} failed: {why}; "
                             f"the last committed checkpoint is intact ({kept})")

  def close(self) -> None:
    self._mngr.close()


def _by_path(tree) -> dict[str, tuple]:
  """'params/encoder/.../kernel/value' → (shape, dtype), whatever containers hold the
  leaves (a tree read back has dicts where the live state has nnx states and tuples)."""
  name = lambda k: str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k))))
  return {"/".join(map(name, path)): (tuple(x.shape), np.dtype(x.dtype))
          for path, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


def step_dirs(path: str | os.PathLike) -> list[str]:
  """Committed step directories under a workdir, a checkpoints folder or a step, newest first.

  A step folder without its state is listed too: it is damaged, and a reader
  says so rather than passing over it in silence.
  """
  path = os.fspath(path)
  if not os.path.exists(path):
    raise FileNotFoundError(f"checkpoint path {path} does not exist")
  if os.path.isdir(os.path.join(path, "state")):
    return [path]
  for root in (os.path.join(path, workdir_lib.CHECKPOINTS_DIR), path):
    if os.path.isdir(root):
      steps = sorted((int(d) for d in os.listdir(root)
                      if d.isdigit() and os.path.isdir(os.path.join(root, d))), reverse=True)
      if steps:
        return [os.path.join(root, str(s)) for s in steps]
  raise FileNotFoundError(f"no committed checkpoint under {path} (expected a workdir with "
                          "checkpoints/STEP/state, a checkpoints folder or a step folder)")


def find_step_dir(path: str | os.PathLike) -> str:
  """The newest committed step directory under a workdir, a checkpoints folder or a step."""
  return step_dirs(path)[0]


def save_tree(directory: str | os.PathLike, tree) -> None:
  """Writes a nested dict of host arrays synchronously (a converted checkpoint's weights)."""
  # A synchronous save needs no defensive copy of each numpy array (orbax's
  # default), and uncompressed writes need no buffers: either would add a
  # third copy of a converted ViT-L in memory (float weights barely compress).
  registry = ocp.type_handlers.create_type_handler_registry(
      (jax.Array, ocp.type_handlers.ArrayHandler()),
      (np.ndarray, ocp.type_handlers.NumpyHandler(deepcopy_host_arrays=False)))
  handler = ocp.PyTreeCheckpointHandler(type_handler_registry=registry, use_compression=False)
  with ocp.Checkpointer(handler) as ckptr:
    ckptr.save(_absolute(directory), args=ocp.args.PyTreeSave(tree))


def tree_shapes(directory: str | os.PathLike) -> dict:
  """The saved tree with a jax.ShapeDtypeStruct per array, read from metadata only."""
  with ocp.PyTreeCheckpointer() as ckptr:
    meta = ckptr.metadata(_absolute(directory)).item_metadata.tree
  return jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype), meta)


def read_tree(directory: str | os.PathLike, subtrees: tuple[str, ...] | None = None) -> dict:
  """A saved tree (or only its top-level `subtrees`) as nested dicts of numpy arrays.

  Meant for taking weights out of another run or a converted checkpoint: no
  target structure is needed, and nothing is placed on devices.
  """
  directory = _absolute(directory)
  # Bounded reads in flight: tensorstore's buffers stay well under one more copy.
  with ocp.Checkpointer(ocp.PyTreeCheckpointHandler(restore_concurrent_gb=1)) as ckptr:
    meta = ckptr.metadata(directory).item_metadata.tree
    if subtrees is not None:
      meta = {k: meta[k] for k in subtrees if k in meta}
    restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), meta)
    return ckptr.restore(directory, args=ocp.args.PyTreeRestore(
        item=meta, restore_args=restore_args, partial_restore=subtrees is not None))
