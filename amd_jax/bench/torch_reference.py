"""The PyTorch reference of the benchmarked step, from transformers' VideoMAE modules.

The same update as amd_jax's step, the way a PyTorch user would
write it with `transformers`: the student is `VideoMAEForPreTraining` (encoder
on the student-visible tokens, decoder over visible ++ mask tokens, normalised
pixel MSE), the frozen teacher a `VideoMAEModel` without final norm on the
teacher-visible tokens (eval, no grad), AMD's bias-free projections and
2-block generators of `VideoMAELayer`s, AdamW and global-norm clipping as in the
config. Random weights, the same shapes, token counts and masks as the JAX
step. Like the official code (and unlike amd_jax), HF embeds all tubelets and
drops the masked ones afterwards. Fine-tuning: `VideoMAEForVideoClassification`
with mean pooling, batch mixup (one λ, the batch reversed) on label-smoothed
targets and soft-target cross entropy, AdamW; HF's VideoMAE has no stochastic
depth, so drop path is off on both sides.

torch and transformers are an optional extra: only this module imports them.
"""

from __future__ import annotations

import contextlib
import os

import ml_collections
import numpy as np
import torch
from torch import nn
from transformers import (VideoMAEConfig, VideoMAEForPreTraining, VideoMAEForVideoClassification,
                          VideoMAEModel)
from transformers.models.videomae.modeling_videomae import VideoMAELayer

from amd_jax import losses, tasks
from amd_jax.convert import hf
from amd_jax.models import posemb, vit


def hf_config(variant: vit.Variant, config: ml_collections.ConfigDict, **kw) -> VideoMAEConfig:
  return VideoMAEConfig(**hf.videomae_config(
      variant, image_size=config.data.size, num_frames=config.data.frames, layer_norm_eps=1e-6,
      decoder_depth=config.model.get("decoder_depth", 4), attn_implementation="sdpa", **kw))


class Generator(nn.Module):
  """[projected student tokens + PE] ++ [mask token + PE at diff tokens] → blocks → diff part."""

  def __init__(self, config: VideoMAEConfig, depth: int, num_tokens: int):
    super().__init__()
    self.mask_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
    nn.init.trunc_normal_(self.mask_token, std=0.02, a=-0.02, b=0.02)
    self.layers = nn.ModuleList([VideoMAELayer(config) for _ in range(depth)])
    self.register_buffer("pos", torch.from_numpy(
        posemb.sinusoid_table(num_tokens, config.hidden_size)).float(), persistent=False)

  def forward(self, f, idx_visible, idx_diff):
    x = torch.cat([f + self.pos[idx_visible], self.mask_token + self.pos[idx_diff]], dim=1)
    for layer in self.layers:
      x = layer(x)
    return x[:, idx_visible.shape[1]:]


class Reference(nn.Module):
  """Student (+ teacher, projections and generators in AMD mode); forward returns the loss."""

  def __init__(self, config: ml_collections.ConfigDict):
    super().__init__()
    s = vit.decode_variant(config.model.variant)
    task = tasks.of(config)
    self.finetune = not task.pretraining
    if self.finetune:
      self.classifier = VideoMAEForVideoClassification(hf_config(
          s, config, use_mean_pooling=True, num_labels=config.data.num_classes))
      self.mixup_alpha = config.mixup.mixup_alpha
      self.smoothing = config.mixup.label_smoothing
      return
    self.student = VideoMAEForPreTraining(hf_config(s, config))
    self.amd = task.distills
    if not self.amd:
      return
    t = vit.decode_variant(config.teacher.variant)
    t_config = hf_config(t, config, use_mean_pooling=True)   # no final norm
    self.teacher = VideoMAEModel(t_config).eval().requires_grad_(False)
    self.student_layers = tuple(config.align.student_layers)
    self.teacher_layers = tuple(config.align.teacher_layers)
    num_tokens = self.student.videomae.embeddings.num_patches
    self.projections = nn.ModuleList([nn.Linear(s.width, t.width, bias=False)
                                      for _ in self.student_layers])
    self.generators = nn.ModuleList([
        Generator(t_config, config.align.generator_depth, num_tokens)
        for _ in self.student_layers])

  def forward(self, video_uint8, codes_or_labels):
    """video uint8 (B, T, H, W, 3) and codes int8 (B, N) (amd_jax.masking), or labels
    (B,) when fine-tuning: the total loss."""
    mean = torch.tensor(losses.IMAGENET_MEAN)
    std = torch.tensor(losses.IMAGENET_STD)
    video = ((video_uint8.float() / 255.0 - mean) / std).permute(0, 1, 4, 2, 3)  # B,T,C,H,W
    if self.finetune:
      return self._finetune_loss(video, codes_or_labels)
    codes = codes_or_labels
    out = self.student(video, bool_masked_pos=codes > 0, output_hidden_states=self.amd)
    if not self.amd:
      return out.loss
    b = codes.shape[0]
    idx_student = torch.nonzero(codes == 0)[:, 1].reshape(b, -1)
    idx_diff = torch.nonzero(codes == 1)[:, 1].reshape(b, -1)
    with torch.no_grad():
      hidden = self.teacher(video, bool_masked_pos=codes == 2,
                            output_hidden_states=True).hidden_states
    # HF keeps the teacher's tokens in ascending order: find the student's and
    # the diff tokens inside that sequence.
    rank = torch.cumsum((codes < 2).long(), dim=1) - 1
    at_student, at_diff = rank.gather(1, idx_student), rank.gather(1, idx_diff)
    direct = gen = 0.0
    for proj, generator, ls, lt in zip(self.projections, self.generators, self.student_layers,
                                       self.teacher_layers):
      # hidden_states[0] is the embedding output, [l] the output of layer l.
      f = proj(out.hidden_states[ls])
      target = hidden[lt]
      direct = direct + nn.functional.mse_loss(f, _take(target, at_student))
      gen = gen + nn.functional.mse_loss(generator(f, idx_student, idx_diff),
                                         _take(target, at_diff))
    pairs = len(self.projections)
    return out.loss + direct / pairs + gen / pairs

  def _finetune_loss(self, video, labels):
    lam = float(np.random.default_rng().beta(self.mixup_alpha, self.mixup_alpha))
    video = lam * video + (1 - lam) * video.flip(0)
    classes = self.classifier.config.num_labels
    targets = (nn.functional.one_hot(labels, classes) * (1 - self.smoothing)
               + self.smoothing / classes)
    targets = lam * targets + (1 - lam) * targets.flip(0)
    logp = torch.log_softmax(self.classifier(video).logits.float(), dim=-1)
    return -(targets * logp).sum(-1).mean()


def _take(x, idx):
  return x.gather(1, idx[..., None].expand(-1, -1, x.shape[-1]))


def optimizer(model: Reference, config: ml_collections.ConfigDict) -> torch.optim.Optimizer:
  """AdamW as optim.py's: decay on matrices only, the teacher left out."""
  o = config.optim
  params = [p for p in model.parameters() if p.requires_grad]
  groups = [{"params": [p for p in params if p.ndim > 1], "weight_decay": o.weight_decay},
            {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}]
  return torch.optim.AdamW(groups, lr=1e-3, betas=(o.b1, o.b2), eps=o.eps)


class Runner:
  """`step()` runs one update of the reference (step.time_steps times it)."""

  def __init__(self, config: ml_collections.ConfigDict, batch: dict, *, threads: int):
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    self.model = Reference(config)
    self.opt = optimizer(self.model, config)
    self.clip_norm = config.optim.clip_norm
    self.bf16 = config.model.dtype == "bfloat16"
    self.video = torch.from_numpy(batch["video"])
    self.second = torch.from_numpy(
        batch["mask" if tasks.of(config).pretraining else "label"].astype(np.int64))
    self.loss = None

  def describe(self) -> dict:
    return {"impl": "torch", "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpu_count": len(os.sched_getaffinity(0))}

  def step(self) -> None:
    with torch.autocast("cpu", dtype=torch.bfloat16) if self.bf16 else contextlib.nullcontext():
      loss = self.model(self.video, self.second)
    self.opt.zero_grad(set_to_none=True)
    loss.backward()
    if self.clip_norm:
      nn.utils.clip_grad_norm_(self.model.parameters(), self.clip_norm)
    self.opt.step()
    self.loss = loss.item()

  def summary(self) -> dict:
    return {"loss": self.loss}
