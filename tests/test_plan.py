"""`python -m amd_jax.plan`: train.py's update compiled for TPUs and NVIDIA GPUs this
machine does not have (libtpu's topologies, the CUDA plugin's deviceless compiler:
the `plan` extra), run as a user runs it, in a subprocess."""

import json
import math
import os
import subprocess
import sys

import pytest

from runs import ROOT

KEYS = {"target", "devices", "mesh", "fits", "memory_gib", "flops_per_device",
        "step_s_estimate", "mfu_estimate", "collectives", "compile_s"}
MEMORY_KEYS = {"params", "opt_state", "teacher", "batch", "temp", "total", "capacity"}


def plan(*args, out=None, env=None):
  """(completed process, plan.json or None) of `python -m amd_jax.plan ARGS`."""
  env = os.environ if env is None else env
  cmd = [sys.executable, "-m", "amd_jax.plan", *args] + ([f"--out={out}"] if out else [])
  proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  path = os.path.join(out, "plan.json") if out else None
  report = None
  if path and os.path.exists(path):
    with open(path) as f:
      report = json.load(f)
  return proc, report


def _ok(proc):
  assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.slow
@pytest.mark.parametrize("config,teacher", [
    ("configs/pretrain.py:runlocal", True),
    ("configs/videomae.py:runlocal", False),
    ("configs/finetune.py:runlocal", False),
    ("configs/transfer.py:data=ava,runlocal", False),
])
def test_runlocal_configs_compile_for_a_tpu_topology(tmp_path, config, teacher):
  proc, r = plan(f"--config={config}", "--target=tpu:v5e:2x2", out=str(tmp_path))
  _ok(proc)
  assert KEYS <= set(r) and MEMORY_KEYS <= set(r["memory_gib"])
  assert r["target"] == "tpu:v5e:2x2" and r["devices"] == 4
  assert r["mesh"] == {"data": 4, "fsdp": 1} and r["attention"] == "xla"
  m = r["memory_gib"]
  assert r["fits"] and m["capacity"] == 16.0
  # AdamW keeps two moments per parameter (the frozen mask tokens have none) and a
  # step count.
  assert 1.6 < m["opt_state"] / m["params"] < 2.01
  assert (m["teacher"] > 0) == teacher
  assert m["total"] >= m["params"] + m["opt_state"] + m["teacher"] + m["batch"]
  # Data-parallel: the gradients are summed over the devices, nothing is gathered.
  assert "all-reduce" in r["collectives"] and "all-gather" not in r["collectives"]
  assert r["cost_source"] == "compiled" and r["hbm_bytes_per_device"] > 0
  # At these tiny widths XLA also counts what the formula leaves out (norms,
  # softmax, the optimiser): more, never less, and within 15%.
  assert 1.0 <= r["flops_per_device"] / r["formula_flops_per_device"] < 1.15
  assert 0 < r["mfu_estimate"] < 1 and r["step_s_estimate"] > 0
  assert "DOES NOT FIT" not in proc.stdout and "fits, headroom" in proc.stdout
  assert "add backend=tpu" in proc.stdout      # float32 on a TPU is said, not hidden


@pytest.mark.parametrize("config", [
    "configs/pretrain.py:runlocal,backend=gpu",
    pytest.param("configs/videomae.py:runlocal,backend=gpu", marks=pytest.mark.slow),
    pytest.param("configs/finetune.py:runlocal,backend=gpu", marks=pytest.mark.slow),
])
def test_runlocal_configs_compile_deviceless_for_gpus_with_cudnn_attention(tmp_path, config):
  proc, r = plan(f"--config={config}", "--target=gpu:h100:2", out=str(tmp_path))
  _ok(proc)
  assert r["devices"] == 2 and r["attention"] == "cudnn" and r["dtype"] == "bfloat16"
  assert r["memory_gib"]["capacity"] == pytest.approx(79.11, abs=0.01) and r["fits"]
  # No count from the deviceless compiler: FLOPs of the update lowered on the CPU,
  # bytes of the compiled GPU program by XLA's cost model.
  assert r["cost_source"].startswith("FLOPs lowered on the CPU")
  assert 0.9 < r["flops_per_device"] / r["formula_flops_per_device"] < 1.2
  assert r["hbm_bytes_per_device"] > 0 and r["bound"] in ("compute", "memory")


@pytest.mark.slow
def test_flops_match_the_bench_formula_at_paper_sizes(tmp_path):
  """ViT-B student, ViT-L teacher, 16×224² (583 GFLOP per clip by the formula): XLA's
  count of the whole update within 2% of the formula's matmuls."""
  proc, r = plan("--config=configs/pretrain.py:data=k400,model=B,backend=gpu",
                 "--target=gpu:h100:1", "--batch-per-device=1", out=str(tmp_path))
  _ok(proc)
  assert r["formula_flops_per_device"] == pytest.approx(583.2e9, rel=0.001)
  assert r["flops_per_device"] == pytest.approx(r["formula_flops_per_device"], rel=0.02)


@pytest.mark.slow
def test_fsdp_divides_parameter_and_optimiser_bytes(tmp_path):
  """fsdp=4 splits every large weight 4 ways (small vectors may stay whole): the
  parameter and optimiser bytes per device fall by close to 4×, and the program
  gathers weights where data-parallel only sums gradients."""
  reports = {}
  for name, extra in (("dp", []), ("fsdp", ["--config.mesh.data=1", "--config.mesh.fsdp=4"])):
    proc, reports[name] = plan("--config=configs/pretrain.py:runlocal", "--target=cpu:4",
                               *extra, out=str(tmp_path / name))
    _ok(proc)
  dp, fsdp = reports["dp"], reports["fsdp"]
  assert fsdp["mesh"] == {"data": 1, "fsdp": 4}
  state = lambda r: r["memory_gib"]["params"] + r["memory_gib"]["opt_state"]
  assert 3.5 < state(dp) / state(fsdp) <= 4.0
  assert 3.5 < dp["memory_gib"]["teacher"] / fsdp["memory_gib"]["teacher"] <= 4.0
  assert "all-gather" in fsdp["collectives"] and "all-gather" not in dp["collectives"]


@pytest.mark.slow
def test_max_batch_fits_and_the_next_batch_does_not(tmp_path):
  # 0.09 GiB: the runlocal update takes 0.080 GiB per device at batch 8, 0.099 at 12.
  config = ("--config=configs/pretrain.py:runlocal", "--target=cpu:2", "--capacity-gib=0.09")
  proc, r = plan(*config, "--max-batch", out=str(tmp_path / "max"))
  _ok(proc)
  best = r["max_batch"]
  # Whole videos (4 clips each) on both devices.
  granule = math.lcm(2, 4)
  assert best and best % granule == 0 and "bisecting" in proc.stderr
  proc, fits = plan(*config, f"--config.batch_size={best}", out=str(tmp_path / "best"))
  _ok(proc)
  proc, over = plan(*config, f"--config.batch_size={best + granule}", out=str(tmp_path / "over"))
  _ok(proc)
  assert fits["fits"] and not over["fits"]
  assert "DOES NOT FIT" in proc.stdout


@pytest.mark.parametrize("target,says", [
    ("tpu:v9:2x2", "unknown target 'tpu:v9:2x2': known targets look like tpu:v5e:2x4"),
    ("gpu:h100:2x2x2", "a GPU shape is DEVICES or HOSTSxDEVICES"),
    ("tpu:v5e:0x4", "the shape '0x4' is not like 2x4"),
    ("cpu:0", "unknown target 'cpu:0'"),
    ("tpu:v5e:3x7", "libtpu does not know the topology 'v5e:3x7'"),
])
def test_a_bad_target_is_one_line_before_any_compile(tmp_path, target, says):
  proc, r = plan("--config=configs/pretrain.py:runlocal", f"--target={target}",
                 out=str(tmp_path))
  assert proc.returncode == 2 and r is None
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], proc.stderr
  assert "compiling" not in proc.stderr


def test_a_classifier_whose_classes_a_run_would_read_is_one_line(tmp_path):
  """A video folder's class count comes from its label map when a run starts; a plan
  (no run, maybe no data here) is refused in one line instead of planning a head of
  no classes, and plans once it is given."""
  config = "--config=configs/finetune.py:data=video_folder,runlocal"
  proc, r = plan(config, "--target=cpu:1", out=str(tmp_path / "a"))
  assert proc.returncode == 2 and r is None
  assert proc.stderr.strip().splitlines()[-1] == (
      "error: data.num_classes is 0 for dataset video_folder: a training run reads it from "
      "the prepared dataset's label map; here give --config.data.num_classes=N")
  proc, r = plan(config, "--target=cpu:1", "--config.data.num_classes=3", out=str(tmp_path / "b"))
  _ok(proc)
  assert r["compiled"] is True


def test_a_missing_extra_is_named_with_its_install_command(tmp_path):
  """Without libtpu (hidden from this interpreter by a sitecustomize that refuses to
  import it, as on a machine without the extra) a TPU target says what to install."""
  (tmp_path / "sitecustomize.py").write_text(
      "import importlib.abc, sys\n"
      "class NoTpu(importlib.abc.MetaPathFinder):\n"
      "  def find_spec(self, name, path=None, target=None):\n"
      "    if name.split('.')[0] == 'libtpu':\n"
      "      raise ModuleNotFoundError(name)\n"
      "sys.meta_path.insert(0, NoTpu())\n")
  env = dict(os.environ, PYTHONPATH=f"{tmp_path}{os.pathsep}{ROOT}")
  proc, _ = plan("--config=configs/pretrain.py:runlocal", "--target=tpu:v5e:2x4", env=env)
  assert proc.returncode == 2
  assert proc.stderr.strip() == ("error: target tpu:v5e:2x4 needs libtpu, which is not "
                                 "installed: pip install -e '.[tpu]'")


def test_table_lists_plans_and_failures(tmp_path):
  proc, _ = plan("--config=configs/finetune.py:runlocal", "--target=cpu:2",
                 out=str(tmp_path / "ft"))
  _ok(proc)
  (tmp_path / "ft.log").write_text(proc.stdout)
  (tmp_path / "broken.log").write_text("compiling...\nerror: something went wrong\n")
  table = subprocess.run([sys.executable, "-m", "amd_jax.plan.table", str(tmp_path)],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout
  lines = table.splitlines()
  assert lines[0].startswith("| row | target |") and len(lines) == 4
  assert lines[2].startswith("| broken | failed: error: something went wrong")
  assert lines[3].startswith("| ft | cpu:2 | 2×1 | 16 |")


def test_collectives_are_counted_by_kind_with_their_result_bytes():
  """A hand-written optimised module: a plain all-gather, an async all-reduce (its
  start's tuple is operand and result), and TPU's fused reduce-scatter (the fusion
  counts with its shard results; the all-reduce inside it does not)."""
  from amd_jax.plan import program
  hlo = """
%all-reduce-scatter.3 (p0: f32[8,4]) -> (f32[2,4]) {
  %all-reduce.9 = f32[8,4]{1,0} all-reduce(%p0), replica_groups={{0,1,2,3}}
}

ENTRY %main (a: bf16[2,16]) -> f32[] {
  %all-gather.1 = bf16[8,16]{1,0} all-gather(%a), dimensions={0}
  %all-reduce-start.2 = (f32[10]{0}, f32[10]{0}) all-reduce-start(%x), to_apply=%add
  %all-reduce-done.2 = f32[10]{0} all-reduce-done(%all-reduce-start.2)
  %fusion.7 = (f32[2,4]{1,0}, bf16[3]{0}) fusion(%g, %h), kind=kCustom, calls=%all-reduce-scatter.3
}
"""
  assert program.collectives(hlo) == {
      "all-gather": {"count": 1, "bytes": 8 * 16 * 2},
      "all-reduce": {"count": 1, "bytes": 10 * 4},
      "reduce-scatter": {"count": 1, "bytes": 2 * 4 * 4 + 3 * 2},
  }


def test_install_extras_are_jax_extras_of_the_pinned_jax():
  """README's install commands: each accelerator extra of setup.cfg names an extra
  that the installed (pinned) jax declares, and the plan extra's libtpu is the one
  that jax asks for."""
  import configparser
  import importlib.metadata as md
  import re
  cfg = configparser.ConfigParser()
  cfg.read(os.path.join(ROOT, "setup.cfg"))
  extras = cfg["options.extras_require"]
  declared = {m.group(1) for r in md.requires("jax") or ()
              if (m := re.search(r"extra == \"([\w-]+)\"", r))}
  wanted = {"cuda13": {"cuda13"}, "cuda12": {"cuda12"}, "tpu": {"tpu"},
            "plan": {"tpu", "cuda13-local"}}
  for extra, jax_extras in wanted.items():
    line = next(l for l in extras[extra].splitlines() if l.strip().startswith("jax["))
    named = set(re.match(r"\s*jax\[([\w,-]+)\]", line).group(1).split(","))
    assert named == jax_extras and named <= declared, (extra, line, declared)
  libtpu = next(r for r in md.requires("jax") if r.startswith("libtpu"))
  pin = re.search(r"==([\d.]+?)\.?\*?;", libtpu).group(1)     # "libtpu==0.0.42.*; ..."
  assert md.version("libtpu") == pin or md.version("libtpu").startswith(pin + ".")


@pytest.mark.slow
def test_a_program_the_tpu_compiler_refuses_is_planned_as_not_fitting(tmp_path):
  """256 clips of 16×224² per v5e chip: libtpu refuses to compile what does not fit
  its 16 GiB (RESOURCE_EXHAUSTED). The plan reports it, with the temporaries the
  compiler asked for and the FLOPs of the lowered update, instead of a traceback."""
  proc, r = plan("--config=configs/videomae.py:runlocal,backend=tpu", "--target=tpu:v5e:2x2",
                 "--config.data.size=224", "--config.data.frames=16",
                 "--config.model.variant=Ti/16x2", "--batch-per-device=256", out=str(tmp_path))
  _ok(proc)
  assert r["compiled"] is False and r["fits"] is False and r["collectives"] is None
  assert r["memory_gib"]["temp"] > 16 and r["hbm_bytes_per_device"] is None
  assert r["flops_per_device"] == pytest.approx(r["formula_flops_per_device"], rel=0.1)
  assert "DOES NOT FIT" in proc.stdout and "the TPU compiler refused the program" in proc.stdout


def test_both_of_libtpus_out_of_memory_messages_are_read():
  """libtpu 0.0.42's two refusals, as it words them (seen planning AMD ViT-B/ViT-L on
  a v5e): the temporaries asked for, or the total HBM used."""
  from amd_jax.plan import program
  first = ("RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required for HLO "
           "temporaries (20.48G) exceeds available HBM (15.75G).")
  second = ("RESOURCE_EXHAUSTED: E1000: CompileTimeHbmOom: XLA:TPU compile permanent error. "
            "Ran out of memory in memory space hbm. Used 15.76G of 15.75G hbm. Exceeded hbm "
            "capacity by 17.48M.")
  assert program._TEMP_TOO_LARGE.search(first).group(1) == "20.48"
  assert program._HBM_EXCEEDED.search(second).group(1) == "15.76"
  assert not program._TEMP_TOO_LARGE.search(second) and not program._HBM_EXCEEDED.search(first)
