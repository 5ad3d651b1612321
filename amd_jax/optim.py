"""Optimiser, learning-rate schedule and weight-decay mask (spec/AMD.md §4.6, §5)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
import optax


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
  """lr = base_lr × videos per update / 256; epochs count repeated samples (Table S1).

  Repeated samples are not counted in the lr rule (the official scripts'), but
  one pass over the videos is `num_sample` epochs: 800 epochs = 200 passes.
  """
  videos = config.batch_size // config.data.num_sample
  scale = videos / 256
  total = round(config.optim.epochs * steps_per_epoch)
  warmup = round(config.optim.warmup_epochs * steps_per_epoch)
  return Schedule(peak=config.optim.base_lr * scale, final=config.optim.min_lr * scale,
                  warmup_steps=warmup, total_steps=total)


def decay_mask(params):
  """Weight decay on matrices and kernels only: not on biases, norms, mask tokens."""
  return jax.tree.map(lambda p: p.ndim > 1, params)


def optimizer(config: ml_collections.ConfigDict, schedule: Schedule
              ) -> optax.GradientTransformation:
  o = config.optim
  return optax.chain(
      optax.clip_by_global_norm(o.clip_norm) if o.clip_norm else optax.identity(),
      optax.adamw(schedule, b1=o.b1, b2=o.b2, eps=o.eps, weight_decay=o.weight_decay,
                  mask=decay_mask),
  )
