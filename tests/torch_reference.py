"""PyTorch references for the conversion tests: HF models with seeded weights, and the
official VideoMAE/AMD modules re-stated from docs/method.md#models (no official code is copied).

The official modules' parameter names are the official state_dict keys
(docs/method.md#official-layout), so a strict `load_state_dict` checks an
official-layout file's names and shapes, and their forward checks that every
tensor went where the official code reads it. LayerNorm eps 1e-6 throughout.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import VideoMAEConfig

from amd_jax.convert import hf
from amd_jax.models import vit

EPS = 1e-6


def hf_config(*, size: int, frames: int, patch: int, width: int, depth: int, heads: int,
              dec_width: int = 32, dec_depth: int = 1, dec_heads: int = 1,
              layer_norm_eps: float = 1e-12, **kw) -> VideoMAEConfig:
  """A VideoMAEConfig of these sizes (tubelets of 2), with transformers' own default
  eps unless told: the converter must carry whatever eps a config.json says."""
  variant = vit.Variant(width=width, depth=depth, heads=heads, mlp_dim=4 * width, patch=patch,
                        tubelet=2, decoder_width=dec_width, decoder_heads=dec_heads)
  return VideoMAEConfig(**hf.videomae_config(
      variant, image_size=size, num_frames=frames, layer_norm_eps=layer_norm_eps,
      decoder_depth=dec_depth, attn_implementation="eager", **kw))


def randomize(model: nn.Module, seed: int) -> nn.Module:
  """Overwrites every tensor of the state_dict with seeded noise of a sensible scale,
  so nothing matches by being 0 or 1 (q/v biases, LayerNorms and mask tokens included)."""
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


def sinusoid(n: int, d: int) -> torch.Tensor:
  """(1, n, d): sin(p / 10000^(2⌊j/2⌋/d)) at even j, cos at odd j (interleaved)."""
  p = np.arange(n)[:, None] / np.power(10000.0, 2 * (np.arange(d) // 2) / d)[None, :]
  return torch.from_numpy(np.where(np.arange(d) % 2 == 0, np.sin(p), np.cos(p))[None]).float()


class Attention(nn.Module):

  def __init__(self, dim: int, heads: int):
    super().__init__()
    self.heads = heads
    self.qkv = nn.Linear(dim, 3 * dim, bias=False)
    self.q_bias = nn.Parameter(torch.zeros(dim))
    self.v_bias = nn.Parameter(torch.zeros(dim))
    self.proj = nn.Linear(dim, dim)

  def forward(self, x):
    b, n, d = x.shape
    bias = torch.cat([self.q_bias, torch.zeros_like(self.v_bias), self.v_bias])
    qkv = F.linear(x, self.qkv.weight, bias).reshape(b, n, 3, self.heads, -1)
    q, k, v = qkv.permute(2, 0, 3, 1, 4)
    attn = ((q * (d // self.heads) ** -0.5) @ k.transpose(-2, -1)).softmax(-1)
    return self.proj((attn @ v).transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):

  def __init__(self, dim: int):
    super().__init__()
    self.fc1, self.fc2 = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)

  def forward(self, x):
    return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):

  def __init__(self, dim: int, heads: int):
    super().__init__()
    self.norm1, self.attn = nn.LayerNorm(dim, eps=EPS), Attention(dim, heads)
    self.norm2, self.mlp = nn.LayerNorm(dim, eps=EPS), Mlp(dim)

  def forward(self, x):
    x = x + self.attn(self.norm1(x))
    return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):

  def __init__(self, dim: int, patch: int, tubelet: int = 2):
    super().__init__()
    self.proj = nn.Conv3d(3, dim, (tubelet, patch, patch), (tubelet, patch, patch))

  def forward(self, video):                       # (B, C, T, H, W) → (B, N, D)
    return self.proj(video).flatten(2).transpose(1, 2)


class Encoder(nn.Module):
  """patch_embed, blocks and (pre-training) the final norm; tokens where mask is False."""

  def __init__(self, dim: int, depth: int, heads: int, patch: int, final_norm: bool):
    super().__init__()
    self.patch_embed = PatchEmbed(dim, patch)
    self.blocks = nn.ModuleList([Block(dim, heads) for _ in range(depth)])
    self.norm = nn.LayerNorm(dim, eps=EPS) if final_norm else None

  def forward(self, video, mask=None):
    x = self.patch_embed(video)
    x = x + sinusoid(x.shape[1], x.shape[2])
    if mask is not None:
      x = x[~mask].reshape(x.shape[0], -1, x.shape[2])
    for block in self.blocks:
      x = block(x)
    return self.norm(x) if self.norm is not None else x


class FinetuneVit(Encoder):
  """The fine-tuning model: mean over tokens → fc_norm → head (no final norm)."""

  def __init__(self, dim: int, depth: int, heads: int, patch: int, classes: int):
    super().__init__(dim, depth, heads, patch, final_norm=False)
    self.fc_norm = nn.LayerNorm(dim, eps=EPS)
    self.head = nn.Linear(dim, classes)

  def forward(self, video):
    return self.head(self.fc_norm(super().forward(video).mean(1)))


class Decoder(nn.Module):

  def __init__(self, dim: int, depth: int, heads: int, out_dim: int):
    super().__init__()
    self.blocks = nn.ModuleList([Block(dim, heads) for _ in range(depth)])
    self.norm, self.head = nn.LayerNorm(dim, eps=EPS), nn.Linear(dim, out_dim)

  def forward(self, x, num_masked: int):
    for block in self.blocks:
      x = block(x)
    return self.head(self.norm(x[:, -num_masked:]))


class PretrainVit(nn.Module):
  """VideoMAE pre-training: encoder (visible tokens) → encoder_to_decoder →
  [visible + pos, mask_token + pos] → decoder → pixels of the masked tokens."""

  def __init__(self, dim: int, depth: int, heads: int, patch: int, dec_dim: int,
               dec_depth: int, dec_heads: int):
    super().__init__()
    self.encoder = Encoder(dim, depth, heads, patch, final_norm=True)
    self.decoder = Decoder(dec_dim, dec_depth, dec_heads, 3 * 2 * patch * patch)
    self.encoder_to_decoder = nn.Linear(dim, dec_dim, bias=False)
    self.mask_token = nn.Parameter(torch.zeros(1, 1, dec_dim))

  def forward(self, video, mask):
    x = self.encoder_to_decoder(self.encoder(video, mask))
    b, _, d = x.shape
    pos = sinusoid(mask.shape[1], d).expand(b, -1, -1)
    pos_vis = pos[~mask].reshape(b, -1, d)
    pos_mask = pos[mask].reshape(b, -1, d)
    x = torch.cat([x + pos_vis, self.mask_token + pos_mask], dim=1)
    return self.decoder(x, pos_mask.shape[1])
