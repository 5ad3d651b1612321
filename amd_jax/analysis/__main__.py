"""The analyses' command line: python -m amd_jax.analysis COMMAND ... (see __init__.py)."""

from __future__ import annotations

import argparse
import logging
import os
import re

import amd_jax.analysis
from amd_jax import errors, files, paths, quiet
from amd_jax.analysis import probe
from amd_jax.analysis.attention import attention_distance_report
from amd_jax.analysis.curves import plot_curves
from amd_jax.analysis.per_class import per_class_report
from amd_jax.analysis.reconstruction import TRIVIAL, reconstructions_report


def named_paths(items: list[str]) -> dict[str, str]:
  """'NAME=PATH' or 'PATH' (named after its folder) → {name: path}."""
  out = {}
  for item in items:
    m = re.fullmatch(r"(\w+)=(.+)", item)
    name, path = (m.group(1), m.group(2)) if m else (
        os.path.basename(os.path.normpath(item)), item)
    out[name] = path
  return out


def _attention_distance(args) -> None:
  report = attention_distance_report(
      named_paths(args.checkpoint), args.out, data=args.data, data_dir=args.data_dir,
      split=args.split, videos=args.videos, sampler=args.sampler, rate=args.rate,
      frame_spacing=args.frame_spacing, batch=args.batch)
  for name, m in report["models"].items():
    print(f"{name}: mean distance per layer (px) "
          + " ".join(f"{x:.1f}" for x in m["mean_per_layer"]))


def _per_class(args) -> None:
  report = per_class_report(args.a, args.b, args.out, names=args.names, top=args.top)
  for row in report["classes"]:
    print(f"{row['cls']:>16}: {row['difference']:+.3f}")


def _curves(args) -> None:
  for line in plot_curves(named_paths(args.run), args.out):
    print(line)


def _probe(args) -> None:
  report = probe.probe_report(named_paths(args.checkpoint), data=args.data,
                              data_dir=args.data_dir, splits=tuple(args.splits),
                              videos=args.videos, batch=args.batch,
                              blocks=probe.block_list(args.blocks) if args.blocks else ())
  os.makedirs(args.out, exist_ok=True)
  files.write_json(os.path.join(args.out, "probe.json"), report)
  if args.blocks:
    probe.plot_blocks(report, os.path.join(args.out, "probe_blocks.png"))
  for name, m in report["models"].items():
    print(f"{name}: probe test top-1 {m['test_top1']:.3f} (val {m['val_top1']:.3f}, "
          f"L2 {m['l2']:g})")
    for block, b in m.get("blocks", {}).items():
      print(f"{name}: after block {block}: probe test top-1 {b['test_top1']:.3f} "
            f"(val {b['val_top1']:.3f}, L2 {b['l2']:g})")


def _reconstructions(args) -> None:
  report = reconstructions_report(named_paths(args.run), args.out, videos=args.videos,
                                  show=args.show, student_ratio=args.mask_ratio,
                                  teacher_ratio=args.teacher_mask_ratio)
  for name in named_paths(args.run):
    print(f"{name}: masked-pixel loss {report['loss'][name]:.4f} on {report['videos']} "
          f"{report['data']}:{report['split']} videos ({report['student_ratio']:.0%} of "
          "tubes hidden)")
  print("trivial predictors: " + ", ".join(f"{k} {report['loss'][k]:.4f}" for k in TRIVIAL))


def parser() -> argparse.ArgumentParser:
  """The command line: one subcommand per analysis, each running its function."""
  cli = argparse.ArgumentParser(prog="python -m amd_jax.analysis",
                                description=amd_jax.analysis.__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = cli.add_subparsers(dest="command", required=True)
  p = sub.add_parser("attention-distance", help="Figure S2: mean attention distance")
  p.set_defaults(analysis=_attention_distance)
  p.add_argument("--checkpoint", action="append", required=True, metavar="[NAME=]PATH")
  p.add_argument("--data", default="moving_digits")
  p.add_argument("--data_dir", default="")
  p.add_argument("--split", default="test")
  p.add_argument("--videos", type=int, default=64, help="test videos (one view each)")
  p.add_argument("--sampler", default="dense", choices=("dense", "segments"))
  p.add_argument("--rate", type=int, default=2, help="frame step of the dense sampler")
  p.add_argument("--frame-spacing", type=float, default=0.0,
                 help="pixels per frame of time difference (0: spatial distance only)")
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--out", required=True)
  p = sub.add_parser("per-class", help="Figure S3: per-class accuracy of two fine-tuned runs")
  p.set_defaults(analysis=_per_class)
  p.add_argument("--a", required=True, help="fine-tuning workdir (has test_results.json)")
  p.add_argument("--b", required=True)
  p.add_argument("--names", nargs=2, metavar=("NAME_A", "NAME_B"))
  p.add_argument("--top", type=int, help="only the classes with the largest differences")
  p.add_argument("--out", required=True)
  p = sub.add_parser("curves", help="pre-training losses or fine-tuning curves, by each "
                    "run's kind")
  p.set_defaults(analysis=_curves)
  p.add_argument("--run", action="append", required=True, metavar="[NAME=]WORKDIR")
  p.add_argument("--out", required=True)
  p = sub.add_parser("reconstructions", help="test clips through pre-training checkpoints")
  p.set_defaults(analysis=_reconstructions)
  p.add_argument("--run", action="append", required=True, metavar="[NAME=]WORKDIR")
  p.add_argument("--videos", type=int, default=64, help="test videos scored (one view each)")
  p.add_argument("--show", type=int, default=2, help="of them, drawn in the figure")
  # The pre-training masks by default; a lower ratio asks what a model infers when it
  # sees more (teacher-only tokens feed AMD students' alignment heads alone).
  p.add_argument("--mask-ratio", type=float, default=0.9, help="student mask ratio")
  p.add_argument("--teacher-mask-ratio", type=float, default=0.75,
                 help="below --mask-ratio")
  p.add_argument("--out", required=True)
  p = sub.add_parser("probe", help="linear probe on frozen encoder features")
  p.set_defaults(analysis=_probe)
  p.add_argument("--checkpoint", action="append", required=True, metavar="[NAME=]PATH")
  p.add_argument("--data", default="moving_digits")
  p.add_argument("--data_dir", default="")
  p.add_argument("--splits", nargs=3, default=("train", "val", "test"),
                 metavar=("TRAIN", "VAL", "TEST"))
  p.add_argument("--videos", type=int, help="at most this many videos per split (default: all)")
  p.add_argument("--batch", type=int, default=32)
  p.add_argument("--blocks", default="",
                 help="also probe the residual stream after these blocks: 'all' or '1,3'")
  p.add_argument("--out", required=True)
  return cli


def main(argv: list[str] | None = None) -> None:
  args = parser().parse_args(argv)
  with errors.exit_on_bad_input(FileNotFoundError):
    # Before any model or clip is read; made only when there is something to write.
    paths.output_dir(args.out, "--out", create=False)
    args.analysis(args)
  print(f"wrote {args.out}")


if __name__ == "__main__":
  quiet.quiet_third_party()
  # Warnings (a probe split that lacks classes) as plain lines, as the other commands print.
  logging.basicConfig(level=logging.WARNING, format="%(message)s", force=True)
  main()
