"""Reconstruction targets and losses, against hand values
(docs/method.md#pixel-targets, docs/method.md#losses)."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from amd_jax import errors, losses

MEAN = np.array([0.485, 0.456, 0.406])
STD = np.array([0.229, 0.224, 0.225])


def _normalised(rgb01: np.ndarray) -> jnp.ndarray:
  return jnp.asarray(((rgb01 - MEAN) / STD).astype(np.float32))


def _reference_targets(rgb01: np.ndarray, patch: int, tubelet: int) -> np.ndarray:
  """The spec's rule, written with explicit loops (float64)."""
  b, t, h, w, c = rgb01.shape
  out = []
  for bi in range(b):
    tokens = []
    for ti in range(t // tubelet):          # token order (t, h, w), w fastest
      for hi in range(h // patch):
        for wi in range(w // patch):
          block = np.zeros((tubelet, patch, patch, c))
          for kt in range(tubelet):
            for kh in range(patch):
              for kw in range(patch):
                block[kt, kh, kw] = rgb01[bi, ti * tubelet + kt, hi * patch + kh,
                                          wi * patch + kw]
          pix = block.reshape(-1, c)        # (kt, kh, kw) rows, channel columns
          normed = np.zeros_like(pix)
          for ch in range(c):               # per channel separately
            v = pix[:, ch]
            normed[:, ch] = (v - v.mean()) / (v.std(ddof=1) + 1e-6)
          tokens.append(normed.reshape(-1))  # (kt, kh, kw, c), channel fastest
    out.append(tokens)
  return np.asarray(out)


def test_pixel_targets_two_pixel_tubelets_by_hand():
  # B=1, T=2, H=W=2, patch 1, tubelet 2: 4 tokens of 2 pixels × 3 channels.
  # For two values a, b: mean (a+b)/2, unbiased std |a−b|/√2, so each entry is
  # ±(|a−b|/2) / (|a−b|/√2 + 1e-6) ≈ ±1/√2.
  rgb = np.zeros((1, 2, 2, 2, 3))
  # token 0 = (h0, w0): channel-wise (frame0, frame1)
  rgb[0, 0, 0, 0] = [0.2, 0.9, 0.5]
  rgb[0, 1, 0, 0] = [0.6, 0.1, 0.5]          # channel 2 constant → 0 (not NaN): eps on std
  # token 1 = (h0, w1): a spread of √2·1e-3 gives std exactly 1e-3
  d = math.sqrt(2) * 1e-3
  rgb[0, 0, 0, 1] = [0.3, 0.3, 0.7]
  rgb[0, 1, 0, 1] = [0.3 + d, 0.3 - d, 0.2]
  # tokens 2, 3 = (h1, w0), (h1, w1)
  rgb[0, 0, 1, 0] = [1.0, 0.0, 0.25]
  rgb[0, 1, 1, 0] = [0.0, 1.0, 0.75]
  rgb[0, 0, 1, 1] = [0.4, 0.45, 0.5]
  rgb[0, 1, 1, 1] = [0.8, 0.35, 0.1]

  got = np.asarray(losses.pixel_targets(_normalised(rgb), patch=1, tubelet=2))
  assert got.shape == (1, 4, 6)

  def pair(a, b):
    s = abs(a - b) / math.sqrt(2)
    return [(a - (a + b) / 2) / (s + 1e-6), (b - (a + b) / 2) / (s + 1e-6)]

  want = np.zeros((4, 2, 3))                 # token, kt, channel
  for tok, (hi, wi) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
    for ch in range(3):
      want[tok, :, ch] = pair(rgb[0, 0, hi, wi, ch], rgb[0, 1, hi, wi, ch])
  want = want.reshape(1, 4, 6)
  # Spot values worked out by hand: token 0 channel 0 (0.2 vs 0.6): −1/√2, +1/√2.
  assert want[0, 0, 0] == pytest.approx(-1 / math.sqrt(2), rel=1e-4)
  assert want[0, 0, 3] == pytest.approx(1 / math.sqrt(2), rel=1e-4)
  assert want[0, 0, 2] == 0.0 and want[0, 0, 5] == 0.0
  # The tiny-spread token: ±(d/2)/(1e-3 + 1e-6) = ±0.7071/1.001 (eps inside the
  # sqrt would give ±0.5; a biased std ±1.0).
  assert want[0, 1, 0] == pytest.approx(-(d / 2) / 1.001e-3)

  assert np.all(np.isfinite(got))
  np.testing.assert_array_equal(got[0, 0, [2, 5]], [0.0, 0.0])
  np.testing.assert_allclose(got, want, rtol=1e-3, atol=2e-4)
  np.testing.assert_allclose(got, _reference_targets(rgb, 1, 2), rtol=1e-3, atol=2e-4)


def test_pixel_targets_layout_patch2():
  # B=2, T=4, H=4, W=6, patch 2, tubelet 2: grid (2, 2, 3), 24 values per token.
  rng = np.random.default_rng(0)
  rgb = rng.uniform(0, 1, (2, 4, 4, 6, 3))
  got = np.asarray(losses.pixel_targets(_normalised(rgb), patch=2, tubelet=2))
  assert got.shape == (2, 12, 24)
  want = _reference_targets(rgb, 2, 2)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
  # Token 4 of clip 1 is (t0, h1, w1): its first entries are pixel (frame 0, row 2,
  # col 2), channels r, g, b, then pixel (frame 0, row 2, col 3).
  tok = rgb[1, 0:2, 2:4, 2:4].reshape(-1, 3)
  r = (tok[:, 0] - tok[:, 0].mean()) / (tok[:, 0].std(ddof=1) + 1e-6)
  g = (tok[:, 1] - tok[:, 1].mean()) / (tok[:, 1].std(ddof=1) + 1e-6)
  np.testing.assert_allclose(got[1, 4, [0, 1, 3]], [r[0], g[0], r[1]], rtol=1e-4, atol=1e-4)
  # Per channel: every channel of every token has mean 0 and unbiased std ≈ 1.
  per_channel = got.reshape(2, 12, 8, 3)
  np.testing.assert_allclose(per_channel.mean(axis=2), 0.0, atol=1e-5)
  np.testing.assert_allclose(per_channel.std(axis=2, ddof=1), 1.0, atol=1e-4)


# ----------------------------------------------------------------------------- losses

PRED = jnp.asarray([[0.5, -2.0], [3.0, 0.0]])
TARGET = jnp.asarray([[0.0, 0.0], [1.0, 0.25]])
# differences: 0.5, −2, 2, −0.25


def test_align_loss_l2():
  # (0.25 + 4 + 4 + 0.0625) / 4
  assert float(losses.align_loss(PRED, TARGET, "l2")) == pytest.approx(2.078125)
  assert float(losses.align_loss(PRED, TARGET)) == pytest.approx(2.078125)


def test_align_loss_l1():
  # (0.5 + 2 + 2 + 0.25) / 4
  assert float(losses.align_loss(PRED, TARGET, "l1")) == pytest.approx(1.1875)


def test_align_loss_smooth_l1_both_branches():
  # |x| < 1: 0.5x² → 0.125, 0.03125; |x| ≥ 1: |x| − 0.5 → 1.5, 1.5.
  # (0.125 + 1.5 + 1.5 + 0.03125) / 4 = 3.15625 / 4
  assert float(losses.align_loss(PRED, TARGET, "smooth_l1")) == pytest.approx(0.7890625)
  # At the joint |x| = 1 both branches give 0.5; just past it 1.5 − 0.5 = 1.0.
  assert float(losses.align_loss(jnp.asarray([1.0, -1.0]), jnp.zeros(2), "smooth_l1")) \
      == pytest.approx(0.5)
  assert float(losses.align_loss(jnp.asarray([1.5]), jnp.zeros(1), "smooth_l1")) \
      == pytest.approx(1.0)
  assert float(losses.align_loss(jnp.asarray([0.9]), jnp.zeros(1), "smooth_l1")) \
      == pytest.approx(0.405)


def test_align_loss_accepts_bf16_and_refuses_unknown_kind():
  got = losses.align_loss(PRED.astype(jnp.bfloat16), TARGET.astype(jnp.bfloat16), "l2")
  assert got.dtype == jnp.float32
  assert float(got) == pytest.approx(2.078125)
  with pytest.raises(errors.BadInput):
    losses.align_loss(PRED, TARGET, "cosine")


def test_layer_mean_averages_over_pairs():
  p1, t1 = jnp.ones((2, 3, 4)), jnp.zeros((2, 3, 4))        # l2 = 1
  p2, t2 = jnp.full((2, 5, 4), 3.0), jnp.zeros((2, 5, 4))   # l2 = 9 (other token count)
  assert float(losses.layer_mean([p1, p2], [t1, t2], "l2")) == pytest.approx(5.0)
  assert float(losses.layer_mean([p1, p2], [t1, t2], "l1")) == pytest.approx(2.0)
  assert float(losses.layer_mean([p2], [t2], "l2")) == pytest.approx(9.0)
  three = losses.layer_mean([p1, p2, p1], [t1, t2, t1], "l2")
  assert float(three) == pytest.approx(11.0 / 3)


def test_normalize_uint8():
  v = np.array([[[0, 255, 128]], [[255, 0, 64]]], np.uint8)   # (2, 1, 3)
  got = losses.normalize(jnp.asarray(v))
  assert got.dtype == jnp.float32
  want = np.array([
      [[(0 - 0.485) / 0.229, (1 - 0.456) / 0.224, (128 / 255 - 0.406) / 0.225]],
      [[(1 - 0.485) / 0.229, (0 - 0.456) / 0.224, (64 / 255 - 0.406) / 0.225]],
  ])
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-6, atol=1e-6)
  assert float(got[0, 0, 0]) == pytest.approx(-2.117904, abs=1e-6)
  assert float(got[0, 0, 1]) == pytest.approx(2.428571, abs=1e-6)


def test_align_target_none_is_the_raw_stream():
  x = jnp.asarray(np.random.default_rng(0).normal(3.0, 40.0, (2, 5, 8)), jnp.float32)
  np.testing.assert_array_equal(np.asarray(losses.align_target(x, "none")), np.asarray(x))


def test_align_target_layernorm_by_hand():
  """MVD's teacher-feature norm: per token, subtract the mean and divide by
  sqrt(biased variance + 1e-6); no scale, no bias."""
  token = np.array([1.0, 2.0, 3.0, 6.0])        # mean 3, biased variance 3.5
  want = (token - 3.0) / math.sqrt(3.5 + 1e-6)
  got = np.asarray(losses.align_target(jnp.asarray(token[None, None], jnp.float32),
                                       "layernorm"))[0, 0]
  np.testing.assert_allclose(got, want, rtol=1e-6)
  # A constant token has variance 0: the epsilon keeps it finite (all zeros).
  flat = losses.align_target(jnp.full((1, 1, 4), 7.0), "layernorm")
  np.testing.assert_array_equal(np.asarray(flat), np.zeros((1, 1, 4)))
  # Large raw features (a trained teacher's stream grows to std ~40) come out unit-scale.
  big = jnp.asarray(np.random.default_rng(1).normal(5.0, 45.0, (3, 7, 64)), jnp.float32)
  out = np.asarray(losses.align_target(big, "layernorm"))
  np.testing.assert_allclose(out.mean(-1), 0.0, atol=1e-5)
  np.testing.assert_allclose(out.std(-1), 1.0, rtol=1e-4)


def test_align_target_refuses_unknown_norm():
  with pytest.raises(errors.BadInput, match="target_norm 'batchnorm'.*none|layernorm"):
    losses.align_target(jnp.zeros((1, 1, 4)), "batchnorm")
