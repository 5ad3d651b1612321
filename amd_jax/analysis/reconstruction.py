"""Masked tubes reconstructed by pre-training checkpoints, beside trivial predictors."""

from __future__ import annotations

import os
import textwrap

import jax.numpy as jnp
import numpy as np
from matplotlib import pyplot as plt

from amd_jax import errors, losses, masking, pretrained
from amd_jax import workdir as workdir_lib
from amd_jax.analysis import probe
from amd_jax.analysis.output import read_json, write_json
from amd_jax.models import pretrain, vit


def unpatchify(tokens: np.ndarray, grid: tuple[int, int, int], patch: int,
               tubelet: int) -> np.ndarray:
  """Inverse of vit.patchify: (B, N, tubelet·patch²·C) → (B, T, H, W, C)."""
  t, h, w = grid
  b = tokens.shape[0]
  x = tokens.reshape(b, t, h, w, tubelet, patch, patch, -1)
  x = x.transpose(0, 1, 4, 2, 5, 3, 6, 7)
  return x.reshape(b, t * tubelet, h * patch, w * patch, -1)


def _counts(codes: np.ndarray) -> masking.MaskCounts:
  """The token counts of masking codes (B, N) that are the same in every clip."""
  return masking.MaskCounts(tokens=codes.shape[1], student=int((codes[0] == 0).sum()),
                            teacher=int((codes[0] <= 1).sum()))


def reconstruct(model, videos: np.ndarray, codes: np.ndarray, patch: int, tubelet: int
                ) -> np.ndarray:
  """RGB in [0, 1] (B, T, H, W, 3): visible tubes as they are, masked ones predicted.

  model: a pre-training model (pretrain.Pretrainer), or None for a prediction of
  0 everywhere; codes (B, N) masking codes with the same counts in every clip
  (AMD models need teacher-only tokens). Models predict per-patch normalised
  pixels; each prediction is mapped back with the true patch's per-channel mean
  and std (the statistics pixel_targets normalised with).
  """
  t = videos.shape[1] // tubelet
  grid = (t, videos.shape[2] // patch, videos.shape[3] // patch)
  counts = _counts(codes)
  idx = masking.indices(jnp.asarray(codes), counts)
  rgb = np.asarray(vit.patchify(jnp.asarray(videos, jnp.float32) / 255.0, patch, tubelet))
  b, n, _ = rgb.shape
  rgb = rgb.reshape(b, n, -1, 3)
  masked = np.asarray(idx.masked)
  rows = np.arange(b)[:, None]
  if model is None:
    pred = np.zeros(rgb[rows, masked].shape, np.float32)
  else:
    pred = np.asarray(model(losses.normalize(jnp.asarray(videos)), idx)["pred"], np.float32)
  mean = rgb.mean(axis=2, keepdims=True)
  std = rgb.std(axis=2, ddof=1, keepdims=True) + 1e-6
  out = rgb.copy()
  out[rows, masked] = (pred.reshape(b, masked.shape[1], -1, 3) * std[rows, masked]
                       + mean[rows, masked])
  return np.clip(unpatchify(out.reshape(b, n, -1), grid, patch, tubelet), 0.0, 1.0)


def neighbour_copy(targets: np.ndarray, codes: np.ndarray, grid: tuple[int, int, int]
                   ) -> np.ndarray:
  """The trivial predictor that copies, for every student-masked token, the target
  of the nearest student-visible token of the same time slice (the first on a
  tie): (B, n_masked, D) in the order of masking.indices' masked tokens."""
  t, h, w = grid
  yx = np.stack(np.unravel_index(np.arange(t * h * w), grid), axis=1)   # (N, 3): t, y, x
  out = []
  for target, code in zip(targets, codes):
    visible = np.flatnonzero(code == masking.STUDENT)
    masked = np.flatnonzero(code != masking.STUDENT)    # masking.indices' order: ascending
    d = np.square(yx[masked, None, 1:] - yx[None, visible, 1:]).sum(-1).astype(float)
    d[yx[masked, None, 0] != yx[None, visible, 0]] = np.inf
    out.append(target[visible[np.argmin(d, axis=1)]])
  return np.stack(out)


# A tube is flat when every frame of it is one colour up to this many grey levels per
# channel (H.264's noise on a flat area is a few levels; a digit's stroke is hundreds).
FLAT_RANGE = 8


def flat_tubes(videos: np.ndarray, patch: int, tubelet: int) -> np.ndarray:
  """(B, N) bool: the tubes of uint8 `videos` whose every frame is flat (on
  moving_digits: background alone, no digit). A flat tube's normalised target is
  its change over time only (the flicker); the others hold spatial structure."""
  tokens = np.asarray(vit.patchify(jnp.asarray(videos, jnp.float32), patch, tubelet))
  b, n, _ = tokens.shape
  frames = tokens.reshape(b, n, tubelet, patch * patch, 3)
  spread = frames.max(axis=3) - frames.min(axis=3)          # (B, N, tubelet, 3)
  return (spread <= FLAT_RANGE).all(axis=(2, 3))


def flat_copy(targets: np.ndarray, codes: np.ndarray, flat: np.ndarray) -> np.ndarray:
  """The trivial predictor that reads the background off the visible tubes: per clip,
  the mean target of its student-visible flat tubes, (B, D) (0 where none is
  visible). On moving_digits it is the flicker, the same target for every tube of
  background."""
  visible = (codes == masking.STUDENT) & flat                     # (B, N)
  count = visible.sum(axis=1, keepdims=True)
  return (targets * visible[..., None]).sum(axis=1) / np.maximum(count, 1)


def masked_pixel_losses(models: dict, videos: np.ndarray, codes: np.ndarray, patch: int,
                        tubelet: int, batch: int = 16) -> tuple[dict, float, dict]:
  """The pre-training reconstruction loss (MSE of per-patch normalised pixels on the
  student-masked tokens) of every model on uint8 `videos` under masking `codes`,
  beside trivial predictors: 0 everywhere (`zero`), the nearest visible token's
  target copied (`neighbour_copy`), the background read off the visible flat tubes
  and written on every masked tube (`flat_copy`), and the same on the masked tubes
  that are flat only, 0 on the others (`flat_copy_where_flat`: it is told which
  hidden tubes are flat, which no model is; on moving_digits, where the digits are).

  Returns ({"all" | "flat" | "structured": {name: loss}}, the share of masked
  tubes that are flat, {"flat" | "structured": {model: mean square distance of its
  prediction from flat_copy's}}): "all" is the pre-training loss; the other two
  split it by what the hidden tube holds (flat_tubes). A model that writes the
  background on every hidden tube, digit or not, is as close to flat_copy on the
  structured tubes as on the flat ones."""
  t = videos.shape[1] // tubelet
  grid = (t, videos.shape[2] // patch, videos.shape[3] // patch)
  counts = _counts(codes)
  names = ("zero", "neighbour_copy", "flat_copy", "flat_copy_where_flat", *models)
  sums = {group: dict.fromkeys(names, 0.0) for group in ("flat", "structured")}
  distances = {group: dict.fromkeys(models, 0.0) for group in ("flat", "structured")}
  tubes = {"flat": 0, "structured": 0}
  for start in range(0, len(videos), batch):
    clips, code = videos[start:start + batch], codes[start:start + batch]
    video = losses.normalize(jnp.asarray(clips))
    idx = masking.indices(jnp.asarray(code), counts)
    all_targets = np.asarray(losses.pixel_targets(video, patch, tubelet))
    target = np.asarray(vit.gather_tokens(jnp.asarray(all_targets), idx.masked))
    every_flat = flat_tubes(clips, patch, tubelet)
    flat = every_flat[np.arange(len(code))[:, None], np.asarray(idx.masked)]
    tubes["flat"] += int(flat.sum())
    tubes["structured"] += int((~flat).sum())
    background = np.broadcast_to(flat_copy(all_targets, code, every_flat)[:, None],
                                 target.shape)
    preds = {"zero": np.zeros_like(target),
             "neighbour_copy": neighbour_copy(all_targets, code, grid),
             "flat_copy": background,
             "flat_copy_where_flat": np.where(flat[..., None], background, 0.0)}
    preds.update({name: np.asarray(m(video, idx)["pred"], np.float32)
                  for name, m in models.items()})
    for name, pred in preds.items():
      error = np.square(pred - target).mean(axis=-1)      # (B, masked): one per tube
      sums["flat"][name] += float(error[flat].sum())
      sums["structured"][name] += float(error[~flat].sum())
      if name in models:
        distance = np.square(pred - background).mean(axis=-1)
        distances["flat"][name] += float(distance[flat].sum())
        distances["structured"][name] += float(distance[~flat].sum())
  total = tubes["flat"] + tubes["structured"]

  def means(by_group):
    return {group: {name: s / tubes[group] if tubes[group] else None
                    for name, s in by_name.items()} for group, by_name in by_group.items()}

  out = means(sums)
  out["all"] = {name: (sums["flat"][name] + sums["structured"][name]) / total
                for name in names}
  return out, tubes["flat"] / total, means(distances)


def masked_input(videos: np.ndarray, codes: np.ndarray, grid, patch: int, tubelet: int
                 ) -> np.ndarray:
  """What the student sees: its visible tubes, grey elsewhere; [0, 1] (B, T, H, W, 3)."""
  tokens = vit.patchify(np.asarray(videos, np.float32) / 255.0, patch, tubelet)
  tokens = np.where((codes == masking.STUDENT)[..., None], tokens, 0.5)
  return unpatchify(np.asarray(tokens), grid, patch, tubelet)


RECONSTRUCTION_CAPTION = (
    "Masked tubes: each model's prediction of per-patch normalised pixels, re-scaled with the "
    "TRUE patch's per-channel mean and std (the targets are normalised per patch, so the model "
    "never predicts brightness or contrast). The 'zero prediction' row is what a model "
    "predicting 0 everywhere would show: the blocky patch means; what a model adds is the "
    "pattern inside each patch. Visible tubes are shown as they are.")


def reconstructions_report(runs: dict[str, str], out_dir: str, *, videos: int = 64,
                           show: int = 2, student_ratio: float = 0.9,
                           teacher_ratio: float = 0.75, seed: int = 0,
                           data: str = "moving_digits", data_dir: str = "",
                           split: str = "test") -> dict:
  """The first `videos` test clips through every pre-training run, one tube mask per
  clip shared by all runs: the reconstruction loss of every run and of the trivial
  predictors → reconstructions.json; the first `show` of the clips, reconstructed →
  out_dir/reconstructions.png."""
  if show < 1:
    raise errors.BadInput(f"--show {show}: the figure shows at least one clip")
  if show > videos:
    raise errors.BadInput(f"--show {show} is more than --videos {videos}: the figure shows "
                          "clips that are scored")
  # Before any model or clip is read: a fine-tuning run has no pixel decoder to show.
  for name, workdir in runs.items():
    mode = read_json(os.path.join(workdir, workdir_lib.CONFIG_FILE), default={}).get("mode")
    if mode in ("finetune", "test"):
      raise errors.BadInput(f"reconstructions needs a pre-training run (mode amd or "
                            f"videomae): {name}={workdir} is a {mode} run, which has no "
                            "pixel decoder")
  models = {name: pretrained.load(w) for name, w in runs.items()}
  for name, model in models.items():
    if not isinstance(model, pretrain.Pretrainer):     # e.g. a converted classifier
      raise errors.BadInput(f"reconstructions needs a pre-training checkpoint: {name}="
                            f"{runs[name]} holds a {type(model).__name__}, which has no "
                            "pixel decoder")
  first = next(iter(models.values())).encoder
  v, grid = first.variant, first.grid
  masking.tube_counts(grid, student_ratio, teacher_ratio)     # bad ratios: before any clip
  all_clips, _ = probe.labelled_clips(grid, v.patch, v.tubelet, data=data, data_dir=data_dir,
                                      split=split, videos=videos)
  rng = np.random.default_rng(seed)
  # One asymmetric mask per clip for every model: the student-visible tubes are the
  # same for all; teacher-only tokens matter to AMD students' alignment heads alone.
  all_codes = np.stack([masking.tube_mask(rng, grid, student_ratio, teacher_ratio)
                        for _ in all_clips])
  pixel_losses, flat_share, distances = masked_pixel_losses(models, all_clips, all_codes,
                                                             v.patch, v.tubelet)
  clips, codes = all_clips[:show], all_codes[:show]
  panels = {"original": clips / 255.0,
            f"input ({student_ratio:.0%} masked)": masked_input(clips, codes, grid, v.patch,
                                                                v.tubelet),
            "zero prediction": reconstruct(None, clips, codes, v.patch, v.tubelet)}
  for name, model in models.items():
    panels[name] = reconstruct(model, clips, codes, v.patch, v.tubelet)
  # The first frame of every tubelet: its second frame belongs to the same tokens and,
  # on moving_digits, differs from it by the flicker (±5 grey levels: invisible here).
  frames = range(0, clips.shape[1], v.tubelet)
  height = 1.1 * len(clips) * len(panels) + 0.9      # 0.9 inch for the caption
  fig, axes = plt.subplots(len(clips) * len(panels), len(frames),
                           figsize=(1.1 * len(frames) + 1.4, height), squeeze=False)
  for c in range(len(clips)):
    for p, (name, video) in enumerate(panels.items()):
      row = axes[c * len(panels) + p]
      for f, ax in zip(frames, row):
        ax.imshow(video[c, f])
        ax.set_xticks([])
        ax.set_yticks([])
        if c == p == 0:
          ax.set_title(f"frame {f}", fontsize=7)
      row[0].set_ylabel(name, fontsize=7, rotation=0, ha="right", va="center")
  fig.tight_layout(rect=(0, 0.9 / height, 1, 1))
  fig.text(0.5, 0.005, textwrap.fill(RECONSTRUCTION_CAPTION, 90), ha="center", va="bottom",
           fontsize=6.5)
  os.makedirs(out_dir, exist_ok=True)
  path = os.path.join(out_dir, "reconstructions.png")
  fig.savefig(path, dpi=100)
  plt.close(fig)
  report = dict(
      loss=pixel_losses["all"], loss_flat_tubes=pixel_losses["flat"],
      loss_structured_tubes=pixel_losses["structured"], flat_tubes_share=flat_share,
      distance_to_flat_copy=distances,
      videos=len(all_clips), shown=len(clips), data=data, split=split, student_ratio=student_ratio,
      teacher_ratio=teacher_ratio, seed=seed,
      note=("MSE of per-patch normalised pixels on the student-masked tokens (the "
            "pre-training loss_rec), one tube mask per clip shared by every model; "
            "zero: a prediction of 0; neighbour_copy: the nearest visible token's target "
            "of the same time slice; flat_copy: the mean target of the clip's visible flat "
            "tubes on every masked tube; flat_copy_where_flat: the same on the masked flat "
            "tubes, 0 on the others (told which hidden tubes are flat); "
            "loss_flat_tubes / loss_structured_tubes: the same "
            f"on the masked tubes whose every frame is / is not one colour (within "
            f"{FLAT_RANGE} grey levels per channel), flat_tubes_share of them flat; "
            "distance_to_flat_copy: each model's mean square distance from flat_copy's "
            "prediction on the masked flat / structured tubes"))
  write_json(os.path.join(out_dir, "reconstructions.json"), report)
  return report
