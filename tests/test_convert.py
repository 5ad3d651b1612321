"""Checkpoint conversion (amd_jax.convert) and loading (amd_jax.pretrained).

Parity, tiny and ViT-S-sized (ViT-S width/depth/heads and decoder on 4-frame
64² clips, 32 tokens, so it runs in seconds on a CPU): HF models with seeded
random weights (torch_reference.randomize) are saved with `save_pretrained` and
loaded with `pretrained.load`; their outputs must match HF's to RTOL of the
outputs' scale. The same weights are then exported as an official-layout
`.pth`, loaded strictly into the official modules re-stated in
torch_reference (which checks every name and shape), and our model loaded from
that `.pth` must match the official forward. Round trips must be bit-identical.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from transformers import VideoMAEForPreTraining, VideoMAEForVideoClassification

import runs
import torch_reference as ref
from amd_jax import checkpoint, config_files, convert, errors, masking, pretrained
from amd_jax.convert import __main__ as cli
from amd_jax.convert import spec as spec_lib
from amd_jax.models import saved, vit

RTOL = 1e-5
CASES = {
    "tiny": dict(size=32, frames=4, patch=8, width=64, depth=2, heads=2, dec_width=32,
                 dec_depth=2, dec_heads=2),
    "vit_s": dict(size=64, frames=4, patch=16, width=384, depth=12, heads=6, dec_width=192,
                  dec_depth=4, dec_heads=3),
}
CLASSES = 7


def clip(case: dict, seed: int = 0):
  """A normalised-looking clip: ours (B, T, H, W, C) and torch's (B, T, C, H, W)."""
  x = np.random.default_rng(seed).standard_normal(
      (2, case["frames"], case["size"], case["size"], 3)).astype(np.float32)
  return jnp.asarray(x), torch.from_numpy(x.transpose(0, 1, 4, 2, 3).copy())


def ratio(ours, reference, what: str) -> float:
  """max |ours − ref| / max |ref|, printed (the parity numbers) and checked."""
  ours = np.asarray(ours)
  reference = reference.detach().numpy() if isinstance(reference, torch.Tensor) else reference
  assert ours.shape == reference.shape, (what, ours.shape, reference.shape)
  r = float(np.max(np.abs(ours - reference)) / np.max(np.abs(reference)))
  print(f"{what}: max abs diff / max |ref| = {r:.1e}")
  assert r <= RTOL, (what, r)
  return r


def forward(model: nnx.Module, *args):
  """model(*args) compiled as one program (eagerly, every operation compiles apart)."""
  return nnx.jit(lambda m: m(*args))(model)


def official_options(case: dict) -> dict:
  """What a .pth cannot say: the clip, and the heads where they are not the standard ones."""
  return dict(num_frames=case["frames"], image_size=case["size"], heads=case["heads"],
              decoder_heads=case["dec_heads"])


def tube_mask(case: dict, seed: int):
  grid = vit.token_grid(case["frames"], case["size"], case["patch"], 2)
  rng = np.random.default_rng(seed)
  codes = np.stack([masking.tube_mask(rng, grid, 0.75) for _ in range(2)])
  idx = masking.indices(jnp.asarray(codes), masking.tube_counts(grid, 0.75))
  return idx, torch.from_numpy(codes != masking.STUDENT)


def save_hf(model, folder) -> str:
  model.save_pretrained(str(folder))
  return str(folder)


# ----------------------------------------------------------------- parity
@pytest.mark.parametrize("name", CASES)
def test_classifier_parity_hf_and_official(name, tmp_path):
  case = CASES[name]
  video, pixels = clip(case)
  hf = ref.randomize(VideoMAEForVideoClassification(
      ref.hf_config(**case, use_mean_pooling=True, num_labels=CLASSES)), seed=1)
  folder = save_hf(hf, tmp_path / "hf")
  with torch.no_grad():
    expected = hf(pixels).logits
  ratio(forward(pretrained.load(folder), video), expected, f"{name} classifier vs HF")

  pth = str(tmp_path / "official.pth")
  convert.convert(folder, pth, progress=False)
  official = ref.FinetuneVit(case["width"], case["depth"], case["heads"], case["patch"], CLASSES)
  official.load_state_dict(torch.load(pth, weights_only=True)["model"], strict=True)
  with torch.no_grad():
    expected = official.eval()(pixels.transpose(1, 2))
  model = pretrained.load(pth, **official_options(case))
  assert model.fc_norm.epsilon == 1e-6        # the official eps, not HF's 1e-5
  ratio(forward(model, video), expected, f"{name} classifier vs official .pth")


@pytest.mark.parametrize("name", CASES)
def test_pretrainer_parity_hf_and_official(name, tmp_path):
  case = CASES[name]
  video, pixels = clip(case)
  idx, bool_masked = tube_mask(case, seed=2)
  hf = ref.randomize(VideoMAEForPreTraining(ref.hf_config(**case, use_mean_pooling=False)),
                     seed=3)
  folder = save_hf(hf, tmp_path / "hf")
  with torch.no_grad():
    expected = hf(pixels, bool_masked_pos=bool_masked).logits
    features = hf.videomae(pixels, bool_masked_pos=bool_masked).last_hidden_state
  # Pixels of the masked tokens, and the encoder's features of the visible ones
  # (after its final norm), in one compiled program.
  pred, ours = nnx.jit(lambda m: (m(video, idx)["pred"], m.encoder(video, idx.student)[0]))(
      pretrained.load(folder))
  ratio(pred, expected, f"{name} pre-training decoder vs HF")
  ratio(ours, features, f"{name} pre-training encoder vs HF")

  pth = str(tmp_path / "official.pth")
  convert.convert(folder, pth, progress=False)
  official = ref.PretrainVit(case["width"], case["depth"], case["heads"], case["patch"],
                             case["dec_width"], case["dec_depth"], case["dec_heads"])
  official.load_state_dict(torch.load(pth, weights_only=True)["model"], strict=True)
  with torch.no_grad():
    expected = official.eval()(pixels.transpose(1, 2), bool_masked)
  ratio(forward(pretrained.load(pth, **official_options(case)), video, idx)["pred"], expected,
        f"{name} pre-training decoder vs official .pth")


def test_deepspeed_folder_and_official_wrappers(tmp_path):
  """The same weights under 'module' in a DeepSpeed folder (with the official `args`),
  under 'model' with a `backbone.` prefix, or as a raw state dict: the same logits."""
  case = CASES["tiny"]
  video, _ = clip(case)
  official = ref.FinetuneVit(case["width"], case["depth"], case["heads"], case["patch"], CLASSES)
  sd = ref.randomize(official, seed=4).state_dict()
  ds = tmp_path / "ds" / "global_step10"
  ds.mkdir(parents=True)
  (tmp_path / "ds" / "latest").write_text("global_step10")
  args = argparse.Namespace(model="vit_small_patch16_224", lr=1e-3)
  torch.save({"module": sd, "args": args, "epoch": 9}, ds / "mp_rank_00_model_states.pt")
  torch.save({"model": {f"backbone.{k}": v for k, v in sd.items()}}, tmp_path / "b.pth")
  torch.save(sd, tmp_path / "raw.pth")
  opts = official_options(case)
  logits = [forward(pretrained.load(str(p), **opts), video)
            for p in (tmp_path / "ds", tmp_path / "b.pth", tmp_path / "raw.pth")]
  with torch.no_grad():
    expected = official(clip(case)[1].transpose(1, 2))
  for got in logits:
    ratio(got, expected, "wrapped official checkpoint")


# ----------------------------------------------------------------- round trips
def _same(a: str, b: str, what: str) -> None:
  spec_a, wa = convert.read(a)
  spec_b, wb = convert.read(b)
  assert spec_a == spec_b, what
  assert sorted(wa) == sorted(wb), what
  for k in wa:
    assert wa[k].dtype == wb[k].dtype == np.float32
    np.testing.assert_array_equal(wa[k], wb[k], err_msg=f"{what}: {k}")


@pytest.mark.parametrize("task", ["classifier", "pretrainer"])
def test_round_trip_orbax_hf_orbax(task, tmp_path):
  case = CASES["tiny"]
  cls = VideoMAEForVideoClassification if task == "classifier" else VideoMAEForPreTraining
  config = ref.hf_config(**case, use_mean_pooling=task == "classifier", num_labels=CLASSES)
  hf = ref.randomize(cls(config), seed=5)
  a, b, c = (str(tmp_path / n) for n in ("a", "b_hf", "c"))
  convert.convert(save_hf(hf, tmp_path / "hf"), a, progress=False)
  convert.convert(a, b, to="hf", progress=False)
  convert.convert(b, c, progress=False)
  _same(a, c, "orbax → HF → orbax")
  # transformers itself reads the exported folder (hub names: q_bias/v_bias) exactly.
  back = cls.from_pretrained(b).eval()
  for (k, v), (k2, v2) in zip(hf.state_dict().items(), back.state_dict().items(), strict=True):
    assert k == k2 and torch.equal(v, v2), k


@pytest.fixture(scope="module")
def amd_student(tmp_path_factory) -> str:
  """An AMD pre-training checkpoint in the official layout (docs/method.md#official-layout), with
  the generator norms the official code saves and never uses, and its `args`."""
  tmp_path = tmp_path_factory.mktemp("amd")
  student, teacher = vit.decode_variant("Mu/8x2"), vit.decode_variant("Ti/8x2")
  align = dict(method="serial", student_layers=[1, 3], generator_depth=2,
               learnable_mask_tokens=False, teacher_width=teacher.width)
  spec = spec_lib.ModelSpec(task="pretrainer", variant=student, num_frames=4, image_size=(32, 32),
                            norm_eps=1e-6, decoder_norm_eps=1e-6, decoder_depth=2, align=align)
  rng = np.random.default_rng(9)
  weights = {k: rng.standard_normal(shape).astype(np.float32)
             for k, shape in spec.shapes().items()}
  orbax = str(tmp_path / "ours")
  convert.writers.write_orbax(orbax, spec, weights, source="test")
  exported = str(tmp_path / "exported.pth")
  convert.convert(orbax, exported, progress=False)
  sd = torch.load(exported, weights_only=True)["model"]
  assert tuple(sd["encoder.projection_heads.1.weight"].shape) == (192, 64)
  assert tuple(sd["generators.0.blocks.1.attn.qkv.weight"].shape) == (576, 192)
  assert tuple(sd["mask_token"].shape) == (1, 1, 32)
  for k in range(2):
    sd[f"generators.{k}.norm.weight"], sd[f"generators.{k}.norm.bias"] = (
        torch.ones(192), torch.zeros(192))
  path = str(tmp_path / "amd.pth")
  torch.save({"model": sd, "args": official_args(), "epoch": 799}, path)
  return path


def official_args(**layers) -> argparse.Namespace:
  """The official pre-training script's arguments as it saves them (the aligned layers
  1, 3 of the student's 4 blocks and 6, 12 of the teacher's), `layers` overriding."""
  return argparse.Namespace(**{
      "generator_depth": 2, "student_layer_direct_align": [1, 3],
      "student_layer_gen_align": [1, 3], "teacher_layer_direct_align": [6, 12],
      "teacher_layer_gen_align": [6, 12], **layers})


def test_amd_official_checkpoint(amd_student, caplog):
  path = amd_student
  with caplog.at_level(logging.INFO, logger="amd_jax"):
    model = pretrained.load(path, num_frames=4, image_size=32)
  assert "generators.0.norm.weight" in caplog.text and "never uses" in caplog.text
  assert "drawn anew" in caplog.text
  align = model.alignment
  # From the args: the tensors only say there are two (evenly spaced would be 2, 4).
  assert align.method == "serial" and model.student_layers == (1, 3)
  assert isinstance(align.generators[0].mask_token, nnx.Variable)
  assert not isinstance(align.generators[0].mask_token, nnx.Param)   # frozen, as officially
  sd = convert.readers.torch_load(path)["model"]
  np.testing.assert_array_equal(np.asarray(align.projection_heads[0].kernel[...]),
                                sd["encoder.projection_heads.0.weight"].numpy().T)


@pytest.mark.parametrize("source", ["classifier", "amd"])
def test_round_trip_orbax_pth_orbax(source, tmp_path, amd_student):
  if source == "amd":
    pth = amd_student
  else:
    case = CASES["tiny"]
    pth = str(tmp_path / "ft.pth")
    official = ref.FinetuneVit(case["width"], case["depth"], case["heads"], case["patch"],
                               CLASSES)
    torch.save({"model": ref.randomize(official, seed=6).state_dict()}, pth)
  a, b, c = (str(tmp_path / n) for n in ("a", "b.pth", "c"))
  convert.convert(pth, a, progress=False)
  convert.convert(a, b, progress=False)
  convert.convert(b, c, progress=False)
  # Generator mask tokens are not stored in a .pth; each import draws the same ones.
  _same(a, c, "orbax → .pth → orbax")


def test_amd_student_layers_come_from_args_or_the_flag(amd_student, tmp_path):
  """Without layers in its args an AMD .pth is refused, naming the flag; the flag
  names them (over the args), and must fit the checkpoint's heads and blocks."""
  sd = convert.readers.torch_load(amd_student)["model"]
  bare = str(tmp_path / "bare.pth")
  torch.save({"model": sd, "args": official_args(student_layer_direct_align=None,
                                                 student_layer_gen_align=None)}, bare)
  result = convert_cli("--src", bare, "--dst", tmp_path / "refused", "--frames", 4,
                       "--size", 32)
  lines = [l for l in result.stderr.splitlines() if l.strip()]
  assert result.returncode == 2 and len(lines) == 1, result.stderr[-3000:]
  assert lines[0].startswith("error: the checkpoint has alignment heads for 2 student layer")
  assert "--student_layers" in lines[0] and not (tmp_path / "refused").exists()
  result = convert_cli("--src", bare, "--dst", tmp_path / "ok", "--frames", 4, "--size", 32,
                       "--student_layers", "2,3", "--no_progress")
  assert result.returncode == 0, result.stderr[-3000:]
  spec = json.loads((tmp_path / "ok" / "model.json").read_text())
  assert spec["align"]["student_layers"] == [2, 3]
  assert convert.read(amd_student, student_layers=(2, 4))[0].align["student_layers"] == [2, 4]
  for layers, why in (((2,), "heads for 2 layer"), ((1, 5), "student's 1..4"),
                      ((3, 3), "different block")):
    with pytest.raises(errors.BadInput, match=why):
      convert.read(bare, student_layers=layers)
  mixed = str(tmp_path / "mixed.pth")
  torch.save({"model": sd, "args": official_args(student_layer_gen_align=[2, 4])}, mixed)
  with pytest.raises(errors.BadInput, match=r"\[1, 3\] directly and \[2, 4\] by generation"):
    convert.read(mixed)


# ----------------------------------------------------------------- bad input
class Hostile:
  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return (os.system, (f"touch {self.marker}",))


def test_hostile_pickle_is_refused_and_never_runs(tmp_path):
  marker = tmp_path / "executed"
  path = tmp_path / "evil.pth"
  torch.save({"model": {"w": torch.zeros(2)}, "payload": Hostile(marker)}, path)
  with pytest.raises(errors.BadInput, match="refused.*system.*nothing in it was executed"):
    convert.read(str(path))
  result = subprocess.run([sys.executable, "-m", "amd_jax.convert", "--src", str(path),
                           "--dst", str(tmp_path / "out")], cwd=runs.ROOT,
                          capture_output=True, text=True, timeout=120)
  assert result.returncode == 2
  lines = [l for l in result.stderr.splitlines() if l.strip()]
  assert len(lines) == 1 and lines[0].startswith("error:") and "refused" in lines[0], lines
  assert not marker.exists() and not (tmp_path / "out").exists()


def convert_cli(*args, cwd=runs.ROOT):
  return subprocess.run([sys.executable, "-m", "amd_jax.convert", *map(str, args)], cwd=cwd,
                        capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("content, dst, culprit", [
    (b"\x09" * 64, "out", "not a PyTorch checkpoint"),      # no pickle at all, runs nothing
    (b"plain text, no checkpoint\n", "out", "not a PyTorch checkpoint"),
    (None, "a_file/out", "a_file is a file"),
])
def test_cli_bad_input_is_one_line(tmp_path, content, dst, culprit):
  src = tmp_path / "src.pth"
  if content is None:
    torch.save({"model": {"w": torch.zeros(2)}}, src)
    (tmp_path / "a_file").write_text("x")
  else:
    src.write_bytes(content)
  result = convert_cli("--src", src, "--dst", tmp_path / dst)
  lines = [l for l in result.stderr.splitlines() if l.strip()]
  assert result.returncode == 2 and len(lines) == 1, result.stderr
  assert lines[0].startswith("error:") and culprit in lines[0] and "would run" not in lines[0]


def test_cli_makes_the_missing_folders_of_dst_and_refuses_a_file_above_it(tmp_path):
  """--dst is checked before the source is read: its missing folders are made (torch.save
  alone would fail after the conversion), a file on its way is one line."""
  teacher = os.path.join(runs.ROOT, "amd_jax", "proj", "study", "teacher", "checkpoint")
  result = convert_cli("--src", teacher, "--dst", "missing_dir/x.pth", "--no_progress",
                       cwd=tmp_path)
  assert result.returncode == 0, result.stderr[-3000:]
  assert (tmp_path / "missing_dir" / "x.pth").is_file()
  (tmp_path / "a_file").write_text("x")
  for dst in ("a_file/x.pth", "a_file/sub/orbax"):
    result = convert_cli("--src", teacher, "--dst", dst, "--no_progress", cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.splitlines() == [
        f"error: --dst {dst} cannot be created: Not a directory ({tmp_path / 'a_file'} is a "
        "file): give a path under a folder"]       # before the source is read: no log line


def _tiny_classifier_folder(tmp_path) -> str:
  hf = ref.randomize(VideoMAEForVideoClassification(
      ref.hf_config(**CASES["tiny"], num_labels=CLASSES)), seed=7)
  return save_hf(hf, tmp_path / "hf")


def test_truncated_files_are_a_clear_error(tmp_path):
  folder = _tiny_classifier_folder(tmp_path)
  pth = str(tmp_path / "x.pth")
  convert.convert(folder, pth, progress=False)
  data = open(pth, "rb").read()
  open(pth, "wb").write(data[: len(data) // 2])
  with pytest.raises(errors.BadInput, match="truncated or not a PyTorch checkpoint"):
    convert.read(pth)
  weights = os.path.join(folder, "model.safetensors")
  data = open(weights, "rb").read()
  open(weights, "wb").write(data[: len(data) // 2])
  with pytest.raises(errors.BadInput, match="truncated or not safetensors"):
    convert.read(folder)


def test_mismatched_checkpoints_are_a_clear_error(tmp_path):
  folder = _tiny_classifier_folder(tmp_path)
  # A config.json that belongs to another model.
  config = os.path.join(folder, "config.json")
  text = open(config).read()
  open(config, "w").write(text.replace('"num_hidden_layers": 2', '"num_hidden_layers": 3'))
  with pytest.raises(errors.BadInput, match="config says depth 3 but the weights have 2"):
    pretrained.load(folder)
  open(config, "w").write(text)
  # A missing tensor and a foreign one are named in the official layout.
  pth = str(tmp_path / "x.pth")
  convert.convert(folder, pth, progress=False)
  sd = torch.load(pth, weights_only=True)["model"]
  torch.save({"model": {k: v for k, v in sd.items() if k != "blocks.1.mlp.fc2.bias"}},
             tmp_path / "missing.pth")
  with pytest.raises(errors.BadInput, match=r"lacks blocks\.1\.mlp\.fc2\.bias"):
    convert.read(str(tmp_path / "missing.pth"))
  torch.save({"model": {**sd, "blocks.0.attn.relative_bias": torch.zeros(3)}},
             tmp_path / "foreign.pth")
  with pytest.raises(errors.BadInput, match=r"no rule maps blocks\.0\.attn\.relative_bias"):
    convert.read(str(tmp_path / "foreign.pth"))
  # A teacher of the wrong size, named on both sides.
  target = nnx.state(nnx.eval_shape(lambda: vit.Encoder(
      vit.decode_variant("Ti/8x2"), num_frames=4, image_size=32, final_norm=False,
      rngs=nnx.Rngs(0))), nnx.Param)
  with pytest.raises(errors.BadInput, match="its encoder has width 64, depth 2.*the config's "
                     "teacher needs width 192, depth 12"):
    pretrained.load_encoder(pth, target, (16, 224))
  with pytest.raises(errors.BadInput, match="does not exist"):
    convert.read(str(tmp_path / "nothing.pth"))


def test_cli_and_core_without_torch(tmp_path, capsys):
  folder = _tiny_classifier_folder(tmp_path)
  out = str(tmp_path / "converted")
  assert cli.main(["--src", folder, "--dst", out]) == 0
  assert "converting" in capsys.readouterr().err          # the progress bar
  assert sorted(os.listdir(out)) == ["model.json", "params"]
  assert cli.main(["--src", folder, "--dst", out]) == 2   # DST exists
  assert "exists" in capsys.readouterr().err
  # The core package, and loading a converted checkpoint, need neither torch nor
  # transformers nor safetensors; reading a .pth without torch says what to install.
  code = (f"import sys\nfor m in ('torch', 'transformers', 'safetensors'): sys.modules[m] = None\n"
          f"from amd_jax import pretrained, train, convert, errors\n"
          f"print(pretrained.load({out!r})(__import__('numpy').zeros((1, 4, 32, 32, 3))).shape)\n"
          f"try:\n  convert.read({str(tmp_path / 'none.pth')!r}, kind='pth')\n"
          f"except errors.BadInput as e:\n  print(e)\n")
  (tmp_path / "none.pth").write_bytes(b"x")
  result = subprocess.run([sys.executable, "-c", code], cwd=runs.ROOT, capture_output=True,
                          text=True, timeout=120)
  assert result.returncode == 0, result.stderr[-2000:]
  assert f"(1, {CLASSES})" in result.stdout and "needs torch" in result.stdout, result.stdout


# ----------------------------------------------------------------- teachers
def test_load_encoder_from_any_kind(tmp_path):
  """The encoder of an HF pre-training folder, its .pth and its orbax conversion fill a
  teacher (no final norm) identically."""
  case = CASES["tiny"]
  hf = ref.randomize(VideoMAEForPreTraining(ref.hf_config(**case, use_mean_pooling=False)),
                     seed=8)
  folder = save_hf(hf, tmp_path / "hf")
  pth, orbax = str(tmp_path / "x.pth"), str(tmp_path / "x")
  convert.convert(folder, pth, progress=False)
  convert.convert(folder, orbax, progress=False)
  variant = dataclasses.replace(vit.decode_variant("Mu/8x2"), depth=2)
  target = nnx.state(nnx.eval_shape(lambda: vit.Encoder(
      variant, num_frames=4, image_size=32, final_norm=False, rngs=nnx.Rngs(0))), nnx.Param)
  loaded = [spec_lib.flatten(pretrained.load_encoder(p, target, (16, 224))[0])
            for p in (folder, pth, orbax)]
  assert "norm/scale" not in loaded[0]
  # The source's block epsilon comes along, for the teacher to be built with it.
  assert pretrained.load_encoder(folder, target, (16, 224))[1] == hf.config.layer_norm_eps
  expected = hf.videomae.encoder.layer[1].output.dense.weight.detach().numpy().T
  for weights in loaded:
    np.testing.assert_array_equal(weights["blocks/layers/1/mlp/fc2/kernel"], expected)
    for k in weights:
      np.testing.assert_array_equal(weights[k], loaded[0][k])
  # pretrained.load's encoder keeps the final norm (token features, as HF's VideoMAEModel).
  encoder = pretrained.load(orbax, part="encoder")
  assert isinstance(encoder, vit.Encoder) and encoder.norm.epsilon == hf.videomae.layernorm.eps
  np.testing.assert_array_equal(encoder.norm.scale[...],
                                hf.videomae.layernorm.weight.detach().numpy())


def test_a_teacher_pth_without_saved_args_takes_the_configs_clip(tmp_path, caplog):
  """A teacher's clip is the config's: loading one from a .pth that saves no args
  says nothing about assumed sizes (a convert of it would)."""
  hf = ref.randomize(VideoMAEForPreTraining(ref.hf_config(**CASES["tiny"],
                                                          use_mean_pooling=False)), seed=8)
  pth = str(tmp_path / "x.pth")
  convert.convert(save_hf(hf, tmp_path / "hf"), pth, progress=False)
  saved = torch.load(pth, weights_only=True)
  torch.save({"model": saved["model"]}, pth)              # as a .pth without args
  variant = dataclasses.replace(vit.decode_variant("Mu/8x2"), depth=2)
  target = nnx.state(nnx.eval_shape(lambda: vit.Encoder(
      variant, num_frames=4, image_size=32, final_norm=False, rngs=nnx.Rngs(0))), nnx.Param)
  with caplog.at_level(logging.WARNING, logger="amd_jax"):
    pretrained.load_encoder(pth, target, (4, 32))
  assert "does not say" not in caplog.text
  with caplog.at_level(logging.WARNING, logger="amd_jax"):
    convert.read(pth)
  assert "does not say its clip" in caplog.text


@pytest.mark.slow
def test_converted_vit_b_teacher_in_an_amd_run(tmp_path, env):
  """An official VideoMAE ViT-B pre-training .pth (random weights, patch 8 for the
  runlocal clips), converted to orbax, is the teacher of a runlocal AMD run (one
  aligned pair and a one-block generator keep the compilation short)."""
  teacher = ref.PretrainVit(768, 12, 12, 8, 384, 4, 6)
  pth = str(tmp_path / "videomae_b.pth")
  torch.save({"model": teacher.state_dict(), "args": argparse.Namespace(model="pretrain_b")},
             pth)
  del teacher
  converted = str(tmp_path / "teacher")
  assert cli.main(["--src", pth, "--dst", converted, "--part", "encoder", "--frames", "8",
                   "--size", "64", "--no_progress"]) == 0
  result = runs.run(str(tmp_path / "run"), env, extra=[
      "--config.teacher.variant=B/8x2", "--config.align.student_layers=(4,)",
      "--config.align.teacher_layers=(12,)", "--config.align.generator_depth=1",
      f"--config.teacher.init={converted}", "--config.optim.epochs=1"])
  assert result.returncode == 0, result.stderr[-3000:]
  assert f"teacher B/8x2 loaded from {converted}" in result.stderr
  assert "width 768, depth 12, heads 12, patch 8, tubelet 2" in result.stderr


def test_the_released_teacher_loads_from_its_folder_and_says_how_it_fits():
  """amd_jax/proj/study/teacher (the folder the README names: card.json beside checkpoint/)
  reads as its checkpoint; a config whose teacher differs is told the variant to set."""
  release = os.path.join(runs.ROOT, "amd_jax", "proj", "study", "teacher")
  spec, weights = convert.read(release, part="encoder")
  inner_spec, inner = convert.read(os.path.join(release, "checkpoint"), part="encoder")
  assert spec == inner_spec and weights.keys() == inner.keys()
  assert all(np.array_equal(weights[k], inner[k]) for k in weights)
  target = nnx.state(nnx.eval_shape(lambda: vit.Encoder(
      vit.decode_variant("Ti/8x2"), num_frames=8, image_size=64, final_norm=False,
      rngs=nnx.Rngs(0))), nnx.Param)
  with pytest.raises(errors.BadInput, match=r"set --config.teacher.variant=Mi/8x2 and "
                     r"align.teacher_layers within its 8 blocks$"):
    pretrained.load_encoder(release, target, (8, 64))
  target = nnx.state(nnx.eval_shape(lambda: vit.Encoder(
      vit.decode_variant("Mi/8x2"), num_frames=8, image_size=64, final_norm=False,
      rngs=nnx.Rngs(0))), nnx.Param)
  loaded, ln_eps = pretrained.load_encoder(release, target, (8, 64))
  assert ln_eps == 1e-6 and spec_lib.flatten(loaded).keys() == spec_lib.flatten(target).keys()


# ----------------------------------------------------------------- the clip of a .pth
def _tiny_official(tmp_path, name: str, **saved) -> str:
  """The tiny fine-tuned ViT's official state dict as a .pth, with what else `saved` holds."""
  case = CASES["tiny"]
  official = ref.FinetuneVit(case["width"], case["depth"], case["heads"], case["patch"], CLASSES)
  path = str(tmp_path / name)
  torch.save({"model": ref.randomize(official, seed=10).state_dict(), **saved}, path)
  return path


def _clip(folder) -> tuple[int, list[int]]:
  spec = json.loads((folder / "model.json").read_text())
  return spec["num_frames"], spec["image_size"]


def test_a_pth_clip_comes_from_its_saved_args_or_is_said_in_one_line(tmp_path):
  """The official scripts save their arguments (num_frames, input_size; a fine-tuning's
  clip is num_frames × num_segments frames): the converted model is built for that
  clip without --frames/--size. A .pth without them is converted for 16 frames of 224²
  and one line says so; --frames/--size (and a .pth we wrote) need no such line."""
  with_args = _tiny_official(tmp_path, "args.pth", args=argparse.Namespace(
      num_frames=4, num_segments=1, input_size=32, tubelet_size=2, model="vit_tiny"))
  result = convert_cli("--src", with_args, "--dst", tmp_path / "a", "--no_progress")
  assert result.returncode == 0, result.stderr[-3000:]
  assert _clip(tmp_path / "a") == (4, [32, 32]) and "assumed" not in result.stderr
  segments = _tiny_official(tmp_path, "segments.pth", args=argparse.Namespace(
      num_frames=4, num_segments=2, input_size=48))
  assert convert.read(segments)[0].num_frames == 8
  assert convert.read(segments)[0].image_size == (48, 48)

  bare = _tiny_official(tmp_path, "bare.pth")
  result = convert_cli("--src", bare, "--dst", tmp_path / "b", "--no_progress")
  assert result.returncode == 0, result.stderr[-3000:]
  assert _clip(tmp_path / "b") == (16, [224, 224])
  said = [l for l in result.stderr.splitlines() if "assumed" in l]
  assert said == [f"{bare} does not say its clip (no num_frames or input_size in saved args): "
                  "assumed 16 frames of 224×224; set them with --frames/--size "
                  "(pretrained.load: num_frames=/image_size=)"], result.stderr
  result = convert_cli("--src", bare, "--dst", tmp_path / "c", "--frames", 4, "--size", 32,
                       "--no_progress")
  assert result.returncode == 0 and "assumed" not in result.stderr, result.stderr[-3000:]
  assert _clip(tmp_path / "c") == (4, [32, 32])
  partial = _tiny_official(tmp_path, "frames_only.pth", args={"num_frames": 4})
  result = convert_cli("--src", partial, "--dst", tmp_path / "d", "--no_progress")
  assert _clip(tmp_path / "d") == (4, [224, 224])
  assert [l for l in result.stderr.splitlines() if "assumed" in l] == [
      f"{partial} does not say its image size (no input_size in saved args): assumed "
      "224×224; set it with --size (pretrained.load: image_size=)"]
  garbled = _tiny_official(tmp_path, "garbled.pth", args={"num_frames": "eight"})
  with pytest.raises(errors.BadInput, match="its saved args have num_frames 'eight', "
                     "num_segments None, input_size None: not numbers of frames and pixels"):
    convert.read(garbled)
  # A .pth written here carries its clip (as the official args do) and reads back whole.
  exported = str(tmp_path / "exported.pth")
  convert.convert(str(tmp_path / "c"), exported, progress=False)
  result = convert_cli("--src", exported, "--dst", tmp_path / "e", "--no_progress")
  assert result.returncode == 0 and "assumed" not in result.stderr, result.stderr[-3000:]
  assert _clip(tmp_path / "e") == (4, [32, 32])


# ----------------------------------------------------------------- training workdirs
def _run(tmp_path, config: dict, spec: spec_lib.ModelSpec) -> str:
  """A training workdir as a run leaves it: config.json beside checkpoints/1/state,
  holding random weights of `spec` as the run's parameters."""
  workdir = tmp_path / "run"
  os.makedirs(workdir / "checkpoints" / "1")
  (workdir / "config.json").write_text(json.dumps(config))
  rng = np.random.default_rng(11)
  weights = {k: rng.standard_normal(shape).astype(np.float32)
             for k, shape in spec.shapes().items()}
  checkpoint.save_tree(workdir / "checkpoints" / "1" / "state",
                       {"params": spec_lib.unflatten(weights)})
  return str(workdir)


@pytest.mark.parametrize("name, arg, task", [
    ("pretrain", "", "pretrainer"), ("videomae", "", "pretrainer"),
    ("finetune", "", "classifier"), ("transfer", "data=ucf101", "classifier"),
    ("transfer", "data=ava", "detector")])
def test_a_runs_config_says_its_model_live_or_saved(name, arg, task):
  """models.saved reads a ConfigDict and its saved config.json alike."""
  config = config_files.load(name, *([arg] if arg else []))
  meta = saved.spec_meta(config)
  assert meta == saved.spec_meta(json.loads(config.to_json_best_effort()))
  assert meta["task"] == task and meta["num_frames"] == config.data.frames
  assert ("learnable_mask_tokens" in meta) == (config.mode == "amd")


def test_a_detection_run_is_refused_in_one_line(tmp_path):
  """No ModelSpec builds the AVA detector: its run is named as one, not read as a
  classifier whose weights happen to fit."""
  config = config_files.load("transfer", "data=ava")
  config.model.variant, config.data.frames, config.data.size = "Mu/8x2", 4, 32
  spec = spec_lib.ModelSpec(task="classifier", variant=vit.decode_variant("Mu/8x2"),
                            num_frames=4, image_size=(32, 32), num_classes=5, fc_norm_eps=1e-6)
  run = _run(tmp_path, json.loads(config.to_json_best_effort()), spec)
  for load in (convert.read, pretrained.load):
    with pytest.raises(errors.BadInput) as e:
      load(run)
    assert str(e.value) == (f"{run} is a detection run (model.head=detector): detector "
                            "checkpoints are not convertible (a converted model is an "
                            "encoder, a classifier or a pre-training model)")


@pytest.mark.parametrize("learnable", [True, False, None])
def test_an_amd_runs_mask_tokens_are_what_its_config_says(tmp_path, learnable):
  """align.learnable_mask_tokens as the run's config.json says; a config without it
  takes the pre-training config's default (frozen, as officially)."""
  config = config_files.load("pretrain", "runlocal")
  saved_config = json.loads(config.to_json_best_effort())
  if learnable is None:
    del saved_config["align"]["learnable_mask_tokens"]
  else:
    saved_config["align"]["learnable_mask_tokens"] = learnable
  align = dict(method="serial", student_layers=[2, 4], generator_depth=2,
               learnable_mask_tokens=bool(learnable),
               teacher_width=vit.decode_variant("Ti/8x2").width)
  spec = spec_lib.ModelSpec(task="pretrainer", variant=vit.decode_variant("Mu/8x2"),
                            num_frames=8, image_size=(64, 64), norm_eps=1e-6,
                            decoder_norm_eps=1e-6, decoder_depth=2, align=align)
  got = convert.read(_run(tmp_path, saved_config, spec))[0]
  assert got == spec
  assert got.align["learnable_mask_tokens"] is (config.align.learnable_mask_tokens
                                                if learnable is None else learnable)
