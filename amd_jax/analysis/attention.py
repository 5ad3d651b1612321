"""Mean attention distance per layer and head (the supplementary's Figure S2)."""

from __future__ import annotations

import os

import jax.numpy as jnp
import numpy as np
import tqdm
from flax import nnx
from matplotlib import pyplot as plt
from matplotlib.cm import ScalarMappable
from matplotlib.colors import BoundaryNorm
from matplotlib.figure import Figure

from amd_jax import files, losses, pretrained
from amd_jax.analysis import probe
from amd_jax.analysis.output import legend_outside, save
from amd_jax.models import vit


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


@nnx.jit
def _layer_distances(encoder: vit.Encoder, video: jnp.ndarray, dist: jnp.ndarray) -> jnp.ndarray:
  """(layers, B, heads) mean attention distance of every block on a normalised video."""
  return jnp.stack([mean_distance(p, dist) for p in encoder.attention_probs(video)])


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
  os.makedirs(out_dir, exist_ok=True)        # once there is something to write
  plot_attention_distance(results, os.path.join(out_dir, "attention_distance.png"), note,
                          uniform)
  report = dict(units="pixels of the input clip", frame_spacing=frame_spacing, data=data,
                split=split, note=note, models=numbers)
  files.write_json(os.path.join(out_dir, "attention_distance.json"), report)
  return report
