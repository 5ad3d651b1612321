"""Scale-out on fake CPU devices: sharded runs and multi-process runs match one device."""

import json
import os
import subprocess

import jax
import numpy as np
import pytest
from flax import nnx

from amd_jax import sharding, tasks
from amd_jax.models import build as build_lib
from configs import pretrain as pretrain_config
from runs import ROOT, command, committed_steps, environment, losses, rows, run

GOLDEN = os.path.join(os.path.dirname(__file__), "golden", "partition_specs.json")


def assert_same_losses(got, want):
  """First logged step to 1e-5 relative, the first five to 1e-3 (float reassociation)."""
  steps = sorted(want)[:5]
  np.testing.assert_allclose(got[steps[0]], want[steps[0]], rtol=1e-5)
  for step in steps:
    np.testing.assert_allclose(got[step], want[step], rtol=1e-3, err_msg=f"step {step}")


@pytest.mark.slow
def test_data2_fsdp4_on_8_devices_matches_one_device(tmp_path, reference):
  result = run(str(tmp_path), environment(devices=8),
               extra=["--config.mesh.data=2", "--config.mesh.fsdp=4"])
  assert result.returncode == 0, result.stderr[-3000:]
  assert "'data': 2, 'fsdp': 4" in result.stderr
  assert_same_losses(losses(str(tmp_path)), losses(reference))


@pytest.mark.slow
def test_two_processes_match_one_process(tmp_path):
  """launch/local.sh -n 2 --cpu-devices 2 against 1 process × 4 devices."""
  single = str(tmp_path / "single")
  result = run(single, environment(devices=4), extra=["--config.optim.epochs=1"])
  assert result.returncode == 0, result.stderr[-3000:]
  multi = str(tmp_path / "multi")
  env = environment()
  del env["XLA_FLAGS"], env["JAX_PLATFORMS"]   # local.sh sets both for its processes
  result = subprocess.run(
      ["launch/local.sh", "-n", "2", "--cpu-devices", "2", "--",
       *command(multi, extra=["--config.optim.epochs=1"])],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "process 1 of 2" in result.stderr
  assert_same_losses(losses(multi), losses(single))
  assert committed_steps(multi) == [8]


def test_local_launcher_fails_when_a_process_fails(tmp_path):
  env = dict(os.environ)
  result = subprocess.run(
      ["launch/local.sh", "-n", "2", "--cpu-devices", "1", "--", "bash", "-c",
       'if [ "$AMD_JAX_PROCESS_ID" = 1 ]; then exit 3; fi; sleep 30'],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
  assert result.returncode == 3
  assert "stopping the others" in result.stderr


@pytest.mark.slow
def test_checkpoint_from_8_devices_resumes_on_4(tmp_path):
  workdir = str(tmp_path)
  first = run(workdir, environment(devices=8),
              extra=["--config.mesh.data=2", "--config.mesh.fsdp=4", "--config.optim.epochs=1"])
  assert first.returncode == 0, first.stderr[-3000:]
  assert committed_steps(workdir) == [8]
  second = run(workdir, environment(devices=4),
               extra=["--config.mesh.data=2", "--config.mesh.fsdp=2", "--config.optim.epochs=2",
                      "--allow_config_change"])     # a longer schedule, deliberately
  assert second.returncode == 0, second.stderr[-3000:]
  assert "resumed from step 8" in second.stderr
  r = rows(workdir)
  assert [x["step"] for x in r] == list(range(2, 17, 2))
  assert all(np.isfinite(x["loss"]) for x in r)


def partition_specs():
  """{model/parameter path: spec} for the runlocal AMD student and teacher, pure FSDP."""
  config = pretrain_config.get_config("runlocal")
  out = {}
  for name, build in (("student", tasks.of(config).model),
                      ("teacher", lambda rngs: build_lib.teacher(config, rngs))):
    abstract = nnx.state(nnx.eval_shape(lambda: build(nnx.Rngs(0))))
    specs = sharding.param_specs(abstract, config.sharding.rules)
    for path, spec in jax.tree_util.tree_flatten_with_path(specs, is_leaf=sharding.is_spec)[0]:
      out[f"{name}{jax.tree_util.keystr(path)}"] = str(spec)
  return out


def test_partition_specs_match_the_golden_file():
  """A changed rule or logical name shows up here as a diff against the checked-in file.

  After an intended change: python -c "import sys; sys.path[:0] = ['tests', '.'];
  import json, test_scale; json.dump(test_scale.partition_specs(),
  open(test_scale.GOLDEN, 'w'), indent=1, sort_keys=True)"
  """
  with open(GOLDEN) as f:
    golden = json.load(f)
  got = partition_specs()
  assert sorted(got) == sorted(golden)
  diff = {k: (golden[k], got[k]) for k in golden if golden[k] != got[k]}
  assert not diff, diff
  assert golden["student['encoder']['blocks']['layers'][0]['mlp']['fc1']['kernel'].value"] == \
      "P('fsdp', None)"


def test_large_weights_must_be_sharded():
  mesh = jax.sharding.Mesh(np.asarray(jax.devices()).reshape(2, 4), sharding.AXES)
  big = jax.device_put(np.zeros((512, 512), np.float32), sharding.replicated(mesh))
  with pytest.raises(ValueError, match="replicated over the fsdp axis"):
    sharding.assert_sharded({"w": big}, mesh)
  split = jax.device_put(big, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("fsdp")))
  sharding.assert_sharded({"w": split}, mesh)
