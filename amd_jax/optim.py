"""Optimiser, learning-rate schedule and weight-decay mask (docs/method.md#optimisation)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx


@dataclasses.dataclass(frozen=True)
class Schedule:
  """Per-step learning rate: linear warm-up from 0, then cosine to `final`.

  The warm-up is `linspace(0, peak, warmup_steps)` as the official
  `cosine_scheduler`, so the last warm-up step is already at the peak.
  """

  peak: float
  final: float
  warmup_steps: int
  total_steps: int

  def __call__(self, step: jnp.ndarray) -> jnp.ndarray:
    step = jnp.asarray(step, jnp.float32)
    warm = self.peak * step / max(self.warmup_steps - 1, 1)
    decay_steps = max(self.total_steps - self.warmup_steps, 1)
    progress = jnp.clip((step - self.warmup_steps) / decay_steps, 0.0, 1.0)
    cosine = self.final + 0.5 * (self.peak - self.final) * (1 + jnp.cos(jnp.pi * progress))
    return jnp.where(step < self.warmup_steps, warm, cosine)


def schedule_from_config(config: ml_collections.ConfigDict, steps_per_epoch: float) -> Schedule:
  """lr = base_lr × videos per update / 256 (repeated samples not counted, as
  the official scripts); warm-up and total length in epochs of `steps_per_epoch`.

  What an epoch is differs by stage (train.py passes it): in pre-training one
  pass over the videos is `num_sample` epochs (800 epochs = 200 passes, Table
  S1); in fine-tuning an epoch is one pass (`run_class_finetuning.py`).
  A positive `config.total_steps` sets the length instead of optim.epochs.
  """
  videos = config.batch_size // config.data.num_sample
  scale = videos / 256
  total = config.get("total_steps") or round(config.optim.epochs * steps_per_epoch)
  warmup = round(config.optim.warmup_epochs * steps_per_epoch)
  return Schedule(peak=config.optim.base_lr * scale, final=config.optim.min_lr * scale,
                  warmup_steps=warmup, total_steps=total)


def decay_mask(params):
  """Weight decay on matrices and kernels only: not on biases, norms, mask tokens."""
  return jax.tree.map(lambda p: p.ndim > 1, params)


def layer_id(path: tuple, depth: int) -> int:
  """The official layer id of a fine-tuning parameter (AMD `optim_factory.get_layer_id_for_vit`).

  path: the parameter's names in the model, ("encoder", "blocks", "layers", 3, ...).
  0: the embedding (patch embed; positions are fixed here, there is no cls
  token); k + 1: block k; depth + 1: everything after the blocks (fc_norm, head).
  """
  if path[:2] == ("encoder", "patch_embed"):
    return 0
  if path[:3] == ("encoder", "blocks", "layers"):
    return int(path[3]) + 1
  return depth + 1


def layer_decay_scales(params: nnx.State, decay: float, depth: int) -> nnx.State:
  """Per-parameter lr multipliers decay^(depth + 1 − layer_id): 1 for the head."""
  return nnx.map_state(
      lambda path, p: p.replace(decay ** (depth + 1 - layer_id(path, depth))), params)


def scale_by_tree(scales) -> optax.GradientTransformation:
  """Multiplies each update by its own constant (a tree shaped like the parameters)."""

  def update(updates, state, params=None):
    del params
    return jax.tree.map(lambda u, s: u * jnp.asarray(s, u.dtype), updates, scales), state

  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def optimizer(config: ml_collections.ConfigDict, schedule: Schedule, params=None, *,
              depth: int | None = None) -> optax.GradientTransformation:
  """Clip (when clip_norm) → AdamW with decay_mask → layer-wise lr decay (when
  optim.layer_decay < 1; needs `params`, abstract is enough, and the encoder's
  `depth`, its number of blocks).

  Scaling AdamW's whole update by the layer's multiplier is the official
  per-group lr: PyTorch's AdamW multiplies both the Adam step and the
  decoupled weight decay by the group's lr.
  """
  o = config.optim
  decay = o.get("layer_decay", 1.0)
  layers = optax.identity()
  if decay < 1.0:
    layers = scale_by_tree(layer_decay_scales(params, decay, depth))
  return optax.chain(
      optax.clip_by_global_norm(o.clip_norm) if o.clip_norm else optax.identity(),
      optax.adamw(schedule, b1=o.b1, b2=o.b2, eps=o.eps, weight_decay=o.weight_decay,
                  mask=decay_mask),
      layers,
  )
