"""The base of the builders over files a user supplies in TFDS's manual dir, and the
record of what each build was made from (its source fingerprint).

Every build writes `source.json` next to its records: the manual dir, and for each
file the build reads its fingerprint — a list (a name ending in LISTS) by a hash of
its contents, a folder by a hash of its sorted listing, any other file (a video, a
frame) by its size and modification time, a path that does not exist as missing.
It is written into TFDS's temporary folder before the records, so it is renamed
into place with them (a dataset prepared before builds recorded their source has
none, and counts as unchanged). data/sources.py compares it with the files as they
are now, when the same dataset is built again (a change is refused unless
`--force`) and when training opens it (a change is one warning).
"""

from __future__ import annotations

import abc
import hashlib
import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator

import tensorflow_datasets as tfds

from amd_jax import files

SOURCE = "source.json"
LISTS = (".csv", ".txt", ".json", ".pbtxt", ".pkl")    # read whole: hashed, not stat'ed
_SHOWN = 2                                             # paths named per kind of change


def _sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


def fingerprint(paths: list[str]) -> dict[str, list]:
  """{path: its fingerprint} (see the module docstring), in `paths`' order."""
  out = {}
  for path in paths:
    try:
      if os.path.isdir(path):
        names = "\n".join(sorted(os.listdir(path)))
        out[path] = ["listing", hashlib.sha256(names.encode()).hexdigest()]
      elif path.lower().endswith(LISTS):
        out[path] = ["sha256", _sha256(path)]
      else:
        stat = os.stat(path)
        out[path] = ["stat", stat.st_size, stat.st_mtime_ns]
    except FileNotFoundError:
      out[path] = ["missing"]
  return out


def differences(recorded: dict[str, list], now: dict[str, list], root: str) -> str:
  """'' when the two fingerprints agree, else what differs in a few words, paths
  relative to `root`: 'changed: train.csv; added: zumba/c.mp4 and 2 more'."""
  def named(paths: list[str]) -> str:
    shown = ", ".join(os.path.relpath(p, root) for p in paths[:_SHOWN])
    return shown + (f" and {len(paths) - _SHOWN} more" if len(paths) > _SHOWN else "")
  # A path that went missing (or came back) is removed (added), not changed.
  present = {p: f for p, f in now.items() if f != ["missing"]}
  before = {p: f for p, f in recorded.items() if f != ["missing"]}
  kinds = (("changed", [p for p in present if p in before and before[p] != present[p]]),
           ("added", [p for p in present if p not in before]),
           ("removed", [p for p in before if p not in present]))
  return "; ".join(f"{kind}: {named(paths)}" for kind, paths in kinds if paths)


# The label map of a dataset with named classes: one class name a line, in label order,
# beside the records.
CLASSES_FILE = "classes.txt"


class ManualBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """A builder whose input files the user puts in the manual dir.

  `layout()` says what goes where, once: TFDS shows it as the manual download
  instructions, and every message about a missing or malformed file ends with it.
  `source_files()` names what a build reads, for the fingerprint. `manual_dir`
  is given when building (a builder whose record format depends on its input
  reads it there), not when opening prepared data. `load_each` reads the files,
  in worker processes when the build asks for them.
  """

  MANUAL_DIR = "DIR"          # what messages put after --manual_dir when none is known

  def __init__(self, *, manual_dir: str = "", **kwargs):
    self.manual_dir = manual_dir
    super().__init__(**kwargs)

  @classmethod
  @abc.abstractmethod
  def layout(cls) -> str:
    """'NAME: expected … in the manual dir …', one line."""

  @abc.abstractmethod
  def source_files(self, manual_dir: str) -> list[str]:
    """Every file the build of `manual_dir` reads: the lists (CSVs, annotation files)
    first, then the media, as absolute paths, in a stable order.

    A media file may be named directly (a video: its size and mtime are recorded)
    or through its folder (a folder of frames: its listing is recorded, which is
    what keeps a check of millions of frames cheap). A file whose name ends in
    LISTS is hashed in full, so a media file must not end so. A path the lists
    name that does not exist is included as it is: it is recorded as missing, and
    its appearing later counts as a change. Called before the build (and again
    whenever the fingerprint is checked), so it must not fail on files the build
    would leave out; a list the build would refuse may raise the same BadInput.
    """

  @staticmethod
  def load_each(load: Callable, items: Iterable, *, workers: int, chunksize: int) -> Iterator:
    """load(item) of every item, in order: in `workers` worker processes when more than
    one (spawned, not forked, as the caller may run JAX threads), else here. A build
    asks for workers where it decodes or re-encodes, its slow part."""
    if workers <= 1:
      yield from map(load, items)
      return
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
      yield from pool.imap(load, items, chunksize=chunksize)

  def build_flags(self) -> list[str]:
    """The build flags that name this prepared dataset beside NAME (none here), for
    the commands that messages print."""
    return []

  @property
  def MANUAL_DOWNLOAD_INSTRUCTIONS(self):  # noqa: N802 (tfds's name)
    return self.layout()

  def _download_and_prepare(self, dl_manager, download_config):
    # self.data_dir is TFDS's temporary folder here: the record is renamed into
    # place with the records, and is taken before they are read, so a file edited
    # during the build shows as changed afterwards.
    manual_dir = os.path.abspath(str(dl_manager.manual_dir))
    record = {"manual_dir": manual_dir,
              "files": fingerprint(self.source_files(manual_dir))}
    files.write_json(os.path.join(self.data_dir, SOURCE), record, indent=None)
    return super()._download_and_prepare(dl_manager, download_config)

  def recorded_source(self) -> dict | None:
    """{"manual_dir", "files": fingerprint} of this prepared dataset's build; None for
    a build that recorded none (an older version of this code)."""
    return files.read_json(os.path.join(self.data_dir, SOURCE), None)

  def source_changes(self, manual_dir: str = "") -> str | None:
    """How the files differ from those this prepared dataset was built from ('' when
    they do not), `manual_dir` being the recorded one when empty; None when that
    cannot be told: no record, or no such folder (gone since the build)."""
    record = self.recorded_source()
    if record is None:
      return None
    manual_dir = os.path.abspath(manual_dir or record["manual_dir"])
    if not os.path.isdir(manual_dir):
      return None
    if manual_dir != record["manual_dir"]:
      return f"it was built from {record['manual_dir']}"
    return differences(record["files"], fingerprint(self.source_files(manual_dir)),
                       manual_dir)
