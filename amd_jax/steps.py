"""Pure training steps: the only jit boundary. Nothing here knows about files.

The train state is a pytree dict:
  step      int32 scalar, updates done so far
  rng       uint32 key data; step s uses fold_in(rng, s), so no RNG state moves
  params    nnx.State of the student's trainable parameters
  frozen    nnx.State of non-trained variables (frozen generator mask tokens)
  opt_state optax state over params
The teacher's parameters are a separate argument: never in the optimiser,
never in a checkpoint.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from amd_jax import losses, masking, normalization, optim, tokens
from amd_jax import mixup as mixup_lib
from amd_jax.models import roi


@dataclasses.dataclass(frozen=True)
class PretrainTask:
  """Everything static a pre-training step needs (hashable; closed over by jit)."""

  student: nnx.GraphDef
  teacher: nnx.GraphDef | None           # None in VideoMAE mode
  counts: masking.MaskCounts
  patch: int
  tubelet: int
  teacher_layers: tuple[int, ...] = ()
  align_loss: str = "l2"
  target_norm: str = "none"
  rec_weight: float = 1.0
  dir_weight: float = 1.0
  gen_weight: float = 1.0
  stochastic: bool = False               # drop path on: the student needs an rng

  def loss(self, params, frozen, teacher_params, batch, rng):
    return pretrain_loss(params, frozen, teacher_params, batch, rng, self)


def pretrain_loss(params: nnx.State, frozen: nnx.State, teacher_params: nnx.State | None,
                  batch: dict, rng: jax.Array, task: PretrainTask):
  """Weighted sum of the reconstruction and alignment losses, and each term.

  batch: video uint8 (B, T, H, W, 3), mask int8 (B, N) (masking codes).
  """
  model = nnx.merge(task.student, params, frozen)
  video = losses.normalize(batch["video"])
  idx = masking.indices(batch["mask"], task.counts)
  out = model(video, idx, rng=rng if task.stochastic else None)

  targets = tokens.gather_tokens(losses.pixel_targets(video, task.patch, task.tubelet), idx.masked)
  terms = {"loss_rec": jnp.mean((out["pred"].astype(jnp.float32) - targets) ** 2)}
  loss = task.rec_weight * terms["loss_rec"]
  if task.teacher is not None:
    teacher = nnx.merge(task.teacher, teacher_params)
    _, hidden = teacher(video, idx.teacher)
    features = [losses.align_target(jax.lax.stop_gradient(hidden[l - 1]), task.target_norm)
                for l in task.teacher_layers]
    n = task.counts.student
    if out["direct"]:
      terms["loss_dir"] = losses.layer_mean(out["direct"], [f[:, :n] for f in features],
                                            task.align_loss)
      loss += task.dir_weight * terms["loss_dir"]
    if out["generated"]:
      terms["loss_gen"] = losses.layer_mean(out["generated"], [f[:, n:] for f in features],
                                            task.align_loss)
      loss += task.gen_weight * terms["loss_gen"]
  return loss, {"loss": loss, **terms}


@dataclasses.dataclass(frozen=True)
class FinetuneTask:
  """Everything static a classification fine-tuning step needs."""

  model: nnx.GraphDef                    # heads.Classifier
  num_classes: int
  mixup: mixup_lib.Mixup

  def loss(self, params, frozen, extra, batch, rng):
    del extra  # no teacher
    return finetune_loss(params, frozen, batch, rng, self)


def finetune_loss(params: nnx.State, frozen: nnx.State, batch: dict, rng: jax.Array,
                  task: FinetuneTask):
  """Soft-target cross entropy of the mixed batch (label smoothing when mixup is off).

  batch: video uint8 (B, T, H, W, 3), label int32 (B,). `accuracy` is against
  the unmixed labels: a rough signal only while mixup is on.
  """
  model = nnx.merge(task.model, params, frozen)
  mix_rng, model_rng = jax.random.split(rng)
  video, targets = task.mixup(mix_rng, losses.normalize(batch["video"]), batch["label"],
                              task.num_classes)
  logits = model(video, rng=model_rng)
  loss = mixup_lib.soft_cross_entropy(logits, targets)
  accuracy = jnp.mean(jnp.argmax(logits, -1) == batch["label"])
  return loss, {"loss": loss, "accuracy": accuracy}


def eval_scores(params: nnx.State, frozen: nnx.State, video: jnp.ndarray, *,
                model: nnx.GraphDef) -> jnp.ndarray:
  """Mean over views of each view's softmax: video uint8 (B, V, T, H, W, 3) → (B, classes)."""
  b, v = video.shape[:2]
  video = losses.normalize(video.reshape((b * v,) + video.shape[2:]))
  logits = nnx.merge(model, params, frozen)(video)
  probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
  return probs.reshape(b, v, -1).mean(axis=1)


@dataclasses.dataclass(frozen=True)
class DetectTask:
  """Everything static an AVA detection fine-tuning step needs."""

  model: nnx.GraphDef                    # roi.Detector

  def loss(self, params, frozen, extra, batch, rng):
    del extra
    return detect_loss(params, frozen, batch, rng, self)


def detect_loss(params: nnx.State, frozen: nnx.State, batch: dict, rng: jax.Array,
                task: DetectTask):
  """Sigmoid BCE over the 80 actions of the ground-truth people (roi.ava_loss).

  batch: video uint8 (B, T, H, W, 3), boxes (B, M, 4) normalised, labels
  (B, M, 80) multi-hot, box_valid (B, M).
  """
  model = nnx.merge(task.model, params, frozen)
  video = losses.normalize(batch["video"], normalization.AVA_MEAN, normalization.AVA_STD)
  logits = model(video, batch["boxes"], rng=rng)
  loss = roi.ava_loss(logits, batch["labels"], batch["box_valid"])
  return loss, {"loss": loss, "boxes": batch["box_valid"].sum() / batch["box_valid"].shape[0]}


def eval_detections(params: nnx.State, frozen: nnx.State, video: jnp.ndarray,
                    boxes: jnp.ndarray, *, model: nnx.GraphDef) -> jnp.ndarray:
  """Action logits (B, M, 80) float32 of the people at `boxes` in AVA clips."""
  video = losses.normalize(video, normalization.AVA_MEAN, normalization.AVA_STD)
  return nnx.merge(model, params, frozen)(video, boxes).astype(jnp.float32)


def _split_micro(batch: dict, k: int) -> dict:
  return jax.tree.map(lambda x: x.reshape((k, x.shape[0] // k) + x.shape[1:]), batch)


def train_step(state: dict, batch: dict, teacher_params: nnx.State | None, *,
               task: PretrainTask | FinetuneTask | DetectTask, tx: optax.GradientTransformation,
               schedule: optim.Schedule, grad_accum: int = 1):
  """One update from one global batch; returns (new state, metrics of scalars).

  With grad_accum = k the batch is split into k equal micro-batches whose
  gradients are averaged: every loss is a mean over equally sized parts, so the
  update equals the one of the whole batch at once.
  """
  rng = jax.random.fold_in(jax.random.wrap_key_data(state["rng"]), state["step"])
  grad_fn = jax.value_and_grad(task.loss, has_aux=True)

  def micro(params, mb, key):
    (_, metrics), grads = grad_fn(params, state["frozen"], teacher_params, mb, key)
    return grads, metrics

  if grad_accum == 1:
    grads, metrics = micro(state["params"], batch, rng)
  else:
    def body(carry, xs):
      mb, i = xs
      g, m = micro(state["params"], mb, jax.random.fold_in(rng, i))
      return jax.tree.map(jnp.add, carry, (g, m)), None

    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(
        micro, state["params"], jax.tree.map(lambda x: x[0], _split_micro(batch, grad_accum)),
        rng))
    (grads, metrics), _ = jax.lax.scan(
        body, zeros, (_split_micro(batch, grad_accum), jnp.arange(grad_accum)))
    grads, metrics = jax.tree.map(lambda x: x / grad_accum, (grads, metrics))

  updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
  new_state = dict(state, step=state["step"] + 1,
                   params=optax.apply_updates(state["params"], updates), opt_state=opt_state)
  metrics = dict(metrics, grad_norm=optax.tree.norm(grads), lr=schedule(state["step"]))
  return new_state, metrics
