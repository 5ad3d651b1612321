"""Tube masks as per-token codes, and the gather indices the models derive from them.

A mask is one int8 code per token, in the encoder's flattened (t, h, w) order:

  0 = STUDENT   visible to the student (and so to the teacher),
  1 = DIFF      visible to the teacher only,
  2 = HIDDEN    hidden from both (reconstruction target with the student's masked tokens).

VideoMAE masks use only codes 0 and 2. Counts are fixed by the config, so every
clip has the same number of tokens in each group and shapes stay static
(docs/method.md#masking). Masks are drawn in the input pipeline with numpy from the
sample's own seed; the models turn them into indices with stable argsorts
(docs/method.md#token-order).
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

from amd_jax import errors

STUDENT, DIFF, HIDDEN = 0, 1, 2


def num_masked(ratio: float, n: int) -> int:
  """Masked count the official generators use: `int(ratio * n)` (0.9·196 → 176)."""
  return int(ratio * n)


@dataclasses.dataclass(frozen=True)
class MaskCounts:
  """Token counts of one clip, identical for every clip of a run."""

  tokens: int      # all tokens (1568 for 16×224×224 and 2×16×16 tubelets)
  student: int     # visible to the student (160)
  teacher: int     # visible to the teacher: student ++ diff (392)

  @property
  def diff(self) -> int:
    return self.teacher - self.student

  @property
  def masked(self) -> int:
    """Tokens the student reconstructs (all it does not see: 1408)."""
    return self.tokens - self.student


def tube_counts(grid: tuple[int, int, int], student_ratio: float,
                teacher_ratio: float | None = None) -> MaskCounts:
  """Counts for a token grid (t, h, w) with the same spatial pattern in every slice.

  Without a teacher ratio the teacher count equals the student count (VideoMAE).
  """
  t, h, w = grid
  per_slice = h * w
  student = per_slice - num_masked(student_ratio, per_slice)
  teacher = student
  if teacher_ratio is not None:
    teacher = per_slice - num_masked(teacher_ratio, per_slice)
    if teacher <= student:
      raise errors.BadInput(
          f"teacher mask ratio {teacher_ratio} must hide fewer tokens than the "
          f"student's {student_ratio} ({per_slice - teacher} vs "
          f"{per_slice - student} of {per_slice} per slice)")
  return MaskCounts(tokens=t * per_slice, student=t * student, teacher=t * teacher)


def random_counts(num_tokens: int, student_ratio: float,
                  teacher_ratio: float | None = None) -> MaskCounts:
  """Counts for plain per-token random masking (image mode: no tubes)."""
  return tube_counts((1, 1, num_tokens), student_ratio, teacher_ratio)


def _codes(rng: np.random.Generator, n: int, student_ratio: float,
           teacher_ratio: float | None) -> np.ndarray:
  # The official layout before shuffling: visible zeros, then the student's
  # masked ones, of which the last int(r_t·n) are overwritten with 2.
  v = np.zeros(n, np.int8)
  v[n - num_masked(student_ratio, n):] = DIFF
  if teacher_ratio is None:
    v[v == DIFF] = HIDDEN
  else:
    hidden = num_masked(teacher_ratio, n)
    if hidden:
      v[n - hidden:] = HIDDEN
  rng.shuffle(v)
  return v


def tube_mask(rng: np.random.Generator, grid: tuple[int, int, int],
              student_ratio: float, teacher_ratio: float | None = None) -> np.ndarray:
  """One clip's codes, (t·h·w,) int8: a shuffled spatial pattern tiled over time.

  With `teacher_ratio` this is AMD's asymmetric mask (codes 0/1/2, teacher visible
  ⊃ student visible); without it VideoMAE's tube mask (codes 0/2).
  """
  tube_counts(grid, student_ratio, teacher_ratio)  # validates the ratios
  t, h, w = grid
  return np.tile(_codes(rng, h * w, student_ratio, teacher_ratio), t)


def random_mask(rng: np.random.Generator, num_tokens: int, student_ratio: float,
                teacher_ratio: float | None = None) -> np.ndarray:
  """Per-token random mask (image mode), codes as `tube_mask`."""
  random_counts(num_tokens, student_ratio, teacher_ratio)
  return _codes(rng, num_tokens, student_ratio, teacher_ratio)


@dataclasses.dataclass(frozen=True)
class MaskIndices:
  """Gather indices into the token axis, each (B, n) int32, ascending within a group.

  student: the student encoder's tokens.
  teacher: the teacher's input, [student ++ diff] (docs/method.md#token-order).
  diff:    the generators' targets (teacher[:, counts.student:]).
  masked:  the decoder's targets, every token the student does not see.
  """

  student: jnp.ndarray
  teacher: jnp.ndarray
  diff: jnp.ndarray
  masked: jnp.ndarray


def indices(codes: jnp.ndarray, counts: MaskCounts) -> MaskIndices:
  """Derives the gather indices from codes (B, N) with stable argsorts."""
  by_code = jnp.argsort(codes, axis=-1, stable=True).astype(jnp.int32)
  by_visible = jnp.argsort(codes > STUDENT, axis=-1, stable=True).astype(jnp.int32)
  return MaskIndices(
      student=by_code[:, :counts.student],
      teacher=by_code[:, :counts.teacher],
      diff=by_code[:, counts.student:counts.teacher],
      masked=by_visible[:, counts.student:],
  )
