"""Pre-training targets and losses (docs/method.md#pixel-targets, docs/method.md#losses).

Every loss is a mean over all its elements (PyTorch's reduction), and the
alignment losses are averaged over the aligned layer pairs, as the official code.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import optax

from amd_jax import errors, tokens
from amd_jax.normalization import IMAGENET_MEAN, IMAGENET_STD

ALIGN_LOSSES = ("l2", "l1", "smooth_l1")
ALIGN_TARGET_NORMS = ("none", "layernorm")


def normalize(video_uint8: jnp.ndarray, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> jnp.ndarray:
  """uint8 RGB (…, 3) → float32 (x / 255 − mean) / std, ImageNet's mean/std by default."""
  x = video_uint8.astype(jnp.float32) / 255.0
  return (x - jnp.asarray(mean)) / jnp.asarray(std)


def pixel_targets(video: jnp.ndarray, patch: int, tubelet: int) -> jnp.ndarray:
  """Normalised-pixel targets (B, N, tubelet·patch²·3) of a normalised video (B, T, H, W, 3).

  The clip is first mapped back to [0, 1] RGB; then per token and per channel,
  the 512 pixels of a 2×16×16 tubelet are standardised with their mean and
  unbiased std + 1e-6 (the epsilon on the std, not under the square root).
  Flattened (kt, kh, kw, c), channel fastest.
  """
  rgb = video.astype(jnp.float32) * jnp.asarray(IMAGENET_STD) + jnp.asarray(IMAGENET_MEAN)
  pixels = tokens.patchify(rgb, patch, tubelet)
  b, n, _ = pixels.shape
  pixels = pixels.reshape(b, n, -1, 3)
  mean = pixels.mean(axis=2, keepdims=True)
  std = jnp.sqrt(pixels.var(axis=2, ddof=1, keepdims=True))
  return ((pixels - mean) / (std + 1e-6)).reshape(b, n, -1)


def align_loss(pred: jnp.ndarray, target: jnp.ndarray, kind: str = "l2") -> jnp.ndarray:
  """Mean element-wise distance: l2 (MSE), l1 or smooth-l1 (β = 1, PyTorch's default)."""
  diff = pred.astype(jnp.float32) - target.astype(jnp.float32)
  if kind == "l2":
    return jnp.mean(diff ** 2)
  if kind == "l1":
    return jnp.mean(jnp.abs(diff))
  if kind == "smooth_l1":
    return jnp.mean(optax.huber_loss(diff, delta=1.0))
  raise errors.BadInput(f"unknown alignment loss {kind!r}: choose from {'|'.join(ALIGN_LOSSES)}")


def align_target(features: jnp.ndarray, norm: str = "none") -> jnp.ndarray:
  """A teacher layer's residual stream as an alignment target.

  none: raw, as the official AMD code (its targets grow with depth and training).
  layernorm: standardised per token without scale or bias (eps 1e-6), as MVD
  normalises its teacher features; an opt-in deviation for ablations.
  """
  if norm == "none":
    return features
  if norm == "layernorm":
    return jax.nn.standardize(features.astype(jnp.float32), axis=-1, epsilon=1e-6)
  raise errors.BadInput(f"unknown align.target_norm {norm!r}: choose from "
                        f"{'|'.join(ALIGN_TARGET_NORMS)}")


def layer_mean(preds: Sequence[jnp.ndarray], targets: Sequence[jnp.ndarray],
               kind: str) -> jnp.ndarray:
  """One alignment term: the loss of each aligned layer pair, averaged over pairs."""
  return sum(align_loss(p, t, kind) for p, t in zip(preds, targets, strict=True)) / len(preds)
