"""What every analysis writes: figures (PNG through the Agg backend) and JSON."""

from __future__ import annotations

import json
import os

import matplotlib

matplotlib.use("Agg")   # files only: no display on servers and CI
from matplotlib import pyplot as plt  # noqa: E402  (after the backend is chosen)
from matplotlib.figure import Figure  # noqa: E402

from amd_jax import errors  # noqa: E402


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
  returns it, still drawable, for callers that inspect the layout. Its folder is made
  here, once there is something to write."""
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  fig.savefig(path, dpi=dpi, bbox_inches="tight")
  plt.close(fig)
  return fig



def read_json(path: str, default=None):
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
