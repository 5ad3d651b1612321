"""The linear probe (amd_jax/analysis/probe.py): the regression on hand-made features, the
refusal of fine-tuned checkpoints, and a probe of a real pre-training checkpoint
on the embedded videos."""

import json
import subprocess
import sys

import numpy as np
import pytest

from amd_jax import errors
from amd_jax.analysis import probe
from amd_jax.convert import writers
from amd_jax.convert import spec as spec_lib
from amd_jax.models import vit
from runs import ROOT


def _separable(rng, n_per_class, classes=3, dim=5):
  """Class c: a cluster around 4·e_c plus unit noise in every dimension."""
  y = np.repeat(np.arange(classes), n_per_class)
  x = rng.normal(0, 0.5, (len(y), dim)) + 4.0 * np.eye(dim)[y]
  return x.astype(np.float32), y.astype(np.int32)


def test_fit_learns_a_separable_case_exactly():
  rng = np.random.default_rng(0)
  splits = {k: _separable(rng, n) for k, n in (("train", 20), ("val", 10), ("test", 10))}
  out = probe.fit(splits, num_classes=3)
  assert out["train_top1"] == out["val_top1"] == out["test_top1"] == 1.0
  assert out["videos"] == {"train": 60, "val": 30, "test": 30} and out["dim"] == 5
  assert [r["l2"] for r in out["grid"]] == list(probe.L2_GRID)
  # Every strength separates it: the tie goes to the strongest.
  assert out["l2"] == max(probe.L2_GRID)


def test_fit_picks_the_strength_by_validation():
  """Labels independent of the features: nothing generalises, and a stronger L2
  fits the train split less (the grid really changes the fit)."""
  rng = np.random.default_rng(1)
  splits = {k: (rng.normal(size=(n, 40)).astype(np.float32),
                rng.integers(0, 4, n).astype(np.int32))
            for k, n in (("train", 80), ("val", 200), ("test", 200))}
  out = probe.fit(splits, num_classes=4)
  grid = {r["l2"]: r for r in out["grid"]}
  assert grid[1e-4]["train_top1"] > grid[1e-1]["train_top1"]
  assert out["val_top1"] == max(r["val_top1"] for r in out["grid"])
  assert out["test_top1"] < 0.45                       # chance is 0.25


def _write(tmp_path, task, **kw):
  variant = vit.decode_variant("Mu/8x2")
  spec = spec_lib.ModelSpec(task=task, variant=variant, num_frames=8, image_size=(32, 32),
                            norm_eps=1e-6, **kw)
  rng = np.random.default_rng(3)
  weights = {k: (0.02 * rng.standard_normal(shape)).astype(np.float32)
             for k, shape in spec.shapes().items()}
  path = str(tmp_path / task)
  writers.write_orbax(path, spec, weights, source="test")
  return path


def test_probe_refuses_a_fine_tuned_checkpoint(tmp_path):
  path = _write(tmp_path, "classifier", num_classes=8, fc_norm_eps=1e-6)
  with pytest.raises(errors.BadInput, match="fine-tuned classifier"):
    probe.load_encoder(path)
  result = subprocess.run([sys.executable, "-m", "amd_jax.analysis", "probe", "--checkpoint",
                           f"ft={path}", "--out", str(tmp_path / "out")], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 2
  lines = result.stderr.strip().splitlines()
  assert lines[-1].startswith("error: ") and "fine-tuned classifier" in lines[-1]
  assert "Traceback" not in result.stderr


def test_probe_of_a_pretraining_checkpoint_from_the_command_line(tmp_path):
  """A random-weight pre-training checkpoint on 16 videos per split: the whole path
  (clips sized for the encoder, features, fit, probe.json) runs; numbers are sane."""
  path = _write(tmp_path, "pretrainer", decoder_depth=1, decoder_norm_eps=1e-6)
  out = tmp_path / "out"
  result = subprocess.run([sys.executable, "-m", "amd_jax.analysis", "probe", "--checkpoint",
                           f"random={path}", "--videos", "16", "--blocks", "all", "--out",
                           str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-2000:]
  report = json.loads((out / "probe.json").read_text())
  m = report["models"]["random"]
  assert m["videos"] == {"train": 16, "val": 16, "test": 16} and m["dim"] == 64
  assert 0.0 <= m["test_top1"] <= 1.0 and m["l2"] in probe.L2_GRID
  assert "random: probe test top-1" in result.stdout
  # Mu has 4 blocks: each probed on its own features.
  assert sorted(m["blocks"]) == ["1", "2", "3", "4"]
  assert all(b["videos"] == m["videos"] and b["dim"] == 64 for b in m["blocks"].values())
  assert "random: after block 4: probe test top-1" in result.stdout
  result = subprocess.run([sys.executable, "-m", "amd_jax.analysis", "probe", "--checkpoint",
                           f"random={path}", "--blocks", "2,5", "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1] == "error: random has 4 blocks: no block 5"


def test_block_features_are_the_pooled_residual_stream():
  """features()[0] is the mean of the output tokens (after the final norm), [l] the
  mean of the residual stream after block l: computed here from the encoder's own call."""
  import jax.numpy as jnp
  from amd_jax import losses
  encoder = probe.random_encoder("Mu/8x2", num_frames=8, image_size=32, seed=0)
  videos = np.random.default_rng(0).integers(0, 256, (3, 8, 32, 32, 3), dtype=np.uint8)
  got = probe.features(encoder, videos, batch=2)        # two batches, the second padded
  x, hidden = encoder(losses.normalize(jnp.asarray(videos)))
  want = np.stack([np.asarray(t).mean(axis=1) for t in (x, *hidden)])
  assert got.shape == (5, 3, 64)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  assert not np.allclose(got[0], got[4], atol=1e-2)     # the final norm is not a no-op


@pytest.mark.parametrize("text, message", [("x", "'all' or block numbers"),
                                           ("0,2", "blocks count from 1")])
def test_block_list_refuses_bad_input(text, message):
  assert probe.block_list("all") == "all" and probe.block_list("1,3") == (1, 3)
  with pytest.raises(errors.BadInput, match=message):
    probe.block_list(text)


def test_random_encoder_is_the_seeded_control():
  """The scratch student's probe: an encoder at its random initial weights, the
  same for one seed, other for another, probed without any checkpoint."""
  import jax
  from flax import nnx
  make = lambda seed: probe.random_encoder("Mu/8x2", num_frames=8, image_size=32, seed=seed)
  leaves = lambda e: jax.tree.leaves(nnx.state(e, nnx.Param))
  a, b, c = make(0), make(0), make(1)
  assert all(np.array_equal(x, y) for x, y in zip(leaves(a), leaves(b)))
  assert not all(np.array_equal(x, y) for x, y in zip(leaves(a), leaves(c)))
  m = probe.probe_report({"scratch": a}, videos=8)["models"]["scratch"]
  assert m["checkpoint"] == "random initial weights" and m["dim"] == 64
  assert m["videos"] == {"train": 8, "val": 8, "test": 8}


def test_blocks_gather_seeds_and_plot(tmp_path):
  """by_block puts 'NAME/seed_S' under NAME, block by block; plot_blocks draws them."""
  entry = lambda *top1: {"blocks": {str(b + 1): {"test_top1": t} for b, t in enumerate(top1)}}
  report = {"models": {"teacher": entry(0.8, 0.9), "amd/seed_0": entry(0.5, 0.4),
                       "amd/seed_1": entry(0.7, 0.6), "plain": {"test_top1": 0.3}}}
  assert probe.by_block(report) == {"teacher": {1: [0.8], 2: [0.9]},
                                    "amd": {1: [0.5, 0.7], 2: [0.4, 0.6]}}
  probe.plot_blocks(report, str(tmp_path / "blocks.png"))
  assert (tmp_path / "blocks.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_split_that_lacks_classes_is_said_in_one_line(tmp_path, caplog):
  """2 videos per split cannot cover moving_digits' 8 classes: the probe still runs
  (a smoke test may want that), fitted for all 8 classes, and one warning says how
  many each split covers; enough videos cover all, with no warning."""
  import logging
  encoder = probe.random_encoder("Mu/8x2", num_frames=8, image_size=32, seed=0)
  with caplog.at_level(logging.WARNING, logger="amd_jax"):
    m = probe.probe_report({"scratch": encoder}, videos=2)["models"]["scratch"]
  covered = {k: len(set(probe.labelled_clips(encoder.grid, 8, 2, split=k, videos=2)[1]))
             for k in ("train", "val", "test")}
  assert [r.getMessage() for r in caplog.records] == [
      f"probe: the moving_digits videos read cover {covered['train']} (train), {covered['val']} "
      f"(val), {covered['test']} (test) of its 8 classes: a class the train split lacks "
      "is never predicted, and top-1 counts only the classes the test split has; --videos 2 "
      "reads too few to compare with a probe on whole splits"]
  assert m["classes"] == 8 and m["videos"] == {"train": 2, "val": 2, "test": 2}
  caplog.clear()
  with caplog.at_level(logging.WARNING, logger="amd_jax"):
    probe.probe_report({"scratch": encoder}, videos=48)
  assert not caplog.records
