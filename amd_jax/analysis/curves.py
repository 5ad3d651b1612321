"""Training curves from a run's metrics.jsonl: pre-training losses, fine-tuning curves.

A run's kind (pre-training or fine-tuning) is read from its config.json's mode, or,
without one (the released teacher ships its metrics alone), from its metrics: a
pre-training run logs the pixel loss `loss_rec`, a fine-tuning run top-1.
"""

from __future__ import annotations

import os

from matplotlib import pyplot as plt
from matplotlib.figure import Figure

from amd_jax import errors, files, metrics, task_names
from amd_jax import workdir as workdir_lib
from amd_jax.analysis.output import legend_outside, save

LOSS_TERMS = ("loss", "loss_rec", "loss_dir", "loss_gen")
PRETRAIN, FINETUNE = "pre-training", "fine-tuning"
FIGURE = {PRETRAIN: "pretrain_losses.png", FINETUNE: "finetune_curves.png"}


def run_kind(name: str, workdir: str) -> str:
  """PRETRAIN or FINETUNE (see the module docstring); a run that is not there, or whose
  kind nothing tells, is one line."""
  if not os.path.isdir(workdir):
    raise errors.BadInput(f"curves: run {name}={workdir} does not exist")
  if not os.path.isfile(os.path.join(workdir, workdir_lib.METRICS_FILE)):
    raise errors.BadInput(f"curves: {name}={workdir} has no {workdir_lib.METRICS_FILE}: not a "
                          "training run's workdir, or it has logged nothing yet")
  task = task_names.of(files.read_json(os.path.join(workdir, workdir_lib.CONFIG_FILE), {}))
  if task is not None:
    return PRETRAIN if task in task_names.PRETRAINING else FINETUNE
  rows = metrics.read_rows(workdir)
  if any("loss_rec" in r for r in rows):
    return PRETRAIN
  if any("top1" in r for r in rows):
    return FINETUNE
  raise errors.BadInput(f"curves: cannot tell whether {name}={workdir} is pre-training or "
                        f"fine-tuning: its {workdir_lib.CONFIG_FILE} has no mode and its "
                        f"{workdir_lib.METRICS_FILE} neither loss_rec nor top1")


def summary(name: str, kind: str, workdir: str) -> str:
  """One line of a run's last numbers: its last training row's losses, and for a
  fine-tuning run its last validation and test top-1."""
  rows = metrics.read_rows(workdir)
  train = [r for r in rows if "split" not in r and "loss" in r]
  parts = [f"{t} {train[-1][t]:.4f}" for t in LOSS_TERMS if train and t in train[-1]]
  if kind == FINETUNE:
    val = [r for r in rows if r.get("split") == "val"]
    test = [r for r in rows if r.get("split") == "test"]
    if val:
      parts.append(f"val top-1 {val[-1]['top1']:.3f}")
    if test:
      parts.append(f"test top-1 {test[-1]['top1']:.3f} ({test[-1].get('views')} views)")
  step = max((r["step"] for r in rows if "step" in r), default=0)
  return f"{name}: {kind}, step {step}: {', '.join(parts) or 'nothing logged'}"


def plot_curves(runs: dict[str, str], out_dir: str) -> list[str]:
  """Each run's curves by its kind: pretrain_losses.png for the pre-training runs,
  finetune_curves.png for the fine-tuning ones (both where both kinds are given).
  Returns one summary line per run."""
  kinds = {name: run_kind(name, w) for name, w in runs.items()}   # every run before a plot
  for kind, plot in ((PRETRAIN, plot_pretrain_losses), (FINETUNE, plot_finetune_curves)):
    chosen = {name: w for name, w in runs.items() if kinds[name] == kind}
    if chosen:
      plot(chosen, os.path.join(out_dir, FIGURE[kind]))
  return [summary(name, kinds[name], w) for name, w in runs.items()]


def plot_pretrain_losses(runs: dict[str, str], path: str) -> Figure:
  """One panel per loss term, one line per run (training rows of metrics.jsonl)."""
  rows = {name: [r for r in metrics.read_rows(w) if "split" not in r] for name, w in runs.items()}
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
    rows = metrics.read_rows(workdir)
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
