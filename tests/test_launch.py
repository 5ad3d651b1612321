"""Launch scripts: they parse, name configs that exist, and set only flags jaxlib knows."""

import glob
import os
import re
import shlex
import shutil
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


# ----------------------------------------------------------------- launch/tpu.sh
TPU = os.path.join(ROOT, "launch", "tpu.sh")
TPU_CONFIG = "configs/pretrain.py:data=k400,model=B,backend=tpu"
TPU_SETTINGS = dict(TPU_NAME="my-v5e-32", ZONE="us-west4-a", CONFIG=TPU_CONFIG,
                    WORKDIR="/mnt/shared/runs/amd b")


def tpu(*args, path=None, **settings):
  """launch/tpu.sh with only `settings` of TPU_SETTINGS' variables set; `path`: PATH."""
  env = {k: v for k, v in os.environ.items()
         if k not in (*TPU_SETTINGS, "PROJECT", "REPO_DIR", "PYTHON")}
  env.update(settings)
  if path is not None:
    env["PATH"] = path
  return subprocess.run([shutil.which("bash"), TPU, *args], env=env, capture_output=True,
                        text=True, timeout=30)


def one_line_exit_2(result):
  assert result.returncode == 2 and result.stdout == "", (result.stdout, result.stderr)
  lines = result.stderr.splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
  return lines[0]


def remote_command(result):
  """The one gcloud command a --dry-run printed, and the command it runs on the workers."""
  assert result.returncode == 0, result.stderr
  lines = result.stdout.splitlines()
  assert len(lines) == 1, result.stdout
  argv = shlex.split(lines[0])
  commands = [a for a in argv if a.startswith("--command=")]
  assert len(commands) == 1, argv
  return argv, commands[0][len("--command="):]


def test_tpu_dry_run_prints_one_gcloud_command_for_every_worker():
  extra = ["--config.seed=3", "--config.data.data_dir=/mnt/data/k 400"]
  argv, remote = remote_command(tpu("--dry-run", *extra, PROJECT="proj", **TPU_SETTINGS))
  assert argv[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "my-v5e-32"], argv
  assert {"--worker=all", "--zone=us-west4-a", "--project=proj"} <= set(argv), argv
  words = shlex.split(remote)
  assert words[:2] == ["cd", ROOT]                       # REPO_DIR: this checkout's path
  assert "AMD_JAX_DISTRIBUTED=auto" in words and "launch/env/tpu.sh" in words, words
  # The config argument's commas and the spaces round-trip through both quotings.
  run = words[words.index("amd_jax.main") + 1:]
  assert run == [f"--config={TPU_CONFIG}", "--workdir=/mnt/shared/runs/amd b", *extra], run


def test_tpu_remote_command_hands_python_its_arguments_exactly(tmp_path):
  """The remote command as the workers' shell runs it: a stand-in REPO_DIR whose .venv
  puts a `python3` first on PATH that records its arguments and environment."""
  (tmp_path / "launch" / "env").mkdir(parents=True)
  shutil.copy(os.path.join(ROOT, "launch", "env", "tpu.sh"), tmp_path / "launch" / "env")
  (tmp_path / ".venv" / "bin").mkdir(parents=True)
  (tmp_path / ".venv" / "bin" / "activate").write_text(f'PATH="{tmp_path}/.venv/bin:$PATH"\n')
  recorder = tmp_path / ".venv" / "bin" / "python3"
  recorder.write_text('#!/bin/sh\nprintf "%s\\n" "$PWD" "$AMD_JAX_DISTRIBUTED" '
                      '"$JAX_PLATFORMS" "$@"\n')
  recorder.chmod(0o755)
  extra = ["--config.teacher.init=/ckpt/it's here.ckpt", "--config.seed=3"]
  _, remote = remote_command(tpu("--dry-run", *extra, REPO_DIR=str(tmp_path),
                                 **TPU_SETTINGS))
  worker = {k: v for k, v in os.environ.items() if k != "JAX_PLATFORMS"}   # a fresh login
  ran = subprocess.run(["bash", "-c", remote], env=worker, capture_output=True, text=True,
                       timeout=30, cwd="/")
  assert ran.returncode == 0, ran.stderr
  assert ran.stdout.splitlines() == [
      str(tmp_path), "auto", "tpu", "-m", "amd_jax.main", f"--config={TPU_CONFIG}",
      "--workdir=/mnt/shared/runs/amd b", *extra]


def test_tpu_setup_dry_run_installs_the_tpu_extra_on_every_worker():
  argv, remote = remote_command(tpu("--dry-run", "--setup", TPU_NAME="t", ZONE="z",
                                    REPO_DIR="~/amd_jax"))
  assert "--worker=all" in argv and "--zone=z" in argv
  assert remote.startswith("cd ~/amd_jax && ")             # ~ expands on the worker
  words = shlex.split(remote)
  assert words[words.index("-m"):][:3] == ["-m", "venv", ".venv"], words
  assert words[-4:] == [".venv/bin/pip", "install", "-e", ".[tpu]"], words


@pytest.mark.parametrize("missing", ["TPU_NAME", "ZONE", "CONFIG", "WORKDIR"])
def test_tpu_missing_setting_is_one_line(missing):
  settings = {k: v for k, v in TPU_SETTINGS.items() if k != missing}
  assert f"Must set {missing}" in one_line_exit_2(tpu("--dry-run", **settings))


def test_tpu_refuses_a_url_workdir_before_any_ssh():
  line = one_line_exit_2(tpu("--dry-run", **dict(TPU_SETTINGS, WORKDIR="gs://bucket/run")))
  assert "gs://bucket/run is a URL" in line, line


def test_tpu_without_gcloud_is_one_line_unless_dry_run(tmp_path):
  # PATH holds only what the script needs besides bash's builtins: no gcloud, even
  # where one is installed.
  os.symlink(shutil.which("dirname"), tmp_path / "dirname")
  line = one_line_exit_2(tpu(path=str(tmp_path), **TPU_SETTINGS))
  assert line == "error: gcloud not found: install the Google Cloud CLI, or use --dry-run"
  assert tpu("--dry-run", path=str(tmp_path), **TPU_SETTINGS).returncode == 0


# ----------------------------------------------------------------- AMD_JAX_DISTRIBUTED
_EXPLICIT = ("AMD_JAX_COORDINATOR", "AMD_JAX_NUM_PROCESSES", "AMD_JAX_PROCESS_ID")


def test_distributed_refuses_an_unknown_value_in_one_line(monkeypatch):
  from amd_jax import distributed, errors
  for k in _EXPLICIT:
    monkeypatch.delenv(k, raising=False)
  monkeypatch.setenv("AMD_JAX_DISTRIBUTED", "bogus")
  with pytest.raises(errors.BadInput, match="AMD_JAX_DISTRIBUTED='bogus'.*'auto'"):
    distributed.initialize()
  monkeypatch.setenv("AMD_JAX_DISTRIBUTED", "auto")
  monkeypatch.setenv("AMD_JAX_COORDINATOR", "127.0.0.1:1234")
  with pytest.raises(errors.BadInput, match="not both"):
    distributed.initialize()


def test_distributed_auto_lets_jax_find_its_cluster(monkeypatch):
  """Only the call's shape is checked here, with a recorder in place of
  jax.distributed.initialize: what `auto` must do is call it with no arguments, so that
  JAX's own cluster detection (the Cloud TPU VMs' metadata) fills them in, and no
  cluster exists on this machine to detect. A real multi-process run, which joins
  through the same function, is tests/test_scale.py's (launch/local.sh)."""
  import jax
  from amd_jax import distributed
  for k in _EXPLICIT + ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE"):
    monkeypatch.delenv(k, raising=False)
  monkeypatch.setenv("AMD_JAX_DISTRIBUTED", "auto")
  calls = []
  monkeypatch.setattr(jax.distributed, "initialize", lambda *a, **kw: calls.append((a, kw)))
  distributed.initialize()
  assert calls == [((), {})]


def test_distributed_auto_without_a_cluster_is_one_line():
  """JAX detects no cluster here (every detector's variable removed; no TPU metadata):
  one line, not a single-process run the user did not ask for."""
  env = {k: v for k, v in os.environ.items()
         if not k.startswith(("SLURM_", "OMPI_", "TPU_", "MEGASCALE_", "AMD_JAX_"))
         and k not in ("KUBERNETES_SERVICE_HOST", "JAX_COORDINATOR_ADDRESS")}
  env.update(AMD_JAX_DISTRIBUTED="auto", JAX_PLATFORMS="cpu", TPU_SKIP_MDS_QUERY="1")
  code = ("from amd_jax import distributed, errors\n"
          "with errors.exit_on_bad_input():\n  distributed.initialize()")
  result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=120)
  assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
  lines = [x for x in result.stderr.splitlines() if x.startswith("error:")]
  assert len(lines) == 1 and "AMD_JAX_DISTRIBUTED=auto: JAX found no cluster" in lines[0], \
      result.stderr


def test_local_launcher_prefixes_each_process_output_with_its_id():
  """Two processes printing the same lines: each line says which process wrote it."""
  result = subprocess.run(
      ["launch/local.sh", "-n", "2", "--cpu-devices", "1", "--", "bash", "-c",
       'echo "out $AMD_JAX_PROCESS_ID"; echo err >&2'],
      cwd=ROOT, capture_output=True, text=True, timeout=60)
  assert result.returncode == 0, result.stderr
  assert sorted(result.stdout.splitlines()) == ["[0] out 0", "[1] out 1"]
  assert sorted(l for l in result.stderr.splitlines() if l.endswith("err")) == [
      "[0] err", "[1] err"]
