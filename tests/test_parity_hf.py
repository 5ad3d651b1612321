"""Numerical parity with Hugging Face `transformers`' VideoMAE, through the real converter.

Tiny models (width 64, 2 blocks, 2 heads; 4 frames of 32×32, 2×8×8 tubelets →
32 tokens) are built from a `VideoMAEConfig`; every HF tensor, including the q/v
biases, the LayerNorm scales/biases and the mask token, is overwritten with
seeded noise, so nothing matches by being 0 or 1. Each model is saved with
`save_pretrained` and read back with `amd_jax.pretrained.load`, i.e. through
amd_jax.convert's HF table (docs/method.md#hugging-face-layout); both sides run the same
clip (HF takes (B, T, C, H, W), ours (B, T, H, W, C)). No downloads. float32.

LayerNorm epsilons are carried over per norm by the converter: HF takes
`config.layer_norm_eps` for the blocks and the encoder's final `layernorm`
(1e-12 by default, as on the hub) but builds `fc_norm` and the decoder's `norm`
with torch's 1e-5; `check_epsilons` compares every norm of ours with its HF
module, found through the same table.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from transformers import VideoMAEForPreTraining, VideoMAEForVideoClassification, VideoMAEModel
from transformers.models.videomae import modeling_videomae

from amd_jax import losses, masking, pretrained, tokens
from amd_jax.convert import flatten, tables
from amd_jax.models import vit
from torch_reference import hf_config, randomize

BATCH, FRAMES, SIZE, PATCH, TUBELET = 2, 4, 32, 8, 2
SIZES = dict(size=SIZE, frames=FRAMES, patch=PATCH, width=64, depth=2, heads=2,
             dec_width=32, dec_depth=2, dec_heads=2)
DEPTH = SIZES["depth"]
NUM_CLASSES = 5
MASK_RATIO = 0.75     # 12 of the 16 tokens of a slice masked → 8 visible, 24 masked
GRID = vit.token_grid(FRAMES, SIZE, PATCH, TUBELET)
# Relative to the reference's largest magnitude; the observed errors are ~1e-7.
RTOL = 1e-5


def converted(hf: torch.nn.Module, tmp_path, **kw) -> nnx.Module:
  """HF model → save_pretrained → amd_jax.pretrained.load, epsilons checked."""
  folder = str(tmp_path / type(hf).__name__)
  hf.save_pretrained(folder)
  ours = pretrained.load(folder, **kw)
  check_epsilons(ours, hf, "encoder" if isinstance(hf, VideoMAEModel) else
                 "classifier" if isinstance(hf, VideoMAEForVideoClassification) else "pretrainer")
  return ours


def check_epsilons(ours: nnx.Module, hf: torch.nn.Module, task: str) -> None:
  """Every LayerNorm of ours has the eps of the HF module its scale came from."""
  table = tables.table("hf", task)
  norms = [(k, v) for k, v in flatten(nnx.state(ours)).items()
           if k.endswith("/scale")]
  assert norms
  for key, _ in norms:
    module = ours
    for part in key.split("/")[:-1]:
      module = module[int(part)] if part.isdigit() else getattr(module, part)
    hf_name = tables.theirs_for(table, key).removesuffix(".weight")
    assert module.epsilon == hf.get_submodule(hf_name).eps, (key, module.epsilon)


@pytest.fixture(scope="module")
def clip():
  """A normalised-looking clip: ours (B, T, H, W, C) and HF's (B, T, C, H, W)."""
  x = np.random.default_rng(0).standard_normal((BATCH, FRAMES, SIZE, SIZE, 3)).astype(np.float32)
  return jnp.asarray(x), torch.from_numpy(x.transpose(0, 1, 4, 2, 3).copy())


def _codes(seed: int, teacher_ratio: float | None = None) -> np.ndarray:
  rng = np.random.default_rng(seed)
  return np.stack([masking.tube_mask(rng, GRID, MASK_RATIO, teacher_ratio)
                   for _ in range(BATCH)])


def _np(x) -> np.ndarray:
  return x.detach().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def assert_close(ours, ref, what: str) -> float:
  """max |ours − ref| ≤ RTOL · max |ref|; returns that ratio."""
  ours, ref = _np(ours), _np(ref)
  assert ours.shape == ref.shape, (what, ours.shape, ref.shape)
  scale = float(np.max(np.abs(ref)))
  err = float(np.max(np.abs(ours - ref)))
  print(f"{what}: max abs err {err:.2e}, max |ref| {scale:.2f}, ratio {err / scale:.1e}")
  assert err <= RTOL * scale, (what, err, scale)
  return err / scale


@pytest.fixture(scope="module")
def encoder_pair(tmp_path_factory):
  hf = randomize(VideoMAEModel(hf_config(**SIZES, layer_norm_eps=1e-6,
                                         use_mean_pooling=False)), seed=1)
  assert hf.layernorm is not None
  ours = converted(hf, tmp_path_factory.mktemp("encoder"))
  assert isinstance(ours, vit.Encoder) and ours.norm is not None
  return ours, hf


def _check_encoder(ours: vit.Encoder, hf: VideoMAEModel, video, pixels, idx, bool_masked_pos,
                   what: str):
  with torch.no_grad():
    out = hf(pixels, bool_masked_pos=bool_masked_pos, output_hidden_states=True)
  x, hidden = ours(video, idx)
  # HF records the embedding output first, then the residual stream after each block
  # (before the final layernorm).
  assert len(out.hidden_states) == DEPTH + 1
  assert_close(ours.embed(video, idx), out.hidden_states[0], f"{what} embedding")
  for l, (h, ref) in enumerate(zip(hidden, out.hidden_states[1:], strict=True), start=1):
    assert_close(h, ref, f"{what} block {l}")
  assert_close(x, out.last_hidden_state, f"{what} final norm")


def test_encoder_hidden_states(encoder_pair, clip):
  ours, hf = encoder_pair
  video, pixels = clip
  _check_encoder(ours, hf, video, pixels, None, None, "encoder")


def test_masked_encoder(encoder_pair, clip):
  ours, hf = encoder_pair
  video, pixels = clip
  codes = _codes(seed=2)
  counts = masking.tube_counts(GRID, MASK_RATIO)
  idx = masking.indices(jnp.asarray(codes), counts)
  assert idx.student.shape == (BATCH, counts.student) == (BATCH, 8)
  np.testing.assert_array_equal(np.diff(np.asarray(idx.student), axis=1) > 0, True)
  _check_encoder(ours, hf, video, pixels, idx.student,
                 torch.from_numpy(codes != masking.STUDENT), "masked encoder")


def test_classifier_logits(clip, tmp_path):
  video, pixels = clip
  # The hub's epsilons: 1e-12 in the blocks, torch's 1e-5 in fc_norm; both carried over.
  hf = randomize(VideoMAEForVideoClassification(
      hf_config(**SIZES, use_mean_pooling=True, num_labels=NUM_CLASSES)), seed=3)
  assert hf.videomae.layernorm is None and hf.fc_norm.eps == 1e-5
  ours = converted(hf, tmp_path)
  assert ours.fc_norm.epsilon == 1e-5 and ours.encoder.blocks.layers[0].norm1.epsilon == 1e-12
  with torch.no_grad():
    ref = hf(pixels).logits
  assert_close(ours(video), ref, "classifier logits")


@pytest.mark.parametrize("teacher_ratio", [None, 0.5], ids=["videomae_mask", "amd_mask"])
def test_pretraining_predictions_and_loss(clip, teacher_ratio, monkeypatch, tmp_path):
  video, pixels = clip
  hf = randomize(VideoMAEForPreTraining(hf_config(**SIZES, use_mean_pooling=False)), seed=4)
  assert hf.videomae.layernorm is not None and hf.config.norm_pix_loss
  ours = converted(hf, tmp_path)
  assert ours.decoder.norm.epsilon == 1e-5 and ours.encoder.norm.epsilon == 1e-12

  # With an AMD mask (codes 0/1/2) the decoder reconstructs every token the student
  # does not see, diff tokens included: HF's boolean mask is codes > STUDENT.
  codes = _codes(seed=5 if teacher_ratio is None else 6, teacher_ratio=teacher_ratio)
  counts = masking.tube_counts(GRID, MASK_RATIO, teacher_ratio)
  idx = masking.indices(jnp.asarray(codes), counts)
  bool_masked_pos = torch.from_numpy(codes != masking.STUDENT)

  # Capture HF's labels: its forward calls the module-level MSELoss on (logits, labels).
  captured = {}

  class CapturingMSE(torch.nn.MSELoss):
    def forward(self, input, target):
      captured["labels"] = target
      return super().forward(input, target)

  monkeypatch.setattr(modeling_videomae, "MSELoss", CapturingMSE)
  with torch.no_grad():
    out = hf(pixels, bool_masked_pos=bool_masked_pos)

  pred = ours(video, idx)["pred"]
  # HF returns logits for the masked tokens only, visible-then-masked concatenation
  # read back from the end, in ascending position order — ours uses idx.masked.
  assert pred.shape == (BATCH, counts.masked, TUBELET * PATCH * PATCH * 3)
  assert_close(pred, out.logits, f"pretrain pred ({teacher_ratio=})")

  # Targets: HF un-normalises with ImageNet mean/std per channel, splits tubelets
  # (kt, kh, kw, c), standardises per token and channel with the unbiased std + 1e-6
  # — exactly docs/method.md#pixel-targets and losses.pixel_targets.
  targets = tokens.gather_tokens(losses.pixel_targets(video, PATCH, TUBELET), idx.masked)
  assert_close(targets, captured["labels"], f"pretrain targets ({teacher_ratio=})")
  loss = jnp.mean((pred - targets) ** 2)
  assert_close(loss, out.loss, f"pretrain loss ({teacher_ratio=})")
