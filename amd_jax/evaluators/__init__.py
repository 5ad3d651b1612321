"""Evaluation of a fine-tuned model: what train.py runs at validations and the test.

classification.py  top-k, per-class accuracy, confusion, multi-view scores; its Evaluator
ava.py             the AVA detector's Evaluator (frame mAP of a split)
ava_map.py         AVA frame mAP@0.5, the official evaluation in numpy

An Evaluator is built once per run, `Evaluator(config, mesh, model_def,
state_sharding)`, and `evaluator.log(writer, split, state, step, workdir=None)`
scores a split with all processes, writes its metrics row and returns it
(with workdir, process 0 also writes the test result files).
"""

from __future__ import annotations

import jax
import ml_collections
import tqdm


def progress(config: ml_collections.ConfigDict, batches, total: int, split: str):
  """An evaluation's batches with a progress bar (count and ETA: a K400 test runs for hours)."""
  return tqdm.tqdm(batches, total=total, desc=split, unit="batch", dynamic_ncols=True,
                   leave=False, disable=not (jax.process_index() == 0 and config.progress))
