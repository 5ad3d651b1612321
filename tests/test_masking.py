"""Tube masks, their counts and the gather indices (docs/method.md#masking).

Every expected value here is worked out by hand or with plain numpy, never with
the functions under test.
"""

import jax.numpy as jnp
import numpy as np
import pytest

from amd_jax import errors, masking

# ----------------------------------------------------------------------------- counts


def test_default_amd_counts():
  c = masking.tube_counts((8, 14, 14), 0.9, 0.75)
  # 196 per slice; int(0.9·196) = int(176.4) = 176 masked → 20 visible;
  # int(0.75·196) = int(147.0) = 147 hidden → 49 teacher-visible.
  assert c.tokens == 1568
  assert c.student == 160
  assert c.teacher == 392
  assert c.diff == 232
  assert c.masked == 1408


def test_num_masked_truncates_like_the_official_int():
  assert masking.num_masked(0.9, 196) == 176     # 176.4 → 176
  assert masking.num_masked(0.75, 196) == 147
  assert masking.num_masked(0.9, 10) == 9
  # Python's int() truncation of the float product, as the official code:
  # 0.29·100 = 28.999999999999996 → 28.
  assert masking.num_masked(0.29, 100) == 28


def test_videomae_counts_without_teacher_ratio():
  c = masking.tube_counts((8, 14, 14), 0.9)
  assert (c.tokens, c.student, c.teacher, c.diff, c.masked) == (1568, 160, 160, 0, 1408)
  c = masking.tube_counts((8, 14, 14), 0.9, None)
  assert c.teacher == c.student == 160


def test_small_grid_counts():
  c = masking.tube_counts((3, 4, 4), 0.75, 0.5)
  # 16 per slice: 12 masked → 4 visible; 8 hidden → 8 teacher-visible, 4 diff.
  assert (c.tokens, c.student, c.teacher, c.diff, c.masked) == (48, 12, 24, 12, 36)


@pytest.mark.parametrize("student,teacher", [(0.75, 0.9), (0.9, 0.9), (0.5, 0.75)])
def test_teacher_must_see_more_than_student(student, teacher):
  with pytest.raises(errors.BadInput):
    masking.tube_counts((8, 14, 14), student, teacher)
  with pytest.raises(errors.BadInput):
    masking.random_counts(196, student, teacher)
  with pytest.raises(errors.BadInput):
    masking.tube_mask(np.random.default_rng(0), (2, 4, 4), student, teacher)


def test_random_counts():
  c = masking.random_counts(20, 0.75, 0.5)
  assert (c.tokens, c.student, c.teacher, c.diff, c.masked) == (20, 5, 10, 5, 15)


# ----------------------------------------------------------------------------- tube_mask


@pytest.mark.parametrize("grid,student,teacher,per_slice", [
    ((2, 2, 5), 0.9, 0.6, (1, 3, 6)),    # 10 per slice: 9 masked, 6 hidden
    ((3, 4, 4), 0.75, 0.5, (4, 4, 8)),   # 16 per slice: 12 masked, 8 hidden
    ((4, 3, 3), 0.7, 0.3, (3, 4, 2)),    # 9 per slice: int(6.3)=6 masked, int(2.7)=2 hidden
])
def test_amd_tube_mask_counts_and_consistency(grid, student, teacher, per_slice):
  t, h, w = grid
  for seed in range(5):
    codes = masking.tube_mask(np.random.default_rng(seed), grid, student, teacher)
    assert codes.shape == (t * h * w,) and codes.dtype == np.int8
    assert set(np.unique(codes).tolist()) <= {0, 1, 2}
    slices = codes.reshape(t, h * w)
    for s in slices:
      assert [int(np.sum(s == k)) for k in (0, 1, 2)] == list(per_slice)
    # Tube consistency: the same spatial pattern in every time slice.
    for s in slices[1:]:
      np.testing.assert_array_equal(s, slices[0])
    # Student-visible ⊂ teacher-visible, strictly.
    student_vis = set(np.flatnonzero(codes == 0))
    teacher_vis = set(np.flatnonzero(codes <= 1))
    assert student_vis < teacher_vis
    assert len(student_vis) == t * per_slice[0]
    assert len(teacher_vis) == t * (per_slice[0] + per_slice[1])


def test_videomae_tube_mask_uses_codes_0_and_2():
  grid = (3, 4, 4)
  for seed in range(5):
    codes = masking.tube_mask(np.random.default_rng(seed), grid, 0.75)
    assert set(np.unique(codes).tolist()) == {0, 2}
    slices = codes.reshape(3, 16)
    for s in slices:
      assert int(np.sum(s == 0)) == 4 and int(np.sum(s == 2)) == 12
      np.testing.assert_array_equal(s, slices[0])


def test_teacher_ratio_zero_makes_every_masked_token_diff():
  # int(0·10) = 0 hidden: the teacher sees everything, all 9 masked tokens are diff.
  c = masking.tube_counts((2, 2, 5), 0.9, 0.0)
  assert (c.student, c.teacher, c.diff, c.masked) == (2, 20, 18, 18)
  codes = masking.tube_mask(np.random.default_rng(0), (2, 2, 5), 0.9, 0.0)
  assert [int(np.sum(codes == k)) for k in (0, 1, 2)] == [2, 18, 0]


def test_tube_mask_seeding():
  grid = (3, 4, 4)
  a = masking.tube_mask(np.random.default_rng(7), grid, 0.75, 0.5)
  b = masking.tube_mask(np.random.default_rng(7), grid, 0.75, 0.5)
  np.testing.assert_array_equal(a, b)
  others = [masking.tube_mask(np.random.default_rng(s), grid, 0.75, 0.5) for s in range(8, 12)]
  assert any(not np.array_equal(a, o) for o in others)
  # The generator advances: two draws from one rng differ (with overwhelming odds).
  rng = np.random.default_rng(3)
  draws = [masking.tube_mask(rng, grid, 0.75, 0.5) for _ in range(4)]
  assert any(not np.array_equal(draws[0], d) for d in draws[1:])


def test_tube_mask_is_shuffled_over_all_positions():
  # Over many draws every spatial position is sometimes in each group.
  rng = np.random.default_rng(0)
  seen = np.zeros((3, 16), int)
  for _ in range(200):
    codes = masking.tube_mask(rng, (1, 4, 4), 0.75, 0.5)
    for k in range(3):
      seen[k] += codes == k
  assert (seen > 0).all(), seen


def test_random_mask_counts_and_not_tiled():
  n = 32
  masks = [masking.random_mask(np.random.default_rng(s), n, 0.75, 0.5) for s in range(10)]
  for m in masks:
    assert m.shape == (n,)
    assert [int(np.sum(m == k)) for k in (0, 1, 2)] == [8, 8, 16]
  # Not a tiled pattern: the two halves of a 32-token mask differ for some draw.
  assert any(not np.array_equal(m[:16], m[16:]) for m in masks)
  # And the halves do not even have fixed per-half counts.
  assert len({int(np.sum(m[:16] == 0)) for m in masks}) > 1
  v = masking.random_mask(np.random.default_rng(0), n, 0.75)
  assert [int(np.sum(v == k)) for k in (0, 1, 2)] == [8, 0, 24]


# ----------------------------------------------------------------------------- indices


def test_indices_hand_written():
  codes = jnp.asarray([
      [2, 0, 1, 2, 1, 0, 1, 2],
      [1, 1, 2, 0, 2, 1, 2, 0],
  ], jnp.int8)
  counts = masking.MaskCounts(tokens=8, student=2, teacher=5)
  idx = masking.indices(codes, counts)
  # Row 0: student 1,5; diff 2,4,6; hidden 0,3,7.
  # Row 1: student 3,7; diff 0,1,5; hidden 2,4,6.
  expected = dict(
      student=[[1, 5], [3, 7]],
      teacher=[[1, 5, 2, 4, 6], [3, 7, 0, 1, 5]],
      diff=[[2, 4, 6], [0, 1, 5]],
      masked=[[0, 2, 3, 4, 6, 7], [0, 1, 2, 4, 5, 6]],
  )
  for name, want in expected.items():
    got = getattr(idx, name)
    assert got.dtype == jnp.int32, name
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want), err_msg=name)
  np.testing.assert_array_equal(idx.diff, idx.teacher[:, counts.student:])


def test_indices_videomae_hand_written():
  codes = jnp.asarray([[2, 0, 2, 2, 0, 2], [0, 2, 2, 0, 2, 2]], jnp.int8)
  counts = masking.MaskCounts(tokens=6, student=2, teacher=2)
  idx = masking.indices(codes, counts)
  np.testing.assert_array_equal(idx.student, [[1, 4], [0, 3]])
  np.testing.assert_array_equal(idx.teacher, [[1, 4], [0, 3]])
  assert idx.diff.shape == (2, 0)
  np.testing.assert_array_equal(idx.masked, [[0, 2, 3, 5], [1, 2, 4, 5]])


def test_indices_match_flatnonzero_on_drawn_masks():
  grid = (4, 3, 5)
  counts = masking.tube_counts(grid, 0.8, 0.4)
  rng = np.random.default_rng(1)
  codes = np.stack([masking.tube_mask(rng, grid, 0.8, 0.4) for _ in range(3)])
  idx = masking.indices(jnp.asarray(codes), counts)
  for b, row in enumerate(codes):
    stu, dif, hid = (np.flatnonzero(row == k) for k in (0, 1, 2))
    np.testing.assert_array_equal(idx.student[b], stu)
    np.testing.assert_array_equal(idx.teacher[b], np.concatenate([stu, dif]))
    np.testing.assert_array_equal(idx.diff[b], dif)
    np.testing.assert_array_equal(idx.masked[b], np.sort(np.concatenate([dif, hid])))
    np.testing.assert_array_equal(idx.masked[b], np.flatnonzero(row > 0))
