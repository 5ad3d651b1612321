"""Models from a run's config: the one reader of config.model, config.teacher and
config.align for building them. The models themselves take plain arguments.

  student(config, rngs)   the pre-training `Pretrainer` (AMD: with its alignment heads)
  teacher(config, rngs)   AMD's frozen teacher encoder
  model(config, rngs)     what the run trains: the student, the classifier or the
                          AVA detector

A checkpoint's model is rebuilt from the checkpoint's own description instead
(convert/spec.py, `ModelSpec.build`), without a config.
"""

from __future__ import annotations

import jax.numpy as jnp
import ml_collections
from flax import nnx

from amd_jax import errors, losses
from amd_jax.models import decoders, heads, pretrain, roi, vit

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def validate(config: ml_collections.ConfigDict) -> None:
  """Refuses, in one line, the model settings a run cannot start with: the compute
  dtypes and, in AMD mode, the alignment (train.validate calls it before anything heavy)."""
  for name in ("model", "teacher") if config.mode == "amd" else ("model",):
    if config[name].dtype not in DTYPES:
      raise errors.BadInput(f"{name}.dtype={config[name].dtype!r}: choose from "
                            f"{'|'.join(DTYPES)}")
  if config.mode != "amd":
    return
  align = config.align
  if align.method not in decoders.ALIGNMENT_METHODS:
    raise errors.BadInput(f"unknown alignment method align.method={align.method!r}: "
                          f"choose from {'|'.join(decoders.ALIGNMENT_METHODS)}")
  if align.loss not in losses.ALIGN_LOSSES:
    raise errors.BadInput(f"unknown alignment loss align.loss={align.loss!r}: "
                          f"choose from {'|'.join(losses.ALIGN_LOSSES)}")
  if len(align.student_layers) != len(align.teacher_layers):
    raise errors.BadInput("align.student_layers and align.teacher_layers must pair up: "
                          f"{align.student_layers} vs {align.teacher_layers}")
  if not align.student_layers:
    raise errors.BadInput("align.student_layers is empty: AMD aligns at least one layer pair")
  if align.target_norm not in losses.ALIGN_TARGET_NORMS:
    raise errors.BadInput(f"unknown align.target_norm={align.target_norm!r}: "
                          f"choose from {'|'.join(losses.ALIGN_TARGET_NORMS)}")


def detection(config: ml_collections.ConfigDict) -> bool:
  """Fine-tuning an AVA action detector (configs/transfer.py:data=ava), not a classifier."""
  return config.get("model", {}).get("head") == "detector"


def token_grid(config: ml_collections.ConfigDict) -> tuple[int, int, int]:
  """The (t, h, w) token grid of the student on the config's clips."""
  variant = vit.decode_variant(config.model.variant)
  return vit.token_grid(config.data.frames, config.data.size, variant.patch, variant.tubelet)


def student(config: ml_collections.ConfigDict, rngs: nnx.Rngs) -> pretrain.Pretrainer:
  """The pre-training student; in AMD mode with the alignment heads of config.align."""
  amd = config.mode == "amd"
  align = None
  if amd:
    a = config.align
    align = pretrain.Align(method=a.method, student_layers=tuple(a.student_layers),
                           generator_depth=a.generator_depth,
                           learnable_mask_tokens=a.learnable_mask_tokens)
  model = pretrain.Pretrainer(
      vit.decode_variant(config.model.variant), num_frames=config.data.frames,
      image_size=config.data.size, decoder_depth=config.model.decoder_depth, align=align,
      teacher_variant=vit.decode_variant(config.teacher.variant) if amd else None,
      drop_path=config.model.drop_path, ln_eps=config.model.ln_eps,
      remat=config.model.remat, dtype=DTYPES[config.model.dtype], rngs=rngs)
  vit.set_attention(model, config.model.attention)
  return model


def teacher(config: ml_collections.ConfigDict, rngs: nnx.Rngs,
            ln_eps: float | None = None) -> vit.Encoder:
  """The teacher encoder, without its final norm (features are taken before it).

  ln_eps: the blocks' LayerNorm epsilon of the checkpoint it is loaded from
  (None: config.teacher.ln_eps).
  """
  variant = vit.decode_variant(config.teacher.variant)
  for layer in config.align.teacher_layers:
    if not 1 <= layer <= variant.depth:
      raise errors.BadInput(f"align.teacher_layers: layer {layer} is outside the teacher's "
                            f"1..{variant.depth}")
  student_variant = vit.decode_variant(config.model.variant)
  if (variant.patch, variant.tubelet) != (student_variant.patch, student_variant.tubelet):
    raise errors.BadInput(f"teacher {config.teacher.variant} and student {config.model.variant} "
                          "must share the tubelet size: they see the same tokens")
  encoder = vit.Encoder(variant, num_frames=config.data.frames, image_size=config.data.size,
                        final_norm=False,
                        ln_eps=config.teacher.ln_eps if ln_eps is None else ln_eps,
                        dtype=DTYPES[config.teacher.dtype], rngs=rngs)
  vit.set_attention(encoder, config.teacher.attention)
  return encoder


def model(config: ml_collections.ConfigDict, rngs: nnx.Rngs) -> nnx.Module:
  """The trained model: the pre-training student, the classifier or the AVA detector."""
  if config.mode in ("amd", "videomae"):
    return student(config, rngs)
  m, d = config.model, config.data
  if not d.num_classes:
    # 0 means "the dataset's label map": a training run reads it (train.resolve_classes)
    # before it builds the model; whoever builds one without a run must say it.
    raise errors.BadInput(f"data.num_classes is 0 for dataset {d.name}: a training run "
                          "reads it from the prepared dataset's label map; here give "
                          "--config.data.num_classes=N")
  variant = vit.decode_variant(m.variant)
  shared = dict(drop_path=m.drop_path, head_dropout=m.head_dropout, init_scale=m.init_scale,
                ln_eps=m.ln_eps, remat=m.remat, dtype=DTYPES[m.dtype], rngs=rngs)
  if detection(config):
    built = roi.Detector(variant, d.num_classes, num_frames=d.frames, pretrain_size=d.size,
                         **shared)
  else:
    built = heads.Classifier(variant, d.num_classes, num_frames=d.frames, image_size=d.size,
                             **shared)
  vit.set_attention(built, m.attention)
  return built
