"""Models from a run's config: the one reader of config.model, config.teacher and
config.align for building them. The models themselves take plain arguments.

  student(config, rngs, align=)  the pre-training `Pretrainer` (AMD: with its alignment heads)
  teacher(config, rngs)          AMD's frozen teacher encoder
  classifier(config, rngs)       the fine-tuned classifier
  detector(config, rngs)         the AVA detector

Which of them a run trains is its task's choice (amd_jax/tasks.py).

A checkpoint's model is rebuilt from the checkpoint's own description instead
(convert/spec.py, `ModelSpec.build`), without a config; what a run's saved config
says of that description is models/saved.py.
"""

from __future__ import annotations

import jax.numpy as jnp
import ml_collections
from flax import nnx

from amd_jax import errors, losses
from amd_jax.models import decoders, heads, pretrain, roi, vit

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def check_dtype(config: ml_collections.ConfigDict, name: str) -> None:
  """Refuses, in one line, config[name].dtype that is not a compute dtype."""
  if config[name].dtype not in DTYPES:
    raise errors.BadInput(f"{name}.dtype={config[name].dtype!r}: choose from "
                          f"{'|'.join(DTYPES)}")


def check_alignment(config: ml_collections.ConfigDict) -> None:
  """Refuses, in one line, an AMD alignment (config.align) a run cannot start with."""
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


def token_grid(config: ml_collections.ConfigDict) -> tuple[int, int, int]:
  """The (t, h, w) token grid of the student on the config's clips."""
  variant = vit.decode_variant(config.model.variant)
  return vit.token_grid(config.data.frames, config.data.size, variant.patch, variant.tubelet)


def student(config: ml_collections.ConfigDict, rngs: nnx.Rngs, *, align: bool
            ) -> pretrain.Pretrainer:
  """The pre-training student; align: with the alignment heads of config.align (AMD),
  which predict config.teacher's features."""
  a = config.align if align else None
  model = pretrain.Pretrainer(
      vit.decode_variant(config.model.variant), num_frames=config.data.frames,
      image_size=config.data.size, decoder_depth=config.model.decoder_depth,
      align=pretrain.Align(method=a.method, student_layers=tuple(a.student_layers),
                           generator_depth=a.generator_depth,
                           learnable_mask_tokens=a.learnable_mask_tokens) if align else None,
      teacher_variant=vit.decode_variant(config.teacher.variant) if align else None,
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


def classifier(config: ml_collections.ConfigDict, rngs: nnx.Rngs) -> heads.Classifier:
  """The fine-tuned classifier: the encoder, its mean-pooled norm and a linear head."""
  return _with_head(heads.Classifier, config, rngs, image_size=config.data.size)


def detector(config: ml_collections.ConfigDict, rngs: nnx.Rngs) -> roi.Detector:
  """The AVA detector: the encoder, RoI pooling of the boxes and a linear head."""
  return _with_head(roi.Detector, config, rngs, pretrain_size=config.data.size)


def _with_head(model_class, config: ml_collections.ConfigDict, rngs: nnx.Rngs, **size):
  """A task model of config.model's encoder and a head over data.num_classes."""
  m, d = config.model, config.data
  if not d.num_classes:
    # 0 means "the dataset's label map": a training run reads it (tasks.py, prepare)
    # before it builds the model; whoever builds one without a run must say it.
    raise errors.BadInput(f"data.num_classes is 0 for dataset {d.name}: a training run "
                          "reads it from the prepared dataset's label map; here give "
                          "--config.data.num_classes=N")
  built = model_class(vit.decode_variant(m.variant), d.num_classes, num_frames=d.frames,
                      drop_path=m.drop_path, head_dropout=m.head_dropout,
                      init_scale=m.init_scale, ln_eps=m.ln_eps, remat=m.remat,
                      dtype=DTYPES[m.dtype], rngs=rngs, **size)
  vit.set_attention(built, m.attention)
  return built
