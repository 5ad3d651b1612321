"""The AVA detector's evaluation: frame mAP@0.5 of a split
(docs/method.md#ava-action-detection); the metric itself is ava_map.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import jax
import numpy as np

from amd_jax import steps
from amd_jax.evaluators import ava_map, common

_KEYS = ("proposals", "scores", "box_valid", "video_index", "timestamp", "valid", "skipped",
         "index")


def predict_fn(model_def) -> Callable:
  """The detector's predict function: each proposal's class logits, beside the batch's
  proposals and bookkeeping."""

  def predict(params, frozen, batch):
    logits = steps.eval_detections(params, frozen, batch["video"], batch["boxes"],
                                   model=model_def)
    return dict({k: batch[k] for k in _KEYS}, logits=logits)

  return predict


class Evaluator:
  """AVA frame mAP@0.5 of the detector on a split, all processes together.

  Every key frame of the split is scored on the detector's proposals (score ≥
  box_threshold, applied by `view`: ava_pipeline.TestSample); the mAP is over the
  label map's 60 classes with the excluded timestamps removed, against the ground
  truth of the key frames scored (all of val in a full run).
  """

  def __init__(self, predict: Callable, mesh, *, data: common.Data, view, name: str,
               truth: dict):
    self.predict, self.mesh, self.data, self.view, self.name = predict, mesh, data, view, name
    self.truth = truth        # the dataset's ground truth (builders/ava.py, evaluation_data)

  def run(self, state: dict) -> Iterator[tuple[str, Any]]:
    """map, frames (key frames scored), skipped; then the per-class APs."""
    records = self.data.open()
    found, frames, skipped = {}, set(), 0
    for batch in common.device_batches(records, self.view, self.data, self.mesh, self.name):
      out = jax.tree.map(np.asarray, self.predict(state["params"], state["frozen"], batch))
      real = out["index"] < len(records)
      keys = [(self.truth["videos"][v], int(t))
              for v, t in zip(out["video_index"][real], out["timestamp"][real])]
      frames.update(keys)
      skipped += int(out["skipped"][real].sum())
      found.update(ava_map.detections(keys, out["proposals"][real], out["box_valid"][real],
                                      out["logits"][real], out["scores"][real]))
    truth = {k: v for k, v in self.truth["groundtruth"].items() if k in frames}
    result = ava_map.frame_map(found, truth, self.truth["class_ids"], self.truth["excluded"])
    yield "map", result["map"]
    yield "frames", len(frames)
    yield "skipped", skipped
    yield "per_class", {c: None if np.isnan(ap) else ap for c, ap in result["per_class"].items()}

  @staticmethod
  def describe(row: dict) -> str:
    return f"frame mAP@0.5 {row['map']:.4f} over {row['frames']} key frames"
