"""Training, one lifecycle read top to bottom: pre-training (AMD or VideoMAE) and
classification fine-tuning with its evaluations.

set up → mesh → input pipeline → model, optimiser, teacher (AMD) and the compiled
step (amd_jax/state.py) → restore (or the fine-tuning init) → train loop with
validations → multi-view test (fine-tuning). `train(config, workdir)` is
importable (tests, notebooks); amd_jax/main.py is the command line around it.
config.mode: amd | videomae (pre-training), finetune, test (evaluate only).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import time

import jax
import ml_collections
import numpy as np
import tqdm
from jax.experimental import multihost_utils

from amd_jax import checkpoint, config_files, errors, hub, masking, metrics, optim, pretrained
from amd_jax import sharding
from amd_jax import state as state_lib
from amd_jax import workdir as workdir_lib
from amd_jax.data import ava_pipeline, pipeline, sources
from amd_jax.evaluators import ava as ava_evaluator
from amd_jax.evaluators import classification
from amd_jax.models import build

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
  workdir_lib.check_local(workdir)    # a gs:// workdir: refused before jax starts a backend
  pretraining = "masking" in config
  modes = ("amd", "videomae") if pretraining else ("finetune", "test")
  if config.mode not in modes:
    raise errors.BadInput(f"config.mode={config.mode!r}: this config's modes are "
                          f"{'|'.join(modes)}")
  for key in ("batch_size", "grad_accum", "log_every", "ckpt_every", "keep_ckpts",
              "data.num_sample") + (() if pretraining else ("eval_batch_size",)):
    if config_files.value(config, key) <= 0:
      raise errors.BadInput(f"{key}={config_files.value(config, key)} must be positive")
  for key in ("total_steps",) + (() if pretraining else ("eval_every",)):
    if config_files.value(config, key) < 0:
      raise errors.BadInput(f"{key}={config_files.value(config, key)} must be ≥ 0 (0: from "
                            f"optim.epochs{'' if key == 'total_steps' else ', once per epoch'})")
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
  if pretraining:
    for ratio, value in zip(("student_ratio", "teacher_ratio"), pipeline.mask_ratios(config)):
      if value is not None and not 0 <= value < 1:
        raise errors.BadInput(f"masking.{ratio}={value} must be in [0, 1): the fraction of "
                              "tokens hidden")
  build.validate(config)
  # A path, or a Hugging Face repo id fetched here (before data and compilation).
  if config.mode == "amd" and config.teacher.init:
    hub.local(config.teacher.init, "teacher.init")
  if not pretraining:
    if config.init:
      hub.local(config.init, "init")
    if config.eval_batch_size % jax.device_count():
      raise errors.BadInput(f"eval_batch_size {config.eval_batch_size} must be a multiple of "
                            f"the {jax.device_count()} devices")
  sharding.mesh_shape(config, jax.device_count())
  workdir_lib.check(workdir)


def resolve_classes(config: ml_collections.ConfigDict) -> None:
  """Sets data.num_classes of a classifier from its dataset's label map when the config
  leaves it 0 (video and image folders: read, never typed); a typed number that
  disagrees with the label map, or no classes to read, is one BadInput line."""
  d = config.data
  if "num_classes" not in d or build.detection(config):
    return
  if not d.num_classes:
    sources.open_split(d.name, d.split, d.data_dir)    # prepared, or one line saying how
  b = sources.builder(d.name, d.data_dir)
  names = sources.class_names(b) if b.is_prepared() else None
  if not d.num_classes:
    if not names:
      raise errors.BadInput(f"dataset {d.name} has no classes to fine-tune on: it was built "
                            "from unlabelled videos, which serve pre-training only (build "
                            "class folders or a path,class_name CSV for a classifier)")
    d.num_classes = len(names)
  elif names and len(names) != d.num_classes:
    raise errors.BadInput(f"data.num_classes={d.num_classes}, but dataset {d.name} has "
                          f"{len(names)} classes: leave data.num_classes at 0 to read them")


def train(config: ml_collections.ConfigDict, workdir: str, *,
          allow_config_change: bool = False) -> list[dict]:
  """Trains until the schedule ends or SIGTERM; returns the rows it logged.

  A workdir holding checkpoints of another config is refused unless
  allow_config_change (amd_jax/workdir.py says which keys count).
  """
  validate(config, workdir)
  resolve_classes(config)
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
    workdir_lib.write_config(workdir, config)

  # ----------------------------------------------------------------- mesh
  mesh = sharding.make_mesh(config)
  log.info("mesh %s over %d devices (%s)", dict(mesh.shape), mesh.size,
           jax.devices()[0].platform)

  # ----------------------------------------------------------------- input pipeline
  finetune = config.mode == "finetune"
  records = pipeline.source(config)
  # Undecodable videos are replaced in the pipeline, listed here, counted in metrics.
  bad_files = os.path.join(workdir, workdir_lib.BAD_FILES)
  shard = dict(process_index=jax.process_index(), process_count=jax.process_count())
  if finetune and build.detection(config):
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
    grid = build.token_grid(config)
    counts = masking.tube_counts(grid, *pipeline.mask_ratios(config))
    log.info("tokens %d, student %d%s", counts.tokens, counts.student,
             f", teacher {counts.teacher}" if config.mode == "amd" else "")
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

  # ----------------------------------------------------------------- model, teacher, step
  training = state_lib.build_training(config, mesh, schedule, counts)
  state, state_sharding = training.state, training.state_sharding
  num_params = sum(x.size for x in jax.tree.leaves(state["params"]))
  log.info("%s: %.2f M trainable parameters", config.model.variant, num_params / 1e6)
  evaluator = None
  if finetune:
    evaluator = (ava_evaluator.Evaluator if build.detection(config)
                 else classification.Evaluator)(config, mesh, training.model_def, state_sharding)
  eval_every = config.get("eval_every") or steps_per_pass

  # ----------------------------------------------------------------- restore
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, workdir_lib.CHECKPOINTS_DIR),
                                 save_every=config.ckpt_every, keep=config.keep_ckpts)
  restored = ckpt.restore_newest(sharding.abstract_like(state, state_sharding))
  start = None
  if restored is not None:
    start, state, data_state = restored
    data_iter.set_state(data_state)
    log.info("resumed from step %d in %s", start, workdir)
  elif finetune and config.init:
    state = pretrained.load_init(config, state, state_sharding)
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
    return (jax.make_array_from_process_local_data(training.batch_sharding, host_batch), bad,
            data_iter.get_state())

  try:
    upcoming = device_batch() if step < total_steps else None
    if upcoming is not None:
      # jit compiles at the first call: minutes for a large model, with no other sign.
      log.info("compiling the train step")
    while step < total_steps:
      batch, bad, data_state = upcoming
      state, step_metrics = training.step(state, batch, training.teacher_params)
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
  saved = workdir_lib.has_checkpoints(workdir)
  if not saved and not config.init:
    raise errors.BadInput(f"mode=test: no checkpoint in {workdir} and no --config.init "
                          "(a fine-tuned checkpoint) to test")
  mesh = sharding.make_mesh(config)
  schedule = optim.Schedule(peak=0.0, final=0.0, warmup_steps=0, total_steps=1)  # unused
  state, state_sharding, model_def, _ = state_lib.create_state(config, mesh, schedule)
  if saved:
    ckpt = checkpoint.Checkpointer(os.path.join(workdir, workdir_lib.CHECKPOINTS_DIR),
                                   save_every=1)
    try:
      step, state, _ = ckpt.restore_newest(sharding.abstract_like(state, state_sharding))
    finally:
      ckpt.close()
    log.info("testing step %d of %s", step, workdir)
  else:
    state = dict(state, params=pretrained.load_classifier(config, state["params"],
                                                          state_sharding["params"]))
    step = 0
  writer = metrics.Writer(workdir, resume_step=step)
  try:
    evaluator = (ava_evaluator.Evaluator if build.detection(config)
                 else classification.Evaluator)(config, mesh, model_def, state_sharding)
    return evaluator.log(writer, "test", state, step, workdir=workdir)
  finally:
    writer.close()


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
