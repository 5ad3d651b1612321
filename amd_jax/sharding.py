"""Device mesh, logical-axis rules and the shardings of state and batches.

Parameters carry logical axis names (amd_jax/models/vit.py); the config's rules
map them onto the mesh axes ('data', 'fsdp'). Batches are split over both axes.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import ml_collections
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from amd_jax import errors

AXES = ("data", "fsdp")


def mesh_shape(config: ml_collections.ConfigDict, num_devices: int) -> tuple[int, int]:
  """(data, fsdp) sizes from config.mesh; one -1 fills the remaining devices."""
  sizes = [config.mesh.data, config.mesh.fsdp]
  known = math.prod(s for s in sizes if s != -1)
  if sizes.count(-1) > 1 or num_devices % known:
    raise errors.BadInput(f"mesh data={sizes[0]} fsdp={sizes[1]} does not fit {num_devices} devices")
  sizes = [num_devices // known if s == -1 else s for s in sizes]
  if math.prod(sizes) != num_devices:
    raise errors.BadInput(f"mesh data={sizes[0]} × fsdp={sizes[1]} ≠ {num_devices} devices")
  return tuple(sizes)


def make_mesh(config: ml_collections.ConfigDict, devices=None) -> Mesh:
  devices = jax.devices() if devices is None else devices
  shape = mesh_shape(config, len(devices))
  return Mesh(np.asarray(devices).reshape(shape), AXES,
              axis_types=(jax.sharding.AxisType.Auto,) * len(AXES))


def is_spec(x) -> bool:
  return isinstance(x, P)


def param_specs(abstract_state: nnx.State, rules) -> nnx.State:
  """PartitionSpecs of an (abstract) parameter state from its logical axis names."""
  with nn.logical_axis_rules(tuple(tuple(r) for r in rules)):
    return nnx.get_partition_spec(abstract_state)


def named(mesh: Mesh, specs):
  return jax.tree.map(lambda s: NamedSharding(mesh, s), specs, is_leaf=is_spec)


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis over every device."""
  return NamedSharding(mesh, P(AXES))


def optax_state_sharding(tx: optax.GradientTransformation, abstract_opt_state,
                         param_sharding, replicated_sharding: NamedSharding):
  """Optimiser state sharded like the parameters it mirrors, scalars replicated."""
  return optax.tree_map_params(
      tx, lambda _, s: s, abstract_opt_state, param_sharding,
      transform_non_params=lambda _: replicated_sharding,
      is_leaf=lambda x: isinstance(x, nnx.Variable))


def abstract_like(tree, shardings):
  """`tree` as ShapeDtypeStructs placed by `shardings`: what a restore or a load fills."""
  return jax.tree.map(lambda x, sh: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sh),
                      tree, shardings)


def assert_sharded(tree, mesh: Mesh, shardings=None, min_size: int = 2 ** 16) -> None:
  """Refuses a silently replicated large weight when the mesh has an 'fsdp' axis.

  A rule that matches nothing replicates a weight on every device without any
  error; at ViT-L sizes that is the difference between fitting and not.
  shardings: those of `tree` when its leaves carry none (abstract values).
  """
  if mesh.shape["fsdp"] == 1:
    return
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  specs = (jax.tree.leaves(shardings) if shardings is not None
           else [x.sharding for _, x in leaves])
  replicated_big = [jax.tree_util.keystr(path) for (path, x), s in zip(leaves, specs)
                    if math.prod(x.shape) >= min_size and s.is_fully_replicated]
  if replicated_big:
    raise errors.BadInput(f"{len(replicated_big)} large weights are replicated over the "
                          f"fsdp axis, e.g. {replicated_big[0]}: check config.sharding.rules")
