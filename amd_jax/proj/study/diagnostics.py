"""What the models write on moving_digits' hidden tubes: the reconstruction loss split
into tubes of background and tubes that hold part of a digit, beside predictors that
read the background off the visible tubes (the study's findings:
docs/study/README.md, "What the models write on the hidden digit tubes"). They rest
on moving_digits' background, one colour per frame whose flicker every tube of it
shares; on other data they mean nothing, which is why they live with the study and
not in amd_jax.analysis."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from amd_jax import masking, tokens
from amd_jax.analysis import reconstruction

# A tube is flat when every frame of it is one colour up to this many grey levels per
# channel (H.264's noise on a flat area is a few levels; a digit's stroke is hundreds).
FLAT_RANGE = 8
FLAT_PREDICTORS = ("flat_copy", "flat_copy_where_flat")
NOTE = (reconstruction.LOSS_NOTE
        + "; flat_copy: the mean target of the clip's visible flat tubes on every masked "
        "tube; flat_copy_where_flat: the same on the masked flat tubes, 0 on the others "
        "(told which hidden tubes are flat); loss_flat_tubes / loss_structured_tubes: the "
        "same on the masked tubes whose every frame is / is not one colour (within "
        f"{FLAT_RANGE} grey levels per channel), flat_tubes_share of them flat; "
        "distance_to_flat_copy: each model's mean square distance from flat_copy's "
        "prediction on the masked flat / structured tubes")


def flat_tubes(videos: np.ndarray, patch: int, tubelet: int) -> np.ndarray:
  """(B, N) bool: the tubes of uint8 `videos` whose every frame is flat (on
  moving_digits: background alone, no digit). A flat tube's normalised target is
  its change over time only (the flicker); the others hold spatial structure."""
  patches = np.asarray(tokens.patchify(jnp.asarray(videos, jnp.float32), patch, tubelet))
  b, n, _ = patches.shape
  frames = patches.reshape(b, n, tubelet, patch * patch, 3)
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


def split_losses(models: dict, videos: np.ndarray, codes: np.ndarray, patch: int,
                 tubelet: int, batch: int = 16) -> tuple[dict, float, dict]:
  """reconstruction.masked_pixel_losses split by what the hidden tube holds
  (flat_tubes), beside two more trivial predictors: the background read off the
  visible flat tubes and written on every masked tube (`flat_copy`), and the same on
  the masked tubes that are flat only, 0 on the others (`flat_copy_where_flat`: it is
  told which hidden tubes are flat, which no model is; on moving_digits, where the
  digits are).

  Returns ({"all" | "flat" | "structured": {name: loss}}, the share of masked
  tubes that are flat, {"flat" | "structured": {model: mean square distance of its
  prediction from flat_copy's}}): "all" is the pre-training loss. A model that
  writes the background on every hidden tube, digit or not, is as close to
  flat_copy on the structured tubes as on the flat ones."""
  names = (*reconstruction.TRIVIAL, *FLAT_PREDICTORS, *models)
  sums = {group: dict.fromkeys(names, 0.0) for group in ("flat", "structured")}
  distances = {group: dict.fromkeys(models, 0.0) for group in ("flat", "structured")}
  tubes = {"flat": 0, "structured": 0}
  for b in reconstruction.masked_batches(models, videos, codes, patch, tubelet, batch):
    every_flat = flat_tubes(b.clips, patch, tubelet)
    flat = every_flat[np.arange(len(b.codes))[:, None], b.masked]
    tubes["flat"] += int(flat.sum())
    tubes["structured"] += int((~flat).sum())
    background = np.broadcast_to(flat_copy(b.targets, b.codes, every_flat)[:, None],
                                 b.target.shape)
    preds = {**b.preds, "flat_copy": background,
             "flat_copy_where_flat": np.where(flat[..., None], background, 0.0)}
    for name, pred in preds.items():
      error = np.square(pred - b.target).mean(axis=-1)      # (B, masked): one per tube
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


def flat_tube_scores(models: dict, videos: np.ndarray, codes: np.ndarray, patch: int,
                     tubelet: int) -> tuple[dict, str]:
  """The study's reconstruction scores (a reconstruction.Scores): split_losses as
  reconstructions.json's loss, loss_flat_tubes, loss_structured_tubes,
  flat_tubes_share and distance_to_flat_copy."""
  losses, share, distances = split_losses(models, videos, codes, patch, tubelet)
  return dict(loss=losses["all"], loss_flat_tubes=losses["flat"],
              loss_structured_tubes=losses["structured"], flat_tubes_share=share,
              distance_to_flat_copy=distances), NOTE
