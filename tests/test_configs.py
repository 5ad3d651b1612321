"""Every config loads (every column, and runlocal) and builds its models abstractly."""

import glob
import os
import shutil
import subprocess
import sys

import pytest
from flax import nnx

from amd_jax import config_files, errors, masking, tasks
from amd_jax.models import build, vit
from configs import common

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(ROOT, "configs", "*.py"))
                 if not os.path.basename(p).startswith(("_", "common")))
COLUMNS = {"pretrain": ["data=k400,model=B", "data=ssv2,model=S"],
           "videomae": ["data=k400,model=L", "data=ssv2,model=B"],
           "finetune": ["data=k400,model=B", "data=ssv2,model=S", "data=ssv2,backend=gpu"],
           "transfer": ["data=ucf101,model=B", "data=hmdb51,model=S"],
           "image": ["model=B", "model=S,backend=gpu"]}
PRETRAINING = ("pretrain", "videomae")


def test_every_config_is_covered():
  assert set(CONFIGS) == set(COLUMNS)


@pytest.mark.parametrize("name, arg", [(n, a) for n in PRETRAINING
                                       for a in COLUMNS[n] + ["runlocal"]])
def test_pretraining_config_builds_its_models(name, arg):
  config = config_files.load(name, arg)
  variant = vit.decode_variant(config.model.variant)
  grid = vit.token_grid(config.data.frames, config.data.size, variant.patch, variant.tubelet)
  amd = config.mode == "amd"
  counts = masking.tube_counts(grid, config.masking.student_ratio,
                               config.masking.teacher_ratio if amd else None)
  assert counts.student > 0 and (counts.diff > 0) == amd
  assert config.batch_size % (config.data.num_sample * config.grad_accum) == 0
  student = nnx.eval_shape(lambda: tasks.of(config).model(nnx.Rngs(0)))
  assert student.encoder.num_tokens == counts.tokens
  if amd:
    teacher = nnx.eval_shape(lambda: build.teacher(config, nnx.Rngs(0)))
    assert teacher.norm is None


@pytest.mark.parametrize("name, arg", [(n, a) for n in CONFIGS if n not in PRETRAINING
                                       for a in COLUMNS[n] + ["runlocal"] * (n != "image")])
def test_finetuning_config_builds_its_model(name, arg):
  config = config_files.load(name, arg)
  assert config.mode == "finetune" and config.batch_size % config.data.num_sample == 0
  if not config.data.num_classes:
    # Read from the dataset's label map by a run (tasks.py, Classification.prepare); a model built
    # without it is refused rather than given a head of no classes.
    with pytest.raises(errors.BadInput, match="data.num_classes is 0"):
      tasks.of(config).model(nnx.Rngs(0))
    config.data.num_classes = 3
  model = nnx.eval_shape(lambda: tasks.of(config).model(nnx.Rngs(0)))
  assert model.head.kernel.shape[-1] == config.data.num_classes
  views = config.data.test_clips * config.data.test_crops
  assert views in ((1,) if name == "image" else (6, 15))
  assert 0 < config.optim.layer_decay <= 1 and config.optim.b2 == 0.999


def test_table_s1_values():
  config = config_files.load("pretrain", "data=ssv2,model=B")
  assert config.batch_size == 2048 and config.data.num_sample == 4
  assert (config.optim.base_lr, config.optim.epochs, config.optim.warmup_epochs) == (1.2e-3, 800, 40)
  assert (config.optim.b1, config.optim.b2, config.optim.weight_decay) == (0.9, 0.95, 0.05)
  assert config.data.sampling_rate == 2 and config.optim.clip_norm == 0.02
  assert (config.masking.student_ratio, config.masking.teacher_ratio) == (0.9, 0.75)
  assert tuple(config.align.student_layers) == (6, 12)
  assert tuple(config.align.teacher_layers) == (12, 24)
  assert config.align.method == "serial" and config.teacher.variant == "L/16x2"


def test_parse_arg_refuses_unknowns():
  with pytest.raises(ValueError, match="unknown config argument 'dta'"):
    common.parse_arg("dta=k400", data=("k400", "ssv2"))
  with pytest.raises(ValueError, match="choose from k400|ssv2"):
    common.parse_arg("data=k700", data=("k400", "ssv2"))
  assert common.parse_arg("runlocal", data=("k400",), runlocal=False).runlocal is True


def _every_config():
  """Every config file with each of its columns, its runlocal form and AVA."""
  for name in CONFIGS:
    for arg in COLUMNS[name] + (["runlocal"] if name != "image" else []):
      yield name, arg
  yield "transfer", "data=ava"
  yield "transfer", "data=ava,runlocal"


def test_every_config_key_has_a_meaning_and_every_meaning_a_key():
  """--print_config and config.txt say what each key means: a new key without a line
  in configs/common.py MEANINGS, or a line for a key that is gone, fails here."""
  seen = set()
  for name, arg in _every_config():
    keys = config_files.keys(config_files.load(name, arg))
    missing = [k for k in keys if k not in common.MEANINGS]
    assert not missing, f"{name}:{arg}: no meaning for {missing}"
    seen.update(keys)
  assert set(common.MEANINGS) == seen


def _main(*args):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, "-m", "amd_jax.main", *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=120)


def test_help_exits_0_and_says_how_to_list_the_keys():
  proc = _main("--help")
  assert proc.returncode == 0 and "--print_config" in proc.stdout and not proc.stderr


def test_print_config_lists_every_key_with_its_value_and_meaning_without_a_workdir():
  proc = _main("--config=configs/pretrain.py:runlocal", "--config.batch_size=16",
               "--print_config")
  assert proc.returncode == 0, proc.stderr
  lines = proc.stdout.splitlines()
  keys = config_files.keys(config_files.load("pretrain", "runlocal"))
  assert [line.split(" = ")[0] for line in lines] == keys
  batch = next(line for line in lines if line.startswith("batch_size = "))
  assert batch.startswith("batch_size = 16 ") and batch.endswith(
      "# " + common.MEANINGS["batch_size"])


def test_an_unknown_key_names_the_nearest_known_ones():
  proc = _main("--config=configs/pretrain.py:runlocal", "--workdir=unused",
               "--config.optim.base_lrr=1")
  assert proc.returncode == 2
  assert proc.stderr.strip() == ("error: unknown config key 'optim.base_lrr' (did you mean "
                                 "optim.base_lr?)")
  assert not os.path.exists(os.path.join(ROOT, "unused"))
  proc = _main("--config=configs/pretrain.py:runlocal")
  assert proc.returncode == 2 and proc.stderr.strip() == (
      "error: --workdir is required (or --print_config to list the config's keys)")


def test_a_run_writes_its_config_with_meanings_beside_config_json(reference):
  with open(os.path.join(reference, "config.txt")) as f:
    text = f.read()
  assert "batch_size = 8 " in text and common.MEANINGS["optim.base_lr"] in text


@pytest.mark.parametrize("name, arg, refused", [
    ("pretrain", "runlocal,model=S", "model=S"),
    ("pretrain", "data=ssv2,runlocal", "data=ssv2"),
    ("pretrain", "runlocal,data=k400,model=B", "data=k400 and model=B"),
    ("videomae", "runlocal,model=L", "model=L"),
    ("finetune", "data=k400,runlocal", "data=k400"),
    ("transfer", "data=ucf101,runlocal", "data=ucf101"),
    ("transfer", "data=hmdb51,runlocal", "data=hmdb51"),
    ("transfer", "data=ava,runlocal,model=B", "model=B"),
    ("pretrain", "runlocal,backend=gpu", None),
    ("videomae", "runlocal,backend=tpu", None),
    ("finetune", "runlocal", None),
    ("transfer", "runlocal", None),
    ("transfer", "data=ava,runlocal", None),
    ("transfer", "data=ucf101,model=S", None),
])
def test_runlocal_refuses_the_arguments_it_would_replace(name, arg, refused):
  """runlocal picks the data and the model: an explicit one beside it was silently
  replaced (a user's ucf101 became moving_digits); now the pair is refused."""
  if refused is None:
    config_files.load(name, arg)
    return
  with pytest.raises(ValueError, match=f"runlocal picks its own .*: drop {refused}, or drop "
                                       "runlocal"):
    config_files.load(name, arg)


def test_runlocal_clash_is_one_line_on_the_command_line():
  proc = _main("--config=configs/transfer.py:data=ucf101,runlocal", "--workdir=unused",
               "--config.data.data_dir=MINE")
  assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
  assert proc.stderr.strip().endswith("runlocal picks its own data (moving_digits): drop "
                                      "data=ucf101, or drop runlocal"), proc.stderr


# Refuses `configs` to the import system, as a venv installed since setup.cfg installs
# amd_jax alone does (an older development install may still map it): the package
# must come from config_files.
_NO_INSTALLED_CONFIGS = """
import runpy, sys
class NotInstalled:
  def find_spec(self, name, path=None, target=None):
    if name == "configs":
      raise ModuleNotFoundError("No module named 'configs'", name=name)
sys.meta_path.insert(0, NotInstalled())
"""


def _elsewhere(cwd, code: str):
  """Python `code` run in `cwd`, with no `configs` but the one config_files makes."""
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
  return subprocess.run([sys.executable, "-c", _NO_INSTALLED_CONFIGS + code], cwd=cwd, env=env,
                        capture_output=True, text=True, timeout=120)


def _main_elsewhere(cwd, *args):
  return _elsewhere(cwd, f"sys.argv = ['amd_jax.main', *{list(args)!r}]\n"
                         "runpy.run_module('amd_jax.main', run_name='__main__')\n")


def test_config_files_load_from_another_directory(tmp_path):
  """By absolute path on the command line (videomae.py imports pretrain and common),
  and by name through the library."""
  proc = _main_elsewhere(tmp_path, f"--config={ROOT}/configs/videomae.py:runlocal",
                         "--print_config")
  assert proc.returncode == 0, proc.stderr
  assert "batch_size = 8 " in proc.stdout
  proc = _elsewhere(tmp_path, "from amd_jax import config_files\n"
                              "print(config_files.load('finetune', 'runlocal').mode)\n")
  assert proc.returncode == 0 and proc.stdout.split() == ["finetune"], proc.stderr


def test_configs_is_the_config_files_folder_else_the_repositorys(tmp_path):
  """A copy of configs/ imports its own siblings; a config file of one's own, alone in
  its folder, imports the repository's."""
  shutil.copytree(os.path.join(ROOT, "configs"), tmp_path / "copied",
                  ignore=shutil.ignore_patterns("__pycache__"))
  (tmp_path / "own").mkdir()
  which = ("import os\n\nimport ml_collections\n\nfrom configs import common\n\n\n"
           "def get_config():\n"
           "  folder = os.path.basename(os.path.dirname(common.__file__))\n"
           "  return ml_collections.ConfigDict(dict(folder=folder))\n")
  for folder, expected in (("copied", "copied"), ("own", "configs")):
    (tmp_path / folder / "which.py").write_text(which)
    proc = _main_elsewhere(tmp_path, f"--config={folder}/which.py", "--print_config")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("#")[0].strip() == f"folder = {expected!r}"
