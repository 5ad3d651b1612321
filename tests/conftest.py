"""Tests run on 8 fake CPU devices, never touch the network, and stay quiet.

Session fixtures for the end-to-end runs: one compilation cache for every
subprocess run, and one uninterrupted runlocal AMD run to compare others with.
"""

import os

import pytest

# Before jax is imported anywhere: sharded tests need several devices.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import runs  # noqa: E402  (tests/ is on sys.path: pytest's rootdir-relative import)


def pytest_configure(config):
  # Beside setup.cfg's `slow`: registered here, a marker change does not make
  # launch/_venv.sh reinstall the package.
  config.addinivalue_line("markers", "gpu: needs an NVIDIA GPU, skipped elsewhere "
                          "(launch/gpu_check.sh runs them)")


@pytest.fixture(scope="session")
def compile_cache(tmp_path_factory):
  return tmp_path_factory.mktemp("jax_cache")


@pytest.fixture(scope="session")
def env(compile_cache):
  """One fake CPU device per run."""
  return runs.environment(compile_cache)


@pytest.fixture(scope="session")
def reference(tmp_path_factory, env):
  """An AMD runlocal run on one device that was never interrupted."""
  workdir = str(tmp_path_factory.mktemp("reference"))
  result = runs.run(workdir, env)
  assert result.returncode == 0, result.stderr[-3000:]
  return workdir
