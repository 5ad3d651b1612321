"""How the study's runs are made: its sizes, the teacher's recipe, the students,
the fine-tuning recipe, the ablations, and the config of every run."""

from __future__ import annotations

import dataclasses

import ml_collections

from amd_jax import config_files, errors
from amd_jax.data.builders import moving_digits

# The students: name → pre-training method (None: fine-tuned from random weights).
STUDENTS = {"amd_student": "amd", "videomae_student": "videomae", "scratch_student": None}
MODELS = (*STUDENTS, "teacher")
# Fine-tuning recipe of every student: configs/finetune.py:runlocal with a 30× base
# lr (6e-2: 3.75e-3 peak at 16 videos per step), one clip per video and step (no
# repeated sampling) and no mixup, cutmix, RandAugment or random erasing: the
# default's 128 steps are one pass over the train split, too short for augmentation
# to pay. One test crop: the three crops of a square clip are one and the same (crops
# run along the long side). The runs that chose it:
# docs/study/README.md, "How the recipes were chosen".
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
  clip_norm: float = 0.0           # gradient clipping by global norm (0: none, VideoMAE's)


# The released teacher: Mi (8 blocks × 128, twice the students' depth and width, as
# ViT-L over ViT-B and ViT-B over ViT-S; 8× their parameters) for 2048 steps of 32
# clips (32 passes over the train split at 4 samples per video): 20× the clips of a
# default student's 400 steps of 8 and 5× a --full one's 1600, as the paper's
# teachers train for 2–3× their students' epochs. Its lr peaks where the students'
# does (base 0.025 at 8 videos per update: 7.8e-4) and its gradients are clipped as
# AMD's are (0.02): at twice that lr it loses the background's flicker for good, and
# unclipped it loses and relearns it for hundreds of steps. Its fine-tuning keeps the
# students' lr and layer decay, which scored as well as the others tried or better.
# The runs behind each choice: docs/study/README.md, "How the recipes were chosen".
RELEASE = Teacher(variant="Mi/8x2", image_size=64, steps=2048, batch_size=32, base_lr=0.025,
                  finetune_base_lr=6e-2, clip_norm=0.02)


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
    # launch/demo.sh's (its times: docs/study/README.md).
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


def _labelled(videos: int) -> dict:
  """Fine-tuning on `videos` of the train split: the first videos / 8 of each motion."""
  classes = len(moving_digits.MOTIONS)
  return {"data.per_class": videos // classes, "data.train_videos": videos}


# One factor of the fine-tuning of every model (each student with every seed, and the
# teacher with the same seeds), its pre-training the study's: setting → fine-tuning
# config overrides. "labels": fewer labelled videos for the same steps (more passes
# over fewer videos), while pre-training still sees all of them unlabelled: the
# regime where pre-training matters most (the paper's UCF101 and HMDB51 have 9.5k
# and 3.6k training videos), unlike the study's, where 2048 labelled videos teach
# a student the motion from random weights (docs/study/probe_vs_finetune.md).
FINETUNE_ABLATIONS = {
    "labels": {str(TRAIN_VIDEOS): {}, "256": _labelled(256), "64": _labelled(64)},
}


def override(config: ml_collections.ConfigDict, values: dict) -> ml_collections.ConfigDict:
  """Sets dotted keys ('align.method') of a config; an unknown key is an error.

  Not ConfigDict.update_from_flattened_dict: it adds an unknown key (a typo in an
  ablation) as a new field, locked config or not, and the run would ignore it.
  """
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
  config = config_files.load("videomae", "runlocal")
  config.model.variant = t.variant
  config.data.size = t.image_size
  config.batch_size = t.batch_size
  config.optim.base_lr = t.base_lr
  config.optim.clip_norm = t.clip_norm
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
    config = config_files.load("pretrain", "runlocal")
    config.teacher.variant = size.teacher.variant
    config.teacher.init = teacher
    config.align.student_layers = size.student_layers
    config.align.teacher_layers = size.teacher_layers
  else:
    config = config_files.load("videomae", "runlocal")
  config.model.variant = size.student
  config.data.size = size.image_size
  _pretrain_schedule(config, size.student_steps)
  _runtime(config, size, seed)
  return override(config, overrides or {})


def finetune_config_for(size: Size, variant: str, init: str, seed: int,
                        base_lr: float | None = None, overrides: dict | None = None
                        ) -> ml_collections.ConfigDict:
  """configs/finetune.py:runlocal for `variant` from the pre-training run `init`
  ('' = random weights), with FINETUNE_OVERRIDES (base_lr: another lr), then
  `overrides` (a FINETUNE_ABLATIONS setting).

  A fine-tuning epoch is one pass over the V training videos (V // v steps), so
  `finetune_steps` updates are finetune_steps / (V // v) epochs, whatever V the
  overrides leave; validation halfway and at the end.
  """
  config = config_files.load("finetune", "runlocal")
  config.mode = "finetune"
  config.init = init
  config.model.variant = variant
  config.data.update(size=size.image_size, split="train", train_videos=TRAIN_VIDEOS)
  config.evals.val.split, config.evals.test.split = size.val_split, size.test_split
  override(config, FINETUNE_OVERRIDES)
  if base_lr is not None:
    config.optim.base_lr = base_lr
  override(config, overrides or {})
  per_epoch = config.data.train_videos // (config.batch_size // config.data.num_sample)
  _set_epochs(config, size.finetune_steps / per_epoch)
  config.evals.val.every = max(size.finetune_steps // 2, 1)
  _runtime(config, size, seed)
  return config
