"""moving_digits: the embedded dataset, real handwritten digits whose label is their motion.

Each clip is 16 RGB frames of 64×64: one of scikit-learn's bundled 8×8
handwritten digits (`load_digits`, 1,797 real scans, no download), scaled up and
coloured, moves over a textured background by one of eight motions — left,
right, up, down, zoom in, zoom out, rotate clockwise, rotate counter-clockwise.
The label is the motion, not the digit, so no single frame tells the class (as
in SSV2). The background texture changes every 2 pixels, finer than any patch,
so per-patch normalised reconstruction targets are not flat.

Clips are stored as H.264 mp4 bytes so the real decoding path runs. Every clip
is a pure function of (seed, split, index) and the splits draw on disjoint
digit images. Builds in about 25 s on 2 cores (rendering and H.264 encoding).
"""

from __future__ import annotations

import functools
import multiprocessing
import os

import numpy as np
import tensorflow_datasets as tfds

from amd_jax.data import decode

MOTIONS = ("left", "right", "up", "down", "zoom_in", "zoom_out", "rotate_cw", "rotate_ccw")
FRAMES, SIZE = 16, 64
SPLITS = {"train": 2048, "val": 256, "test": 256}
# Digit image i belongs to split DIGIT_SPLIT[i % 10]: 80% / 10% / 10%, disjoint.
DIGIT_SPLIT = ("train",) * 8 + ("val", "test")
SEED = 0


def _bilinear(image: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
  """image (h, w) sampled at float pixel coordinates, zero outside."""
  h, w = image.shape
  padded = np.pad(image, 1)
  y, x = np.clip(y + 1, 0, h + 1), np.clip(x + 1, 0, w + 1)
  y0 = np.clip(np.floor(y).astype(int), 0, h)
  x0 = np.clip(np.floor(x).astype(int), 0, w)
  fy, fx = y - y0, x - x0
  top = padded[y0, x0] * (1 - fx) + padded[y0, x0 + 1] * fx
  bottom = padded[y0 + 1, x0] * (1 - fx) + padded[y0 + 1, x0 + 1] * fx
  return top * (1 - fy) + bottom * fy


def render(digit: np.ndarray, label: int, rng: np.random.Generator) -> np.ndarray:
  """uint8 (FRAMES, SIZE, SIZE, 3): `digit` (8×8, values 0..16) moving by MOTIONS[label]."""
  t, s = FRAMES, SIZE
  base = rng.uniform(20, 90, 3)
  texture = rng.uniform(-25, 25, (s // 2, s // 2, 3))
  background = base + np.kron(texture, np.ones((2, 2, 1)))
  colour = rng.uniform(160, 255, 3)

  k = np.arange(t) / (t - 1) - 0.5                      # -0.5 … 0.5 over the clip
  travel = s * 0.4
  cx = np.full(t, s / 2 + rng.uniform(-s / 10, s / 10))
  cy = np.full(t, s / 2 + rng.uniform(-s / 10, s / 10))
  size = np.full(t, s * rng.uniform(0.4, 0.5))           # sprite side in pixels
  angle = np.full(t, rng.uniform(-0.3, 0.3))
  motion = MOTIONS[label]
  if motion in ("left", "right"):
    cx = cx + k * travel * (1 if motion == "right" else -1)
  elif motion in ("up", "down"):
    cy = cy + k * travel * (1 if motion == "down" else -1)
  elif motion in ("zoom_in", "zoom_out"):
    size = size * np.exp(k * 1.2 * (1 if motion == "zoom_in" else -1))
  else:
    angle = angle + k * np.pi * 0.75 * (1 if motion == "rotate_cw" else -1)

  # Inverse-map every output pixel into the digit's 8×8 grid (y down, so a
  # positive angle turns clockwise on screen).
  yy, xx = np.mgrid[0:s, 0:s].astype(np.float64) + 0.5
  dx = xx[None] - cx[:, None, None]
  dy = yy[None] - cy[:, None, None]
  cos, sin = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None]
  u = (cos * dx + sin * dy) / size[:, None, None]
  v = (-sin * dx + cos * dy) / size[:, None, None]
  alpha = _bilinear(digit / 16.0, (v + 0.5) * 8 - 0.5, (u + 0.5) * 8 - 0.5)[..., None]
  video = background[None] * (1 - alpha) + colour * alpha
  return np.clip(np.rint(video), 0, 255).astype(np.uint8)


class MovingDigits(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Records: video (mp4 bytes), label (motion), path ('<split>/<index>')."""

  name = "moving_digits"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "16×64×64 H.264 clips; 2048 / 256 / 256 videos."}

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=tfds.features.FeaturesDict({
            "video": tfds.features.Tensor(shape=(), dtype=np.object_),
            "label": tfds.features.ClassLabel(names=MOTIONS),
            "path": tfds.features.Text(),
        }),
        metadata=tfds.core.MetadataDict(frames=FRAMES, size=SIZE, seed=SEED))

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing to download
    return {split: self._generate_examples(split, n) for split, n in SPLITS.items()}

  def _generate_examples(self, split: str, num_videos: int):
    make = functools.partial(clip, split)
    # Spawned worker processes (the caller may run JAX threads, which fork breaks):
    # each clip depends only on its index, so the order of work does not matter.
    with multiprocessing.get_context("spawn").Pool(os.cpu_count() or 1) as pool:
      for index, video in enumerate(pool.imap(make, range(num_videos), chunksize=64)):
        yield index, {"video": video, "label": index % len(MOTIONS),
                      "path": f"{split}/{index}"}


@functools.cache
def _digits(split: str) -> np.ndarray:
  """The 8×8 digit scans of a split."""
  from sklearn.datasets import load_digits  # only the build needs scikit-learn
  images = load_digits().images
  return images[[i for i in range(len(images)) if DIGIT_SPLIT[i % 10] == split]]


def clip(split: str, index: int) -> bytes:
  """Clip `index` of `split` as mp4 bytes; its label is index % 8."""
  rng = np.random.default_rng([SEED, list(SPLITS).index(split), index])
  digits = _digits(split)
  digit = digits[rng.integers(len(digits))]
  return decode.encode(render(digit, index % len(MOTIONS), rng))
