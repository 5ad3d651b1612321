"""The pre-training models: the student (VideoMAE or AMD) and the frozen teacher.

`Pretrainer` is everything the optimiser trains: encoder, pixel decoder and,
in AMD mode, the alignment heads. The teacher is a separate `Encoder` without a
final norm whose parameters never enter the optimiser (docs/method.md#teacher-branch).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from amd_jax import errors, masking
from amd_jax.models import decoders, vit


DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def dtype_of(name: str):
  return DTYPES[name]


class Pretrainer(nnx.Module):
  """Student encoder + MAE decoder (+ AMD alignment heads).

  Called on a normalised video (B, T, H, W, C) and the clip's mask indices, it
  returns a dict with `pred` (B, n_masked, tubelet·patch²·C), the pixel
  predictions for the student-masked tokens, and in AMD mode `direct` and
  `generated` (tuples over the aligned layer pairs, see decoders.Alignment).
  """

  def __init__(self, variant: vit.Variant, *, num_frames: int, image_size: int,
               decoder_depth: int, align: ml_collections.ConfigDict | None = None,
               teacher_variant: vit.Variant | None = None, drop_path: float = 0.0,
               ln_eps: float = 1e-6, norm_eps: float | None = None,
               decoder_norm_eps: float | None = None, remat: bool = False,
               dtype=jnp.float32, rngs: nnx.Rngs):
    self.encoder = vit.Encoder(variant, num_frames=num_frames, image_size=image_size,
                               drop_path=drop_path, final_norm=True, ln_eps=ln_eps,
                               norm_eps=norm_eps, remat=remat, dtype=dtype, rngs=rngs)
    num_tokens = self.encoder.num_tokens
    out_dim = variant.tubelet * variant.patch ** 2 * 3
    self.decoder = decoders.PixelDecoder(
        variant.width, variant.decoder_width, decoder_depth, variant.decoder_heads, out_dim,
        num_tokens, drop_path=drop_path, ln_eps=ln_eps, norm_eps=decoder_norm_eps,
        remat=remat, dtype=dtype, rngs=rngs)
    self.student_layers = tuple(align.student_layers) if align is not None else ()
    for layer in self.student_layers:
      if not 1 <= layer <= variant.depth:
        raise errors.BadInput(f"align.student_layers: layer {layer} is outside the student's "
                         f"1..{variant.depth}")
    self.alignment = None if align is None else decoders.Alignment(
        align.method, len(self.student_layers), variant.width, teacher_variant.width,
        generator_depth=align.generator_depth, num_tokens=num_tokens,
        learnable_mask_tokens=align.learnable_mask_tokens, drop_path=drop_path,
        ln_eps=ln_eps, remat=remat, dtype=dtype, rngs=rngs)

  def __call__(self, video: jnp.ndarray, idx: masking.MaskIndices, *,
               rng: jax.Array | None = None) -> dict:
    # Stochastic depth (when drop_path > 0) in the encoder, the pixel decoder and
    # the generators alike, as the official code builds all three with the rate.
    enc_rng, dec_rng, gen_rng = (None,) * 3 if rng is None else tuple(jax.random.split(rng, 3))
    x, hidden = self.encoder(video, idx.student, rng=enc_rng)
    # The decoders' fixed position tables are this clip's, as the encoder's: a model
    # takes clips of any size its tubelets divide, not only the one it was built for.
    num_tokens = self.encoder.clip_tokens(video)
    out = {"pred": self.decoder(x, idx.student, idx.masked, dec_rng, num_tokens=num_tokens)}
    if self.alignment is not None:
      features = [hidden[layer - 1] for layer in self.student_layers]
      out["direct"], out["generated"] = self.alignment(features, idx.student, idx.diff, gen_rng,
                                                       num_tokens=num_tokens)
    return out


def build_student(config: ml_collections.ConfigDict, rngs: nnx.Rngs) -> Pretrainer:
  amd = config.mode == "amd"
  model = Pretrainer(
      vit.decode_variant(config.model.variant), num_frames=config.data.frames,
      image_size=config.data.size, decoder_depth=config.model.decoder_depth,
      align=config.align if amd else None,
      teacher_variant=vit.decode_variant(config.teacher.variant) if amd else None,
      drop_path=config.model.drop_path, ln_eps=config.model.ln_eps,
      remat=config.model.remat, dtype=dtype_of(config.model.dtype), rngs=rngs)
  vit.set_attention(model, config.model.attention)
  return model


def build_teacher(config: ml_collections.ConfigDict, rngs: nnx.Rngs,
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
  student = vit.decode_variant(config.model.variant)
  if (variant.patch, variant.tubelet) != (student.patch, student.tubelet):
    raise errors.BadInput(f"teacher {config.teacher.variant} and student {config.model.variant} "
                          "must share the tubelet size: they see the same tokens")
  teacher = vit.Encoder(variant, num_frames=config.data.frames, image_size=config.data.size,
                        final_norm=False,
                        ln_eps=config.teacher.ln_eps if ln_eps is None else ln_eps,
                        dtype=dtype_of(config.teacher.dtype), rngs=rngs)
  vit.set_attention(teacher, config.teacher.attention)
  return teacher
