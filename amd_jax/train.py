"""Pre-training (AMD or VideoMAE), one lifecycle read top to bottom.

set up → mesh → input pipeline → model and optimiser (born sharded) → teacher
→ compiled step → restore → train loop. `train(config, workdir)` is importable
(tests, notebooks); amd_jax/main.py is the command line around it.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import tqdm
from flax import nnx
from jax.experimental import multihost_utils

from amd_jax import checkpoint, errors, masking, metrics, optim, pretrained, sharding, steps
from amd_jax.data import pipeline
from amd_jax.models import decoders, pretrain, vit

log = logging.getLogger("amd_jax")


class StopRequested:
  """SIGTERM (preemption, scancel) → save at the next step boundary and exit 0."""

  def __init__(self):
    self.requested = False
    self._previous = signal.signal(signal.SIGTERM, self._handle)

  def _handle(self, signum, frame):
    log.warning("SIGTERM: saving a checkpoint and stopping after this step")
    self.requested = True

  def restore(self):
    signal.signal(signal.SIGTERM, self._previous)


def validate(config: ml_collections.ConfigDict) -> None:
  """Refuses inconsistent configs before anything heavy happens."""
  if config.mode not in ("amd", "videomae"):
    raise errors.BadInput(f"config.mode={config.mode!r}: choose amd|videomae")
  if config.batch_size % config.grad_accum:
    raise errors.BadInput(f"batch_size {config.batch_size} is not divisible by "
                     f"grad_accum {config.grad_accum}")
  if config.mode == "amd":
    if len(config.align.student_layers) != len(config.align.teacher_layers):
      raise errors.BadInput("align.student_layers and align.teacher_layers must pair up: "
                       f"{config.align.student_layers} vs {config.align.teacher_layers}")
    if not config.align.student_layers:
      raise errors.BadInput("align.student_layers is empty: AMD aligns at least one layer pair")
    if config.teacher.init and not os.path.exists(config.teacher.init):
      raise errors.BadInput(f"teacher.init {config.teacher.init} does not exist")


def train(config: ml_collections.ConfigDict, workdir: str) -> list[dict]:
  """Trains until the schedule ends or SIGTERM; returns the rows it logged."""
  # ----------------------------------------------------------------- set up
  validate(config)
  os.makedirs(workdir, exist_ok=True)
  is_main = jax.process_index() == 0
  if is_main:
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json_best_effort(indent=2))

  # ----------------------------------------------------------------- mesh
  mesh = sharding.make_mesh(config)
  log.info("mesh %s over %d devices (%s)", dict(mesh.shape), mesh.size,
           jax.devices()[0].platform)

  # ----------------------------------------------------------------- input pipeline
  variant = vit.decode_variant(config.model.variant)
  grid = vit.token_grid(config.data.frames, config.data.size, variant.patch, variant.tubelet)
  amd = config.mode == "amd"
  counts = masking.tube_counts(grid, config.masking.student_ratio,
                               config.masking.teacher_ratio if amd else None)
  records = pipeline.source(config)
  # Undecodable videos are replaced in the pipeline, listed here, counted in metrics.
  dataset = pipeline.pretrain_dataset(config, grid, records=records,
                                      process_index=jax.process_index(),
                                      process_count=jax.process_count(),
                                      bad_files=os.path.join(workdir, "bad_files.txt"))
  data_iter = pipeline.iterator(dataset, config.data.worker_count)
  videos_per_step = config.batch_size // config.data.num_sample
  train_videos = config.data.train_videos or len(records)
  steps_per_pass = train_videos // videos_per_step
  if steps_per_pass == 0:
    raise errors.BadInput(f"{train_videos} training videos make no batch of "
                          f"{videos_per_step} videos")
  schedule = optim.schedule_from_config(config, steps_per_pass / config.data.num_sample)
  total_steps = schedule.total_steps
  log.info("%d steps of %d clips (%d videos × %d samples); tokens %d, student %d, "
           "teacher %d", total_steps, config.batch_size, videos_per_step,
           config.data.num_sample, counts.tokens, counts.student, counts.teacher)

  # ----------------------------------------------------------------- model and optimiser
  tx = optim.optimizer(config, schedule)
  state, state_sharding, student_def = create_state(config, mesh, tx)
  num_params = sum(x.size for x in jax.tree.leaves(state["params"]))
  log.info("student: %s, %.2f M trainable parameters", config.model.variant, num_params / 1e6)

  # ----------------------------------------------------------------- teacher
  teacher_def, teacher_params, teacher_sharding = create_teacher(config, mesh)

  # ----------------------------------------------------------------- compiled step
  task = make_task(config, student_def, teacher_def, counts)
  batch_sharding = sharding.batch_sharding(mesh)
  train_step = jax.jit(
      functools.partial(steps.train_step, task=task, tx=tx, schedule=schedule,
                        grad_accum=config.grad_accum),
      in_shardings=(state_sharding, batch_sharding, teacher_sharding),
      out_shardings=(state_sharding, sharding.replicated(mesh)),
      donate_argnums=(0,))

  # ----------------------------------------------------------------- restore
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"),
                                 save_every=config.ckpt_every, keep=config.keep_ckpts)
  start = ckpt.latest_step()
  if start is not None:
    target = jax.tree.map(lambda x, sh: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sh),
                          state, state_sharding)
    state, data_state = ckpt.restore(start, target)
    data_iter.set_state(data_state)
    log.info("resumed from step %d in %s", start, workdir)
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
      if stopping:
        break
  finally:
    ckpt.wait()
    ckpt.close()
    writer.close()
    progress.close()
    stop.restore()
  log.info("%s at step %d; outputs in %s", "stopped" if step < total_steps else "finished",
           step, workdir)
  return rows


def create_state(config: ml_collections.ConfigDict, mesh, tx):
  """The student's train state, born sharded: (state, its shardings, the student graphdef)."""
  rules = config.sharding.rules

  def init_state(key):
    model = pretrain.build_student(config, nnx.Rngs(params=key))
    params = nnx.state(model, nnx.Param)
    return dict(step=jnp.zeros((), jnp.int32),
                rng=jax.random.key_data(jax.random.fold_in(key, 1)),
                params=params, frozen=nnx.state(model, decoders.FrozenToken),
                opt_state=tx.init(params))

  student_def = nnx.graphdef(nnx.eval_shape(
      lambda: pretrain.build_student(config, nnx.Rngs(0))))
  abstract = jax.eval_shape(init_state, jax.random.key(0))
  params = sharding.named(mesh, sharding.param_specs(abstract["params"], rules))
  repl = sharding.replicated(mesh)
  state_sharding = dict(
      step=repl, rng=repl, params=params,
      frozen=sharding.named(mesh, sharding.param_specs(abstract["frozen"], rules)),
      opt_state=optax_state_sharding(tx, abstract["opt_state"], params, repl))
  state = jax.jit(init_state, out_shardings=state_sharding)(jax.random.key(config.seed))
  sharding.assert_sharded(state["params"], mesh)
  return state, state_sharding, student_def


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


def make_task(config: ml_collections.ConfigDict, student_def, teacher_def,
              counts: masking.MaskCounts) -> steps.PretrainTask:
  variant = vit.decode_variant(config.model.variant)
  amd = config.mode == "amd"
  return steps.PretrainTask(
      student=student_def, teacher=teacher_def, counts=counts,
      patch=variant.patch, tubelet=variant.tubelet,
      teacher_layers=tuple(config.align.teacher_layers) if amd else (),
      align_loss=config.align.loss if amd else "l2",
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
