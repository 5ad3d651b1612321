"""Weights from other runs: the teacher of an AMD run, an initialisation.

So far the source is a checkpoint of ours (a VideoMAE or AMD pre-training
workdir); the student encoder in it becomes the teacher. Every parameter the
target needs must be found with the right shape, or the run is refused with a
line naming the key.
"""

from __future__ import annotations

import jax
import numpy as np
from flax import nnx

from amd_jax import checkpoint, errors


def flat_key(path) -> str:
  """'blocks/layers/0/attn/qkv/kernel' for a pytree key path (nnx '.value' dropped)."""
  parts = []
  for k in path:
    name = getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))
    parts.append(str(name))
  if parts and parts[-1] == "value":
    parts.pop()
  return "/".join(parts)


def flatten(tree) -> dict[str, object]:
  return {flat_key(p): x for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


def load_encoder(path: str, target: nnx.State, *, what: str = "teacher") -> nnx.State:
  """The encoder of the newest checkpoint at `path`, shaped like `target`.

  target: the abstract parameter state of the encoder to fill (ShapeDtypeStructs).
  The source's final norm is ignored when the target has none (a teacher's
  features are taken before it). Returns host numpy arrays in target's structure.
  """
  source = {k.removeprefix("params/encoder/"): v
            for k, v in flatten(checkpoint.read_state(path)).items()
            if k.startswith("params/encoder/")}
  if not source:
    raise errors.BadInput(f"{what} checkpoint {path} holds no student encoder (params/encoder)")
  wanted = flatten(target)
  for key, spec in wanted.items():
    if key not in source:
      raise errors.BadInput(f"{what} checkpoint {path} lacks {key}: its architecture does not "
                       "fit the config (check the variant and the tubelet size)")
    if tuple(source[key].shape) != tuple(spec.shape):
      raise errors.BadInput(f"{what} checkpoint {path}: {key} has shape {tuple(source[key].shape)}, "
                       f"the config's model needs {tuple(spec.shape)} (different width, "
                       "depth or tubelet)")
  unused = sorted(k for k in source if k not in wanted and not k.startswith("norm/"))
  if unused:
    raise errors.BadInput(f"{what} checkpoint {path} has parameters the config's model lacks, "
                     f"e.g. {unused[0]} (a deeper model?)")
  leaves = [np.asarray(source[flat_key(p)], spec.dtype)
            for p, spec in jax.tree_util.tree_flatten_with_path(target)[0]]
  return jax.tree.unflatten(jax.tree.structure(target), leaves)
