"""Which frames a clip takes: the official temporal sampling rules (docs/method.md#data-pipeline).

Every function returns int64 frame indices into a video of `n` frames, numbered
from 0 in presentation order; random rules draw from the numpy Generator they
are given. Each docstring names the official function it reproduces.
"""

from __future__ import annotations

import numpy as np


def dense(rng: np.random.Generator, n: int, frames: int = 16, rate: int = 4) -> np.ndarray:
  """Pre-training on video files (K400): `frames` frames `rate` apart, random start.

  VideoMAE `_sample_train_indices` + `_video_TSN_decord_batch_loader` with one
  segment and no jitter: the start is uniform in [0, n − frames·rate]; a video
  shorter than the span starts at 0, and the clip stops advancing (repeats its
  last frame) once the next step would reach the end. With n=10, 4 frames at
  rate 4: [0, 4, 8, 8].
  """
  span = frames * rate
  # The official loop counts from 1 (`offset`) and takes frame offset − 1.
  offset = int(rng.integers(n - span + 1)) + 1 if n >= span else 1
  out = []
  for _ in range(frames):
    out.append(offset - 1)
    if offset + rate < n:
      offset += rate
  return np.asarray(out, np.int64)


def span(rng: np.random.Generator, n: int, frames: int = 16, rate: int = 2) -> np.ndarray:
  """A random window of frames·rate frames, `frames` indices spread over it by linspace.

  VideoMAE `loadvideo_decord` (mode 'train'): SSV2 pre-training (rate 2: span
  32) and K400/UCF101/HMDB51 fine-tuning (rate 4: span 64). The window ends at
  `end` uniform in [span, n − 1]; indices int(linspace(end − span, end, frames))
  clipped to end − 1. A video no longer than the span takes n // rate evenly
  spread frames, padded with its last frame.
  """
  length = frames * rate
  if n <= length:
    index = np.linspace(0, n, num=n // rate)
    index = np.concatenate([index, np.full(frames - n // rate, n)])
    return np.clip(index, 0, n - 1).astype(np.int64)
  end = int(rng.integers(length, n))
  start = end - length
  return np.clip(np.linspace(start, end, num=frames), start, end - 1).astype(np.int64)


def segments(rng: np.random.Generator, n: int, frames: int = 16) -> np.ndarray:
  """TSN sparse sampling (SSV2 fine-tuning): one random frame in each of `frames` segments.

  VideoMAE `SSVideoClsDataset` (mode 'train'): segments of n // frames frames;
  a video shorter than `frames` takes frame 0 throughout (the official sorted-
  random branch for that case is unreachable, its condition is never true).
  """
  length = n // frames
  if length == 0:
    return np.zeros(frames, np.int64)
  return np.arange(frames, dtype=np.int64) * length + rng.integers(length, size=frames)


def test_clips_dense(n: int, frames: int = 16, rate: int = 4, clips: int = 5) -> np.ndarray:
  """(clips, frames) indices of the K400 test views: every `rate`-th frame, evenly spaced clips.

  VideoMAE `VideoClsDataset` (mode 'test'): the video is decoded at every
  `rate`-th frame (padded with its last to `frames`), and clip k takes `frames`
  consecutive decoded frames starting at int(k · (F − frames) / (clips − 1)).
  """
  decoded = list(range(0, n, rate))
  decoded += [decoded[-1]] * (frames - len(decoded))
  step = max((len(decoded) - frames) / max(clips - 1, 1), 0.0)
  starts = [int(k * step) for k in range(clips)]
  return np.asarray([decoded[s:s + frames] for s in starts], np.int64)


def test_clips_segments(n: int, frames: int = 16, clips: int = 2) -> np.ndarray:
  """(clips, frames) indices of the SSV2 test views: segment starts, then segment centres.

  VideoMAE `SSVideoClsDataset` (mode 'test'): with tick = n / frames, the
  indices int(tick/2 + tick·x) and int(tick·x) are pooled, padded with the last,
  sorted, and clip k takes every `clips`-th from position k.
  """
  tick = n / frames
  pooled = ([int(tick / 2 + tick * x) for x in range(frames)]
            + [int(tick * x) for x in range(frames)])
  pooled += [pooled[-1]] * (frames * clips - len(pooled))
  pooled = np.sort(np.asarray(pooled, np.int64))
  return np.stack([pooled[k::clips][:frames] for k in range(clips)])


def crop_offsets(long_side: int, crop: int, crops: int = 3) -> list[int]:
  """Offsets of the test crops along the long side: int(c · (L − crop) / (crops − 1)).

  One crop is the centre one (the official formula divides by zero there).
  """
  if crops == 1:
    return [(long_side - crop) // 2]
  step = (long_side - crop) / (crops - 1)
  return [int(c * step) for c in range(crops)]
