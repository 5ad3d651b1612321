"""Numerical parity with Hugging Face `transformers`' VideoMAE on random weights.

Tiny models (width 64, 2 blocks, 2 heads; 4 frames of 32×32, 2×8×8 tubelets →
32 tokens) are built from a `VideoMAEConfig`; every HF tensor, including the q/v
biases, the LayerNorm scales/biases and the mask token, is overwritten with
seeded noise, so nothing matches by being 0 or 1. The weights are then copied
into our NNX modules with the layout rules of spec/AMD.md §10.4–§10.5 and both
sides run the same clip (HF takes (B, T, C, H, W), ours (B, T, H, W, C)).
No downloads, no network. float32 throughout; tolerance TOL below.

transformers ≥ 5 keeps the original `q_bias`/`v_bias` as the biases of the
split `query`/`value` Linears (`query.bias`, `value.bias`; renamed on load by
its conversion mapping) and `key` has no bias; the mapping here reads those.

LayerNorm epsilons: the original uses 1e-6 everywhere (§2.2). HF takes
`config.layer_norm_eps` for the blocks and the encoder's final `layernorm` (set
to 1e-6 here) but builds `fc_norm` (classifier) and `decoder.norm` (pixel
decoder) with PyTorch's default 1e-5 and no way to configure them. Our
Classifier/Pretrainer take a single `ln_eps`, so the tests patch the `eps`
attribute of those two HF LayerNorm objects to 1e-6 (the original's value)
rather than changing ours.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from transformers import (VideoMAEConfig, VideoMAEForPreTraining, VideoMAEForVideoClassification,
                          VideoMAEModel)
from transformers.models.videomae import modeling_videomae

from amd_jax import losses, masking
from amd_jax.models import heads, pretrain, vit

# Absolute/relative tolerance for float32 outputs of size O(1) (max |x| is a
# few units here); the observed errors are ~1e-6.
TOL = dict(atol=2e-5, rtol=2e-5)

BATCH, FRAMES, SIZE, PATCH, TUBELET = 2, 4, 32, 8, 2
WIDTH, DEPTH, HEADS, MLP = 64, 2, 2, 256
DEC_WIDTH, DEC_DEPTH, DEC_HEADS = 32, 2, 2
NUM_CLASSES = 5
MASK_RATIO = 0.75     # 12 of the 16 tokens of a slice masked → 8 visible, 24 masked
EPS = 1e-6

VARIANT = vit.Variant(width=WIDTH, depth=DEPTH, heads=HEADS, mlp_dim=MLP, patch=PATCH,
                      tubelet=TUBELET, decoder_width=DEC_WIDTH, decoder_heads=DEC_HEADS)
GRID = vit.token_grid(FRAMES, SIZE, PATCH, TUBELET)


def hf_config(**kw) -> VideoMAEConfig:
  return VideoMAEConfig(
      image_size=SIZE, patch_size=PATCH, num_channels=3, num_frames=FRAMES,
      tubelet_size=TUBELET, hidden_size=WIDTH, num_hidden_layers=DEPTH,
      num_attention_heads=HEADS, intermediate_size=MLP, hidden_act="gelu",
      qkv_bias=True, layer_norm_eps=EPS, decoder_hidden_size=DEC_WIDTH,
      decoder_num_hidden_layers=DEC_DEPTH, decoder_num_attention_heads=DEC_HEADS,
      decoder_intermediate_size=4 * DEC_WIDTH, norm_pix_loss=True,
      attn_implementation="eager", **kw)


def randomize(model: torch.nn.Module, seed: int) -> torch.nn.Module:
  """Overwrites every tensor of the state_dict with seeded noise of a sensible scale."""
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, t in model.state_dict().items():
      noise = torch.randn(t.shape, generator=gen, dtype=t.dtype)
      if t.ndim == 1 and "norm" in name and name.endswith("weight"):
        t.copy_(1.0 + 0.2 * noise)                          # LayerNorm scale
      elif t.ndim == 1:
        t.copy_(0.2 * noise)                                # every bias (q/v included)
      elif name.endswith("mask_token"):
        t.copy_(0.5 * noise)
      else:                                                 # Linear [out, in], Conv3d
        t.copy_(noise / np.sqrt(np.prod(t.shape[1:])))
  return model.eval()


class Loader:
  """Copies an HF state_dict into our modules; checks every shape and that every
  HF tensor and every one of our parameters is used exactly once."""

  def __init__(self, hf: torch.nn.Module):
    self.hf = hf
    self.sd = {k: v.detach().cpu().numpy().astype(np.float32)
               for k, v in hf.state_dict().items()}
    self.used: set[str] = set()
    self.assigned: set[int] = set()

  def get(self, key: str) -> np.ndarray:
    assert key not in self.used, f"{key} used twice"
    self.used.add(key)
    return self.sd[key]

  def set(self, var: nnx.Variable, value: np.ndarray) -> None:
    # `var[...] = x` broadcasts silently, so compare shapes first.
    assert tuple(var.shape) == tuple(value.shape), (var.shape, value.shape)
    assert id(var) not in self.assigned
    self.assigned.add(id(var))
    var[...] = jnp.asarray(value)

  def linear(self, lin: nnx.Linear, prefix: str, bias: bool = True) -> None:
    self.set(lin.kernel, self.get(f"{prefix}.weight").T)    # W[out, in] → kernel [in, out]
    if bias:
      self.set(lin.bias, self.get(f"{prefix}.bias"))
    else:
      assert lin.bias is None and f"{prefix}.bias" not in self.sd

  def layer_norm(self, ln: nnx.LayerNorm, prefix: str) -> None:
    # An epsilon of 1e-5 instead of 1e-6 moves O(1) outputs by only ~5e-6, inside TOL,
    # so check the epsilons themselves.
    assert ln.epsilon == self.hf.get_submodule(prefix).eps, (prefix, ln.epsilon)
    self.set(ln.scale, self.get(f"{prefix}.weight"))
    self.set(ln.bias, self.get(f"{prefix}.bias"))

  def block(self, block: vit.Block, prefix: str) -> None:
    a = f"{prefix}.attention.attention"
    self.layer_norm(block.norm1, f"{prefix}.layernorm_before")
    # Split q/k/v [D, D] each → fused [3D, D] rows (q, k, v) → kernel [D, 3D].
    qkv = np.concatenate([self.get(f"{a}.query.weight"), self.get(f"{a}.key.weight"),
                          self.get(f"{a}.value.weight")], axis=0)
    self.set(block.attn.qkv.kernel, qkv.T)
    assert f"{a}.key.bias" not in self.sd                  # k bias is fixed at zero
    self.set(block.attn.q_bias, self.get(f"{a}.query.bias"))
    self.set(block.attn.v_bias, self.get(f"{a}.value.bias"))
    self.linear(block.attn.proj, f"{prefix}.attention.output.dense")
    self.layer_norm(block.norm2, f"{prefix}.layernorm_after")
    self.linear(block.mlp.fc1, f"{prefix}.intermediate.dense")
    self.linear(block.mlp.fc2, f"{prefix}.output.dense")

  def encoder(self, enc: vit.Encoder, prefix: str) -> None:
    # prefix "videomae." inside the task models, "" for a bare VideoMAEModel.
    p = f"{prefix}embeddings.patch_embeddings.projection"
    # Conv3d [D, C, kt, kh, kw] → (kt, kh, kw, C, D).
    self.set(enc.patch_embed.kernel, self.get(f"{p}.weight").transpose(2, 3, 4, 1, 0))
    self.set(enc.patch_embed.bias, self.get(f"{p}.bias"))
    for i, block in enumerate(enc.blocks.layers):
      self.block(block, f"{prefix}encoder.layer.{i}")
    if enc.norm is not None:
      self.layer_norm(enc.norm, f"{prefix}layernorm")

  def done(self, model: nnx.Module) -> None:
    unused = set(self.sd) - self.used
    assert not unused, f"HF tensors not copied: {sorted(unused)}"
    params = [v for _, v in nnx.iter_graph(model) if isinstance(v, nnx.Param)]
    missed = [v.shape for v in params if id(v) not in self.assigned]
    assert not missed, f"our parameters left at their init: {missed}"


def load_encoder(enc: vit.Encoder, hf: VideoMAEModel) -> None:
  loader = Loader(hf)
  loader.encoder(enc, "")
  loader.done(enc)


def load_classifier(model: heads.Classifier, hf: VideoMAEForVideoClassification) -> None:
  loader = Loader(hf)
  loader.encoder(model.encoder, "videomae.")
  loader.layer_norm(model.fc_norm, "fc_norm")
  loader.linear(model.head, "classifier")
  loader.done(model)


def load_pretrainer(model: pretrain.Pretrainer, hf: VideoMAEForPreTraining) -> None:
  loader = Loader(hf)
  loader.encoder(model.encoder, "videomae.")
  dec = model.decoder
  loader.linear(dec.encoder_to_decoder, "encoder_to_decoder", bias=False)
  loader.set(dec.mask_token, loader.get("mask_token").reshape(-1))   # (1, 1, D) → (D,)
  for i, block in enumerate(dec.blocks.layers):
    loader.block(block, f"decoder.decoder_layers.{i}")
  loader.layer_norm(dec.norm, "decoder.norm")
  loader.linear(dec.head, "decoder.head")
  loader.done(model)


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
  ours, ref = _np(ours), _np(ref)
  assert ours.shape == ref.shape, (what, ours.shape, ref.shape)
  err = float(np.max(np.abs(ours - ref)))
  np.testing.assert_allclose(ours, ref, err_msg=what, **TOL)
  print(f"{what}: max abs err {err:.2e} (max |ref| {np.max(np.abs(ref)):.2f})")
  return err


@pytest.fixture(scope="module")
def encoder_pair():
  hf = randomize(VideoMAEModel(hf_config(use_mean_pooling=False)), seed=1)
  assert hf.layernorm is not None and hf.layernorm.eps == EPS
  ours = vit.Encoder(VARIANT, num_frames=FRAMES, image_size=SIZE, final_norm=True,
                     ln_eps=EPS, rngs=nnx.Rngs(0))
  load_encoder(ours, hf)
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


def test_classifier_logits(clip):
  video, pixels = clip
  hf = randomize(VideoMAEForVideoClassification(
      hf_config(use_mean_pooling=True, num_labels=NUM_CLASSES)), seed=3)
  assert hf.videomae.layernorm is None
  # HF's fc_norm is nn.LayerNorm(hidden) with torch's default eps 1e-5; the original
  # (and our Classifier, which has a single ln_eps) uses 1e-6: patch HF's module.
  assert hf.fc_norm.eps == 1e-5
  hf.fc_norm.eps = EPS
  ours = heads.Classifier(VARIANT, NUM_CLASSES, num_frames=FRAMES, image_size=SIZE,
                          ln_eps=EPS, rngs=nnx.Rngs(0))
  load_classifier(ours, hf)
  with torch.no_grad():
    ref = hf(pixels).logits
  assert_close(ours(video), ref, "classifier logits")


@pytest.mark.parametrize("teacher_ratio", [None, 0.5], ids=["videomae_mask", "amd_mask"])
def test_pretraining_predictions_and_loss(clip, teacher_ratio, monkeypatch):
  video, pixels = clip
  hf = randomize(VideoMAEForPreTraining(hf_config(use_mean_pooling=False)), seed=4)
  assert hf.videomae.layernorm is not None and hf.config.norm_pix_loss
  # HF's decoder.norm is nn.LayerNorm(decoder_hidden) with torch's default eps 1e-5;
  # the original and our PixelDecoder (one ln_eps for blocks and norm) use 1e-6.
  assert hf.decoder.norm.eps == 1e-5
  hf.decoder.norm.eps = EPS
  ours = pretrain.Pretrainer(VARIANT, num_frames=FRAMES, image_size=SIZE,
                             decoder_depth=DEC_DEPTH, align=None, ln_eps=EPS, rngs=nnx.Rngs(0))
  load_pretrainer(ours, hf)

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
  # — exactly spec/AMD.md §4.3 and losses.pixel_targets.
  targets = vit.gather_tokens(losses.pixel_targets(video, PATCH, TUBELET), idx.masked)
  assert_close(targets, captured["labels"], f"pretrain targets ({teacher_ratio=})")
  loss = jnp.mean((pred - targets) ** 2)
  assert_close(loss, out.loss, f"pretrain loss ({teacher_ratio=})")
