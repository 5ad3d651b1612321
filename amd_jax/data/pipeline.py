"""grain pipelines: decoded videos → repeated clips with their masks → global batches.

Determinism is by construction: element i of the shuffled, repeated stream and
its masks depend only on (seed, i), and step s is the global batch of elements
[s·V, (s+1)·V) whatever the number of processes (process p reads its own slice
of it). Resuming from the grain iterator's state replays exactly the same clips.
"""

from __future__ import annotations

import dataclasses

import grain
import ml_collections
import numpy as np

from amd_jax import errors, masking
from amd_jax.data import synthetic


def source(config: ml_collections.ConfigDict):
  """The random-access video source named by config.data.name."""
  d = config.data
  if d.name == "synthetic":
    return synthetic.SyntheticClips(d.train_videos, d.frames, d.size, seed=config.seed)
  raise errors.BadInput(f"unknown dataset {d.name!r}: only 'synthetic' is available so far")


@dataclasses.dataclass(frozen=True)
class RepeatedSample:
  """One decoded video → `num_sample` clips, each with its own mask.

  Output: video uint8 (S, T, H, W, 3), mask int8 (S, N), label int32 (S,).
  """

  num_sample: int
  grid: tuple[int, int, int]
  student_ratio: float
  teacher_ratio: float | None

  def __call__(self, element: dict, rng: np.random.Generator) -> dict:
    masks = np.stack([masking.tube_mask(rng, self.grid, self.student_ratio, self.teacher_ratio)
                      for _ in range(self.num_sample)])
    video = np.broadcast_to(element["video"], (self.num_sample,) + element["video"].shape)
    return {"video": np.ascontiguousarray(video), "mask": masks,
            "label": np.full(self.num_sample, element["label"], np.int32)}


def _concat(elements):
  return {k: np.concatenate([e[k] for e in elements]) for k in elements[0]}


def pretrain_dataset(config: ml_collections.ConfigDict, grid: tuple[int, int, int], *,
                     process_index: int = 0, process_count: int = 1) -> grain.MapDataset:
  """Batches of this process: video (b, T, H, W, 3) uint8, mask (b, N) int8, label (b,).

  b = config.batch_size / process_count clips (repeated samples included).
  """
  d = config.data
  if config.batch_size % (d.num_sample * process_count):
    raise errors.BadInput(f"batch_size {config.batch_size} must be a multiple of "
                     f"num_sample × processes = {d.num_sample} × {process_count}")
  videos_per_process = config.batch_size // d.num_sample // process_count
  teacher_ratio = config.masking.get("teacher_ratio") if config.mode == "amd" else None
  sample = RepeatedSample(d.num_sample, grid, config.masking.student_ratio, teacher_ratio)
  ds = grain.MapDataset.source(source(config)).repeat().shuffle(seed=config.seed)
  ds = ds.random_map(sample, seed=config.seed)
  ds = ds.batch(videos_per_process, drop_remainder=True, batch_fn=_concat)
  return ds[process_index::process_count]


def iterator(ds: grain.MapDataset, worker_count: int = 0) -> grain.DatasetIterator:
  """A checkpointable iterator (get_state/set_state); workers decode in parallel."""
  it_ds = ds.to_iter_dataset()
  if worker_count:
    it_ds = it_ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count))
  return iter(it_ds)
