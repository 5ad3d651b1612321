"""Masked tubes reconstructed by pre-training checkpoints, beside trivial predictors."""

from __future__ import annotations

import dataclasses
import os
import textwrap
from collections.abc import Callable, Iterator

import jax.numpy as jnp
import numpy as np
from matplotlib import pyplot as plt

from amd_jax import errors, files, losses, masking, pretrained, task_names
from amd_jax import tokens as tokens_lib
from amd_jax import workdir as workdir_lib
from amd_jax.analysis import probe
from amd_jax.models import pretrain


def unpatchify(tokens: np.ndarray, grid: tuple[int, int, int], patch: int,
               tubelet: int) -> np.ndarray:
  """Inverse of tokens.patchify: (B, N, tubelet·patch²·C) → (B, T, H, W, C)."""
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
  rgb = np.asarray(tokens_lib.patchify(jnp.asarray(videos, jnp.float32) / 255.0, patch, tubelet))
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


# The predictors every report scores beside the models: 0 everywhere, and the nearest
# visible token's target copied. Neither knows anything of the data.
TRIVIAL = ("zero", "neighbour_copy")
LOSS_NOTE = ("MSE of per-patch normalised pixels on the student-masked tokens (the "
             "pre-training loss_rec), one tube mask per clip shared by every model; "
             "zero: a prediction of 0; neighbour_copy: the nearest visible token's target "
             "of the same time slice")


@dataclasses.dataclass(frozen=True)
class MaskedBatch:
  """Clips under their masks, and what every predictor writes on their student-masked
  tokens (per-patch normalised pixels)."""

  clips: np.ndarray                # uint8 (B, T, H, W, 3)
  codes: np.ndarray                # masking codes (B, N)
  masked: np.ndarray               # the student-masked tokens (B, M), masking.indices' order
  targets: np.ndarray              # every token's target (B, N, D)
  target: np.ndarray               # the masked tokens' (B, M, D)
  preds: dict[str, np.ndarray]     # TRIVIAL's and every model's prediction (B, M, D)


def masked_batches(models: dict, videos: np.ndarray, codes: np.ndarray, patch: int,
                   tubelet: int, batch: int = 16) -> Iterator[MaskedBatch]:
  """uint8 `videos` under masking `codes` (the same counts in every clip), `batch` clips
  at a time, with the predictions of TRIVIAL and of every pre-training model."""
  t = videos.shape[1] // tubelet
  grid = (t, videos.shape[2] // patch, videos.shape[3] // patch)
  counts = _counts(codes)
  for start in range(0, len(videos), batch):
    clips, code = videos[start:start + batch], codes[start:start + batch]
    video = losses.normalize(jnp.asarray(clips))
    idx = masking.indices(jnp.asarray(code), counts)
    targets = np.asarray(losses.pixel_targets(video, patch, tubelet))
    target = np.asarray(tokens_lib.gather_tokens(jnp.asarray(targets), idx.masked))
    preds = {"zero": np.zeros_like(target),
             "neighbour_copy": neighbour_copy(targets, code, grid)}
    preds.update({name: np.asarray(m(video, idx)["pred"], np.float32)
                  for name, m in models.items()})
    yield MaskedBatch(clips, code, np.asarray(idx.masked), targets, target, preds)


def masked_pixel_losses(models: dict, videos: np.ndarray, codes: np.ndarray, patch: int,
                        tubelet: int, batch: int = 16) -> dict[str, float]:
  """The pre-training reconstruction loss (MSE of per-patch normalised pixels on the
  student-masked tokens) of TRIVIAL's predictors and of every model on uint8
  `videos` under masking `codes`: {name: loss}."""
  sums = dict.fromkeys((*TRIVIAL, *models), 0.0)
  tubes = 0
  for b in masked_batches(models, videos, codes, patch, tubelet, batch):
    for name, pred in b.preds.items():
      sums[name] += float(np.square(pred - b.target).mean(axis=-1).sum())
    tubes += b.masked.size
  return {name: s / tubes for name, s in sums.items()}


# What reconstructions_report scores: (models, uint8 clips, masking codes, patch,
# tubelet) → (the report's numbers by key, a note that says what they are).
Scores = Callable[[dict, np.ndarray, np.ndarray, int, int], tuple[dict, str]]


def loss_scores(models: dict, videos: np.ndarray, codes: np.ndarray, patch: int,
                tubelet: int) -> tuple[dict, str]:
  """reconstructions_report's scores unless told others: the masked-pixel loss of
  every model and of TRIVIAL's predictors, as "loss"."""
  return {"loss": masked_pixel_losses(models, videos, codes, patch, tubelet)}, LOSS_NOTE


def masked_input(videos: np.ndarray, codes: np.ndarray, grid, patch: int, tubelet: int
                 ) -> np.ndarray:
  """What the student sees: its visible tubes, grey elsewhere; [0, 1] (B, T, H, W, 3)."""
  tokens = tokens_lib.patchify(np.asarray(videos, np.float32) / 255.0, patch, tubelet)
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
                           split: str = "test", scores: Scores = loss_scores) -> dict:
  """The first `videos` test clips through every pre-training run, one tube mask per
  clip shared by all runs: their `scores` (by default the reconstruction loss of
  every run and of the trivial predictors) → reconstructions.json; the first `show`
  of the clips, reconstructed → out_dir/reconstructions.png."""
  if show < 1:
    raise errors.BadInput(f"--show {show}: the figure shows at least one clip")
  if show > videos:
    raise errors.BadInput(f"--show {show} is more than --videos {videos}: the figure shows "
                          "clips that are scored")
  models = _pretrainers(runs)
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
  numbers, note = scores(models, all_clips, all_codes, v.patch, v.tubelet)
  clips, codes = all_clips[:show], all_codes[:show]
  _draw(models, clips, codes, grid, v.patch, v.tubelet, student_ratio, out_dir)
  report = dict(numbers, videos=len(all_clips), shown=len(clips), data=data, split=split,
                student_ratio=student_ratio, teacher_ratio=teacher_ratio, seed=seed, note=note)
  files.write_json(os.path.join(out_dir, "reconstructions.json"), report)
  return report


def _pretrainers(runs: dict[str, str]) -> dict:
  """{name: pretrain.Pretrainer} of every run; a run without a pixel decoder is one line,
  told by its config.json before any model is read where it has one."""
  for name, workdir in runs.items():
    config = files.read_json(os.path.join(workdir, workdir_lib.CONFIG_FILE), default={})
    task = task_names.of(config)
    if task is not None and task not in task_names.PRETRAINING:
      raise errors.BadInput(f"reconstructions needs a pre-training run (mode amd or "
                            f"videomae): {name}={workdir} is a {config['mode']} run, which "
                            "has no pixel decoder")
  models = {name: pretrained.load(w) for name, w in runs.items()}
  for name, model in models.items():
    if not isinstance(model, pretrain.Pretrainer):     # e.g. a converted classifier
      raise errors.BadInput(f"reconstructions needs a pre-training checkpoint: {name}="
                            f"{runs[name]} holds a {type(model).__name__}, which has no "
                            "pixel decoder")
  return models


def _draw(models: dict, clips: np.ndarray, codes: np.ndarray, grid, patch: int, tubelet: int,
          student_ratio: float, out_dir: str) -> None:
  """out_dir/reconstructions.png: per clip, the original, the student's input, the zero
  prediction and every model's reconstruction, a frame per tubelet."""
  panels = {"original": clips / 255.0,
            f"input ({student_ratio:.0%} masked)": masked_input(clips, codes, grid, patch,
                                                                tubelet),
            "zero prediction": reconstruct(None, clips, codes, patch, tubelet)}
  for name, model in models.items():
    panels[name] = reconstruct(model, clips, codes, patch, tubelet)
  # The first frame of every tubelet: its second frame belongs to the same tokens and,
  # on moving_digits, differs from it by the flicker (±5 grey levels: invisible here).
  frames = range(0, clips.shape[1], tubelet)
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
  fig.savefig(os.path.join(out_dir, "reconstructions.png"), dpi=100)
  plt.close(fig)
