"""Training, one lifecycle read top to bottom: pre-training (AMD or VideoMAE) and
classification fine-tuning with its evaluations.

set up → mesh → input pipeline → model and optimiser (born sharded) → teacher
(AMD) → compiled steps → restore (or the fine-tuning init) → train loop with
validations → multi-view test (fine-tuning). `train(config, workdir)` is
importable (tests, notebooks); amd_jax/main.py is the command line around it.
config.mode: amd | videomae (pre-training), finetune, test (evaluate only).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import sys
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import tqdm
from flax import nnx
from jax.experimental import multihost_utils

from amd_jax import (checkpoint, convert, errors, losses, masking, metrics, mixup, optim,
                     pretrained, sharding, steps)
from amd_jax import workdir as workdir_lib
from amd_jax.convert import spec as spec_lib
from amd_jax.data import ava_pipeline, pipeline
from amd_jax.evaluators import ava as ava_evaluator
from amd_jax.evaluators import classification
from amd_jax.models import decoders, heads, pretrain, roi, vit

log = logging.getLogger("amd_jax")


class StopRequested:
  """SIGTERM (preemption, scancel) or Ctrl-C → save at the next step boundary and exit 0.

  A second Ctrl-C exits at once. Only a second SIGINT counts: on a Ctrl-C in
  its terminal, launch/local.sh forwards a SIGTERM beside the SIGINT every
  process gets from the terminal.
  """

  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self):
    self.requested = False
    self._interrupts = 0
    self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}

  def _handle(self, signum, frame):
    if signum == signal.SIGINT:
      self._interrupts += 1
      if self._interrupts > 1:
        print("interrupted again: exiting at once, without saving (the last committed "
              "checkpoint is kept)", file=sys.stderr, flush=True)
        os._exit(128 + signum)    # no unwinding: that is what a second Ctrl-C asks for
    if not self.requested:
      log.warning("%s: saving a checkpoint and stopping after this step%s",
                  signal.Signals(signum).name,
                  " (Ctrl-C again: stop at once)" if signum == signal.SIGINT else "")
    self.requested = True

  def restore(self):
    for s, previous in self._previous.items():
      signal.signal(s, previous)


def validate(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Refuses a config or workdir that cannot run, with one line, before anything heavy
  (data, models, compilation) happens: every check of the command line is here."""
  pretraining = "masking" in config
  modes = ("amd", "videomae") if pretraining else ("finetune", "test")
  if config.mode not in modes:
    raise errors.BadInput(f"config.mode={config.mode!r}: this config's modes are "
                          f"{'|'.join(modes)}")
  for key in ("batch_size", "grad_accum", "log_every", "ckpt_every", "keep_ckpts",
              "data.num_sample") + (() if pretraining else ("eval_batch_size",)):
    if _get(config, key) <= 0:
      raise errors.BadInput(f"{key}={_get(config, key)} must be positive")
  for key in ("total_steps",) + (() if pretraining else ("eval_every",)):
    if _get(config, key) < 0:
      raise errors.BadInput(f"{key}={_get(config, key)} must be ≥ 0 (0: from optim.epochs"
                            f"{'' if key == 'total_steps' else ', once per epoch'})")
  if config.batch_size % config.grad_accum:
    raise errors.BadInput(f"batch_size {config.batch_size} is not divisible by "
                     f"grad_accum {config.grad_accum}")
  # Every process reads whole videos (num_sample clips each) of every global batch,
  # and the batch is split over all devices.
  per = config.data.num_sample * jax.process_count()
  if config.batch_size % per:
    raise errors.BadInput(f"batch_size {config.batch_size} must be a multiple of num_sample "
                          f"× processes = {config.data.num_sample} × {jax.process_count()}")
  if config.batch_size % jax.device_count():
    raise errors.BadInput(f"batch_size {config.batch_size} is not divisible by the "
                          f"{jax.device_count()} devices")
  models = ("model", "teacher") if config.mode == "amd" else ("model",)
  for name in models:
    if config[name].dtype not in pretrain.DTYPES:
      raise errors.BadInput(f"{name}.dtype={config[name].dtype!r}: choose from "
                            f"{'|'.join(pretrain.DTYPES)}")
  if pretraining:
    ratios = ("student_ratio", "teacher_ratio") if config.mode == "amd" else ("student_ratio",)
    for ratio in ratios:
      value = config.masking[ratio]
      if not 0 <= value < 1:
        raise errors.BadInput(f"masking.{ratio}={value} must be in [0, 1): the fraction of "
                              "tokens hidden")
  if config.mode == "amd":
    if config.align.method not in decoders.ALIGNMENT_METHODS:
      raise errors.BadInput(f"unknown alignment method align.method={config.align.method!r}: "
                            f"choose from {'|'.join(decoders.ALIGNMENT_METHODS)}")
    if config.align.loss not in losses.ALIGN_LOSSES:
      raise errors.BadInput(f"unknown alignment loss align.loss={config.align.loss!r}: "
                            f"choose from {'|'.join(losses.ALIGN_LOSSES)}")
    if len(config.align.student_layers) != len(config.align.teacher_layers):
      raise errors.BadInput("align.student_layers and align.teacher_layers must pair up: "
                       f"{config.align.student_layers} vs {config.align.teacher_layers}")
    if not config.align.student_layers:
      raise errors.BadInput("align.student_layers is empty: AMD aligns at least one layer pair")
    if config.align.target_norm not in losses.ALIGN_TARGET_NORMS:
      raise errors.BadInput(f"unknown align.target_norm={config.align.target_norm!r}: "
                            f"choose from {'|'.join(losses.ALIGN_TARGET_NORMS)}")
    if config.teacher.init and not os.path.exists(config.teacher.init):
      raise errors.BadInput(f"teacher.init {config.teacher.init} does not exist")
  if not pretraining:
    if config.init and not os.path.exists(config.init):
      raise errors.BadInput(f"init {config.init} does not exist")
    if config.eval_batch_size % jax.device_count():
      raise errors.BadInput(f"eval_batch_size {config.eval_batch_size} must be a multiple of "
                            f"the {jax.device_count()} devices")
  sharding.mesh_shape(config, jax.device_count())
  workdir_lib.check(workdir)


def _get(config: ml_collections.ConfigDict, dotted: str):
  for name in dotted.split("."):
    config = config[name]
  return config


def train(config: ml_collections.ConfigDict, workdir: str, *,
          allow_config_change: bool = False) -> list[dict]:
  """Trains until the schedule ends or SIGTERM; returns the rows it logged.

  A workdir holding checkpoints of another config is refused unless
  allow_config_change (amd_jax/workdir.py says which keys count).
  """
  validate(config, workdir)
  # The processes of one multi-process run share the workdir; process 0 holds it.
  held = workdir_lib.lock(workdir) if jax.process_index() == 0 else contextlib.nullcontext()
  with held:
    if config.mode == "test":
      return [test(config, workdir)]
    return _train(config, workdir, allow_config_change)


def _train(config: ml_collections.ConfigDict, workdir: str, allow_config_change: bool
           ) -> list[dict]:
  # ----------------------------------------------------------------- set up
  changes = workdir_lib.check_resume(workdir, config, allow_change=allow_config_change)
  if changes:
    log.warning("resuming with a changed config (--allow_config_change): %s",
                ", ".join(f"{k} {old!r} → {new!r}" for k, (old, new) in changes.items()))
  is_main = jax.process_index() == 0
  if is_main:
    # Atomic: the other processes of the run may be reading it in check_resume.
    path = os.path.join(workdir, workdir_lib.CONFIG_FILE)
    with open(path + ".tmp", "w") as f:
      f.write(config.to_json_best_effort(indent=2))
    os.replace(path + ".tmp", path)

  # ----------------------------------------------------------------- mesh
  mesh = sharding.make_mesh(config)
  log.info("mesh %s over %d devices (%s)", dict(mesh.shape), mesh.size,
           jax.devices()[0].platform)

  # ----------------------------------------------------------------- input pipeline
  finetune = config.mode == "finetune"
  records = pipeline.source(config)
  # Undecodable videos are replaced in the pipeline, listed here, counted in metrics.
  bad_files = os.path.join(workdir, "bad_files.txt")
  shard = dict(process_index=jax.process_index(), process_count=jax.process_count())
  if finetune and detection(config):
    counts = None
    sample = ava_pipeline.TrainSample(records, max_boxes=config.data.max_boxes,
                                      size=config.data.size, short_side=config.data.short_side,
                                      bad_files=bad_files)
    dataset = ava_pipeline.ava_train_batches(records, sample, config.batch_size, config.seed,
                                             **shard)
  elif finetune:
    counts = None
    dataset = pipeline.finetune_dataset(config, records=records, bad_files=bad_files, **shard)
  else:
    variant = vit.decode_variant(config.model.variant)
    grid = vit.token_grid(config.data.frames, config.data.size, variant.patch, variant.tubelet)
    counts = masking.tube_counts(grid, config.masking.student_ratio,
                                 config.masking.teacher_ratio if config.mode == "amd" else None)
    log.info("tokens %d, student %d, teacher %d", counts.tokens, counts.student, counts.teacher)
    dataset = pipeline.pretrain_dataset(config, grid, records=records, bad_files=bad_files,
                                        **shard)
  data_iter = pipeline.iterator(dataset, config.data.worker_count)
  videos_per_step = config.batch_size // config.data.num_sample
  train_videos = config.data.train_videos or len(records)
  steps_per_pass = train_videos // videos_per_step
  if steps_per_pass == 0:
    raise errors.BadInput(f"{train_videos} training videos make no batch of "
                          f"{videos_per_step} videos")
  # An epoch: one pass in fine-tuning, one repeated sample per video in pre-training (optim.py).
  steps_per_epoch = steps_per_pass if finetune else steps_per_pass / config.data.num_sample
  schedule = optim.schedule_from_config(config, steps_per_epoch)
  total_steps = schedule.total_steps
  log.info("%d steps of %d clips (%d videos × %d samples)", total_steps, config.batch_size,
           videos_per_step, config.data.num_sample)

  # ----------------------------------------------------------------- model and optimiser
  state, state_sharding, model_def, tx = create_state(config, mesh, schedule)
  num_params = sum(x.size for x in jax.tree.leaves(state["params"]))
  log.info("%s: %.2f M trainable parameters", config.model.variant, num_params / 1e6)

  # ----------------------------------------------------------------- teacher
  teacher_def, teacher_params, teacher_sharding = create_teacher(config, mesh)

  # ----------------------------------------------------------------- compiled steps
  task = make_task(config, model_def, teacher_def, counts)
  batch_sharding = sharding.batch_sharding(mesh)
  train_step = jax.jit(
      functools.partial(steps.train_step, task=task, tx=tx, schedule=schedule,
                        grad_accum=config.grad_accum),
      in_shardings=(state_sharding, batch_sharding, teacher_sharding),
      out_shardings=(state_sharding, sharding.replicated(mesh)),
      donate_argnums=(0,))
  evaluator = None
  if finetune:
    evaluator = (ava_evaluator.Evaluator if detection(config) else classification.Evaluator)(
        config, mesh, model_def, state_sharding)
  eval_every = config.get("eval_every") or steps_per_pass

  # ----------------------------------------------------------------- restore
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"),
                                 save_every=config.ckpt_every, keep=config.keep_ckpts)
  restored = ckpt.restore_newest(abstract_like(state, state_sharding))
  start = None
  if restored is not None:
    start, state, data_state = restored
    data_iter.set_state(data_state)
    log.info("resumed from step %d in %s", start, workdir)
  elif finetune and config.init:
    state = load_init(config, state, state_sharding)
  elif finetune:
    log.warning("init is empty: fine-tuning %s from random weights", config.model.variant)
  start = start or 0
  writer = metrics.Writer(workdir, resume_step=start if start else None)

  # ----------------------------------------------------------------- train loop
  stop = StopRequested()
  rows, pending = [], []          # pending: (step, device metrics) not yet fetched
  progress = tqdm.tqdm(total=total_steps, initial=start, unit="step", dynamic_ncols=True,
                       disable=not (is_main and config.progress))
  window_start, window_steps, skipped = time.perf_counter(), 0, 0
  step, stopping = start, False

  def device_batch():
    """The next batch on the devices, its skipped videos, the iterator state after it."""
    host_batch = next(data_iter)
    bad = int(host_batch.pop("skipped").sum())
    return (jax.make_array_from_process_local_data(batch_sharding, host_batch), bad,
            data_iter.get_state())

  try:
    upcoming = device_batch() if step < total_steps else None
    if upcoming is not None:
      # jit compiles at the first call: minutes for a large model, with no other sign.
      log.info("compiling the train step")
    while step < total_steps:
      batch, bad, data_state = upcoming
      state, step_metrics = train_step(state, batch, teacher_params)
      # Prefetch: the step runs asynchronously, so the next batch is read and
      # sent to the devices while it computes, also when a log step below waits
      # for it. Checkpoints save data_state, the iterator just after this step's
      # batch, so a resume neither repeats nor skips the prefetched one.
      if step + 1 < total_steps:
        upcoming = device_batch()
      skipped += bad
      step += 1
      window_steps += 1
      pending.append((step, step_metrics))
      log_now = step % config.log_every == 0 or step == total_steps
      # Every process must stop at the same step (they meet in collectives), so
      # several processes agree on it at log steps; one process checks every step.
      if jax.process_count() == 1 or log_now:
        stopping = _any_process(stop.requested)
      save_now = ckpt.should_save(step) or step == total_steps or stopping
      if log_now or save_now:
        fetched = jax.device_get(pending)
        pending = []
        _check_finite(fetched, ckpt.latest_step())
      if log_now:
        elapsed = time.perf_counter() - window_start
        row = {"step": step, **{k: float(v) for k, v in fetched[-1][1].items()},
               "clips_per_s": config.batch_size * window_steps / elapsed,
               "skipped": _sum_processes(skipped)}
        writer.write(row)
        rows.append(row)
        progress.update(step - progress.n)
        progress.set_postfix(loss=f"{row['loss']:.4f}", clips_s=f"{row['clips_per_s']:.1f}")
        window_start, window_steps, skipped = time.perf_counter(), 0, 0
      if save_now:
        ckpt.save(step, state, data_state, force=step == total_steps or stopping)
      if evaluator is not None and (step % eval_every == 0 or step == total_steps):
        rows.append(evaluator.log(writer, "val", state, step))
      if stopping:
        break
    # ----------------------------------------------------------------- test
    if evaluator is not None and step == total_steps:
      rows.append(evaluator.log(writer, "test", state, step, workdir=workdir))
  finally:
    try:
      ckpt.wait()
    finally:
      ckpt.close()
      writer.close()
      progress.close()
      stop.restore()
  log.info("%s at step %d; outputs in %s", "stopped" if step < total_steps else "finished",
           step, workdir)
  return rows


def test(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """The multi-view test of the workdir's latest checkpoint (or, with none, of the
  fine-tuned classifier at config.init), without training; returns its row."""
  saved = os.path.isdir(os.path.join(workdir, "checkpoints")) and any(
      d.isdigit() for d in os.listdir(os.path.join(workdir, "checkpoints")))
  if not saved and not config.init:
    raise errors.BadInput(f"mode=test: no checkpoint in {workdir} and no --config.init "
                          "(a fine-tuned checkpoint) to test")
  mesh = sharding.make_mesh(config)
  schedule = optim.Schedule(peak=0.0, final=0.0, warmup_steps=0, total_steps=1)  # unused
  state, state_sharding, model_def, _ = create_state(config, mesh, schedule)
  if saved:
    ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"), save_every=1)
    try:
      step, state, _ = ckpt.restore_newest(abstract_like(state, state_sharding))
    finally:
      ckpt.close()
    log.info("testing step %d of %s", step, workdir)
  else:
    state = dict(state, params=load_classifier(config, state["params"],
                                               state_sharding["params"]))
    step = 0
  writer = metrics.Writer(workdir, resume_step=step)
  try:
    evaluator = (ava_evaluator.Evaluator if detection(config) else classification.Evaluator)(
        config, mesh, model_def, state_sharding)
    return evaluator.log(writer, "test", state, step, workdir=workdir)
  finally:
    writer.close()


def load_classifier(config: ml_collections.ConfigDict, params, shardings):
  """Parameters of a fine-tuned classification checkpoint of any kind, placed like `params`."""
  spec, weights = convert.read(config.init)
  if spec.task != "classifier":
    raise errors.BadInput(f"init {config.init} holds a {spec.task} model: mode=test needs a "
                          "fine-tuned classifier (or a workdir with checkpoints)")
  wanted = spec_lib.flatten(params)
  got = {k: tuple(v.shape) for k, v in weights.items()}
  need = {k: tuple(v.shape) for k, v in wanted.items()}
  if got != need:
    diff = sorted(set(got.items()) ^ set(need.items()))[0][0]
    raise errors.BadInput(f"init {config.init} does not fit the config's classifier "
                          f"({config.model.variant}, {config.data.num_classes} classes): "
                          f"{diff} differs")
  if spec.ln_eps != config.model.ln_eps:
    raise errors.BadInput(f"init {config.init} was trained with LayerNorm eps "
                          f"{spec.ln_eps:g}: add --config.model.ln_eps={spec.ln_eps:g}")
  host = jax.tree.unflatten(jax.tree.structure(params),
                            [weights[k] for k in wanted])
  log.info("testing the classifier at %s", config.init)
  return jax.device_put(host, shardings)


def detection(config: ml_collections.ConfigDict) -> bool:
  """Fine-tuning an AVA action detector (configs/transfer.py:data=ava), not a classifier."""
  return config.get("model", {}).get("head") == "detector"


def build_model(config: ml_collections.ConfigDict, rngs: nnx.Rngs) -> nnx.Module:
  """The trained model: the pre-training student, the classifier or the AVA detector."""
  if config.mode in ("amd", "videomae"):
    return pretrain.build_student(config, rngs)
  m, d = config.model, config.data
  variant = vit.decode_variant(m.variant)
  shared = dict(drop_path=m.drop_path, head_dropout=m.head_dropout, init_scale=m.init_scale,
                ln_eps=m.ln_eps, remat=m.remat, dtype=pretrain.dtype_of(m.dtype), rngs=rngs)
  if detection(config):
    model = roi.Detector(variant, d.num_classes, num_frames=d.frames, pretrain_size=d.size,
                         **shared)
  else:
    model = heads.Classifier(variant, d.num_classes, num_frames=d.frames, image_size=d.size,
                             **shared)
  vit.set_attention(model, m.attention)
  return model


def create_state(config: ml_collections.ConfigDict, mesh, schedule: optim.Schedule):
  """The train state, born sharded: (state, its shardings, the model's graphdef, optimiser)."""
  rules = config.sharding.rules
  abstract_model = nnx.eval_shape(lambda: build_model(config, nnx.Rngs(0)))
  model_def = nnx.graphdef(abstract_model)
  tx = optim.optimizer(config, schedule, nnx.state(abstract_model, nnx.Param))

  def init_state(key):
    model = build_model(config, nnx.Rngs(params=key))
    params = nnx.state(model, nnx.Param)
    return dict(step=jnp.zeros((), jnp.int32),
                rng=jax.random.key_data(jax.random.fold_in(key, 1)),
                params=params, frozen=nnx.state(model, decoders.FrozenToken),
                opt_state=tx.init(params))

  abstract = jax.eval_shape(init_state, jax.random.key(0))
  params = sharding.named(mesh, sharding.param_specs(abstract["params"], rules))
  repl = sharding.replicated(mesh)
  state_sharding = dict(
      step=repl, rng=repl, params=params,
      frozen=sharding.named(mesh, sharding.param_specs(abstract["frozen"], rules)),
      opt_state=optax_state_sharding(tx, abstract["opt_state"], params, repl))
  state = jax.jit(init_state, out_shardings=state_sharding)(jax.random.key(config.seed))
  sharding.assert_sharded(state["params"], mesh)
  return state, state_sharding, model_def, tx


def abstract_like(tree, shardings):
  return jax.tree.map(lambda x, sh: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sh),
                      tree, shardings)


def load_init(config: ml_collections.ConfigDict, state: dict, state_sharding: dict) -> dict:
  """The state with its encoder taken from the pre-training checkpoint config.init.

  Only encoder weights move (bit for bit); the source's decoder and alignment
  heads are left, and its final norm too unless the model has one (the AVA
  detector uses it); fc_norm and head keep their fresh initialisation.
  """
  target = state["params"]["encoder"]
  host, ln_eps = pretrained.load_encoder(config.init, abstract_like(
      target, state_sharding["params"]["encoder"]), what="init")
  if ln_eps != config.model.ln_eps:
    # The epsilon is static (in the graphdef) and must be the same on every resume.
    raise errors.BadInput(f"init {config.init} was trained with LayerNorm eps {ln_eps:g}: "
                          f"add --config.model.ln_eps={ln_eps:g}")
  loaded = spec_lib.flatten(jax.device_put(host, state_sharding["params"]["encoder"]))
  params = jax.tree_util.tree_map_with_path(
      lambda path, x: loaded.get(spec_lib.flat_key(path).removeprefix("encoder/"), x)
      if spec_lib.flat_key(path).startswith("encoder/") else x, state["params"])
  new = sorted(k for k in state["params"] if k != "encoder")
  norm = "with its final norm" if "norm" in target else "without its final norm"
  log.info("init: encoder (%d tensors) loaded from %s %s; decoder and alignment heads left "
           "out; %s newly initialised", len(jax.tree.leaves(host)), config.init, norm,
           ", ".join(new))
  return dict(state, params=params)


def create_teacher(config: ml_collections.ConfigDict, mesh):
  """(graphdef, params, shardings) of the frozen teacher; all None in VideoMAE mode."""
  if config.mode != "amd":
    return None, None, None
  abstract = nnx.eval_shape(lambda: pretrain.build_teacher(config, nnx.Rngs(0)))
  teacher_def, abstract_params = nnx.split(abstract, nnx.Param)
  if config.sharding.replicate_teacher:
    shardings = jax.tree.map(lambda _: sharding.replicated(mesh), abstract_params)
  else:
    shardings = sharding.named(mesh, sharding.param_specs(abstract_params, config.sharding.rules))
    sharding.assert_sharded(abstract_params, mesh, shardings)
  if config.teacher.init:
    host, ln_eps = pretrained.load_encoder(config.teacher.init, abstract_params)
    params = jax.device_put(host, shardings)
    if ln_eps != config.teacher.ln_eps:  # the epsilon is static: it lives in the graphdef
      teacher_def = nnx.graphdef(nnx.eval_shape(
          lambda: pretrain.build_teacher(config, nnx.Rngs(0), ln_eps=ln_eps)))
    log.info("teacher %s loaded from %s (LayerNorm eps %g)", config.teacher.variant,
             config.teacher.init, ln_eps)
  else:
    params = jax.jit(
        lambda k: nnx.state(pretrain.build_teacher(config, nnx.Rngs(params=k)), nnx.Param),
        out_shardings=shardings)(jax.random.key(config.seed + 1))
    log.warning("teacher %s is randomly initialised: teacher.init is empty",
                config.teacher.variant)
  return teacher_def, params, shardings


def make_task(config: ml_collections.ConfigDict, model_def, teacher_def,
              counts: masking.MaskCounts | None) -> steps.PretrainTask | steps.FinetuneTask:
  if config.mode == "finetune" and detection(config):
    return steps.DetectTask(model=model_def)
  if config.mode == "finetune":
    return steps.FinetuneTask(model=model_def, num_classes=config.data.num_classes,
                              mixup=mixup.Mixup(**config.mixup))
  variant = vit.decode_variant(config.model.variant)
  amd = config.mode == "amd"
  return steps.PretrainTask(
      student=model_def, teacher=teacher_def, counts=counts,
      patch=variant.patch, tubelet=variant.tubelet,
      teacher_layers=tuple(config.align.teacher_layers) if amd else (),
      align_loss=config.align.loss if amd else "l2",
      target_norm=config.align.target_norm if amd else "none",
      rec_weight=config.loss.rec, dir_weight=config.loss.get("dir", 0.0),
      gen_weight=config.loss.get("gen", 0.0), stochastic=config.model.drop_path > 0)


def optax_state_sharding(tx, abstract_opt_state, param_sharding, replicated):
  """Optimiser state sharded like the parameters it mirrors, scalars replicated."""
  return optax.tree_map_params(
      tx, lambda _, s: s, abstract_opt_state, param_sharding,
      transform_non_params=lambda _: replicated,
      is_leaf=lambda x: isinstance(x, nnx.Variable))


def _sum_processes(count: int) -> int:
  """`count` summed over processes (a collective: every process calls it at the same step)."""
  if jax.process_count() == 1:
    return count
  return int(multihost_utils.process_allgather(np.int32(count)).sum())


def _any_process(flag: bool) -> bool:
  if jax.process_count() == 1:
    return flag
  return bool(multihost_utils.process_allgather(np.int32(flag)).max())


def _check_finite(fetched, last_good: int | None) -> None:
  for step, m in fetched:
    if not np.isfinite(m["loss"]):
      kept = f"step {last_good}" if last_good is not None else "none saved yet"
      raise FloatingPointError(f"loss is {m['loss']} at step {step}; stopping. The last good "
                               f"checkpoint is kept ({kept})")
