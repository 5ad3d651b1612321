"""Helpers for tests that run `python -m amd_jax.main` as a user would (subprocesses)."""

import json
import os
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The runlocal configs shortened to 32 steps, logging every other step.
SHORT = ("--config.optim.epochs=4", "--config.log_every=2", "--config.ckpt_every=8",
         "--config.progress=False")
LOSSES = ("loss", "loss_rec", "loss_dir", "loss_gen")


def environment(devices=1):
  """This process's environment (with the suite's compilation cache: tests/conftest.py)
  and `devices` fake CPU devices."""
  env = dict(os.environ)
  env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  env["JAX_PLATFORMS"] = "cpu"
  return env


def command(workdir, config="configs/pretrain.py:runlocal", extra=()):
  return [sys.executable, "-m", "amd_jax.main", f"--config={config}",
          f"--workdir={workdir}", *SHORT, *extra]


def run(workdir, env, **kw):
  return subprocess.run(command(workdir, **kw), cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=600)


def rows(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def losses(workdir):
  return {r["step"]: [r[k] for k in LOSSES] for r in rows(workdir)}


def assert_same_losses(workdir, reference):
  """Every logged step of `workdir` has the reference run's losses (rtol 1e-5): a
  resumed run retraces the uninterrupted one."""
  got, want = losses(workdir), losses(reference)
  assert sorted(got) == sorted(want)
  for step in want:
    np.testing.assert_allclose(got[step], want[step], rtol=1e-5, err_msg=f"step {step}")


def committed_steps(workdir):
  d = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(d):
    return []
  return sorted(int(s) for s in os.listdir(d) if s.isdigit())
