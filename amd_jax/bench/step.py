r"""The training-step benchmark: time, FLOPs and MFU of one jitted update (pre-training
or classification fine-tuning).

  python -m amd_jax.bench step --mode amd --student S --teacher B --frames 16 --size 224 \
      --batch 2 --student-mask 0.9 --teacher-mask 0.75 [--dtype float32|bfloat16] \
      [--attention auto|blocked|xla|cudnn] [--steps 5] [--warmup 2] [--reference torch] \
      [--peak-tflops X]
  python -m amd_jax.bench step --mode finetune --student B --frames 16 --size 224 --batch 8
  python -m amd_jax.bench table RESULTS.jsonl

Builds the step with amd_jax/state.py, as amd_jax/train.py does (the sharded
state, the teacher, the jitted update with a donated state), on random weights
and one random uint8 batch that stays on the device, compiles it ahead of time, and
times `--steps` updates after `--warmup`, each synchronised with
block_until_ready. Sizes are `S`, `B`, ... (16×16 patches, tubelets of 2) or
full variant strings such as `Mu/8x2` for tiny runs.

FLOPs are model FLOPs (docs/design.md#flop-accounting): a transformer layer forward on N tokens
of width D costs 24·N·D² + 4·N²·D, a dense layer 2·N·in·out; trainable parts
count ×3 (forward + backward), the frozen teacher ×1; patch embeddings at the
tubelets each model sees, the pixel head at the masked tokens. XLA's own count
of the compiled step (`cost_analysis`) is printed beside it. MFU is measured
FLOP/s over a peak: `--peak-tflops`, a table of known GPUs, or on CPU the
rate this machine reaches on a float32 matmul, measured in the same run.

`table` prints the rows of a file of `step` lines (and failure lines
{"label", "error"}) as a short text table: launch/gpu_check.sh ends with it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from amd_jax import config_files, errors, masking, optim, sharding, tasks
from amd_jax import state as state_lib
from amd_jax.models import build, vit

# Dense per-chip peaks (TFLOP/s) from the vendors' data sheets, by a substring of
# device_kind; float32 matmuls run as TF32 on these GPUs under JAX's default precision.
GPU_PEAK_TFLOPS = {
    "H200": {"bfloat16": 989.0, "float32": 494.5},
    "H100": {"bfloat16": 989.0, "float32": 494.5},
    "A100": {"bfloat16": 312.0, "float32": 156.0},
}


# ----------------------------------------------------------------- FLOP formula

def layer_flops(n: int, d: int) -> int:
  """Forward FLOPs of one transformer layer (MLP ratio 4) on n tokens of width d."""
  return 24 * n * d * d + 4 * n * n * d


def dense_flops(n: int, fan_in: int, fan_out: int) -> int:
  return 2 * n * fan_in * fan_out


def flops_per_clip(config: ml_collections.ConfigDict, counts: masking.MaskCounts) -> dict:
  """Model FLOPs of one clip's update by part, trainable parts ×3, teacher ×1.

  Fine-tuning: the encoder on every token and the linear head, ×3.
  """
  task = tasks.of(config)
  s = vit.decode_variant(config.model.variant)
  tubelet = s.tubelet * s.patch ** 2 * 3
  if not task.pretraining:
    return {"encoder": 3 * (dense_flops(counts.tokens, tubelet, s.width)
                            + s.depth * layer_flops(counts.tokens, s.width)),
            "head": 3 * dense_flops(1, s.width, config.data.num_classes)}
  parts = {
      "encoder": 3 * (dense_flops(counts.student, tubelet, s.width)
                      + s.depth * layer_flops(counts.student, s.width)),
      "decoder": 3 * (dense_flops(counts.student, s.width, s.decoder_width)
                      + config.model.decoder_depth * layer_flops(counts.tokens, s.decoder_width)
                      + dense_flops(counts.masked, s.decoder_width, tubelet)),
  }
  if task.distills:
    t = vit.decode_variant(config.teacher.variant)
    pairs = len(config.align.student_layers)
    parts["projections"] = 3 * pairs * dense_flops(counts.student, s.width, t.width)
    parts["generators"] = 3 * pairs * config.align.generator_depth * layer_flops(
        counts.teacher, t.width)
    # The teacher stops at its deepest aligned layer: later blocks feed nothing.
    parts["teacher"] = (dense_flops(counts.teacher, tubelet, t.width)
                        + max(config.align.teacher_layers) * layer_flops(counts.teacher,
                                                                         t.width))
  return parts


# ----------------------------------------------------------------- peak rate

def cpu_matmul_tflops(size: int = 2048, repeats: int = 10) -> float:
  """The best float32 matmul rate (TFLOP/s) of this machine's JAX CPU backend."""
  a = jnp.ones((size, size), jnp.float32)
  dot = jax.jit(jnp.dot)
  dot(a, a).block_until_ready()
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    dot(a, a).block_until_ready()
    best = min(best, time.perf_counter() - start)
  return 2 * size ** 3 / best / 1e12


def peak_tflops(device, dtype: str, given: float | None) -> tuple[float | None, str]:
  """(peak TFLOP/s, where it comes from) for MFU."""
  if given:
    return given, "--peak-tflops"
  if device.platform == "cpu":
    return cpu_matmul_tflops(), "measured: best float32 2048² jnp.dot on this CPU"
  for name, peaks in GPU_PEAK_TFLOPS.items():
    if name in device.device_kind:
      return peaks[dtype], f"{name} data sheet, dense {dtype}"
  return None, f"unknown peak for {device.device_kind!r}: pass --peak-tflops"


# ----------------------------------------------------------------- the step

def variant_name(size: str) -> str:
  """'S' → 'S/16x2' (the paper's patches and tubelets); full strings pass through."""
  name = size if "/" in size else f"{size}/16x2"
  vit.decode_variant(name)                  # refuses unknown sizes with one line
  return name


def make_config(args) -> ml_collections.ConfigDict:
  """configs/pretrain.py (configs/finetune.py: K400 400 classes, mixup on) with the
  benchmark's sizes, masks and dtypes."""
  if args.mode == "finetune":
    config = config_files.load("finetune", "data=k400")
    config.model.update(variant=variant_name(args.student), dtype=args.dtype,
                        attention=args.attention)
    config.model.drop_path = 0.0            # HF's VideoMAE (the reference) has none
    config.data.update(frames=args.frames, size=args.size)
    config.batch_size = args.batch
    return config
  config = config_files.load("pretrain")
  config.mode = args.mode
  student = vit.decode_variant(variant_name(args.student))
  # The teacher sees the student's tokens: by default a ViT-B cut the same way.
  teacher_name = args.teacher or f"B/{variant_name(args.student).split('/')[1]}"
  teacher = vit.decode_variant(variant_name(teacher_name))
  if args.mode == "amd" and (teacher.patch, teacher.tubelet) != (student.patch, student.tubelet):
    raise errors.BadInput(f"--teacher {teacher_name} cuts {teacher.patch}×{teacher.patch} "
                          f"patches, tubelet {teacher.tubelet}; the student "
                          f"{args.student}: {student.patch}×{student.patch}, tubelet "
                          f"{student.tubelet}: AMD aligns them token by token, so they "
                          "must match")
  config.model.update(variant=variant_name(args.student), decoder_depth=args.decoder_depth,
                      dtype=args.dtype)
  config.teacher.update(variant=variant_name(teacher_name),
                        dtype=args.teacher_dtype or args.dtype)
  config.model.attention = config.teacher.attention = args.attention
  # The official pairing: the middle and the last layer of each model.
  config.align.student_layers = (student.depth // 2, student.depth)
  config.align.teacher_layers = (teacher.depth // 2, teacher.depth)
  config.data.update(frames=args.frames, size=args.size)
  config.masking.update(student_ratio=args.student_mask, teacher_ratio=args.teacher_mask)
  config.batch_size = args.batch
  if args.mode == "videomae":
    config.optim.clip_norm = 0.0            # as configs/videomae.py
  return config


def mask_counts(config: ml_collections.ConfigDict) -> tuple[tuple[int, int, int],
                                                            masking.MaskCounts]:
  """The token grid and counts; fine-tuning sees every token (no mask)."""
  return build.token_grid(config), tasks.of(config).mask_counts()


def random_batch(config: ml_collections.ConfigDict, seed: int = 0) -> dict:
  """One batch as the pipeline makes it: video uint8 (B, T, H, W, 3) and mask int8 (B, N)
  (pre-training) or label int32 (B,) (fine-tuning)."""
  task, grid = tasks.of(config), build.token_grid(config)
  rng = np.random.default_rng(seed)
  d = config.data
  video = rng.integers(0, 256, (config.batch_size, d.frames, d.size, d.size, 3), np.uint8)
  if not task.pretraining:
    return {"video": video,
            "label": rng.integers(0, d.num_classes, config.batch_size).astype(np.int32)}
  return {
      "video": video,
      "mask": np.stack([masking.tube_mask(rng, grid, *task.mask_ratios())
                        for _ in range(config.batch_size)]),
  }


@dataclasses.dataclass
class Step:
  """The jitted train step of amd_jax/state.py and its inputs."""

  fn: object                    # jax.jit(train_step) with shardings, state donated
  state: dict
  batch: dict
  teacher_params: object

  @property
  def args(self):
    return self.state, self.batch, self.teacher_params


def build_step(config: ml_collections.ConfigDict, devices=None) -> Step:
  mesh = sharding.make_mesh(config, devices)
  schedule = optim.Schedule(peak=1e-3, final=1e-5, warmup_steps=0, total_steps=1000)
  training = state_lib.build_training(config, mesh, schedule)
  batch = jax.device_put(random_batch(config), training.batch_sharding)
  return Step(training.step, training.state, batch, training.teacher_params)


class JaxRunner:
  """The step compiled once ahead of time; `step()` runs one update and waits for it.

  An ahead-of-time executable cannot recompile: a shape or sharding change
  would fail rather than silently cost a compilation inside the timing.
  """

  def __init__(self, config: ml_collections.ConfigDict, devices=None):
    self.batch_size = config.batch_size
    self.devices = jax.devices() if devices is None else devices
    self._step = build_step(config, self.devices)
    start = time.perf_counter()
    self._compiled = self._step.fn.lower(*self._step.args).compile()
    self.compile_s = time.perf_counter() - start
    self._metrics = None

  def describe(self) -> dict:
    d = self.devices[0]
    return {"impl": "jax", "device": d.device_kind, "platform": d.platform,
            "device_count": len(self.devices), "cpu_count": len(os.sched_getaffinity(0))}

  def step(self) -> None:
    s = self._step
    s.state, self._metrics = self._compiled(*s.args)
    jax.block_until_ready((s.state, self._metrics))

  def summary(self) -> dict:
    cost = self._compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost   # older jax: per program
    return {
        "compile_s": self.compile_s, "loss": float(self._metrics["loss"]),
        "xla_gflop_per_clip": cost.get("flops", float("nan")) / self.batch_size / 1e9,
        "xla_temp_bytes": getattr(self._compiled.memory_analysis(), "temp_size_in_bytes", None),
        "peak_memory_bytes": (self.devices[0].memory_stats() or {}).get("peak_bytes_in_use"),
    }


def time_steps(runners, timed: int, warmup: int) -> list[dict]:
  """Seconds per step of each runner, their steps interleaved so that the load of a
  shared machine falls on all of them alike: median, min and max of `timed` steps."""
  for _ in range(warmup):
    for r in runners:
      r.step()
  times = [[] for _ in runners]
  for _ in range(timed):
    for r, t in zip(runners, times):
      start = time.perf_counter()
      r.step()
      t.append(time.perf_counter() - start)
  return [{"step_s": statistics.median(t), "step_s_min": min(t), "step_s_max": max(t)}
          for t in times]


def describe(config: ml_collections.ConfigDict, args) -> dict:
  """The fields every line of a run shares: what was measured, and its FLOPs."""
  _, counts = mask_counts(config)
  parts = flops_per_clip(config, counts)
  amd = tasks.of(config).distills
  return {
      "bench": "step", "mode": config.mode, "student": config.model.variant,
      "teacher": config.teacher.variant if amd else None,
      "frames": config.data.frames, "size": config.data.size, "batch": config.batch_size,
      "tokens": counts.tokens, "student_tokens": counts.student,
      "teacher_tokens": counts.teacher if amd else None,
      "dtype": config.model.dtype, "teacher_dtype": config.teacher.dtype if amd else None,
      "attention": _attention(config.model),
      "teacher_attention": _attention(config.teacher) if amd else None,
      "steps": args.steps, "warmup": args.warmup,
      "gflop_per_clip": sum(parts.values()) / 1e9,
      "gflop_parts": {k: round(v / 1e9, 3) for k, v in parts.items()},
  }


def _attention(model: ml_collections.ConfigDict) -> str:
  """The attention implementation a model runs here ("auto" resolved)."""
  if model.attention == "auto":
    return vit.auto_attention(jnp.dtype(model.dtype))
  return model.attention


def with_rates(row: dict, peak: float | None) -> dict:
  """Adds clips/s, achieved TFLOP/s and MFU to a measured row."""
  clips_per_s = row["batch"] / row["step_s"]
  tflops = row["gflop_per_clip"] * clips_per_s / 1e3
  return dict(row, clips_per_s=clips_per_s, tflops=tflops,
              mfu=tflops / peak if peak else None)


def run(args) -> dict:
  """Measures the JAX step (and the PyTorch reference beside it); prints every line but
  the last, which it returns for cli.main to print."""
  config = make_config(args)
  devices = jax.devices()[:args.devices] if args.devices else jax.devices()
  common = describe(config, args)
  peak, peak_source = peak_tflops(devices[0], config.model.dtype, args.peak_tflops)
  common.update(peak_tflops=peak, peak_source=peak_source)
  cores = len(os.sched_getaffinity(0))
  runners = [JaxRunner(config, devices)]
  if args.reference == "torch":
    from amd_jax.bench import torch_reference   # torch is an optional extra
    runners.append(torch_reference.Runner(config, random_batch(config), threads=cores))
  rows = [with_rates(dict(common, **r.describe(), **timing, **r.summary()), peak)
          for r, timing in zip(runners, time_steps(runners, args.steps, args.warmup))]
  if len(rows) == 2:
    rows[1]["jax_over_torch_step_s"] = rows[0]["step_s"] / rows[1]["step_s"]
  for row in rows[:-1]:
    print(json.dumps(row), flush=True)
  return rows[-1]


# ----------------------------------------------------------------- the table

TABLE_HEADER = ("mode", "student/teacher", "dtype", "attention", "batch", "step_s", "clips/s",
                "MFU", "peak GiB", "compile_s")


def table(rows: list[dict]) -> str:
  """Step rows as a fixed-width text table; a failure row {"label", "error"} gets a line
  of its own saying why."""

  def size(variant):
    return variant.split("/")[0]

  def cells(r):
    model = size(r["student"]) + (f"/{size(r['teacher'])}" if r.get("teacher") else "")
    impl = r.get("impl", "jax")
    return [r["mode"] if impl == "jax" else f"{r['mode']} ({impl})", model, r["dtype"],
            r.get("attention") or "-", str(r["batch"]), f"{r['step_s']:.4f}",
            f"{r['clips_per_s']:.1f}",
            "-" if r.get("mfu") is None else f"{100 * r['mfu']:.1f}%",
            "-" if r.get("peak_memory_bytes") is None else f"{r['peak_memory_bytes'] / 2**30:.1f}",
            "-" if r.get("compile_s") is None else f"{r['compile_s']:.1f}"]

  measured = [cells(r) for r in rows if "error" not in r]
  widths = [max(len(c[i]) for c in [TABLE_HEADER, *measured]) for i in range(len(TABLE_HEADER))]
  fmt = lambda c: "  ".join(x.ljust(w) for x, w in zip(c, widths)).rstrip()
  lines = [fmt(TABLE_HEADER), fmt(["-" * w for w in widths])]
  for r in rows:
    lines.append(f"{r['label']}: FAILED ({r['error']})" if "error" in r else fmt(cells(r)))
  return "\n".join(lines)


def print_table(args) -> None:
  if not os.path.isfile(args.results):
    raise errors.BadInput(f"{args.results} is not a file: give the JSON lines of "
                          "`python -m amd_jax.bench step` runs")
  print(table(read_rows(args.results)), flush=True)


# What `table` reads of a measured row; a failure row has "label" and "error".
STEP_KEYS = ("mode", "student", "dtype", "batch", "step_s", "clips_per_s")


def read_rows(path: str) -> list[dict]:
  """The rows of a file of `step` JSON lines; anything else is refused in one line
  naming the first line that is not one."""
  hint = "give the JSON lines that `python -m amd_jax.bench step` prints, one per line"
  rows = []
  try:
    with open(path, encoding="utf-8") as f:
      for n, line in enumerate(f, 1):
        if not line.strip():
          continue
        try:
          row = json.loads(line)
        except json.JSONDecodeError as e:
          raise errors.BadInput(f"{path} line {n} is not JSON ({e.msg}): {hint}") from None
        if not (isinstance(row, dict) and ({"label", "error"} <= row.keys()
                                           or all(k in row for k in STEP_KEYS))):
          raise errors.BadInput(f"{path} line {n} is not a `step` result (it needs "
                                f"{', '.join(STEP_KEYS)}, or label and error): {hint}")
        rows.append(row)
  except UnicodeDecodeError:
    raise errors.BadInput(f"{path} is not text: {hint}") from None
  return rows


# ----------------------------------------------------------------- the parsers

def add_model_args(s) -> None:
  """The model, clip and mask arguments that `make_config` reads."""
  s.add_argument("--mode", choices=("amd", "videomae", "finetune"), default="amd",
                 help="the update to time")
  s.add_argument("--student", default="S", help="S|B|... or a full variant ('Mu/8x2')")
  s.add_argument("--teacher", default=None, help="B|L|... or a full variant (amd mode); "
                 "default: B with the student's patch and tubelet")
  s.add_argument("--frames", type=int, default=16, help="frames per clip")
  s.add_argument("--size", type=int, default=224, help="frame side in pixels")
  s.add_argument("--batch", type=int, default=2, help="clips per step, all devices")
  s.add_argument("--student-mask", type=float, default=0.9,
                 help="fraction of the tubes hidden from the student")
  s.add_argument("--teacher-mask", type=float, default=0.75,
                 help="fraction of the tubes hidden from the teacher (amd mode)")
  s.add_argument("--decoder-depth", type=int, default=4,
                 help="4: AMD and VideoMAE S/B; VideoMAE L/H use 12")
  s.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                 help="compute dtype (parameters stay float32)")
  s.add_argument("--teacher-dtype", choices=("float32", "bfloat16"), default=None,
                 help="the teacher's compute dtype (default: --dtype)")
  s.add_argument("--attention", choices=vit.ATTENTION_IMPLEMENTATIONS, default="auto",
                 help="student and teacher attention (vit.attention; auto: blocked on CPU, "
                 "cudnn on GPU in bfloat16, else xla)")


def add_parser(sub) -> None:
  """Registers `step` and `table` on bench.py's subparsers."""
  s = sub.add_parser("step", help="one training update: time, FLOPs, MFU",
                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  add_model_args(s)
  s.add_argument("--steps", type=int, default=5, help="timed steps (the median is reported)")
  s.add_argument("--warmup", type=int, default=2, help="untimed steps after compilation")
  s.add_argument("--devices", type=int, default=0, help="devices to use (0: all)")
  s.add_argument("--reference", choices=("none", "torch"), default="none",
                 help="also time the same step in PyTorch (transformers' VideoMAE)")
  s.add_argument("--peak-tflops", type=float, default=None,
                 help="peak for MFU (default: GPU table, or measured on CPU)")
  s.set_defaults(run=run)
  t = sub.add_parser("table", help="a text table of `step` JSON lines")
  t.add_argument("results", help="a file of JSON lines from `step` (and failure lines)")
  t.set_defaults(run=print_table)
