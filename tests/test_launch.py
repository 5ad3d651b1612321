"""Launch scripts: they parse, name configs that exist, and set only flags jaxlib knows."""

import glob
import os
import re
import shlex
import subprocess
import sys

import pytest

from runs import ROOT

SCRIPTS = sorted(glob.glob(os.path.join(ROOT, "launch", "*.sh")) +
                 glob.glob(os.path.join(ROOT, "launch", "*.sbatch")) +
                 glob.glob(os.path.join(ROOT, "launch", "env", "*.sh")) +
                 [os.path.join(ROOT, ".ci", "run")])
ENV_FILES = sorted(glob.glob(os.path.join(ROOT, "launch", "env", "*.sh")))


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: os.path.relpath(p, ROOT))
def test_script_parses_and_fails_fast(script):
  subprocess.run(["bash", "-n", script], check=True)
  text = open(script).read()
  if not os.path.basename(os.path.dirname(script)) == "env" and not script.endswith("_venv.sh") \
      and not script.endswith("_spawn.sh"):
    assert "set -euo pipefail" in text
  for config in re.findall(r"configs/\w+\.py", text):
    assert os.path.exists(os.path.join(ROOT, config)), (script, config)


@pytest.mark.parametrize("script", ["multinode.sh", "slurm.sbatch"])
def test_missing_variables_fail_in_seconds(script):
  env = {k: v for k, v in os.environ.items()
         if k not in ("CONFIG", "WORKDIR", "COORDINATOR", "NNODES", "NODE_RANK")}
  result = subprocess.run(["bash", os.path.join(ROOT, "launch", script)], env=env,
                          capture_output=True, text=True, timeout=30)
  assert result.returncode != 0
  assert "Must set" in result.stderr


@pytest.mark.parametrize("env_file", ENV_FILES, ids=os.path.basename)
def test_every_xla_flag_is_known_to_this_jaxlib(env_file):
  """An unknown flag in XLA_FLAGS aborts jaxlib at start-up: catch it here, not on a cluster."""
  flags = " ".join(re.findall(r"--xla_\w+=[^\s\"']*", open(env_file).read()))
  env = dict(os.environ, XLA_FLAGS=flags, JAX_PLATFORMS="cpu")
  result = subprocess.run([sys.executable, "-c", "import jax; jax.devices()"], env=env,
                          capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr[-2000:]


def test_gpu_check_benchmarks_name_real_flags_and_models():
  """launch/gpu_check.sh runs on a lent GPU's scarce minutes: a typo in a `bench step`
  argument must fail here. (`launch/gpu_check.sh --dry-run` runs it all on the CPU.)"""
  from amd_jax.bench import cli
  from amd_jax.bench import step as bench_step
  text = open(os.path.join(ROOT, "launch", "gpu_check.sh")).read()
  sizes = shlex.split(re.search(r"^SIZES=\(([^)]*)\)", text, re.M).group(1))
  runs = re.findall(r'^run_bench "[^"]+" (.*)$', text, re.M)
  assert len(runs) >= 3
  for argv in runs:
    config = bench_step.make_config(cli.parser().parse_args(["step", *shlex.split(argv),
                                                               *sizes]))
    assert config.model.dtype == "bfloat16" and config.batch_size == 64
