"""A folder of the user's own videos (video_folder), labelled or not, several side by side.

`--manual_dir` holds one of:
  - class folders of videos: `jump/a.mp4`, `run/b.webm` (mp4, webm, avi, mkv, any case);
    the class is the folder's name;
  - a CSV of `path,class_name` rows (a header row is allowed: a first row whose path has
    no file extension), paths absolute or relative to the CSV's folder;
  - unlabelled videos, for pre-training only: the videos directly in the folder, or a
    CSV of paths alone.
With `train/`, `val/` and `test/` subfolders (or train.csv, val.csv and test.csv) each
becomes the split of its name; otherwise the videos form one pool, split at random
(seeded, `split_seed`) into `val_fraction`, `test_fraction` and the rest for train.

Each folder is built under its own name (`config`, the build's --name) as a TFDS
config: ROOT/video_folder/NAME/VERSION, read as dataset `video_folder/NAME`, or as
`video_folder` when only one is built. The label map, the class names in label
order, goes to classes.txt beside the records (the image folder's file); the
classification configs read num_classes from it. Records are video_lists' (video,
label, path; label -1 unlabelled): every file is demuxed while building, an
undecodable one is left out and listed in bad_files.txt.

`python -m amd_jax.data.builders.video_folder DIR` writes a folder in this layout to
try it on: clips of the embedded moving_digits as mp4 files, one class folder per
motion (DIR/left/0.mp4 …).
"""

from __future__ import annotations

import argparse
import csv
import os
import re

import numpy as np
import tensorflow_datasets as tfds

from amd_jax import errors, paths
from amd_jax.data.builders import manual, moving_digits, video_lists

EXTENSIONS = (".mp4", ".webm", ".avi", ".mkv")
UNLABELLED = -1
SPLITS = video_lists.SPLITS
_NAME = re.compile(r"[A-Za-z0-9_.-]+")


def _is_video(path: str) -> bool:
  return path.lower().endswith(EXTENSIONS) and os.path.isfile(path)


def _scan_folder(folder: str) -> list[tuple[str, str | None]]:
  """[(video path, class folder name or None)] of one folder: class folders, or loose
  videos (unlabelled); mixed or empty is one BadInput line."""
  names = sorted(n for n in os.listdir(folder) if not n.startswith("."))
  loose = [os.path.join(folder, n) for n in names if _is_video(os.path.join(folder, n))]
  classes = [n for n in names if os.path.isdir(os.path.join(folder, n))]
  if loose and classes:
    raise errors.BadInput(f"{folder} mixes videos ({os.path.basename(loose[0])}) with class "
                          f"folders ({classes[0]}/): put every video in a class folder, or "
                          "none (unlabelled, for pre-training)")
  if loose:
    return [(p, None) for p in loose]
  out = []
  for c in classes:
    videos = [os.path.join(folder, c, n) for n in sorted(os.listdir(os.path.join(folder, c)))
              if _is_video(os.path.join(folder, c, n))]
    if not videos:
      raise errors.BadInput(f"class folder {os.path.join(folder, c)} holds no video "
                            f"({', '.join(e[1:] for e in EXTENSIONS)}): add some or remove it")
    out += [(p, c) for p in videos]
  return out


def read_csv(path: str, must_exist: bool = True) -> list[tuple[str, str | None]]:
  """[(absolute path, class name or None)] of a `path,class_name` or `path` CSV; a
  malformed row, a mix of both kinds or (`must_exist`) a missing file is one BadInput
  line."""
  root = os.path.dirname(os.path.abspath(path))
  out = []
  with open(path, newline="") as f:
    for number, row in enumerate(csv.reader(f), 1):
      row = [x.strip() for x in row]
      if not any(row):
        continue
      if number == 1 and not os.path.splitext(row[0])[1]:
        continue                  # a header: every video path has an extension
      if len(row) > 2 or (len(row) == 2 and not row[1]):
        raise errors.BadInput(f"{path}:{number}: expected 'path,class_name' or 'path', got "
                              f"{','.join(row)!r}")
      video = os.path.join(root, row[0])
      if must_exist and not os.path.isfile(video):
        raise errors.BadInput(f"{path}:{number}: {video} does not exist")
      out.append((video, row[1] if len(row) == 2 else None))
  if len({label is None for _, label in out}) > 1:
    raise errors.BadInput(f"{path} mixes rows with a class and rows without: give every "
                          "video its class, or none (unlabelled, for pre-training)")
  return out


def built(data_dir: str) -> list[str]:
  """The names of the video folders prepared in `data_dir`."""
  root = os.path.join(data_dir, VideoFolder.name)
  if not os.path.isdir(root):
    return []
  return sorted(n for n in os.listdir(root) if os.path.isfile(
      os.path.join(root, n, str(VideoFolder.VERSION), "dataset_info.json")))


class VideoFolder(video_lists._ListBuilder, skip_registration=True):
  """Records: video (the file's bytes, or re-encoded), label (-1: unlabelled), path."""

  name = "video_folder"
  VERSION = tfds.core.Version("1.0.0")
  EXAMPLE = "jump/clip_001.mp4"
  MANUAL_DIR = "YOUR_VIDEOS"
  OPTIONS = ("config", "val_fraction", "test_fraction", "split_seed", "short_side",
             "keyint", "validate", "workers")

  def __init__(self, *, config: str = "", val_fraction: float = 0.1,
               test_fraction: float = 0.1, split_seed: int = 0, validate: bool = True,
               **kwargs):
    config = config or self._only_built(kwargs["data_dir"])
    if not _NAME.fullmatch(config):
      raise errors.BadInput(f"video folder name {config!r}: use letters, digits, '_', '-' "
                            "and '.' only (--name NAME; without it, the manual dir's name)")
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1
            and val_fraction + test_fraction < 1):
      raise errors.BadInput(f"--val_fraction {val_fraction} and --test_fraction "
                            f"{test_fraction} must be in [0, 1) and leave videos for train")
    self.val_fraction, self.test_fraction = val_fraction, test_fraction
    self.split_seed = split_seed
    super().__init__(config=tfds.core.BuilderConfig(name=config, version=self.VERSION),
                     validate=validate, **kwargs)

  def build_flags(self) -> list[str]:
    return ["--name", self.builder_config.name]

  @classmethod
  def _only_built(cls, data_dir: str) -> str:
    names = built(data_dir)
    if len(names) == 1:
      return names[0]
    if not names:
      raise errors.BadInput(f"no video folder is prepared in {data_dir}: build one with "
                            f"`python -m amd_jax.data.build video_folder --manual_dir "
                            f"{cls.MANUAL_DIR}`")
    raise errors.BadInput(f"{len(names)} video folders are prepared in {data_dir} "
                          f"({', '.join(names)}): pick one with "
                          f"--config.data.name=video_folder/{names[0]}")

  @classmethod
  def layout(cls) -> str:
    return (f"{cls.name}: expected class folders of videos ({', '.join(EXTENSIONS)}) like "
            f"'{cls.EXAMPLE}', or a CSV of 'path,class_name' rows, in the manual dir or in "
            "its train/, val/ and test/ (train.csv, val.csv, test.csv); videos without a "
            "class serve pre-training")

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self, description=__doc__,
        features=tfds.features.FeaturesDict({
            "video": tfds.features.Tensor(shape=(), dtype=np.object_),
            "label": tfds.features.Tensor(shape=(), dtype=np.int64),
            "path": tfds.features.Text(),
        }),
        metadata=tfds.core.MetadataDict(short_side=self.short_side, keyint=self.keyint))

  def _sources(self, root: str) -> tuple[dict[str, str], bool]:
    """split (or "pool") → the folder or CSV it is read from; whether they are CSVs."""
    lists = {s: os.path.join(root, f"{s}.csv") for s in SPLITS
             if os.path.isfile(os.path.join(root, f"{s}.csv"))}
    if lists:
      return lists, True
    folders = {s: os.path.join(root, s) for s in SPLITS if os.path.isdir(os.path.join(root, s))}
    if folders:
      return folders, False
    others = sorted(n for n in os.listdir(root) if n.lower().endswith(".csv"))
    if len(others) > 1:
      raise errors.BadInput(f"{root} holds {len(others)} CSVs ({', '.join(others)}): keep "
                            "one, or name them train.csv, val.csv and test.csv")
    if others:
      return {"pool": os.path.join(root, others[0])}, True
    return {"pool": root}, False

  def _videos(self, root: str, must_exist: bool = True
              ) -> dict[str, list[tuple[str, str | None]]]:
    """split (or "pool") → [(video path, class name or None)], every layout rule checked
    (a path a CSV names that does not exist only if `must_exist`)."""
    sources, are_csvs = self._sources(root)
    entries = {s: read_csv(p, must_exist) if are_csvs else _scan_folder(p)
               for s, p in sources.items()}
    for split, rows in entries.items():
      if not rows:
        raise errors.BadInput(f"{sources[split]} holds no video; " + self.layout())
    if len({label is None for rows in entries.values() for _, label in rows}) > 1:
      raise errors.BadInput(f"{root}: some splits have classes and some do not: give every "
                            "video its class, or none (unlabelled, for pre-training)")
    return entries

  def source_files(self, manual_dir: str) -> list[str]:
    """Every file the build reads: the CSVs first, then the videos (a path a CSV names
    that does not exist too: the fingerprint records it as missing)."""
    sources, are_csvs = self._sources(manual_dir)
    videos = sorted({p for rows in self._videos(manual_dir, must_exist=False).values()
                     for p, _ in rows})
    return (list(sources.values()) if are_csvs else []) + videos

  def pool_split(self, rows: list) -> dict[str, list]:
    """The pool's seeded split: round(fraction × videos) each for val and test (at least
    one where the fraction is not 0), the rest for train, in the pool's order."""
    n = len(rows)
    sizes = {s: max(1, round(f * n)) if f else 0
             for s, f in (("val", self.val_fraction), ("test", self.test_fraction))}
    if n - sum(sizes.values()) < 1:
      raise errors.BadInput(f"{n} videos are too few for --val_fraction {self.val_fraction} "
                            f"and --test_fraction {self.test_fraction}: lower them or add "
                            "train/, val/ and test/ folders")
    order = np.random.default_rng(self.split_seed).permutation(n)
    picked, start = {}, 0
    for split in ("val", "test"):
      picked[split] = sorted(order[start:start + sizes[split]])
      start += sizes[split]
    picked["train"] = sorted(order[start:])
    return {s: [rows[i] for i in picked[s]] for s in SPLITS if len(picked[s])}

  def _split_generators(self, dl_manager):
    root = str(dl_manager.manual_dir)
    entries = self._videos(root)
    origin, _ = self._sources(root)       # what messages name as a split's list
    # The classes: the pool's, or train's (the first split's without one), as
    # image_folder's; a class that only val or test has could never be learnt.
    first = "pool" if "pool" in entries else "train" if "train" in entries else next(
        iter(entries))
    classes = sorted({c for _, c in entries[first] if c is not None})
    for split, rows in entries.items():
      extra = sorted({c for _, c in rows if c is not None} - set(classes))
      if extra:
        raise errors.BadInput(f"{origin[split]} has class {extra[0]!r}, which {first} lacks: "
                              f"add its videos to {first} or remove them")
    pooled = "pool" in entries
    if pooled:
      entries = self.pool_split(entries["pool"])
      origin = {s: f"the {s} split of {origin['pool']}" for s in entries}
    label = {c: i for i, c in enumerate(classes)}
    if classes:
      with open(os.path.join(self.data_dir, manual.CLASSES_FILE), "w") as f:
        f.write("\n".join(classes) + "\n")
    # What the build's output line adds to the split sizes (data/build.py).
    self.info.metadata["summary"] = (
        f"{len(classes)} classes" if classes else "unlabelled (pre-training only)") + (
        f"; val and test drawn from one pool of {sum(map(len, entries.values()))} "
        f"(--val_fraction {self.val_fraction}, --test_fraction {self.test_fraction}, "
        f"--split_seed {self.split_seed})" if pooled else "")
    self._bad_files = os.path.join(self.data_dir, "bad_files.txt")
    self._listed = set()
    return {s: self._generate_examples([(p, [label[c] if c is not None else UNLABELLED])
                                        for p, c in rows], origin[s])
            for s, rows in entries.items()}


def write_demo(out_dir: str, per_class: int = 8) -> int:
  """Writes `per_class` moving_digits training clips of each motion to
  out_dir/MOTION/I.mp4 (the same files every time); returns how many. A file that
  already holds its clip is left alone: rewriting it would change its mtime, and a
  build made from the folder would then see a changed source."""
  paths.output_dir(out_dir, "the demo folder")
  count = per_class * len(moving_digits.MOTIONS)
  for index in range(count):
    folder = os.path.join(out_dir, moving_digits.MOTIONS[index % len(moving_digits.MOTIONS)])
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"{index // len(moving_digits.MOTIONS)}.mp4")
    data = moving_digits.clip("train", index)
    if os.path.isfile(path) and os.path.getsize(path) == len(data):
      with open(path, "rb") as f:
        if f.read() == data:
          continue
    with open(path, "wb") as f:
      f.write(data)
  return count


def main(argv: list[str] | None = None) -> None:
  p = argparse.ArgumentParser(prog="python -m amd_jax.data.builders.video_folder",
                              description="Writes a demo folder of your-own-videos layout: "
                              "moving_digits clips as class folders of mp4 files.")
  p.add_argument("out_dir", metavar="DIR", help="where the class folders go")
  p.add_argument("--per_class", type=int, default=8, help="videos per class (8 classes)")
  args = p.parse_args(argv)
  with errors.exit_on_bad_input():
    if args.per_class <= 0:
      raise errors.BadInput(f"--per_class {args.per_class} must be positive")
    count = write_demo(args.out_dir, args.per_class)
  print(f"{count} videos of {len(moving_digits.MOTIONS)} classes in {args.out_dir}: build "
        f"them with `python -m amd_jax.data.build video_folder --manual_dir {args.out_dir}`")


if __name__ == "__main__":
  main()
