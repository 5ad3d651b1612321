"""The AVA detector's evaluation during fine-tuning: frame mAP@0.5 of a split
(docs/method.md#ava-action-detection); the metric itself is ava_map.py.
"""

from __future__ import annotations

import logging
import time

import jax
import ml_collections
import numpy as np

from amd_jax import evaluators, metrics, sharding, steps
from amd_jax import workdir as workdir_lib
from amd_jax.data import ava_pipeline, pipeline, sources
from amd_jax.data.builders import ava as ava_builder
from amd_jax.evaluators import ava_map

log = logging.getLogger("amd_jax")


class Evaluator:
  """AVA frame mAP@0.5 of the detector on a split, all processes together.

  Every key frame of the split is scored on the detector's proposals (score ≥
  box_threshold); the mAP is over the label map's 60 classes with the excluded
  timestamps removed, against the ground truth of the key frames scored (all of
  val in a full run). process 0 writes the per-class APs of a test.
  """

  def __init__(self, config: ml_collections.ConfigDict, mesh, model_def, state_sharding):
    d = config.data
    self.config = config
    self.sample = ava_pipeline.TestSample(max_boxes=d.max_boxes, short_side=d.short_side,
                                          height=d.test_height, width=d.test_width,
                                          box_threshold=d.box_threshold)
    self.splits = {"val": d.val_split, "test": d.test_split}
    self.batch_sharding = sharding.batch_sharding(mesh)
    self.truth = ava_builder.evaluation_data(sources.builder(d.name, d.data_dir))
    keys = ("proposals", "scores", "box_valid", "video_index", "timestamp", "valid",
            "skipped", "index")

    def scores(params, frozen, batch):
      logits = steps.eval_detections(params, frozen, batch["video"], batch["boxes"],
                                     model=model_def)
      return dict({k: batch[k] for k in keys}, logits=logits)

    self.scores = jax.jit(scores, in_shardings=(state_sharding["params"],
                                                state_sharding["frozen"], self.batch_sharding),
                          out_shardings=sharding.replicated(mesh))

  def __call__(self, split: str, state: dict) -> tuple[dict, int, int]:
    """(per-class result of frame_map, key frames scored, skipped clips)."""
    d = self.config.data
    records = sources.open_split(d.name, self.splits[split], d.data_dir)
    dataset = pipeline.eval_dataset(records, self.sample, self.config.eval_batch_size,
                                    process_index=jax.process_index(),
                                    process_count=jax.process_count())
    found, frames, skipped = {}, set(), 0
    batches = pipeline.iterator(dataset, d.worker_count)
    for batch in evaluators.progress(self.config, batches, len(dataset), split):
      batch = jax.make_array_from_process_local_data(self.batch_sharding, batch)
      out = jax.tree.map(np.asarray, self.scores(state["params"], state["frozen"], batch))
      real = out["index"] < len(records)
      keys = [(self.truth["videos"][v], int(t))
              for v, t in zip(out["video_index"][real], out["timestamp"][real])]
      frames.update(keys)
      skipped += int(out["skipped"][real].sum())
      found.update(ava_map.detections(keys, out["proposals"][real], out["box_valid"][real],
                                      out["logits"][real], out["scores"][real]))
    truth = {k: v for k, v in self.truth["groundtruth"].items() if k in frames}
    result = ava_map.frame_map(found, truth, self.truth["class_ids"], self.truth["excluded"])
    return result, len(frames), skipped

  def log(self, writer: metrics.Writer, split: str, state: dict, step: int,
          workdir: str | None = None) -> dict:
    start = time.perf_counter()
    result, frames, skipped = self(split, state)
    row = {"step": step, "split": split, "map": result["map"], "frames": frames,
           "skipped": skipped, "eval_s": time.perf_counter() - start}
    writer.write(row)
    log.info("%s at step %d: frame mAP@0.5 %.4f over %d key frames", split, step,
             row["map"], frames)
    if workdir is not None and jax.process_index() == 0:
      workdir_lib.write_test_results(workdir, row, per_class={
          c: None if np.isnan(ap) else ap for c, ap in result["per_class"].items()})
    return row
