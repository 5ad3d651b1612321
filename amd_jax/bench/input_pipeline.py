"""The input benchmark: the input pipeline alone, no model (see __init__.py)."""

from __future__ import annotations

import os
import time

import grain
import ml_collections
import numpy as np

from amd_jax.data import pipeline, sources

# Per mode: the official clip sampling of each dataset family (docs/method.md#data-pipeline).
SAMPLERS = {
    "pretrain": {"ssv2": ("span", 2)},
    "finetune": {"ssv2": ("segments", 1)},
    "test": {"ssv2": ("segments", 1)},
}
DEFAULT_SAMPLER = {"pretrain": ("dense", 4), "finetune": ("span", 4), "test": ("dense", 4)}


def _input_dataset(args):
  """(grain dataset, clips per video) of the requested mode."""
  records = sources.open_split(args.dataset, args.split, args.data_dir)
  sampler, rate = SAMPLERS[args.mode].get(args.dataset, DEFAULT_SAMPLER[args.mode])
  decoder = pipeline.Decoder(records, args.bad_files)
  if args.mode == "pretrain":
    config = ml_collections.ConfigDict(dict(
        mode="amd", seed=0, batch_size=args.videos * args.num_sample,
        masking=dict(student_ratio=0.9, teacher_ratio=0.75),
        data=dict(name=args.dataset, split=args.split, data_dir=args.data_dir,
                  frames=args.frames, size=args.size, sampler=sampler, sampling_rate=rate,
                  num_sample=args.num_sample)))
    grid = (args.frames // 2, args.size // 16, args.size // 16)
    ds = pipeline.pretrain_dataset(config, grid, records=records, bad_files=args.bad_files)
    return ds, args.num_sample
  if args.mode == "finetune":
    sample = pipeline.FinetuneSample(decoder, sampler, args.frames, rate, args.size,
                                     num_sample=args.num_sample, flip=args.dataset != "ssv2")
    return pipeline.training_batches(records, sample, args.videos, seed=0), args.num_sample
  clips = 2 if sampler == "segments" else 5
  views = pipeline.Views(sampler, args.frames, rate, args.size, clips,
                             bad_files=args.bad_files)
  return pipeline.eval_dataset(records, views, args.videos), clips * 3


def bench_input(args) -> dict:
  if args.num_sample is None:
    args.num_sample = 4 if args.mode == "pretrain" else 2
  ds, clips_per_video = _input_dataset(args)
  # One thread per worker and a short buffer: the timed batches are made while
  # timed, and a worker is one core.
  it = pipeline.iterator(ds, args.workers,
                         grain.ReadOptions(num_threads=args.threads, prefetch_buffer_size=2))
  batch = next(it)                    # start-up: workers spawn, first decodes
  skipped = int(batch["skipped"].sum())
  videos = 0
  start, cpu_start = time.perf_counter(), time.process_time()
  for _ in range(args.batches):
    try:
      batch = next(it)
    except StopIteration:             # test mode: one pass, maybe shorter than asked
      break
    videos += len(batch["label"]) // (1 if args.mode == "test" else args.num_sample)
    skipped += int(batch["skipped"].sum())
  elapsed = time.perf_counter() - start
  cpu = time.process_time() - cpu_start
  cores = max(args.workers, 1) * args.threads
  vps = videos / elapsed if elapsed > 0 else 0.0
  return {"bench": "input", "dataset": args.dataset, "split": args.split, "mode": args.mode,
          "workers": args.workers, "videos": videos, "seconds": round(elapsed, 3),
          "videos_per_s": round(vps, 2), "clips_per_s": round(vps * clips_per_video, 2),
          "videos_per_s_per_core": round(vps / cores, 2),
          "clips_per_s_per_core": round(vps * clips_per_video / cores, 2),
          "skipped": skipped,
          # Without workers this process does all the work: its CPU time gives the
          # rate of one dedicated core even on a busy machine.
          **({"videos_per_cpu_s": round(videos / cpu, 2),
              "clips_per_cpu_s": round(videos * clips_per_video / cpu, 2)}
             if args.workers == 0 and cpu > 0 else {}),
          "shapes": {k: [list(v.shape), str(v.dtype)] for k, v in batch.items()
                     if isinstance(v, np.ndarray)},
          "cpu_count": os.cpu_count()}


def add_parser(sub) -> None:
  i = sub.add_parser("input", help="input pipeline throughput")
  i.add_argument("--dataset", required=True)
  i.add_argument("--data_dir", default="", help="prepared datasets (empty: the cache, "
                 "for moving_digits)")
  i.add_argument("--split", default="train")
  i.add_argument("--mode", choices=("pretrain", "finetune", "test"), default="pretrain")
  i.add_argument("--batches", type=int, default=20, help="timed batches after the first")
  i.add_argument("--workers", type=int, default=0, help="grain worker processes")
  i.add_argument("--threads", type=int, default=1, help="threads per worker")
  i.add_argument("--videos", type=int, default=8, help="videos per batch")
  i.add_argument("--num_sample", type=int, default=None,
                 help="clips per video (default: 4 pre-training, 2 fine-tuning)")
  i.add_argument("--frames", type=int, default=16)
  i.add_argument("--size", type=int, default=224)
  i.add_argument("--bad_files", default=None, help="append undecodable paths to this file")
  i.set_defaults(run=bench_input)
