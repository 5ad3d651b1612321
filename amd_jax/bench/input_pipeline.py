"""The input benchmark: the input pipeline alone, no model (see __init__.py), and with
--compare the same benchmark on K400-like videos in each storage, side by side."""

from __future__ import annotations

import argparse
import contextlib
import fractions
import io
import json
import os
import sys
import tempfile
import time

import av
import grain
import ml_collections
import numpy as np
from PIL import Image

from amd_jax import errors, paths
from amd_jax.data import decode, pipeline, sampling, sources, transforms

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
        seed=0, batch_size=args.videos * args.num_sample,
        data=dict(name=args.dataset, split=args.split, data_dir=args.data_dir,
                  frames=args.frames, size=args.size, sampler=sampler, sampling_rate=rate,
                  num_sample=args.num_sample)))
    grid = (args.frames // 2, args.size // 16, args.size // 16)
    # AMD's masks: the student's 90% and the teacher's 75% hidden.
    ds = pipeline.pretrain_dataset(config, grid, (0.9, 0.75), records=records,
                                   bad_files=args.bad_files)
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
  try:
    batch = next(it)                  # start-up: workers spawn, first decodes
    skipped = int(batch["skipped"].sum())
    videos = 0
    start, cpu_start = time.perf_counter(), time.process_time()
    for _ in range(args.batches):
      try:
        batch = next(it)
      except StopIteration:           # test mode: one pass, maybe shorter than asked
        break
      videos += len(batch["label"]) // (1 if args.mode == "test" else args.num_sample)
      skipped += int(batch["skipped"].sum())
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu_start
  finally:
    it.close()                        # the workers and their shared memory
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


# ------------------------------------------------------------ storage side by side

# Source videos like Kinetics' YouTube cuts: (width, height, fps), cycled over the videos.
SOURCE_SIZES = "340x256@25,480x360@30,640x360@30,854x480@30"
# The input target of docs/design.md#targets: 600 clips/s, 4 repeated samples a video.
TARGET_VIDEOS_PER_S = 150


def _sizes(text: str) -> list[tuple[int, int, int]]:
  """'WxH@FPS,…' → [(w, h, fps)]; even sides, as yuv420p needs."""
  out = []
  for item in text.split(","):
    try:
      size, _, fps = item.partition("@")
      w, h = (int(x) for x in size.split("x"))
      out.append((w, h, int(fps or 25)))
    except ValueError:
      raise errors.BadInput(f"--source_sizes: {item!r} is not WIDTHxHEIGHT@FPS") from None
    if w < 16 or h < 16 or w % 2 or h % 2:
      raise errors.BadInput(f"--source_sizes: {item!r}: sides must be even and at least 16")
  return out


def _source_video(path: str, width: int, height: int, fps: int, seconds: float,
                  seed: int) -> None:
  """A K400-like mp4: x264 as YouTube cuts are (CRF 23, B-frames, one keyframe per
  250 frames), moving content (a smooth texture panning, three squares crossing it).

  Deterministic: one encoder thread, explicit timestamps, nothing random but `seed`.
  """
  rng = np.random.default_rng(seed)
  margin = max(width, height) // 2
  coarse = rng.integers(0, 256, ((height + margin) // 8 + 1, (width + margin) // 8 + 1, 3),
                        dtype=np.uint8)
  texture = np.asarray(Image.fromarray(coarse).resize(
      (coarse.shape[1] * 8, coarse.shape[0] * 8), Image.Resampling.BICUBIC))
  side = max(min(width, height) // 6, 2)
  with av.open(path, "w", format="mp4") as out:
    stream = out.add_stream("libx264", rate=fps)
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    stream.options = {"crf": "23", "preset": "veryfast", "threads": "1",
                      "x264-params": "log-level=none"}
    for i in range(max(int(seconds * fps), 1)):
      t = i / fps
      dx = int(margin / 2 * (1 + np.sin(t / 1.7)))
      dy = int(margin / 2 * (1 + np.cos(t / 2.3)))
      frame = texture[dy:dy + height, dx:dx + width].copy()
      for k in range(3):
        x = int((width - side) * (0.5 + 0.45 * np.sin(t * (1 + k) / 1.3 + k)))
        y = int((height - side) * (0.5 + 0.45 * np.cos(t * (1 + k) / 1.9 + 2 * k)))
        frame[y:y + side, x:x + side] = (80 * k, 255 - 60 * k, 40 * k)
      picture = av.VideoFrame.from_ndarray(frame, format="rgb24")
      picture.pts, picture.time_base = i, fractions.Fraction(1, fps)
      out.mux(stream.encode(picture))
    out.mux(stream.encode(None))


def _jpeg_folder(video_path: str, folder: str, short_side: int) -> int:
  """The frames of a video, short side `short_side`, as SSV2's img_00001.jpg… (quality 90)."""
  os.makedirs(folder, exist_ok=True)
  count = 0
  with av.open(video_path) as container:
    for count, frame in enumerate(container.decode(video=0), 1):
      rgb = frame.to_ndarray(format="rgb24")[None]
      rgb = transforms.resize_pil(rgb, *transforms.short_side_size(*rgb.shape[1:3], short_side))
      Image.fromarray(rgb[0]).save(os.path.join(folder, f"img_{count:05d}.jpg"), quality=90)
  return count


def _prepare_storages(args) -> list[tuple[str, str, str]]:
  """[(storage name, dataset, data_dir)]: the sources made once in args.dir/sources, then
  stored as they are, re-encoded at each short side, and as JPEG frames."""
  root = os.path.abspath(args.dir)
  raw, frame_lists = os.path.join(root, "sources"), os.path.join(root, "jpeg_frames")
  sizes = _sizes(args.source_sizes)
  settings = {"sources": args.sources, "seconds": args.seconds, "source_sizes": sizes,
              "jpeg_short_side": args.short_sides[0]}
  made = os.path.join(raw, "settings.json")
  if os.path.isfile(made):
    with open(made) as f:
      if json.load(f) != json.loads(json.dumps(settings)):
        raise errors.BadInput(f"--dir {args.dir} holds sources made with other settings "
                              f"({made}): give another --dir, or the same settings")
  else:
    os.makedirs(raw, exist_ok=True)
    lines, frame_lines = [], []
    for n in range(args.sources):
      w, h, fps = sizes[n % len(sizes)]
      name = f"video_{n:03d}_{w}x{h}.mp4"
      _source_video(os.path.join(raw, name), w, h, fps, args.seconds, seed=n)
      count = _jpeg_folder(os.path.join(raw, name), os.path.join(frame_lists, name[:-4]),
                           args.short_sides[0])
      lines.append(f"{name} {n % 400}")
      frame_lines.append(f"{name[:-4]} {count} {n % 174}")
    with open(os.path.join(frame_lists, "train.csv"), "w") as f:
      f.write("\n".join(frame_lines) + "\n")
    with open(os.path.join(raw, "train.csv"), "w") as f:
      f.write("\n".join(lines) + "\n")
    with open(made, "w") as f:             # last: the sources are complete
      json.dump(settings, f)
  storages = [("stored", "k400", os.path.join(root, "stored"), {})]
  storages += [(f"short_side {s}", "k400", os.path.join(root, f"short_side_{s}"),
                {"short_side": s, "keyint": 16}) for s in args.short_sides]
  storages.append((f"jpeg {args.short_sides[0]}", "ssv2", os.path.join(root, "jpeg"), {}))
  for name, dataset, data_dir, options in storages:
    # TFDS tells of each build on stdout, which holds the JSON lines and the table.
    with contextlib.redirect_stdout(sys.stderr):
      sources.prepare(dataset, data_dir, frame_lists if dataset == "ssv2" else raw, **options)
  return [(name, dataset, data_dir) for name, dataset, data_dir, _ in storages]


def _bare_decode(data: bytes, skip: str) -> tuple[int, float]:
  """(frames, CPU seconds) of decoding a whole video with PyAV alone, one thread;
  skip "NONREF": only the frames that others refer to."""
  start = time.process_time()
  with av.open(io.BytesIO(data)) as container:
    stream = container.streams.video[0]
    stream.thread_type, stream.codec_context.skip_frame = "NONE", skip
    frames = sum(1 for _ in container.decode(stream))
  return frames, time.process_time() - start


def decode_limit(records, count: int, frames: int = 16, rate: int = 4) -> dict:
  """What the pipeline's decoding costs against libavcodec's own speed, in this process
  (CPU time), over `count` clips of `frames` frames `rate` apart (as K400 pre-training
  samples them): ms per clip, frames the decoder made per clip; and ms per frame of
  PyAV alone decoding the same files, every frame and only the reference frames.
  A clip needs its references from the keyframe on: frames per clip × ms per
  reference frame is what any decoder of these files spends. Frame lists: JPEGs."""
  rng = np.random.default_rng(0)
  clip_s, decoded, bare = 0.0, 0, {"DEFAULT": [0, 0.0], "NONREF": [0, 0.0]}
  for n in range(count):
    record = records[n % len(records)]
    start = time.process_time()
    if "video" in record:
      with decode.Video(record["video"]) as video:
        video.frames(sampling.dense(rng, video.num_frames, frames, rate))
        decoded += video.decoded
    else:
      decode.jpeg_frames(record["frames"],
                         sampling.dense(rng, len(record["frames"]), frames, rate))
      decoded += frames
    clip_s += time.process_time() - start
    if "video" in record:
      for skip, total in bare.items():
        made, seconds = _bare_decode(record["video"], skip)
        total[0] += made
        total[1] += seconds
  out = {"decode_ms_per_clip": round(1000 * clip_s / count, 2),
         "decoded_frames_per_clip": round(decoded / count, 1)}
  if bare["DEFAULT"][0]:
    out["bare_ms_per_frame"] = round(1000 * bare["DEFAULT"][1] / bare["DEFAULT"][0], 3)
    out["bare_ms_per_reference_frame"] = round(1000 * bare["NONREF"][1] / bare["NONREF"][0], 3)
  return out


def _storage_facts(records) -> dict:
  """Short sides (smallest-largest) and mean size per video of a prepared split."""
  sides, size = set(), 0
  for record in records:
    if "video" in record:
      with decode.Video(record["video"]) as video:
        sides.add(min(video.frames([0]).shape[1:3]))
      size += len(record["video"])
    else:
      sides.add(min(decode.jpeg_frames(record["frames"], [0]).shape[1:3]))
      size += sum(len(x) for x in record["frames"])
  return {"short_side": "-".join(str(s) for s in sorted({min(sides), max(sides)})),
          "mb_per_video": round(size / len(records) / 1e6, 2)}


def compare(args) -> None:
  """`input --compare`: one JSON line per storage × worker count, then a text table."""
  if not args.short_sides or min(args.short_sides) < 2:
    raise errors.BadInput("--short_sides: give one or more sides, e.g. 320,160")
  if args.sources < 1 or args.seconds <= 0:
    raise errors.BadInput(f"--sources {args.sources} --seconds {args.seconds}: give at least "
                          "one video of some length")
  if args.dir:
    paths.output_dir(args.dir, "--dir")
    return _compare(args)
  with tempfile.TemporaryDirectory(prefix="amd_jax_bench_input_") as tmp:
    args.dir = tmp
    return _compare(args)


def _compare(args) -> None:
  rows = []
  for storage, dataset, data_dir in _prepare_storages(args):
    records = sources.open_split(dataset, "train", data_dir)
    facts = dict(_storage_facts(records), **decode_limit(records, 2 * len(records), args.frames))
    print(json.dumps({"bench": "input_storage", "storage": storage, **facts}), flush=True)
    for workers in args.compare_workers:
      row = bench_input(argparse.Namespace(**dict(
          vars(args), dataset=dataset, data_dir=data_dir, split="train", workers=workers,
          mode="pretrain")))
      print(json.dumps(dict(row, storage=storage)), flush=True)
      rows.append((storage, facts, row))
  print(table(rows), flush=True)


def table(rows, target: float = TARGET_VIDEOS_PER_S) -> str:
  """The compare rows as text: one line per storage × workers."""
  head = ("storage", "short side", "MB/video", "workers", "videos/s", "clips/s",
          "videos/s/core", f"cores for {target:g} videos/s", "decode ms/clip", "frames/clip",
          "libavcodec ms/clip")
  lines = [head]
  for storage, facts, row in rows:
    # Without workers the process's CPU time gives a dedicated core's rate (a busy
    # machine's wall clock does not); with workers, the wall clock per worker.
    per_core = row.get("videos_per_cpu_s", row["videos_per_s_per_core"])
    frames = facts["decoded_frames_per_clip"]
    limit = (f"{frames * facts['bare_ms_per_reference_frame']:.1f}"
             if "bare_ms_per_reference_frame" in facts else "-")
    lines.append((storage, facts["short_side"], f"{facts['mb_per_video']:.2f}",
                  f"{row['workers']}" + (" (cpu s)" if "videos_per_cpu_s" in row else ""),
                  f"{row['videos_per_s']:.1f}", f"{row['clips_per_s']:.1f}", f"{per_core:.1f}",
                  f"{target / per_core:.0f}" if per_core > 0 else "-",
                  f"{facts['decode_ms_per_clip']:.1f}", f"{frames:.0f}", limit))
  widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
  return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip()
                   for line in lines)


def add_parser(sub) -> None:
  i = sub.add_parser("input", help="input pipeline throughput")
  i.add_argument("--dataset", help="a prepared dataset (required without --compare)")
  i.add_argument("--data_dir", default="", help="the data root the dataset was prepared "
                 "in (empty: $AMD_JAX_DATA, else ~/.cache/amd_jax)")
  i.add_argument("--split", default="train")
  i.add_argument("--mode", choices=("pretrain", "finetune", "test"), default="pretrain")
  i.add_argument("--batches", type=int, default=None,
                 help="timed batches after the first (default: 20; 10 with --compare)")
  i.add_argument("--workers", type=int, default=0, help="grain worker processes")
  i.add_argument("--threads", type=int, default=1, help="threads per worker")
  i.add_argument("--videos", type=int, default=None,
                 help="videos per batch (default: 8; 4 with --compare)")
  i.add_argument("--num_sample", type=int, default=None,
                 help="clips per video (default: 4 pre-training, 2 fine-tuning)")
  i.add_argument("--frames", type=int, default=16)
  i.add_argument("--size", type=int, default=224)
  i.add_argument("--bad_files", default=None, help="append undecodable paths to this file")
  c = i.add_argument_group("--compare: storages side by side on generated K400-like videos")
  c.add_argument("--compare", action="store_true",
                 help="make K400-like mp4s, store them as they are, re-encoded at each "
                 "--short_sides and as JPEG frames, bench pre-training on each with each "
                 "--compare_workers; a table last")
  c.add_argument("--dir", default="", help="where the sources and storages go and are "
                 "reused (empty: a temporary folder, removed after)")
  c.add_argument("--sources", type=int, default=8, help="videos to make")
  c.add_argument("--seconds", type=float, default=10.0, help="length of each video")
  c.add_argument("--source_sizes", default=SOURCE_SIZES, help="WIDTHxHEIGHT@FPS, cycled")
  c.add_argument("--short_sides", type=_ints, default=[320, 160],
                 help="re-encoded storages (the first also sizes the JPEG frames)")
  c.add_argument("--compare_workers", type=_ints, default=[0, 1, 2])
  i.set_defaults(run=run)


def _ints(text: str) -> list[int]:
  return [int(x) for x in text.split(",") if x]


def run(args) -> dict | None:
  # --compare benches 12 rows: fewer videos each keep it to minutes on 2 cores.
  args.batches = args.batches or (10 if args.compare else 20)
  args.videos = args.videos or (4 if args.compare else 8)
  if args.compare:
    return compare(args)
  if not args.dataset:
    raise errors.BadInput("bench input: give --dataset (a prepared dataset) or --compare")
  return bench_input(args)
