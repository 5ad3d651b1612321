"""One config's update compiled for a target, and what the compiled program says.

The update is train.py's: `state.build_training` with `abstract=True` gives the
same jitted `steps.train_step`, the same shardings and the same mesh, with the
state and the frozen teacher as sharded `ShapeDtypeStruct`s; only the batch is
made here (its shapes, as the input pipeline makes them). Nothing is allocated
and nothing runs: XLA compiles the program for the target's devices and reports
its memory, FLOPs, bytes and collectives per device.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import time

import jax
import jax.numpy as jnp
import ml_collections
from jax._src.lib import xla_client   # the cost model of a compiled GPU module
import numpy as np

from amd_jax import errors, optim, sharding, tasks
from amd_jax import state as state_lib
from amd_jax.bench import step as bench_step
from amd_jax.models import vit
from amd_jax.plan import targets

GIB = targets.GIB
COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")
_DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "bf16": 2, "f16": 2,
                "s32": 4, "u32": 4, "f32": 4, "s64": 8, "u64": 8, "f64": 8,
                "f8e4m3fn": 1, "f8e5m2": 1}
_ARRAY = re.compile(r"\b(" + "|".join(_DTYPE_BYTES) + r")\[([0-9,]*)\]")
# `%name = SHAPE op-name(` in optimised HLO; async collectives appear as op-start / op-done.
_OP = re.compile(r"=\s*(.*?)\s(" + "|".join(COLLECTIVES) + r")(-start)?\(")
# libtpu's two ways of refusing a program too large for the chip: "... the total memory
# required for HLO temporaries (20.48G) exceeds available HBM (15.75G)" and "Ran out
# of memory in memory space hbm. Used 15.76G of 15.75G hbm."
_TEMP_TOO_LARGE = re.compile(r"memory required for HLO temporaries \(([\d.]+)G\) exceeds "
                             r"available HBM \([\d.]+G\)")
_HBM_EXCEEDED = re.compile(r"Used ([\d.]+)G of [\d.]+G hbm")
_FUSED_SCATTER = re.compile(r"=\s*(.*?)\sfusion\(.*calls=%all-reduce-scatter\b")


def for_target(config: ml_collections.ConfigDict, target: targets.Target) -> list[str]:
  """Resolves what the config leaves to the device ("auto" attention) for the target,
  and says what differs from a run there; returns the notes for the report."""
  notes = []
  models = [config[name] for name in tasks.of(config).model_configs]
  for model in models:
    if model.attention == "auto":
      model.attention = vit.auto_attention(jnp.dtype(model.dtype), target.platform)
  if target.platform != "cpu" and config.model.dtype == "float32":
    notes.append(f"float32 compute on {target.platform} (config backend={config.backend}): "
                 f"add backend={target.platform} to the config argument for bfloat16")
  if target.platform == "tpu" and any(m.attention == "cudnn" for m in models):
    raise errors.BadInput(f"attention 'cudnn' runs on NVIDIA GPUs only: use backend=tpu "
                          f"for {target.text}")
  return notes


def _per_device_bytes(tree) -> int:
  """Bytes one device holds of a tree of sharded ShapeDtypeStructs."""
  total = 0
  for x in jax.tree.leaves(tree):
    shard = x.sharding.shard_shape(x.shape)
    total += math.prod(shard) * jnp.dtype(x.dtype).itemsize
  return total


def _array_bytes(shape_text: str) -> list[int]:
  return [_DTYPE_BYTES[t] * math.prod(int(n) for n in dims.split(",") if n)
          for t, dims in _ARRAY.findall(shape_text)]


def collectives(hlo_text: str) -> dict:
  """Collective ops of an optimised HLO module by kind: {kind: {count, bytes}}.

  bytes: each op's result on one device (an all-gather's gathered array, a
  reduce-scatter's shard; an async start's tuple holds operand and result, and
  only its second half counts). The TPU compiler writes a reduce-scatter as a
  fusion named all-reduce-scatter (an all-reduce and slices inside): the fusion
  counts, with its results, and not the all-reduce within. An op inside a loop
  body (grad_accum's scan) counts once although it runs once per micro-batch.
  """
  out = {k: {"count": 0, "bytes": 0} for k in COLLECTIVES}
  inside_fused_scatter = False
  for line in hlo_text.splitlines():
    if line.startswith(("%", "ENTRY")):      # a computation's header
      inside_fused_scatter = line.removeprefix("ENTRY ").startswith("%all-reduce-scatter")
    elif (m := _FUSED_SCATTER.search(line)):
      out["reduce-scatter"]["count"] += 1
      out["reduce-scatter"]["bytes"] += sum(_array_bytes(m.group(1)))
    elif not inside_fused_scatter and (m := _OP.search(line)):
      shape, kind, start = m.groups()
      sizes = _array_bytes(shape)
      if start and len(sizes) > 1:
        sizes = sizes[len(sizes) // 2:]
      out[kind]["count"] += 1
      out[kind]["bytes"] += sum(sizes)
  return {k: v for k, v in out.items() if v["count"]}


def _lowered_flops(config: ml_collections.ConfigDict, num_devices: int) -> float:
  """FLOPs per device of the update lowered (not compiled) on one CPU device, with
  XLA's attention in place of cuDNN's (the same matmuls): for a program that the
  target's compiler counts no FLOPs of (GPU) or refused (out of TPU memory)."""
  cpu = config.copy_and_resolve_references()
  with cpu.unlocked():
    cpu.mesh.data, cpu.mesh.fsdp = 1, 1
    for model in [cpu[name] for name in tasks.of(cpu).model_configs]:
      model.attention = "xla" if model.attention == "cudnn" else model.attention
  lowered, _ = _lower(cpu, jax.devices("cpu")[:1])
  cost = lowered.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return cost["flops"] / num_devices


def _cost(compiled, config: ml_collections.ConfigDict, num_devices: int) -> tuple[dict, str]:
  """XLA's per-device counts ('flops', 'bytes accessed', ...) and where they come from.

  The compiled program's count is per device where the backend gives one (TPU,
  CPU). The deviceless GPU compiler gives none, not even for the lowered module:
  the FLOPs are then `_lowered_flops`, and the bytes those of the optimised GPU
  program itself, counted by XLA's cost model through the CPU client (its fusions
  are the GPU's; its cuBLAS and cuDNN calls count their operands and results).
  """
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  if cost and cost.get("flops"):
    return dict(cost), "compiled"
  module = compiled.runtime_executable().hlo_modules()[0]
  fused = xla_client._xla.hlo_module_cost_analysis(jax.devices("cpu")[0].client, module)
  return ({"flops": _lowered_flops(config, num_devices),
           "bytes accessed": fused["bytes accessed"]},
          "FLOPs lowered on the CPU ÷ devices, bytes of the compiled GPU program")


def _lower(config: ml_collections.ConfigDict, devices: list):
  """train.py's update lowered for `devices`; with its abstract arguments (state,
  batch, teacher), the mesh's shape and the mask counts."""
  mesh = sharding.make_mesh(config, devices)
  _, counts = bench_step.mask_counts(config)
  schedule = optim.Schedule(peak=1e-3, final=1e-5, warmup_steps=0, total_steps=1000)
  training = state_lib.build_training(config, mesh, schedule, abstract=True)
  batch = {k: jax.ShapeDtypeStruct(shape, dtype, sharding=training.batch_sharding)
           for k, (shape, dtype) in tasks.of(config).batch_spec().items()}
  args = (training.state, batch, training.teacher_params)
  return training.step.lower(*args), (args, dict(mesh.shape), counts)


@dataclasses.dataclass
class Plan:
  """What one compile says; `report()` is plan.json's content."""

  target: targets.Target
  devices: int
  mesh: dict
  batch: int
  memory: dict            # bytes per device
  capacity: float         # bytes per device
  flops: float            # XLA's count, per device
  formula_flops: float    # the bench formula, per device
  hbm_bytes: float | None  # None: the program did not compile
  cost_source: str
  collectives: dict | None
  compile_s: float
  xla_optimal_s: float | None
  attention: str
  dtype: str
  notes: list
  compiled: bool = True   # False: the TPU compiler refused it (out of memory)

  @property
  def fits(self) -> bool:
    return self.compiled and self.memory["total"] <= self.capacity

  def estimate(self) -> dict:
    """Roofline step time: max(FLOPs / peak, HBM bytes / bandwidth), per device."""
    chip = self.target.spec
    if chip is None:
      return {"step_s": None, "bound": None, "clips_per_s": None, "mfu": None}
    # A device is a TensorCore where libtpu counts them apart (v4): half a chip.
    share = chip_share(self.target, self.devices)
    compute_s = self.flops / (chip.peak_tflops * 1e12 * share)
    memory_s = (self.hbm_bytes or 0) / (chip.hbm_gb_s * 1e9 * share)
    step_s = max(compute_s, memory_s)
    bound = ("compute (no byte count)" if self.hbm_bytes is None
             else "compute" if compute_s >= memory_s else "memory")
    return {"step_s": step_s, "bound": bound,
            "clips_per_s": self.batch / step_s,
            "mfu": self.formula_flops / (chip.peak_tflops * 1e12 * share) / step_s}

  def report(self) -> dict:
    est = self.estimate()
    chip = self.target.spec
    return {
        "target": self.target.text, "devices": self.devices, "mesh": self.mesh,
        "batch": self.batch, "batch_per_device": self.batch / self.devices,
        "dtype": self.dtype, "attention": self.attention, "fits": self.fits,
        "compiled": self.compiled,
        "memory_gib": {**{k: v / GIB for k, v in self.memory.items()},
                       "capacity": self.capacity / GIB,
                       "headroom": (self.capacity - self.memory["total"]) / GIB},
        "flops_per_device": self.flops, "formula_flops_per_device": self.formula_flops,
        "hbm_bytes_per_device": self.hbm_bytes, "cost_source": self.cost_source,
        "collectives": self.collectives,
        "step_s_estimate": est["step_s"], "bound": est["bound"],
        "clips_per_s_estimate": est["clips_per_s"], "mfu_estimate": est["mfu"],
        "xla_optimal_s": self.xla_optimal_s,
        "peak": None if chip is None else {"tflops": chip.peak_tflops,
                                           "hbm_gb_s": chip.hbm_gb_s, "source": chip.source},
        "compile_s": self.compile_s, "notes": self.notes,
    }


def chip_share(target: targets.Target, devices: int) -> float:
  """The part of a chip one device is: 1, or ½ where libtpu gives one device per
  TensorCore (v4's compile-only topology)."""
  return target.chips / devices if target.platform == "tpu" else 1.0


def capacity_bytes(target: targets.Target, devices: int) -> float:
  """Memory per device: the chip's share (chip_share), or on cpu this machine's RAM
  over the devices."""
  if target.spec is None:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / devices
  return target.spec.memory_gib * GIB * chip_share(target, devices)


def compile_plan(config: ml_collections.ConfigDict, target: targets.Target, devices: list,
                 notes: list[str], capacity: float | None = None) -> Plan:
  """Compiles config's update for `devices` (compile-only) and reads the program.

  The TPU compiler refuses a program that does not fit the chip's memory: the
  plan then says so, with the temporaries it asked for and the FLOPs of the
  lowered update, and nothing the compiled program would have told.
  """
  start = time.perf_counter()
  lowered, ((state, batch, teacher), mesh_shape, counts) = _lower(config, devices)
  memory = {
      "params": _per_device_bytes(state["params"]) + _per_device_bytes(state["frozen"]),
      "opt_state": _per_device_bytes(state["opt_state"]),
      "teacher": _per_device_bytes(teacher or {}),
      "batch": _per_device_bytes(batch),
  }
  notes = list(notes)
  try:
    compiled = lowered.compile()
  except jax.errors.JaxRuntimeError as e:
    temp, used = _TEMP_TOO_LARGE.search(str(e)), _HBM_EXCEEDED.search(str(e))
    if not (temp or used):
      raise
    compile_s = time.perf_counter() - start
    arguments = sum(memory.values())
    memory["temp"] = (float(temp.group(1)) * GIB if temp
                      else float(used.group(1)) * GIB - arguments)
    memory["total"] = arguments + memory["temp"]
    notes.append(f"the {target.platform.upper()} compiler refused the program: "
                 f"{(temp or used).group(0)}")
    cost = {"flops": _lowered_flops(config, len(devices)), "bytes accessed": None}
    source, hlo, optimal = "lowered on the CPU ÷ devices (the program did not compile)", None, None
  else:
    compile_s = time.perf_counter() - start
    stats = compiled.memory_analysis()
    memory["temp"] = stats.temp_size_in_bytes
    # The live peak: arguments, the outputs not written over donated arguments,
    # temporaries and the program itself.
    memory["total"] = (stats.argument_size_in_bytes + stats.output_size_in_bytes
                       - stats.alias_size_in_bytes + stats.temp_size_in_bytes
                       + stats.generated_code_size_in_bytes)
    cost, source = _cost(compiled, config, len(devices))
    hlo = compiled.as_text()
    # The compiler's own estimate: negative (meaningless) on some TPUs (v4, v5e).
    optimal = cost.get("optimal_seconds")
  formula = sum(bench_step.flops_per_clip(config, counts).values())
  return Plan(
      target=target, devices=len(devices), mesh=mesh_shape, batch=config.batch_size,
      memory=memory,
      capacity=capacity if capacity is not None else capacity_bytes(target, len(devices)),
      flops=cost["flops"],
      formula_flops=formula * config.batch_size / len(devices),
      hbm_bytes=cost["bytes accessed"], cost_source=source,
      collectives=None if hlo is None else collectives(hlo), compile_s=compile_s,
      xla_optimal_s=optimal if optimal and optimal > 0 else None,
      attention=config.model.attention, dtype=config.model.dtype, notes=notes,
      compiled=hlo is not None)


def granule(config: ml_collections.ConfigDict, num_devices: int) -> int:
  """The smallest global batch step: whole videos on every device, whole micro-batches."""
  return math.lcm(num_devices * config.grad_accum, config.data.get("num_sample", 1))


def max_batch(config: ml_collections.ConfigDict, target: targets.Target, devices: list,
              capacity: float | None, log) -> tuple[int | None, Plan | None]:
  """The largest global batch (a multiple of `granule`) whose update fits, by doubling
  then bisection; each probe is a compile. (None, None) when even one granule fails."""
  g = granule(config, len(devices))
  cache = {}

  def fits(units: int) -> bool:
    if units not in cache:
      probe = config.copy_and_resolve_references()
      with probe.unlocked():
        probe.batch_size = units * g
      plan = compile_plan(probe, target, devices, [], capacity)
      log(f"  batch {units * g:6d}: {plan.memory['total'] / GIB:8.2f} GiB "
          f"{'fits' if plan.fits else 'does not fit'} ({plan.compile_s:.0f} s)")
      cache[units] = plan
    return cache[units].fits

  lo, hi = 0, max(1, config.batch_size // g)
  while fits(hi):
    lo, hi = hi, hi * 2
  while hi - lo > 1:
    mid = (lo + hi) // 2
    if fits(mid):
      lo = mid
    else:
      hi = mid
  if lo == 0:
    return None, None
  return lo * g, cache[lo]
