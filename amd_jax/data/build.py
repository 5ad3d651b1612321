r"""Prepares a dataset as ArrayRecord: python -m amd_jax.data.build NAME [--manual_dir IN] [...]

  python -m amd_jax.data.build k400 --manual_dir /raw/k400 --short_side 320 --keyint 16
  python -m amd_jax.data.build ssv2 --manual_dir /raw/ssv2
  python -m amd_jax.data.build ava --manual_dir /raw/ava --short_side 256
  python -m amd_jax.data.build moving_digits
  python -m amd_jax.data.build video_folder --manual_dir ~/my_videos --name mine

NAME: moving_digits (embedded, no input) | k400 | ucf101 | hmdb51 | ssv2 | ava |
image_folder | video_folder. The manual dir holds train.csv / val.csv / test.csv in the official
formats (amd_jax/data/builders/video_lists.py; ssv2: its .webm videos or frame
folders), for ava the official annotation files and frames
(amd_jax/data/builders/ava.py), for image_folder train/ val/ test/ folders of
class folders of images, for video_folder your own videos: class folders or a
path,class_name CSV, split by train/ val/ test/ or drawn at random
(amd_jax/data/builders/video_folder.py, docs/data.md).

The data goes to the data root: --data_dir, else $AMD_JAX_DATA, else
~/.cache/amd_jax, where training looks too (config.data.data_dir, empty by
default). Every file is checked while building (a video demuxed, an image
decoded) and the unreadable ones are left out, each listed once in bad_files.txt
next to the data (--no-validate skips the check, about 2-3 ms a video). The
build records what it read: building again from the same files says so and does
nothing; from changed files (an edited list, added or replaced videos) it is
refused unless --force, which builds a new copy and replaces the old one only
once it is complete. Bad input ends with one line and exit code 2.
"""

import argparse
import os

from amd_jax import errors, paths, quiet


def parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog="python -m amd_jax.data.build", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("name", metavar="NAME", help="the dataset (see above)")
  p.add_argument("--data_dir", default="", help="where the prepared dataset goes (default: "
                 "$AMD_JAX_DATA, else ~/.cache/amd_jax)")
  p.add_argument("--manual_dir", default="", help="the folder with the lists (not for "
                 "moving_digits)")
  p.add_argument("--short_side", type=int, default=0, help="re-encode videos (ava: frames) "
                 "at this short side (0: store the files as they are)")
  p.add_argument("--keyint", type=int, default=16, help="keyframe interval when re-encoding")
  p.add_argument("--validate", action=argparse.BooleanOptionalAction, default=True,
                 help="check every file (demux a video, decode an image) and leave the "
                 "unreadable ones out, listed in bad_files.txt (default: on)")
  p.add_argument("--force", action="store_true", help="build again even if prepared, from "
                 "whatever the manual dir holds now (the old copy is replaced once the new "
                 "one is complete)")
  p.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                 help="processes that re-encode or validate videos")
  p.add_argument("--name", dest="config", default="", help="video_folder: the name it is "
                 "built and trained under, beside other video folders (default: the manual "
                 "dir's folder name)")
  p.add_argument("--val_fraction", type=float, default=0.1, help="video_folder without "
                 "train/ val/ test/: the share of the videos drawn at random for val")
  p.add_argument("--test_fraction", type=float, default=0.1, help="video_folder: the same "
                 "for test (the rest is train)")
  p.add_argument("--split_seed", type=int, default=0, help="video_folder: the seed of that "
                 "draw")
  return p


def main(argv: list[str] | None = None) -> None:
  args = parser().parse_args(argv)
  # After parsing, so that a usage error or --help answers before TFDS loads.
  from amd_jax.data import sources
  # Checked before anything is built; made by prepare.
  root = args.data_dir or sources.data_root()
  with errors.exit_on_bad_input():
    paths.output_dir(root, "--data_dir" if args.data_dir else "the data root $AMD_JAX_DATA"
                     if os.environ.get("AMD_JAX_DATA") else "the data root", create=False)
  # Each builder takes the flags it declares (moving_digits none).
  accepted = getattr(sources.BUILDERS.get(args.name), "OPTIONS", ())
  options = {k: getattr(args, k) for k in ("short_side", "keyint", "validate", "workers",
                                          "config", "val_fraction", "test_fraction",
                                          "split_seed") if k in accepted}
  if args.manual_dir and "config" in options and not options["config"]:
    options["config"] = os.path.basename(os.path.abspath(args.manual_dir))
  with errors.exit_on_bad_input():
    prepared = (sources.builder(args.name, args.data_dir, **options).is_prepared()
                and not args.force)
    b = sources.prepare(args.name, args.data_dir, args.manual_dir, force=args.force,
                        **options)
  counts = ", ".join(f"{s} {info.num_examples}" for s, info in b.info.splits.items())
  if (b.info.metadata or {}).get("summary"):      # video_folder: classes, how it was split
    counts += f"; {b.info.metadata['summary']}"
  left_out = os.path.join(b.data_dir, "bad_files.txt")
  if os.path.isfile(left_out):
    with open(left_out) as f:
      counts += f"; {len(f.read().splitlines())} undecodable left out, listed in {left_out}"
  if prepared:
    print(f"{args.name} already prepared in {b.data_dir}: {counts} (--force builds it again)")
  else:
    print(f"{args.name} prepared in {b.data_dir}: {counts}")


if __name__ == "__main__":
  quiet.quiet_third_party()
  main()
