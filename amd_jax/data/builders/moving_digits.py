"""moving_digits: the embedded dataset, real handwritten digits whose label is their motion.

Each clip is 16 RGB frames of 64×64: two of scikit-learn's bundled 8×8
handwritten digits (`load_digits`, 1,797 real scans, no download), scaled up and
coloured, move over a one-colour background by one of eight motions — left, right,
up, down, zoom in, zoom out, rotate clockwise, rotate counter-clockwise — both
the same way. The label is the motion, not the digits, so a single frame does
not tell the class (as in SSV2): positions and angles are uniform, so one frame
shows where the digits are but not where they go.

The background is one colour whose light flickers: FLICKER grey levels up for
two frames, down for the next two, in a phase drawn per clip. Pre-training
(every other frame) and fine-tuning (one frame of each pair) both see the light
alternate between the two frames of every tubelet, so under per-patch
normalisation every tube of background has the same exact target, ±1 in its two
frames with the clip's phase as sign: a hidden tube of background follows from
any visible one, but only for a model that reads the phase there (a prediction
of 0 scores 1 on it, copying a neighbour fails wherever the neighbour holds a
digit). To a classifier the flicker is one offset per clip, with no trend, so it
does not compete with the motion. The flicker is what lets masked pre-training
be told from a prediction of 0: the hidden strokes of the digits cannot be
inferred from the few visible tubes (3.0.0, with a still background, left every
model at the zero predictor's loss). Earlier versions hid the digits in structure
that normalisation turns into noise: an i.i.d. texture (1.0.0) and a faint
brightness ramp (2.0.0), whose patches differ by a few grey levels, as much as
H.264 changes them.

Clips are stored as H.264 mp4 bytes so the real decoding path runs. Every clip
is a pure function of (seed, split, index) and the splits draw on disjoint
digit images. Builds in about 30 s on 2 cores (rendering and H.264 encoding).
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import sys

import numpy as np
import tensorflow_datasets as tfds

from amd_jax.data import decode

MOTIONS = ("left", "right", "up", "down", "zoom_in", "zoom_out", "rotate_cw", "rotate_ccw")
FRAMES, SIZE = 16, 64
SPLITS = {"train": 2048, "val": 256, "test": 256}
# Digit image i belongs to split DIGIT_SPLIT[i % 10]: 80% / 10% / 10%, disjoint.
DIGIT_SPLIT = ("train",) * 8 + ("val", "test")
SEED = 0
NUM_DIGITS = 2                   # sprites per clip, all moving by the clip's motion
SPRITE = (0.3, 0.4)              # sprite side, fraction of the frame
TRAVEL = 0.35                    # a translation's path over the clip, fraction of the frame
BACK_LOW, BACK_HIGH = 20, 90     # the background's colour, per channel
FLICKER = 5.0                    # the background's light: ± grey levels, 2 frames each way


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


def render(digits: np.ndarray, label: int, rng: np.random.Generator) -> np.ndarray:
  """uint8 (FRAMES, SIZE, SIZE, 3): `digits` (n × 8×8, values 0..16) moving by MOTIONS[label]."""
  t, s = FRAMES, SIZE
  k = np.arange(t) / (t - 1) - 0.5                      # -0.5 … 0.5 over the clip
  base = rng.uniform(BACK_LOW, BACK_HIGH, 3)
  light = rng.choice((-1, 1)) * FLICKER * np.where(np.arange(t) % 4 < 2, 1, -1)
  video = np.broadcast_to(base + light[:, None, None, None], (t, s, s, 3)).copy()
  yy, xx = np.mgrid[0:s, 0:s].astype(np.float64) + 0.5
  motion = MOTIONS[label]
  for digit in digits:
    colour = rng.uniform(160, 255, 3)
    # No single frame tells a translation's or rotation's direction: the position
    # is uniform on the frame, which wraps around like a torus (a digit leaving on
    # the right comes back on the left), and the angle is uniform. A zoom's
    # direction shows in one frame only through the digit's size near the clip's ends.
    cx = np.full(t, rng.uniform(0, s))
    cy = np.full(t, rng.uniform(0, s))
    size = np.full(t, s * rng.uniform(*SPRITE))          # sprite side in pixels
    angle = np.full(t, rng.uniform(0, 2 * np.pi))
    if motion in ("left", "right"):
      cx = cx + k * TRAVEL * s * (1 if motion == "right" else -1)
    elif motion in ("up", "down"):
      cy = cy + k * TRAVEL * s * (1 if motion == "down" else -1)
    elif motion in ("zoom_in", "zoom_out"):
      size = size * np.exp(k * 1.0 * (1 if motion == "zoom_in" else -1))
    else:
      angle = angle + k * np.pi * 0.75 * (1 if motion == "rotate_cw" else -1)
    # Inverse-map every output pixel into the digit's 8×8 grid (y down, so a
    # positive angle turns clockwise on screen), through the shortest way around
    # the torus (a sprite, under 0.4 × 1.65 of the frame, never meets itself).
    dx = (xx[None] - cx[:, None, None] + s / 2) % s - s / 2
    dy = (yy[None] - cy[:, None, None] + s / 2) % s - s / 2
    cos, sin = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None]
    u = (cos * dx + sin * dy) / size[:, None, None]
    v = (-sin * dx + cos * dy) / size[:, None, None]
    alpha = _bilinear(digit / 16.0, (v + 0.5) * 8 - 0.5, (u + 0.5) * 8 - 0.5)[..., None]
    video = video * (1 - alpha) + colour * alpha
  return np.clip(np.rint(video), 0, 255).astype(np.uint8)


class MovingDigits(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Records: video (mp4 bytes), label (motion), path ('<split>/<index>')."""

  name = "moving_digits"
  VERSION = tfds.core.Version("4.0.0")
  RELEASE_NOTES = {
      "1.0.0": "16×64×64 H.264 clips; 2048 / 256 / 256 videos; i.i.d. 2×2-pixel background texture.",
      "2.0.0": ("A brightness ramp as background (predictable under tube masking and per-patch "
                "normalisation); larger digits, uniform positions on a torus and angles."),
      "3.0.0": ("Two digits per clip on a flat background (a ramp's normalised patches were "
                "H.264 noise: no model learnt to reconstruct them); fine-tuning learns again."),
      "4.0.0": ("The background's light flickers ±5 grey levels every two frames, in a phase "
                "per clip: hidden tubes of background are inferable only by reading it."),
  }

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

  # TFDS would print "Downloading and preparing dataset Unknown size ..." and
  # "... downloaded and prepared": nothing is downloaded, the clips are rendered.
  def _log_download_bytes(self) -> None:
    print(f"building the embedded dataset {self.name} {self.version} in {self.data_dir} "
          "(once, about 30 s on 2 cores)", file=sys.stderr, flush=True)

  def _log_download_done(self) -> None:
    print(f"built {self.name} {self.version}", file=sys.stderr, flush=True)

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


def frames(split: str, index: int) -> np.ndarray:
  """Clip `index` of `split` as rendered, uint8 (FRAMES, SIZE, SIZE, 3); its label is index % 8."""
  rng = np.random.default_rng([SEED, list(SPLITS).index(split), index])
  digits = _digits(split)
  return render(digits[rng.integers(len(digits), size=NUM_DIGITS)], index % len(MOTIONS), rng)


def clip(split: str, index: int) -> bytes:
  """Clip `index` of `split` as stored: lossless H.264 mp4 bytes of `frames`.

  Lossless (crf 0, 11 KB a clip): at the default crf 18 the blocks around the
  moving digits leave 1–3 grey levels of noise in 6–36% of the background's
  flat tubelets, which per-patch normalisation would turn into unit-variance,
  unpredictable targets.
  """
  return decode.encode(frames(split, index), crf=0)
