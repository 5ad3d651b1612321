"""Mixup / cutmix and label smoothing on the device, as timm 0.4.12's `Mixup`
(docs/method.md#mixup-and-label-smoothing).

Batch mode, as the official fine-tuning: one λ and one cutmix box per batch,
shared by every frame; sample i is paired with sample B−1−i (the batch
reversed). With probability `prob` the batch is mixed; then cutmix with
probability `switch_prob` (λ ~ Beta(cutmix_alpha)) else mixup (λ ~
Beta(mixup_alpha)). Cutmix's λ is corrected to the box's true area.
Targets: one-hot smoothed to off = s/K, on = 1 − s + s/K, then mixed with λ.

One difference of placement, not of distribution: the official code mixes
each GPU's batch; here the pairing runs over the global batch.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax


@dataclasses.dataclass(frozen=True)
class Mixup:
  mixup_alpha: float = 0.8
  cutmix_alpha: float = 1.0
  prob: float = 1.0
  switch_prob: float = 0.5
  label_smoothing: float = 0.1

  @property
  def enabled(self) -> bool:
    return self.prob > 0 and (self.mixup_alpha > 0 or self.cutmix_alpha > 0)

  def __call__(self, rng: jax.Array, video: jnp.ndarray, labels: jnp.ndarray,
               num_classes: int) -> tuple[jnp.ndarray, jnp.ndarray]:
    """video float (B, T, H, W, C), labels int (B,) → mixed video, soft targets (B, K)."""
    if not self.enabled:
      return video, smooth_one_hot(labels, num_classes, self.label_smoothing)
    k_apply, k_switch, k_mix, k_cut, k_box = jax.random.split(rng, 5)
    apply = jax.random.uniform(k_apply) < self.prob
    if self.mixup_alpha > 0 and self.cutmix_alpha > 0:
      use_cutmix = jax.random.uniform(k_switch) < self.switch_prob
    else:
      use_cutmix = jnp.asarray(self.cutmix_alpha > 0)
    # Beta(α, α); an α of 0 (that kind off) is never used, any positive stand-in will do.
    a_mix, a_cut = self.mixup_alpha or 1.0, self.cutmix_alpha or 1.0
    lam_mix = jax.random.beta(k_mix, a_mix, a_mix)
    lam_cut = jax.random.beta(k_cut, a_cut, a_cut)
    h, w = video.shape[2], video.shape[3]
    box, lam_box = cutmix_box(k_box, lam_cut, h, w)
    lam = jnp.where(apply, jnp.where(use_cutmix, lam_box, lam_mix), 1.0)

    flipped = video[::-1]
    mixed = video * lam_mix.astype(video.dtype) + flipped * (1 - lam_mix).astype(video.dtype)
    cut = jnp.where(box[None, None, :, :, None], flipped, video)
    video = jnp.where(apply, jnp.where(use_cutmix, cut, mixed), video)
    targets = smooth_one_hot(labels, num_classes, self.label_smoothing)
    return video, targets * lam + targets[::-1] * (1 - lam)


def smooth_one_hot(labels: jnp.ndarray, num_classes: int, smoothing: float) -> jnp.ndarray:
  """Integer labels (B,) → (B, K) targets, off = s/K and on = 1 − s + s/K."""
  return optax.smooth_labels(jax.nn.one_hot(labels, num_classes), smoothing)


def cutmix_box(rng: jax.Array, lam: jnp.ndarray, h: int, w: int
               ) -> tuple[jnp.ndarray, jnp.ndarray]:
  """(mask (h, w) bool of the box, corrected λ = 1 − box area / (h·w)).

  timm `rand_bbox`: sides int(h·√(1−λ)) and int(w·√(1−λ)), centre uniform over
  the image, half-sides cut_h // 2 on both sides, clipped to the image.
  """
  ky, kx = jax.random.split(rng)
  ratio = jnp.sqrt(1.0 - lam)
  cut_h = (h * ratio).astype(jnp.int32)
  cut_w = (w * ratio).astype(jnp.int32)
  cy = jax.random.randint(ky, (), 0, h)
  cx = jax.random.randint(kx, (), 0, w)
  y0, y1 = jnp.clip(cy - cut_h // 2, 0, h), jnp.clip(cy + cut_h // 2, 0, h)
  x0, x1 = jnp.clip(cx - cut_w // 2, 0, w), jnp.clip(cx + cut_w // 2, 0, w)
  ys, xs = jnp.arange(h)[:, None], jnp.arange(w)[None, :]
  mask = (ys >= y0) & (ys < y1) & (xs >= x0) & (xs < x1)
  return mask, 1.0 - ((y1 - y0) * (x1 - x0)) / (h * w)


def soft_cross_entropy(logits: jnp.ndarray, targets: jnp.ndarray) -> jnp.ndarray:
  """Mean over the batch of −Σ_k target_k · log softmax(logits)_k (float32)."""
  return jnp.mean(optax.softmax_cross_entropy(logits.astype(jnp.float32), targets))
