"""Metric rows: DIR/metrics.jsonl (one JSON object per row; Writer writes it, read_rows
reads it) and TensorBoard events in DIR/tensorboard/ (amd_jax/workdir.py names both).

Only process 0 writes. On resume, rows after the restored step are dropped:
those steps run again and log again, so the file never holds a step twice.
"""

from __future__ import annotations

import json
import os

import jax

from amd_jax import files
from amd_jax import workdir as workdir_lib


def read_rows(workdir: str) -> list[dict]:
  """Every row of DIR/metrics.jsonl, in the order written."""
  with open(os.path.join(workdir, workdir_lib.METRICS_FILE)) as f:
    return [json.loads(line) for line in f if line.strip()]


class Writer:

  def __init__(self, workdir: str, resume_step: int | None = None):
    self.active = jax.process_index() == 0
    self.path = os.path.join(workdir, workdir_lib.METRICS_FILE)
    self._tb = None
    if not self.active:
      return
    if resume_step is None:
      open(self.path, "w").close()
    else:
      self._truncate_after(resume_step)
    from tensorboardX import SummaryWriter  # only process 0 needs it
    self._tb = SummaryWriter(os.path.join(workdir, workdir_lib.TENSORBOARD_DIR))

  def _truncate_after(self, step: int) -> None:
    if not os.path.exists(self.path):
      return
    with open(self.path) as f:
      rows = [line for line in f if line.strip() and json.loads(line)["step"] <= step]
    files.write_text(self.path, "".join(rows))

  def write(self, row: dict) -> None:
    """row: {'step': int, name: float or str, ...}."""
    if not self.active:
      return
    with open(self.path, "a") as f:
      f.write(json.dumps(row) + "\n")
    prefix = row.get("split", "train")
    for k, v in row.items():
      if k not in ("step", "split") and isinstance(v, (int, float)):
        self._tb.add_scalar(f"{prefix}/{k}", v, row["step"])

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()
