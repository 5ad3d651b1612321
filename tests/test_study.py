"""The embedded study (amd_jax/proj/study/): a smoke-size teacher release and its
smallest study end to end, a rerun that trains nothing, the release checks, the
results table on constructed records, and its reconstruction diagnostics by hand."""

import json
import math
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from amd_jax import errors, masking, metrics
from amd_jax.analysis import reconstruction
from amd_jax.data import pipeline, sources
from amd_jax.data.builders import moving_digits
from amd_jax.proj.study import chains as chains_lib
from amd_jax.proj.study import diagnostics, recipe, run
from amd_jax.proj.study import release as release_lib
from runs import ROOT

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _study(root, env, *extra):
  return subprocess.run([sys.executable, "-m", "amd_jax.proj.study", "--workdir", str(root),
                         "--size", "smoke", *extra], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=900)


@pytest.fixture(scope="module")
def release(tmp_path_factory, env):
  """A smoke-size teacher made by the documented command."""
  root = tmp_path_factory.mktemp("teacher")
  result = _study(root / "work", env, "--make-teacher", str(root / "release"))
  assert result.returncode == 0, result.stderr[-3000:]
  return root / "release"


@pytest.fixture(scope="module")
def smoke(tmp_path_factory, env, release):
  root = tmp_path_factory.mktemp("study")
  result = _study(root, env, "--teacher", str(release))
  assert result.returncode == 0, result.stderr[-3000:]
  return root


def _training_files(root):
  """path → mtime of every file a training stage writes (metrics, checkpoints, records)."""
  out = {}
  for folder, _, files in os.walk(root):
    if os.sep + "pretrain" in folder or os.sep + "finetune" in folder:
      for name in files:
        path = os.path.join(folder, name)
        out[path] = os.stat(path).st_mtime_ns
  return out


@pytest.mark.slow
def test_teacher_release_has_its_card_and_weights(release):
  card = json.loads((release / release_lib.CARD_FILE).read_text())
  assert card["recipe"] == {"variant": "Mu/8x2", "image_size": 32, "steps": 2, "batch_size": 8,
                            "base_lr": 0.1, "finetune_base_lr": 6e-2, "clip_norm": 0.0}
  assert card["config"]["optim"]["clip_norm"] == 0.0 and card["config"]["optim"]["base_lr"] == 0.1
  assert card["data"] == f"moving_digits {moving_digits.MovingDigits.VERSION}"
  # The command as it was typed (the fixture's arguments), not rewritten with this
  # machine's absolute paths.
  work = str(release.parent / "work")
  assert card["command"] == (f"python -m amd_jax.proj.study --workdir {work} --size smoke "
                             f"--make-teacher {release}")
  assert card["pretrain"]["steps"] == 2
  assert set(card["finetune"]) == {"smoke"} and card["finetune"]["smoke"]["views"] > 1
  assert 0 <= card["probe"]["test_top1"] <= 1
  loss = card["reconstruction_loss"]
  assert set(loss) == {"zero", "neighbour_copy", "flat_copy", "flat_copy_where_flat",
                       "teacher"} and 0.0 < loss["zero"] < 1.0
  assert (release / "checkpoint" / "model.json").is_file()
  assert (release / "metrics.jsonl").is_file()
  assert (release / "reconstructions.png").read_bytes()[:8] == PNG_MAGIC
  assert not (release.parent / "release.partial").exists()


@pytest.mark.slow
def test_smoke_study_writes_results_and_every_plot(smoke, release):
  results = json.loads((smoke / "results.json").read_text())
  assert results["study"]["seeds"] == [0]
  assert results["study"]["teacher_release"]["path"] == str(release)
  assert results["study"]["machine"]["cpu"]                # bit-reproducible on one CPU kind
  models = results["models"]
  assert set(models) == set(recipe.MODELS)
  for name, method in recipe.STUDENTS.items():
    m = models[name]
    assert 0 <= m["top1"] <= m["top5"] <= 1, m
    assert m["views"] > 1                                   # multi-view test
    assert m["finetune_steps"] == 2 and m["finetune_time_s"] > 0
    assert m["top1_std"] is None                            # one seed
    assert 0 <= m["probe_top1"] <= 1                        # scratch: its random weights
    assert sorted(m["probe_blocks"]) == ["1", "2", "3", "4"]  # Mu: after each of 4 blocks
    assert m["runs"][0]["probe_blocks"] == m["probe_blocks"]  # one seed: its own values
    if method:
      assert m["pretrain_steps"] == 2 and m["pretrain_time_s"] > 0
    else:                                                   # the control: no pre-training
      assert m["pretrain_steps"] == 0 and m["pretrain_time_s"] is None
  teacher = models["teacher"]
  assert teacher["pretrain_steps"] == 2 and 0 <= teacher["top1"] <= 1
  assert 0 <= teacher["probe_top1"] <= 1 and "card" in teacher["note"]
  for name in run.PLOTS:
    assert (smoke / name).read_bytes()[:8] == PNG_MAGIC, name
  distances = json.loads((smoke / "attention_distance.json").read_text())["models"]
  assert set(distances) == {"teacher", "amd_student", "videomae_student"}
  assert len(distances["amd_student"]["distance"]) == 4      # Mu: 4 layers × 2 heads
  assert len(distances["amd_student"]["distance"][0]) == 2
  per_class = json.loads((smoke / "per_class.json").read_text())
  assert len(per_class["classes"]) == 8
  recon = json.loads((smoke / "reconstructions.json").read_text())["loss"]
  assert set(recon) == {"zero", "neighbour_copy", "flat_copy", "flat_copy_where_flat",
                        "teacher", "amd_student", "videomae_student"}
  probes = json.loads((smoke / run.PROBE_FILE).read_text())["models"]
  assert set(probes) == {"teacher", "amd_student/seed_0", "videomae_student/seed_0",
                         "scratch_student/seed_0"}
  assert probes["scratch_student/seed_0"]["checkpoint"] == "random initial weights"
  assert models["teacher"]["probe_blocks"]["4"] == probes["teacher"]["blocks"]["4"]["test_top1"]


@pytest.mark.slow
def test_rerun_on_a_finished_dir_trains_nothing(smoke, env, release):
  before = _training_files(smoke)
  plots = {name: (smoke / name).stat().st_mtime_ns for name in run.PLOTS}
  result = _study(smoke, env, "--teacher", str(release))
  assert result.returncode == 0, result.stderr[-3000:]
  stage_lines = [l for l in result.stderr.splitlines() if l.startswith("  ")]
  assert stage_lines and all(l.endswith("skipped") for l in stage_lines), stage_lines
  assert _training_files(smoke) == before
  assert plots == {name: (smoke / name).stat().st_mtime_ns for name in run.PLOTS}
  assert "amd_student" in result.stdout                      # the table is printed again


@pytest.mark.slow
def test_a_release_made_otherwise_is_refused(release, tmp_path, env):
  with pytest.raises(errors.BadInput, match="'default' study needs"):
    release_lib.read_release(str(release), "default")
  with pytest.raises(errors.BadInput, match="not a teacher release"):
    release_lib.read_release(str(tmp_path), "smoke")
  result = _study(tmp_path / "again", env, "--make-teacher", str(release))
  assert result.returncode == 2 and result.stderr.strip().splitlines()[-1].startswith("error: ")


def test_the_shipped_teacher_serves_default_and_full():
  """The release in the package fits both long sizes; its card holds its fine-tuned
  top-1 with the default protocol (--full measures its own) and its probe."""
  for size in ("default", "full"):
    card = release_lib.read_release(release_lib.RELEASED_TEACHER, size)
  assert card["finetune"]["default"]["top1"] is not None
  assert card["probe"]["test_top1"] is not None
  assert os.path.isfile(os.path.join(release_lib.RELEASED_TEACHER, "checkpoint", "model.json"))


def test_results_name_the_packaged_release_the_same_on_every_machine(tmp_path, monkeypatch):
  """results.json is committed: the packaged release is named by its place in the
  repository whatever path reached it; another release by the path given."""
  monkeypatch.chdir(os.path.dirname(release_lib.RELEASED_TEACHER))
  for path in (release_lib.RELEASED_TEACHER, "teacher", "./teacher/"):
    assert run._release_name(path) == "amd_jax/proj/study/teacher"
  assert run._release_name(str(tmp_path)) == str(tmp_path)


def test_another_size_on_a_study_dir_is_refused(tmp_path):
  run._check_size(str(tmp_path), "smoke")
  run._check_size(str(tmp_path), "smoke")                  # the same size resumes
  with pytest.raises(errors.BadInput, match="holds a 'smoke' study"):
    run._check_size(str(tmp_path), "full")


@pytest.mark.parametrize("workdir", ["a_file", "a_file/under_it"])
def test_a_workdir_that_is_a_file_is_one_line(tmp_path, env, workdir):
  """Refused like a training run's workdir, before any teacher, data or model is read."""
  (tmp_path / "a_file").write_text("not a folder")
  # The default size: the shipped teacher fits it, so nothing else stops the study first.
  result = subprocess.run([sys.executable, "-m", "amd_jax.proj.study", "--workdir",
                           str(tmp_path / workdir)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
  lines = [l for l in result.stderr.splitlines() if l.strip()]
  assert result.returncode == 2 and len(lines) == 1, result.stderr[-3000:]
  assert lines[0].startswith(f"error: workdir {tmp_path / workdir} ")
  assert ("is a file" if workdir == "a_file" else "cannot be created") in lines[0]
  assert (tmp_path / "a_file").read_text() == "not a folder"


def _record(top1, time_s=10.0):
  return {"done": True, "time_s": time_s, "steps": 5, "top1": top1, "top5": 1.0, "views": 6}


def test_results_over_seeds_are_mean_and_sample_std():
  runs = [{"seed": s, "pretrain": {"done": True, "time_s": t, "steps": 7},
           "finetune": _record(top1, time_s=2 * t),
           "probe_blocks": {"1": top1 / 2, "2": 0.25}}
          for s, top1, t in ((0, 0.5, 10.0), (1, 0.7, 20.0), (2, 0.6, 30.0))]
  row = run.summarize(runs, "Mu/8x2")
  assert row["top1"] == pytest.approx(0.6)
  assert row["top1_std"] == pytest.approx(0.1)              # sample std of 0.5, 0.7, 0.6
  assert row["probe_blocks"] == pytest.approx({"1": 0.3, "2": 0.25})
  assert row["probe_blocks_std"] == pytest.approx({"1": 0.05, "2": 0.0})
  assert row["pretrain_time_s"] == pytest.approx(20.0)
  assert row["finetune_time_s"] == pytest.approx(40.0)
  assert (row["pretrain_steps"], row["finetune_steps"], row["views"]) == (7, 5, 6)
  assert [r["top1"] for r in row["runs"]] == [0.5, 0.7, 0.6]
  text = run.table({"amd_student": row})
  assert "0.600 ± 0.100" in text and "7 steps, 20 s" in text


def test_losses_split_flat_and_structured_tubes_by_hand():
  """Grid 1 × 2 × 2 of 8-pixel patches, tubelet 2. Tubes 0 and 1 are the background
  (one colour, ±5 grey levels between the two frames: the flicker), 2 and 3 hold a
  random texture; the student sees tube 0. Normalised per patch and channel (128
  pixels, unbiased std + 1e-6), a tube's target has mean square 127/128 less the
  epsilon's share: the zero predictor's loss. Copying tube 0's target is exact on
  the flat tube 1, and so is flat_copy (tube 0 is the one visible flat tube). A
  model predicting 0 ("blank") is as far from flat_copy on the textured tubes as
  on the flat one: the flicker's mean square. Over all tubes the losses are the
  library's."""
  rng = np.random.default_rng(0)
  video = np.full((1, 2, 16, 16, 3), 100, np.float32)
  video[:, 0, :, :] += 5                           # the flicker: +5, then −5
  video[:, 1, :, :] -= 5
  video[:, :, 8:, :] = rng.integers(0, 256, (1, 2, 8, 16, 3))   # tubes 2 and 3
  video = video.astype(np.uint8)
  flat = diagnostics.flat_tubes(video, 8, 2)
  np.testing.assert_array_equal(flat, [[True, True, False, False]])
  s, h = masking.STUDENT, masking.HIDDEN
  codes = np.array([[s, h, h, h]])
  blank = lambda video, idx: {"pred": np.zeros(idx.masked.shape + (8 * 8 * 2 * 3,))}
  losses, share, distances = diagnostics.split_losses({"blank": blank}, video, codes, 8, 2)
  assert share == pytest.approx(1 / 3)
  # A flat tube's pixels are ±5/255 about its mean; the 1e-6 on its std counts there.
  amplitude = 5 / 255
  flicker = amplitude ** 2 / (amplitude * math.sqrt(128 / 127) + 1e-6) ** 2
  assert losses["flat"]["zero"] == pytest.approx(flicker, rel=1e-5)
  assert losses["structured"]["zero"] == pytest.approx(127 / 128, rel=1e-5)
  assert losses["all"]["zero"] == pytest.approx((flicker + 2 * 127 / 128) / 3, rel=1e-5)
  assert losses["flat"]["neighbour_copy"] == pytest.approx(0, abs=1e-6)
  assert losses["structured"]["neighbour_copy"] > 0.5       # the flicker is not a texture
  assert losses["all"]["neighbour_copy"] == pytest.approx(
      (losses["flat"]["neighbour_copy"] + 2 * losses["structured"]["neighbour_copy"]) / 3,
      rel=1e-5)
  assert losses["flat"]["flat_copy"] == pytest.approx(0, abs=1e-6)
  assert losses["structured"]["flat_copy"] == pytest.approx(
      losses["structured"]["neighbour_copy"], rel=1e-5)   # the nearest visible is tube 0
  assert losses["flat"]["flat_copy_where_flat"] == pytest.approx(0, abs=1e-6)
  assert losses["structured"]["flat_copy_where_flat"] == pytest.approx(127 / 128, rel=1e-5)
  assert losses["all"]["blank"] == pytest.approx(losses["all"]["zero"], rel=1e-6)
  assert distances["flat"]["blank"] == pytest.approx(flicker, rel=1e-5)
  assert distances["structured"]["blank"] == pytest.approx(flicker, rel=1e-5)
  library = reconstruction.masked_pixel_losses({"blank": blank}, video, codes, 8, 2)
  assert library == pytest.approx({name: losses["all"][name] for name in library}, rel=1e-6)


def test_flat_copy_is_the_mean_of_the_visible_flat_tubes_or_zero():
  s, h = masking.STUDENT, masking.HIDDEN
  targets = np.array([[[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [7.0, 8.0]],
                      [[1.0, 1.0], [1.0, 1.0], [1.0, 1.0], [1.0, 1.0]]])
  codes = np.array([[s, s, s, h], [h, s, h, h]])
  flat = np.array([[True, True, False, True], [True, False, True, True]])
  # Clip 0: visible flat tubes 0 and 1 (tube 2 is visible, not flat; 3 flat, hidden).
  # Clip 1: its one visible tube is not flat, so nothing is read: 0.
  np.testing.assert_array_equal(diagnostics.flat_copy(targets, codes, flat),
                                [[2.0, 3.0], [0.0, 0.0]])


def test_a_tube_is_flat_up_to_the_noise_of_h264():
  video = np.full((1, 2, 8, 8, 3), 100, np.uint8)
  video[0, 0, 0, 0, 0] += diagnostics.FLAT_RANGE       # noise: still flat
  assert diagnostics.flat_tubes(video, 8, 2).tolist() == [[True]]
  video[0, 1, 3, 3, 2] += diagnostics.FLAT_RANGE + 1   # a faint stroke in frame 1
  assert diagnostics.flat_tubes(video, 8, 2).tolist() == [[False]]


def test_schedules_make_the_requested_steps():
  """Fractional epochs: the configs' schedule arithmetic lands on the size's step counts."""
  size = recipe.SIZES["default"]
  for config, steps, per_epoch in (
      (recipe.teacher_config(size), size.teacher.steps, recipe.TRAIN_VIDEOS // 8 / 4),
      (recipe.student_config(size, "amd", 0, teacher="t"), size.student_steps,
       recipe.TRAIN_VIDEOS // 2 / 4),
      (recipe.finetune_config_for(size, size.student, "init", 0), size.finetune_steps,
       recipe.TRAIN_VIDEOS // 16),
      (recipe.finetune_config_for(size, size.student, "init", 0,
                                  overrides=recipe.FINETUNE_ABLATIONS["labels"]["64"]),
       size.finetune_steps, 64 // 16)):
    assert round(config.optim.epochs * per_epoch) == steps


def test_the_teacher_recipe_reaches_its_config():
  """The release's lr and gradient clipping (Teacher in recipe.py) are the teacher run's."""
  size = recipe.SIZES["default"]
  config = recipe.teacher_config(size)
  assert (config.optim.base_lr, config.optim.clip_norm) == (0.025, 0.02)
  assert (size.teacher.base_lr, size.teacher.clip_norm) == (0.025, 0.02)
  assert recipe.teacher_config(recipe.SIZES["smoke"]).optim.clip_norm == 0.0


def test_ablation_settings_are_config_keys():
  size = recipe.SIZES["smoke"]
  for name, settings in recipe.ABLATIONS.items():
    assert sum(not values for values in settings.values()) == 1, name   # one is the study's
    for values in settings.values():
      recipe.student_config(size, "amd", 0, overrides=values)
  with pytest.raises(errors.BadInput, match="unknown config key"):
    recipe.student_config(size, "amd", 0, overrides={"align.methd": "direct"})
  for name, settings in recipe.FINETUNE_ABLATIONS.items():
    assert sum(not values for values in settings.values()) == 1, name
    for values in settings.values():
      recipe.finetune_config_for(size, size.student, "", 0, overrides=values)
  assert not set(recipe.ABLATIONS) & set(recipe.FINETUNE_ABLATIONS)   # one --ablation NAME each


def test_fewer_labels_are_the_first_videos_of_every_class():
  """labels=64: the train split's first 8 videos of each motion, in the split's order."""
  config = recipe.finetune_config_for(recipe.SIZES["default"], "Mu/8x2", "", 0,
                                      overrides=recipe.FINETUNE_ABLATIONS["labels"]["64"])
  assert (config.data.per_class, config.data.train_videos) == (8, 64)
  records = pipeline.source(config)
  assert len(records) == 64
  labels = [int(r["label"]) for r in records]
  assert np.bincount(labels, minlength=8).tolist() == [8] * 8
  split = sources.open_split("moving_digits", "train")
  ours = [r["path"] for r in records]
  first = [r["path"] for r in (split[i] for i in range(len(split)))
           if r["path"] in set(ours)]
  assert ours == first                               # in the split's order
  late = next(i for i in range(len(split)) if split[i]["path"] not in set(ours))
  assert labels.count(int(split[late]["label"])) == 8  # skipped only once its class was full


def test_a_stage_stopped_early_is_not_done(tmp_path, monkeypatch):
  """SIGTERM: train() returns early with a checkpoint; the stage is neither done nor
  skipped next time, and the time of the attempt is kept."""
  def stopped_at_3(config, workdir):
    (tmp_path / "metrics.jsonl").write_text(
        "".join(json.dumps({"step": s, "loss": 1.0}) + "\n" for s in (1, 2, 3)))
  monkeypatch.setattr(chains_lib.train, "train", stopped_at_3)
  with pytest.raises(chains_lib.Stopped, match="step 3 of 5"):
    chains_lib.run_training("stage", None, str(tmp_path), steps=5)
  record = json.loads((tmp_path / chains_lib.STAGE_FILE).read_text())
  assert record["done"] is False and record["time_s"] >= 0


def _scratch_chains(root, release, seeds=(0, 1)):
  layout = run.Layout(str(root))
  return [run.student_chain(layout, recipe.SIZES["smoke"], seed, "scratch_student",
                              str(release / "checkpoint")) for seed in seeds]


def _losses(workdir):
  return [(r["step"], r["loss"]) for r in metrics.read_rows(workdir) if "loss" in r]


@pytest.mark.slow
def test_chains_in_worker_processes_train_what_one_process_does(tmp_path, release):
  """--jobs 2 runs the chains in two spawned processes: the same losses and test
  top-1 as one after the other in this process; a rerun reads their records."""
  here = chains_lib.run_chains(_scratch_chains(tmp_path / "one", release), jobs=1)
  there = chains_lib.run_chains(_scratch_chains(tmp_path / "two", release), jobs=2)
  for seed, (a, b) in enumerate(zip(here, there)):
    assert a[-1]["top1"] == b[-1]["top1"] and a[-1]["steps"] == b[-1]["steps"] == 2
    one = str(tmp_path / "one" / f"seed_{seed}" / "scratch_student" / "finetune")
    two = one.replace(os.sep + "one" + os.sep, os.sep + "two" + os.sep)
    assert _losses(one) == _losses(two) and _losses(one)
  assert chains_lib.run_chains(_scratch_chains(tmp_path / "two", release), jobs=2) == there


@pytest.mark.slow
def test_bad_input_in_a_worker_is_one_line_in_the_study(tmp_path, release):
  chains = _scratch_chains(tmp_path, release)
  chains[1][0][1].batch_size = 0
  with pytest.raises(errors.BadInput, match="batch_size"):
    chains_lib.run_chains(chains, jobs=2)


@pytest.mark.slow
def test_ctrl_c_stops_every_worker_and_the_same_command_resumes(tmp_path, env, release):
  """Ctrl-C (SIGINT to the terminal's process group) once the first stages run: no
  worker starts another stage, exit 0 with the line that says how to resume, no
  traceback; the same command then finishes the study."""
  args = [sys.executable, "-m", "amd_jax.proj.study", "--workdir", str(tmp_path), "--size", "smoke",
          "--teacher", str(release), "--jobs", "2"]
  proc = subprocess.Popen(args, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True,
                          start_new_session=True)
  lines = []
  for line in proc.stderr:        # "  NAME: ... → WORKDIR": a stage has started
    lines.append(line)
    if "→" in line:
      os.killpg(proc.pid, signal.SIGINT)
      break
  stderr = "".join(lines) + proc.stderr.read()
  assert proc.wait(timeout=300) == 0, stderr[-3000:]
  assert "the same command resumes it" in stderr and "Traceback" not in stderr, stderr[-3000:]
  assert not (tmp_path / "results.json").exists()
  started = [l for l in stderr.splitlines() if "→" in l]
  assert len(started) <= 2, started           # one stage per worker at most
  result = _study(tmp_path, env, "--teacher", str(release))
  assert result.returncode == 0, result.stderr[-3000:]
  assert json.loads((tmp_path / "results.json").read_text())["study"]["seeds"] == [0]


@pytest.mark.slow
def test_ablation_reuses_the_study_student_and_probes_every_setting(smoke, env, release):
  result = _study(smoke, env, "--teacher", str(release), "--ablation", "rec-loss")
  assert result.returncode == 0, result.stderr[-3000:]
  assert "rec-loss=with: AMD pre-training (seed 0): done" in result.stderr   # the study's own
  out = json.loads((smoke / "ablation_rec-loss.json").read_text())["settings"]
  assert set(out) == {"with", "without"}
  for row in out.values():
    assert 0 <= row["top1"] <= 1 and 0 <= row["probe_top1"] <= 1 and row["pretrain_steps"] == 2
  probes = json.loads((smoke / run.PROBE_FILE).read_text())["models"]
  assert out["with"]["probe_top1"] == probes["amd_student/seed_0"]["test_top1"]
  assert out["without"]["probe_top1"] == probes["ablation/rec-loss/without/seed_0"]["test_top1"]


@pytest.mark.slow
def test_finetune_ablation_fine_tunes_every_model_under_each_setting(smoke, env, release):
  """--ablation labels: the study's students reused for all labels, every model fine-tuned
  again on fewer, the teacher with the students' seeds; the runs really saw fewer videos."""
  result = _study(smoke, env, "--teacher", str(release), "--ablation", "labels")
  assert result.returncode == 0, result.stderr[-3000:]
  all_labels = str(recipe.TRAIN_VIDEOS)
  assert f"amd_student, labels={all_labels}: fine-tuning + test (seed 0): done" in result.stderr
  out = json.loads((smoke / "ablation_labels.json").read_text())["settings"]
  assert set(out) == set(recipe.FINETUNE_ABLATIONS["labels"])
  study = json.loads((smoke / "results.json").read_text())["models"]
  for setting, row in out.items():
    assert set(row["models"]) == set(recipe.MODELS)
    for model, m in row["models"].items():
      assert 0 <= m["top1"] <= 1 and m["finetune_steps"] == 2 and m["seeds"] == [0], model
  for name in recipe.STUDENTS:                       # the study's own runs
    assert out[all_labels]["models"][name]["top1"] == study[name]["top1"]
  seen = json.loads((smoke / "ablation" / "labels" / "seed_0" / "64" / "scratch_student"
                     / "finetune" / "config.json").read_text())["data"]
  assert (seen["split"], seen["per_class"], seen["train_videos"]) == ("train", 8, 64)
  assert "labels = 64" in result.stdout
