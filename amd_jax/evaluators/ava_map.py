"""AVA frame-level mAP@0.5 IoU, the official evaluation in numpy
(docs/method.md#ava-action-detection).

The protocol of the ActivityNet AVA evaluation (`get_ava_performance.py` with
the TF object-detection `PascalDetectionEvaluator`), as VideoMAE-AVA runs it
through alphaction's copy:

* frames are keys (video id, timestamp); every (box, action) pair is one
  detection or one ground-truth instance; only the classes of the label map
  (the 60 of `ava_action_list_v2.2_for_activitynet_2019.pbtxt`) count;
  excluded timestamps are dropped from both sides;
* per frame and class, detections with x2 ≤ x1 or y2 ≤ y1 are dropped, the rest
  taken by descending score; each one is matched to the ground-truth box of its
  class with the highest IoU (the first on ties): a true positive when that IoU
  is ≥ 0.5 and the box is not matched yet, else a false positive — so a second
  detection of an already matched box is a false positive even if another
  unmatched box overlaps it by ≥ 0.5 (Pascal VOC);
* per class, all detections by descending score give precision/recall; AP is
  the all-point VOC area: precision made non-increasing from the right, summed
  over the recall steps (`metrics.compute_average_precision`). A class with no
  ground truth has no AP (NaN) and stays out of the mean; a class with ground
  truth and no detection has AP 0.

Ties in score: the official code sorts with `np.argsort(scores)[::-1]`, per
frame (its box-list sort) and then per class over the frames' lists joined in
the order the frames come; numpy's default sort is not stable, so the order of
equal scores is unspecified there. Here the same expressions run with a
stable sort: equal scores of different frames rank the later frame first,
within a frame the first given first — the official result wherever numpy's
sort happens to keep equal scores in place, and deterministic always.

IoU has no +1 (boxes are normalised). alphaction keeps every (box, class)
score, the ActivityNet script only the 50 highest per frame: `max_per_frame`.

The official files (ground truth, exclusions, label map, detection CSVs) are
read by amd_jax/data/builders/ava.py.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping

import numpy as np

IOU_THRESHOLD = 0.5

# frame key → (boxes (n, 4) x1 y1 x2 y2, action ids (n,), scores (n,))
Detections = Mapping[Hashable, tuple[np.ndarray, np.ndarray, np.ndarray]]
# frame key → (boxes (n, 4), action ids (n,))
GroundTruth = Mapping[Hashable, tuple[np.ndarray, np.ndarray]]


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """(n, m) IoU of boxes a (n, 4) and b (m, 4), x1 y1 x2 y2; 0 where the union is empty."""
  a, b = np.asarray(a, np.float64)[:, None], np.asarray(b, np.float64)[None]
  w = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
  h = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
  inter = w * h
  area = lambda x: (x[..., 2] - x[..., 0]) * (x[..., 3] - x[..., 1])
  union = area(a) + area(b) - inter
  return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def _descending(scores: np.ndarray) -> np.ndarray:
  return np.argsort(scores, kind="stable")[::-1]


def _true_positives(boxes: np.ndarray, truth: np.ndarray) -> np.ndarray:
  """Flags of one frame's detections of one class, taken in the order given (by score)."""
  tp = np.zeros(len(boxes), bool)
  overlap = iou(boxes, truth)
  taken = np.zeros(len(truth), bool)
  for i, j in enumerate(overlap.argmax(axis=1)):
    if overlap[i, j] >= IOU_THRESHOLD and not taken[j]:
      tp[i] = taken[j] = True
  return tp


def average_precision(scores: np.ndarray, tp: np.ndarray, num_truth: int) -> float:
  """All-point VOC AP of detections (scores, true-positive flags) against num_truth boxes."""
  if not len(scores):
    return 0.0
  hits = tp[_descending(scores)].astype(np.float64)
  cum = np.cumsum(hits)
  precision = cum / np.arange(1, len(hits) + 1)
  recall = cum / num_truth
  precision = np.concatenate([[0.0], precision, [0.0]])
  recall = np.concatenate([[0.0], recall, [1.0]])
  precision = np.maximum.accumulate(precision[::-1])[::-1]
  steps = np.nonzero(recall[1:] != recall[:-1])[0] + 1
  return float(np.sum((recall[steps] - recall[steps - 1]) * precision[steps]))


def frame_map(detections: Detections, groundtruth: GroundTruth, class_ids: Iterable[int],
              excluded: Iterable[Hashable] = (), max_per_frame: int | None = None) -> dict:
  """{"map": mean AP over the classes with ground truth, "per_class": {id: AP or NaN}}.

  detections / groundtruth: per frame key (any hashable, e.g. (video id,
  timestamp)), boxes normalised x1 y1 x2 y2 with their action ids (and
  scores). class_ids: the evaluated action ids; excluded: frame keys to drop.
  max_per_frame: keep only that many highest-scoring detections per frame
  (of the evaluated classes; 50 in the ActivityNet script, none in
  VideoMAE-AVA's evaluation).
  """
  classes = sorted(set(int(c) for c in class_ids))
  excluded = set(excluded)
  truth = {}                           # frame → (boxes, labels) of the evaluated classes
  count = dict.fromkeys(classes, 0)
  for key, (boxes, labels) in groundtruth.items():
    if key in excluded:
      continue
    boxes, labels = np.asarray(boxes, np.float64).reshape(-1, 4), np.asarray(labels)
    keep = np.isin(labels, classes)
    truth[key] = boxes[keep], labels[keep]
    for c in labels[keep]:
      count[int(c)] += 1
  parts = []                           # per frame: (labels, scores, true positives), by score
  for key, frame in detections.items():
    if key in excluded:
      continue
    boxes, labels, scores = (np.asarray(frame[0], np.float64).reshape(-1, 4),
                             np.asarray(frame[1]), np.asarray(frame[2], np.float64))
    keep = np.isin(labels, classes)
    boxes, labels, scores = boxes[keep], labels[keep], scores[keep]
    order = _descending(scores)[:max_per_frame]
    boxes, labels, scores = boxes[order], labels[order], scores[order]
    valid = (boxes[:, 0] < boxes[:, 2]) & (boxes[:, 1] < boxes[:, 3])
    boxes, labels, scores = boxes[valid], labels[valid], scores[valid]
    tp = np.zeros(len(scores), bool)
    # Only classes with truth in this frame need matching; the rest are false positives.
    true_boxes, true_labels = truth.get(key, (np.zeros((0, 4)), np.zeros(0, int)))
    for c in np.unique(true_labels):
      rows = np.nonzero(labels == c)[0]
      if len(rows):
        tp[rows] = _true_positives(boxes[rows], true_boxes[true_labels == c])
    parts.append((labels, scores, tp))
  labels, scores, tp = (np.concatenate([p[k] for p in parts]) if parts else np.zeros(0)
                        for k in range(3))
  per_class = {}
  for c in classes:
    mine = labels == c
    per_class[c] = (average_precision(scores[mine], tp[mine].astype(bool), count[c])
                    if count[c] else math.nan)
  aps = [ap for ap in per_class.values() if not math.isnan(ap)]
  return {"map": float(np.mean(aps)) if aps else math.nan, "per_class": per_class}


def detections(keys: Iterable[Hashable], boxes: np.ndarray, box_valid: np.ndarray,
               logits: np.ndarray, box_scores: np.ndarray) -> dict:
  """Detections of a batch of test clips, as VideoMAE-AVA scores them.

  keys: the B frame keys; boxes (B, M, 4): the proposals normalised on the frame
  and not enlarged (amd_jax/data/ava_pipeline.TestSample's `proposals`); box_valid
  (B, M); logits (B, M, 80); box_scores (B, M): the person detector's scores.
  Every valid box is a detection of each of the 80 actions (id j + 1) with score
  sigmoid(logit_j) × box score; a frame without a valid box (batch padding, an
  undecodable clip) adds nothing.
  """
  out = {}
  classes = np.arange(1, logits.shape[-1] + 1)
  for key, b, v, lg, sc in zip(keys, boxes, box_valid, logits, box_scores):
    if not v.any():
      continue
    prob = 1.0 / (1.0 + np.exp(-np.asarray(lg[v], np.float64))) * np.asarray(sc[v])[:, None]
    n = int(v.sum())
    out[key] = (np.repeat(np.asarray(b[v], np.float64), len(classes), axis=0),
                np.tile(classes, n), prob.reshape(-1))
  return out
