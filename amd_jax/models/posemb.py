"""Fixed sinusoid position tables (docs/method.md#position-embedding)."""

import numpy as np


def sinusoid_table(num_positions: int, dim: int) -> np.ndarray:
  """(num_positions, dim) float32 table over the flattened token index.

  Channel j of position p holds sin(p / 10000^(2⌊j/2⌋/dim)) for even j and cos
  of the same angle for odd j: interleaved, not two halves. A numpy constant,
  never a parameter, so it is neither trained nor stored in checkpoints.
  """
  positions = np.arange(num_positions, dtype=np.float64)[:, None]
  exponents = 2 * (np.arange(dim) // 2) / dim
  angles = positions / np.power(10000.0, exponents)[None, :]
  table = np.where(np.arange(dim) % 2 == 0, np.sin(angles), np.cos(angles))
  return table.astype(np.float32)
