"""Per-class test accuracy of two fine-tuned runs side by side (Figure S3's form)."""

from __future__ import annotations

import os

import numpy as np
from matplotlib import pyplot as plt
from matplotlib.figure import Figure

from amd_jax import errors, files
from amd_jax import workdir as workdir_lib
from amd_jax.analysis.output import legend_outside, save


def class_names(results: dict) -> list[str]:
  """Class names of a test: those test_results.json saved from the dataset's label map,
  else 'class i' (a dataset of numbered classes)."""
  return results.get("classes") or [f"class {i}" for i in range(len(results["per_class"]))]


def per_class_report(run_a: str, run_b: str, out_dir: str, *, names: tuple[str, str] | None = None,
                     top: int | None = None) -> dict:
  """Per-class test accuracy of two fine-tuning runs → out_dir/per_class.{png,json}.

  Classes are sorted by accuracy(b) − accuracy(a), largest first (top to
  bottom in the plot); `top` keeps the `top` classes with the largest absolute
  difference (Figure S3 shows 14 of SSV2's 174).
  """
  a, b = (files.read_json(os.path.join(r, workdir_lib.TEST_RESULTS_FILE),
                          why="a fine-tuning run writes it after its test") for r in (run_a, run_b))
  os.makedirs(out_dir, exist_ok=True)
  if len(a["per_class"]) != len(b["per_class"]):
    raise errors.BadInput(f"{run_a} and {run_b} were tested on different class sets "
                          f"({len(a['per_class'])} vs {len(b['per_class'])} classes)")
  names = names or (os.path.basename(os.path.normpath(run_a)),
                    os.path.basename(os.path.normpath(run_b)))
  labels = class_names(a)
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
  files.write_json(os.path.join(out_dir, "per_class.json"), report)
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
