"""Every config loads (every column, and runlocal) and builds its models abstractly."""

import glob
import os

import pytest
from flax import nnx

from amd_jax import config_files, masking
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
  student = nnx.eval_shape(lambda: build.student(config, nnx.Rngs(0)))
  assert student.encoder.num_tokens == counts.tokens
  if amd:
    teacher = nnx.eval_shape(lambda: build.teacher(config, nnx.Rngs(0)))
    assert teacher.norm is None


@pytest.mark.parametrize("name, arg", [(n, a) for n in CONFIGS if n not in PRETRAINING
                                       for a in COLUMNS[n] + ["runlocal"] * (n != "image")])
def test_finetuning_config_builds_its_model(name, arg):
  config = config_files.load(name, arg)
  assert config.mode == "finetune" and config.batch_size % config.data.num_sample == 0
  model = nnx.eval_shape(lambda: build.model(config, nnx.Rngs(0)))
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
