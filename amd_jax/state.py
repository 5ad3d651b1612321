"""The train state and the jitted update of a config (with its task's frozen teacher,
amd_jax/tasks.py), built in one place: train.py runs them and `bench step`
(amd_jax/bench/step.py) times them.

The state (its keys: amd_jax/steps.py) is born sharded: the model is traced
abstractly, the shardings come from its logical axis names, and the state is
initialised under jit straight into them. The teacher's parameters stay outside
it: never in the optimiser, never in a checkpoint.

`abstract=True` builds the same update with nothing allocated: the state and the
teacher are `jax.ShapeDtypeStruct`s carrying their shardings, which is what
`python -m amd_jax.plan` compiles for devices this machine does not have.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx
from jax.sharding import Mesh, NamedSharding

from amd_jax import optim, sharding, steps, tasks
from amd_jax.models import decoders, vit


@dataclasses.dataclass
class Training:
  """A config's jitted update `step(state, batch, teacher_params) → (state, metrics)`
  and what it is called with. The state argument is donated: after a call only
  the returned state is valid."""

  step: Callable
  state: dict                           # freshly initialised
  state_sharding: dict
  model_def: nnx.GraphDef
  teacher_params: nnx.State | None      # None in VideoMAE mode and fine-tuning
  batch_sharding: NamedSharding


def build_training(config: ml_collections.ConfigDict, mesh: Mesh, schedule: optim.Schedule,
                   *, abstract: bool = False) -> Training:
  """State, teacher and the update of `config` on `mesh` (its task: tasks.of). abstract:
  state and teacher as sharded ShapeDtypeStructs (nothing initialised, no teacher
  file read)."""
  task = tasks.of(config)
  state, state_sharding, model_def, tx = create_state(config, mesh, schedule, abstract=abstract)
  teacher_def, teacher_params, teacher_sharding = task.teacher(mesh, abstract=abstract)
  batch_sharding = sharding.batch_sharding(mesh)
  step = jax.jit(
      functools.partial(steps.train_step, task=task.step_task(model_def, teacher_def), tx=tx,
                        schedule=schedule, grad_accum=config.grad_accum),
      in_shardings=(state_sharding, batch_sharding, teacher_sharding),
      out_shardings=(state_sharding, sharding.replicated(mesh)),
      donate_argnums=(0,))
  return Training(step, state, state_sharding, model_def, teacher_params, batch_sharding)


def create_state(config: ml_collections.ConfigDict, mesh: Mesh, schedule: optim.Schedule, *,
                 abstract: bool = False):
  """The train state of the config's task's model, born sharded: (state, its shardings,
  the model's graphdef, optimiser)."""
  rules = config.sharding.rules
  build = tasks.of(config).model
  abstract_model = nnx.eval_shape(lambda: build(nnx.Rngs(0)))
  model_def = nnx.graphdef(abstract_model)
  tx = optim.optimizer(config, schedule, nnx.state(abstract_model, nnx.Param),
                       depth=vit.decode_variant(config.model.variant).depth)

  def init_state(key):
    model = build(nnx.Rngs(params=key))
    params = nnx.state(model, nnx.Param)
    return dict(step=jnp.zeros((), jnp.int32),
                rng=jax.random.key_data(jax.random.fold_in(key, 1)),
                params=params, frozen=nnx.state(model, decoders.FrozenToken),
                opt_state=tx.init(params))

  shapes = jax.eval_shape(init_state, jax.random.key(0))
  params = sharding.named(mesh, sharding.param_specs(shapes["params"], rules))
  repl = sharding.replicated(mesh)
  state_sharding = dict(
      step=repl, rng=repl, params=params,
      frozen=sharding.named(mesh, sharding.param_specs(shapes["frozen"], rules)),
      opt_state=sharding.optax_state_sharding(tx, shapes["opt_state"], params, repl))
  sharding.assert_sharded(shapes["params"], mesh, state_sharding["params"])
  if abstract:
    return sharding.abstract_like(shapes, state_sharding), state_sharding, model_def, tx
  state = jax.jit(init_state, out_shardings=state_sharding)(jax.random.key(config.seed))
  return state, state_sharding, model_def, tx
