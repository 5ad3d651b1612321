"""Datasets by name: prepare them (TFDS → ArrayRecord) and open a split for grain.

`moving_digits` is embedded: it is built on first use into the cache folder
($AMD_JAX_DATA, else ~/.cache/amd_jax), under a file lock so that parallel
processes (several hosts' processes, parallel tests) build it once and never
read a half-written copy (TFDS also writes into a temporary folder and renames
it when done). The other datasets are prepared once with
`python -m amd_jax.data.build NAME --manual_dir IN --data_dir OUT`.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os

import tensorflow_datasets as tfds

from amd_jax import errors
from amd_jax.data.builders import ava, image_folder, moving_digits, video_lists

BUILDERS = {b.name: b for b in (moving_digits.MovingDigits, video_lists.K400,
                                video_lists.Ucf101, video_lists.Hmdb51, video_lists.Ssv2,
                                ava.Ava, image_folder.ImageFolder)}
EMBEDDED = ("moving_digits",)     # need no manual dir: built on first use


class _NoUnbuiltVariantWarning(logging.Filter):
  """TFDS warns "Variant folder ... has no dataset_info.json" when it looks for a
  dataset that is not built yet: before every first build, so no news."""

  def filter(self, record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("Variant folder")


logging.getLogger("absl").addFilter(_NoUnbuiltVariantWarning())


def cache_dir() -> str:
  return os.environ.get("AMD_JAX_DATA") or os.path.join(os.path.expanduser("~"), ".cache",
                                                         "amd_jax")


def builder(name: str, data_dir: str = "", **options) -> tfds.core.DatasetBuilder:
  """The builder of dataset `name` writing to / reading from `data_dir` (cache if empty)."""
  if name not in BUILDERS:
    raise errors.BadInput(f"unknown dataset {name!r}: choose from {', '.join(BUILDERS)}")
  if not data_dir:
    if name not in EMBEDDED:
      raise errors.BadInput(f"dataset {name} needs config.data.data_dir: the folder "
                            f"`python -m amd_jax.data.build {name}` prepared")
    data_dir = cache_dir()
  # ArrayRecord: random access for grain, and the format that needs no TensorFlow.
  return BUILDERS[name](data_dir=data_dir, file_format="array_record", **options)


@contextlib.contextmanager
def _locked(data_dir: str, name: str):
  os.makedirs(data_dir, exist_ok=True)
  with open(os.path.join(data_dir, f".{name}.lock"), "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(lock, fcntl.LOCK_UN)


def prepare(name: str, data_dir: str = "", manual_dir: str = "", **options
            ) -> tfds.core.DatasetBuilder:
  """Builds the dataset unless it is already there; returns its builder."""
  if name not in BUILDERS:
    raise errors.BadInput(f"unknown dataset {name!r}: choose from {', '.join(BUILDERS)}")
  if name not in EMBEDDED and not (manual_dir and os.path.isdir(manual_dir)):
    raise errors.BadInput(f"{name} is built from local files: --manual_dir "
                          f"{manual_dir or '(none)'} is not a folder; " + BUILDERS[name].layout())
  if name not in EMBEDDED and not os.listdir(manual_dir):
    raise errors.BadInput(f"--manual_dir {manual_dir} is empty; " + BUILDERS[name].layout())
  with _locked(data_dir or cache_dir(), name):
    # Made under the lock: a builder made before another process finished
    # building would keep the empty info it read then.
    b = builder(name, data_dir, **options)
    if not b.is_prepared():
      b.download_and_prepare(download_config=tfds.download.DownloadConfig(
          manual_dir=manual_dir or None))
  return b


def open_split(name: str, split: str, data_dir: str = ""):
  """A random-access source of records ({'video' | 'frames', 'label', 'path'}; ava's in
  amd_jax/data/builders/ava.py) of one split.

  `split` takes TFDS slicing ('train[:64]'). The embedded dataset is built if
  missing; any other must have been prepared in `data_dir`.
  """
  b = builder(name, data_dir)
  if not b.is_prepared():
    if name not in EMBEDDED:
      raise errors.BadInput(
          f"dataset {name} is not prepared in {data_dir}: run `python -m amd_jax.data.build "
          f"{name} --manual_dir DIR_WITH_LISTS --data_dir {data_dir}`")
    tfds.disable_progress_bar()
    b = prepare(name, data_dir)     # its builder says what it builds
  try:
    return b.as_data_source(split)
  except (ValueError, KeyError) as e:
    raise errors.BadInput(f"split {split!r} of {name}: {str(e).splitlines()[0]} "
                          f"(prepared: {', '.join(b.info.splits)})") from None


class Subset:
  """Some records of a random-access source, by index: itself a random-access source."""

  def __init__(self, records, indices: list[int]):
    self.records, self.indices = records, indices

  def __len__(self) -> int:
    return len(self.indices)

  def __getitem__(self, index: int) -> dict:
    return self.records[self.indices[index]]


def first_per_class(records, per_class: int, num_classes: int) -> Subset:
  """The first `per_class` records of each of `num_classes` classes in the split's
  order (few-label fine-tuning). Reads records until every class has its share,
  so a large split is not read through; a class without enough is BadInput."""
  counts = [0] * num_classes
  keep = []
  for index in range(len(records)):
    label = int(records[index]["label"])
    if counts[label] < per_class:
      counts[label] += 1
      keep.append(index)
      if len(keep) == per_class * num_classes:
        return Subset(records, keep)
  short = [c for c in range(num_classes) if counts[c] < per_class]
  raise errors.BadInput(f"data.per_class={per_class}: the split has only {counts[short[0]]} "
                        f"videos of class {short[0]}")

