"""grain pipelines over moving_digits: batches, exact resume, undecodable videos, test views.

moving_digits is built on first use into the cache ($AMD_JAX_DATA or
~/.cache/amd_jax; about 30 s once per machine), as runlocal does.
"""

import numpy as np
import pytest
from PIL import Image

from amd_jax import errors, masking, tasks
from amd_jax.data import decode, pipeline, sources, transforms
from configs import pretrain, videomae

GRID = (4, 8, 8)    # runlocal: 8 frames, 64×64, tubelet 2×8×8


@pytest.fixture(scope="module")
def records():
  return sources.open_split("moving_digits", "train[:16]")


def config(videos=2, **data):
  c = pretrain.get_config("runlocal")
  c.batch_size = videos * c.data.num_sample
  c.data.update(data)
  return c


def ratios(c):
  return tasks.of(c).mask_ratios()


def take(it, n):
  return [next(it) for _ in range(n)]


def assert_same(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert set(x) == set(y)
    for k in x:
      np.testing.assert_array_equal(x[k], y[k], err_msg=k)


def test_pretrain_batches(records):
  c = config()
  batch = next(iter(pipeline.pretrain_dataset(c, GRID, ratios(c), records=records)))
  assert batch["video"].shape == (8, 8, 64, 64, 3) and batch["video"].dtype == np.uint8
  assert batch["mask"].shape == (8, 256) and batch["mask"].dtype == np.int8
  counts = masking.tube_counts(GRID, 0.9, 0.75)
  for m in batch["mask"]:
    assert (m == masking.STUDENT).sum() == counts.student
    assert (m == masking.DIFF).sum() == counts.diff
  # 2 videos × 4 repeated samples: one label per video, fresh crops and masks per sample.
  assert len(set(batch["label"][:4])) == 1 and len(set(batch["label"][4:])) == 1
  assert not np.array_equal(batch["mask"][0], batch["mask"][1])
  assert any(not np.array_equal(batch["video"][0], batch["video"][k]) for k in (1, 2, 3))
  np.testing.assert_array_equal(batch["skipped"], np.zeros(8))


def test_pretrain_sample_is_the_plain_algorithm(records):
  """Bit for bit what one crop at a time gives: per repeated sample, the multi-scale crop's
  draw, then the mask's, then the array crop resized frame by frame with PIL."""
  sample = pipeline.PretrainSample(pipeline.Decoder(records), "dense", 8, 2, 48, 4, (4, 6, 6),
                                   0.9, 0.75)
  for i in range(3):
    out = sample(records[i], np.random.default_rng([7, i]))
    rng = np.random.default_rng([7, i])
    clip, label, _ = pipeline.Decoder(records)(records[i], rng,
                                               pipeline.temporal_rule("dense", 8, 2))
    for s in range(4):
      top, left, h, w = transforms.multi_scale_crop_params(rng, *clip.shape[1:3], 48)
      np.testing.assert_array_equal(out["mask"][s],
                                    masking.tube_mask(rng, (4, 6, 6), 0.9, 0.75))
      video = [np.asarray(Image.fromarray(np.ascontiguousarray(f[top:top + h, left:left + w]))
                          .resize((48, 48), Image.Resampling.BILINEAR)) for f in clip]
      np.testing.assert_array_equal(out["video"][s], np.stack(video))
    np.testing.assert_array_equal(out["label"], np.full(4, label))


def test_videomae_runlocal_has_codes_0_and_2_only(records):
  c = videomae.get_config("runlocal")
  batch = next(iter(pipeline.pretrain_dataset(c, (4, 4, 4), ratios(c), records=records)))
  assert set(np.unique(batch["mask"])) == {masking.STUDENT, masking.HIDDEN}


def test_resume_mid_epoch_gives_the_same_batches(records):
  """16 videos, 2 per batch: 8 batches per pass; stop after 3, resume across the pass end."""
  c = config()
  it = pipeline.iterator(pipeline.pretrain_dataset(c, GRID, ratios(c), records=records))
  take(it, 3)
  state = it.get_state()
  expected = take(it, 7)
  resumed = pipeline.iterator(pipeline.pretrain_dataset(c, GRID, ratios(c), records=records))
  resumed.set_state(state)
  assert_same(take(resumed, 7), expected)


def test_worker_processes_give_the_same_batches(records):
  """The ArrayRecord source and the transforms travel to grain's worker processes."""
  c = config()
  ds = pipeline.pretrain_dataset(c, GRID, ratios(c), records=records)
  assert_same(take(pipeline.iterator(ds, worker_count=2), 3), take(pipeline.iterator(ds), 3))


def test_processes_split_the_global_batch(records):
  c = config(videos=4)
  whole = next(iter(pipeline.pretrain_dataset(c, GRID, ratios(c), records=records)))
  parts = [next(iter(pipeline.pretrain_dataset(c, GRID, ratios(c), records=records,
                                                process_index=p, process_count=2)))
           for p in range(2)]
  for k in whole:
    np.testing.assert_array_equal(np.concatenate([p[k] for p in parts]), whole[k], err_msg=k)


def broken_records(records, broken):
  out = [dict(records[i]) for i in range(8)]
  for i in broken:
    out[i] = dict(out[i], video=out[i]["video"][:300], path=f"broken/{i}".encode())
  return out


def test_undecodable_videos_are_replaced_listed_and_counted(records, tmp_path):
  bad_files = str(tmp_path / "bad_files.txt")
  recs = broken_records(records, (2, 5))
  c = config()
  ds = pipeline.pretrain_dataset(c, GRID, ratios(c), records=recs, bad_files=bad_files)
  # Indexing, not an iterator: a prefetching iterator decodes (and lists) ahead.
  batches = [ds[i] for i in range(4)]               # one pass over the 8 videos
  skipped = sum(int(b["skipped"].sum()) for b in batches)
  with open(bad_files) as f:
    listed = f.read().split()
  assert skipped == len(listed) >= 2
  assert {"broken/2", "broken/5"} <= set(listed) <= {"broken/2", "broken/5"}
  for b in batches:
    assert b["video"].shape == (8, 8, 64, 64, 3)
  # Substitutes are drawn from the element's own generator: the same on a rerun.
  again = take(pipeline.iterator(pipeline.pretrain_dataset(c, GRID, ratios(c), records=recs)), 4)
  assert_same(again, batches)
  assert max(int(b["skipped"].max()) for b in batches) <= pipeline.MAX_SUBSTITUTES


def test_a_dataset_of_broken_videos_is_bad_input(records):
  recs = broken_records(records, range(8))
  c = config()
  ds = pipeline.pretrain_dataset(c, GRID, ratios(c), records=recs)
  with pytest.raises(errors.BadInput, match="undecodable videos in a row"):
    next(iter(ds))


@pytest.mark.parametrize("parts, message", [
    (dict(num_sample=4, processes=2), "batch_size 12 is not divisible by num_sample × processes "
     "= 4 × 2"),
    (dict(processes=8), "batch_size 12 is not divisible by the 8 processes"),
    (dict(devices=8), "batch_size 12 is not divisible by the 8 devices"),
])
def test_a_batch_the_parts_cannot_split_is_one_line(parts, message):
  with pytest.raises(errors.BadInput) as e:
    pipeline.check_batch("batch_size", 12, **parts)
  assert str(e.value) == message
  pipeline.check_batch("batch_size", 16, **parts)


def test_unknown_sampler_is_bad_input(records):
  with pytest.raises(errors.BadInput, match="sampler"):
    c = config(sampler="sparse")
    pipeline.pretrain_dataset(c, GRID, ratios(c), records=records)


def test_finetune_batches(records):
  sample = pipeline.FinetuneSample(pipeline.Decoder(records), "segments", 8, 1, 48,
                                   num_sample=2, flip=False)
  batch = next(iter(pipeline.training_batches(records, sample, 3, seed=0)))
  assert batch["video"].shape == (6, 8, 48, 48, 3) and batch["video"].dtype == np.uint8
  assert batch["label"].shape == (6,) and batch["skipped"].shape == (6,)


def test_test_views(records, tmp_path):
  recs = broken_records(records, (1,))[:3]
  views = pipeline.Views("dense", 4, 2, 48, clips=5, bad_files=str(tmp_path / "bad"))
  batches = list(pipeline.eval_dataset(recs, views, 2))
  assert len(batches) == 2                  # 3 videos in batches of 2: one padding element
  batch = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
  assert batch["video"].shape == (4, 15, 4, 48, 48, 3)
  np.testing.assert_array_equal(batch["valid"], [True, False, True, False])
  np.testing.assert_array_equal(batch["skipped"], [0, 1, 0, 0])
  np.testing.assert_array_equal(batch["index"], [0, 1, 2, 3])
  assert not batch["video"][1].any()
  # View (clip k, crop c) is at k·3 + c. 16 frames at rate 2 → 8 decoded; clip 0 takes
  # decoded 0..3 = frames 0, 2, 4, 6; a square video's three crops coincide.
  with decode.Video(recs[0]["video"]) as v:
    clip0 = transforms.resize_bilinear(v.frames([0, 2, 4, 6]), 48, 48)
  for c in range(3):
    np.testing.assert_array_equal(batch["video"][0, c], clip0)


def test_eval_pass_is_shared_between_processes(records):
  """Two processes see disjoint records, the same number of batches, padding last."""
  views = pipeline.CentreClip("dense", 4, 2, 48)
  parts = [list(pipeline.eval_dataset([records[i] for i in range(5)], views, 4,
                                      process_index=p, process_count=2))
           for p in range(2)]
  assert [len(p) for p in parts] == [2, 2]   # 3 and 2 records, 2 per process batch
  index = [np.concatenate([b["index"] for b in p]) for p in parts]
  valid = [np.concatenate([b["valid"] for b in p]) for p in parts]
  np.testing.assert_array_equal(index[0], [0, 2, 4, 6])
  np.testing.assert_array_equal(index[1], [1, 3, 5, 7])
  np.testing.assert_array_equal(valid[0], [True, True, True, False])
  np.testing.assert_array_equal(valid[1], [True, True, False, False])
  assert parts[0][0]["video"].shape == (2, 1, 4, 48, 48, 3)


def test_centre_clip_is_the_same_at_every_evaluation(records):
  views = pipeline.CentreClip("span", 4, 2, 40, seed=3)
  a, b = views(records[0], 0), views(records[0], 0)
  np.testing.assert_array_equal(a["video"], b["video"])
  assert a["video"].shape == (1, 4, 40, 40, 3)


def test_first_per_class_keeps_the_split_order_and_stops_when_every_class_is_full():
  records = [{"label": c} for c in (1, 1, 0, 1, 2, 0, 2, 0)]
  subset = sources.first_per_class(records, 2, num_classes=3)
  assert subset.indices == [0, 1, 2, 4, 5, 6] and len(subset) == 6
  assert [r["label"] for r in subset] == [1, 1, 0, 2, 0, 2]
  with pytest.raises(errors.BadInput, match="only 3 videos of class 0"):
    sources.first_per_class(records, 4, num_classes=3)
