"""Tests run on 8 fake CPU devices, never touch the network, and stay quiet.

What the whole run shares, in one directory made for it and removed after it (so
no run inherits another's executables or runs): a JAX compilation cache for both
xdist workers, the tests that jit in-process and every subprocess run (through
the environment they inherit) — the same tiny programs compile in many tests (the runlocal
step, the state's initialisation), and compiled once, the suite spends its time
running them — and one uninterrupted runlocal AMD run to compare others with
(`reference`), trained by the first worker that needs it.
"""

import collections
import fcntl
import os
import shutil
import tempfile

import pytest

# Before jax is imported anywhere: sharded tests need several devices.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import runs  # noqa: E402  (tests/ is on sys.path: pytest's rootdir-relative import)
from amd_jax import quiet  # noqa: E402

_SHARED = "AMD_JAX_TEST_RUN_DIR"


def pytest_configure(config):
  # The process our command lines run in: importing amd_jax leaves it alone.
  quiet.quiet_third_party()
  # Beside setup.cfg's `slow`: registered here, a marker change does not make
  # launch/_venv.sh reinstall the package.
  config.addinivalue_line("markers", "gpu: needs an NVIDIA GPU, skipped elsewhere "
                          "(launch/gpu_check.sh runs them)")
  # The controller (or the only process, with -n 0) makes the shared directory before
  # any test module imports jax; xdist workers inherit its environment when they start.
  if not hasattr(config, "workerinput"):
    shared = tempfile.mkdtemp(prefix="amd_jax_tests_")
    os.environ[_SHARED] = shared
    os.environ["JAX_COMPILATION_CACHE_DIR"] = os.path.join(shared, "jax_cache")
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"


def pytest_collection_modifyitems(items):
  """Files with the most slow tests first. xdist (--dist loadfile) hands whole files to
  the workers in this order (launch/test.sh: --no-loadscope-reorder), so the long files
  start at once and the quick ones fill the end: neither worker finishes alone."""
  slow = collections.Counter(item.path for item in items if item.get_closest_marker("slow"))
  items.sort(key=lambda item: -slow[item.path])     # stable: each file keeps its order


def pytest_unconfigure(config):
  if not hasattr(config, "workerinput"):
    shutil.rmtree(os.environ.pop(_SHARED), ignore_errors=True)


@pytest.fixture(scope="session")
def env():
  """One fake CPU device per run."""
  return runs.environment()


@pytest.fixture(scope="session")
def reference(env):
  """An AMD runlocal run on one device that was never interrupted (tests copy it, never
  write into it). The other worker waits on the lock and takes the finished run."""
  workdir = os.path.join(os.environ[_SHARED], "reference")
  with open(workdir + ".lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if not os.path.exists(workdir + ".done"):
      shutil.rmtree(workdir, ignore_errors=True)    # a failed attempt's leftovers
      result = runs.run(workdir, env)
      assert result.returncode == 0, result.stderr[-3000:]
      open(workdir + ".done", "w").close()
  return workdir
