"""Checkpoints by Hugging Face Hub repo id (amd_jax.hub), offline.

The suite makes the model: a tiny VideoMAE classifier written as a Hugging Face
folder by our own writer (writers.write_hf), then laid into a hub cache exactly
as huggingface_hub lays out a download (models--OWNER--NAME/{blobs, snapshots/
COMMIT, refs/main}; blobs named by their git or LFS hash, snapshot files as
relative links to them). huggingface_hub itself must read that cache back
(snapshot_download(local_files_only=True), scan_cache_dir) before anything else
trusts it. Loading by id must give the very weights loading the folder by path
gives: pretrained.load, `python -m amd_jax.convert --src`, and a fine-tuning
config's init (train.validate, pretrained.load_init, load_classifier).

In-process tests point huggingface_hub at the cache through its own settings
(constants.HF_HUB_CACHE and HF_HUB_OFFLINE, which it reads from the environment
once, at import); subprocesses get the environment variables themselves.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys

import huggingface_hub
import jax
import numpy as np
import pytest
from flax import nnx
from huggingface_hub import constants
from huggingface_hub.file_download import repo_folder_name
from huggingface_hub.utils.sha import git_hash

import runs
from amd_jax import convert, errors, hub, pretrained, sharding
from amd_jax import state as state_lib
from amd_jax import train
from amd_jax.convert import hf, kinds, writers
from amd_jax.convert import spec as spec_lib
from amd_jax.models import vit
from amd_jax.optim import Schedule
from configs import finetune as finetune_config
from configs import pretrain as pretrain_config

REPO = "amd-jax-tests/videomae-mu-digits"
# The Hub's default .gitattributes stores these in LFS: their blob is named by the
# content's sha256, any other file's by its git blob hash.
LFS = (".safetensors", ".bin", ".pth", ".pt")


def blob_name(path: str) -> str:
  """The name huggingface_hub gives the blob of the repo file at `path`."""
  if not path.endswith(LFS):
    with open(path, "rb") as f:
      return git_hash(f.read())
  sha = hashlib.sha256()
  with open(path, "rb") as f:
    while chunk := f.read(1 << 24):
      sha.update(chunk)
  return sha.hexdigest()


def lay_into_cache(cache: str, repo_id: str, folder: str, commit: str, *,
                   move: bool = False) -> None:
  """`folder`'s files (copied, or moved) as huggingface_hub caches a download of
  repo_id's main branch at `commit`."""
  repo_dir = os.path.join(cache, repo_folder_name(repo_id=repo_id, repo_type="model"))
  snapshot = os.path.join(repo_dir, "snapshots", commit)
  for root, _, files in os.walk(folder):
    for name in files:
      blob = os.path.join(repo_dir, "blobs", blob_name(os.path.join(root, name)))
      os.makedirs(os.path.dirname(blob), exist_ok=True)
      (shutil.move if move else shutil.copyfile)(os.path.join(root, name), blob)
      pointer = os.path.join(snapshot, os.path.relpath(os.path.join(root, name), folder))
      os.makedirs(os.path.dirname(pointer), exist_ok=True)
      os.symlink(os.path.relpath(blob, os.path.dirname(pointer)), pointer)
  os.makedirs(os.path.join(repo_dir, "refs"), exist_ok=True)
  with open(os.path.join(repo_dir, "refs", "main"), "w") as f:
    f.write(commit)                     # no newline, as huggingface_hub writes it


def write_hf_folder(path: str, seed: int) -> str:
  """configs/finetune.py:runlocal's classifier (Mu/8x2 on 8-frame 64² clips, 8
  classes) with random weights, as a Hugging Face folder (its classifier norm has
  transformers' epsilon, as in any HF folder)."""
  spec = spec_lib.ModelSpec(task="classifier", variant=vit.decode_variant("Mu/8x2"),
                            num_frames=8, image_size=(64, 64), num_classes=8,
                            fc_norm_eps=hf.TORCH_LN_EPS)
  rng = np.random.default_rng(seed)
  weights = {k: rng.standard_normal(s).astype(np.float32) * 0.02
             for k, s in spec.shapes().items()}
  writers.write_hf(path, spec, weights)
  return path


@pytest.fixture(scope="module")
def cached(tmp_path_factory):
  """(hub cache, the HF folder laid into it, its commit)."""
  root = tmp_path_factory.mktemp("hub")
  folder = write_hf_folder(str(root / "hf"), seed=0)
  commit = hashlib.sha1(b"amd_jax test commit").hexdigest()
  cache = str(root / "cache")
  lay_into_cache(cache, REPO, folder, commit)
  return cache, folder, commit


@pytest.fixture
def offline(cached, monkeypatch):
  """huggingface_hub offline, on the test cache (its settings and the environment)."""
  cache = cached[0]
  monkeypatch.setenv("HF_HUB_CACHE", cache)
  monkeypatch.setenv("HF_HUB_OFFLINE", "1")
  monkeypatch.setattr(constants, "HF_HUB_CACHE", cache)
  monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
  return cached


def hub_env(cache: str) -> dict:
  return dict(runs.environment(), HF_HUB_CACHE=cache, HF_HUB_OFFLINE="1")


def assert_same_weights(a: dict, b: dict) -> None:
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]), err_msg=k)


# ----------------------------------------------------------------- the cache itself
def test_the_cache_is_laid_out_as_huggingface_hub_lays_it_out(cached):
  cache, folder, commit = cached
  snapshot = huggingface_hub.snapshot_download(REPO, cache_dir=cache, local_files_only=True)
  assert snapshot == os.path.join(cache, f"models--{REPO.replace('/', '--')}", "snapshots",
                                  commit)
  assert sorted(os.listdir(snapshot)) == sorted(os.listdir(folder)) == ["config.json",
                                                                         "model.safetensors"]
  info = huggingface_hub.scan_cache_dir(cache)
  assert info.warnings == []
  (repo,) = info.repos
  assert (repo.repo_id, repo.repo_type, repo.nb_files) == (REPO, "model", 2)
  (revision,) = repo.revisions
  assert revision.commit_hash == commit and revision.refs == frozenset({"main"})
  for file in revision.files:
    assert open(file.blob_path, "rb").read() == open(os.path.join(folder, file.file_name),
                                                     "rb").read()
  assert huggingface_hub.try_to_load_from_cache(REPO, "config.json", cache_dir=cache) == \
      os.path.join(snapshot, "config.json")


# ----------------------------------------------------------------- loading by id
def test_pretrained_load_by_id_is_loading_the_folder(offline, caplog):
  _, folder, commit = offline
  by_path = nnx.state(pretrained.load(folder))
  for name in (REPO, f"{REPO}@main", f"{REPO}@{commit}"):
    with caplog.at_level("INFO", logger="amd_jax"):
      by_id = nnx.state(pretrained.load(name))
    assert_same_weights(spec_lib.flatten(by_id), spec_lib.flatten(by_path))
    assert f"{name}: Hugging Face repo {REPO} at commit {commit}" in caplog.text


def test_convert_src_by_id(cached, tmp_path):
  """The command line, with huggingface_hub's own environment variables."""
  cache, folder, commit = cached
  result = subprocess.run(
      [sys.executable, "-m", "amd_jax.convert", "--src", REPO, "--dst", tmp_path / "by_id",
       "--no_progress"], cwd=runs.ROOT, env=hub_env(cache), capture_output=True, text=True,
      timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  assert f"Hugging Face repo {REPO} at commit {commit}" in result.stderr
  convert.convert(folder, str(tmp_path / "by_path"), progress=False)
  spec_id, by_id = convert.read(str(tmp_path / "by_id"))
  spec_path, by_path = convert.read(str(tmp_path / "by_path"))
  assert spec_id == spec_path
  assert_same_weights(by_id, by_path)
  with open(tmp_path / "by_id" / kinds.MODEL_JSON) as f:
    assert json.load(f)["converted_from"] == REPO


def test_a_fine_tuning_init_by_id(offline, tmp_path):
  """What a run does with --config.init: train.validate resolves it, then the
  encoder (fine-tuning) or the whole classifier (mode=test) is loaded from it."""
  _, folder, _ = offline
  config = finetune_config.get_config("runlocal")
  config.init = REPO
  train.validate(config, str(tmp_path / "run"))
  mesh = sharding.make_mesh(config, jax.devices()[:1])
  schedule = Schedule(peak=0.0, final=0.0, warmup_steps=0, total_steps=1)
  state, state_sharding, _, _ = state_lib.create_state(config, mesh, schedule, abstract=True)
  loaded = {}
  for init in (REPO, folder):
    config.init = init
    loaded[init] = pretrained.load_classifier(config, state["params"], state_sharding["params"])
  assert_same_weights(*(spec_lib.flatten(p) for p in loaded.values()))
  state, state_sharding, _, _ = state_lib.create_state(config, mesh, schedule)
  encoders = []
  for init in (REPO, folder):
    config.init = init
    encoders.append(spec_lib.flatten(
        pretrained.load_init(config, state, state_sharding)["params"]["encoder"]))
  assert_same_weights(*encoders)
  np.testing.assert_array_equal(encoders[0]["patch_embed/kernel"],
                                spec_lib.flatten(loaded[REPO])["encoder/patch_embed/kernel"])


def test_a_teacher_init_by_id(offline, tmp_path):
  """--config.teacher.init of an AMD run: validated, then its encoder read as a teacher."""
  _, folder, _ = offline
  config = pretrain_config.get_config("runlocal")
  config.teacher.init = REPO
  train.validate(config, str(tmp_path / "run"))
  target = nnx.state(nnx.eval_shape(lambda: vit.Encoder(
      vit.decode_variant("Mu/8x2"), num_frames=8, image_size=64, final_norm=False,
      rngs=nnx.Rngs(0))), nnx.Param)
  (by_id, eps_id), (by_path, eps_path) = (pretrained.load_encoder(src, target, (8, 64))
                                          for src in (REPO, folder))
  assert eps_id == eps_path
  assert_same_weights(spec_lib.flatten(by_id), spec_lib.flatten(by_path))


def test_a_local_path_wins_over_the_id_of_the_same_spelling(offline, tmp_path, monkeypatch):
  _, folder, _ = offline
  owner, name = REPO.split("/")
  os.makedirs(tmp_path / owner)
  write_hf_folder(str(tmp_path / owner / name), seed=1)
  monkeypatch.chdir(tmp_path)
  assert not hub.is_repo_id(REPO) and hub.local(REPO) == REPO
  local = spec_lib.flatten(nnx.state(pretrained.load(REPO)))
  shutil.rmtree(tmp_path / owner)
  assert hub.is_repo_id(REPO)
  remote = spec_lib.flatten(nnx.state(pretrained.load(REPO)))
  assert not np.array_equal(local["head/kernel"], remote["head/kernel"])
  assert_same_weights(remote, spec_lib.flatten(nnx.state(pretrained.load(folder))))


# ----------------------------------------------------------------- one-line refusals
def test_what_is_not_an_id_is_refused_as_before(offline):
  with pytest.raises(errors.BadInput, match=r"^init runs/a/b does not exist$"):
    hub.local("runs/a/b", "init")
  for url in ("hf://MCG-NJU/videomae-base", "https://huggingface.co/MCG-NJU/videomae-base"):
    with pytest.raises(errors.BadInput) as e:
      hub.local(url, "init")
    assert str(e.value) == (f"init {url} is a URL: give a local path, or a Hugging Face repo "
                            "id as owner/name[@revision] (e.g. MCG-NJU/videomae-base)")
  # Offline, a revision the cache does not hold is as absent as a repo.
  with pytest.raises(errors.BadInput, match=f"^init {REPO}@v9 is not a local path, and not "
                     "in the Hugging Face cache"):
    hub.local(f"{REPO}@v9", "init")


def test_offline_and_not_cached_is_one_line(cached, tmp_path):
  cache = cached[0]
  result = subprocess.run(
      [sys.executable, "-m", "amd_jax.convert", "--src", "MCG-NJU/videomae-base", "--dst",
       tmp_path / "out"], cwd=runs.ROOT, env=hub_env(cache), capture_output=True, text=True,
      timeout=300)
  assert result.returncode == 2
  assert result.stderr.splitlines() == [
      "error: checkpoint MCG-NJU/videomae-base is not a local path, and not in the Hugging "
      f"Face cache ({cache}) with HF_HUB_OFFLINE=1: download it once online, or pass a local "
      "folder"]


def test_offline_and_not_cached_init_is_refused_by_validate(offline, tmp_path):
  config = finetune_config.get_config("runlocal")
  config.init = "MCG-NJU/videomae-base"
  with pytest.raises(errors.BadInput) as e:
    train.validate(config, str(tmp_path / "run"))
  assert str(e.value) == ("init MCG-NJU/videomae-base is not a local path, and not in the "
                          f"Hugging Face cache ({offline[0]}) with HF_HUB_OFFLINE=1: download "
                          "it once online, or pass a local folder")
  assert not os.path.exists(tmp_path / "run")


def test_without_huggingface_hub_an_id_is_one_line(cached, tmp_path):
  code = ("import sys\nsys.modules['huggingface_hub'] = None\n"
          "from amd_jax.convert import __main__ as cli\n"
          f"sys.exit(cli.main(['--src', {REPO!r}, '--dst', {str(tmp_path / 'out')!r}]))\n")
  result = subprocess.run([sys.executable, "-c", code], cwd=runs.ROOT, env=hub_env(cached[0]),
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 2
  assert result.stderr.splitlines() == [
      f"error: checkpoint {REPO} is not a local path, and reading it as a Hugging Face repo "
      "id needs huggingface_hub: pip install -e '.[convert]', or pass a local folder"]


# ----------------------------------------------------------------- the released models
def published_folder(path: str, task: str, **config) -> str:
  """A MCG-NJU VideoMAE repo as the Hub holds it, but for the values: the config
  transformers' VideoMAE conversion gives it (VideoMAEConfig's defaults and `config`)
  and a safetensors file of transformers' own tensor names and shapes for that config
  whose data are zeros (a sparse file: nothing is written)."""
  import torch
  import transformers
  cls = dict(classifier="VideoMAEForVideoClassification", pretrainer="VideoMAEForPreTraining")
  config = transformers.VideoMAEConfig(architectures=[cls[task]], **config)
  os.makedirs(path)
  config.save_pretrained(path)
  with torch.device("meta"):
    shapes = {k: list(v.shape) for k, v in
              getattr(transformers, cls[task])(config).state_dict().items()}
  header, offset = {"__metadata__": {"format": "pt"}}, 0
  for name, shape in shapes.items():
    size = 4 * int(np.prod(shape))
    header[name] = dict(dtype="F32", shape=shape, data_offsets=[offset, offset + size])
    offset += size
  text = json.dumps(header).encode()
  text += b" " * (-len(text) % 8)
  with open(os.path.join(path, "model.safetensors"), "wb") as f:
    f.write(struct.pack("<Q", len(text)) + text)
    f.truncate(8 + len(text) + offset)
  return path


def publish(tmp_path, monkeypatch, repo: str, task: str, **config) -> None:
  """`repo` in an offline hub cache of its own (see published_folder)."""
  cache = str(tmp_path / "cache")
  lay_into_cache(cache, repo, published_folder(str(tmp_path / "hf"), task, **config),
                 hashlib.sha1(repo.encode()).hexdigest(), move=True)
  monkeypatch.setattr(constants, "HF_HUB_CACHE", cache)
  monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


@pytest.mark.slow
def test_the_released_kinetics_classifier_fits_the_k400_test_recipe(tmp_path, monkeypatch):
  """docs/checkpoints.md's recipe, as typed up to the data: configs/finetune.py:
  data=k400,model=B with --config.mode=test --config.init=MCG-NJU/videomae-base-
  finetuned-kinetics --config.model.ln_eps=1e-12 resolves the id and loads a model
  of the published one's shapes (ViT-B, 400 classes) into the config's classifier."""
  repo = "MCG-NJU/videomae-base-finetuned-kinetics"
  publish(tmp_path, monkeypatch, repo, "classifier", num_labels=400)
  config = finetune_config.get_config("data=k400,model=B")
  config.update(mode="test", init=repo)
  train.validate(config, str(tmp_path / "run"))
  mesh = sharding.make_mesh(config, jax.devices()[:1])
  schedule = Schedule(peak=0.0, final=0.0, warmup_steps=0, total_steps=1)
  state, state_sharding, _, _ = state_lib.create_state(config, mesh, schedule, abstract=True)
  with pytest.raises(errors.BadInput, match=r"add --config.model.ln_eps=1e-12$"):
    pretrained.load_classifier(config, state["params"], state_sharding["params"])
  config.model.ln_eps = 1e-12
  params = spec_lib.flatten(pretrained.load_classifier(config, state["params"],
                                                       state_sharding["params"]))
  assert params["head/kernel"].shape == (768, 400)
  assert params["encoder/patch_embed/kernel"].shape == (2, 16, 16, 3, 768)


@pytest.mark.slow
def test_the_released_vit_l_fits_the_k400_teacher(tmp_path, monkeypatch):
  """--config.teacher.init=MCG-NJU/videomae-large on configs/pretrain.py:data=k400,
  model=B: the id resolves and its encoder is the config's teacher (L/16x2, 24 blocks
  for teacher_layers (12, 24)); read up to the check that comes before any tensor."""
  repo = "MCG-NJU/videomae-large"
  # transformers' conversion script's ViT-L settings (a pre-training model: no pooling).
  publish(tmp_path, monkeypatch, repo, "pretrainer", hidden_size=1024, intermediate_size=4096,
          num_hidden_layers=24, num_attention_heads=16, decoder_num_hidden_layers=12,
          decoder_num_attention_heads=8, decoder_hidden_size=512,
          decoder_intermediate_size=2048, use_mean_pooling=False)
  config = pretrain_config.get_config("data=k400,model=B")
  config.teacher.init = repo
  train.validate(config, str(tmp_path / "run"))
  seen = []

  def stop(spec):
    seen.append(spec)
    raise errors.BadInput("enough: the spec is known")
  with pytest.raises(errors.BadInput, match="enough"):
    convert.read(repo, part="encoder", check=stop)
  teacher = vit.decode_variant(config.teacher.variant)
  fields = ("width", "depth", "heads", "mlp_dim", "patch", "tubelet")
  assert [getattr(seen[0].variant, f) for f in fields] == [getattr(teacher, f) for f in fields]
  assert max(config.align.teacher_layers) == teacher.depth and seen[0].ln_eps == 1e-12
