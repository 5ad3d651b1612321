"""The pre-training student (VideoMAE or AMD).

`Pretrainer` is everything the optimiser trains: encoder, pixel decoder and,
in AMD mode, the alignment heads. The teacher is a separate `vit.Encoder` without
a final norm whose parameters never enter the optimiser
(docs/method.md#teacher-branch); models/build.py builds both from a config.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from amd_jax import errors, masking
from amd_jax.models import decoders, vit


@dataclasses.dataclass(frozen=True)
class Align:
  """AMD's alignment heads (decoders.Alignment): the method, the student blocks that
  feed them (1-based), the generators' depth and whether their mask tokens train."""
  method: str
  student_layers: tuple[int, ...]
  generator_depth: int
  learnable_mask_tokens: bool


class Pretrainer(nnx.Module):
  """Student encoder + MAE decoder (+ AMD alignment heads).

  Called on a normalised video (B, T, H, W, C) and the clip's mask indices, it
  returns a dict with `pred` (B, n_masked, tubelet·patch²·C), the pixel
  predictions for the student-masked tokens, and in AMD mode `direct` and
  `generated` (tuples over the aligned layer pairs, see decoders.Alignment).
  """

  def __init__(self, variant: vit.Variant, *, num_frames: int, image_size: int,
               decoder_depth: int, align: Align | None = None,
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
