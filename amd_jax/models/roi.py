"""AVA action detection on the video encoder: RoIAlign, Detector, loss
(docs/method.md#ava-action-detection).

The detector is VideoMAE-AVA's: encoder with its final (pre-trained) LayerNorm →
tokens as a (T', H', W') map → mean over time → RoIAlign 7×7 at 1/16 → 7×7
max-pool → linear classifier over the 80 AVA actions. The person boxes come
from outside (ground truth in training, detector proposals in testing).

Boxes follow the AVA files: x1, y1, x2, y2 normalised to [0, 1] with an
exclusive right/bottom edge. The official code (alphaction's BoxList) works on
inclusive pixel boxes, x2_px = x2·W − 1, and so does RoIAlign here; the data
pipeline (amd_jax/data/ava_pipeline.py) produces boxes with that inverse.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from amd_jax import errors
from amd_jax.models import heads, posemb, vit

NUM_CLASSES = 80          # AVA action ids 1..80 → logits 0..79
ROI_SIZE = 7              # RoIAlign output and max-pool window (VideoMAE-AVA)


# ---------------------------------------------------------------- RoIAlign

def _axis_weights(start: jnp.ndarray, end: jnp.ndarray, out: int, length: int,
                  sampling_ratio: int) -> jnp.ndarray:
  """(..., out, length): bin p's value along one axis is Σ_i A[p, i]·feature[i].

  A[p] is the mean of the bilinear weights of the bin's samples, so the 2-D
  RoIAlign value Σ_iy Σ_ix bilinear(y, x) / (gy·gx) is A_y · F · A_xᵀ: the
  bilinear kernel, its zero outside [-1, length] and its clamping at the border
  all act on each axis alone.
  """
  size = jnp.maximum(end - start, 1.0)            # malformed boxes become 1×1
  bin_size = size / out
  if sampling_ratio > 0:
    grid_max = sampling_ratio
    grid = jnp.full_like(size, sampling_ratio)
  else:
    # Adaptive grid ceil(size / out), at most ceil(length / out): the largest a
    # box inside the map can need, so the static count loses nothing there.
    grid_max = max(1, math.ceil(length / out))
    grid = jnp.clip(jnp.ceil(size / out), 1, grid_max)
  p = jnp.arange(out, dtype=start.dtype)[:, None]
  i = jnp.arange(grid_max, dtype=start.dtype)[None, :]
  pos = (start[..., None, None] + p * bin_size[..., None, None]
         + (i + 0.5) * (bin_size / grid)[..., None, None])       # (..., out, grid_max)
  used = (i < grid[..., None, None]) & (pos >= -1.0) & (pos <= length)
  pos = jnp.maximum(pos, 0.0)
  low = jnp.floor(pos).astype(jnp.int32)
  at_end = low >= length - 1
  low = jnp.where(at_end, length - 1, low)
  high = jnp.where(at_end, length - 1, low + 1)
  frac = jnp.where(at_end, 0.0, pos - low)
  cells = jnp.arange(length)
  w = ((cells == low[..., None]) * (1.0 - frac)[..., None]
       + (cells == high[..., None]) * frac[..., None])           # (..., out, grid_max, length)
  w = w * used[..., None]
  return w.sum(axis=-2) / grid[..., None, None]


def roi_align(features: jnp.ndarray, boxes: jnp.ndarray, output_size: int = ROI_SIZE,
              spatial_scale: float = 1.0, sampling_ratio: int = 0) -> jnp.ndarray:
  """RoIAlign of boxes (B, M, 4) on features (B, H, W, C) → (B, M, out, out, C) float32.

  boxes: x1, y1, x2, y2 in input pixels; × spatial_scale gives feature-map
  pixels (1/16 for a ViT with 16-pixel patches). The arithmetic is
  torchvision's `roi_align` / detectron2's ROIAlign, the CUDA kernel
  alphaction's ROIAlign3d (used by VideoMAE-AVA) runs:
  * aligned=False, the official head's (and the legacy detectron/maskrcnn
    one): no half-pixel shift (aligned=True would subtract 0.5 from the
    scaled box), box sides clamped to ≥ 1 feature pixel;
  * each of the out×out bins averages a grid of samples at the grid-cell
    centres; sampling_ratio > 0 fixes the grid, 0 is the adaptive
    ceil(box side / out). Adaptive made static: the grid has room for
    ceil(H / out) × ceil(W / out) samples and masks the ones a box does not
    use, so the result is exact for every box inside the map (the only ones
    AVA has: boxes are clipped to the image) and a larger box samples at most
    that grid;
  * bilinear sampling, zero for a sample outside [-1, H] × [-1, W], samples in
    [-1, 0) read row/column 0, samples past H − 1 read row H − 1.
  Fixed shapes, jit-able; the gradient reaches `features` (boxes are data).
  """
  _, h, w, _ = features.shape
  boxes = jax.lax.stop_gradient(boxes.astype(jnp.float32)) * spatial_scale
  x1, y1, x2, y2 = (boxes[..., k] for k in range(4))
  wy = _axis_weights(y1, y2, output_size, h, sampling_ratio)   # (B, M, out, H)
  wx = _axis_weights(x1, x2, output_size, w, sampling_ratio)   # (B, M, out, W)
  # Full float32 products (no TF32 on GPUs): small next to the encoder, and the
  # pooled features then match the kernel's float32 sums.
  exact = jax.lax.Precision.HIGHEST
  rows = jnp.einsum("bmph,bhwc->bmpwc", wy, features.astype(jnp.float32), precision=exact)
  return jnp.einsum("bmqw,bmpwc->bmpqc", wx, rows, precision=exact)


# ---------------------------------------------------------------- positions

def _bicubic_matrix(size_in: int, size_out: int, a: float = -0.75) -> np.ndarray:
  """(size_out, size_in) weights of torch's bicubic interpolate (align_corners=False).

  Keys' cubic with a = −0.75, source = (dst + 0.5)·in/out − 0.5 unclamped,
  taps clamped to the border: the resampling VideoMAE-AVA applies to the
  position table.
  """
  src = (np.arange(size_out) + 0.5) * (size_in / size_out) - 0.5
  base = np.floor(src)
  t = src - base

  def near(x):   # |x| ≤ 1
    return ((a + 2) * x - (a + 3)) * x * x + 1

  def far(x):    # 1 < |x| < 2
    return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

  taps = (far(t + 1), near(t), near(1 - t), far(2 - t))
  out = np.zeros((size_out, size_in))
  for k, weight in enumerate(taps):
    index = np.clip(base + k - 1, 0, size_in - 1).astype(np.int64)
    np.add.at(out, (np.arange(size_out), index), weight)
  return out


@functools.lru_cache(maxsize=None)
def position_table(pretrain_grid: tuple[int, int, int], hw: tuple[int, int],
                   width: int) -> np.ndarray:
  """(t·h·w, width) float32 positions of a (t, h, w) token grid.

  The encoder's fixed sinusoids belong to the pre-training grid (t, H0, W0);
  VideoMAE-AVA resizes each time slice of that table bicubically to the input's
  (h, w) (`interpolate_pos_embed_online`), so a 256×464 test clip keeps the
  positions the model was trained with. Identity at the pre-training size.
  """
  t, h0, w0 = pretrain_grid
  table = posemb.sinusoid_table(t * h0 * w0, width).reshape(t, h0, w0, width)
  if hw != (h0, w0):
    table = np.einsum("yi,xj,tijd->tyxd", _bicubic_matrix(h0, hw[0]),
                      _bicubic_matrix(w0, hw[1]), table.astype(np.float64))
  return table.reshape(-1, width).astype(np.float32)


# ---------------------------------------------------------------- detector

class Detector(nnx.Module):
  """VideoMAE-AVA's action detector on a video ViT.

  Called as `detector(video, boxes, rng=None)`: video float (B, T, H, W, 3)
  normalised with the AVA mean/std (amd_jax/normalization.py), H and W
  any multiples of the patch (224×224 in training, 256×464 in testing); boxes
  (B, M, 4) normalised x1, y1, x2, y2 on that frame (see the module doc);
  returns logits (B, M, 80). `rng` enables stochastic depth and dropout.

  The encoder is built for the pre-training clip (`num_frames`,
  `pretrain_size`) so that its parameters and positions are the pre-trained
  ones; other frame sizes get the resized position table (`position_table`,
  the encoder's `positions`).
  The head is heads.linear_head (init_scale 0.001 in VideoMAE-AVA).
  """

  def __init__(self, variant: vit.Variant, num_classes: int = NUM_CLASSES, *,
               num_frames: int = 16, pretrain_size: int = 224, drop_path: float = 0.0,
               head_dropout: float = 0.0, init_scale: float = 0.001, ln_eps: float = 1e-6,
               norm_eps: float | None = None, remat: bool = False, dtype=jnp.float32,
               rngs: nnx.Rngs):
    self.encoder = vit.Encoder(variant, num_frames=num_frames, image_size=pretrain_size,
                               drop_path=drop_path, final_norm=True, ln_eps=ln_eps,
                               norm_eps=norm_eps, remat=remat, dtype=dtype, rngs=rngs)
    self.head = heads.linear_head(variant.width, num_classes, init_scale, dtype=dtype,
                                  rngs=rngs)
    self.head_dropout = head_dropout

  def __call__(self, video: jnp.ndarray, boxes: jnp.ndarray, *,
               rng: jax.Array | None = None) -> jnp.ndarray:
    enc = self.encoder
    v = enc.variant
    b, t, h, w, _ = video.shape
    grid = vit.token_grid(t, (h, w), v.patch, v.tubelet)
    if grid[0] != enc.grid[0]:
      raise errors.BadInput(f"the detector was built for {enc.grid[0] * v.tubelet}-frame "
                            f"clips, got {t} frames")
    enc_rng, drop_rng = (None, None) if rng is None else tuple(jax.random.split(rng))
    x, _ = enc(video, rng=enc_rng,
               positions=jnp.asarray(position_table(enc.grid, grid[1:], v.width)))
    # Mean over time in float32: the map RoIAlign samples (B, H', W', D).
    fmap = x.astype(jnp.float32).reshape(b, *grid, v.width).mean(axis=1)
    pixels = boxes * jnp.array([w, h, w, h], jnp.float32) - jnp.array([0, 0, 1, 1], jnp.float32)
    rois = roi_align(fmap, pixels, ROI_SIZE, spatial_scale=1.0 / v.patch)
    x = rois.max(axis=(2, 3))                                     # 7×7 max-pool: (B, M, D)
    return self.head(heads.dropout(x, self.head_dropout, drop_rng))


def ava_loss(logits: jnp.ndarray, labels: jnp.ndarray, box_valid: jnp.ndarray,
             clips_per_gpu: int = 4) -> jnp.ndarray:
  """The AVA training loss of a global batch: logits (B, M, 80), labels (B, M, 80) in
  {0, 1}, box_valid (B, M) bool → scalar float32.

  VideoMAE-AVA: each GPU takes `binary_cross_entropy_with_logits(reduction=
  'mean')` over its N boxes × 80 classes and multiplies it by N, i.e. the sum
  over its boxes of the per-box mean over classes; DDP then averages the 32
  GPUs' gradients (4 clips each, batch 128). The same value over a global
  batch of B clips is

      Σ_valid boxes mean_c BCE(logit, label) / (B / clips_per_gpu),

  which is what this returns (padding boxes count for nothing): the gradient
  scale does not depend on how many devices share the batch.
  """
  bce = optax.sigmoid_binary_cross_entropy(logits.astype(jnp.float32), labels)
  per_box = jnp.where(box_valid, bce.mean(axis=-1), 0.0)
  return per_box.sum() * clips_per_gpu / logits.shape[0]
