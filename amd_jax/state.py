"""The train state, the frozen teacher and the jitted update of a config, built in one
place: train.py runs them and `bench step` (amd_jax/bench/step.py) times them.

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
import logging
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx
from jax.sharding import Mesh, NamedSharding

from amd_jax import masking, mixup, optim, pretrained, sharding, steps
from amd_jax.models import build, decoders, vit

log = logging.getLogger("amd_jax")


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
                   counts: masking.MaskCounts | None, *, abstract: bool = False) -> Training:
  """State, teacher and the update of `config` on `mesh`; counts: the pre-training
  mask counts (None in fine-tuning). abstract: state and teacher as sharded
  ShapeDtypeStructs (nothing initialised, no teacher file read)."""
  state, state_sharding, model_def, tx = create_state(config, mesh, schedule, abstract=abstract)
  teacher_def, teacher_params, teacher_sharding = create_teacher(config, mesh,
                                                                 abstract=abstract)
  task = make_task(config, model_def, teacher_def, counts)
  batch_sharding = sharding.batch_sharding(mesh)
  step = jax.jit(
      functools.partial(steps.train_step, task=task, tx=tx, schedule=schedule,
                        grad_accum=config.grad_accum),
      in_shardings=(state_sharding, batch_sharding, teacher_sharding),
      out_shardings=(state_sharding, sharding.replicated(mesh)),
      donate_argnums=(0,))
  return Training(step, state, state_sharding, model_def, teacher_params, batch_sharding)


def create_state(config: ml_collections.ConfigDict, mesh: Mesh, schedule: optim.Schedule, *,
                 abstract: bool = False):
  """The train state, born sharded: (state, its shardings, the model's graphdef, optimiser)."""
  rules = config.sharding.rules
  abstract_model = nnx.eval_shape(lambda: build.model(config, nnx.Rngs(0)))
  model_def = nnx.graphdef(abstract_model)
  tx = optim.optimizer(config, schedule, nnx.state(abstract_model, nnx.Param))

  def init_state(key):
    model = build.model(config, nnx.Rngs(params=key))
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


def create_teacher(config: ml_collections.ConfigDict, mesh: Mesh, *, abstract: bool = False):
  """(graphdef, params, shardings) of the frozen teacher; all None unless in AMD mode."""
  if config.mode != "amd":
    return None, None, None
  teacher_def, abstract_params = nnx.split(
      nnx.eval_shape(lambda: build.teacher(config, nnx.Rngs(0))), nnx.Param)
  if config.sharding.replicate_teacher:
    shardings = jax.tree.map(lambda _: sharding.replicated(mesh), abstract_params)
  else:
    shardings = sharding.named(mesh, sharding.param_specs(abstract_params, config.sharding.rules))
    sharding.assert_sharded(abstract_params, mesh, shardings)
  if abstract:
    return teacher_def, sharding.abstract_like(abstract_params, shardings), shardings
  if config.teacher.init:
    host, ln_eps = pretrained.load_encoder(config.teacher.init, abstract_params,
                                           (config.data.frames, config.data.size))
    params = jax.device_put(host, shardings)
    if ln_eps != config.teacher.ln_eps:  # the epsilon is static: it lives in the graphdef
      teacher_def = nnx.graphdef(nnx.eval_shape(
          lambda: build.teacher(config, nnx.Rngs(0), ln_eps=ln_eps)))
    log.info("teacher %s loaded from %s (LayerNorm eps %g)", config.teacher.variant,
             config.teacher.init, ln_eps)
  else:
    params = jax.jit(
        lambda k: nnx.state(build.teacher(config, nnx.Rngs(params=k)), nnx.Param),
        out_shardings=shardings)(jax.random.key(config.seed + 1))
    log.warning("teacher %s is randomly initialised: teacher.init is empty",
                config.teacher.variant)
  return teacher_def, params, shardings


def make_task(config: ml_collections.ConfigDict, model_def: nnx.GraphDef,
              teacher_def: nnx.GraphDef | None, counts: masking.MaskCounts | None
              ) -> steps.PretrainTask | steps.FinetuneTask | steps.DetectTask:
  """The static part of the update: what the loss needs besides parameters and batch."""
  if config.mode == "finetune" and build.detection(config):
    return steps.DetectTask(model=model_def)
  if config.mode == "finetune":
    return steps.FinetuneTask(model=model_def, num_classes=config.data.num_classes,
                              mixup=mixup.Mixup(**config.mixup))
  variant = vit.decode_variant(config.model.variant)
  amd = config.mode == "amd"
  return steps.PretrainTask(
      student=model_def, teacher=teacher_def, counts=counts,
      patch=variant.patch, tubelet=variant.tubelet,
      teacher_layers=tuple(config.align.teacher_layers) if amd else (),
      align_loss=config.align.loss if amd else "l2",
      target_norm=config.align.target_norm if amd else "none",
      rec_weight=config.loss.rec, dir_weight=config.loss.get("dir", 0.0),
      gen_weight=config.loss.get("gen", 0.0), stochastic=config.model.drop_path > 0)
