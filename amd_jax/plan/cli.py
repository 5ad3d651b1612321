r"""python -m amd_jax.plan --config=configs/FILE.py[:ARGS] --target=TARGET [--out=DIR] [--max-batch]

Compiles a config's training update for accelerators this machine does not have
and reports, per device: memory (parameters, optimiser state, frozen teacher,
batch, temporaries) against the chip's, FLOPs (XLA's count beside the bench
formula), HBM bytes, collectives, a roofline step-time estimate, clips/s and
MFU at that estimate, and the compile time. --config and --config.KEY=VALUE are
amd_jax.main's. TARGET: tpu:v5e:2x4, tpu:v5p:2x2x1, tpu:v4:2x2x1, gpu:h100:8,
gpu:a100-80:8, gpu:h200:8, gpu:h100:8x4 (hosts × GPUs), cpu:8.

  python -m amd_jax.plan --config=configs/pretrain.py:data=k400,model=B,backend=tpu \
      --target=tpu:v5e:2x4 --out=runs/plan_v5e

TPU targets need the `tpu` extra, GPU targets the `plan` extra (docs/accelerators.md).
"""

from __future__ import annotations

import functools
import os
import sys

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

from amd_jax import config_files, errors, files, paths, quiet
from amd_jax.plan import targets

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file, e.g. configs/pretrain.py:data=k400,model=B,backend=tpu",
    lock_config=True)
_TARGET = flags.DEFINE_string("target", None, f"What to compile for: {targets.EXAMPLES}.")
_OUT = flags.DEFINE_string("out", None, "Folder for plan.json (optional).")
_MAX_BATCH = flags.DEFINE_bool("max-batch", False, "Also bisect the largest global batch "
                               "that fits (one compile per probe).")
_PER_DEVICE = flags.DEFINE_integer("batch-per-device", None, "Sets batch_size to this many "
                                   "clips times the target's devices.")
_CAPACITY = flags.DEFINE_float("capacity-gib", None, "Memory per device to plan against "
                               "(default: the chip's).")
flags.mark_flags_as_required(["config", "target"])


def _gib(x: float) -> str:
  return f"{x:.2f}"


def table(report: dict, config_text: str) -> str:
  """The plan as lines of text for a terminal."""
  m = report["memory_gib"]
  lines = [
      f"plan     {config_text} on {report['target']}: {report['devices']} devices, mesh "
      + " × ".join(f"{k}={v}" for k, v in report["mesh"].items())
      + f", batch {report['batch']} ({report['batch_per_device']:g} per device), "
      f"{report['dtype']}, attention {report['attention']}",
      "memory   per device, GiB: " + "  ".join(
          f"{k} {_gib(m[k])}" for k in ("params", "opt_state", "teacher", "batch", "temp"))
      + f"  total {_gib(m['total'])} of {_gib(m['capacity'])}: "
      + (f"fits, headroom {_gib(m['headroom'])}" if report["fits"]
         else f"DOES NOT FIT, {_gib(-m['headroom'])} over"),
      f"flops    per device: {report['flops_per_device'] / 1e12:.3f} TFLOP (XLA, "
      f"{report['cost_source']}) vs {report['formula_flops_per_device'] / 1e12:.3f} TFLOP "
      f"(bench formula); HBM "
      + ("-" if report["hbm_bytes_per_device"] is None
         else f"{report['hbm_bytes_per_device'] / 1e9:.1f} GB"),
      "collect. " + ("- (not compiled)" if report["collectives"] is None
                     else "none" if not report["collectives"] else ", ".join(
          f"{k} {v['count']} × {v['bytes'] / 2 ** 20:.1f} MiB in all"
          for k, v in report["collectives"].items())),
  ]
  if report["step_s_estimate"] is None:
    lines.append("estimate none: no published peak for this target")
  else:
    p = report["peak"]
    lines.append(
        f"estimate {report['step_s_estimate']:.3g} s/step at best ({report['bound']}"
        f"{'' if ' ' in report['bound'] else '-bound'} roofline, collectives hidden) = {report['clips_per_s_estimate']:.0f} clips/s, "
        f"MFU {100 * report['mfu_estimate']:.0f}% at most; peaks {p['tflops']:g} TFLOP/s, "
        f"{p['hbm_gb_s']:g} GB/s ({p['source']})"
        + ("" if report["xla_optimal_s"] is None
           else f"; XLA's own estimate {report['xla_optimal_s']:.3g} s"))
  if "max_batch" in report:
    mb = report["max_batch"]
    lines.append("max      " + ("not even one batch step fits" if mb is None else
                                f"batch {mb} ({mb / report['devices']:g} per device) fits"))
  lines.append(f"compile  {report['compile_s']:.1f} s")
  lines += [f"note     {n}" for n in report["notes"]]
  return "\n".join(lines)


def _main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  absl_logging.set_verbosity(absl_logging.WARNING)   # jax's backend discovery at INFO
  with errors.exit_on_bad_input():
    target = targets.parse(_TARGET.value)
    targets.check_installed(target)
    if _PER_DEVICE.value is not None and _PER_DEVICE.value <= 0:
      raise errors.BadInput(f"--batch-per-device={_PER_DEVICE.value} must be positive")
    if _CAPACITY.value is not None and _CAPACITY.value <= 0:
      raise errors.BadInput(f"--capacity-gib={_CAPACITY.value} must be positive")
    if _OUT.value:
      paths.output_dir(_OUT.value, "--out")
    targets.prepare_environment(target)
    from amd_jax.plan import program  # imports jax: after the environment it reads
    config = _CONFIG.value
    notes = program.for_target(config, target)
    devices = targets.devices(target)
    if _PER_DEVICE.value is not None:
      config.batch_size = _PER_DEVICE.value * len(devices)
    capacity = None if _CAPACITY.value is None else _CAPACITY.value * targets.GIB
    print(f"compiling for {target.text} ({len(devices)} {devices[0].device_kind} devices)...",
          file=sys.stderr, flush=True)
    plan = program.compile_plan(config, target, devices, notes, capacity)
    report = plan.report()
    if _MAX_BATCH.value:
      print("bisecting the largest batch that fits:", file=sys.stderr, flush=True)
      best, _ = program.max_batch(config, target, devices, capacity,
                                  lambda line: print(line, file=sys.stderr, flush=True))
      report["max_batch"] = best
  print(table(report, config_files.flag_text("config")), flush=True)
  if _OUT.value:
    path = os.path.join(_OUT.value, "plan.json")
    files.write_json(path, report, indent=1)
    print(f"wrote {path}", file=sys.stderr)


def main():
  quiet.quiet_third_party()
  app.run(_main, flags_parser=functools.partial(config_files.parse_flags, usage=__doc__))
