"""TFDS builders for datasets the user has on disk, in the official list formats.

Video datasets (k400, ucf101, hmdb51): `--manual_dir` holds `train.csv`,
`val.csv` and/or `test.csv`, one video per line, `<path> <label>` separated by a
space, the path absolute or relative to the list's folder (mp4, webm, avi…).
SSV2 (ssv2): either its videos as released (`<path.webm> <label>`, as above) or
raw frames, `<folder> <total_frames> <label>` with frames named `img_00001.jpg`…
inside each folder (as the AMD code reads them); each list is read by its number
of columns, and a build holds one kind of record (videos and frame lists mix only
when `short_side` re-encodes both). Each list present becomes a split of the same name.

Records: video (encoded bytes) or frames (one JPEG per frame), label, path.
Videos are stored as they are, or re-encoded (H.264, short side `short_side`,
a keyframe every `keyint` frames) when `short_side` is set: decoding a clip in
the middle of a long video then starts at a near keyframe, which is what makes
K400 decoding cheap enough (docs/design.md#targets). `validate` demuxes every file and
leaves the broken ones out; either way unreadable files go to `bad_files.txt`
next to the prepared data, each once. Re-encoding and validation run in `workers`
processes. The lists and the files they name are the build's source
(builders/manual.py): a frame folder by its listing, a video by its size and mtime.
"""

from __future__ import annotations

import functools
import json
import logging
import os

import av
import numpy as np
import tensorflow_datasets as tfds

from amd_jax import errors
from amd_jax.data import decode, transforms
from amd_jax.data.builders import manual

log = logging.getLogger("amd_jax")

SPLITS = ("train", "val", "test")
SSV2_FPS = 12                    # the rate SSV2's frames were extracted at
SSV2_VIDEO = "videos/74225.webm 140"
SSV2_FRAMES = "frames/74225 62 140"


def read_list(path: str, columns: int, example: str) -> list[tuple[str, list[int]]]:
  """[(absolute path, integer columns)] of a list file; a bad line is one BadInput line."""
  root = os.path.dirname(os.path.abspath(path))
  out = []
  with open(path) as f:
    for number, line in enumerate(f, 1):
      if not line.strip():
        continue
      # rsplit: the numbers are the last columns, a path may hold spaces.
      parts = line.strip().rsplit(None, columns - 1)
      try:
        if len(parts) != columns:
          raise ValueError
        numbers = [int(x) for x in parts[1:]]
      except ValueError:
        raise errors.BadInput(f"{path}:{number}: expected '{example}', got "
                              f"{line.strip()!r}") from None
      out.append((os.path.join(root, parts[0]), numbers))
  return out


def _names_frames(line: str) -> bool:
  """Whether a list line is `<folder> <total_frames> <label>`: its last two fields are
  integers (a video's path ends in its extension)."""
  parts = line.split()
  return len(parts) >= 3 and parts[-1].isdigit() and parts[-2].isdigit()


def list_columns(path: str) -> int:
  """3 when the SSV2 list `path` names frame folders, 2 when it names videos; a list
  that names both is one BadInput line."""
  first = {}                     # kind → (line number, line) of its first line
  with open(path) as f:
    for number, line in enumerate(f, 1):
      if line.strip():
        first.setdefault(_names_frames(line), (number, line.strip()))
  if len(first) == 2:
    raise errors.BadInput(
        f"{path} names videos (line {first[False][0]}: {first[False][1]!r}) and frame "
        f"folders (line {first[True][0]}: {first[True][1]!r}): a list names either videos "
        f"like '{SSV2_VIDEO}' or frame folders like '{SSV2_FRAMES}'")
  return 3 if True in first else 2


def _shrink(frames: np.ndarray, short_side: int) -> np.ndarray:
  """Short side to `short_side` (PIL bilinear, antialiased), both sides even for H.264."""
  h, w = frames.shape[1:3]
  scale = short_side / min(h, w)
  return transforms.resize_pil(frames, max(2, round(h * scale / 2) * 2),
                               max(2, round(w * scale / 2) * 2))


def _reencode(data: bytes, short_side: int, keyint: int) -> bytes:
  with decode.Video(data) as video:
    frames = video.frames(range(video.num_frames))
    fps = round(video.fps) or 25
  return decode.encode(_shrink(frames, short_side), fps=fps, keyint=keyint)


def video_record(path: str, numbers: list[int], short_side: int, keyint: int,
                 validate: bool) -> bytes:
  """The stored bytes of one video file (as is, or re-encoded)."""
  with open(path, "rb") as f:
    data = f.read()
  if short_side:
    return _reencode(data, short_side, keyint)
  if validate:
    decode.Video(data).close()
  return data


def frames_record(path: str, numbers: list[int], short_side: int, keyint: int,
                  validate: bool) -> list[bytes] | bytes:
  """One SSV2 frame folder: its JPEGs as they are, or one re-encoded video."""
  total = numbers[0]
  images = []
  for i in range(1, total + 1):
    with open(os.path.join(path, f"img_{i:05d}.jpg"), "rb") as f:
      images.append(f.read())
  if short_side:
    frames = decode.jpeg_frames(images, range(total))
    return decode.encode(_shrink(frames, short_side), fps=SSV2_FPS, keyint=keyint)
  if validate:
    decode.jpeg_frames(images, range(total))
  return images


def ssv2_record(path: str, numbers: list[int], short_side: int, keyint: int,
                validate: bool) -> list[bytes] | bytes:
  """One SSV2 entry: a frame folder (numbers: total frames, label) or a video (label)."""
  read = frames_record if len(numbers) == 2 else video_record
  return read(path, numbers, short_side, keyint, validate)


def _load(read, options: tuple, entry: tuple[str, list[int]]):
  """(path, label, record or None, error text): one list entry, in a worker process."""
  path, numbers = entry
  try:
    return path, numbers[-1], read(path, numbers, *options), ""
  except (OSError, decode.Undecodable, av.FFmpegError) as e:
    return path, numbers[-1], None, str(e)


class _ListBuilder(manual.ManualBuilder, skip_registration=True):
  """Shared by every list-based builder; subclasses set the layout."""

  VERSION = tfds.core.Version("1.0.0")
  NUM_CLASSES = 0
  COLUMNS = 2                    # <path> <label>
  RECORD = "video"
  EXAMPLE = "abseiling/0wR5jVB-WPk_000417_000427.mp4 0"
  MANUAL_DIR = "DIR_WITH_LISTS"
  OPTIONS = ("short_side", "keyint", "validate", "workers")     # the build flags that apply

  def __init__(self, *, short_side: int = 0, keyint: int = 16, validate: bool = False,
               workers: int = 1, **kwargs):
    self.short_side, self.keyint, self.validate = short_side, keyint, validate
    self.workers = workers
    super().__init__(**kwargs)

  read = staticmethod(video_record)

  @classmethod
  def layout(cls) -> str:
    return (f"{cls.name}: expected train.csv, val.csv and/or test.csv in the manual dir, "
            f"one line per {'frame folder' if cls.COLUMNS == 3 else 'video'} like "
            f"'{cls.EXAMPLE}'")

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=tfds.features.FeaturesDict({
            self.RECORD: tfds.features.Tensor(
                shape=(None,) if self.RECORD == "frames" else (), dtype=np.object_),
            "label": tfds.features.ClassLabel(num_classes=self.NUM_CLASSES),
            "path": tfds.features.Text(),
        }),
        metadata=tfds.core.MetadataDict(short_side=self.short_side, keyint=self.keyint))

  @staticmethod
  def _lists(root: str) -> dict[str, str]:
    """{split: its list file} of the lists present in `root`."""
    return {s: os.path.join(root, f"{s}.csv") for s in SPLITS
            if os.path.isfile(os.path.join(root, f"{s}.csv"))}

  def _columns(self, path: str) -> int:
    return self.COLUMNS

  def _entries(self, root: str) -> dict[str, list[tuple[str, list[int]]]]:
    return {s: read_list(p, self._columns(p), self.EXAMPLE) for s, p in self._lists(root).items()}

  def source_files(self, manual_dir: str) -> list[str]:
    lists = self._lists(manual_dir)
    media = dict.fromkeys(p for rows in self._entries(manual_dir).values() for p, _ in rows)
    return list(lists.values()) + list(media)

  def _split_generators(self, dl_manager):
    root = str(dl_manager.manual_dir)
    lists = self._lists(root)
    if not lists:
      raise errors.BadInput(f"no list in {root}; " + self.layout())
    entries = self._entries(root)
    for split, rows in entries.items():
      if rows and not any(os.path.exists(p) for p, _ in rows):
        raise errors.BadInput(f"none of the {len(rows)} paths in {lists[split]} exists "
                              f"(first: {rows[0][0]}); " + self.layout())
      bad = [(p, n) for p, n in rows if not 0 <= n[-1] < self.NUM_CLASSES]
      if bad:
        raise errors.BadInput(f"{lists[split]}: label {bad[0][1][-1]} of {bad[0][0]} is "
                              f"outside 0..{self.NUM_CLASSES - 1}")
    self._bad_files = os.path.join(self.data_dir, "bad_files.txt")
    self._listed = set()           # a file in several lists is listed once
    return {s: self._generate_examples(rows, lists[s]) for s, rows in entries.items()}

  def _generate_examples(self, rows, list_file: str):
    load = functools.partial(_load, self.read, (self.short_side, self.keyint, self.validate))
    workers = self.workers if self.short_side or self.validate else 1
    yield from self._examples(self.load_each(load, rows, workers=workers, chunksize=2), list_file)

  def _examples(self, loaded, list_file: str):
    kept, first_bad = 0, ""
    for key, (path, label, record, error) in enumerate(loaded):
      if record is None:
        first_bad = first_bad or f"{path}: {error}"
        log.warning("left out %s: %s", path, error)
        if path not in self._listed:
          self._listed.add(path)
          with open(self._bad_files, "a") as f:
            f.write(path + "\n")
        continue
      kept += 1
      yield key, {self.RECORD: record, "label": label, "path": path}
    if not kept:
      raise errors.BadInput(f"none of the files in {list_file} can be read (first: "
                            f"{first_bad}): a split needs at least one")


class K400(_ListBuilder, skip_registration=True):
  """Kinetics-400 videos from train.csv / val.csv / test.csv."""

  name = "k400"
  NUM_CLASSES = 400


class Ucf101(_ListBuilder, skip_registration=True):
  """UCF101 videos (one official split) from train.csv / val.csv / test.csv."""

  name = "ucf101"
  NUM_CLASSES = 101
  EXAMPLE = "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 0"


class Hmdb51(_ListBuilder, skip_registration=True):
  """HMDB51 videos (one official split) from train.csv / val.csv / test.csv."""

  name = "hmdb51"
  NUM_CLASSES = 51
  EXAMPLE = "brush_hair/April_09_brush_hair_u_nm_np1_ba_goo_0.avi 0"


class Ssv2(_ListBuilder, skip_registration=True):
  """Something-Something v2: lists of its .webm videos (`<path> <label>`) or of raw
  JPEG frame folders (`<folder> <total_frames> <label>`).

  With `short_side` both are re-encoded to one H.264 video per clip.
  """

  name = "ssv2"
  NUM_CLASSES = 174
  COLUMNS = 3
  EXAMPLE = SSV2_FRAMES

  @classmethod
  def layout(cls) -> str:
    return (f"{cls.name}: expected train.csv, val.csv and/or test.csv in the manual dir, "
            f"one line per video like '{SSV2_VIDEO}' or per frame folder like "
            f"'{SSV2_FRAMES}'")

  def _columns(self, path: str) -> int:
    return list_columns(path)

  @functools.cached_property
  def RECORD(self):  # noqa: N802
    """'video' or 'frames': what the lists name when building (re-encoded: always a
    video), what the prepared features hold when opening."""
    if self.short_side:
      return "video"
    if self.manual_dir:
      kinds = {split: self._columns(path) for split, path in self._lists(self.manual_dir).items()}
      if len(set(kinds.values())) == 2:
        videos = [s for s, c in kinds.items() if c == 2]
        frames = [s for s, c in kinds.items() if c == 3]
        raise errors.BadInput(
            f"{self.name} lists in {self.manual_dir} name videos ({', '.join(videos)}) and "
            f"frame folders ({', '.join(frames)}): use one kind in every list, or give "
            "--short_side to re-encode both to videos")
      return "frames" if 3 in kinds.values() else "video"
    features = os.path.join(self.data_dir, "features.json")
    if os.path.isfile(features):
      with open(features) as f:
        stored = json.load(f)["featuresDict"]["features"]
      return "video" if "video" in stored else "frames"
    return "frames"

  read = staticmethod(ssv2_record)
