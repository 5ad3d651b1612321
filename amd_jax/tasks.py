"""One object per task: everything that differs between AMD and VideoMAE pre-training,
classification and AVA detection fine-tuning, asked of one place.

  task = tasks.of(config)

A task owns its checks of the config, its training data, its model and frozen
teacher, its step's static part (steps.PretrainTask, FinetuneTask, DetectTask),
what a run starts from when it resumes nothing, and its evaluators. train.py,
state.py, plan and bench ask it; which task a config is comes from
amd_jax/task_names.py, the one reader of config.mode and model.head.

A fifth task is one class here, plus its name in task_names.py, its steps.*Task,
configs and tests.
"""

from __future__ import annotations

import abc
import logging
import math

import grain
import jax
import ml_collections
from flax import nnx
from jax.sharding import Mesh

from amd_jax import errors, hub, masking, mixup, pretrained, sharding, steps, task_names
from amd_jax.data import ava_pipeline, pipeline, sources
from amd_jax.data.builders import ava as ava_builder
from amd_jax.evaluators import ava as ava_evaluator
from amd_jax.evaluators import classification, common
from amd_jax.models import build, vit

log = logging.getLogger("amd_jax")

# The evaluation (config.evals) whose results are the run's test files, and the one
# mode=test runs.
TEST = "test"


class Task(abc.ABC):
  """What every task answers; the defaults are a task without a teacher or evaluators.
  Data, model and step have no default: a task class without them cannot be made."""

  name: str
  pretraining = False
  distills = False          # a frozen teacher beside the trained model
  model_configs = ("model",)  # the config blocks of the models a run builds

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config
    self.evaluate_only = task_names.evaluate_only(config)   # mode=test

  # ------------------------------------------------------------- config
  def validate(self) -> None:
    """Refuses, in one line, what this task cannot start with (train.validate calls it
    before data, models or compilation)."""
    for name in self.model_configs:
      build.check_dtype(self.config, name)

  def prepare(self) -> None:
    """Settles what the config leaves to the dataset, before the run is set up."""

  # ------------------------------------------------------------- data
  def mask_counts(self) -> masking.MaskCounts:
    """The token counts of one clip: every token visible unless the task masks."""
    return masking.tube_counts(build.token_grid(self.config), 0.0)

  @abc.abstractmethod
  def train_dataset(self, records, *, bad_files: str | None, process_index: int,
                    process_count: int) -> grain.MapDataset:
    """Endless training batches of this process (the input pipeline's)."""

  def steps_per_epoch(self, steps_per_pass: int) -> float:
    """An epoch: one pass over the training videos."""
    return steps_per_pass

  def batch_spec(self) -> dict:
    """The global batch the input pipeline makes, as {key: (shape, dtype)} (plan)."""
    b, d = self.config.batch_size, self.config.data
    return {"video": ((b, d.frames, d.size, d.size, 3), jax.numpy.uint8)}

  # ------------------------------------------------------------- models and step
  @abc.abstractmethod
  def model(self, rngs: nnx.Rngs) -> nnx.Module:
    """The model the run trains."""

  def teacher(self, mesh: Mesh, *, abstract: bool = False):
    """(graphdef, params, shardings) of the frozen teacher; all None without one."""
    return None, None, None

  @abc.abstractmethod
  def step_task(self, model_def: nnx.GraphDef, teacher_def: nnx.GraphDef | None):
    """The static part of the update: what the loss needs besides parameters and batch."""

  # ------------------------------------------------------------- start and evaluation
  def init(self, state: dict, state_sharding: dict) -> dict:
    """The state a run starts from when there is no checkpoint to resume."""
    return state

  def evaluators(self, mesh: Mesh, model_def: nnx.GraphDef, state_sharding: dict) -> dict:
    """{name: evaluator} (amd_jax/evaluators), one per entry of config.evals."""
    return {}

  def eval_every(self) -> dict[str, int]:
    """{name: steps between its runs} of the evaluators (0: once per epoch; -1: after
    the last step only)."""
    return {}


class Pretraining(Task):
  """Masked-autoencoder pre-training of the student (VideoMAE; AMD adds the teacher)."""

  pretraining = True

  def validate(self) -> None:
    super().validate()
    for ratio, value in zip(("student_ratio", "teacher_ratio"), self.mask_ratios()):
      if value is not None and not 0 <= value < 1:
        raise errors.BadInput(f"masking.{ratio}={value} must be in [0, 1): the fraction of "
                              "tokens hidden")

  def mask_ratios(self) -> tuple[float, float | None]:
    """(student, teacher) mask ratios; a teacher ratio only with a teacher (VideoMAE's
    masks have only the codes 0 and 2)."""
    return self.config.masking.student_ratio, None

  def mask_counts(self) -> masking.MaskCounts:
    return masking.tube_counts(build.token_grid(self.config), *self.mask_ratios())

  def train_dataset(self, records, **kw) -> grain.MapDataset:
    return pipeline.pretrain_dataset(self.config, build.token_grid(self.config),
                                     self.mask_ratios(), records=records, **kw)

  def steps_per_epoch(self, steps_per_pass: int) -> float:
    # One repeated sample per video (optim.py): a pass over the videos with num_sample
    # clips each is num_sample epochs.
    return steps_per_pass / self.config.data.num_sample

  def batch_spec(self) -> dict:
    tokens = math.prod(build.token_grid(self.config))
    return dict(super().batch_spec(), mask=((self.config.batch_size, tokens), jax.numpy.int8))

  def model(self, rngs: nnx.Rngs) -> nnx.Module:
    return build.student(self.config, rngs, align=self.distills)

  def step_task(self, model_def, teacher_def) -> steps.PretrainTask:
    c = self.config
    variant = vit.decode_variant(c.model.variant)
    align = dict(teacher_layers=tuple(c.align.teacher_layers), align_loss=c.align.loss,
                 target_norm=c.align.target_norm) if self.distills else {}
    return steps.PretrainTask(
        student=model_def, teacher=teacher_def, counts=self.mask_counts(),
        patch=variant.patch, tubelet=variant.tubelet, rec_weight=c.loss.rec,
        dir_weight=c.loss.get("dir", 0.0), gen_weight=c.loss.get("gen", 0.0),
        stochastic=c.model.drop_path > 0, **align)


class VideoMae(Pretraining):
  name = task_names.VIDEOMAE


class Amd(Pretraining):
  """VideoMAE's student, distilled from a frozen teacher that sees more tokens."""

  name = task_names.AMD
  distills = True
  model_configs = ("model", "teacher")

  def validate(self) -> None:
    super().validate()
    build.check_alignment(self.config)
    if self.config.teacher.init:
      hub.local(self.config.teacher.init, "teacher.init")   # a Hub id is fetched here

  def mask_ratios(self) -> tuple[float, float | None]:
    m = self.config.masking
    return m.student_ratio, m.get("teacher_ratio")

  def teacher(self, mesh: Mesh, *, abstract: bool = False):
    """Sharded like the student (or replicated: sharding.replicate_teacher); never in
    the optimiser or a checkpoint. abstract: ShapeDtypeStructs, no file read."""
    c = self.config
    teacher_def, abstract_params = nnx.split(
        nnx.eval_shape(lambda: build.teacher(c, nnx.Rngs(0))), nnx.Param)
    if c.sharding.replicate_teacher:
      shardings = jax.tree.map(lambda _: sharding.replicated(mesh), abstract_params)
    else:
      shardings = sharding.named(mesh, sharding.param_specs(abstract_params, c.sharding.rules))
      sharding.assert_sharded(abstract_params, mesh, shardings)
    if abstract:
      return teacher_def, sharding.abstract_like(abstract_params, shardings), shardings
    if not c.teacher.init:
      params = jax.jit(lambda k: nnx.state(build.teacher(c, nnx.Rngs(params=k)), nnx.Param),
                       out_shardings=shardings)(jax.random.key(c.seed + 1))
      log.warning("teacher %s is randomly initialised: teacher.init is empty",
                  c.teacher.variant)
      return teacher_def, params, shardings
    host, ln_eps = pretrained.load_encoder(c.teacher.init, abstract_params,
                                           (c.data.frames, c.data.size))
    if ln_eps != c.teacher.ln_eps:      # the epsilon is static: it lives in the graphdef
      teacher_def = nnx.graphdef(nnx.eval_shape(
          lambda: build.teacher(c, nnx.Rngs(0), ln_eps=ln_eps)))
    log.info("teacher %s loaded from %s (LayerNorm eps %g)", c.teacher.variant,
             c.teacher.init, ln_eps)
    return teacher_def, jax.device_put(host, shardings), shardings


class Finetuning(Task):
  """A pre-trained encoder fine-tuned with a head, then tested (mode=test: only tested)."""

  EVAL_KEYS = ("split", "every")       # what each config.evals entry holds (+ VIEWS)
  VIEWS = ()                            # the `views` an evaluation may take, if any

  def validate(self) -> None:
    super().validate()
    c = self.config
    if c.eval_batch_size <= 0:
      raise errors.BadInput(f"eval_batch_size={c.eval_batch_size} must be positive")
    keys = self.EVAL_KEYS + (("views",) if self.VIEWS else ())
    for name, e in c.evals.items():
      if sorted(e) != sorted(keys):
        raise errors.BadInput(f"evals.{name} has {', '.join(sorted(e))}: a {self.name} "
                              f"evaluation has {', '.join(keys)}")
      if not isinstance(e.every, int) or e.every < -1:
        raise errors.BadInput(f"evals.{name}.every={e.every!r} must be ≥ -1 (steps between "
                              "runs; 0: once per epoch; -1: after the last step only)")
      if self.VIEWS and e.views not in self.VIEWS:
        raise errors.BadInput(f"evals.{name}.views={e.views!r}: choose from "
                              f"{'|'.join(self.VIEWS)}")
    if self.evaluate_only and TEST not in c.evals:
      raise errors.BadInput(f"mode=test runs the evaluation named {TEST}: config.evals has "
                            f"{', '.join(c.evals) or 'none'}")
    pipeline.check_batch("eval_batch_size", c.eval_batch_size, devices=jax.device_count())
    if c.init:
      hub.local(c.init, "init")           # a Hub id is fetched here

  def init(self, state: dict, state_sharding: dict) -> dict:
    """The encoder of config.init (the pre-training run), else random weights."""
    if self.config.init:
      return pretrained.load_init(self.config, state, state_sharding)
    log.warning("init is empty: fine-tuning %s from random weights", self.config.model.variant)
    return state

  def tested(self, state: dict, state_sharding: dict) -> dict:
    """mode=test without a checkpoint: the state with the fine-tuned model at config.init."""
    return dict(state, params=pretrained.load_classifier(self.config, state["params"],
                                                         state_sharding["params"]))

  def eval_every(self) -> dict[str, int]:
    return {name: e.every for name, e in self.config.evals.items()}

  def _data(self, split: str) -> common.Data:
    c = self.config
    return common.Data(c.data.name, split, c.data.data_dir, c.eval_batch_size,
                       c.data.worker_count, c.progress)


class Classification(Finetuning):
  name = task_names.CLASSIFICATION
  VIEWS = ("centre", "multi")

  def prepare(self) -> None:
    """data.num_classes 0: read from the dataset's label map (video and image folders);
    a typed number that disagrees with the label map, or no classes, is one line."""
    d = self.config.data
    if not d.num_classes:
      sources.open_split(d.name, d.split, d.data_dir)    # prepared, or one line saying how
    b = sources.builder(d.name, d.data_dir)
    names = sources.class_names(b) if b.is_prepared() else None
    if not d.num_classes:
      if not names:
        raise errors.BadInput(f"dataset {d.name} has no classes to fine-tune on: it was "
                              "built from unlabelled videos, which serve pre-training only "
                              "(build class folders or a path,class_name CSV for a "
                              "classifier)")
      d.num_classes = len(names)
    elif names and len(names) != d.num_classes:
      raise errors.BadInput(f"data.num_classes={d.num_classes}, but dataset {d.name} has "
                            f"{len(names)} classes: leave data.num_classes at 0 to read them")

  def train_dataset(self, records, **kw) -> grain.MapDataset:
    return pipeline.finetune_dataset(self.config, records=records, **kw)

  def batch_spec(self) -> dict:
    return dict(super().batch_spec(), label=((self.config.batch_size,), jax.numpy.int32))

  def model(self, rngs: nnx.Rngs) -> nnx.Module:
    return build.classifier(self.config, rngs)

  def step_task(self, model_def, teacher_def) -> steps.FinetuneTask:
    return steps.FinetuneTask(model=model_def, num_classes=self.config.data.num_classes,
                              mixup=mixup.Mixup(**self.config.mixup))

  def evaluators(self, mesh, model_def, state_sharding) -> dict:
    """centre: one clip per video, drawn as in training with a fixed seed (every run
    sees the same clips); multi: the test's clips × crops views."""
    c, d = self.config, self.config.data
    predict = common.jit_predict(classification.predict_fn(model_def), mesh, state_sharding)
    classes = sources.class_names(sources.builder(d.name, d.data_dir)) or None
    views = {
        "centre": (pipeline.CentreClip(d.sampler, d.frames, d.sampling_rate, d.size,
                                       seed=c.seed), 1),
        "multi": (pipeline.Views(d.test_sampler, d.frames, d.sampling_rate, d.size,
                                 d.test_clips, d.test_crops), d.test_clips * d.test_crops)}
    return {name: classification.Evaluator(predict, mesh, data=self._data(e.split),
                                           view=views[e.views][0], views=views[e.views][1],
                                           name=name, classes=classes)
            for name, e in c.evals.items()}


class Detection(Finetuning):
  """AVA action detection: the detector on ground-truth boxes, frame mAP on proposals."""

  name = task_names.DETECTION

  def train_dataset(self, records, *, bad_files, process_index, process_count):
    c, d = self.config, self.config.data
    sample = ava_pipeline.TrainSample(records, max_boxes=d.max_boxes, size=d.size,
                                      short_side=d.short_side, bad_files=bad_files)
    return ava_pipeline.ava_train_batches(records, sample, c.batch_size, c.seed,
                                          process_index=process_index,
                                          process_count=process_count)

  def batch_spec(self) -> dict:
    b, d = self.config.batch_size, self.config.data
    return dict(super().batch_spec(), boxes=((b, d.max_boxes, 4), jax.numpy.float32),
                labels=((b, d.max_boxes, d.num_classes), jax.numpy.uint8),
                box_valid=((b, d.max_boxes), jax.numpy.bool_))

  def model(self, rngs: nnx.Rngs) -> nnx.Module:
    return build.detector(self.config, rngs)

  def step_task(self, model_def, teacher_def) -> steps.DetectTask:
    return steps.DetectTask(model=model_def)

  def evaluators(self, mesh, model_def, state_sharding) -> dict:
    d = self.config.data
    predict = common.jit_predict(ava_evaluator.predict_fn(model_def), mesh, state_sharding)
    view = ava_pipeline.TestSample(max_boxes=d.max_boxes, short_side=d.short_side,
                                   height=d.test_height, width=d.test_width,
                                   box_threshold=d.box_threshold)
    truth = ava_builder.evaluation_data(sources.builder(d.name, d.data_dir))
    return {name: ava_evaluator.Evaluator(predict, mesh, data=self._data(e.split), view=view,
                                          name=name, truth=truth)
            for name, e in self.config.evals.items()}


TASKS = {t.name: t for t in (Amd, VideoMae, Classification, Detection)}


def of(config: ml_collections.ConfigDict) -> Task:
  """The task of a run's config (its config.mode and model.head: task_names.of)."""
  name = task_names.of(config)
  if name is None:
    raise errors.BadInput("the config has no mode: it is not a training run's config")
  return TASKS[name](config)
