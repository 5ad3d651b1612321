"""Tasks (amd_jax/tasks.py, task_names.py): each config's mode maps to one task, the task's
batch description is what its pipeline makes, and no other module of the package
tells tasks apart."""

import json
import os
import re

import jax
import ml_collections
import numpy as np
import pytest

import amd_jax
from amd_jax import config_files, errors, optim, sharding, task_names, tasks, train
from amd_jax import state as state_lib
from amd_jax.data import sources

# The ways a module told tasks apart before tasks.py: comparing config.mode (or a mode
# read from config.json), asking whether the config has a masking block, asking
# whether the head is the detector.
_TELLS_TASK = re.compile(
    r"""(?<!args)\.mode\s*(==|!=|in\s|not\s+in\s)"""      # config.mode == … (not the bench's --mode)
    r"""|(\.get\(["']mode["']\)|\[["']mode["']\])\s*(==|!=|in\s|not\s+in\s)"""  # config.json's
    r"""|\bmode\s*=[^=].*(\.get\(["']mode["']\)|\[["']mode["']\])"""   # …read, compared later
    r"""|["']masking["']\s+(not\s+)?in\s"""
    r"""|\bdetection\("""
    r"""|["']head["']\)?\s*==|\.head\s*==""")
_OWNERS = ("tasks.py", "task_names.py")


def test_only_the_tasks_modules_tell_tasks_apart():
  root = os.path.dirname(amd_jax.__file__)
  found = []
  for folder, _, names in os.walk(root):
    for name in sorted(names):
      path = os.path.join(folder, name)
      if not name.endswith(".py") or (folder == root and name in _OWNERS):
        continue
      with open(path, encoding="utf-8") as f:
        found += [f"{os.path.relpath(path, root)}:{i}: {line.strip()}"
                  for i, line in enumerate(f, 1) if _TELLS_TASK.search(line)]
  assert not found, "ask amd_jax/tasks.py (or task_names.py) instead:\n" + "\n".join(found)


def test_the_pattern_catches_what_it_forbids():
  for line in ('if config.mode == "amd":', "amd = cfg.mode in ('amd',)",
               'if "masking" in config:', "if build.detection(config):",
               'mode = c.get("mode")', 'if saved["mode"] in ("finetune", "test"):',
               'config.get("model", {}).get("head") == "detector"'):
    assert _TELLS_TASK.search(line), line
  for line in ('if args.mode == "finetune":', 'config.mode = "finetune"',
               '"mode": config.mode,', 'f"a {config[\'mode\']} run"', 'if mode == "auto":'):
    assert not _TELLS_TASK.search(line), line


@pytest.mark.parametrize("spec, overrides, name, evaluate_only", [
    ("pretrain:runlocal", {}, task_names.AMD, False),
    ("pretrain:runlocal", {"mode": "videomae"}, task_names.VIDEOMAE, False),
    ("videomae:runlocal", {}, task_names.VIDEOMAE, False),
    ("finetune:runlocal", {}, task_names.CLASSIFICATION, False),
    ("finetune:runlocal", {"mode": "test"}, task_names.CLASSIFICATION, True),
    ("transfer:data=ava,runlocal", {}, task_names.DETECTION, False),
    ("transfer:data=ava,runlocal", {"mode": "test"}, task_names.DETECTION, True),
])
def test_each_config_is_one_task(spec, overrides, name, evaluate_only):
  config = config_files.load(*spec.split(":"))
  config.update(overrides)
  task = tasks.of(config)
  assert (task.name, task.evaluate_only) == (name, evaluate_only)
  assert task.pretraining == (name in task_names.PRETRAINING)
  assert task.distills == (name == task_names.AMD)
  assert task.model_configs == (("model", "teacher") if task.distills else ("model",))
  # A run's saved config.json says the same (convert and the analyses read it).
  saved = json.loads(config.to_json_best_effort())
  assert task_names.of(saved) == name
  assert task_names.evaluate_only(saved) == evaluate_only


@pytest.mark.parametrize("spec, mode, modes", [("pretrain:runlocal", "finetune", "amd|videomae"),
                                               ("finetune:runlocal", "amd", "finetune|test")])
def test_a_mode_the_config_file_does_not_offer_is_one_line(spec, mode, modes):
  config = config_files.load(*spec.split(":"))
  config.mode = mode
  with pytest.raises(errors.BadInput, match=rf"config.mode='{mode}': this config's modes are "
                                            rf"{re.escape(modes)}$"):
    tasks.of(config)


def test_a_config_without_mode_is_no_task():
  assert task_names.of({"model": {"variant": "S/16x2"}}) is None
  with pytest.raises(errors.BadInput, match="no mode"):
    tasks.of(ml_collections.ConfigDict({"seed": 0}))


@pytest.mark.parametrize("spec, overrides", [("pretrain:runlocal", {}),
                                             ("pretrain:runlocal", {"mode": "videomae"}),
                                             ("finetune:runlocal", {})])
def test_the_batch_spec_is_what_the_pipeline_makes(spec, overrides):
  """plan compiles the update for task.batch_spec(): the same keys, shapes and dtypes as
  a real batch of the task's pipeline (moving_digits), less the skipped count the
  loop takes out."""
  config = config_files.load(*spec.split(":"))
  config.update(overrides)
  task = tasks.of(config)
  records = sources.open_split(config.data.name, "train[:16]")
  batch = next(iter(task.train_dataset(records, bad_files=None, process_index=0,
                                       process_count=1)))
  batch.pop("skipped")
  got = {k: (v.shape, np.dtype(v.dtype)) for k, v in batch.items()}
  want = {k: (shape, np.dtype(dtype)) for k, (shape, dtype) in task.batch_spec().items()}
  assert {k: got.get(k) for k in want} == want
  assert set(got) - set(want) <= {"label"}     # a pre-training batch's label goes unused


def test_pretraining_masks_follow_the_task():
  """AMD's masks hide the teacher's share too; VideoMAE's (same config file) do not."""
  config = config_files.load("pretrain", "runlocal")
  assert tasks.of(config).mask_ratios() == (0.9, 0.75)
  config.mode = "videomae"
  assert tasks.of(config).mask_ratios() == (0.9, None)
  counts = tasks.of(config).mask_counts()
  assert counts.teacher == counts.student


def test_a_fine_tuning_task_has_a_val_and_a_test_evaluator():
  config = config_files.load("finetune", "runlocal")
  task = tasks.of(config)
  mesh = sharding.make_mesh(config, jax.devices()[:1])
  schedule = optim.Schedule(peak=0.0, final=0.0, warmup_steps=0, total_steps=1)
  _, state_sharding, model_def, _ = state_lib.create_state(config, mesh, schedule,
                                                           abstract=True)
  evaluators = task.evaluators(mesh, model_def, state_sharding)
  assert sorted(evaluators) == ["test", "val"]
  assert (evaluators["val"].views, evaluators["test"].views) == (1, 2 * 3)
  assert tasks.of(config_files.load("pretrain", "runlocal")).evaluators(
      mesh, model_def, state_sharding) == {}


@pytest.mark.slow
def test_an_evaluation_named_in_the_config_runs_without_code(tmp_path):
  """config.evals: a third entry is one more evaluation, run when its `every` says; the
  one named test alone writes the test files."""
  config = config_files.load("finetune", "runlocal")
  config.data.split = "train[:32]"
  config.update(total_steps=2, batch_size=8, eval_batch_size=8, log_every=1, ckpt_every=100,
                progress=False)
  config.evals.val.update(split="val[:8]", every=1)
  config.evals.test.split = "test[:8]"
  config.evals.seen = dict(split="train[:8]", every=-1, views="multi")
  rows = train.train(config, str(tmp_path / "run"))
  # After the last step, in the config's order (ml-collections sorts the names).
  assert [(r["step"], r["split"]) for r in rows if "split" in r] == [
      (1, "val"), (2, "val"), (2, "seen"), (2, "test")]
  seen = rows[-2]
  assert (seen["videos"], seen["views"]) == (8, config.data.test_clips * config.data.test_crops)
  with open(tmp_path / "run" / "test_results.json") as f:
    assert json.load(f)["split"] == "test"


@pytest.mark.parametrize("spec, key, value, message", [
    ("finetune:runlocal", "evals.val.every", -2, "evals.val.every=-2 must be ≥ -1"),
    ("finetune:runlocal", "evals.test.views", "crops", "evals.test.views='crops': choose from "
                                                       "centre|multi"),
    ("transfer:data=ava,runlocal", "evals.val.views", "centre",
     "evals.val has every, split, views: a detection evaluation has split, every"),
])
def test_a_bad_evaluation_is_one_line(spec, key, value, message):
  config = config_files.load(*spec.split(":"))
  entry, _, field = key.rpartition(".")
  config_files.value(config, entry)[field] = value
  with pytest.raises(errors.BadInput, match=re.escape(message)):
    tasks.of(config).validate()


def test_mode_test_needs_the_evaluation_named_test():
  config = config_files.load("finetune", "runlocal")
  config.mode = "test"
  del config.evals["test"]
  with pytest.raises(errors.BadInput, match="mode=test runs the evaluation named test: "
                                            "config.evals has val"):
    tasks.of(config).validate()


def test_a_task_without_data_model_or_step_cannot_be_made():
  """The base class has no training data, model or step of its own: a new task class
  that forgets one fails when it is made, not halfway through a run."""
  config = config_files.load("finetune", "runlocal")

  class NoStep(tasks.Finetuning):
    name = "no_step"
    train_dataset = tasks.Classification.train_dataset
    model = tasks.Classification.model

  with pytest.raises(TypeError, match="step_task"):
    NoStep(config)
  assert isinstance(tasks.of(config), tasks.Classification)
