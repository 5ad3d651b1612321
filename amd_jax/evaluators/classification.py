"""Classification evaluation: multi-view scores, top-k, per-class accuracy, confusion,
and the Evaluator that scores a split during fine-tuning.

A video's score is the mean over its views (clips × crops) of each view's
softmax — softmax first, then the average (docs/method.md#validation-and-test-views).
Metrics count only valid videos (an undecodable test video is reported, never
replaced). The metrics are numpy on the host, after the device computed the
scores; test_results.json names the classes where the dataset has a label map.
"""

from __future__ import annotations

import logging
import time

import jax
import ml_collections
import numpy as np

from amd_jax import evaluators, metrics, sharding, steps
from amd_jax import workdir as workdir_lib
from amd_jax.data import pipeline, sources

log = logging.getLogger("amd_jax")


def topk_correct(probs: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
  """(videos,) bool: the label is among the k highest scores.

  A tie at the k-th score counts as correct only if the label wins it by index
  order (np.argsort is stable on the negated scores: lower class ids first).
  """
  top = np.argsort(-probs, axis=-1, kind="stable")[:, :k]
  return (top == labels[:, None]).any(axis=-1)


def confusion_matrix(predicted: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
  """(classes, classes) int64 counts: rows true class, columns predicted."""
  out = np.zeros((num_classes, num_classes), np.int64)
  np.add.at(out, (labels, predicted), 1)
  return out


def summarize(probs: np.ndarray, labels: np.ndarray, valid: np.ndarray | None = None) -> dict:
  """Metrics of averaged scores probs (videos, classes) against labels (videos,).

  top1/top5 are averaged over videos (as the official `compute_video`), and
  per_class is the accuracy of each class (None for a class with no video).
  """
  if valid is not None:
    probs, labels = probs[valid], labels[valid]
  num_classes = probs.shape[-1]
  if not len(labels):
    raise ValueError("no valid video to evaluate")
  confusion = confusion_matrix(probs.argmax(-1), labels, num_classes)
  counts = confusion.sum(axis=1)
  per_class = [float(confusion[c, c] / counts[c]) if counts[c] else None
               for c in range(num_classes)]
  return {"top1": float(topk_correct(probs, labels, 1).mean()),
          "top5": float(topk_correct(probs, labels, min(5, num_classes)).mean()),
          "videos": int(len(labels)), "per_class": per_class,
          "class_counts": counts.tolist(), "confusion": confusion.tolist()}


class Evaluator:
  """Scores a split with the current parameters, all processes together (fine-tuning).

  "val": one centre clip per video, drawn as in training with a fixed seed
  (every validation sees the same clips); "test": the clips × crops views
  (docs/method.md#validation-and-test-views). Every process reads its share of
  the videos; the scores of all come back to every process, and process 0 writes.
  """

  def __init__(self, config: ml_collections.ConfigDict, mesh, model_def, state_sharding):
    d = config.data
    self.config = config
    self.views = {
        "val": pipeline.CentreClip(d.sampler, d.frames, d.sampling_rate, d.size,
                                   seed=config.seed),
        "test": pipeline.Views(d.test_sampler, d.frames, d.sampling_rate, d.size,
                               d.test_clips, d.test_crops)}
    self.splits = {"val": d.val_split, "test": d.test_split}
    self.batch_sharding = sharding.batch_sharding(mesh)
    repl = sharding.replicated(mesh)

    def scores(params, frozen, batch):
      out = {k: batch[k] for k in ("label", "valid", "index", "skipped")}
      return dict(out, probs=steps.eval_scores(params, frozen, batch["video"],
                                               model=model_def))

    self.scores = jax.jit(scores, in_shardings=(state_sharding["params"],
                                                state_sharding["frozen"], self.batch_sharding),
                          out_shardings=repl)

  def __call__(self, split: str, state: dict) -> dict:
    """Averaged scores of every video of `split`: probs, label, valid, index, skipped."""
    records = sources.open_split(self.config.data.name, self.splits[split],
                                 self.config.data.data_dir)
    dataset = pipeline.eval_dataset(records, self.views[split], self.config.eval_batch_size,
                                    process_index=jax.process_index(),
                                    process_count=jax.process_count())
    parts = []
    batches = pipeline.iterator(dataset, self.config.data.worker_count)
    for batch in evaluators.progress(self.config, batches, len(dataset), split):
      batch = jax.make_array_from_process_local_data(self.batch_sharding, batch)
      parts.append(self.scores(state["params"], state["frozen"], batch))
    out = {k: np.concatenate([np.asarray(p[k]) for p in parts]) for k in parts[0]}
    # Padding elements and other processes' strides come back in any order.
    keep = out["index"] < len(records)
    order = np.argsort(out["index"][keep])
    return {k: v[keep][order] for k, v in out.items()}

  def log(self, writer: metrics.Writer, split: str, state: dict, step: int,
          workdir: str | None = None) -> dict:
    """Evaluates `split`, writes its metrics row (and, with workdir, the test files)."""
    start = time.perf_counter()
    out = self(split, state)
    summary = summarize(out["probs"], out["label"], out["valid"])
    views = 1 if split == "val" else self.views["test"].clips * self.views["test"].crops
    row = {"step": step, "split": split, "top1": summary["top1"], "top5": summary["top5"],
           "views": views, "videos": summary["videos"], "skipped": int(out["skipped"].sum()),
           "eval_s": time.perf_counter() - start}
    writer.write(row)
    log.info("%s at step %d: top-1 %.4f, top-5 %.4f (%d videos × %d views)", split, step,
             row["top1"], row["top5"], row["videos"], views)
    if workdir is not None and jax.process_index() == 0:
      d = self.config.data
      classes = sources.class_names(sources.builder(d.name, d.data_dir))
      workdir_lib.write_test_results(workdir, row, **({"classes": classes} if classes else {}),
                                     **{k: summary[k] for k in ("per_class", "class_counts",
                                                                "confusion")})
      workdir_lib.write_test_scores(workdir, probs=out["probs"], labels=out["label"],
                                    valid=out["valid"], index=out["index"])
    return row
