r"""Analyses of trained models, as plots (PNG) with the numbers behind them (JSON).

  python -m amd_jax.analysis attention-distance --checkpoint [NAME=]PATH [...] --out DIR \
      [--data moving_digits --split test --videos 64 --frame-spacing 0]
  python -m amd_jax.analysis per-class --a RUN_A --b RUN_B --out DIR [--names A B] [--top K]
  python -m amd_jax.analysis curves --run NAME=WORKDIR [...] --out DIR
  python -m amd_jax.analysis reconstructions --run NAME=WORKDIR [...] --out DIR
  python -m amd_jax.analysis probe --checkpoint [NAME=]PATH [...] --out DIR \
      [--data moving_digits --videos N]

- attention distance (the supplementary's Figure S2, the ViT paper's "mean
  attention distance"): per layer and head, for every query token the
  attention-weighted mean distance to the key tokens, in pixels of the input,
  averaged over queries and clips. Distance is *spatial* by default — between
  the centres of the two tokens' patches in the frame, whatever their time
  slices — so numbers compare with image ViTs. `--frame-spacing P` adds time:
  tokens one frame apart are P pixels apart in a third axis (the
  supplementary's caption, "frame spacing is calculated over the maximum
  distance of each frame", reads as P = the frame's diagonal; unverified).
  Clips are whole (every token visible), one test view per video.
- per-class (Figure S3's form): two fine-tuned runs' per-class test accuracy
  side by side, classes sorted by the difference, from each run's
  test_results.json.
- curves: pre-training losses (each term) and fine-tuning curves from metrics.jsonl.
- reconstructions: a few test clips through pre-training checkpoints, one mask
  for all of them.
- probe: a linear probe on each checkpoint's frozen, mean-pooled encoder
  features (train → test, L2 chosen on val; amd_jax/probe.py) → probe.json.

Any checkpoint `amd_jax.pretrained.load` reads works for attention distance
(a training workdir of ours, a converted checkpoint, an official .pth, a
Hugging Face folder).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import textwrap

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import tqdm
from flax import nnx

matplotlib.use("Agg")   # files only: no display on servers and CI
from matplotlib import pyplot as plt  # noqa: E402  (after the backend is chosen)
from matplotlib.cm import ScalarMappable  # noqa: E402
from matplotlib.colors import BoundaryNorm  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from amd_jax import errors, losses, masking, pretrained, probe  # noqa: E402
from amd_jax.data.builders import moving_digits  # noqa: E402
from amd_jax.models import pretrain, vit  # noqa: E402

LOSS_TERMS = ("loss", "loss_rec", "loss_dir", "loss_gen")


# ----------------------------------------------------------------- attention distance

def token_centres(grid: tuple[int, int, int], patch: int, tubelet: int) -> np.ndarray:
  """(N, 3) centres (frame, y, x) of the tokens in the encoder's (t, h, w) order.

  Frames and pixels of the input clip: the token of tubelet slice t covers
  frames [t·tubelet, (t+1)·tubelet), so its centre is at t·tubelet + (tubelet−1)/2.
  """
  t, h, w = np.meshgrid(*(np.arange(n) for n in grid), indexing="ij")
  return np.stack([t * tubelet + (tubelet - 1) / 2, (h + 0.5) * patch, (w + 0.5) * patch],
                  axis=-1).reshape(-1, 3).astype(np.float64)


def distance_matrix(grid: tuple[int, int, int], patch: int, tubelet: int,
                    frame_spacing: float = 0.0) -> np.ndarray:
  """(N, N) float32 distances in pixels between token centres (see the module docstring).

  frame_spacing: pixels per frame of time difference; 0 = spatial distance only.
  """
  c = token_centres(grid, patch, tubelet) * np.array([frame_spacing, 1.0, 1.0])
  return np.sqrt(((c[:, None] - c[None]) ** 2).sum(-1)).astype(np.float32)


def mean_distance(attn: jnp.ndarray, dist: jnp.ndarray) -> jnp.ndarray:
  """attn (B, heads, Nq, Nk) rows summing to 1, dist (Nq, Nk) → (B, heads).

  Per query the attention-weighted mean distance to the keys, averaged over queries.
  """
  return jnp.einsum("bhqk,qk->bh", attn.astype(jnp.float32), dist) / attn.shape[2]


def attention_probs(block: vit.Block, x: jnp.ndarray) -> jnp.ndarray:
  """The softmax attention (B, heads, N, N) of `block` on its input residual stream x (B, N, D).

  Rebuilds what vit.Attention computes before its value product: norm1, the
  fused qkv with the q and v biases (k bias 0), scale head_dim^-0.5, f32 softmax.
  """
  attn = block.attn
  b, n, d = x.shape
  q_bias = attn.q_bias[...]
  bias = jnp.concatenate([q_bias, jnp.zeros_like(q_bias), attn.v_bias[...]])
  qkv = (attn.qkv(block.norm1(x)) + bias.astype(attn.dtype)).reshape(b, n, 3, attn.heads, -1)
  q, k = qkv[:, :, 0], qkv[:, :, 1]
  logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32)
  return jax.nn.softmax(logits * q.shape[-1] ** -0.5, axis=-1)


@nnx.jit
def _layer_distances(encoder: vit.Encoder, video: jnp.ndarray, dist: jnp.ndarray) -> jnp.ndarray:
  """(layers, B, heads) mean attention distance of every block on a normalised video."""
  _, hidden = encoder(video)
  # Block l's input: the embedding for l = 1, else the residual stream after block l−1.
  inputs = (encoder.embed(video),) + tuple(hidden[:-1])
  return jnp.stack([mean_distance(attention_probs(block, x), dist)
                    for block, x in zip(encoder.blocks.layers, inputs)])


def attention_distance(encoder: vit.Encoder, videos: np.ndarray, *, frame_spacing: float = 0.0,
                       batch: int = 8, desc: str = "attention distance") -> np.ndarray:
  """(layers, heads) mean attention distance in pixels over uint8 videos (V, T, H, W, 3)."""
  v = encoder.variant
  dist = jnp.asarray(distance_matrix(encoder.grid, v.patch, v.tubelet, frame_spacing))
  total = np.zeros((v.depth, v.heads))
  for start in tqdm.trange(0, len(videos), batch, desc=desc, unit="batch", leave=False,
                           dynamic_ncols=True):
    x = losses.normalize(jnp.asarray(videos[start:start + batch]))
    total += np.asarray(_layer_distances(encoder, x, dist)).sum(axis=1)
  return total / len(videos)


def legend_outside(fig: Figure, axes, loc: str = "outside right upper", **kw) -> None:
  """One figure legend of the labelled artists of `axes` (each label once), outside
  every panel so that it covers no bar, dot or curve (needs layout="constrained")."""
  entries = {}
  for ax in axes:
    for handle, label in zip(*ax.get_legend_handles_labels()):
      entries.setdefault(label, handle)
  if entries:
    fig.legend(list(entries.values()), list(entries), loc=loc, **kw)


def save(fig: Figure, path: str, dpi: int = 120) -> Figure:
  """Writes fig to path, its legends (outside the axes) included, and closes it;
  returns it, still drawable, for callers that inspect the layout."""
  fig.savefig(path, dpi=dpi, bbox_inches="tight")
  plt.close(fig)
  return fig


def plot_attention_distance(results: dict[str, np.ndarray], path: str, note: str = "",
                            uniform: dict[str, float] | None = None) -> Figure:
  """One panel per model: a dot per head at each layer depth (Figure S2's form),
  coloured by the head's index (a colour bar says which).

  uniform: per model, the distance of uniform attention over all tokens (the
  most global a head can be on average), drawn as a dashed line.
  """
  fig, axes = plt.subplots(1, len(results), figsize=(3.6 * len(results) + 1.2, 3.6),
                           sharey=True, squeeze=False, layout="constrained")
  most = max(d.shape[1] for d in results.values())
  cmap = plt.get_cmap("viridis", most)
  for ax, (name, d) in zip(axes[0], results.items()):
    layers, heads = d.shape
    for head in range(heads):
      ax.scatter(np.arange(1, layers + 1), d[:, head], s=14, color=cmap(head))
    if uniform and name in uniform:
      ax.axhline(uniform[name], color="grey", linestyle="--", linewidth=1,
                 label="uniform attention (every token weighted equally)")
    ax.set_ylim(0, 1.08 * max([d.max(), *(uniform or {}).values()]))
    ax.set_title(name)
    ax.set_xlabel("layer depth")
    ax.set_xticks(np.arange(1, layers + 1, max(1, layers // 6)))
    ax.grid(alpha=0.3)
  axes[0, 0].set_ylabel("mean attention distance (pixels)")
  # Heads are categories: one colour band per head index, labelled 1..most.
  head_colours = ScalarMappable(BoundaryNorm(np.arange(most + 1) + 0.5, most), cmap)
  fig.colorbar(head_colours, ax=axes[0].tolist(), label="attention head",
               ticks=np.arange(1, most + 1, max(1, most // 8)))
  legend_outside(fig, axes[0], loc="outside lower center", fontsize=7)  # the dashed lines
  fig.suptitle("Average attention distance per head and layer" + (f"\n{note}" if note else ""),
               fontsize=9)
  return save(fig, path)


def attention_distance_report(checkpoints: dict[str, str], out_dir: str, *,
                              data: str = "moving_digits", data_dir: str = "",
                              split: str = "test", videos: int = 64, sampler: str = "dense",
                              rate: int = 2, frame_spacing: float = 0.0,
                              batch: int = 8) -> dict:
  """Attention distances of every checkpoint's encoder → out_dir/attention_distance.{png,json}."""
  os.makedirs(out_dir, exist_ok=True)
  results, numbers, clips, uniform = {}, {}, {}, {}
  for name, path in checkpoints.items():
    encoder = pretrained.load(path, part="encoder")
    v = encoder.variant
    key = (encoder.grid, v.patch, v.tubelet)
    if key not in clips:       # models of one study share the clip layout: read it once
      clips[key], _ = probe.labelled_clips(*key, data=data, data_dir=data_dir, split=split,
                                           videos=videos, sampler=sampler, rate=rate)
    d = attention_distance(encoder, clips[key], frame_spacing=frame_spacing, batch=batch,
                           desc=f"attention distance: {name}")
    results[name] = d
    uniform[name] = float(distance_matrix(encoder.grid, v.patch, v.tubelet, frame_spacing).mean())
    numbers[name] = dict(checkpoint=path, layers=v.depth, heads=v.heads, patch=v.patch,
                         tubelet=v.tubelet, grid=list(encoder.grid),
                         videos=len(clips[key]), distance=d.round(4).tolist(),
                         mean_per_layer=d.mean(axis=1).round(4).tolist(),
                         uniform_attention=round(uniform[name], 4))
  space = ("spatial distance between patch centres" if frame_spacing == 0 else
           f"distance with {frame_spacing:g} pixels per frame of time")
  note = f"{space}; {data}:{split}, one view per video, whole clips"
  plot_attention_distance(results, os.path.join(out_dir, "attention_distance.png"), note,
                          uniform)
  report = dict(units="pixels of the input clip", frame_spacing=frame_spacing, data=data,
                split=split, note=note, models=numbers)
  write_json(os.path.join(out_dir, "attention_distance.json"), report)
  return report


# ----------------------------------------------------------------- per-class accuracy

def class_names(workdir: str, num_classes: int) -> list[str]:
  """Class names of a run's dataset: the motions for moving_digits, else 'class i'."""
  config = _read_json(os.path.join(workdir, "config.json"), default={})
  if config.get("data", {}).get("name") == "moving_digits":
    return list(moving_digits.MOTIONS)
  return [f"class {i}" for i in range(num_classes)]


def per_class_report(run_a: str, run_b: str, out_dir: str, *, names: tuple[str, str] | None = None,
                     top: int | None = None) -> dict:
  """Per-class test accuracy of two fine-tuning runs → out_dir/per_class.{png,json}.

  Classes are sorted by accuracy(b) − accuracy(a), largest first (top to
  bottom in the plot); `top` keeps the `top` classes with the largest absolute
  difference (Figure S3 shows 14 of SSV2's 174).
  """
  a, b = (_read_json(os.path.join(r, "test_results.json")) for r in (run_a, run_b))
  os.makedirs(out_dir, exist_ok=True)
  if len(a["per_class"]) != len(b["per_class"]):
    raise errors.BadInput(f"{run_a} and {run_b} were tested on different class sets "
                          f"({len(a['per_class'])} vs {len(b['per_class'])} classes)")
  names = names or (os.path.basename(os.path.normpath(run_a)),
                    os.path.basename(os.path.normpath(run_b)))
  labels = class_names(run_a, len(a["per_class"]))
  # A class without test videos has accuracy None: NaN here, sorted last, null in the JSON.
  acc_a, acc_b = (np.asarray([np.nan if x is None else x for x in r["per_class"]], float)
                  for r in (a, b))
  diff = acc_b - acc_a
  order = np.argsort(-np.nan_to_num(np.abs(diff), nan=-1.0), kind="stable")
  order = sorted(order[:top] if top else order,
                 key=lambda i: (np.isnan(diff[i]), -np.nan_to_num(diff[i])))
  number = lambda x: None if np.isnan(x) else float(x)
  rows = [dict(cls=labels[i], index=int(i), count=int(a["class_counts"][i]),
               **{names[0]: number(acc_a[i]), names[1]: number(acc_b[i])},
               difference=number(diff[i])) for i in order]
  report = dict(a=run_a, b=run_b, names=list(names),
                top1={names[0]: a["top1"], names[1]: b["top1"]}, classes=rows)
  plot_per_class(report, os.path.join(out_dir, "per_class.png"))
  write_json(os.path.join(out_dir, "per_class.json"), report)
  return report


def plot_per_class(report: dict, path: str) -> Figure:
  """per_class_report's rows as paired horizontal bars, top to bottom as in the JSON."""
  rows, names = report["classes"], report["names"]
  fig, ax = plt.subplots(figsize=(7.6, 0.45 * len(rows) + 1.4), layout="constrained")
  y = np.arange(len(rows))
  for offset, name in ((-0.2, names[0]), (0.2, names[1])):
    bars = ax.barh(y + offset, [np.nan if r[name] is None else r[name] for r in rows],
                   height=0.4, label=f"{name} (top-1 {report['top1'][name]:.3f})")
    ax.bar_label(bars, fmt="%.2f", fontsize=6, padding=2)   # zero bars are otherwise invisible
  ax.set_yticks(y, [f"{r['cls']} (no test videos)" if r["difference"] is None else
                    f"{r['cls']} ({r['difference']:+.2f})" for r in rows])
  ax.invert_yaxis()
  ax.set_xlabel("test accuracy")
  ax.set_xlim(0, 1)
  legend_outside(fig, [ax], fontsize=8)
  ax.set_title(f"Per-class accuracy, sorted by {names[1]} − {names[0]}", fontsize=9)
  return save(fig, path)


# ----------------------------------------------------------------- curves

def metric_rows(workdir: str) -> list[dict]:
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f if line.strip()]


def plot_pretrain_losses(runs: dict[str, str], path: str) -> Figure:
  """One panel per loss term, one line per run (training rows of metrics.jsonl)."""
  rows = {name: [r for r in metric_rows(w) if "split" not in r] for name, w in runs.items()}
  terms = [t for t in LOSS_TERMS if any(t in r for rs in rows.values() for r in rs)]
  fig, axes = plt.subplots(1, len(terms), figsize=(3.6 * len(terms) + 1.4, 3.2), squeeze=False,
                           layout="constrained")
  for ax, term in zip(axes[0], terms):
    values = []
    for i, (name, rs) in enumerate(rows.items()):
      points = [(r["step"], r[term]) for r in rs if term in r]
      if points:   # a run's colour is the same in every panel, also where others lack the term
        ax.plot(*zip(*points), label=name, color=f"C{i}")
        values += [v for _, v in points]
    ax.set_title(term, fontsize=9)
    ax.set_xlabel("step")
    # Alignment terms span orders of magnitude (and sit far above the pixel loss).
    if values and min(values) > 0 and max(values) > 10 * min(values):
      ax.set_yscale("log")
    ax.grid(alpha=0.3, which="both")
  legend_outside(fig, axes[0], fontsize=7)
  fig.suptitle("Pre-training losses (loss = weighted sum; rec: normalised pixels, "
               "dir/gen: alignment with the teacher's features)", fontsize=9)
  return save(fig, path)


def plot_finetune_curves(runs: dict[str, str], path: str) -> Figure:
  """Training loss, and validation top-1 with the final multi-view test top-1 as a star."""
  fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10.4, 3.2), layout="constrained")
  for i, (name, workdir) in enumerate(runs.items()):
    rows = metric_rows(workdir)
    train = [(r["step"], r["loss"]) for r in rows if "split" not in r and "loss" in r]
    val = [(r["step"], r["top1"]) for r in rows if r.get("split") == "val"]
    test = [(r["step"], r["top1"], r.get("views")) for r in rows if r.get("split") == "test"]
    if train:
      ax_loss.plot(*zip(*train), label=name, color=f"C{i}")
    if val:
      ax_acc.plot(*zip(*val), marker=".", label=f"{name} (val)", color=f"C{i}")
    for step, top1, views in test:
      ax_acc.scatter([step], [top1], marker="*", s=90, color=f"C{i}",
                     label=f"{name} test, {views} views: {top1:.3f}")
  ax_loss.set(title="fine-tuning loss", xlabel="step")
  ax_acc.set(title="top-1", xlabel="step", ylim=(0, 1))
  for ax in (ax_loss, ax_acc):
    ax.grid(alpha=0.3)
  legend_outside(fig, (ax_loss, ax_acc), fontsize=7)
  return save(fig, path)


# ----------------------------------------------------------------- reconstructions

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


def masked_pixel_losses(models: dict, videos: np.ndarray, codes: np.ndarray, patch: int,
                        tubelet: int, batch: int = 16) -> dict[str, float]:
  """The pre-training reconstruction loss (MSE of per-patch normalised pixels on the
  student-masked tokens) of every model on uint8 `videos` under masking `codes`,
  beside two trivial predictors: 0 everywhere (`zero`) and the nearest visible
  token's target copied (`neighbour_copy`)."""
  t = videos.shape[1] // tubelet
  grid = (t, videos.shape[2] // patch, videos.shape[3] // patch)
  counts = _counts(codes)
  sums = {name: 0.0 for name in ("zero", "neighbour_copy", *models)}
  for start in range(0, len(videos), batch):
    video = losses.normalize(jnp.asarray(videos[start:start + batch]))
    code = codes[start:start + batch]
    idx = masking.indices(jnp.asarray(code), counts)
    all_targets = np.asarray(losses.pixel_targets(video, patch, tubelet))
    target = np.asarray(vit.gather_tokens(jnp.asarray(all_targets), idx.masked))
    preds = {"zero": np.zeros_like(target),
             "neighbour_copy": neighbour_copy(all_targets, code, grid)}
    preds.update({name: np.asarray(m(video, idx)["pred"], np.float32)
                  for name, m in models.items()})
    for name, pred in preds.items():
      sums[name] += float(np.square(pred - target).mean()) * len(code)
  return {name: s / len(videos) for name, s in sums.items()}


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


def reconstructions_report(runs: dict[str, str], out_dir: str, *, videos: int = 2,
                           loss_videos: int = 64, student_ratio: float = 0.9,
                           teacher_ratio: float = 0.75, seed: int = 0,
                           data: str = "moving_digits", data_dir: str = "",
                           split: str = "test") -> dict:
  """A few test clips through every pre-training run, one tube mask per clip shared
  by all runs → out_dir/reconstructions.png; the reconstruction loss of every run
  and of the trivial predictors on `loss_videos` test clips → reconstructions.json."""
  # Before any model or clip is read: a fine-tuning run has no pixel decoder to show.
  for name, workdir in runs.items():
    mode = _read_json(os.path.join(workdir, "config.json"), default={}).get("mode")
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
  all_clips, _ = probe.labelled_clips(grid, v.patch, v.tubelet, data=data, data_dir=data_dir,
                                      split=split, videos=max(videos, loss_videos))
  rng = np.random.default_rng(seed)
  # One asymmetric mask per clip for every model: the student-visible tubes are the
  # same for all; teacher-only tokens matter to AMD students' alignment heads alone.
  all_codes = np.stack([masking.tube_mask(rng, grid, student_ratio, teacher_ratio)
                        for _ in all_clips])
  pixel_losses = masked_pixel_losses(models, all_clips, all_codes, v.patch, v.tubelet)
  clips, codes = all_clips[:videos], all_codes[:videos]
  panels = {"original": clips / 255.0,
            f"input ({student_ratio:.0%} masked)": masked_input(clips, codes, grid, v.patch,
                                                                v.tubelet),
            "zero prediction": reconstruct(None, clips, codes, v.patch, v.tubelet)}
  for name, model in models.items():
    panels[name] = reconstruct(model, clips, codes, v.patch, v.tubelet)
  # The first frame of every tubelet: its second frame holds the same tokens, and
  # the noisy texture makes every extra frame cost ~50 kB of PNG.
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
      loss=pixel_losses, videos=len(all_clips), data=data, split=split,
      student_ratio=student_ratio, seed=seed,
      note=("MSE of per-patch normalised pixels on the student-masked tokens (the "
            "pre-training loss_rec), one tube mask per clip shared by every model; "
            "zero: a prediction of 0; neighbour_copy: the nearest visible token's target "
            "of the same time slice"))
  write_json(os.path.join(out_dir, "reconstructions.json"), report)
  return report


# ----------------------------------------------------------------- command line

def _read_json(path: str, default=None):
  if not os.path.isfile(path):
    if default is not None:
      return default
    raise errors.BadInput(f"{path} does not exist (a fine-tuning run writes it after its test)")
  with open(path) as f:
    return json.load(f)


def write_json(path: str, obj) -> None:
  """Writes obj as JSON atomically (a reader never sees half a file)."""
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=2)
  os.replace(tmp, path)


def named_paths(items: list[str]) -> dict[str, str]:
  """'NAME=PATH' or 'PATH' (named after its folder) → {name: path}."""
  out = {}
  for item in items:
    m = re.fullmatch(r"(\w+)=(.+)", item)
    name, path = (m.group(1), m.group(2)) if m else (
        os.path.basename(os.path.normpath(item)), item)
    out[name] = path
  return out


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(prog="python -m amd_jax.analysis", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = parser.add_subparsers(dest="command", required=True)
  p = sub.add_parser("attention-distance", help="Figure S2: mean attention distance")
  p.add_argument("--checkpoint", action="append", required=True, metavar="[NAME=]PATH")
  p.add_argument("--data", default="moving_digits")
  p.add_argument("--data_dir", default="")
  p.add_argument("--split", default="test")
  p.add_argument("--videos", type=int, default=64, help="test videos (one view each)")
  p.add_argument("--sampler", default="dense", choices=("dense", "segments"))
  p.add_argument("--rate", type=int, default=2, help="frame step of the dense sampler")
  p.add_argument("--frame-spacing", type=float, default=0.0,
                 help="pixels per frame of time difference (0: spatial distance only)")
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--out", required=True)
  p = sub.add_parser("per-class", help="Figure S3: per-class accuracy of two fine-tuned runs")
  p.add_argument("--a", required=True, help="fine-tuning workdir (has test_results.json)")
  p.add_argument("--b", required=True)
  p.add_argument("--names", nargs=2, metavar=("NAME_A", "NAME_B"))
  p.add_argument("--top", type=int, help="only the classes with the largest differences")
  p.add_argument("--out", required=True)
  p = sub.add_parser("curves", help="pre-training losses and fine-tuning curves")
  p.add_argument("--run", action="append", required=True, metavar="[NAME=]WORKDIR")
  p.add_argument("--finetune", action="store_true", help="the runs are fine-tuning runs")
  p.add_argument("--out", required=True)
  p = sub.add_parser("reconstructions", help="test clips through pre-training checkpoints")
  p.add_argument("--run", action="append", required=True, metavar="[NAME=]WORKDIR")
  p.add_argument("--videos", type=int, default=2)
  p.add_argument("--out", required=True)
  p = sub.add_parser("probe", help="linear probe on frozen encoder features")
  p.add_argument("--checkpoint", action="append", required=True, metavar="[NAME=]PATH")
  p.add_argument("--data", default="moving_digits")
  p.add_argument("--data_dir", default="")
  p.add_argument("--splits", nargs=3, default=("train", "val", "test"),
                 metavar=("TRAIN", "VAL", "TEST"))
  p.add_argument("--videos", type=int, help="at most this many videos per split (default: all)")
  p.add_argument("--batch", type=int, default=32)
  p.add_argument("--out", required=True)
  args = parser.parse_args(argv)

  try:
    if args.command == "attention-distance":
      report = attention_distance_report(
          named_paths(args.checkpoint), args.out, data=args.data, data_dir=args.data_dir,
          split=args.split, videos=args.videos, sampler=args.sampler, rate=args.rate,
          frame_spacing=args.frame_spacing, batch=args.batch)
      for name, m in report["models"].items():
        print(f"{name}: mean distance per layer (px) "
              + " ".join(f"{x:.1f}" for x in m["mean_per_layer"]))
    elif args.command == "per-class":
      report = per_class_report(args.a, args.b, args.out, names=args.names, top=args.top)
      for row in report["classes"]:
        print(f"{row['cls']:>16}: {row['difference']:+.3f}")
    elif args.command == "curves":
      os.makedirs(args.out, exist_ok=True)
      plot = plot_finetune_curves if args.finetune else plot_pretrain_losses
      plot(named_paths(args.run), os.path.join(
          args.out, "finetune_curves.png" if args.finetune else "pretrain_losses.png"))
    elif args.command == "probe":
      report = probe.probe_report(named_paths(args.checkpoint), data=args.data,
                                  data_dir=args.data_dir, splits=tuple(args.splits),
                                  videos=args.videos, batch=args.batch)
      os.makedirs(args.out, exist_ok=True)
      write_json(os.path.join(args.out, "probe.json"), report)
      for name, m in report["models"].items():
        print(f"{name}: probe test top-1 {m['test_top1']:.3f} (val {m['val_top1']:.3f}, "
              f"L2 {m['l2']:g})")
    else:
      reconstructions_report(named_paths(args.run), args.out, videos=args.videos)
  except (errors.BadInput, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
