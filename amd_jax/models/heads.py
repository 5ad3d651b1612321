"""Task heads on the video encoder (docs/method.md#heads-and-pooling)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from amd_jax.models import vit


def linear_head(width: int, num_classes: int, init_scale: float, *, dtype,
                rngs: nnx.Rngs) -> nnx.Linear:
  """The linear head of a task model: kernel N(0, 0.02²)·init_scale, zero bias.

  init_scale is 0.001 in every fine-tuning recipe (and VideoMAE-AVA's), so the
  first updates barely disturb the pre-trained features.
  """
  def init(key, shape, dtype=jnp.float32):
    # ±100σ: torch's trunc_normal_(std=0.02) cuts at its default ±2, not ±2σ.
    return init_scale * 0.02 * jax.random.truncated_normal(key, -100.0, 100.0, shape, dtype)

  return vit.dense(width, num_classes, ("embed", "classes"), init=init, dtype=dtype, rngs=rngs)


def dropout(x: jnp.ndarray, rate: float, rng: jax.Array | None) -> jnp.ndarray:
  """Head dropout: elementwise, 1/keep rescaling; identity without an rng."""
  if rng is None or rate == 0.0:
    return x
  keep = 1.0 - rate
  return jnp.where(jax.random.bernoulli(rng, keep, x.shape), x / keep, 0.0)


class Classifier(nnx.Module):
  """Encoder (no final norm) → mean over tokens → fc_norm → dropout → linear head.

  The head is `linear_head`. `fc_norm_eps` (None: `ln_eps`) is separate
  because HF builds fc_norm with torch's 1e-5.
  Called on a normalised video (B, T, H, W, C), it returns logits (B, classes).
  """

  def __init__(self, variant: vit.Variant, num_classes: int, *, num_frames: int,
               image_size: int, drop_path: float = 0.0, head_dropout: float = 0.0,
               init_scale: float = 0.001, ln_eps: float = 1e-6,
               fc_norm_eps: float | None = None, remat: bool = False, dtype=jnp.float32,
               rngs: nnx.Rngs):
    self.encoder = vit.Encoder(variant, num_frames=num_frames, image_size=image_size,
                               drop_path=drop_path, final_norm=False, ln_eps=ln_eps,
                               remat=remat, dtype=dtype, rngs=rngs)
    self.fc_norm = vit.layer_norm(variant.width, ln_eps if fc_norm_eps is None else fc_norm_eps,
                                  dtype, rngs)
    self.head = linear_head(variant.width, num_classes, init_scale, dtype=dtype, rngs=rngs)
    self.head_dropout = head_dropout

  def __call__(self, video: jnp.ndarray, *, rng: jax.Array | None = None) -> jnp.ndarray:
    enc_rng, drop_rng = (None, None) if rng is None else tuple(jax.random.split(rng))
    x, _ = self.encoder(video, rng=enc_rng)
    x = self.fc_norm(x.mean(axis=1))
    return self.head(dropout(x, self.head_dropout, drop_rng))
