"""Temporal sampling rules and crop placement against hand-worked examples
(docs/method.md#data-pipeline)."""

import numpy as np
import pytest

from amd_jax.data import sampling, transforms


class Scripted:
  """A stand-in numpy Generator whose `integers` returns scripted values (checked in range)."""

  def __init__(self, *values):
    self.values = list(values)

  def integers(self, low, high=None, size=None):
    low, high = (0, low) if high is None else (low, high)
    if size is not None:
      out = np.asarray([self.values.pop(0) for _ in range(size)])
      assert ((low <= out) & (out < high)).all(), (out, low, high)
      return out
    v = self.values.pop(0)
    assert low <= v < high, (v, low, high)
    return v


def test_dense_k400_pretraining():
  # Start uniform in [0, n − 64]; the last start 36 of a 100-frame video reaches frame 96.
  np.testing.assert_array_equal(sampling.dense(Scripted(36), 100, 16, 4), np.arange(36, 97, 4))
  np.testing.assert_array_equal(sampling.dense(Scripted(0), 64, 16, 4), np.arange(0, 61, 4))
  # Shorter than the span: start 0, and the clip stops advancing before the end.
  np.testing.assert_array_equal(sampling.dense(Scripted(), 20, 16, 4),
                                [0, 4, 8, 12] + [16] * 12)
  np.testing.assert_array_equal(sampling.dense(Scripted(), 10, 4, 4), [0, 4, 8, 8])


def test_span_ssv2_pretraining():
  # 16 frames over a 32-frame window ending at `end` ∈ [32, n − 1].
  np.testing.assert_array_equal(sampling.span(Scripted(32), 50, 16, 2),
                                [0, 2, 4, 6, 8, 10, 12, 14, 17, 19, 21, 23, 25, 27, 29, 31])
  np.testing.assert_array_equal(sampling.span(Scripted(49), 50, 16, 2),
                                [17, 19, 21, 23, 25, 27, 29, 31, 34, 36, 38, 40, 42, 44, 46, 48])
  # No longer than the span: linspace(0, 20, 10) padded with 20, clipped to 19.
  np.testing.assert_array_equal(sampling.span(Scripted(), 20, 16, 2),
                                [0, 2, 4, 6, 8, 11, 13, 15, 17, 19] + [19] * 6)


def test_span_k400_finetuning():
  np.testing.assert_array_equal(sampling.span(Scripted(64), 300, 16, 4),
                                [0, 4, 8, 12, 17, 21, 25, 29, 34, 38, 42, 46, 51, 55, 59, 63])


def test_tsn_segments():
  # 50 frames: 16 segments of 3, one random frame in each.
  np.testing.assert_array_equal(sampling.segments(Scripted(*[0] * 16), 50, 16), np.arange(0, 46, 3))
  np.testing.assert_array_equal(sampling.segments(Scripted(*[2] * 16), 50, 16), np.arange(2, 48, 3))
  drawn = Scripted(1, 0, 2, 1, 0, 2, 1, 0, 2, 1, 0, 2, 1, 0, 2, 1)
  np.testing.assert_array_equal(sampling.segments(drawn, 48, 16)[:4], [1, 3, 8, 10])
  np.testing.assert_array_equal(sampling.segments(Scripted(), 10, 16), np.zeros(16))


def test_dense_test_views_k400():
  # Every 4th frame of 100 (25 decoded); 5 clips start at int(k · 9 / 4) = 0, 2, 4, 6, 9.
  views = sampling.test_clips_dense(100, 16, 4, 5)
  assert views.shape == (5, 16)
  for clip, start in zip(views, (0, 2, 4, 6, 9)):
    np.testing.assert_array_equal(clip, np.arange(start * 4, start * 4 + 64, 4))
  # 30 frames: 8 decoded, padded with the last; every clip is the same.
  short = sampling.test_clips_dense(30, 16, 4, 5)
  np.testing.assert_array_equal(short, np.tile([0, 4, 8, 12, 16, 20, 24, 28] + [28] * 8, (5, 1)))


def test_segment_test_views_ssv2():
  # tick 2: clip 0 takes the segment starts, clip 1 the centres.
  views = sampling.test_clips_segments(32, 16, 2)
  np.testing.assert_array_equal(views, [np.arange(0, 32, 2), np.arange(1, 32, 2)])
  # tick 1.25: starts int(1.25 x), centres int(0.625 + 1.25 x).
  views = sampling.test_clips_segments(20, 16, 2)
  np.testing.assert_array_equal(views[0], [0, 1, 2, 3, 5, 6, 7, 8, 10, 11, 12, 13, 15, 16, 17, 18])
  np.testing.assert_array_equal(views[1], [0, 1, 3, 4, 5, 6, 8, 9, 10, 11, 13, 14, 15, 16, 18, 19])


def test_test_crops_along_the_long_side():
  assert sampling.crop_offsets(298, 224) == [0, 37, 74]
  assert sampling.crop_offsets(299, 224) == [0, 37, 75]
  assert sampling.crop_offsets(224, 224) == [0, 0, 0]
  assert sampling.crop_offsets(298, 224, crops=1) == [37]      # one crop: the centre
  video = np.arange(2 * 4 * 7 * 3).reshape(2, 4, 7, 3).astype(np.uint8)   # H 4 < W 7
  crops = transforms.three_crops(video, 4)
  assert crops.shape == (3, 2, 4, 4, 3)
  for crop, left in zip(crops, (0, 1, 3)):   # int(c · 3 / 2)
    np.testing.assert_array_equal(crop, video[:, :, left:left + 4])
  tall = np.swapaxes(video, 1, 2)            # H 7 > W 4: crops move down
  for crop, top in zip(transforms.three_crops(tall, 4), (0, 1, 3)):
    np.testing.assert_array_equal(crop, tall[:, top:top + 4])


def test_multi_scale_crop_placement():
  # 320×240 → sides int(240 s) = 240, 210, 180, 158; the 10 pairs with |i − j| ≤ 1 in
  # the official order; pair 4 = (w 180, h 210); offset 10 = upper-right quarter (3, 1)
  # on steps ((320 − 180) // 4, (240 − 210) // 4) = (35, 7).
  assert transforms.multi_scale_crop_params(Scripted(4, 10), 240, 320, 224) == (7, 105, 210, 180)
  assert transforms.multi_scale_crop_params(Scripted(0, 4), 240, 320, 224) == (0, 40, 240, 240)
  # Lower-right corner of the smallest pair (w 158, h 158): (4·20, 4·40).
  assert transforms.multi_scale_crop_params(Scripted(9, 3), 240, 320, 224) == (80, 160, 158, 158)
  # A side within 3 px of the output is snapped to it: 226 → 224 (scale 1 of 226).
  assert transforms.multi_scale_crop_params(Scripted(0, 0), 226, 300, 224)[2:] == (224, 224)


@pytest.mark.parametrize("n", [1, 5, 16, 31, 32, 33, 64, 65, 200])
def test_random_rules_stay_in_range(n):
  rng = np.random.default_rng(n)
  for _ in range(20):
    for index in (sampling.dense(rng, n), sampling.span(rng, n, 16, 2),
                  sampling.span(rng, n, 16, 4), sampling.segments(rng, n)):
      assert index.shape == (16,) and index.min() >= 0 and index.max() < n
  for views in (sampling.test_clips_dense(n), sampling.test_clips_segments(n)):
    assert views.min() >= 0 and views.max() < n
