"""Classification evaluation: multi-view scores, top-k, per-class accuracy, confusion,
and the Evaluator that scores a split of a classifier.

A video's score is the mean over its views (clips × crops) of each view's
softmax — softmax first, then the average (docs/method.md#validation-and-test-views).
Metrics count only valid videos (an undecodable test video is reported, never
replaced). The metrics are numpy on the host, after the device computed the
scores.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from amd_jax import steps
from amd_jax.evaluators import common


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


def predict_fn(model_def) -> Callable:
  """The classifier's predict function: each view's softmax averaged per video, beside
  the batch's bookkeeping (label, valid, index, skipped)."""

  def predict(params, frozen, batch):
    out = {k: batch[k] for k in ("label", "valid", "index", "skipped")}
    return dict(out, probs=steps.eval_scores(params, frozen, batch["video"], model=model_def))

  return predict


class Evaluator:
  """Scores a split with the current parameters, all processes together.

  view: pipeline.CentreClip (validation: one clip per video, drawn as in training
  with a fixed seed, so every validation sees the same clips) or pipeline.Views
  (the test's clips × crops, docs/method.md#validation-and-test-views). Every
  process reads its share of the videos; the scores of all come back to every
  process. classes: the dataset's class names, when it has a label map.
  """

  def __init__(self, predict: Callable, mesh, *, data: common.Data, view, views: int,
               name: str, classes: list[str] | None = None):
    self.predict, self.mesh, self.data, self.view = predict, mesh, data, view
    self.views, self.name, self.classes = views, name, classes

  def scores(self, state: dict) -> dict:
    """Averaged scores of every video of the split: probs, label, valid, index, skipped."""
    records = self.data.open()
    parts = [self.predict(state["params"], state["frozen"], batch)
             for batch in common.device_batches(records, self.view, self.data, self.mesh,
                                                self.name)]
    out = {k: np.concatenate([np.asarray(p[k]) for p in parts]) for k in parts[0]}
    # Padding elements and other processes' strides come back in any order.
    keep = out["index"] < len(records)
    order = np.argsort(out["index"][keep])
    return {k: v[keep][order] for k, v in out.items()}

  def run(self, state: dict) -> Iterator[tuple[str, Any]]:
    """top1, top5, views, videos, skipped; then per_class, class_counts, confusion,
    classes (with a label map) and the per-video scores."""
    out = self.scores(state)
    summary = summarize(out["probs"], out["label"], out["valid"])
    yield from ((k, summary[k]) for k in ("top1", "top5"))
    yield "views", self.views
    yield "videos", summary["videos"]
    yield "skipped", int(out["skipped"].sum())
    if self.classes:
      yield "classes", self.classes
    yield from ((k, summary[k]) for k in ("per_class", "class_counts", "confusion"))
    yield "scores", dict(probs=out["probs"], labels=out["label"], valid=out["valid"],
                         index=out["index"])

  @staticmethod
  def describe(row: dict) -> str:
    return (f"top-1 {row['top1']:.4f}, top-5 {row['top5']:.4f} ({row['videos']} videos × "
            f"{row['views']} views)")
