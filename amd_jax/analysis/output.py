"""What every analysis draws: figures (PNG through the Agg backend). Its JSON goes
through amd_jax/files.py."""

from __future__ import annotations

import os

# The backend is the process's: the command lines choose Agg (quiet.quiet_third_party).
from matplotlib import pyplot as plt
from matplotlib.figure import Figure


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
