"""Linear probe: what a pre-trained encoder's frozen features know of the labels.

  python -m amd_jax.analysis probe --checkpoint NAME=PATH [...] --out DIR \
      [--data moving_digits --splits train val test --blocks all]

Every video's centre clip (one view, the test views' dense rule) goes through
the frozen encoder; its output tokens (after the final norm, when the encoder
has one) are mean-pooled into one feature vector, the input the fine-tuned
classifier's head gets. Features are standardised with the train split's mean
and std; a multinomial logistic regression is fitted on the train split with
L-BFGS to convergence, once per L2 strength of `L2_GRID`; the strength with the
best validation top-1 is kept (the stronger on a tie) and its test top-1
reported. Nothing of the encoder is trained, so the number compares what
pre-training put into the features, without a fine-tuning recipe in between.

`--blocks` probes the residual stream after chosen blocks as well (mean-pooled
the same way, no norm): a masked autoencoder's last blocks serve its pixel
decoder, so what it knows of the labels can peak in a middle block, and the
output alone would hide it.

Any checkpoint `amd_jax.pretrained.load` reads works but a fine-tuned one (its
features were trained on the labels).
"""

from __future__ import annotations

import functools
import logging
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import tqdm
from flax import nnx
from matplotlib import pyplot as plt
from matplotlib.figure import Figure

from amd_jax import errors, losses, pretrained
from amd_jax.analysis.output import legend_outside, save
from amd_jax.data import pipeline, sources
from amd_jax.models import heads, pretrain, vit

log = logging.getLogger("amd_jax")

# L2 strengths tried (on the mean cross-entropy, times ½‖W‖²).
L2_GRID = (1e-4, 1e-3, 1e-2, 1e-1)
LBFGS_STEPS = 300


def load_encoder(path: str) -> vit.Encoder:
  """The encoder of a pre-training or encoder checkpoint; a fine-tuned classifier is
  refused (a detection run never loads: convert refuses it)."""
  model = pretrained.load(path)
  if isinstance(model, heads.Classifier):
    raise errors.BadInput(f"{path} is a fine-tuned classifier: the probe measures pre-trained "
                          "encoders, whose features never saw the labels")
  return model.encoder if isinstance(model, pretrain.Pretrainer) else model


def labelled_clips(encoder_grid: tuple[int, int, int], patch: int, tubelet: int, *,
                   data: str = "moving_digits", data_dir: str = "", split: str = "test",
                   videos: int | None = None, sampler: str = "dense", rate: int = 2,
                   desc: str = "") -> tuple[np.ndarray, np.ndarray]:
  """The first view (first clip, centre crop) of the first `videos` videos of a
  split (None: all), sized for the encoder: uint8 (V, T, H, W, 3) and labels (V,).
  Undecodable videos are left out."""
  t, h, w = encoder_grid
  if h != w:
    raise errors.BadInput(f"a {h}×{w} token grid: only square clips are read here")
  views = pipeline.Views(sampler, t * tubelet, rate, h * patch, clips=1, crops=1)
  records = sources.open_split(data, split, data_dir)
  n = len(records) if videos is None else min(videos, len(records))
  out = [views(records[i]) for i in tqdm.trange(n, desc=desc or f"reading {data}:{split}",
                                                 unit="video", leave=False, dynamic_ncols=True)]
  out = [o for o in out if o["valid"]]
  return (np.stack([o["video"][0] for o in out]),
          np.asarray([o["label"] for o in out], np.int32))


def dataset_classes(data: str, split: str, data_dir: str = "") -> int | None:
  """How many classes a dataset's labels name (None where its builder does not say)."""
  label = sources.open_split(data, split, data_dir).dataset_info.features["label"]
  return getattr(label, "num_classes", None)


def warn_missing_classes(labels: dict[str, np.ndarray], num_classes: int, data: str,
                         videos: int | None) -> None:
  """One line when a split's videos do not cover every class. A warning, not a refusal:
  the probe is still right on what it was given, and a few videos make a quick check
  of the whole path; the number is only not comparable with a probe on whole splits."""
  covered = {role: len(np.unique(y)) for role, y in labels.items()}
  if min(covered.values()) == num_classes:
    return
  log.warning("probe: the %s videos read cover %s of its %d classes: a class the train "
              "split lacks is never predicted, and top-1 counts only the classes the test "
              "split has%s", data, ", ".join(f"{n} ({role})" for role, n in covered.items()),
              num_classes, f"; --videos {videos} reads too few to compare with a probe on "
              "whole splits" if videos else "")


@nnx.jit
def _pooled(encoder: vit.Encoder, video: jnp.ndarray) -> jnp.ndarray:
  x, hidden = encoder(losses.normalize(video))
  return jnp.stack([t.astype(jnp.float32).mean(axis=1) for t in (x, *hidden)])


def features(encoder: vit.Encoder, videos: np.ndarray, *, batch: int = 32,
             desc: str = "features") -> np.ndarray:
  """Mean-pooled tokens of uint8 videos (V, T, H, W, 3): float32 (1 + depth, V, D),
  [0] the output, [l] the residual stream after block l."""
  out = []
  for start in tqdm.trange(0, len(videos), batch, desc=desc, unit="batch", leave=False,
                           dynamic_ncols=True):
    chunk = videos[start:start + batch]
    pad = batch - len(chunk)            # one compiled shape for every batch
    if pad:
      chunk = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), chunk.dtype)])
    out.append(np.asarray(_pooled(encoder, jnp.asarray(chunk)))[:, :batch - pad])
  return np.concatenate(out, axis=1)


@functools.partial(jax.jit, static_argnames=("num_classes",))
def fit_logistic(x: jnp.ndarray, y: jnp.ndarray, l2: float, num_classes: int):
  """Multinomial logistic regression by L-BFGS: (W (D, C), b (C,)), final loss.

  Loss: mean softmax cross-entropy + l2 · ½‖W‖² (the bias is not penalised).
  """
  def loss(params):
    logits = x @ params["w"] + params["b"]
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    return ce + 0.5 * l2 * jnp.sum(params["w"] ** 2)

  params = {"w": jnp.zeros((x.shape[1], num_classes)), "b": jnp.zeros((num_classes,))}
  opt = optax.lbfgs()
  value_and_grad = optax.value_and_grad_from_state(loss)

  def step(carry, _):
    params, state = carry
    value, grad = value_and_grad(params, state=state)
    updates, state = opt.update(grad, state, params, value=value, grad=grad, value_fn=loss)
    return (optax.apply_updates(params, updates), state), value

  (params, _), values = jax.lax.scan(step, (params, opt.init(params)), length=LBFGS_STEPS)
  return params, values[-1]


def top1(params, x: np.ndarray, y: np.ndarray) -> float:
  logits = np.asarray(x @ params["w"] + params["b"])
  return float(np.mean(logits.argmax(axis=1) == y))


def fit(splits: dict[str, tuple[np.ndarray, np.ndarray]], num_classes: int) -> dict:
  """The probe on features {train, val, test: (x (V, D), y (V,))}: the L2 strength
  with the best val top-1 (the stronger on a tie) and its train/val/test top-1."""
  x_train, y_train = splits["train"]
  mean, std = x_train.mean(axis=0), x_train.std(axis=0) + 1e-6
  norm = {k: ((x - mean) / std, y) for k, (x, y) in splits.items()}
  runs = []
  for l2 in L2_GRID:
    params, final = fit_logistic(jnp.asarray(norm["train"][0]), jnp.asarray(y_train), l2,
                                 num_classes)
    runs.append(dict(l2=l2, loss=float(final),
                     **{f"{k}_top1": top1(params, *norm[k]) for k in ("train", "val", "test")}))
  best = max(reversed(runs), key=lambda r: r["val_top1"])
  return dict(best, grid=runs, videos={k: len(y) for k, (_, y) in splits.items()},
              dim=int(x_train.shape[1]))


def random_encoder(variant: str, *, num_frames: int, image_size: int, seed: int) -> vit.Encoder:
  """A pre-training encoder (final norm included) at its random initial weights: the
  probe's control, what the features know before any pre-training."""
  return vit.Encoder(vit.decode_variant(variant), num_frames=num_frames, image_size=image_size,
                     final_norm=True, rngs=nnx.Rngs(seed))


def block_list(text: str) -> tuple[int, ...] | str:
  """--blocks: 'all' (every block of each encoder) or block numbers '1,3' (1-indexed)."""
  if text == "all":
    return text
  try:
    blocks = tuple(int(b) for b in text.split(","))
  except ValueError:
    raise errors.BadInput(f"--blocks {text!r}: 'all' or block numbers such as 1,3") from None
  if min(blocks) < 1:
    raise errors.BadInput(f"--blocks {text!r}: blocks count from 1")
  return blocks


def probe_report(checkpoints: dict[str, str | vit.Encoder], *, data: str = "moving_digits",
                 data_dir: str = "", splits: tuple[str, str, str] = ("train", "val", "test"),
                 videos: int | None = None, batch: int = 32,
                 blocks: tuple[int, ...] | str = ()) -> dict:
  """The probe of every checkpoint's encoder (what `analysis probe` writes to probe.json).

  A value is a checkpoint path or an encoder itself (`random_encoder`). videos:
  at most this many videos of each split (None: all). Encoders of one clip
  layout share the decoded clips. blocks: also probe the residual stream after
  these blocks (1-indexed; 'all': every one), under each model's `blocks`.
  """
  encoders = {name: c if isinstance(c, vit.Encoder) else load_encoder(c)
              for name, c in checkpoints.items()}
  for name, encoder in encoders.items():
    if blocks != "all" and blocks and max(blocks) > encoder.variant.depth:
      raise errors.BadInput(f"{name} has {encoder.variant.depth} blocks: no block {max(blocks)}")
  clips, classes, report = {}, {}, {}
  named = dataset_classes(data, splits[0], data_dir)
  for name, encoder in encoders.items():
    v = encoder.variant
    key = (encoder.grid, v.patch, v.tubelet)
    if key not in clips:
      clips[key] = {role: labelled_clips(*key, data=data, data_dir=data_dir, split=split,
                                         videos=videos)
                    for role, split in zip(("train", "val", "test"), splits)}
      # Without a count from the dataset, the labels read are all there is to go by.
      classes[key] = named or int(max(y.max() for _, y in clips[key].values())) + 1
      warn_missing_classes({k: y for k, (_, y) in clips[key].items()}, classes[key], data,
                           videos)
    num_classes = classes[key]
    feats = {role: (features(encoder, x, batch=batch, desc=f"probe features: {name} {role}"), y)
             for role, (x, y) in clips[key].items()}
    source = checkpoints[name]
    report[name] = dict(checkpoint=source if isinstance(source, str) else "random initial weights",
                        classes=num_classes,
                        **fit({k: (x[0], y) for k, (x, y) in feats.items()}, num_classes))
    chosen = range(1, encoder.variant.depth + 1) if blocks == "all" else blocks
    if chosen:
      report[name]["blocks"] = {str(b): fit({k: (x[b], y) for k, (x, y) in feats.items()},
                                            num_classes) for b in chosen}
  return dict(data=data, splits=dict(zip(("train", "val", "test"), splits)),
             method=("mean-pooled final tokens (under `blocks`: the residual stream after "
                     "each block), standardised; multinomial logistic regression "
                     f"(L-BFGS, {LBFGS_STEPS} steps), L2 from {list(L2_GRID)} by val top-1"),
             models=report)


def by_block(report: dict) -> dict[str, dict[int, list[float]]]:
  """Test top-1 per block of every model of a probe report with `blocks`, seeds
  ('NAME/seed_S') gathered under NAME: {NAME: {block: [top-1 per seed]}}."""
  out: dict[str, dict[int, list[float]]] = {}
  for name, m in report["models"].items():
    group = re.sub(r"/seed_\d+$", "", name)
    for block, b in m.get("blocks", {}).items():
      out.setdefault(group, {}).setdefault(int(block), []).append(b["test_top1"])
  return out


def plot_blocks(report: dict, path: str) -> Figure:
  """Probe test top-1 after each block, against the block's depth as a fraction of
  its encoder's (so encoders of other depths line up): mean over seeds, ± std."""
  fig, ax = plt.subplots(figsize=(6.4, 3.4), layout="constrained")
  for i, (name, blocks) in enumerate(by_block(report).items()):
    depth = max(blocks)
    x = [b / depth for b in sorted(blocks)]
    mean = np.array([np.mean(blocks[b]) for b in sorted(blocks)])
    std = np.array([np.std(blocks[b], ddof=1) if len(blocks[b]) > 1 else 0.0
                    for b in sorted(blocks)])
    seeds = len(blocks[depth])
    ax.plot(x, mean, marker="o", color=f"C{i}",
            label=f"{name} ({depth} blocks" + (f", {seeds} seeds)" if seeds > 1 else ")"))
    ax.fill_between(x, mean - std, mean + std, color=f"C{i}", alpha=0.15)
  ax.set_xlabel("block / depth (residual stream after it, mean-pooled)")
  ax.set_ylabel("probe test top-1")
  ax.grid(alpha=0.3)
  legend_outside(fig, [ax], fontsize=7)
  fig.suptitle("Linear probe after each block", fontsize=9)
  return save(fig, path)
