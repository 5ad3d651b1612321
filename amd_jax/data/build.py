r"""Prepares a dataset as ArrayRecord: python -m amd_jax.data.build NAME --data_dir OUT [...]

  python -m amd_jax.data.build moving_digits --data_dir ~/data
  python -m amd_jax.data.build k400 --manual_dir /raw/k400 --data_dir ~/data \
      --short_side 320 --keyint 16

  python -m amd_jax.data.build ava --manual_dir /raw/ava --data_dir ~/data --short_side 256

NAME: moving_digits (embedded, no input) | k400 | ucf101 | hmdb51 | ssv2 | ava. The
manual dir holds train.csv / val.csv / test.csv in the official formats
(amd_jax/data/builders/video_lists.py), or for ava the official annotation files and frames
(amd_jax/data/builders/ava.py). Bad input ends with one line and exit code 2.
"""

import argparse
import os

from amd_jax import errors, paths


def parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog="python -m amd_jax.data.build", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("name", metavar="NAME", help="the dataset (see above)")
  p.add_argument("--data_dir", required=True, help="where the prepared dataset goes")
  p.add_argument("--manual_dir", default="", help="the folder with the lists (not for "
                 "moving_digits)")
  p.add_argument("--short_side", type=int, default=0, help="re-encode videos (ava: frames) "
                 "at this short side (0: store the files as they are)")
  p.add_argument("--keyint", type=int, default=16, help="keyframe interval when re-encoding")
  p.add_argument("--validate", action="store_true", help="demux every file and leave the "
                 "broken ones out (listed in bad_files.txt)")
  p.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                 help="processes that re-encode or validate videos")
  return p


def main(argv: list[str] | None = None) -> None:
  args = parser().parse_args(argv)
  if args.data_dir:     # before TFDS loads; made by prepare ("" is TFDS's own cache)
    with errors.exit_on_bad_input():
      paths.output_dir(args.data_dir, "--data_dir", create=False)
  # After parsing, so that a usage error or --help answers before TFDS loads.
  from amd_jax.data import sources
  # Each builder takes the flags it declares (moving_digits none).
  accepted = getattr(sources.BUILDERS.get(args.name), "OPTIONS", ())
  options = {k: getattr(args, k) for k in ("short_side", "keyint", "validate", "workers")
             if k in accepted}
  with errors.exit_on_bad_input():
    b = sources.prepare(args.name, args.data_dir, args.manual_dir, **options)
  counts = ", ".join(f"{s} {info.num_examples}" for s, info in b.info.splits.items())
  print(f"{args.name} prepared in {b.data_dir}: {counts}")


if __name__ == "__main__":
  main()
