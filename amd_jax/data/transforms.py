"""Spatial augmentation of uint8 clips (T, H, W, 3), one parameter draw for all frames.

Every random transform takes a numpy Generator and draws its parameters once per
clip (docs/method.md#data-pipeline): the same crop, flip, RandAugment ops and erased cube on
every frame. Frames stay uint8 — normalisation happens on the device — so the
two transforms the official code runs after normalisation are carried over:
random resized crop resizes uint8 (rounding adds at most half a grey level) and
random erasing writes N(0, 1) noise mapped back through the ImageNet mean/std,
clipped to [0, 255].

Resizing follows the library each official transform used: PIL bilinear
(antialiased when shrinking) for the multi-scale crop and RandAugment, which run
on PIL images; `torch.nn.functional.interpolate` / cv2 bilinear (half-pixel
centres, no antialiasing) for the random resized crop and the test resize, which
run on arrays.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

from amd_jax import normalization
from amd_jax.data import sampling

MEAN = np.array(normalization.IMAGENET_MEAN)      # the normalisation every clip gets
STD = np.array(normalization.IMAGENET_STD)


# ---------------------------------------------------------------- resizing

def resize_pil(video: np.ndarray, height: int, width: int) -> np.ndarray:
  """PIL bilinear resize of every frame."""
  return crop_resize_pil(video, [(0, 0, *video.shape[1:3])], height, width)[0]


def crop_resize_pil(video: np.ndarray, boxes: Sequence[tuple[int, int, int, int]],
                    height: int, width: int) -> np.ndarray:
  """Each (top, left, h, w) crop of every frame, PIL bilinear → (len(boxes), T, height,
  width, 3): GroupMultiScaleCrop's crop-then-resize, pixel for pixel.

  A frame becomes a PIL image once for all its crops (the RGB → RGBX copy PIL
  makes of any input), and each resized crop goes straight into the output. The
  crop is PIL's copy of the region, so the resize sees the crop alone: resize's
  `box` would not do, its kernel reaches past the box into the rest of the frame.
  """
  out = np.empty((len(boxes), len(video), height, width, 3), np.uint8)
  for t, frame in enumerate(video):
    image = Image.fromarray(frame)
    for b, (top, left, h, w) in enumerate(boxes):
      crop = image if (h, w) == frame.shape[:2] else image.crop((left, top, left + w, top + h))
      out[b, t] = np.asarray(crop.resize((width, height), Image.Resampling.BILINEAR))
  return out


def _axis_weights(size_in: int, size_out: int):
  # torch interpolate(bilinear, align_corners=False): source = (dst + 0.5)·scale − 0.5,
  # clamped at 0; neighbours i0, min(i0 + 1, size − 1).
  src = (np.arange(size_out) + 0.5) * (size_in / size_out) - 0.5
  src = np.maximum(src, 0.0)
  i0 = np.minimum(np.floor(src).astype(np.int64), size_in - 1)
  i1 = np.minimum(i0 + 1, size_in - 1)
  frac = (src - i0).astype(np.float32)
  return i0, i1, frac


def resize_bilinear(video: np.ndarray, height: int, width: int) -> np.ndarray:
  """torch/cv2-style bilinear resize (half-pixel centres, no antialias) of (T, H, W, C)."""
  if video.shape[1:3] == (height, width):
    return video
  y0, y1, fy = _axis_weights(video.shape[1], height)
  x0, x1, fx = _axis_weights(video.shape[2], width)
  v = video.astype(np.float32)
  rows = v[:, y0] * (1 - fy)[:, None, None] + v[:, y1] * fy[:, None, None]
  out = rows[:, :, x0] * (1 - fx)[:, None] + rows[:, :, x1] * fx[:, None]
  return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def short_side_size(height: int, width: int, size: int) -> tuple[int, int]:
  """(h, w) with the short side `size`, the long side truncated as VideoMAE's resize_clip."""
  if width < height:
    return int(size * height / width), size
  return size, int(size * width / height)


def resize_short_side(video: np.ndarray, size: int) -> np.ndarray:
  """Short side to `size`, aspect kept (VideoMAE test/validation Resize, bilinear)."""
  return resize_bilinear(video, *short_side_size(video.shape[1], video.shape[2], size))


# ---------------------------------------------------------------- pre-training

MULTI_SCALES = (1.0, 0.875, 0.75, 0.66)


def multi_scale_crop_params(rng: np.random.Generator, height: int, width: int, size: int,
                            scales: Sequence[float] = MULTI_SCALES, max_distort: int = 1
                            ) -> tuple[int, int, int, int]:
  """(top, left, crop_h, crop_w) of GroupMultiScaleCrop(fix_crop, more_fix_crop).

  Crop sides are int(min(H, W) · scale), snapped to `size` within 3 px; (w, h)
  pairs whose scale indices differ by at most `max_distort`; the offset is one
  of 13 fixed points on a grid of steps ((W − w) // 4, (H − h) // 4).
  """
  sides = [int(min(height, width) * s) for s in scales]
  sides = [size if abs(s - size) < 3 else s for s in sides]
  pairs = [(w, h) for i, h in enumerate(sides) for j, w in enumerate(sides)
           if abs(i - j) <= max_distort]
  crop_w, crop_h = pairs[rng.integers(len(pairs))]
  ws, hs = (width - crop_w) // 4, (height - crop_h) // 4
  # The official order: 4 corners, centre, then the 8 extra points.
  grid = ((0, 0), (4, 0), (0, 4), (4, 4), (2, 2),
          (0, 2), (4, 2), (2, 4), (2, 0), (1, 1), (3, 1), (1, 3), (3, 3))
  gx, gy = grid[rng.integers(len(grid))]
  return gy * hs, gx * ws, crop_h, crop_w


# ---------------------------------------------------------------- fine-tuning

def random_resized_crop_params(rng: np.random.Generator, height: int, width: int,
                               scale: tuple[float, float] = (0.08, 1.0),
                               ratio: tuple[float, float] = (3 / 4, 4 / 3),
                               tries: int = 10) -> tuple[int, int, int, int]:
  """(top, left, h, w): VideoMAE `_get_param_spatial_crop` (log-uniform aspect, centre fallback)."""
  area = height * width
  log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
  for _ in range(tries):
    target = rng.uniform(*scale) * area
    aspect = math.exp(rng.uniform(*log_ratio))
    w = int(round(math.sqrt(target * aspect)))
    h = int(round(math.sqrt(target / aspect)))
    if 0 < w <= width and 0 < h <= height:
      return int(rng.integers(height - h + 1)), int(rng.integers(width - w + 1)), h, w
  in_ratio = width / height
  if in_ratio < min(ratio):
    w, h = width, int(round(width / min(ratio)))
  elif in_ratio > max(ratio):
    h, w = height, int(round(height * max(ratio)))
  else:
    h, w = height, width
  return (height - h) // 2, (width - w) // 2, h, w


def random_resized_crop(video: np.ndarray, rng: np.random.Generator, size: int,
                        scale: tuple[float, float] = (0.08, 1.0),
                        ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> np.ndarray:
  """One random crop of all frames, bilinear to (T, size, size, 3)."""
  top, left, h, w = random_resized_crop_params(rng, video.shape[1], video.shape[2], scale, ratio)
  return resize_bilinear(video[:, top:top + h, left:left + w], size, size)


def horizontal_flip(video: np.ndarray, rng: np.random.Generator, p: float = 0.5) -> np.ndarray:
  return video[:, :, ::-1] if rng.uniform() < p else video


def random_erasing(video: np.ndarray, rng: np.random.Generator, p: float = 0.25,
                   area: tuple[float, float] = (0.02, 1 / 3),
                   aspect: tuple[float, float] = (0.3, 1 / 0.3), tries: int = 100
                   ) -> np.ndarray:
  """timm RandomErasing(mode='pixel', count 1, cube=True): one box on every frame.

  The box is drawn once (up to `tries` attempts, as the cube variant); the noise
  is fresh per pixel and frame: N(0, 1) in normalised units, i.e. 255·(mean +
  std·z) in uint8, clipped.
  """
  if rng.uniform() >= p:
    return video
  t, height, width, c = video.shape
  log_aspect = (math.log(aspect[0]), math.log(aspect[1]))
  for _ in range(tries):
    target = rng.uniform(*area) * height * width
    ratio = math.exp(rng.uniform(*log_aspect))
    h = int(round(math.sqrt(target * ratio)))
    w = int(round(math.sqrt(target / ratio)))
    if w < width and h < height:
      top, left = int(rng.integers(height - h + 1)), int(rng.integers(width - w + 1))
      noise = 255 * (MEAN + STD * rng.standard_normal((t, h, w, c)))
      out = video.copy()
      out[:, top:top + h, left:left + w] = np.clip(np.rint(noise), 0, 255).astype(np.uint8)
      return out
  return video


# ---------------------------------------------------------------- RandAugment (video)

FILL = (128, 128, 128)
AFFINE = Image.Transform.AFFINE
MAX_LEVEL = 10.0


def _negate(rng, v):
  return -v if rng.uniform() < 0.5 else v


def _solarize_add(img, add, thresh=128):
  lut = [min(255, i + add) if i < thresh else i for i in range(256)]
  return img.point(lut * 3)


# name → (level → op arguments, drawing signs from rng; op(img, *args, **kw)).
# timm 0.4.12 rand_augment.py, the `_RAND_INCREASING_TRANSFORMS` list.
RAND_OPS = {
    "AutoContrast": (lambda m, r, hp: (), lambda img, **kw: ImageOps.autocontrast(img)),
    "Equalize": (lambda m, r, hp: (), lambda img, **kw: ImageOps.equalize(img)),
    "Invert": (lambda m, r, hp: (), lambda img, **kw: ImageOps.invert(img)),
    "Rotate": (lambda m, r, hp: (_negate(r, m / MAX_LEVEL * 30.0),),
               lambda img, deg, **kw: img.rotate(deg, **kw)),
    "PosterizeIncreasing": (lambda m, r, hp: (4 - int(m / MAX_LEVEL * 4),),
                            lambda img, bits, **kw: img if bits >= 8
                            else ImageOps.posterize(img, bits)),
    "SolarizeIncreasing": (lambda m, r, hp: (256 - int(m / MAX_LEVEL * 256),),
                           lambda img, thresh, **kw: ImageOps.solarize(img, thresh)),
    "SolarizeAdd": (lambda m, r, hp: (int(m / MAX_LEVEL * 110),),
                    lambda img, add, **kw: _solarize_add(img, add)),
    "ColorIncreasing": (lambda m, r, hp: (1.0 + _negate(r, m / MAX_LEVEL * 0.9),),
                        lambda img, f, **kw: ImageEnhance.Color(img).enhance(f)),
    "ContrastIncreasing": (lambda m, r, hp: (1.0 + _negate(r, m / MAX_LEVEL * 0.9),),
                           lambda img, f, **kw: ImageEnhance.Contrast(img).enhance(f)),
    "BrightnessIncreasing": (lambda m, r, hp: (1.0 + _negate(r, m / MAX_LEVEL * 0.9),),
                             lambda img, f, **kw: ImageEnhance.Brightness(img).enhance(f)),
    "SharpnessIncreasing": (lambda m, r, hp: (1.0 + _negate(r, m / MAX_LEVEL * 0.9),),
                            lambda img, f, **kw: ImageEnhance.Sharpness(img).enhance(f)),
    "ShearX": (lambda m, r, hp: (_negate(r, m / MAX_LEVEL * 0.3),),
               lambda img, f, **kw: img.transform(img.size, AFFINE, (1, f, 0, 0, 1, 0), **kw)),
    "ShearY": (lambda m, r, hp: (_negate(r, m / MAX_LEVEL * 0.3),),
               lambda img, f, **kw: img.transform(img.size, AFFINE, (1, 0, 0, f, 1, 0), **kw)),
    "TranslateXRel": (lambda m, r, hp: (_negate(r, m / MAX_LEVEL * hp["translate_pct"]),),
                      lambda img, pct, **kw: img.transform(
                          img.size, AFFINE, (1, 0, pct * img.size[0], 0, 1, 0), **kw)),
    "TranslateYRel": (lambda m, r, hp: (_negate(r, m / MAX_LEVEL * hp["translate_pct"]),),
                      lambda img, pct, **kw: img.transform(
                          img.size, AFFINE, (1, 0, 0, 0, 1, pct * img.size[1]), **kw)),
}
# Ops whose PIL call takes resampling and fill arguments.
_GEOMETRIC = {"Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel"}


def rand_augment_params(rng: np.random.Generator, num_ops: int = 4, magnitude: float = 7.0,
                        magnitude_std: float = 0.5, prob: float = 0.5,
                        translate_pct: float = 0.45) -> list[tuple[str, tuple]]:
  """The clip's draw: [(op name, op arguments)] for the ops that fire, in order.

  timm RandAugment as VideoMAE runs it on a clip (`rand-m7-n4-mstd0.5-inc1` in
  the official scripts): `num_ops` ops chosen with replacement, each fires with
  `prob`, magnitude ~ N(magnitude, magnitude_std) clipped to [0, 10], signs
  random — drawn once per op for the whole clip.
  """
  names = list(RAND_OPS)
  chosen = [names[i] for i in rng.integers(len(names), size=num_ops)]
  out = []
  hparams = {"translate_pct": translate_pct}
  for name in chosen:
    if prob < 1.0 and rng.uniform() > prob:
      continue
    m = rng.normal(magnitude, magnitude_std) if magnitude_std > 0 else magnitude
    m = min(MAX_LEVEL, max(0.0, m))
    out.append((name, RAND_OPS[name][0](m, rng, hparams)))
  return out


def rand_augment(video: np.ndarray, rng: np.random.Generator, **kwargs) -> np.ndarray:
  """RandAugment with one draw of `rand_augment_params(**kwargs)` applied to every frame."""
  params = rand_augment_params(rng, **kwargs)
  if not params:
    return video
  frames = []
  for f in video:
    img = Image.fromarray(f)
    for name, args in params:
      kw = dict(resample=Image.Resampling.BICUBIC, fillcolor=FILL) if name in _GEOMETRIC else {}
      img = RAND_OPS[name][1](img, *args, **kw)
    frames.append(np.asarray(img))
  return np.stack(frames)


# ---------------------------------------------------------------- testing

def three_crops(video: np.ndarray, size: int, crops: int = 3) -> np.ndarray:
  """(crops, T, size, size, 3) along the long side (VideoMAE test mode), after the resize.

  The clip must already have its short side equal to `size`.
  """
  t, h, w, _ = video.shape
  if h >= w:
    return np.stack([video[:, o:o + size, :size] for o in sampling.crop_offsets(h, size, crops)])
  return np.stack([video[:, :size, o:o + size] for o in sampling.crop_offsets(w, size, crops)])


def center_crop(video: np.ndarray, size: int) -> np.ndarray:
  t, h, w, _ = video.shape
  top, left = int(round((h - size) / 2)), int(round((w - size) / 2))
  return video[:, top:top + size, left:left + size]
