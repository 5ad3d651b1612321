"""Datasets by name: prepare them (TFDS → ArrayRecord) and open a split for grain.

Every dataset lives under one data root: the data_dir given (`--data_dir` of
`python -m amd_jax.data.build`, config.data.data_dir in training), else
$AMD_JAX_DATA, else ~/.cache/amd_jax (`data_root()`). `moving_digits` is
embedded: it is built there on first use. The others are prepared once with
`python -m amd_jax.data.build NAME --manual_dir IN`; opening one that is not
prepared is one line naming that command. Builds run under a file lock, so that
parallel processes (several hosts' processes, parallel tests) build a dataset
once and never read a half-written copy (TFDS also writes into a temporary
folder and renames it when done).

A build from the user's files records what it read (builders/manual.py). Building
again from changed files is refused unless `force`, which builds a new copy beside
the old one and swaps them only once it is complete. Opening a dataset whose files
changed since its build warns once per process; one whose manual dir is gone (a
re-encoded copy needs it no more) is opened without a word.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil

import tensorflow_datasets as tfds

from amd_jax import errors
from amd_jax.data.builders import ava, image_folder, manual, moving_digits, video_folder
from amd_jax.data.builders import video_lists

BUILDERS = {b.name: b for b in (moving_digits.MovingDigits, video_lists.K400,
                                video_lists.Ucf101, video_lists.Hmdb51, video_lists.Ssv2,
                                ava.Ava, image_folder.ImageFolder, video_folder.VideoFolder)}
EMBEDDED = ("moving_digits",)     # need no manual dir: built on first use
log = logging.getLogger("amd_jax")
_checked: set[str] = set()       # prepared folders whose source this process compared


def data_root() -> str:
  """Where datasets live when no data_dir is given: $AMD_JAX_DATA, else ~/.cache/amd_jax."""
  return os.environ.get("AMD_JAX_DATA") or os.path.join(os.path.expanduser("~"), ".cache",
                                                         "amd_jax")


def _unknown(name: str) -> errors.BadInput:
  return errors.BadInput(f"unknown dataset {name!r}: choose from {', '.join(BUILDERS)}")


def builder(name: str, data_dir: str = "", **options) -> tfds.core.DatasetBuilder:
  """The builder of dataset `name` writing to / reading from `data_dir` (data_root() if
  empty); `options` are its build flags (and `manual_dir` when building)."""
  # NAME/CONFIG: one of a family's builds side by side (video_folder/NAME).
  name, _, config = name.partition("/")
  if name not in BUILDERS:
    raise _unknown(name)
  if config:
    options = dict(options, config=config)
  # ArrayRecord: random access for grain, and the format that needs no TensorFlow.
  return BUILDERS[name](data_dir=data_dir or data_root(), file_format="array_record",
                        **options)


def build_command(b: tfds.core.DatasetBuilder, data_dir: str, manual_dir: str = "",
                  force: bool = False) -> str:
  """The command line that (re)builds what `b` prepares in `data_dir`: --data_dir only
  when that is not the default root, MANUAL_DIR's placeholder for an unknown manual dir."""
  words = ["python -m amd_jax.data.build", b.name]
  if isinstance(b, manual.ManualBuilder):
    words += b.build_flags() + ["--manual_dir", manual_dir or b.MANUAL_DIR]
  if data_dir and os.path.abspath(os.path.expanduser(data_dir)) != os.path.abspath(data_root()):
    words += ["--data_dir", data_dir]
  return " ".join(words + (["--force"] if force else []))


@contextlib.contextmanager
def _locked(data_dir: str, name: str):
  os.makedirs(data_dir, exist_ok=True)
  with open(os.path.join(data_dir, f".{name}.lock"), "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(lock, fcntl.LOCK_UN)


def _build(b: tfds.core.DatasetBuilder, manual_dir: str) -> None:
  b.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=manual_dir or None))


def _rebuild(old: str, name: str, root: str, manual_dir: str, options: dict) -> None:
  """Builds `name` again beside its prepared copy `old` in `root` and swaps the two once
  the new one is complete. A failed build leaves the old copy as it was; a crash
  between the two renames leaves no version folder, which is_prepared() refuses
  (it is never a half-written one)."""
  staging = os.path.join(root, f".{name}.rebuild")
  shutil.rmtree(staging, ignore_errors=True)        # a crashed rebuild's leftovers
  new = builder(name, staging, **options)
  try:
    _build(new, manual_dir)
  except BaseException:
    shutil.rmtree(staging, ignore_errors=True)
    raise
  os.rename(old, os.path.join(staging, "old"))
  os.rename(new.data_dir, old)
  shutil.rmtree(staging)


def prepare(name: str, data_dir: str = "", manual_dir: str = "", force: bool = False,
            **options) -> tfds.core.DatasetBuilder:
  """Builds the dataset unless it is already there; returns its builder.

  A dataset prepared from other files than `manual_dir` holds now is BadInput,
  unless `force`, which rebuilds it whatever its source.
  """
  if name not in BUILDERS:
    raise _unknown(name)
  if name not in EMBEDDED and not (manual_dir and os.path.isdir(manual_dir)):
    raise errors.BadInput(f"{name} is built from local files: --manual_dir "
                          f"{manual_dir or '(none)'} is not a folder; " + BUILDERS[name].layout())
  if name not in EMBEDDED and not os.listdir(manual_dir):
    raise errors.BadInput(f"--manual_dir {manual_dir} is empty; " + BUILDERS[name].layout())
  if name not in EMBEDDED:
    options = dict(options, manual_dir=manual_dir)
  root = data_dir or data_root()
  with _locked(root, name):
    # Made under the lock: a builder made before another process finished
    # building would keep the empty info it read then.
    b = builder(name, data_dir, **options)
    if not b.is_prepared():
      _build(b, manual_dir)
      return b
    if not force:
      changed = b.source_changes(manual_dir) if isinstance(b, manual.ManualBuilder) else ""
      if changed:
        raise errors.BadInput(
            f"dataset {name} in {root} was built from other files than {manual_dir} holds "
            f"now ({changed}): rebuild it with `{build_command(b, data_dir, manual_dir, True)}`")
      return b
    _rebuild(b.data_dir, name, root, manual_dir, options)
  return builder(name, data_dir, **{k: v for k, v in options.items() if k != "manual_dir"})


def _warn_if_changed(b: tfds.core.DatasetBuilder, data_dir: str) -> None:
  """One warning per process and prepared dataset whose files changed since its build
  (the check costs a stat per video and a hash per list: done once per process)."""
  if not isinstance(b, manual.ManualBuilder) or b.data_dir in _checked:
    return
  _checked.add(b.data_dir)
  try:
    changed = b.source_changes()
  except errors.BadInput as e:          # a list edited into one the build would refuse
    changed = str(e)
  if changed:
    manual_dir = b.recorded_source()["manual_dir"]
    log.warning("dataset %s in %s was built from other files than %s holds now (%s): "
                "rebuild it with `%s`", b.name, data_dir or data_root(), manual_dir, changed,
                build_command(b, data_dir, manual_dir, True))


def class_names(builder: tfds.core.DatasetBuilder) -> list[str] | None:
  """The label map of a prepared dataset: its class names in label order, from the
  classes.txt beside its records (video and image folders) or the names its label
  feature was declared with (moving_digits); None where classes are only numbers."""
  path = os.path.join(builder.data_dir, manual.CLASSES_FILE)
  if os.path.isfile(path):
    with open(path) as f:
      return f.read().splitlines()
  label = builder.info.features["label"] if "label" in builder.info.features else None
  if isinstance(label, tfds.features.ClassLabel):
    names = list(label.names)
    if names != [str(i) for i in range(len(names))]:
      return names
  return None


def open_split(name: str, split: str, data_dir: str = ""):
  """A random-access source of records ({'video' | 'frames', 'label', 'path'}; ava's in
  amd_jax/data/builders/ava.py) of one split.

  `split` takes TFDS slicing ('train[:64]'). The embedded dataset is built if
  missing; any other must have been prepared in `data_dir` (data_root() if empty).
  """
  b = builder(name, data_dir)
  if not b.is_prepared():
    if name not in EMBEDDED:
      raise errors.BadInput(f"dataset {name} is not prepared in {data_dir or data_root()}: "
                            f"build it with `{build_command(b, data_dir)}`")
    tfds.disable_progress_bar()
    b = prepare(name, data_dir)     # its builder says what it builds
  _warn_if_changed(b, data_dir)
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

