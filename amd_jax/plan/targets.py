"""The accelerators a plan can target: their published figures and compile-only devices.

A target is `PLATFORM:CHIP:SHAPE`:
  tpu:v5e:2x4     a TPU topology as libtpu names it (chips per dimension)
  gpu:h100:8      8 GPUs on one host; gpu:h100:8x4 is 8 hosts × 4 GPUs
  cpu:8           8 host-platform devices on this machine
TPU devices come from libtpu's topology description (the `tpu` extra), NVIDIA ones
from the CUDA plugin's deviceless compiler (the `plan` extra): neither needs the
hardware. The figures below are the vendors' published numbers, one source each.
"""

from __future__ import annotations

import dataclasses
import os
import re

from amd_jax import errors

GIB = 2 ** 30


@dataclasses.dataclass(frozen=True)
class Chip:
  """One accelerator chip's published figures."""

  peak_tflops: float        # dense bfloat16 matmul TFLOP/s per chip
  hbm_gb_s: float           # memory bandwidth, GB/s per chip
  memory_gib: float         # memory per chip
  source: str
  # NVIDIA only: XLA's GpuTargetConfigProto fields (the deviceless compiler's
  # model of the GPU: SM count, shared memory, clocks, compute capability).
  gpu_info: tuple[tuple[str, object], ...] = ()
  description: str = ""


_H100_LIKE = (("threads_per_block_limit", 1024), ("threads_per_warp", 32),
              ("shared_memory_per_block", 49152), ("shared_memory_per_core", 233472),
              ("threads_per_core_limit", 2048), ("core_count", 132), ("fpus_per_core", 128),
              ("block_dim_limit_x", 2147483647), ("block_dim_limit_y", 65535),
              ("block_dim_limit_z", 65535), ("l2_cache_size", 52428800),
              ("clock_rate_ghz", 1.98), ("shared_memory_per_block_optin", 232448),
              ("registers_per_core_limit", 65536), ("registers_per_block_limit", 65536),
              ("compute_capability", 9))

CHIPS = {
    # Google Cloud TPU system architecture pages (v4, v5e, v5p): per-chip figures.
    ("tpu", "v4"): Chip(275, 1200, 32, "Google Cloud TPU v4 documentation"),
    ("tpu", "v5e"): Chip(197, 819, 16, "Google Cloud TPU v5e documentation"),
    ("tpu", "v5p"): Chip(459, 2765, 95, "Google Cloud TPU v5p documentation"),
    # NVIDIA data sheets (SXM, dense bfloat16 without sparsity); the compiler's
    # fields are those XLA publishes for the device (xla/backends/gpu/target_config).
    ("gpu", "h100"): Chip(989, 3352, 84942979072 / GIB, "NVIDIA H100 SXM data sheet",
                          _H100_LIKE + (("memory_bandwidth", 3352320000000),
                                        ("device_memory_size", 84942979072)),
                          "NVIDIA H100 80GB HBM3"),
    ("gpu", "h200"): Chip(989, 4800, 151397597184 / GIB, "NVIDIA H200 SXM data sheet",
                          _H100_LIKE + (("memory_bandwidth", 4800000000000),
                                        ("device_memory_size", 151397597184)),
                          "NVIDIA H200 141GB HBM3e"),
    ("gpu", "a100-80"): Chip(312, 2039, 85100068864 / GIB, "NVIDIA A100 SXM 80GB data sheet",
                             (("threads_per_block_limit", 1024), ("threads_per_warp", 32),
                              ("shared_memory_per_block", 49152),
                              ("shared_memory_per_core", 167936),
                              ("threads_per_core_limit", 2048), ("core_count", 108),
                              ("fpus_per_core", 64), ("block_dim_limit_x", 2147483647),
                              ("block_dim_limit_y", 65535), ("block_dim_limit_z", 65535),
                              ("memory_bandwidth", 2039040000000),
                              ("l2_cache_size", 41943040), ("clock_rate_ghz", 1.41),
                              ("device_memory_size", 85100068864),
                              ("shared_memory_per_block_optin", 166912),
                              ("registers_per_core_limit", 65536),
                              ("registers_per_block_limit", 65536),
                              ("compute_capability", 8)),
                             "NVIDIA A100-SXM4-80GB"),
}
# v6e is left out: this libtpu (0.0.42) crashes while compiling for it.
EXAMPLES = "tpu:v5e:2x4, tpu:v5p:2x2x1, tpu:v4:2x2x1, gpu:h100:8, gpu:a100-80:8, gpu:h100:8x4, cpu:8"
INSTALL = {"tpu": "pip install -e '.[tpu]'", "gpu": "pip install -e '.[plan]'"}


@dataclasses.dataclass(frozen=True)
class Target:
  """A parsed `--target`."""

  text: str
  platform: str             # tpu | gpu | cpu
  chip: str                 # v5e, h100, ... ('' on cpu)
  shape: tuple[int, ...]    # TPU: chips per dimension; GPU: (hosts, devices per host); CPU: (n,)

  @property
  def spec(self) -> Chip | None:
    return CHIPS.get((self.platform, self.chip))

  @property
  def chips(self) -> int:
    n = 1
    for s in self.shape:
      n *= s
    return n


def parse(text: str) -> Target:
  """`--target` → Target, or one line listing the known targets."""
  parts = text.split(":")
  known = (f"known targets look like {EXAMPLES}; chips: "
           + ", ".join(f"{p}:{c}" for p, c in CHIPS))
  if parts[0] == "cpu" and len(parts) == 2 and parts[1].isdigit() and int(parts[1]) > 0:
    return Target(text, "cpu", "", (int(parts[1]),))
  if len(parts) != 3 or (parts[0], parts[1]) not in CHIPS:
    raise errors.BadInput(f"unknown target {text!r}: {known}")
  platform, chip, shape = parts
  if not re.fullmatch(r"[1-9][0-9]*(x[1-9][0-9]*)*", shape):
    raise errors.BadInput(f"target {text!r}: the shape {shape!r} is not like 2x4 or 8: {known}")
  dims = tuple(int(s) for s in shape.split("x"))
  if platform == "gpu" and len(dims) > 2:
    raise errors.BadInput(f"target {text!r}: a GPU shape is DEVICES or HOSTSxDEVICES "
                          "(e.g. gpu:h100:8 or gpu:h100:8x4)")
  if platform == "gpu" and len(dims) == 1:
    dims = (1,) + dims
  return Target(text, platform, chip, dims)


def check_installed(target: Target) -> None:
  """One line naming the extra to install when the target's compiler is missing."""
  import importlib.util

  module = {"tpu": "libtpu", "gpu": "jax_plugins.xla_cuda13"}.get(target.platform)
  if module is None:
    return
  try:
    found = importlib.util.find_spec(module) is not None
  except ModuleNotFoundError:
    found = False
  if not found:
    what = "libtpu" if target.platform == "tpu" else "the CUDA 13 plugin (jax-cuda13-plugin)"
    raise errors.BadInput(f"target {target.text} needs {what}, which is not installed: "
                          f"{INSTALL[target.platform]}")


def prepare_environment(target: Target) -> None:
  """Environment the compilers read when jax starts: call before importing jax.

  The plan runs on this machine's CPU (JAX_PLATFORMS=cpu keeps libtpu and the
  CUDA plugin from looking for hardware); libtpu skips its cloud metadata query;
  the deviceless GPU compiler cannot autotune (no GPU to time kernels on) and its
  Triton GEMM path then fails to pick tile sizes, so both are off.
  """
  os.environ["JAX_PLATFORMS"] = "cpu"
  os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
  # Without these libtpu, looking for the cloud VM it runs on, prints errors on
  # load; the compile-only topology does not read them.
  os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
  os.environ.setdefault("TPU_ACCELERATOR_TYPE", "v5litepod-1")
  # libtpu admits one process per machine unless told otherwise; a compile-only
  # client holds no chip, so plans may run side by side.
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
  flags = os.environ.get("XLA_FLAGS", "")
  if target.platform == "gpu":
    flags += " --xla_gpu_autotune_level=0 --xla_gpu_enable_triton_gemm=false"
  if target.platform == "cpu":
    flags = re.sub(r"--xla_force_host_platform_device_count=\d+", "", flags)
    flags += f" --xla_force_host_platform_device_count={target.chips}"
  os.environ["XLA_FLAGS"] = flags.strip()
  import jax  # jax reads JAX_PLATFORMS when first imported, which may have been earlier
  jax.config.update("jax_platforms", "cpu")
  # compile_s is what compiling takes, never a persistent cache's read.
  jax.config.update("jax_enable_compilation_cache", False)


def _gpu_config_text(chip: Chip) -> str:
  """The GpuTargetConfigProto (text format) of a chip: the fields this XLA reads."""
  lines = []
  for key, value in chip.gpu_info:
    if key == "compute_capability":
      lines.append(f"  cuda_compute_capability {{ major: {value} }}")
    else:
      lines.append(f"  {key}: {value}")
  return ("gpu_device_info {\n" + "\n".join(lines) + "\n}\n"
          'platform_name: "CUDA"\n'
          "dnn_version_info { major: 9 minor: 10 patch: 0 }\n"
          f'device_description_str: "{chip.description}"\n')


def devices(target: Target) -> list:
  """The target's devices, compile-only for TPU and GPU (prepare_environment first)."""
  import jax
  from jax.experimental import topologies

  if target.platform == "cpu":
    available = jax.devices("cpu")
    if len(available) < target.chips:
      raise errors.BadInput(f"target {target.text}: only {len(available)} CPU devices "
                            "in this process (set before jax starts)")
    return available[:target.chips]
  check_installed(target)
  if target.platform == "tpu":
    name = f"{target.chip}:{'x'.join(map(str, target.shape))}"
    try:
      return list(topologies.get_topology_desc(platform="tpu", topology_name=name).devices)
    except Exception as e:  # libtpu's own message names what it does not know
      raise errors.BadInput(f"libtpu does not know the topology {name!r}: "
                            f"{str(e).strip().splitlines()[0]}; known targets look like "
                            f"{EXAMPLES}") from None
  hosts, per_host = target.shape
  return list(topologies.get_topology_desc(
      platform="cuda", topology=f"1x{hosts}x{per_host}",
      target_config=_gpu_config_text(target.spec)).devices)
