"""GPU-only checks (marker `gpu`): skipped without an NVIDIA GPU; launch/gpu_check.sh runs them.

JAX must see the GPU and the CPU (JAX_PLATFORMS=cuda,cpu; conftest.py defaults to cpu).
"""

import contextlib
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from amd_jax.bench import step as bench_step
from amd_jax.models import vit
from configs import pretrain as pretrain_config

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(jax.default_backend() != "gpu", reason="needs a GPU")]

CUDNN_CALL = "__cudnn$fmha"   # the custom calls of cuDNN's fused attention, forward and backward


# (batch, tokens, heads, head dim): AMD ViT-B/L's decoder, teacher and generators,
# student encoder, and the runlocal sizes (head dim 32).
@pytest.mark.parametrize("shape", [(8, 1568, 6, 64), (8, 392, 16, 64), (8, 160, 12, 64),
                                   (4, 256, 2, 32)])
def test_cudnn_attention_equals_xla(shape):
  """bfloat16 inputs: outputs and q/k/v gradients to 2% of their scale (bfloat16 keeps 8
  bits; both accumulate in float32), and the cuDNN kernel really runs."""
  keys = jax.random.split(jax.random.key(0), 4)
  q, k, v, g = (jax.random.normal(key, shape, jnp.float32) for key in keys)

  def values_and_grads(implementation):
    def out(q, k, v):
      return vit.attention(*(x.astype(jnp.bfloat16) for x in (q, k, v)), implementation)

    def loss(q, k, v):
      return jnp.sum(out(q, k, v).astype(jnp.float32) * g)

    f = jax.jit(lambda q, k, v: (out(q, k, v), jax.grad(loss, argnums=(0, 1, 2))(q, k, v)))
    return f(q, k, v), f.lower(q, k, v).as_text()

  (out, grads), text = values_and_grads("cudnn")
  (ref, ref_grads), ref_text = values_and_grads("xla")
  assert CUDNN_CALL in text and CUDNN_CALL not in ref_text
  assert vit.auto_attention(jnp.bfloat16) == "cudnn" and vit.auto_attention(jnp.float32) == "xla"
  assert out.dtype == jnp.bfloat16
  ref = np.float32(ref)
  np.testing.assert_allclose(np.float32(out), ref, atol=0.02 * np.abs(ref).max())
  for a, b in zip(grads, ref_grads):
    np.testing.assert_allclose(a, b, atol=0.02 * np.abs(b).max())


def _losses(config, devices, steps=3):
  runner = bench_step.JaxRunner(config, devices)
  out = []
  for _ in range(steps):
    runner.step()
    out.append(runner.summary()["loss"])
  return np.array(out)


@functools.cache
def _cpu_losses():
  config = pretrain_config.get_config("runlocal")
  config.model.attention = config.teacher.attention = "blocked"   # the CPU path
  return _losses(config, jax.devices("cpu")[:1])


@pytest.mark.parametrize("backend, rtol", [("cpu", 1e-4), ("gpu", 1e-2)])
def test_runlocal_step_on_gpu_matches_cpu(backend, rtol):
  """The runlocal AMD update, three steps from the same initial state and batch, on the GPU
  against float32 on the CPU: with the cpu overlay (float32, XLA attention, float32
  matmuls instead of TF32) to 1e-4; with the gpu overlay (bfloat16 compute, cuDNN
  attention) to 1% (the same overlay with XLA attention on the CPU came within 6e-4)."""
  config = pretrain_config.get_config(f"runlocal,backend={backend}")
  precision = (jax.default_matmul_precision("highest") if backend == "cpu"
               else contextlib.nullcontext())
  with precision:                   # active while JaxRunner compiles
    losses = _losses(config, jax.devices()[:1])
  np.testing.assert_allclose(losses, _cpu_losses(), rtol=rtol)
