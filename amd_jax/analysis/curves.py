"""Training curves from a run's metrics.jsonl: pre-training losses, fine-tuning curves."""

from __future__ import annotations

import json
import os

from matplotlib import pyplot as plt
from matplotlib.figure import Figure

from amd_jax import workdir as workdir_lib
from amd_jax.analysis.output import legend_outside, save

LOSS_TERMS = ("loss", "loss_rec", "loss_dir", "loss_gen")


def metric_rows(workdir: str) -> list[dict]:
  with open(os.path.join(workdir, workdir_lib.METRICS_FILE)) as f:
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
