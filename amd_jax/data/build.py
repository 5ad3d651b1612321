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

import os

from absl import app, flags

from amd_jax import errors

_DATA_DIR = flags.DEFINE_string("data_dir", None, "Where the prepared dataset goes.")
_MANUAL_DIR = flags.DEFINE_string("manual_dir", "", "The folder with the lists (not for "
                                  "moving_digits).")
_SHORT_SIDE = flags.DEFINE_integer("short_side", 0, "Re-encode videos (ava: frames) at this "
                                   "short side (0: store the files as they are).")
_KEYINT = flags.DEFINE_integer("keyint", 16, "Keyframe interval when re-encoding.")
_VALIDATE = flags.DEFINE_bool("validate", False, "Demux every file and leave the broken "
                              "ones out (listed in bad_files.txt).")
_WORKERS = flags.DEFINE_integer("workers", os.cpu_count() or 1, "Processes that re-encode "
                                "or validate videos.")
flags.mark_flags_as_required(["data_dir"])


def main(argv):
  if len(argv) != 2:
    raise app.UsageError("usage: python -m amd_jax.data.build NAME --data_dir OUT "
                         "[--manual_dir IN]")
  from amd_jax.data import sources
  name = argv[1]
  flag_values = dict(short_side=_SHORT_SIDE.value, keyint=_KEYINT.value,
                     validate=_VALIDATE.value, workers=_WORKERS.value)
  # Each builder takes the flags it declares (moving_digits none).
  accepted = getattr(sources.BUILDERS.get(name), "OPTIONS", ())
  options = {k: v for k, v in flag_values.items() if k in accepted}
  with errors.exit_on_bad_input():
    b = sources.prepare(name, _DATA_DIR.value, _MANUAL_DIR.value, **options)
  counts = ", ".join(f"{s} {info.num_examples}" for s, info in b.info.splits.items())
  print(f"{name} prepared in {b.data_dir}: {counts}")


if __name__ == "__main__":
  app.run(main)
