"""AVA frame mAP against average precisions computed by hand, and the official file readers."""

import math

import numpy as np
import pytest

from amd_jax import errors
from amd_jax.data.builders import ava
from amd_jax.evaluators import ava_map

A, B, C, X = ("v", 902), ("v", 903), ("w", 902), ("w", 903)     # X is excluded


def frames(**by_key):
  """{key: (boxes, labels[, scores])} from lists of rows (box…, label[, score])."""
  out = {}
  for key, rows in by_key.items():
    a = np.asarray(rows, np.float64)
    parts = (a[:, :4], a[:, 4].astype(int)) + ((a[:, 5],) if a.shape[1] == 6 else ())
    out[{"A": A, "B": B, "C": C, "X": X}[key]] = parts
  return out


GT = frames(
    A=[[0, 0, .5, .5, 1], [.5, .5, 1, 1, 1],           # class 1: G1, G2
       [.1, .1, .4, .4, 2],                            # class 2
       [0, 0, 1, 1, 4]],                               # class 4: not evaluated
    B=[[.2, .2, .6, .6, 1],                            # class 1: G3
       [.5, .1, .9, .5, 2],                            # class 2
       [.3, .3, .5, .5, 5]],                           # class 5: never detected
    X=[[0, 0, 1, 1, 1]])                               # excluded: not counted
DETECTIONS = frames(
    A=[[0, 0, .5, .5, 1, .9],                          # d1 → G1: TP
       [.02, 0, .5, .5, 1, .8],                        # d2 → G1 again: duplicate, FP
       [.5, .5, 1, 1, 1, .6],                          # d3 → G2: TP
       [.1, .1, .4, .4, 2, .8],                        # e1: TP
       [.6, .6, .2, .9, 2, .99],                       # x2 < x1: dropped, not an FP
       [0, 0, 1, 1, 4, .9]],                           # class 4: ignored
    B=[[.6, .6, .9, .9, 1, .7],                        # d4: IoU 0 with G3, FP (G3 missed)
       [.5, .1, .9, .5, 2, .6]],                       # e2: TP
    C=[[0, 0, .5, .5, 1, .5],                          # d5: frame without truth, FP
       [0, 0, 1, 1, 2, .6],                            # e3: FP, ties with e2
       [0, 0, 1, 1, 3, .9]],                           # class 3 has no truth anywhere
    X=[[0, 0, 1, 1, 1, .95]])                          # excluded frame: dropped
CLASSES = (1, 2, 3, 5)


def test_frame_map_by_hand():
  """Class 1 (3 truths): by score .9 TP, .8 FP, .7 FP, .6 TP, .5 FP → precision
  1, 1/2, 1/3, 1/2, 2/5 at recall 1/3, 1/3, 1/3, 2/3, 2/3; made non-increasing:
  1, .5, .5, .5, .4; AP = 1/3·1 + 1/3·.5 = 0.5.

  Class 2 (2 truths): .8 TP, then the tie at .6 of e2 (TP, frame B) and e3 (FP,
  frame C): the later frame ranks first (the official argsort()[::-1] with a
  stable sort): TP, FP, TP → precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1 →
  AP = 1/2·1 + 1/2·2/3 = 5/6 (the other order would give 1).

  Class 3: no truth → NaN, out of the mean. Class 5: truth, no detection → 0.
  mAP = (1/2 + 5/6 + 0) / 3 = 4/9.
  """
  result = ava_map.frame_map(DETECTIONS, GT, CLASSES, excluded={X})
  ap = result["per_class"]
  assert ap[1] == pytest.approx(0.5)
  assert ap[2] == pytest.approx(5 / 6)
  assert math.isnan(ap[3]) and ap[5] == 0.0
  assert result["map"] == pytest.approx(4 / 9)


def test_excluded_frames_count_when_not_excluded():
  """Without the exclusion the truth in X is a 4th class-1 instance and X's .95
  detection ranks first as its TP: TP, TP, FP, FP, TP, FP over 4 truths →
  precision 1, 1, 2/3, 1/2, 3/5, 1/2 at recall 1/4, 1/2, 1/2, 1/2, 3/4, 3/4;
  non-increasing: 1, 1, 2/3, 3/5, 3/5, 1/2 → AP = 1/4 + 1/4 + 1/4·3/5 = 0.65."""
  result = ava_map.frame_map(DETECTIONS, GT, CLASSES)
  assert result["per_class"][1] == pytest.approx(0.65)


def test_top_detections_per_frame():
  """max_per_frame=2 keeps the two highest of the evaluated classes per frame before
  invalid boxes go (the ActivityNet script's order): A keeps the invalid .99 (then
  dropped) and d1; B d4 and e2; C class 3's .9 and e3.
  Class 1 (3 truths): .9 TP, .7 FP → AP 1/3.
  Class 2 (2 truths): the .6 tie, later frame first: e3 FP, e2 TP → precision 0,
  1/2 at recall 0, 1/2; non-increasing .5, .5 → AP 1/2·1/2 = 1/4.
  Class 5: 0. mAP = (1/3 + 1/4 + 0) / 3 = 7/36."""
  result = ava_map.frame_map(DETECTIONS, GT, CLASSES, excluded={X}, max_per_frame=2)
  assert result["per_class"][1] == pytest.approx(1 / 3)
  assert result["per_class"][2] == pytest.approx(1 / 4)
  assert result["map"] == pytest.approx(7 / 36)


def test_voc_ap_and_iou():
  # Precision 1/2 then 2/3 at recalls 1/2, 1: the right maximum lifts the first step.
  assert ava_map.average_precision(np.array([.9, .8, .7]), np.array([False, True, True]),
                                   2) == pytest.approx(2 / 3)
  assert ava_map.average_precision(np.zeros(0), np.zeros(0, bool), 3) == 0.0
  overlap = ava_map.iou(np.array([[0, 0, 2, 2]]), np.array([[1, 1, 3, 3], [5, 5, 5, 5]]))
  np.testing.assert_allclose(overlap, [[1 / 7, 0.0]])


def test_batch_detections():
  """Every valid box scores each of the 80 actions sigmoid(logit) × its detector score."""
  logits = np.zeros((1, 2, 80))
  logits[0, 0, 11] = 2.0
  out = ava_map.detections([A], np.array([[[0, 0, .5, .5], [0, 0, 1, 1]]]),
                           np.array([[True, False]]), logits, np.array([[0.9, 0.99]]))
  boxes, labels, scores = out[A]
  assert boxes.shape == (80, 4) and labels.tolist() == list(range(1, 81))
  assert scores[11] == pytest.approx(0.9 / (1 + math.exp(-2)))
  assert scores[0] == pytest.approx(0.45)


def test_official_files(tmp_path):
  (tmp_path / "map.pbtxt").write_text(
      'label {\n  name: "stand"\n  label_id: 12\n  label_type: PERSON_MOVEMENT\n}\n'
      'item {\n  name: "sit"\n  id: 11\n}\n')
  assert ava.read_labelmap(str(tmp_path / "map.pbtxt")) == {12: "stand", 11: "sit"}
  (tmp_path / "gt.csv").write_text("-5KQ66BBWC4,0902,0.1,0.2,0.3,0.4,12,0\n"
                                   "-5KQ66BBWC4,0902,0.1,0.2,0.3,0.4,80,0\n")
  gt = ava.read_groundtruth(str(tmp_path / "gt.csv"))
  assert gt[("-5KQ66BBWC4", 902)][1].tolist() == [12, 80]
  (tmp_path / "det.csv").write_text("-5KQ66BBWC4,0902,0.1,0.2,0.3,0.4,12,0.25\n")
  det = ava.read_detections(str(tmp_path / "det.csv"))
  assert det[("-5KQ66BBWC4", 902)][2].tolist() == [0.25]
  (tmp_path / "ex.csv").write_text("-5KQ66BBWC4,0902\n")
  assert ava.read_excluded(str(tmp_path / "ex.csv")) == {("-5KQ66BBWC4", 902)}
  (tmp_path / "bad.csv").write_text("-5KQ66BBWC4,0902,0.1\n")
  with pytest.raises(errors.BadInput, match=r"bad.csv:1: expected '-5KQ66BBWC4,0902"):
    ava.read_groundtruth(str(tmp_path / "bad.csv"))
