"""The wheel holds amd_jax alone, with the package data setup.cfg names.

`configs/` and `tests/` stay in the checkout: a top-level `configs` in
site-packages would collide with any other project that installs one. The wheel
is built from a copy of the sources, so the checkout gets no build/ folder.
"""

import configparser
import glob
import os
import shutil
import subprocess
import sys
import zipfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCES = ("setup.cfg", "pyproject.toml", "README.md", "amd_jax", "configs", "tests")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
  src, out = tmp_path_factory.mktemp("src"), tmp_path_factory.mktemp("wheel")
  for name in SOURCES:
    path = os.path.join(ROOT, name)
    if os.path.isdir(path):
      shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    else:
      shutil.copy(path, src / name)
  proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                         "--no-build-isolation", "-q", "-w", str(out), str(src)],
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  (path,) = glob.glob(str(out / "*.whl"))
  with zipfile.ZipFile(path) as z:
    yield z


def test_the_wheel_installs_amd_jax_alone(wheel):
  names = wheel.namelist()
  top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
  assert top == {"amd_jax"}
  (top_level,) = [n for n in names if n.endswith(".dist-info/top_level.txt")]
  assert wheel.read(top_level).decode().split() == ["amd_jax"]


def test_the_wheel_holds_the_package_data(wheel):
  """Every file setup.cfg's [options.package_data] names (the study's teacher)."""
  config = configparser.ConfigParser(interpolation=None)
  config.read(os.path.join(ROOT, "setup.cfg"))
  names = set(wheel.namelist())
  for package, patterns in config["options.package_data"].items():
    folder = package.replace(".", "/")
    for pattern in patterns.split():
      files = [os.path.relpath(p, ROOT) for p in
               glob.glob(os.path.join(ROOT, folder, pattern), recursive=True) if os.path.isfile(p)]
      assert files, f"{package}: {pattern} names no file"
      missing = sorted(set(files) - names)
      assert not missing, f"{package}: {pattern}: not in the wheel: {missing[:5]}"
