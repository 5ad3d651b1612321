"""grain pipelines: records → decoded frames → augmented clips (with masks) → batches.

Determinism is by construction: element i of the shuffled, repeated stream, its
augmentations and its masks depend only on (seed, i), and step s is the global
batch of elements [s·V, (s+1)·V) whatever the number of processes (process p
reads its own slice of it). Resuming from the grain iterator's state replays
exactly the same clips.

A video that cannot be decoded is never a crash: the transform adds its path
to the bad-file list (once), counts it in the element's `skipped`, and takes another
video of the split drawn from the element's own generator (as the official
loaders retry a random index), so batches keep their shapes and resumes stay
exact. Test views instead mark the video `valid = False` (a substitute would
change the metric).
"""

from __future__ import annotations

import dataclasses
import fcntl
import logging
import math
from collections.abc import Callable
from typing import Any

import grain
import ml_collections
import numpy as np

from amd_jax import errors, masking
from amd_jax.data import decode, sampling, sources, transforms

log = logging.getLogger("amd_jax")

MAX_SUBSTITUTES = 10          # undecodable videos in a row before the dataset is called broken


def source(config: ml_collections.ConfigDict):
  """The random-access records of config.data.split of config.data.name; in fine-tuning
  with config.data.per_class > 0, the first that many of each class."""
  d = config.data
  records = sources.open_split(d.name, d.split, d.data_dir)
  if d.get("per_class", 0):
    return sources.first_per_class(records, d.per_class, d.num_classes)
  return records


def _frames(record: dict, pick: Callable[[int], np.ndarray]) -> np.ndarray:
  """Decodes the frames `pick(num_frames)` (any shape of indices) → uint8 (*shape, H, W, 3)."""
  if "video" in record:
    with decode.Video(record["video"]) as video:
      index = pick(video.num_frames)
      frames = video.frames(index.ravel())
  else:
    images = record["frames"]
    if not len(images):
      raise decode.Undecodable("no frames")
    index = pick(len(images))
    frames = decode.jpeg_frames(images, index.ravel())
  return frames.reshape(index.shape + frames.shape[1:])


def _path(record: dict) -> str:
  path = record.get("path", b"?")
  return path.decode() if isinstance(path, bytes) else str(path)


def list_bad_file(bad_files: str, entry: str) -> None:
  """Appends `entry` to the bad-file list unless it is there already: a video drawn
  again (every epoch, every evaluation) is listed once. The lock makes the check and
  the append one step for the pipeline's worker processes."""
  with open(bad_files, "a+") as f:
    fcntl.flock(f, fcntl.LOCK_EX)         # released when the file closes
    f.seek(0)
    if entry not in f.read().splitlines():
      f.write(f"{entry}\n")


def _report(bad_files: str | None, record: dict, error: Exception) -> None:
  path = _path(record)
  log.warning("skipped undecodable video %s: %s", path, error)
  if bad_files:
    list_bad_file(bad_files, path)


@dataclasses.dataclass(frozen=True)
class Decoder:
  """Decodes a record's frames, replacing undecodable videos by random others of `source`."""

  source: Any
  bad_files: str | None = None

  def __call__(self, record: dict, rng: np.random.Generator,
               pick: Callable[[np.random.Generator, int], np.ndarray]):
    """(frames, label, skipped): skipped counts the undecodable videos replaced."""
    record, frames, skipped = decode_or_substitute(
        self.source, record, rng, lambda r: _frames(r, lambda n: pick(rng, n)),
        lambda r, e: _report(self.bad_files, r, e), _path)
    return frames, np.int32(record["label"]), skipped


def decode_or_substitute(source, record: dict, rng: np.random.Generator,
                         read: Callable[[dict], Any], report: Callable[[dict, Exception], None],
                         name: Callable[[dict], str]):
  """(record, read(record), skipped): an undecodable record is reported and replaced by a
  random other one of `source` drawn from `rng` (as the official loaders retry a random
  index), at most MAX_SUBSTITUTES times in a row."""
  for skipped in range(MAX_SUBSTITUTES + 1):
    try:
      return record, read(record), skipped
    except decode.Undecodable as e:
      report(record, e)
      last = f"{name(record)}: {e}"
      record = source[int(rng.integers(len(source)))]
  raise errors.BadInput(f"{MAX_SUBSTITUTES + 1} undecodable videos in a row (the last, "
                        f"{last}); is the dataset intact?")


def temporal_rule(name: str, frames: int, rate: int
                  ) -> Callable[[np.random.Generator, int], np.ndarray]:
  """config.data.sampler → (rng, num_frames) → indices: dense | span | segments."""
  rules = {"dense": lambda rng, n: sampling.dense(rng, n, frames, rate),
           "span": lambda rng, n: sampling.span(rng, n, frames, rate),
           "segments": lambda rng, n: sampling.segments(rng, n, frames)}
  if name not in rules:
    raise errors.BadInput(f"config.data.sampler={name!r}: choose from {'|'.join(rules)}")
  return rules[name]


def _per_clip(skipped: int, num_sample: int) -> np.ndarray:
  """A video's skip count on its first clip, 0 on the others: (S,) int32.

  Per clip, like the labels, so every batch entry splits over devices alike; a
  batch's sum counts each replacement once.
  """
  out = np.zeros(num_sample, np.int32)
  out[0] = skipped
  return out


@dataclasses.dataclass(frozen=True)
class PretrainSample:
  """One record → `num_sample` multi-scale crops of one decoded clip, each with its mask.

  Output: video uint8 (S, T, size, size, 3), mask int8 (S, N), label int32 (S,),
  skipped int32 (S,) (see `_per_clip`).
  """

  decoder: Decoder
  sampler: str
  frames: int
  rate: int
  size: int
  num_sample: int
  grid: tuple[int, int, int]
  student_ratio: float
  teacher_ratio: float | None

  def __call__(self, record: dict, rng: np.random.Generator) -> dict:
    clip, label, skipped = self.decoder(
        record, rng, temporal_rule(self.sampler, self.frames, self.rate))
    # The generator's draws in the order of one clip at a time (crop, then mask); the crops
    # are then made together, each frame converted for PIL once.
    boxes, masks = [], []
    for _ in range(self.num_sample):
      boxes.append(transforms.multi_scale_crop_params(rng, *clip.shape[1:3], self.size))
      masks.append(masking.tube_mask(rng, self.grid, self.student_ratio, self.teacher_ratio))
    return {"video": transforms.crop_resize_pil(clip, boxes, self.size, self.size),
            "mask": np.stack(masks),
            "label": np.full(self.num_sample, label, np.int32),
            "skipped": _per_clip(skipped, self.num_sample)}


@dataclasses.dataclass(frozen=True)
class FinetuneSample:
  """One record → `num_sample` fine-tuning clips of one decoded clip
  (docs/method.md#fine-tuning-clips).

  Per clip, in the official order: RandAugment (on the decoded frames), random
  resized crop, horizontal flip (`flip` False for SSV2), random erasing.
  Output: video uint8 (S, T, size, size, 3), label int32 (S,), skipped int32 (S,).
  """

  decoder: Decoder
  sampler: str                   # span (K400, UCF101, HMDB51: rate 4) | segments (SSV2)
  frames: int
  rate: int
  size: int
  num_sample: int = 2
  flip: bool = True
  rand_augment: dict = dataclasses.field(default_factory=lambda: dict(
      num_ops=4, magnitude=7.0, magnitude_std=0.5))
  erase_prob: float = 0.25

  def __call__(self, record: dict, rng: np.random.Generator) -> dict:
    clip, label, skipped = self.decoder(
        record, rng, temporal_rule(self.sampler, self.frames, self.rate))
    videos = []
    for _ in range(self.num_sample):
      v = transforms.rand_augment(clip, rng, **self.rand_augment)
      v = transforms.random_resized_crop(v, rng, self.size)
      if self.flip:
        v = transforms.horizontal_flip(v, rng)
      videos.append(transforms.random_erasing(v, rng, self.erase_prob))
    return {"video": np.stack(videos), "label": np.full(self.num_sample, label, np.int32),
            "skipped": _per_clip(skipped, self.num_sample)}


@dataclasses.dataclass(frozen=True)
class Views:
  """One record → its clips × crops test views, deterministic
  (docs/method.md#validation-and-test-views).

  rule 'dense' (K400: every `rate`-th frame, `clips` evenly spaced clips) or
  'segments' (SSV2: segment starts and centres, 2 clips); short side resized to
  `size`, 3 crops along the long side. Output: video uint8 (clips·crops, T,
  size, size, 3) clip-major, label int32, valid bool (False: undecodable,
  zeros), skipped int32.
  """

  sampler: str
  frames: int
  rate: int
  size: int
  clips: int
  crops: int = 3
  bad_files: str | None = None

  def __post_init__(self):
    if self.sampler not in ("dense", "segments"):
      raise errors.BadInput(f"test views: sampler {self.sampler!r}: choose dense|segments")

  def pick(self, n: int) -> np.ndarray:
    if self.sampler == "dense":
      return sampling.test_clips_dense(n, self.frames, self.rate, self.clips)
    return sampling.test_clips_segments(n, self.frames, self.clips)

  def __call__(self, record: dict, index: int | None = None) -> dict:
    del index  # the views are the same for every record position
    views = self.clips * self.crops
    try:
      clips = _frames(record, self.pick)
    except decode.Undecodable as e:
      _report(self.bad_files, record, e)
      return _invalid(record, views, self.frames, self.size)
    out = [transforms.three_crops(transforms.resize_short_side(c, self.size), self.size,
                                  self.crops) for c in clips]
    return {"video": np.concatenate(out), "label": np.int32(record["label"]),
            "valid": np.bool_(True), "skipped": np.int32(0)}

  def blank(self) -> dict:
    return _invalid(None, self.clips * self.crops, self.frames, self.size)


def _concat(elements):
  return {k: np.concatenate([e[k] for e in elements]) for k in elements[0]}


def check_batch(key: str, batch: int, **parts: int) -> None:
  """One BadInput line unless the global batch `key` = `batch` splits evenly into the
  named `parts` (their product): num_sample=…, processes=… (each process reads whole
  videos of num_sample clips), processes=… alone (evaluation), devices=… (each device
  gets an equal share)."""
  if batch % math.prod(parts.values()):
    if len(parts) == 1:
      [(name, count)] = parts.items()
      by = f"the {count} {name}"
    else:
      by = f"{' × '.join(parts)} = {' × '.join(map(str, parts.values()))}"
    raise errors.BadInput(f"{key} {batch} is not divisible by {by}")


def pretrain_dataset(config: ml_collections.ConfigDict, grid: tuple[int, int, int],
                     ratios: tuple[float, float | None], *, records=None,
                     process_index: int = 0, process_count: int = 1,
                     bad_files: str | None = None) -> grain.MapDataset:
  """Batches of this process: video (b, T, H, W, 3) uint8, mask (b, N) int8, label (b,),
  skipped (b,) int32 (its sum: undecodable videos replaced in this batch).

  b = config.batch_size / process_count clips (repeated samples included).
  ratios: the (student, teacher) mask ratios, teacher None without a teacher
  (tasks.py, mask_ratios). records: the split's source (opened from the config when None).
  """
  d = config.data
  check_batch("batch_size", config.batch_size, num_sample=d.num_sample, processes=process_count)
  records = source(config) if records is None else records
  videos_per_process = config.batch_size // d.num_sample // process_count
  temporal_rule(d.sampler, d.frames, d.sampling_rate)   # refuses an unknown rule up front
  sample = PretrainSample(Decoder(records, bad_files), d.sampler, d.frames, d.sampling_rate,
                          d.size, d.num_sample, grid, *ratios)
  return training_batches(records, sample, videos_per_process, config.seed,
                          process_index=process_index, process_count=process_count)


def training_batches(records, sample: PretrainSample | FinetuneSample, videos_per_process: int,
                     seed: int, *, process_index: int = 0, process_count: int = 1
                     ) -> grain.MapDataset:
  """Endless shuffled batches of this process, each video's `num_sample` clips side by side:
  every key of `sample`'s output with a leading axis of videos_per_process · num_sample."""
  ds = grain.MapDataset.source(records).repeat().shuffle(seed=seed).random_map(sample, seed=seed)
  ds = ds.batch(videos_per_process, drop_remainder=True, batch_fn=_concat)
  return ds[process_index::process_count]


@dataclasses.dataclass(frozen=True)
class CentreClip:
  """One record → one validation view: a clip drawn by the training sampler, short
  side resized to `size`, centre crop (docs/method.md#validation-and-test-views).

  The clip's frames are drawn from a generator seeded by `seed` and the record's
  index, so every in-training validation sees the same clips. Output as Views:
  video (1, T, size, size, 3), label, valid, skipped.
  """

  sampler: str
  frames: int
  rate: int
  size: int
  seed: int = 0
  bad_files: str | None = None

  def __call__(self, record: dict, index: int) -> dict:
    rng = np.random.default_rng([self.seed, index])
    rule = temporal_rule(self.sampler, self.frames, self.rate)
    try:
      clip = _frames(record, lambda n: rule(rng, n))
    except decode.Undecodable as e:
      _report(self.bad_files, record, e)
      return _invalid(record, 1, self.frames, self.size)
    clip = transforms.center_crop(transforms.resize_short_side(clip, self.size), self.size)
    return {"video": clip[None], "label": np.int32(record["label"]), "valid": np.bool_(True),
            "skipped": np.int32(0)}

  def blank(self) -> dict:
    return _invalid(None, 1, self.frames, self.size)


def _invalid(record: dict | None, views: int, frames: int, size: int) -> dict:
  """An element with valid False, which the metrics skip: an undecodable test video (its
  skip counted) or the padding that fills a process's last evaluation batch."""
  return {"video": np.zeros((views, frames, size, size, 3), np.uint8),
          "label": np.int32(record["label"] if record is not None else 0),
          "valid": np.bool_(False), "skipped": np.int32(record is not None)}


@dataclasses.dataclass(frozen=True)
class _EvalElement:
  """Element i of a process's padded evaluation pass: view(record, its index) for
  record process_index + i·processes, or view.blank() past the end of the split."""

  records: Any
  view: Any                   # Views | CentreClip | ava_pipeline.TestSample
  process_index: int
  process_count: int

  def __call__(self, i: int) -> dict:
    index = self.process_index + i * self.process_count
    out = (self.view(self.records[index], index) if index < len(self.records)
           else self.view.blank())
    return dict(out, index=np.int64(index))


def eval_dataset(records, view, global_batch: int, *, process_index: int = 0,
                 process_count: int = 1) -> grain.MapDataset:
  """One pass over the split in batches of global_batch / process_count videos per
  process, with every key of `view`'s output (Views, CentreClip: video (b, V, T, H,
  W, 3) uint8, label, valid, skipped; ava_pipeline.TestSample: its clip and proposals) and
  index (the record).

  Every process gets the same number of full batches (they meet in the
  collectives of the evaluation step): the tail is padded with `valid = False`
  elements, which the metrics ignore.
  """
  check_batch("eval_batch_size", global_batch, processes=process_count)
  local = global_batch // process_count
  per_process = -(-len(records) // process_count)
  length = -(-per_process // local) * local
  element = _EvalElement(records, view, process_index, process_count)
  return grain.MapDataset.range(length).map(element).batch(local, batch_fn=_stack)


def _stack(elements):
  return {k: np.stack([e[k] for e in elements]) for k in elements[0]}


def finetune_dataset(config: ml_collections.ConfigDict, *, records=None,
                     process_index: int = 0, process_count: int = 1,
                     bad_files: str | None = None) -> grain.MapDataset:
  """Training batches of classification fine-tuning (FinetuneSample): video (b, T, H, W, 3)
  uint8, label (b,), skipped (b,); b = config.batch_size / process_count clips."""
  d = config.data
  check_batch("batch_size", config.batch_size, num_sample=d.num_sample, processes=process_count)
  records = source(config) if records is None else records
  temporal_rule(d.sampler, d.frames, d.sampling_rate)
  sample = FinetuneSample(Decoder(records, bad_files), d.sampler, d.frames, d.sampling_rate,
                          d.size, d.num_sample, flip=d.flip,
                          rand_augment=dict(d.rand_augment), erase_prob=d.erase_prob)
  return training_batches(records, sample, config.batch_size // d.num_sample // process_count,
                          config.seed, process_index=process_index,
                          process_count=process_count)


def iterator(ds: grain.MapDataset, worker_count: int = 0,
             read_options: grain.ReadOptions | None = None) -> grain.DatasetIterator:
  """A checkpointable iterator (get_state/set_state); workers decode in parallel.

  Batches are made inside the workers; only uint8 frames cross process
  boundaries (float32 video through grain's shared memory is slow).
  read_options: threads and prefetch buffer of each worker (or of this process
  without workers). The default keeps two batches ahead with two threads:
  grain's own (500 elements ahead) would hold hundreds of whole batches — tens
  of GB at 224² — and its 16 threads would fight the training step for cores.
  """
  it_ds = ds.to_iter_dataset(read_options or grain.ReadOptions(num_threads=2,
                                                               prefetch_buffer_size=2))
  if worker_count:
    from absl import flags
    # grain's workers read absl flags; a program not started by absl.app.run
    # (tests, notebooks, the benchmark) has not parsed them.
    if not flags.FLAGS.is_parsed():
      flags.FLAGS.mark_as_parsed()
    it_ds = it_ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count))
  return iter(it_ds)
