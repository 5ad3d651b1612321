"""The jitted pre-training step: both modes run, accumulation and sharding change nothing."""

import functools

import jax
import numpy as np
import pytest

from amd_jax import masking, optim, sharding, steps, tasks
from amd_jax import state as state_lib
from amd_jax.data import pipeline
from amd_jax.models import vit
from configs import pretrain, videomae


def tiny(config):
  """runlocal shrunk further: 4 frames of 32×32 (2×4×4 tokens), a 4-block teacher."""
  config.data.frames, config.data.size = 4, 32
  if config.mode == "amd":
    config.teacher.variant = "Mu/8x2"
    config.align.teacher_layers = (2, 4)
  return config


def setup(config, devices, grad_accum=1):
  mesh = sharding.make_mesh(config, devices)
  variant = vit.decode_variant(config.model.variant)
  grid = vit.token_grid(config.data.frames, config.data.size, variant.patch, variant.tubelet)
  task = tasks.of(config)
  # No warm-up: optax counts its own steps from 0, where a warm-up's lr is 0.
  schedule = optim.Schedule(peak=1e-3, final=1e-5, warmup_steps=0, total_steps=10)
  state, state_sharding, student_def, tx = state_lib.create_state(config, mesh, schedule)
  teacher_def, teacher_params, teacher_sharding = task.teacher(mesh)
  step = jax.jit(functools.partial(steps.train_step, task=task.step_task(student_def, teacher_def),
                                   tx=tx, schedule=schedule, grad_accum=grad_accum),
                 in_shardings=(state_sharding, sharding.batch_sharding(mesh), teacher_sharding),
                 out_shardings=(state_sharding, sharding.replicated(mesh)))
  batch = next(iter(pipeline.pretrain_dataset(config, grid, task.mask_ratios())))
  batch = jax.device_put(batch, sharding.batch_sharding(mesh))
  return step, state, batch, teacher_params


def host(tree):
  return jax.tree.map(np.asarray, jax.device_get(tree))


@pytest.mark.parametrize("make", [pretrain.get_config, videomae.get_config])
def test_step_runs_and_changes_parameters(make):
  config = tiny(make("runlocal"))
  step, state, batch, teacher = setup(config, jax.devices()[:1])
  before = host(state["params"])
  new_state, metrics = step(state, batch, teacher)
  metrics = host(metrics)
  assert all(np.isfinite(v) for v in metrics.values())
  expected = {"loss", "loss_rec", "grad_norm", "lr"} | (
      {"loss_dir", "loss_gen"} if config.mode == "amd" else set())
  assert set(metrics) == expected
  assert int(new_state["step"]) == 1
  changed = jax.tree.map(lambda a, b: not np.array_equal(a, b), before,
                         host(new_state["params"]))
  assert all(jax.tree.leaves(changed))


def test_grad_accum_equals_one_large_batch():
  """4 micro-batches of 2 clips make exactly the update of one batch of 8."""
  config = tiny(pretrain.get_config("runlocal"))
  whole, state, batch, teacher = setup(config, jax.devices()[:1])
  accum, _, _, _ = setup(config, jax.devices()[:1], grad_accum=4)
  s1, m1 = whole(state, batch, teacher)
  s4, m4 = accum(state, batch, teacher)
  m1, m4 = host(m1), host(m4)
  for k in m1:
    np.testing.assert_allclose(m4[k], m1[k], rtol=2e-5, err_msg=k)
  # Adam's first update is lr·g/(|g|+1e-8): where |g| is near 1e-8 the float
  # rounding of a different summation order moves it by up to ~1e-3·lr.
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-6),
               host(s4["params"]), host(s1["params"]))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-10),
               host(s4["opt_state"]), host(s1["opt_state"]))


@pytest.mark.slow
def test_sharded_step_equals_single_device():
  """data=4 × fsdp=2 over 8 devices gives the single-device losses and update."""
  assert len(jax.devices()) == 8
  config = tiny(pretrain.get_config("runlocal"))
  single, state1, batch1, teacher1 = setup(config, jax.devices()[:1])
  config.mesh.data, config.mesh.fsdp = 4, 2
  sharded, state8, batch8, teacher8 = setup(config, jax.devices())
  kernel = state8["params"]["encoder"]["blocks"]["layers"][0]["mlp"]["fc1"]["kernel"][...]
  assert kernel.sharding.spec == jax.sharding.PartitionSpec("fsdp", None)
  s1, m1 = single(state1, batch1, teacher1)
  s8, m8 = sharded(state8, batch8, teacher8)
  m1, m8 = host(m1), host(m8)
  for k in m1:
    np.testing.assert_allclose(m8[k], m1[k], rtol=2e-5, err_msg=k)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-6),
               host(s8["params"]), host(s1["params"]))
