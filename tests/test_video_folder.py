"""video_folder: the user's own videos, built from class folders or a CSV, split by folder
or by a seeded draw, several side by side; its label map names the classes of a run."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from amd_jax import config_files, errors, tasks, train
from amd_jax.analysis import per_class
from amd_jax.data import decode, sources
from amd_jax.data.builders import moving_digits, video_folder
from runs import ROOT

CLASSES = ("jump", "run", "wave")


def clip(label: int, index: int) -> bytes:
  """A real 16-frame 32×32 H.264 mp4: a bar whose colour is the class, moving with time."""
  frames = np.zeros((16, 32, 32, 3), np.uint8)
  for t in range(16):
    frames[t, :, (t + index) % 24:(t + index) % 24 + 8, label] = 200
  return decode.encode(frames)


def write(path, data: bytes) -> str:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "wb") as f:
    f.write(data)
  return str(path)


def class_folders(root, per_class_count=4, suffix=".mp4"):
  for label, name in enumerate(CLASSES):
    for i in range(per_class_count):
      write(os.path.join(root, name, f"{i}{suffix}"), clip(label, i))
  return str(root)


def paths(records) -> list[str]:
  return sorted(os.path.basename(os.path.dirname(r["path"].decode())) + "/"
                + os.path.basename(r["path"].decode()) for r in records)


def test_class_folders_and_a_seeded_split(tmp_path):
  raw = class_folders(tmp_path / "mine", 10, suffix=".MP4")     # extensions in any case
  b = sources.prepare("video_folder", str(tmp_path / "a"), raw, config="mine",
                      val_fraction=0.1, test_fraction=0.2, split_seed=0)
  assert b.data_dir == str(tmp_path / "a" / "video_folder" / "mine" / "1.0.0")
  assert sources.class_names(b) == list(CLASSES)
  sizes = {s: info.num_examples for s, info in b.info.splits.items()}
  assert sizes == {"train": 21, "val": 3, "test": 6}         # round(0.1 × 30), round(0.2 × 30)
  assert "pool of 30" in b.info.metadata["summary"]
  splits = {s: paths(b.as_data_source(s)) for s in sizes}
  assert sorted(sum(splits.values(), [])) == sorted(f"{c}/{i}.MP4" for c in CLASSES
                                                   for i in range(10))
  for r in b.as_data_source("train"):
    assert CLASSES[int(r["label"])] == r["path"].decode().split("/")[-2]
  same = sources.prepare("video_folder", str(tmp_path / "b"), raw, config="mine",
                         val_fraction=0.1, test_fraction=0.2, split_seed=0)
  other = sources.prepare("video_folder", str(tmp_path / "c"), raw, config="mine",
                          val_fraction=0.1, test_fraction=0.2, split_seed=1)
  assert {s: paths(same.as_data_source(s)) for s in sizes} == splits
  assert paths(other.as_data_source("test")) != splits["test"]


def test_split_folders_and_csvs_with_a_header(tmp_path):
  raw = tmp_path / "raw"
  for split, n in (("train", 2), ("val", 1), ("test", 1)):
    class_folders(raw / split, n)
  b = sources.prepare("video_folder", str(tmp_path / "out"), str(raw), config="folders")
  assert {s: i.num_examples for s, i in b.info.splits.items()} == {"train": 6, "val": 3,
                                                                  "test": 3}
  assert "pool" not in b.info.metadata["summary"]
  # A CSV per split: a header, a path relative to the CSV and an absolute one.
  lists = tmp_path / "lists"
  absolute = write(tmp_path / "elsewhere" / "w.webm", clip(2, 0))
  write(lists / "v" / "a.mp4", clip(0, 0))
  write(lists / "v" / "b.mkv", clip(1, 0))
  (lists / "train.csv").write_text(f"path,class_name\nv/a.mp4,jump\nv/b.mkv,run\n"
                                   f"{absolute},wave\n")
  (lists / "test.csv").write_text("v/b.mkv,run\n")
  b = sources.prepare("video_folder", str(tmp_path / "out"), str(lists), config="lists")
  assert sources.class_names(b) == list(CLASSES)
  assert {s: i.num_examples for s, i in b.info.splits.items()} == {"train": 3, "test": 1}
  assert int(b.as_data_source("test")[0]["label"]) == 1
  assert b.source_files(str(lists))[:2] == [str(lists / "train.csv"), str(lists / "test.csv")]


def test_several_folders_side_by_side(tmp_path):
  out = str(tmp_path / "out")
  with pytest.raises(errors.BadInput, match=r"no video folder is prepared in .*out: build one "
                     r"with `python -m amd_jax.data.build video_folder --manual_dir "
                     r"YOUR_VIDEOS`"):
    sources.open_split("video_folder", "train", out)
  raw = class_folders(tmp_path / "raw", 3)
  sources.prepare("video_folder", out, raw, config="first")
  assert len(sources.open_split("video_folder", "train", out)) > 0    # the only one: picked
  sources.prepare("video_folder", out, raw, config="second", val_fraction=0.0,
                  test_fraction=0.0)
  assert len(sources.open_split("video_folder/second", "train", out)) == 9
  with pytest.raises(errors.BadInput, match=r"2 video folders are prepared in .* \(first, "
                     r"second\): pick one with --config.data.name=video_folder/first"):
    sources.open_split("video_folder", "train", out)


def test_unlabelled_videos_serve_pretraining_only(tmp_path):
  raw = tmp_path / "raw"
  for i in range(5):
    write(raw / f"{i}.avi", clip(i % 3, i))
  out = str(tmp_path / "out")
  b = sources.prepare("video_folder", out, str(raw), config="free", val_fraction=0.0,
                      test_fraction=0.0)
  assert sources.class_names(b) is None
  assert [int(r["label"]) for r in b.as_data_source("train")] == [-1] * 5
  config = config_files.load("finetune", "data=video_folder,runlocal")
  config.data.data_dir = out
  with pytest.raises(errors.BadInput, match="dataset video_folder has no classes to "
                                            "fine-tune on: it was built from unlabelled"):
    tasks.of(config).prepare()


@pytest.mark.parametrize("layout, message", [
    ("empty_class", r"class folder .*/run holds no video \(mp4, webm, avi, mkv\)"),
    ("no_videos", r"raw holds no video; video_folder: expected class folders"),
    ("mixed_folder", r"raw mixes videos \(loose.mp4\) with class folders \(jump/\)"),
    ("mixed_splits", r"some splits have classes and some do not"),
    ("val_only_class", r"raw/val has class 'run', which train lacks"),
    ("mixed_csv", r"list.csv mixes rows with a class and rows without"),
    ("unknown_path", r"list.csv:3: .*/missing.mp4 does not exist"),
    ("csv_columns", r"list.csv:2: expected 'path,class_name' or 'path', got 'a.mp4,jump,x'"),
    ("too_few", r"2 videos are too few for --val_fraction 0.1"),
])
def test_bad_layouts_are_one_line(tmp_path, layout, message):
  raw = tmp_path / "raw"
  video = clip(0, 0)
  write(raw / "jump" / "a.mp4", video)
  if layout == "empty_class":
    os.makedirs(raw / "run")
  elif layout == "no_videos":
    os.remove(raw / "jump" / "a.mp4")
    os.rmdir(raw / "jump")
    (raw / "notes.txt").write_text("no videos here\n")
  elif layout == "mixed_folder":
    write(raw / "loose.mp4", video)
  elif layout == "mixed_splits":
    write(raw / "train" / "jump" / "a.mp4", video)
    write(raw / "val" / "b.mp4", video)
  elif layout == "val_only_class":
    write(raw / "train" / "jump" / "a.mp4", video)
    write(raw / "val" / "run" / "b.mp4", video)
  elif layout in ("mixed_csv", "unknown_path", "csv_columns"):
    rows = {"mixed_csv": "jump/a.mp4,jump\njump/a.mp4\n",
            "unknown_path": "path,class\njump/a.mp4,jump\nmissing.mp4,run\n",
            "csv_columns": "jump/a.mp4,jump\na.mp4,jump,x\n"}[layout]
    (raw / "list.csv").write_text(rows)
  elif layout == "too_few":
    write(raw / "run" / "b.mp4", video)
  with pytest.raises(errors.BadInput, match=message) as e:
    sources.prepare("video_folder", str(tmp_path / "out"), str(raw), config="x")
  assert "\n" not in str(e.value)


def test_build_command_counts_and_lists_an_undecodable_file(tmp_path):
  raw = class_folders(tmp_path / "clips", 3)
  write(os.path.join(raw, "run", "broken.mp4"), b"not a video at all")
  out = str(tmp_path / "out")
  cmd = [sys.executable, "-m", "amd_jax.data.build", "video_folder", f"--manual_dir={raw}",
         f"--data_dir={out}", "--val_fraction=0.2", "--test_fraction=0.2", "--workers=1"]
  result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  data = os.path.join(out, "video_folder", "clips", "1.0.0")     # --name: the folder's name
  assert result.stdout.strip().splitlines()[-1] == (
      f"video_folder prepared in {data}: train 6, val 1, test 2; 3 classes; val and test "
      "drawn from one pool of 10 (--val_fraction 0.2, --test_fraction 0.2, --split_seed 0); "
      f"1 undecodable left out, listed in {data}/bad_files.txt")
  with open(os.path.join(data, "bad_files.txt")) as f:
    assert f.read() == os.path.join(raw, "run", "broken.mp4") + "\n"
  # A bad layout from the command line: one line, exit 2.
  os.makedirs(tmp_path / "empty" / "jump")
  bad = subprocess.run([*cmd[:4], f"--manual_dir={tmp_path / 'empty'}", f"--data_dir={out}"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert bad.returncode == 2
  assert bad.stderr.strip().splitlines() == [
      f"error: class folder {tmp_path / 'empty' / 'jump'} holds no video (mp4, webm, avi, "
      "mkv): add some or remove it"]


def test_configs_take_video_folder_and_runlocal_keeps_it():
  for name in ("pretrain", "videomae", "finetune"):
    config = config_files.load(name, "data=video_folder,runlocal")
    assert config.data.name == "video_folder" and config.data.frames == 8
    assert config.data.split == "train"
    with pytest.raises(ValueError, match="runlocal picks its own data"):
      config_files.load(name, "data=k400,runlocal")
  assert config_files.load("finetune", "data=video_folder").data.num_classes == 0


def test_per_class_names_come_from_the_test_results(tmp_path):
  for run, accuracy in (("a", [1.0, 0.0, 0.5]), ("b", [1.0, 1.0, 0.0])):
    os.makedirs(tmp_path / run)
    (tmp_path / run / "test_results.json").write_text(json.dumps(dict(
        top1=0.5, per_class=accuracy, class_counts=[2, 2, 2], classes=list(CLASSES))))
  report = per_class.per_class_report(str(tmp_path / "a"), str(tmp_path / "b"),
                                      str(tmp_path / "out"))
  assert [r["cls"] for r in report["classes"]] == ["run", "jump", "wave"]


@pytest.mark.slow
def test_pretrain_finetune_and_test_on_a_video_folder(tmp_path):
  """build → AMD pre-training 2 steps → fine-tuning 2 steps from it → the test,
  whose results name the folder's classes."""
  out = str(tmp_path / "data")
  raw = class_folders(tmp_path / "raw", 4)
  sources.prepare("video_folder", out, raw, config="mine", val_fraction=0.25,
                  test_fraction=0.25)
  pre = config_files.load("pretrain", "data=video_folder,runlocal")
  pre.data.data_dir = out
  pre.update(total_steps=2, log_every=1, ckpt_every=2, progress=False)
  rows = train.train(pre, str(tmp_path / "pre"))
  assert [r["step"] for r in rows] == [1, 2] and all(np.isfinite(r["loss"]) for r in rows)

  ft = config_files.load("finetune", "data=video_folder,runlocal")
  ft.data.data_dir = out
  ft.update(init=str(tmp_path / "pre"), total_steps=2, log_every=1, ckpt_every=2,
            progress=False, batch_size=8, eval_batch_size=8)
  rows = train.train(ft, str(tmp_path / "ft"))
  assert ft.data.num_classes == 3                    # read from the label map
  test = [r for r in rows if r.get("split") == "test"]
  assert test and test[0]["videos"] == 3
  with open(tmp_path / "ft" / "test_results.json") as f:
    results = json.load(f)
  assert results["classes"] == list(CLASSES) and len(results["per_class"]) == 3


def test_a_rebuild_from_changed_files_names_the_folder(tmp_path):
  """The build records every video it read: an added one is a change, and the command
  that rebuilds names the folder (--name)."""
  raw = class_folders(tmp_path / "raw", 2)
  out = str(tmp_path / "out")
  b = sources.prepare("video_folder", out, raw, config="x", val_fraction=0.0,
                      test_fraction=0.0)
  assert b.source_files(raw) == sorted(os.path.join(raw, c, f"{i}.mp4") for c in CLASSES
                                       for i in range(2))
  sources.prepare("video_folder", out, raw, config="x")          # unchanged: nothing to do
  write(os.path.join(raw, "run", "new.mp4"), clip(1, 5))
  with pytest.raises(errors.BadInput, match=r"added: run/new.mp4\): rebuild it with `python "
                     r"-m amd_jax.data.build video_folder --name x --manual_dir .*/raw"):
    sources.prepare("video_folder", out, raw, config="x")
  with pytest.raises(errors.BadInput, match=r"dataset video_folder/y is not prepared in .*: "
                     r"build it with `python -m amd_jax.data.build video_folder --name y "):
    sources.open_split("video_folder/y", "train", out)


def test_num_classes_is_read_and_a_typed_one_checked(tmp_path):
  out = str(tmp_path / "out")
  sources.prepare("video_folder", out, class_folders(tmp_path / "raw", 2), config="x",
                  val_fraction=0.0, test_fraction=0.0)
  config = config_files.load("finetune", "data=video_folder")
  config.data.data_dir = out
  tasks.of(config).prepare()
  assert config.data.num_classes == 3
  config.data.num_classes = 5
  with pytest.raises(errors.BadInput, match="data.num_classes=5, but dataset video_folder has "
                                            "3 classes: leave data.num_classes at 0"):
    tasks.of(config).prepare()


def test_the_demo_folder_builds(tmp_path):
  assert video_folder.write_demo(str(tmp_path / "demo"), per_class=2) == 16
  b = sources.prepare("video_folder", str(tmp_path / "out"), str(tmp_path / "demo"),
                      config="demo")
  assert sources.class_names(b) == sorted(moving_digits.MOTIONS)
  # Written again (the README's commands run twice), the folder is the same source.
  video_folder.write_demo(str(tmp_path / "demo"), per_class=2)
  assert not b.source_changes(str(tmp_path / "demo"))


def test_an_undecodable_file_is_left_out_by_default(tmp_path):
  raw = class_folders(tmp_path / "raw", 2)
  bad = write(os.path.join(raw, "wave", "truncated.mp4"), clip(2, 9)[:300])
  b = sources.prepare("video_folder", str(tmp_path / "out"), raw, config="x",
                      val_fraction=0.0, test_fraction=0.0)
  assert b.info.splits["train"].num_examples == 6
  with open(os.path.join(b.data_dir, "bad_files.txt")) as f:
    assert f.read() == bad + "\n"
