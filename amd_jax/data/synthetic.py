"""Generated clips with a motion label, in memory: the runlocal and benchmark source.

A textured sprite moves over a textured background by one of eight motions
(left, right, up, down, zoom in, zoom out, rotate clockwise, rotate counter-
clockwise); the label is the motion, so no single frame tells the class. Every
clip is a pure function of (seed, index).
"""

from __future__ import annotations

import numpy as np

MOTIONS = ("left", "right", "up", "down", "zoom_in", "zoom_out", "rotate_cw", "rotate_ccw")


class SyntheticClips:
  """A random-access source of {"video": uint8 (T, H, W, 3), "label": int32} clips."""

  def __init__(self, num_videos: int, frames: int, size: int, seed: int = 0):
    self.num_videos, self.frames, self.size, self.seed = num_videos, frames, size, seed

  def __len__(self) -> int:
    return self.num_videos

  def __getitem__(self, index: int) -> dict:
    rng = np.random.default_rng([self.seed, int(index)])
    label = int(index % len(MOTIONS))
    t, s = self.frames, self.size
    # Texture finer than any patch, so per-patch normalised targets are not flat.
    background = rng.integers(0, 96, (s // 2, s // 2, 3), dtype=np.uint8)
    background = np.kron(background, np.ones((2, 2, 1), np.uint8))
    sprite = rng.integers(128, 256, (4, 4, 3), dtype=np.uint8)

    # Per-frame pose (centre, scale, angle), then inverse-map every pixel into the sprite.
    k = np.arange(t) / max(t - 1, 1)
    step = s / 4
    cx = np.full(t, s / 2 + rng.uniform(-s / 8, s / 8))
    cy = np.full(t, s / 2 + rng.uniform(-s / 8, s / 8))
    scale = np.full(t, s / 4)
    angle = np.zeros(t)
    motion = MOTIONS[label]
    if motion in ("left", "right"):
      cx = cx + (k - 0.5) * step * (1 if motion == "right" else -1)
    elif motion in ("up", "down"):
      cy = cy + (k - 0.5) * step * (1 if motion == "down" else -1)
    elif motion in ("zoom_in", "zoom_out"):
      scale = scale * (1 + (k - 0.5) * (0.8 if motion == "zoom_in" else -0.8))
    else:
      angle = (k - 0.5) * np.pi / 2 * (1 if motion == "rotate_cw" else -1)

    yy, xx = np.mgrid[0:s, 0:s].astype(np.float64)
    dx = xx[None] - cx[:, None, None]
    dy = yy[None] - cy[:, None, None]
    cos, sin = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None]
    u = (cos * dx + sin * dy) / scale[:, None, None]      # sprite coords in [-0.5, 0.5)
    v = (-sin * dx + cos * dy) / scale[:, None, None]
    inside = (np.abs(u) < 0.5) & (np.abs(v) < 0.5)
    iu = np.clip(((u + 0.5) * 4).astype(int), 0, 3)
    iv = np.clip(((v + 0.5) * 4).astype(int), 0, 3)
    video = np.where(inside[..., None], sprite[iv, iu], background[None])
    return {"video": video.astype(np.uint8), "label": np.int32(label)}
