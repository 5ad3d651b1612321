"""What every evaluator shares: its predict function jitted onto the run's mesh, and a
split's batches read by all processes together, with a progress bar."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator

import jax
import tqdm
from jax.sharding import Mesh

from amd_jax import sharding
from amd_jax.data import pipeline, sources


@dataclasses.dataclass(frozen=True)
class Data:
  """Where an evaluator reads: a prepared dataset's split, in batches of `batch_size`
  videos (all processes together), each with all its views."""

  name: str
  split: str
  data_dir: str
  batch_size: int
  worker_count: int = 0
  progress: bool = False        # a progress bar on process 0 (a K400 test runs for hours)

  def open(self):
    return sources.open_split(self.name, self.split, self.data_dir)


def jit_predict(predict: Callable, mesh: Mesh, state_sharding: dict) -> Callable:
  """predict(params, frozen, batch) → dict of arrays, jitted: the parameters as the train
  state holds them, the batch split over the mesh, the outputs on every process."""
  return jax.jit(predict, in_shardings=(state_sharding["params"], state_sharding["frozen"],
                                        sharding.batch_sharding(mesh)),
                 out_shardings=sharding.replicated(mesh))


def device_batches(records, view, data: Data, mesh: Mesh, desc: str) -> Iterator[jax.Array]:
  """The split's batches of `view`s on the devices; every process reads its share of
  the videos (padding elements carry an index ≥ len(records)). desc: the progress bar's."""
  dataset = pipeline.eval_dataset(records, view, data.batch_size,
                                  process_index=jax.process_index(),
                                  process_count=jax.process_count())
  batches = pipeline.iterator(dataset, data.worker_count)
  shard = sharding.batch_sharding(mesh)
  for batch in tqdm.tqdm(batches, total=len(dataset), desc=desc, unit="batch",
                         dynamic_ncols=True, leave=False,
                         disable=not (jax.process_index() == 0 and data.progress)):
    yield jax.make_array_from_process_local_data(shard, batch)
