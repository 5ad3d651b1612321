"""Classification evaluation: multi-view scores, top-k, per-class accuracy, confusion.

A video's score is the mean over its views (clips × crops) of each view's
softmax — softmax first, then the average (docs/method.md#validation-and-test-views).
Metrics count only valid videos (an undecodable test video is reported, never
replaced). Everything here is numpy on the host, after the device computed the
scores.
"""

from __future__ import annotations

import numpy as np


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
