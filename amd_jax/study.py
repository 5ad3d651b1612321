r"""The embedded study: an AMD student against the same student pre-trained as plain
VideoMAE, on the embedded moving_digits videos, in one command.

  python -m amd_jax.study [--workdir runs/demo] [--size smoke|default|full] [--seeds N]
                          [--ablation alignment|teacher-ratio|rec-loss|student-ratio]

(launch/demo.sh wraps it; its --full is --size full.) Stages, each skipped when
its outputs exist and resumed from its last checkpoint when it was interrupted:

  1. teacher           VideoMAE pre-training of the teacher (seed 0, shared by all seeds)
  2. amd_student       AMD pre-training of the student, distilled from 1
  3. videomae_student  the same student as plain VideoMAE: same steps, batch, lr, data
  4. fine-tuning       both students, the same student from random weights
                       (scratch_student, the control: what pre-training adds) and,
                       where the size says so, the teacher, all with one recipe;
                       then the multi-view test
  5. DIR/results.json  top-1, top-5, times and steps per model (mean ± std over seeds)
  6. plots             DIR/*.png with their numbers in DIR/*.json (seed 0's runs)

With --ablation the AMD student is pre-trained and fine-tuned once per setting
of one factor of the supplementary's Sections B–E (the other factors as the
study's AMD student, which is reused for the default setting) and the table
goes to DIR/ablation_NAME.json.

Layout: DIR/teacher/{pretrain,finetune}, DIR/seed_S/{amd_student,videomae_student}/
{pretrain,finetune}, DIR/seed_S/scratch_student/finetune,
DIR/ablation/NAME/seed_S/SETTING/{pretrain,finetune}; each is a
training workdir (metrics.jsonl, checkpoints/, config.json) with a stage.json
written when it completes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import platform
import sys
import time

import jax
import ml_collections
import numpy as np
from absl import logging as absl_logging

from amd_jax import analysis, errors, train
from amd_jax.data import moving_digits
from configs import finetune as finetune_config
from configs import pretrain as pretrain_config
from configs import videomae as videomae_config

STAGE_FILE = "stage.json"
STUDY_FILE = "study.json"
PLOTS = ("pretrain_losses.png", "finetune_curves.png", "reconstructions.png", "per_class.png",
         "attention_distance.png")
# The students: name → pre-training method (None: fine-tuned from random weights).
STUDENTS = {"amd_student": "amd", "videomae_student": "videomae", "scratch_student": None}
MODELS = (*STUDENTS, "teacher")
# Fine-tuning recipe of every model: configs/finetune.py:runlocal with a 10× base
# lr and no mixup/cutmix. Its base lr 2e-3 (1.25e-4 peak at 16 videos per
# step) barely moves in the default's 128 steps; measured from the default's
# VideoMAE student (128 steps, test top-1, 2-core CPU): base lr 2e-3 → 0.21;
# 2e-2 → 0.35 with mixup/cutmix, 0.42 without; 5e-2 → 0.45 without.
FINETUNE_OVERRIDES = {"optim.base_lr": 2e-2, "mixup.prob": 0.0}


@dataclasses.dataclass(frozen=True)
class Size:
  """How big and how long: every number the study's runs take from it."""

  teacher: str                     # ViT variants (vit.decode_variant)
  student: str
  teacher_layers: tuple[int, ...]  # aligned layer pairs (1-indexed)
  student_layers: tuple[int, ...]
  image_size: int                  # clip side in pixels (8 frames, patch 8, tubelet 2)
  teacher_steps: int               # pre-training updates of 8 clips (2 videos × 4 samples)
  student_steps: int               # both students
  finetune_steps: int              # updates of 32 clips (16 videos × 2 samples)
  finetune_teacher: bool           # the teacher's fine-tune costs ~8 students' (12 blocks
                                   # of width 192 vs 4 of 64 over all 256 tokens)
  val_split: str
  test_split: str
  analysis_videos: int             # test videos for the attention distances
  seeds: int                       # default --seeds
  log_every: int


SIZES = {
    # The test suite's: every code path, seconds of compute.
    "smoke": Size(teacher="Mu/8x2", student="Mu/8x2", teacher_layers=(2, 4),
                  student_layers=(2, 4), image_size=32, teacher_steps=2, student_steps=2,
                  finetune_steps=2, finetune_teacher=False, val_split="val[:8]",
                  test_split="test[:8]", analysis_videos=2, seeds=1, log_every=1),
    # launch/demo.sh: under 10 minutes on 2 CPU cores (5 measured, README).
    "default": Size(teacher="Ti/8x2", student="Mu/8x2", teacher_layers=(6, 12),
                    student_layers=(2, 4), image_size=64, teacher_steps=400,
                    student_steps=400, finetune_steps=128, finetune_teacher=False,
                    val_split="val[:64]", test_split="test[:128]", analysis_videos=32,
                    seeds=1, log_every=20),
    # launch/demo.sh --full: long enough, and seeds enough, for the comparison to mean something.
    # The teacher trains twice the students' steps (the paper's teachers: 1600
    # epochs, its students 800). 82 minutes on the 2-core dev VM beside other jobs
    # (README), half of it the teacher's pre-training and fine-tuning.
    "full": Size(teacher="Ti/8x2", student="Mu/8x2", teacher_layers=(6, 12),
                 student_layers=(2, 4), image_size=64, teacher_steps=4000,
                 student_steps=2000, finetune_steps=384, finetune_teacher=True,
                 val_split="val", test_split="test", analysis_videos=64, seeds=3,
                 log_every=50),
}

# One factor of the AMD student per ablation: setting → config overrides. The
# study's AMD student is the setting without overrides (supplementary B–E).
ABLATIONS = {
    "alignment": {"serial": {}, "parallel": {"align.method": "parallel"},
                  "direct": {"align.method": "direct"},
                  "generation": {"align.method": "generation"}},
    "teacher-ratio": {"0.75": {}, "0.5": {"masking.teacher_ratio": 0.5},
                      "0.25": {"masking.teacher_ratio": 0.25},
                      "0.0": {"masking.teacher_ratio": 0.0}},
    "rec-loss": {"with": {}, "without": {"loss.rec": 0.0}},
    "student-ratio": {"0.9": {}, "0.8": {"masking.student_ratio": 0.8}},
}

TRAIN_VIDEOS = moving_digits.SPLITS["train"]


# ----------------------------------------------------------------- configs

def override(config: ml_collections.ConfigDict, values: dict) -> ml_collections.ConfigDict:
  """Sets dotted keys ('align.method') of a config; an unknown key is an error."""
  for key, value in values.items():
    *path, last = key.split(".")
    node = config
    for part in path:
      node = node[part]
    if last not in node:
      raise errors.BadInput(f"unknown config key {key!r}")
    node[last] = value
  return config


def _runtime(config: ml_collections.ConfigDict, size: Size, seed: int) -> None:
  config.seed = seed
  config.log_every = size.log_every
  config.ckpt_every = 10 * size.log_every
  config.keep_ckpts = 1           # the last one is all the later stages read
  config.progress = True


def _pretrain_schedule(config: ml_collections.ConfigDict, steps: int) -> None:
  """Epochs of the pre-training schedule that make `steps` updates over the train split.

  A pre-training epoch is one repeated sample per video (optim.py): with V
  videos and v videos per step it has V // v / num_sample steps.
  """
  config.data.update(split="train", train_videos=TRAIN_VIDEOS)
  per_epoch = TRAIN_VIDEOS // (config.batch_size // config.data.num_sample) / config.data.num_sample
  _set_epochs(config, steps / per_epoch)


def _set_epochs(config: ml_collections.ConfigDict, epochs: float) -> None:
  """Fractional epochs (the configs hold ints, and ConfigDict keeps a field's type),
  with a tenth of them warm-up."""
  config.optim = ml_collections.ConfigDict(dict(config.optim.to_dict(), epochs=epochs,
                                                warmup_epochs=epochs / 10))


def teacher_config(size: Size) -> ml_collections.ConfigDict:
  config = videomae_config.get_config("runlocal")
  config.model.variant = size.teacher
  config.data.size = size.image_size
  _pretrain_schedule(config, size.teacher_steps)
  _runtime(config, size, seed=0)
  return config


def student_config(size: Size, method: str, seed: int, teacher: str = "",
                   overrides: dict | None = None) -> ml_collections.ConfigDict:
  """The student pre-trained with `method` (amd | videomae) from its runlocal recipe.

  Both use 8 clips per step, base lr 0.1 (7.8e-4 peak), the same data and steps;
  what differs is the method: the teacher and alignment heads, and AMD's
  gradient clipping at 0.02 (Table S1's recipe; VideoMAE's has none).
  """
  if method == "amd":
    config = pretrain_config.get_config("runlocal")
    config.teacher.variant = size.teacher
    config.teacher.init = teacher
    config.align.student_layers = size.student_layers
    config.align.teacher_layers = size.teacher_layers
  else:
    config = videomae_config.get_config("runlocal")
  config.model.variant = size.student
  config.data.size = size.image_size
  _pretrain_schedule(config, size.student_steps)
  _runtime(config, size, seed)
  return override(config, overrides or {})


def finetune_config_for(size: Size, variant: str, init: str, seed: int
                        ) -> ml_collections.ConfigDict:
  """configs/finetune.py:runlocal for `variant` from the pre-training run `init`
  ('' = random weights), with FINETUNE_OVERRIDES.

  A fine-tuning epoch is one pass (V // v steps), so `finetune_steps` updates
  are finetune_steps / (V // v) epochs; validation four times along the way.
  """
  config = finetune_config.get_config("runlocal")
  config.mode = "finetune"
  config.init = init
  config.model.variant = variant
  config.data.update(size=size.image_size, split="train", train_videos=TRAIN_VIDEOS,
                     val_split=size.val_split, test_split=size.test_split)
  per_epoch = TRAIN_VIDEOS // (config.batch_size // config.data.num_sample)
  _set_epochs(config, size.finetune_steps / per_epoch)
  config.eval_every = max(size.finetune_steps // 4, 1)
  _runtime(config, size, seed)
  return override(config, FINETUNE_OVERRIDES)


# ----------------------------------------------------------------- stages

def _read_json(path: str) -> dict:
  with open(path) as f:
    return json.load(f)


def _say(text: str) -> None:
  print(text, file=sys.stderr, flush=True)


class Stopped(Exception):
  """A stage ended before its last step (SIGTERM): the study stops, resumable."""


def run_training(title: str, config: ml_collections.ConfigDict, workdir: str,
                 steps: int) -> dict:
  """train(config, workdir) for `steps` updates unless workdir/stage.json says it
  completed; its record.

  The record: time_s (wall clock of every attempt together, compilation
  included), steps, and for fine-tuning the test's top1/top5/views. An
  interrupted attempt's time is kept, and train() resumes from its checkpoint.
  """
  path = os.path.join(workdir, STAGE_FILE)
  record = _read_json(path) if os.path.isfile(path) else {"time_s": 0.0, "done": False}
  if record["done"]:
    _say(f"  {title}: done ({record['time_s']:.0f} s), skipped")
    return record
  _say(f"  {title} → {workdir}")
  os.makedirs(workdir, exist_ok=True)
  start = time.perf_counter()
  try:
    train.train(config, workdir)
  finally:
    record["time_s"] += time.perf_counter() - start
    analysis.write_json(path, record)
  rows = analysis.metric_rows(workdir)
  done = max((r["step"] for r in rows if "split" not in r), default=0)
  if done < steps:   # train() returns early, checkpoint saved, after a SIGTERM
    raise Stopped(f"{title} stopped at step {done} of {steps}")
  record.update(done=True, steps=done)
  results = os.path.join(workdir, "test_results.json")
  if os.path.isfile(results):
    test = _read_json(results)
    record.update(top1=test["top1"], top5=test["top5"], views=test["views"])
  analysis.write_json(path, record)
  _say(f"  {title}: {record['time_s']:.0f} s, {record['steps']} steps"
       + (f", test top-1 {record['top1']:.3f}" if "top1" in record else ""))
  return record


@dataclasses.dataclass(frozen=True)
class Layout:
  """Where every run of a study lives."""

  root: str

  def teacher(self, part: str) -> str:
    return os.path.join(self.root, "teacher", part)

  def student(self, name: str, seed: int, part: str) -> str:
    return os.path.join(self.root, f"seed_{seed}", name, part)

  def ablation(self, name: str, setting: str, seed: int, part: str) -> str:
    if not ABLATIONS[name][setting]:      # the study's own AMD student
      return self.student("amd_student", seed, part)
    return os.path.join(self.root, "ablation", name, f"seed_{seed}", setting, part)


def pretrain_teacher(layout: Layout, size: Size) -> dict:
  return run_training("teacher: VideoMAE pre-training (seed 0)", teacher_config(size),
                      layout.teacher("pretrain"), size.teacher_steps)


def students(layout: Layout, size: Size, seed: int) -> dict[str, dict]:
  """Every student pre-trained (but the scratch one) and fine-tuned with `seed`:
  {name: {pretrain: record | None, finetune: record}}."""
  out = {}
  for name, method in STUDENTS.items():
    pre = layout.student(name, seed, "pretrain")
    out[name] = {"pretrain": run_training(
        f"{name}: {method} pre-training (seed {seed})",
        student_config(size, method, seed, teacher=layout.teacher("pretrain")), pre,
        size.student_steps) if method else None}
  for name, method in STUDENTS.items():
    init = layout.student(name, seed, "pretrain") if method else ""
    out[name]["finetune"] = run_training(
        f"{name}: fine-tuning + test (seed {seed})",
        finetune_config_for(size, size.student, init, seed),
        layout.student(name, seed, "finetune"), size.finetune_steps)
  return out


def finetune_teacher(layout: Layout, size: Size) -> dict:
  config = finetune_config_for(size, size.teacher, layout.teacher("pretrain"), seed=0)
  return run_training("teacher: fine-tuning + test (seed 0)", config, layout.teacher("finetune"),
                      size.finetune_steps)


def plots(layout: Layout, size: Size) -> list[str]:
  """The PNGs (and their JSON numbers) from seed 0's runs; each drawn only if missing."""
  root = layout.root
  pre = {"teacher": layout.teacher("pretrain"),
         "amd_student": layout.student("amd_student", 0, "pretrain"),
         "videomae_student": layout.student("videomae_student", 0, "pretrain")}
  fine = {name: layout.student(name, 0, "finetune") for name in STUDENTS}
  if size.finetune_teacher:
    fine["teacher"] = layout.teacher("finetune")
  draw = {
      "pretrain_losses.png": lambda: analysis.plot_pretrain_losses(
          pre, os.path.join(root, "pretrain_losses.png")),
      "finetune_curves.png": lambda: analysis.plot_finetune_curves(
          fine, os.path.join(root, "finetune_curves.png")),
      "reconstructions.png": lambda: analysis.reconstructions_report(pre, root),
      "per_class.png": lambda: analysis.per_class_report(
          fine["videomae_student"], fine["amd_student"], root,
          names=("videomae_student", "amd_student")),
      "attention_distance.png": lambda: analysis.attention_distance_report(
          pre, root, videos=size.analysis_videos),
  }
  for name in PLOTS:
    path = os.path.join(root, name)
    if os.path.isfile(path):
      _say(f"  {name}: exists, skipped")
    else:
      draw[name]()
      _say(f"  {name}: drawn")
  return [os.path.join(root, name) for name in PLOTS]


# ----------------------------------------------------------------- results

def _stats(values: list) -> tuple[float | None, float | None]:
  """(mean, sample std) of the non-null values; std is None with fewer than two."""
  values = [v for v in values if v is not None]
  if not values:
    return None, None
  std = float(np.std(values, ddof=1)) if len(values) > 1 else None
  return float(np.mean(values)), std


def summarize(runs: list[dict], variant: str) -> dict:
  """One model's row from its runs ({seed, pretrain: record | None, finetune: record | None}).

  Times and top-k are means over the runs (std: the sample std, None for one run).
  """
  row = {"variant": variant, "seeds": [r["seed"] for r in runs]}
  pre = [r["pretrain"] or {} for r in runs]
  fine = [r["finetune"] or {} for r in runs]
  for key in ("top1", "top5"):
    row[key], row[f"{key}_std"] = _stats([f.get(key) for f in fine])
  row["views"] = fine[0].get("views")
  row["pretrain_time_s"], _ = _stats([p.get("time_s") for p in pre])
  row["finetune_time_s"], _ = _stats([f.get("time_s") for f in fine])
  row["pretrain_steps"] = pre[0].get("steps", 0)
  row["finetune_steps"] = fine[0].get("steps")
  row["runs"] = [{"seed": r["seed"], "top1": f.get("top1"), "top5": f.get("top5"),
                  "pretrain_time_s": p.get("time_s"), "finetune_time_s": f.get("time_s")}
                 for r, p, f in zip(runs, pre, fine)]
  return row


def machine() -> dict:
  return {"platform": platform.platform(), "cpus": os.cpu_count(),
          "device": jax.devices()[0].device_kind, "jax": jax.__version__}


def _cell(mean: float | None, std: float | None) -> str:
  if mean is None:
    return "—"
  return f"{mean:.3f}" + (f" ± {std:.3f}" if std is not None else "")


def table(rows: dict[str, dict], first: str = "model") -> str:
  """A plain-text table of result rows (also valid Markdown)."""
  head = [first, "variant", "top-1", "top-5", "pre-train", "fine-tune"]
  lines = [head]
  for name, r in rows.items():
    lines.append([name, r["variant"], _cell(r["top1"], r["top1_std"]),
                  _cell(r["top5"], r["top5_std"]),
                  "—" if r["pretrain_time_s"] is None else
                  f"{r['pretrain_steps']} steps, {r['pretrain_time_s']:.0f} s",
                  "—" if r["finetune_time_s"] is None else
                  f"{r['finetune_steps']} steps, {r['finetune_time_s']:.0f} s"])
  widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
  fmt = lambda line: "| " + " | ".join(c.ljust(w) for c, w in zip(line, widths)) + " |"
  return "\n".join([fmt(lines[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
                   + [fmt(line) for line in lines[1:]])


# ----------------------------------------------------------------- the study

def _check_size(root: str, size_name: str) -> None:
  """A DIR holds one size of study: resuming it with another would mix runs."""
  path = os.path.join(root, STUDY_FILE)
  if os.path.isfile(path):
    held = _read_json(path)["size"]
    if held != size_name:
      raise errors.BadInput(f"{root} holds a '{held}' study; use --size {held} (or --full "
                            "accordingly) to resume it, or another --workdir")
  else:
    os.makedirs(root, exist_ok=True)
    analysis.write_json(path, {"size": size_name, **dataclasses.asdict(SIZES[size_name])})


def run_study(root: str, size_name: str = "default", seeds: int | None = None) -> dict:
  """Every stage of the study into `root`; returns (and writes) results.json's content."""
  size = SIZES[size_name]
  seeds = seeds or size.seeds
  _check_size(root, size_name)
  layout = Layout(root)
  start = time.perf_counter()
  stages = 4 + (seeds > 1)
  _say(f"[1/{stages}] teacher pre-training")
  teacher = {"seed": 0, "pretrain": pretrain_teacher(layout, size), "finetune": None}
  _say(f"[2/{stages}] students, seed 0: pre-training, fine-tuning, test")
  by_seed = {0: students(layout, size, 0)}
  if size.finetune_teacher:
    teacher["finetune"] = finetune_teacher(layout, size)
  _say(f"[3/{stages}] plots (seed 0)")
  paths = plots(layout, size)
  if seeds > 1:
    _say(f"[4/{stages}] students, seeds 1–{seeds - 1}")
    for seed in range(1, seeds):
      by_seed[seed] = students(layout, size, seed)
  _say(f"[{stages}/{stages}] results")
  models = {name: summarize([{"seed": s, **by_seed[s][name]} for s in sorted(by_seed)],
                            size.student) for name in STUDENTS}
  models["teacher"] = summarize([teacher], size.teacher)
  if not size.finetune_teacher:
    models["teacher"]["note"] = (f"not fine-tuned at size '{size_name}': its fine-tune costs "
                                 "about 8 students' (run --full)")
  results = {
      "study": dict(size=size_name, seeds=sorted(by_seed), data="moving_digits",
                    frames=8, image_size=size.image_size, teacher=size.teacher,
                    student=size.student, teacher_of_every_seed="teacher/pretrain (seed 0)",
                    times="wall clock of each stage, compilation included",
                    this_call_s=time.perf_counter() - start, machine=machine()),
      "models": models,
      "plots": [os.path.relpath(p, root) for p in paths],
  }
  analysis.write_json(os.path.join(root, "results.json"), results)
  return results


def run_ablation(root: str, name: str, size_name: str = "default", seeds: int | None = None
                 ) -> dict:
  """The AMD student under each setting of ablation `name` → DIR/ablation_NAME.json."""
  size = SIZES[size_name]
  seeds = seeds or size.seeds
  _check_size(root, size_name)
  layout = Layout(root)
  _say(f"ablation {name}: teacher")
  pretrain_teacher(layout, size)
  runs = {setting: [] for setting in ABLATIONS[name]}
  for seed in range(seeds):
    for setting, values in ABLATIONS[name].items():
      pre = layout.ablation(name, setting, seed, "pretrain")
      config = student_config(size, "amd", seed, teacher=layout.teacher("pretrain"),
                              overrides=values)
      record = {"seed": seed,
                "pretrain": run_training(f"{name}={setting}: AMD pre-training (seed {seed})",
                                         config, pre, size.student_steps)}
      record["finetune"] = run_training(
          f"{name}={setting}: fine-tuning + test (seed {seed})",
          finetune_config_for(size, size.student, pre, seed),
          layout.ablation(name, setting, seed, "finetune"), size.finetune_steps)
      runs[setting].append(record)
  rows = {setting: dict(summarize(r, size.student), overrides=ABLATIONS[name][setting])
          for setting, r in runs.items()}
  out = {"ablation": name, "size": size_name, "settings": rows, "machine": machine()}
  analysis.write_json(os.path.join(root, f"ablation_{name}.json"), out)
  return out


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(prog="python -m amd_jax.study", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--workdir", default="runs/demo")
  parser.add_argument("--size", default="default", choices=tuple(SIZES))
  parser.add_argument("--seeds", type=int, help="students' seeds (default: 1, 3 with --size full)")
  parser.add_argument("--ablation", choices=tuple(ABLATIONS))
  args = parser.parse_args(argv)
  if args.seeds is not None and args.seeds < 1:
    parser.error("--seeds must be at least 1")
  # Stage lines and progress bars, not every checkpoint save (orbax logs through absl).
  absl_logging.set_verbosity(absl_logging.WARNING)
  logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
  root = os.path.abspath(args.workdir)
  try:
    if args.ablation:
      out = run_ablation(root, args.ablation, args.size, args.seeds)
      print(table(out["settings"], first=args.ablation))
      print(f"\n{os.path.join(root, f'ablation_{args.ablation}.json')}")
    else:
      out = run_study(root, args.size, args.seeds)
      print(table(out["models"]))
      print(f"\nresults: {os.path.join(root, 'results.json')}; plots: "
            + ", ".join(out["plots"]))
  except errors.BadInput as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  except Stopped as e:      # as amd_jax.main after SIGTERM: saved, exit 0
    print(f"{e}; the same command resumes it", file=sys.stderr)


if __name__ == "__main__":
  main()
