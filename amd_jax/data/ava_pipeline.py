"""AVA clips with their people: box geometry, colour jitter, the train and test
samples and the training batches (docs/method.md#ava-action-detection). The
records are amd_jax/data/builders/ava.py's.

`TrainSample` / `ava_train_batches` (ground-truth boxes, short side 256, random
224 crop, HSV jitter, flip, box jitter) and `TestSample` / `pipeline.eval_dataset`
(short side 256 on a fixed 256×464 canvas, proposals with score ≥ 0.8 enlarged
10% × 5%), with boxes padded to `max_boxes` and a validity mask. Box geometry
follows alphaction's BoxList on inclusive pixel boxes (x2_px = x2·W − 1) and is
returned normalised on the clip's frame with the inverse, which is what
amd_jax/models/roi.Detector expects.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import grain
import numpy as np

from amd_jax import normalization
from amd_jax.data import decode, pipeline, transforms
from amd_jax.data.builders import ava

log = logging.getLogger("amd_jax")

# Test canvases are padded with the mean, i.e. zeros after normalisation (what
# alphaction's batch padding of normalised clips gives).
PAD = np.rint(np.array(normalization.AVA_MEAN) * 255).astype(np.uint8)


# ---------------------------------------------------------------- boxes (alphaction's BoxList)
# Pixel boxes are inclusive (x2 is the last pixel column): normalised x2 → x2·W − 1.

def to_pixels(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
  return boxes * np.array([width, height, width, height]) - np.array([0, 0, 1, 1])


def to_normalised(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
  return (pixels + np.array([0, 0, 1, 1])) / np.array([width, height, width, height])


def clip_to_image(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
  return np.clip(pixels, 0, np.array([width - 1, height - 1, width - 1, height - 1]))


def crop_boxes(pixels: np.ndarray, top: int, left: int, size: int) -> np.ndarray:
  """Boxes in a size × size crop at (top, left): shifted, clamped to [0, size] (a box
  outside the crop becomes a flat box on its border and is kept, as officially)."""
  return np.clip(pixels - np.array([left, top, left, top]), 0, size)


def flip_boxes(pixels: np.ndarray, width: int) -> np.ndarray:
  x1, y1, x2, y2 = pixels.T
  return np.stack([width - x2 - 1, y1, width - x1 - 1, y2], -1)


def jitter_boxes(pixels: np.ndarray, rng: np.random.Generator, height: int, width: int,
                 x_out: float = 0.2, x_in: float = 0.1, y_out: float = 0.1,
                 y_in: float = 0.05) -> np.ndarray:
  """BoxList.random_aug: each side moves by up to `out`/`in` of the box size outwards /
  inwards, then x1, y1 stay a pixel inside the image and x2, y2 a pixel past them."""
  x1, y1, x2, y2 = pixels.T
  w, h = x2 - x1 + 1, y2 - y1 + 1
  n = len(pixels)
  x1 = np.clip(x1 + w * rng.uniform(-x_out, x_in, n), 0, width - 2)
  y1 = np.clip(y1 + h * rng.uniform(-y_out, y_in, n), 0, height - 2)
  x2 = np.maximum(np.minimum(x2 + w * rng.uniform(-x_in, x_out, n), width - 1), x1 + 1)
  y2 = np.maximum(np.minimum(y2 + h * rng.uniform(-y_in, y_out, n), height - 1), y1 + 1)
  return clip_to_image(np.stack([x1, y1, x2, y2], -1), height, width)


def extend_boxes(pixels: np.ndarray, height: int, width: int, x_scale: float = 0.1,
                 y_scale: float = 0.05) -> np.ndarray:
  """BoxList.extend: each side moves out by scale/2 of the (inclusive) box size, clipped."""
  x1, y1, x2, y2 = pixels.T
  pad_x, pad_y = x_scale * (x2 - x1 + 1) / 2, y_scale * (y2 - y1 + 1) / 2
  return clip_to_image(np.stack([x1 - pad_x, y1 - pad_y, x2 + pad_x, y2 + pad_y], -1),
                       height, width)


# ---------------------------------------------------------------- colour

def rgb_to_hsv(clip: np.ndarray) -> np.ndarray:
  """uint8 RGB → int32 HSV with OpenCV's 8-bit ranges: H 0..179 (2° steps), S, V 0..255."""
  c = clip.astype(np.float32)
  r, g, b = c[..., 0], c[..., 1], c[..., 2]
  v = np.maximum(np.maximum(r, g), b)
  diff = v - np.minimum(np.minimum(r, g), b)
  # Hue in degrees, max channel first red then green (OpenCV's order on ties);
  # a grey pixel has diff 0 and a zero numerator: hue 0.
  h = np.where(v == r, g - b, np.where(v == g, b - r + 2 * diff, r - g + 4 * diff))
  h = h * (60 / np.maximum(diff, 1))
  h = np.where(h < 0, h + 360, h)
  s = diff * 255 / np.maximum(v, 1)
  return np.stack([np.rint(h / 2) % 180, np.rint(s), v], -1).astype(np.int32)


def hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
  """OpenCV-range HSV (as `rgb_to_hsv`) → uint8 RGB.

  Channel n of (R, G, B) = (5, 3, 1) is V − V·S·clip(min(k, 4 − k), 0, 1) with
  k = (n + H/60°) mod 6: the sextant formula without the per-sextant table.
  """
  sextant = hsv[..., 0].astype(np.float32) / 30
  v = hsv[..., 2].astype(np.float32)
  vs = v * hsv[..., 1].astype(np.float32) / 255
  out = []
  for n in (5, 3, 1):
    k = (sextant + n) % 6
    out.append(v - vs * np.clip(np.minimum(k, 4 - k), 0, 1))
  return np.clip(np.rint(np.stack(out, -1)), 0, 255).astype(np.uint8)


def color_jitter(clip: np.ndarray, rng: np.random.Generator, hue: float = 20.0,
                 saturation: float = 0.1, value: float = 0.1) -> np.ndarray:
  """alphaction's ColorJitter(hue 20, sat 0.1, val 0.1): one integer shift per clip of
  H by ±hue/2 (cyclic over 180), of S and V by ±round(x·255) (clipped), in HSV."""
  hsv = rgb_to_hsv(clip)
  bounds = (int(round(hue / 2)), int(round(saturation * 255)), int(round(value * 255)))
  shift = [int(rng.integers(-b, b + 1)) for b in bounds]
  hsv[..., 0] = (hsv[..., 0] + shift[0] + 180) % 180
  hsv[..., 1] = np.clip(hsv[..., 1] + shift[1], 0, 255)
  hsv[..., 2] = np.clip(hsv[..., 2] + shift[2], 0, 255)
  return hsv_to_rgb(hsv)


# ---------------------------------------------------------------- samples

def _pad(n: int, **arrays: np.ndarray) -> dict:
  """Each array (k, ...) with k ≤ n zero-padded to (n, ...), plus box_valid (n,)."""
  out = {}
  for name, a in arrays.items():
    out[name] = np.zeros((n,) + a.shape[1:], a.dtype)
    out[name][:len(a)] = a
  k = len(next(iter(arrays.values())))
  out["box_valid"] = np.arange(n) < k
  return out


def _clip(record: dict) -> np.ndarray:
  images = record["frames"]
  return decode.jpeg_frames(images, range(len(images)))


def _name(record: dict) -> str:
  video = record["video_id"]
  return f"{video.decode() if isinstance(video, bytes) else video},{int(record['timestamp']):04d}"


def _report(bad_files: str | None, record: dict, error: Exception) -> None:
  log.warning("skipped undecodable AVA clip %s: %s", _name(record), error)
  if bad_files:
    pipeline.list_bad_file(bad_files, _name(record))


@dataclasses.dataclass(frozen=True)
class TrainSample:
  """One record → one training clip with its ground-truth people
  (docs/method.md#ava-action-detection).

  VideoMAE-AVA's order: short side `short_side` (bilinear, from the original
  frame size), random size × size crop, HSV colour jitter, horizontal flip
  (p 0.5), then at most `max_boxes` people (a random subset beyond, as its
  100-box cap) whose boxes are jittered (`BoxList.random_aug(0.2, 0.1, 0.1,
  0.05)`). Output, with a leading axis of 1 (one clip per record):
  video uint8 (1, T, size, size, 3), boxes float32 (1, max_boxes, 4)
  normalised on the crop (roi.Detector's convention), labels uint8
  (1, max_boxes, 80), box_valid bool (1, max_boxes), skipped int32 (1,).
  An undecodable record is replaced by a random other one (pipeline.Decoder's rule).
  """

  source: Any
  max_boxes: int = 32
  size: int = 224
  short_side: int = 256
  color: bool = True
  flip: bool = True
  box_jitter: bool = True
  bad_files: str | None = None

  def _decoded(self, record: dict, rng: np.random.Generator):
    return pipeline.decode_or_substitute(self.source, record, rng, _clip,
                                         lambda r, e: _report(self.bad_files, r, e), _name)

  def __call__(self, record: dict, rng: np.random.Generator) -> dict:
    record, clip, skipped = self._decoded(record, rng)
    height, width = (int(x) for x in record["size"])
    oh, ow = transforms.short_side_size(height, width, self.short_side)
    clip = transforms.resize_bilinear(clip, oh, ow)
    boxes = clip_to_image(to_pixels(record["boxes"], height, width), height, width)
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    boxes, labels = boxes[keep] * np.array([ow / width, oh / height] * 2), record["labels"][keep]
    top = int(rng.uniform() * (oh - self.size))
    left = int(rng.uniform() * (ow - self.size))
    clip = clip[:, top:top + self.size, left:left + self.size]
    boxes = crop_boxes(boxes, top, left, self.size)
    if self.color:
      clip = color_jitter(clip, rng)
    if self.flip and rng.uniform() < 0.5:
      clip, boxes = clip[:, :, ::-1], flip_boxes(boxes, self.size)
    if len(boxes) > self.max_boxes:
      chosen = rng.permutation(len(boxes))[:self.max_boxes]
      boxes, labels = boxes[chosen], labels[chosen]
    if self.box_jitter:
      boxes = jitter_boxes(boxes, rng, self.size, self.size)
    out = _pad(self.max_boxes, boxes=to_normalised(boxes, self.size, self.size).astype(np.float32),
               labels=labels.astype(np.uint8))
    out = dict(out, video=np.ascontiguousarray(clip), skipped=np.int32(skipped))
    return {k: np.asarray(v)[None] for k, v in out.items()}


def fit_size(height: int, width: int, short_side: int, canvas: tuple[int, int]
             ) -> tuple[int, int]:
  """(h, w): short side `short_side` (VideoMAE-AVA's test resize), shrunk to fit the
  canvas if the long side would not (only for frames wider than the canvas allows)."""
  oh, ow = transforms.short_side_size(height, width, short_side)
  if oh > canvas[0] or ow > canvas[1]:
    scale = min(canvas[0] / oh, canvas[1] / ow)
    oh, ow = int(oh * scale), int(ow * scale)
  return oh, ow


@dataclasses.dataclass(frozen=True)
class TestSample:
  """One record → its test clip and person proposals, deterministic
  (docs/method.md#ava-action-detection).

  The clip, short side `short_side` with the aspect kept, sits at the top left
  of a fixed canvas (height, width) padded with the mean colour (256 × 464 holds
  16:9 at 455 px; VideoMAE-AVA pads its batches the same way, to multiples of
  16). Proposals scoring ≥ `box_threshold` (highest first, at most `max_boxes`)
  are clipped to the frame and enlarged by 10% × 5% (`BoxList.extend`).
  Output: video uint8 (T, height, width, 3); boxes float32 (max_boxes, 4), the
  enlarged boxes normalised on the canvas (roi.Detector's input); proposals
  float32 (max_boxes, 4), the same boxes as detections (clipped, not enlarged,
  normalised on the frame: ava_map.detections); scores float32 (max_boxes,);
  box_valid bool (max_boxes,); video_index, timestamp int32; excluded, valid
  bool; skipped int32 (1: undecodable, `valid` False).
  """

  max_boxes: int = 32
  short_side: int = 256
  height: int = 256
  width: int = 464
  box_threshold: float = 0.8
  bad_files: str | None = None

  def __call__(self, record: dict, index: int | None = None) -> dict:
    del index  # pipeline.eval_dataset passes the record's position; the clip ignores it
    height, width = (int(x) for x in record["size"])
    scores = record["proposal_scores"]
    order = np.argsort(-scores, kind="stable")
    order = order[scores[order] >= self.box_threshold]
    pixels = clip_to_image(to_pixels(record["proposals"][order], height, width), height, width)
    keep = (pixels[:, 2] > pixels[:, 0]) & (pixels[:, 3] > pixels[:, 1])
    pixels, scores = pixels[keep][:self.max_boxes], scores[order][keep][:self.max_boxes]
    oh, ow = fit_size(height, width, self.short_side, (self.height, self.width))
    boxes = extend_boxes(pixels * np.array([ow / width, oh / height] * 2), oh, ow)
    out = _pad(self.max_boxes,
               boxes=to_normalised(boxes, self.height, self.width).astype(np.float32),
               proposals=np.clip(to_normalised(pixels, height, width), 0, 1).astype(np.float32),
               scores=scores.astype(np.float32))
    canvas = np.empty((ava.FRAMES, self.height, self.width, 3), np.uint8)
    canvas[...] = PAD
    try:
      canvas[:, :oh, :ow] = transforms.resize_bilinear(_clip(record), oh, ow)
      valid = True
    except decode.Undecodable as e:
      _report(self.bad_files, record, e)
      valid = False
      out["box_valid"][:] = False
    return dict(out, video=canvas, video_index=np.int32(record["video_index"]),
                timestamp=np.int32(record["timestamp"]),
                excluded=np.bool_(record["excluded"]), valid=np.bool_(valid),
                skipped=np.int32(not valid))

  def blank(self) -> dict:
    """A batch-padding element: the output's shapes, no valid box, valid False."""
    none = np.zeros((0, 4), np.float32)
    out = _pad(self.max_boxes, boxes=none, proposals=none, scores=np.zeros(0, np.float32))
    return dict(out, video=np.zeros((ava.FRAMES, self.height, self.width, 3), np.uint8),
                video_index=np.int32(0), timestamp=np.int32(0), excluded=np.bool_(False),
                valid=np.bool_(False), skipped=np.int32(0))


# ---------------------------------------------------------------- pipelines

def ava_train_batches(records, sample: TrainSample, global_batch: int, seed: int, *,
                      process_index: int = 0, process_count: int = 1) -> grain.MapDataset:
  """Endless shuffled training batches of this process (global_batch / process_count
  clips): video (b, T, 224, 224, 3) uint8, boxes (b, M, 4), labels (b, M, 80) uint8,
  box_valid (b, M), skipped (b,). Resumable and process-count independent as
  pipeline.training_batches."""
  pipeline.check_batch("batch_size", global_batch, processes=process_count)
  return pipeline.training_batches(records, sample, global_batch // process_count, seed,
                                   process_index=process_index, process_count=process_count)
