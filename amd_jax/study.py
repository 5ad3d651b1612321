r"""The embedded study: an AMD student against the same student pre-trained as plain
VideoMAE, on the embedded moving_digits videos, in one command.

  python -m amd_jax.study [--workdir runs/demo] [--size smoke|default|full] [--seeds N]
                          [--teacher DIR] [--ablation NAME] [--jobs N]
  python -m amd_jax.study --make-teacher OUT [--workdir runs/teacher] [--size default]

(launch/demo.sh wraps it; its --full is --size full.) As in the paper, the
teacher is a released checkpoint, trained once and far longer than its
students: the one in amd_jax/assets/teacher (made by the --make-teacher
command above, see its card.json), or --teacher DIR for another release.
Stages, each skipped when its outputs exist and resumed from its last
checkpoint when it was interrupted:

  1. amd_student       AMD pre-training of the student, distilled from the teacher
  2. videomae_student  the same student as plain VideoMAE: same steps, batch, lr, data
  3. fine-tuning       both students and the same student from random weights
                       (scratch_student, the control: what pre-training adds),
                       all with one recipe; then the multi-view test
     (1–3 once per seed: a chain of stages per student and seed; --jobs chains
     run at once, each in a process of its own; the results do not depend on it)
  4. probes            a linear probe on the frozen encoder of every pre-trained
                       model, the teacher's included, and on the scratch student's
                       random initial weights (the control; amd_jax/probe.py)
  5. plots             DIR/*.png with their numbers in DIR/*.json (seed 0's runs)
  6. DIR/results.json  top-1, top-5, probe top-1, times and steps per model
                       (mean ± std over seeds); the teacher's fine-tuned top-1 is
                       its release's, measured with the same recipe and test

--make-teacher OUT pre-trains the teacher in --workdir, fine-tunes and tests it
with the protocol of every size that uses this teacher, probes it, measures its
reconstruction loss against trivial predictors and writes the release to OUT:
checkpoint/ (converted, weights only), card.json, metrics.jsonl,
reconstructions.png.

With --ablation the AMD student is pre-trained and fine-tuned once per setting
of one factor (the supplementary's Sections B–E, and two opt-in deviations: the
alignment targets' normalisation and loss); the other factors are the study's
AMD student, which is reused for the default setting, and the table goes to
DIR/ablation_NAME.json.

Layout: DIR/seed_S/{amd_student,videomae_student}/{pretrain,finetune},
DIR/seed_S/scratch_student/finetune, DIR/ablation/NAME/seed_S/SETTING/
{pretrain,finetune}; each is a training workdir (metrics.jsonl, checkpoints/,
config.json) with a stage.json written when it completes. DIR/probe.json holds
the probes.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import logging
import multiprocessing
import os
import platform
import queue
import shlex
import shutil
import signal
import sys
import time

import jax
import ml_collections
import numpy as np
from absl import logging as absl_logging

from amd_jax import analysis, convert, errors, probe, train
from amd_jax import workdir as workdir_lib
from amd_jax.data.builders import moving_digits
from amd_jax.models import vit
from configs import finetune as finetune_config
from configs import pretrain as pretrain_config
from configs import videomae as videomae_config

STAGE_FILE = "stage.json"
STUDY_FILE = "study.json"
CARD_FILE = "card.json"
PROBE_FILE = "probe.json"
# The released teacher the study distils from unless --teacher says otherwise.
RELEASED_TEACHER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets", "teacher")
PLOTS = ("pretrain_losses.png", "finetune_curves.png", "reconstructions.png", "per_class.png",
         "attention_distance.png")
# The students: name → pre-training method (None: fine-tuned from random weights).
STUDENTS = {"amd_student": "amd", "videomae_student": "videomae", "scratch_student": None}
PRETRAINED = ("teacher", "amd_student", "videomae_student")
MODELS = (*STUDENTS, "teacher")
# Fine-tuning recipe of every student: configs/finetune.py:runlocal with a 30×
# base lr (6e-2: 3.75e-3 peak at 16 videos per step), one clip per video and
# step (no repeated sampling) and no mixup, cutmix, RandAugment or random
# erasing: the default's 128 steps are one pass over the train split, too short
# for augmentation to pay. Measured on moving_digits 3.0.0 from random weights
# (128 steps of 16 videos, test top-1 of 128 videos, 2-core CPU): runlocal's
# augmentation at base lr 2e-2 → 0.109 (chance), without it → 0.250, without it
# at 6e-2 → 0.469 with 2 clips per video, 0.445 with one (half the compute).
# The test's 2 clips × 3 crops: the three crops of a square clip are one and the
# same (crops run along the long side), so one crop gives the same top-1 at a
# third of the cost.
FINETUNE_OVERRIDES = {"optim.base_lr": 6e-2, "mixup.prob": 0.0, "data.rand_augment.num_ops": 0,
                      "data.erase_prob": 0.0, "data.num_sample": 1, "batch_size": 16,
                      "data.test_crops": 1}


@dataclasses.dataclass(frozen=True)
class Teacher:
  """How the teacher is made: VideoMAE pre-training of `variant` (configs/videomae.py:
  runlocal otherwise). A release records it; a study refuses a release made otherwise."""

  variant: str                     # ViT variant (vit.decode_variant)
  image_size: int
  steps: int                       # updates of `batch_size` clips (4 repeated samples per video)
  batch_size: int
  base_lr: float                   # × videos per update / 256
  finetune_base_lr: float          # its fine-tuning recipe: FINETUNE_OVERRIDES but this lr


# The released teacher: Mi (8 blocks × 128, twice the students' depth and width
# as ViT-L over ViT-B and ViT-B over ViT-S; 8× their parameters) for 2048 steps
# of 32 clips (65,536 clips, 32 passes over the train split at 4 samples per
# video), against the students' 400 (default) or 1600 (full) steps of 8 clips:
# 20× and 5× the clips (the paper: 1600–2400 teacher epochs vs 800).
RELEASE = Teacher(variant="Mi/8x2", image_size=64, steps=2048, batch_size=32, base_lr=0.05,
                  finetune_base_lr=6e-2)


@dataclasses.dataclass(frozen=True)
class Size:
  """How big and how long: every number the study's runs take from it."""

  teacher: Teacher
  student: str                     # ViT variant
  teacher_layers: tuple[int, ...]  # aligned layer pairs (1-indexed)
  student_layers: tuple[int, ...]
  image_size: int                  # clip side in pixels (8 frames, patch 8, tubelet 2)
  student_steps: int               # pre-training updates of 8 clips (2 videos × 4 samples), both
  finetune_steps: int              # updates of 16 clips (16 videos, one clip each)
  val_split: str
  test_split: str
  probe_videos: int | None         # at most this many videos per split for the probe (None: all)
  analysis_videos: int             # test videos for the attention distances
  seeds: int                       # default --seeds
  log_every: int


SIZES = {
    # The test suite's: every code path, seconds of compute, with a teacher of its own.
    "smoke": Size(teacher=Teacher("Mu/8x2", 32, steps=2, batch_size=8, base_lr=0.1,
                                  finetune_base_lr=6e-2),
                  student="Mu/8x2", teacher_layers=(2, 4), student_layers=(2, 4), image_size=32,
                  student_steps=2, finetune_steps=2, val_split="val[:8]", test_split="test[:8]",
                  probe_videos=16, analysis_videos=2, seeds=1, log_every=1),
    # launch/demo.sh: about 9 minutes on 2 CPU cores (README).
    "default": Size(teacher=RELEASE, student="Mu/8x2", teacher_layers=(4, 8),
                    student_layers=(2, 4), image_size=64, student_steps=400, finetune_steps=128,
                    val_split="val[:64]", test_split="test[:128]", probe_videos=1024,
                    analysis_videos=32, seeds=3, log_every=20),
    # launch/demo.sh --full: longer pre-training and fine-tuning, every test video.
    "full": Size(teacher=RELEASE, student="Mu/8x2", teacher_layers=(4, 8),
                 student_layers=(2, 4), image_size=64, student_steps=1600, finetune_steps=256,
                 val_split="val", test_split="test", probe_videos=None, analysis_videos=64,
                 seeds=3, log_every=50),
}

# One factor of the AMD student per ablation: setting → config overrides. The
# study's AMD student is the setting without overrides (supplementary B–E; the
# last two are deviations from the official recipe, opt-in).
ABLATIONS = {
    "alignment": {"serial": {}, "parallel": {"align.method": "parallel"},
                  "direct": {"align.method": "direct"},
                  "generation": {"align.method": "generation"}},
    "teacher-ratio": {"0.75": {}, "0.5": {"masking.teacher_ratio": 0.5},
                      "0.25": {"masking.teacher_ratio": 0.25},
                      "0.0": {"masking.teacher_ratio": 0.0}},
    "rec-loss": {"with": {}, "without": {"loss.rec": 0.0}},
    "student-ratio": {"0.9": {}, "0.8": {"masking.student_ratio": 0.8}},
    "target-norm": {"none": {}, "layernorm": {"align.target_norm": "layernorm"}},
    "align-loss": {"l2": {}, "smooth_l1": {"align.loss": "smooth_l1"}},
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
  """VideoMAE pre-training of the teacher (configs/videomae.py:runlocal, Size.teacher)."""
  t = size.teacher
  config = videomae_config.get_config("runlocal")
  config.model.variant = t.variant
  config.data.size = t.image_size
  config.batch_size = t.batch_size
  config.optim.base_lr = t.base_lr
  _pretrain_schedule(config, t.steps)
  _runtime(config, size, seed=0)
  config.log_every = max(size.log_every, 50)
  config.ckpt_every = 10 * config.log_every
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
    config.teacher.variant = size.teacher.variant
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


def finetune_config_for(size: Size, variant: str, init: str, seed: int,
                        base_lr: float | None = None) -> ml_collections.ConfigDict:
  """configs/finetune.py:runlocal for `variant` from the pre-training run `init`
  ('' = random weights), with FINETUNE_OVERRIDES (base_lr: another lr).

  A fine-tuning epoch is one pass (V // v steps), so `finetune_steps` updates
  are finetune_steps / (V // v) epochs; validation halfway and at the end.
  """
  config = finetune_config.get_config("runlocal")
  config.mode = "finetune"
  config.init = init
  config.model.variant = variant
  config.data.update(size=size.image_size, split="train", train_videos=TRAIN_VIDEOS,
                     val_split=size.val_split, test_split=size.test_split)
  override(config, FINETUNE_OVERRIDES)
  if base_lr is not None:
    config.optim.base_lr = base_lr
  per_epoch = TRAIN_VIDEOS // (config.batch_size // config.data.num_sample)
  _set_epochs(config, size.finetune_steps / per_epoch)
  config.eval_every = max(size.finetune_steps // 2, 1)
  _runtime(config, size, seed)
  return config


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
  record = _stage_record(workdir)
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


def _stage_record(workdir: str) -> dict:
  path = os.path.join(workdir, STAGE_FILE)
  return _read_json(path) if os.path.isfile(path) else {"time_s": 0.0, "done": False}


class Failed(Exception):
  """A worker process died (its traceback is above the line that says so)."""


def default_jobs() -> int:
  """Chains of stages run at once. On CPU two: XLA leaves part of the cores idle on
  models this small (2-core CPU: two of the default study's fine-tunes side by side
  take 52 s, one after the other 2 × 32 s). On an accelerator one: each process
  would claim the device's memory."""
  return 2 if jax.default_backend() == "cpu" else 1


def run_chains(chains: list[list[tuple]], jobs: int) -> list[list[dict]]:
  """The stages of every chain in order (a stage: run_training's arguments); their
  records, chain by chain. With jobs > 1 the chains run `jobs` at a time in worker
  processes, without progress bars (they would interleave): a line per stage and a
  count of finished chains instead. The records are the same either way.

  Ctrl-C reaches the workers from the terminal (a stage saves and stops, a second
  Ctrl-C exits at once, as in train()); a SIGTERM to this process is passed on to
  them; either way no worker starts another stage. Then, as after a stage stopped
  early, Stopped: the same command resumes.
  """
  todo = [i for i, chain in enumerate(chains)
          if not all(_stage_record(workdir)["done"] for _, _, workdir, _ in chain)]
  if jobs <= 1 or len(todo) <= 1:
    return [[run_training(*stage) for stage in chain] for chain in chains]
  done = {i: [run_training(*stage) for stage in chain]      # reads their records
          for i, chain in enumerate(chains) if i not in todo}
  todo_out = _in_workers([chains[i] for i in todo], jobs)
  return [done[i] if i in done else todo_out[todo.index(i)] for i in range(len(chains))]


def _in_workers(chains: list[list[tuple]], jobs: int) -> list[list[dict]]:
  for chain in chains:
    for _, config, _, _ in chain:
      config.progress = False
  ctx = multiprocessing.get_context("spawn")   # fork would copy this process's JAX runtime
  tasks, results = ctx.Queue(), ctx.Queue()
  for item in enumerate(chains):
    tasks.put(item)
  cache = (jax.config.jax_compilation_cache_dir,
           jax.config.jax_persistent_cache_min_compile_time_secs)
  # Set on the first Ctrl-C or SIGTERM: no worker starts another stage. (A signal
  # during a stage is train()'s, which may end that stage complete.)
  stop = ctx.Event()
  workers = [ctx.Process(target=_worker, args=(tasks, results, stop, cache))
             for _ in range(min(jobs, len(chains)))]
  for _ in workers:
    tasks.put(None)
  # Started with Ctrl-C ignored (inherited through exec) until _worker handles it:
  # one landing while a worker imports would be a KeyboardInterrupt traceback.
  previous = {signal.SIGINT: signal.signal(signal.SIGINT, signal.SIG_IGN)}
  for w in workers:
    w.start()
  signals = []    # a handler only notes it: the Event's lock is not for signal handlers

  def on_signal(signum, frame):
    if signum == signal.SIGTERM:
      for w in workers:
        if w.pid and w.is_alive():
          os.kill(w.pid, signal.SIGTERM)
    elif signal.SIGINT in signals:   # the workers had their second Ctrl-C too
      os._exit(128 + signum)
    signals.append(signum)

  previous[signal.SIGTERM] = signal.signal(signal.SIGTERM, on_signal)
  signal.signal(signal.SIGINT, on_signal)
  out: list = [None] * len(chains)
  problems = []
  start = time.perf_counter()
  try:
    while any(w.is_alive() for w in workers) or not results.empty():
      if signals and not stop.is_set():
        stop.set()
      try:
        index, status, value = results.get(timeout=0.2)
      except queue.Empty:
        continue
      if status != "done":     # no new chains: the study stops once the others end theirs
        problems.append((status, value))
        _drain(tasks)
        for _ in workers:
          tasks.put(None)
        continue
      out[index] = value
      finished = sum(o is not None for o in out)
      elapsed = time.perf_counter() - start
      _say(f"  [{finished}/{len(chains)} chains done, {elapsed / 60:.1f} min, about "
           f"{elapsed / finished * (len(chains) - finished) / 60:.1f} min left]")
  finally:
    for w in workers:
      w.join()
    for s, handler in previous.items():
      signal.signal(s, handler)
  errors_ = [value for status, value in problems if status == "error"]
  if errors_:
    raise errors.BadInput(errors_[0])
  if problems or signals:
    raise Stopped(problems[0][1] if problems else "stopped")
  if None in out:
    codes = ", ".join(str(w.exitcode) for w in workers if w.exitcode)
    raise Failed(f"a worker process failed (exit code {codes}; its traceback is above); "
                 "the same command resumes the study")
  return out


def _drain(tasks) -> None:
  try:
    while True:
      tasks.get(timeout=0.1)
  except queue.Empty:
    pass


def _worker(tasks, results, stop, cache: tuple[str | None, float]) -> None:
  """A worker process of run_chains: takes (index, chain) from `tasks` until None,
  puts (index, "done", records), or "stopped" | "error" with a message and ends."""
  _quiet_logging()
  if cache[0]:
    jax.config.update("jax_compilation_cache_dir", cache[0])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", cache[1])
  signals = []   # between stages; train() handles those during one
  for s in (signal.SIGINT, signal.SIGTERM):
    signal.signal(s, lambda signum, frame: signals.append(signum))
  for index, chain in iter(tasks.get, None):
    try:
      records = []
      for stage in chain:
        if signals or stop.is_set():
          raise Stopped(f"{stage[0]}: not started")
        records.append(run_training(*stage))
    except Stopped as e:
      results.put((index, "stopped", str(e)))
      return
    except errors.BadInput as e:
      results.put((index, "error", str(e)))
      return
    results.put((index, "done", records))


def _quiet_logging() -> None:
  """Stage lines and progress, not every checkpoint save (orbax logs through absl)."""
  absl_logging.set_verbosity(absl_logging.WARNING)
  logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")


@dataclasses.dataclass(frozen=True)
class Layout:
  """Where every run of a study lives."""

  root: str

  def student(self, name: str, seed: int, part: str) -> str:
    return os.path.join(self.root, f"seed_{seed}", name, part)

  def ablation(self, name: str, setting: str, seed: int, part: str) -> str:
    if not ABLATIONS[name][setting]:      # the study's own AMD student
      return self.student("amd_student", seed, part)
    return os.path.join(self.root, "ablation", name, f"seed_{seed}", setting, part)


def student_chain(layout: Layout, size: Size, seed: int, name: str, teacher: str
                  ) -> list[tuple]:
  """Student `name`'s stages with `seed`: its pre-training (but the scratch one's)
  and its fine-tuning + test. teacher: the release's checkpoint."""
  method = STUDENTS[name]
  fine = layout.student(name, seed, "finetune")
  if not method:
    return [(f"{name}: fine-tuning + test (seed {seed})",
             finetune_config_for(size, size.student, "", seed), fine, size.finetune_steps)]
  return pretrain_then_finetune(name, method, size, seed,
                                student_config(size, method, seed, teacher=teacher),
                                layout.student(name, seed, "pretrain"), fine)


def pretrain_then_finetune(name: str, method: str, size: Size, seed: int,
                           config: ml_collections.ConfigDict, pre: str, fine: str
                           ) -> list[tuple]:
  """Student `name`'s pre-training by `method` with `config` in `pre`, then its
  fine-tuning + test from there in `fine`: the stages of one chain."""
  return [(f"{name}: {method} pre-training (seed {seed})", config, pre, size.student_steps),
          (f"{name}: fine-tuning + test (seed {seed})",
           finetune_config_for(size, size.student, pre, seed), fine, size.finetune_steps)]


def probes(path: str, checkpoints: dict[str, str | vit.Encoder], size: Size) -> dict:
  """The linear probe of every checkpoint (or encoder) → `path` (probe.json); those
  already in it are not probed again."""
  done = _read_json(path) if os.path.isfile(path) else {"models": {}}
  todo = {name: p for name, p in checkpoints.items() if name not in done["models"]}
  if not todo:
    _say("  probes: done, skipped")
    return done
  _say(f"  probes: {', '.join(todo)}")
  report = probe.probe_report(todo, splits=("train", "val", "test"), videos=size.probe_videos)
  report["models"] = {**done["models"], **report["models"]}
  analysis.write_json(path, report)
  for name in todo:
    _say(f"  probe {name}: test top-1 {report['models'][name]['test_top1']:.3f}")
  return report


def teacher_finetune_stage(size: Size, checkpoint: str, workdir: str) -> tuple:
  """The teacher fine-tuned and tested with the size's protocol and its own lr."""
  config = finetune_config_for(size, size.teacher.variant, checkpoint, seed=0,
                               base_lr=size.teacher.finetune_base_lr)
  return ("teacher: fine-tuning + test (seed 0)", config, workdir, size.finetune_steps)


def plots(layout: Layout, size: Size, teacher: str) -> list[str]:
  """The PNGs (and their JSON numbers) from seed 0's runs; each drawn only if missing."""
  root = layout.root
  pre = {"teacher": teacher,
         "amd_student": layout.student("amd_student", 0, "pretrain"),
         "videomae_student": layout.student("videomae_student", 0, "pretrain")}
  students_pre = {k: v for k, v in pre.items() if k != "teacher"}
  fine = {name: layout.student(name, 0, "finetune") for name in STUDENTS}
  draw = {
      "pretrain_losses.png": lambda: analysis.plot_pretrain_losses(
          students_pre, os.path.join(root, "pretrain_losses.png")),
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


# ----------------------------------------------------------------- the teacher release

def read_release(path: str, size_name: str) -> dict:
  """The card of the teacher release at `path`, checked against the size's recipe."""
  card_path = os.path.join(path, CARD_FILE)
  if not os.path.isfile(card_path):
    raise errors.BadInput(f"{path} is not a teacher release (no {CARD_FILE}); make one with "
                          f"`python -m amd_jax.study --make-teacher {path}`")
  card = _read_json(card_path)
  want = dataclasses.asdict(SIZES[size_name].teacher)
  if card["recipe"] != want:
    raise errors.BadInput(f"the teacher at {path} was made with {card['recipe']}; the "
                          f"'{size_name}' study needs {want}")
  if card["data"] != _data_id():
    raise errors.BadInput(f"the teacher at {path} was trained on {card['data']}, this study "
                          f"reads {_data_id()}: make a new one with --make-teacher")
  return card


def _data_id() -> str:
  return f"moving_digits {moving_digits.MovingDigits.VERSION}"


def make_teacher(workdir: str, out: str, command: str, size_name: str = "default") -> dict:
  """Pre-trains the teacher of `size_name` in workdir/pretrain, fine-tunes and tests
  it with that size's protocol (workdir/finetune_SIZE), probes it and writes the
  release to `out`; returns its card, which records `command` (as it was typed,
  so that it reads the same on any machine). (Longer sizes fine-tune it themselves.)"""
  if os.path.exists(out):
    raise errors.BadInput(f"{out} exists: a teacher release goes to a new directory")
  size = SIZES[size_name]
  pre_dir = os.path.join(workdir, "pretrain")
  _say(f"[1/3] teacher: VideoMAE pre-training of {size.teacher.variant}")
  pre = run_training(f"teacher: {size.teacher.steps} steps", teacher_config(size), pre_dir,
                     size.teacher.steps)
  _say(f"[2/3] teacher: fine-tuning + test with the '{size_name}' protocol")
  record = run_training(*teacher_finetune_stage(size, pre_dir,
                                                os.path.join(workdir, f"finetune_{size_name}")))
  finetune = {size_name: {k: record.get(k) for k in ("top1", "top5", "views", "steps", "time_s")}}
  _say("[3/3] teacher: probe, reconstruction loss, release")
  staging = out.rstrip(os.sep) + ".partial"
  shutil.rmtree(staging, ignore_errors=True)
  os.makedirs(staging)
  convert.convert(pre_dir, os.path.join(staging, "checkpoint"), progress=False)
  shutil.copy(os.path.join(pre_dir, "metrics.jsonl"), staging)
  recon = analysis.reconstructions_report({"teacher": pre_dir}, staging)
  probed = probe.probe_report({"teacher": pre_dir}, videos=size.probe_videos)["models"]["teacher"]
  rows = [r for r in analysis.metric_rows(pre_dir) if "loss" in r]
  card = dict(
      recipe=dataclasses.asdict(size.teacher), data=_data_id(),
      command=command,
      config=json.loads(teacher_config(size).to_json()),
      pretrain=dict(steps=pre["steps"], time_s=pre["time_s"],
                    final_loss=rows[-1]["loss"] if rows else None),
      reconstruction_loss=recon["loss"], reconstruction_videos=recon["videos"],
      finetune=finetune, finetune_recipe=dict(FINETUNE_OVERRIDES,
                                              **{"optim.base_lr": size.teacher.finetune_base_lr}),
      probe={k: probed[k] for k in ("test_top1", "val_top1", "train_top1", "l2", "videos")},
      made=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      machine=machine())
  analysis.write_json(os.path.join(staging, CARD_FILE), card)
  os.replace(staging, out)
  _say(f"teacher release: {out}")
  return card


# ----------------------------------------------------------------- results

def _stats(values: list) -> tuple[float | None, float | None]:
  """(mean, sample std) of the non-null values; std is None with fewer than two."""
  values = [v for v in values if v is not None]
  if not values:
    return None, None
  std = float(np.std(values, ddof=1)) if len(values) > 1 else None
  return float(np.mean(values)), std


def summarize(runs: list[dict], variant: str) -> dict:
  """One model's row from its runs ({seed, pretrain: record | None, finetune: record |
  None, probe_top1: float | None}).

  Times and top-k are means over the runs (std: the sample std, None for one run).
  """
  row = {"variant": variant, "seeds": [r["seed"] for r in runs]}
  pre = [r["pretrain"] or {} for r in runs]
  fine = [r["finetune"] or {} for r in runs]
  for key in ("top1", "top5"):
    row[key], row[f"{key}_std"] = _stats([f.get(key) for f in fine])
  row["probe_top1"], row["probe_top1_std"] = _stats([r.get("probe_top1") for r in runs])
  row["views"] = fine[0].get("views")
  row["pretrain_time_s"], _ = _stats([p.get("time_s") for p in pre])
  row["finetune_time_s"], _ = _stats([f.get("time_s") for f in fine])
  row["pretrain_steps"] = pre[0].get("steps", 0)
  row["finetune_steps"] = fine[0].get("steps")
  row["runs"] = [{"seed": r["seed"], "top1": f.get("top1"), "top5": f.get("top5"),
                  "probe_top1": r.get("probe_top1"), "pretrain_time_s": p.get("time_s"),
                  "finetune_time_s": f.get("time_s")}
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
  head = [first, "variant", "top-1", "top-5", "probe top-1", "pre-train", "fine-tune"]
  lines = [head]
  for name, r in rows.items():
    lines.append([name, r["variant"], _cell(r["top1"], r["top1_std"]),
                  _cell(r["top5"], r["top5_std"]),
                  _cell(r.get("probe_top1"), r.get("probe_top1_std")),
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


def run_study(root: str, size_name: str = "default", seeds: int | None = None,
              teacher: str = RELEASED_TEACHER, jobs: int = 1) -> dict:
  """Every stage of the study into `root`; returns (and writes) results.json's content."""
  size = SIZES[size_name]
  seeds = seeds or size.seeds
  card = read_release(teacher, size_name)
  _check_size(root, size_name)
  layout = Layout(root)
  ckpt = os.path.join(teacher, "checkpoint")
  start = time.perf_counter()
  plan = [(seed, name) for name in STUDENTS for seed in range(seeds)]   # longest first
  chains = [student_chain(layout, size, seed, name, ckpt) for seed, name in plan]
  # The teacher's fine-tuned top-1 comes from its release's card, or, for a size
  # the release was not measured with, from its own fine-tuning beside the students.
  measure_teacher = size_name not in card["finetune"]
  if measure_teacher:
    chains.insert(0, [teacher_finetune_stage(size, ckpt,
                                             os.path.join(root, "teacher", "finetune"))])
  _say(f"[1/3] students ({', '.join(STUDENTS)} × {seeds} seed{'s' * (seeds > 1)}"
       + (", and the teacher's fine-tuning" if measure_teacher else "")
       + f"): {len(chains)} chains of pre-training, fine-tuning, test; {jobs} at a time")
  records = run_chains(chains, jobs)
  teacher_finetune = records.pop(0)[0] if measure_teacher else card["finetune"][size_name]
  by_seed: dict[int, dict] = {}
  for (seed, name), chain in zip(plan, records):
    by_seed.setdefault(seed, {})[name] = {"pretrain": chain[0] if len(chain) == 2 else None,
                                          "finetune": chain[-1]}
  _say("[2/3] probes and plots (seed 0)")
  encoders = {f"{name}/seed_{s}": layout.student(name, s, "pretrain") if method else
              probe.random_encoder(size.student, num_frames=8, image_size=size.image_size,
                                   seed=s)
              for s in by_seed for name, method in STUDENTS.items()}
  probed = probes(os.path.join(root, PROBE_FILE), {"teacher": ckpt, **encoders}, size)["models"]
  paths = plots(layout, size, ckpt)
  _say("[3/3] results")
  source = "measured here" if measure_teacher else "from its release's card"
  models = {}
  for name, method in STUDENTS.items():
    runs = [{"seed": s, **by_seed[s][name],
             "probe_top1": probed[f"{name}/seed_{s}"]["test_top1"]}
            for s in sorted(by_seed)]
    models[name] = summarize(runs, size.student)
  models["teacher"] = summarize(
      [{"seed": 0, "pretrain": card["pretrain"], "finetune": teacher_finetune,
        "probe_top1": probed["teacher"]["test_top1"]}], size.teacher.variant)
  models["teacher"]["note"] = (
      f"released teacher ({teacher}): pre-trained once ({card['command']}); its fine-tuned "
      f"top-1 ('{size_name}' protocol, base lr {size.teacher.finetune_base_lr:g}) is "
      f"{source}; its probe is measured here")
  results = {
      "study": dict(size=size_name, seeds=sorted(by_seed), data=_data_id(), frames=8,
                    image_size=size.image_size, teacher=size.teacher.variant,
                    student=size.student, teacher_release=dict(path=teacher, made=card["made"]),
                    times="wall clock of each stage, compilation included",
                    this_call_s=time.perf_counter() - start, machine=machine()),
      "models": models,
      "plots": [os.path.relpath(p, root) for p in paths],
  }
  analysis.write_json(os.path.join(root, "results.json"), results)
  return results


def run_ablation(root: str, name: str, size_name: str = "default", seeds: int | None = None,
                 teacher: str = RELEASED_TEACHER, jobs: int = 1) -> dict:
  """The AMD student under each setting of ablation `name`, fine-tuned and probed →
  DIR/ablation_NAME.json."""
  size = SIZES[size_name]
  seeds = seeds or size.seeds
  read_release(teacher, size_name)
  _check_size(root, size_name)
  layout = Layout(root)
  ckpt = os.path.join(teacher, "checkpoint")
  plan = [(seed, setting) for seed in range(seeds) for setting in ABLATIONS[name]]
  chains = [pretrain_then_finetune(
      f"{name}={setting}", "AMD", size, seed,
      student_config(size, "amd", seed, teacher=ckpt, overrides=ABLATIONS[name][setting]),
      layout.ablation(name, setting, seed, "pretrain"),
      layout.ablation(name, setting, seed, "finetune")) for seed, setting in plan]
  records = run_chains(chains, jobs)
  # The probe of every setting's encoder; the default setting's is the study's AMD
  # student, under the study's name in the same probe.json.
  names = {(seed, setting): (f"amd_student/seed_{seed}" if not ABLATIONS[name][setting]
                             else f"ablation/{name}/{setting}/seed_{seed}")
           for seed, setting in plan}
  probed = probes(os.path.join(root, PROBE_FILE),
                  {names[key]: layout.ablation(name, key[1], key[0], "pretrain")
                   for key in plan}, size)["models"]
  runs = {setting: [] for setting in ABLATIONS[name]}
  for (seed, setting), (pre, fine) in zip(plan, records):
    runs[setting].append({"seed": seed, "pretrain": pre, "finetune": fine,
                          "probe_top1": probed[names[seed, setting]]["test_top1"]})
  rows = {setting: dict(summarize(r, size.student), overrides=ABLATIONS[name][setting])
          for setting, r in runs.items()}
  out = {"ablation": name, "size": size_name, "settings": rows, "machine": machine()}
  analysis.write_json(os.path.join(root, f"ablation_{name}.json"), out)
  return out


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(prog="python -m amd_jax.study", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--workdir", help="default: runs/demo (runs/teacher with --make-teacher)")
  parser.add_argument("--size", default="default", choices=tuple(SIZES))
  parser.add_argument("--seeds", type=int, help="students' seeds (default: 1 at smoke, else 3)")
  parser.add_argument("--teacher", default=RELEASED_TEACHER,
                      help="the teacher release to distil from (default: the shipped one)")
  parser.add_argument("--ablation", choices=tuple(ABLATIONS))
  parser.add_argument("--make-teacher", metavar="OUT",
                      help="pre-train, fine-tune and probe the teacher; its release → OUT")
  parser.add_argument("--jobs", type=int,
                      help="students' runs at once, each in its own process (default: 2 on "
                           "CPU, 1 on an accelerator); the results do not depend on it")
  args = parser.parse_args(argv)
  if args.seeds is not None and args.seeds < 1:
    parser.error("--seeds must be at least 1")
  if args.jobs is not None and args.jobs < 1:
    parser.error("--jobs must be at least 1")
  _quiet_logging()
  workdir = args.workdir or ("runs/teacher" if args.make_teacher else "runs/demo")
  root = os.path.abspath(workdir)
  # Every seed's programs are seed 0's (the seed is data, not code): a persistent
  # compilation cache in DIR spares the later seeds (and reruns) their compiles.
  if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    jax.config.update("jax_compilation_cache_dir", os.path.join(root, "jax_cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  teacher = os.path.abspath(args.teacher)
  jobs = args.jobs or default_jobs()
  try:
    workdir_lib.check(root)     # as for a training run: refused before anything runs
    if args.make_teacher:
      typed = sys.argv[1:] if argv is None else argv
      card = make_teacher(root, os.path.abspath(args.make_teacher),
                          "python -m amd_jax.study " + shlex.join(typed), args.size)
      print(json.dumps({k: card[k] for k in ("finetune", "probe", "reconstruction_loss")},
                       indent=2))
    elif args.ablation:
      out = run_ablation(root, args.ablation, args.size, args.seeds, teacher, jobs)
      print(table(out["settings"], first=args.ablation))
      print(f"\n{os.path.join(root, f'ablation_{args.ablation}.json')}")
    else:
      out = run_study(root, args.size, args.seeds, teacher, jobs)
      print(table(out["models"]))
      print(f"\nresults: {os.path.join(root, 'results.json')}; plots: "
            + ", ".join(out["plots"]))
  except errors.BadInput as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  except Stopped as e:      # as amd_jax.main after SIGTERM: saved, exit 0
    print(f"{e}; the same command resumes it", file=sys.stderr)
  except Failed as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
  main()
