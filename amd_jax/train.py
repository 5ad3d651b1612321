"""Training, one lifecycle read top to bottom, the same for every task (pre-training
with AMD or VideoMAE, classification and AVA detection fine-tuning: amd_jax/tasks.py
says what differs).

validate → set up (mesh, input pipeline, model, optimiser, teacher and the compiled
step: amd_jax/state.py) → restore, or the task's start → the loop (prefetch,
metrics, the processes' stop agreement, checkpoints, validations) → the test.
`train(config, workdir)` is importable (tests, notebooks); amd_jax/main.py is the
command line around it. config.mode: amd | videomae (pre-training), finetune,
test (evaluate only).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import numbers
import os
import signal
import sys
import time

import jax
import ml_collections
import numpy as np
import tqdm
from jax.experimental import multihost_utils

from amd_jax import checkpoint, config_files, errors, metrics, optim, sharding
from amd_jax import state as state_lib
from amd_jax import tasks
from amd_jax import workdir as workdir_lib
from amd_jax.data import pipeline

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
  (data, models, compilation) happens: every check of the command line starts here."""
  workdir_lib.check_local(workdir)    # a gs:// workdir: refused before jax starts a backend
  task = tasks.of(config)             # a mode the config file does not offer: refused here
  for key in ("batch_size", "grad_accum", "log_every", "ckpt_every", "keep_ckpts",
              "data.num_sample"):
    if config_files.value(config, key) <= 0:
      raise errors.BadInput(f"{key}={config_files.value(config, key)} must be positive")
  if config.total_steps < 0:
    raise errors.BadInput(f"total_steps={config.total_steps} must be ≥ 0 (0: from "
                          "optim.epochs)")
  if config.batch_size % config.grad_accum:
    raise errors.BadInput(f"batch_size {config.batch_size} is not divisible by "
                          f"grad_accum {config.grad_accum}")
  # Every process reads whole videos (num_sample clips each) of every global batch,
  # and the batch is split over all devices.
  pipeline.check_batch("batch_size", config.batch_size, num_sample=config.data.num_sample,
                       processes=jax.process_count())
  pipeline.check_batch("batch_size", config.batch_size, devices=jax.device_count())
  task.validate()
  sharding.mesh_shape(config, jax.device_count())
  workdir_lib.check(workdir)


def train(config: ml_collections.ConfigDict, workdir: str, *,
          allow_config_change: bool = False) -> list[dict]:
  """Trains until the schedule ends or SIGTERM; returns the rows it logged.

  A workdir holding checkpoints of another config is refused unless
  allow_config_change (amd_jax/workdir.py says which keys count).
  """
  validate(config, workdir)
  task = tasks.of(config)
  task.prepare()
  # The processes of one multi-process run share the workdir; process 0 holds it.
  held = workdir_lib.lock(workdir) if jax.process_index() == 0 else contextlib.nullcontext()
  with held:
    if task.evaluate_only:
      return [test(config, workdir)]
    return _train(task, workdir, allow_config_change)


@dataclasses.dataclass
class _Run:
  """A training run once set up: what the loop and the end need."""

  task: tasks.Task
  workdir: str
  data_iter: object             # pipeline.iterator: next(), get_state(), set_state()
  total_steps: int
  training: state_lib.Training
  evaluators: dict              # name → evaluator (tasks.py, one per config.evals entry)
  eval_every: dict              # name → steps between its runs; None: after the loop only
  ckpt: checkpoint.Checkpointer

  @property
  def config(self) -> ml_collections.ConfigDict:
    return self.task.config


def _train(task: tasks.Task, workdir: str, allow_config_change: bool) -> list[dict]:
  run = _set_up(task, workdir, allow_config_change)
  try:
    state, start = _restore_or_start(run)
    writer = metrics.Writer(workdir, resume_step=start if start else None)
    try:
      rows, state, step = _loop(run, state, start, writer)
      if step == run.total_steps:
        rows += [_evaluate(run.evaluators, name, state, step, writer, run.workdir)
                 for name, every in run.eval_every.items() if every is None]
    finally:
      writer.close()
  finally:
    try:
      run.ckpt.wait()
    finally:
      run.ckpt.close()
  log.info("%s at step %d; outputs in %s", "stopped" if step < run.total_steps else "finished",
           step, workdir)
  return rows


# ------------------------------------------------------------------------- set up

def _set_up(task: tasks.Task, workdir: str, allow_config_change: bool) -> _Run:
  """The workdir's config, the mesh, the input pipeline, the schedule, the compiled
  step with its fresh state, the evaluators and the checkpointer."""
  config = task.config
  changes = workdir_lib.check_resume(workdir, config, allow_change=allow_config_change)
  if changes:
    log.warning("resuming with a changed config (--allow_config_change): %s",
                ", ".join(f"{k} {old!r} → {new!r}" for k, (old, new) in changes.items()))
  if jax.process_index() == 0:
    workdir_lib.write_config(workdir, config)
  mesh = sharding.make_mesh(config)
  log.info("mesh %s over %d devices (%s)", dict(mesh.shape), mesh.size,
           jax.devices()[0].platform)
  data_iter, steps_per_pass = _input_pipeline(task, workdir)
  schedule = optim.schedule_from_config(config, task.steps_per_epoch(steps_per_pass))
  log.info("%d steps of %d clips (%d videos × %d samples)", schedule.total_steps,
           config.batch_size, config.batch_size // config.data.num_sample,
           config.data.num_sample)
  training = state_lib.build_training(config, mesh, schedule)
  num_params = sum(x.size for x in jax.tree.leaves(training.state["params"]))
  log.info("%s: %.2f M trainable parameters", config.model.variant, num_params / 1e6)
  evaluators = task.evaluators(mesh, training.model_def, training.state_sharding)
  # 0: once per pass over the training videos; -1: after the loop only.
  eval_every = {name: None if every == -1 else every or steps_per_pass
                for name, every in task.eval_every().items()}
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, workdir_lib.CHECKPOINTS_DIR),
                                 save_every=config.ckpt_every, keep=config.keep_ckpts)
  return _Run(task, workdir, data_iter, schedule.total_steps, training, evaluators,
              eval_every, ckpt)


def _input_pipeline(task: tasks.Task, workdir: str) -> tuple[object, int]:
  """(the training batches' iterator, steps per pass over the training videos)."""
  config = task.config
  if task.pretraining:
    counts = task.mask_counts()
    log.info("tokens %d, student %d%s", counts.tokens, counts.student,
             f", teacher {counts.teacher}" if task.distills else "")
  records = pipeline.source(config)
  # Undecodable videos are replaced in the pipeline, listed here, counted in metrics.
  dataset = task.train_dataset(records, bad_files=os.path.join(workdir, workdir_lib.BAD_FILES),
                               process_index=jax.process_index(),
                               process_count=jax.process_count())
  videos_per_step = config.batch_size // config.data.num_sample
  train_videos = config.data.train_videos or len(records)
  steps_per_pass = train_videos // videos_per_step
  if steps_per_pass == 0:
    raise errors.BadInput(f"{train_videos} training videos make no batch of "
                          f"{videos_per_step} videos")
  return pipeline.iterator(dataset, config.data.worker_count), steps_per_pass


def _restore_or_start(run: _Run) -> tuple[dict, int]:
  """(state, step): the newest checkpoint's, with the input pipeline where it was, or
  the task's start (a fine-tuning init) at step 0."""
  t = run.training
  restored = run.ckpt.restore_newest(sharding.abstract_like(t.state, t.state_sharding))
  if restored is None:
    return run.task.init(t.state, t.state_sharding), 0
  start, state, data_state = restored
  run.data_iter.set_state(data_state)
  log.info("resumed from step %d in %s", start, run.workdir)
  return state, start


# ------------------------------------------------------------------------- the loop

def _loop(run: _Run, state: dict, step: int, writer: metrics.Writer
          ) -> tuple[list[dict], dict, int]:
  """Steps from `step` to the end of the schedule, or to an agreed stop: (rows, state,
  last step). Checkpoints save the iterator just after the step's batch, so a
  resume neither repeats nor skips the prefetched one."""
  config, t = run.config, run.training
  stop, window = StopRequested(), _Window(config.batch_size)
  rows, pending = [], []          # pending: (step, device metrics) not yet fetched
  progress = tqdm.tqdm(total=run.total_steps, initial=step, unit="step", dynamic_ncols=True,
                       disable=not (jax.process_index() == 0 and config.progress))
  try:
    upcoming = _device_batch(run) if step < run.total_steps else None
    if upcoming is not None:
      # jit compiles at the first call: minutes for a large model, with no other sign.
      log.info("compiling the train step")
    while step < run.total_steps:
      batch, skipped, data_state = upcoming
      state, step_metrics = t.step(state, batch, t.teacher_params)
      # Prefetch: the step runs asynchronously, so the next batch is read and sent to
      # the devices while it computes, also when a log step below waits for it.
      if step + 1 < run.total_steps:
        upcoming = _device_batch(run)
      step += 1
      window.add(skipped)
      pending.append((step, step_metrics))
      log_now = step % config.log_every == 0 or step == run.total_steps
      stopping = _agree_to_stop(stop, log_now)
      save_now = run.ckpt.should_save(step) or step == run.total_steps or stopping
      if log_now or save_now:
        fetched, pending = jax.device_get(pending), []
        _check_finite(fetched, run.ckpt.latest_step())
      if log_now:
        rows.append(_log(writer, progress, window.row(step, fetched[-1][1])))
      if save_now:
        run.ckpt.save(step, state, data_state, force=step == run.total_steps or stopping)
      rows += [_evaluate(run.evaluators, name, state, step, writer, run.workdir)
               for name, every in run.eval_every.items()
               if every is not None and (step % every == 0 or step == run.total_steps)]
      if stopping:
        break
  finally:
    progress.close()
    stop.restore()
  return rows, state, step


def _device_batch(run: _Run) -> tuple[dict, int, dict]:
  """The next batch on the devices, its skipped videos, the iterator state after it."""
  host_batch = next(run.data_iter)
  skipped = int(host_batch.pop("skipped").sum())
  return (jax.make_array_from_process_local_data(run.training.batch_sharding, host_batch),
          skipped, run.data_iter.get_state())


def _agree_to_stop(stop: StopRequested, log_now: bool) -> bool:
  """Whether a stop was requested, agreed by all processes: every process must stop at
  the same step (they meet in collectives), so several processes agree at log steps
  only; one process checks every step."""
  if jax.process_count() == 1 or log_now:
    return _any_process(stop.requested)
  return False


class _Window:
  """Throughput and skipped videos since the last logged row."""

  def __init__(self, batch_size: int):
    self.batch_size = batch_size
    self._reset()

  def _reset(self):
    self.start, self.steps, self.skipped = time.perf_counter(), 0, 0

  def add(self, skipped: int) -> None:
    self.steps += 1
    self.skipped += skipped

  def row(self, step: int, step_metrics: dict) -> dict:
    """The metrics row of `step` (a collective: the skipped count sums all processes)."""
    row = {"step": step, **{k: float(v) for k, v in step_metrics.items()},
           "clips_per_s": self.batch_size * self.steps / (time.perf_counter() - self.start),
           "skipped": _sum_processes(self.skipped)}
    self._reset()
    return row


def _log(writer: metrics.Writer, progress: tqdm.tqdm, row: dict) -> dict:
  writer.write(row)
  progress.update(row["step"] - progress.n)
  progress.set_postfix(loss=f"{row['loss']:.4f}", clips_s=f"{row['clips_per_s']:.1f}")
  return row


def _evaluate(evaluators: dict, name: str, state: dict, step: int, writer: metrics.Writer,
              workdir: str) -> dict:
  """Runs the evaluation `name` (amd_jax/evaluators): its numbers make the metrics row;
  the one named test also has process 0 write the row and its per-example outputs to
  the workdir's test files. Returns the row."""
  evaluator = evaluators[name]
  start = time.perf_counter()
  row, outputs = {"step": step, "split": name}, {}
  for key, value in evaluator.run(state):
    (row if isinstance(value, numbers.Number) else outputs)[key] = value
  row["eval_s"] = time.perf_counter() - start
  writer.write(row)
  log.info("%s at step %d: %s", name, step, evaluator.describe(row))
  if name == tasks.TEST and jax.process_index() == 0:
    scores = outputs.pop("scores", None)
    workdir_lib.write_test_results(workdir, row, **outputs)
    if scores is not None:
      workdir_lib.write_test_scores(workdir, **scores)
  return row


# ------------------------------------------------------------------------- test only

def test(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """The multi-view test of the workdir's latest checkpoint (or, with none, of the
  fine-tuned model at config.init), without training; returns its row."""
  task = tasks.of(config)
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
    state, step = task.tested(state, state_sharding), 0
  writer = metrics.Writer(workdir, resume_step=step)
  try:
    return _evaluate(task.evaluators(mesh, model_def, state_sharding), tasks.TEST, state, step,
                     writer, workdir)
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
