"""RoIAlign against a plain loop over samples, the AVA detector and its loss."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from amd_jax import errors
from amd_jax.models import roi, vit


def bilinear(f, y, x):
  """One sample of the official kernel (alphaction ROIAlign3d / torchvision)."""
  h, w = f.shape[:2]
  if y < -1.0 or y > h or x < -1.0 or x > w:
    return np.zeros(f.shape[2])
  y, x = max(y, 0.0), max(x, 0.0)
  y0, x0 = int(y), int(x)
  if y0 >= h - 1:
    y0 = y1 = h - 1
    y = float(y0)
  else:
    y1 = y0 + 1
  if x0 >= w - 1:
    x0 = x1 = w - 1
    x = float(x0)
  else:
    x1 = x0 + 1
  ly, lx = y - y0, x - x0
  return ((1 - ly) * (1 - lx) * f[y0, x0] + (1 - ly) * lx * f[y0, x1]
          + ly * (1 - lx) * f[y1, x0] + ly * lx * f[y1, x1])


def reference(f, box, out, scale, ratio):
  x1, y1, x2, y2 = (v * scale for v in box)
  rh, rw = max(y2 - y1, 1.0), max(x2 - x1, 1.0)
  bh, bw = rh / out, rw / out
  gh = ratio or math.ceil(rh / out)
  gw = ratio or math.ceil(rw / out)
  result = np.zeros((out, out, f.shape[2]))
  for ph in range(out):
    for pw in range(out):
      for iy in range(gh):
        for ix in range(gw):
          y = y1 + ph * bh + (iy + 0.5) * bh / gh
          x = x1 + pw * bw + (ix + 0.5) * bw / gw
          result[ph, pw] += bilinear(f, y, x)
      result[ph, pw] /= gh * gw
  return result


# Input pixels at scale 1/4 on a 5 × 7 map (20 × 28 pixels).
BOXES = np.array([
    [[2.0, 3.0, 17.0, 15.0],       # inside
     [-6.0, -5.0, 9.0, 6.0],       # across the top-left border
     [20.0, 10.0, 31.5, 23.0],     # across the bottom-right border
     [0.0, 0.0, 27.0, 19.0]],      # the whole image
    [[11.0, 7.0, 11.3, 7.2],       # tiny: clamped to one feature pixel
     [15.0, 9.0, 12.0, 8.0],       # malformed (x2 < x1)
     [27.5, 19.5, 28.0, 20.0],     # at the far corner
     [33.0, 2.0, 40.0, 9.0]],      # outside the map: zeros
])


@pytest.mark.parametrize("ratio", [0, 2])
def test_roi_align_matches_the_loop(ratio):
  rng = np.random.default_rng(0)
  features = rng.standard_normal((2, 5, 7, 3)).astype(np.float32)
  got = jax.jit(lambda f, b: roi.roi_align(f, b, 2, 0.25, ratio))(features, BOXES)
  assert got.shape == (2, 4, 2, 2, 3) and got.dtype == jnp.float32
  for i in range(2):
    for m in range(4):
      want = reference(features[i].astype(np.float64), BOXES[i, m], 2, 0.25, ratio)
      np.testing.assert_allclose(got[i, m], want, atol=1e-5, err_msg=f"box {i},{m}")
  np.testing.assert_array_equal(got[1, 3], 0.0)


def test_roi_align_seven_by_seven_on_random_boxes():
  """The detector's setting: 7×7 bins, scale 1/16 on a 14 × 20 map, adaptive grids of 1
  to 3 samples; boxes no larger than the map, some across its border."""
  rng = np.random.default_rng(1)
  features = rng.standard_normal((1, 14, 20, 2)).astype(np.float32)
  x = np.sort(rng.uniform(-8, 312, (6, 2)), axis=1)
  y = np.sort(rng.uniform(-8, 216, (6, 2)), axis=1)
  boxes = np.stack([x[:, 0], y[:, 0], x[:, 1], y[:, 1]], -1)[None]
  got = roi.roi_align(features, boxes, 7, 1 / 16)
  for m in range(6):
    want = reference(features[0].astype(np.float64), boxes[0, m], 7, 1 / 16, 0)
    np.testing.assert_allclose(got[0, m], want, atol=1e-5)
  # A box taller than the map (30 feature pixels: adaptive grid of 5 rows) samples the
  # largest grid a box inside needs, ceil(14 / 7) = 2 rows; its width (11.5) needs 2
  # columns anyway: the loop with a fixed 2 × 2 grid.
  big = np.array([[[16.0, -100.0, 200.0, 380.0]]])
  capped = reference(features[0].astype(np.float64), big[0, 0], 7, 1 / 16, 2)
  np.testing.assert_allclose(roi.roi_align(features, big, 7, 1 / 16)[0, 0], capped, atol=1e-5)


def test_roi_align_gradient():
  rng = np.random.default_rng(2)
  features = rng.standard_normal((2, 5, 7, 3)).astype(np.float32)
  grad = jax.jit(jax.grad(lambda f: (roi.roi_align(f, BOXES, 2, 0.25) ** 2).sum()))(features)
  assert np.isfinite(grad).all() and np.abs(grad).sum() > 0
  # Linear in the features: the gradient of the sum holds the weight of every cell,
  # whose total is the loop's output on a map of ones (per channel).
  ones = jax.jit(jax.grad(lambda f: roi.roi_align(f, BOXES, 2, 0.25).sum()))(features)
  want = sum(reference(np.ones((5, 7, 1)), BOXES[i, m], 2, 0.25, 0).sum()
             for i in range(2) for m in range(4))
  np.testing.assert_allclose(ones.sum(), want * 3, rtol=1e-5)


def test_position_table_resizes_like_torch():
  torch = pytest.importorskip("torch")
  base = roi.position_table((2, 4, 4), (4, 4), 8)
  np.testing.assert_array_equal(base, vit._position_table(32, 8))       # identity
  got = roi.position_table((2, 4, 4), (3, 6), 8).reshape(2, 3, 6, 8)
  table = torch.from_numpy(base.reshape(2, 4, 4, 8)).permute(0, 3, 1, 2)
  want = torch.nn.functional.interpolate(table, size=(3, 6), mode="bicubic",
                                         align_corners=False).permute(0, 2, 3, 1).numpy()
  np.testing.assert_allclose(got, want, atol=1e-5)


def test_detector_on_a_non_square_clip():
  model = roi.Detector(vit.decode_variant("Mu/8x2"), num_frames=4, pretrain_size=32,
                       drop_path=0.1, head_dropout=0.5, init_scale=1.0, rngs=nnx.Rngs(0))
  rng = np.random.default_rng(3)
  video = jnp.asarray(rng.standard_normal((2, 4, 24, 40, 3)), jnp.float32)
  boxes = jnp.asarray([[[0.1, 0.2, 0.5, 0.9], [0.0, 0.0, 1.0, 1.0], [0, 0, 0, 0]],
                       [[0.6, 0.1, 0.95, 0.7], [0.3, 0.3, 0.4, 0.35], [0, 0, 0, 0]]],
                      jnp.float32)
  labels = jnp.zeros((2, 3, 80)).at[:, 0, 5].set(1.0)
  valid = jnp.array([[True, True, False], [True, True, False]])
  graphdef, params = nnx.split(model)

  @jax.jit
  def loss_and_grad(params, key):
    def loss(p):
      logits = nnx.merge(graphdef, p)(video, boxes, rng=key)
      return roi.ava_loss(logits, labels, valid), logits
    return jax.value_and_grad(loss, has_aux=True)(params)

  (loss, logits), grads = loss_and_grad(params, jax.random.key(0))
  assert logits.shape == (2, 3, 80)
  assert np.isfinite(loss) and loss > 0
  leaves = jax.tree.leaves(grads)
  assert all(np.isfinite(g).all() for g in leaves)
  assert np.abs(grads["encoder"]["patch_embed"]["kernel"][...]).sum() > 0
  # At the pre-training size the positions are the encoder's own: the detector is
  # encoder → time mean → RoIAlign (scale 1/patch, inclusive pixels) → max → head.
  square = jnp.asarray(rng.standard_normal((2, 4, 32, 32, 3)), jnp.float32)

  @jax.jit
  def both(params):
    m = nnx.merge(graphdef, params)
    fmap = m.encoder(square)[0].reshape(2, 2, 4, 4, 64).mean(axis=1)
    pixels = boxes * 32 - jnp.array([0, 0, 1, 1])
    return m(square, boxes), m.head(roi.roi_align(fmap, pixels, 7, 1 / 8).max(axis=(2, 3)))

  got, want = both(params)
  np.testing.assert_allclose(got, want, atol=1e-5)
  with pytest.raises(errors.BadInput, match="4-frame clips"):
    model(video[:, :2], boxes)


def test_ava_loss_by_hand():
  """Per-box class means summed over valid boxes, over B / 4 (the official per-GPU sum
  averaged over GPUs). Logit 0: BCE = log 2 whatever the label."""
  logits = np.zeros((2, 2, 80), np.float32)
  logits[0, 0, 0] = 3.0                          # label 1: log(1 + e^-3)
  labels = np.zeros((2, 2, 80), np.float32)
  labels[0, 0, 0] = 1.0
  valid = np.array([[True, True], [True, False]])
  box0 = (79 * math.log(2) + math.log1p(math.exp(-3.0))) / 80
  want = (box0 + 2 * math.log(2)) / (2 / 4)
  assert float(roi.ava_loss(logits, labels, valid)) == pytest.approx(want, rel=1e-6)


def test_ava_loss_gradient_at_zero_logits():
  """d loss / d logit = (σ(logit) − label) / 80 per box (one box, B = 4 here) at logit 0
  too, where the derivatives of max(x, 0) and |x| are conventions."""
  labels = np.zeros((4, 1, 80), np.float32)
  labels[:, :, :40] = 1.0
  grad = jax.grad(roi.ava_loss)(jnp.zeros((4, 1, 80)), labels, np.ones((4, 1), bool))
  np.testing.assert_allclose(grad, (0.5 - labels) / 80, rtol=1e-6)
