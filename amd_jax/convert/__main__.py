r"""python -m amd_jax.convert --src SRC --dst DST [--to orbax|hf|pth] [--from KIND] [...]

SRC: an official VideoMAE/AMD .pth, a DeepSpeed folder, a Hugging Face VideoMAE
folder, or ours (a converted checkpoint or a training workdir); the kind is
detected, --from overrides it. SRC may also be a Hugging Face Hub repo id,
owner/name[@revision] (e.g. MCG-NJU/videomae-base), when no local path has that
name: it is read from huggingface_hub's cache, fetched there first if need be.
DST: an orbax checkpoint (default), a Hugging Face folder (--to hf) or an
official-layout .pth (--to pth, or a DST ending in .pth). Bad input ends with
one line and exit code 2.
"""

import argparse
import logging
import sys

from amd_jax import convert, errors, quiet
from amd_jax.convert import kinds, writers


def _size(text: str) -> tuple[int, int]:
  h, _, w = text.partition("x")
  return int(h), int(w or h)


def _layers(text: str) -> tuple[int, ...]:
  return tuple(int(l) for l in text.split(","))


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m amd_jax.convert", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--src", required=True, help="checkpoint to read: a path or a Hugging "
                      "Face repo id (owner/name[@revision])")
  parser.add_argument("--dst", required=True, help="where to write (must not exist)")
  parser.add_argument("--to", choices=convert.TARGETS,
                      help="output format (default: pth for a .pth/.pt DST, else orbax)")
  parser.add_argument("--from", dest="kind", choices=kinds.KINDS,
                      help="what SRC is (default: detected)")
  parser.add_argument("--part", choices=convert.PARTS, help="keep only this part of the model")
  parser.add_argument("--frames", type=int, help="clip length the model is built for "
                      "(default: the source's; a .pth's saved args, else 16, said in one line)")
  parser.add_argument("--size", type=_size, help="image size H or HxW (default: the source's; "
                      "a .pth's saved args, else 224, said in one line)")
  parser.add_argument("--heads", type=int, help="encoder attention heads (a .pth does not "
                      "store them; default: the standard model's of that width)")
  parser.add_argument("--decoder_heads", type=int, help="decoder attention heads (likewise)")
  parser.add_argument("--student_layers", type=_layers, metavar="L1,L2,...",
                      help="an AMD student's aligned blocks, 1-indexed as align.student_layers "
                      "(default: the source's config or saved args; a .pth without them is "
                      "refused)")
  parser.add_argument("--no_progress", action="store_true", help="no progress bar")
  args = parser.parse_args(argv)
  # main returns the exit status (tests and scripts call it), so it reports bad
  # input itself rather than through errors.exit_on_bad_input, which exits.
  try:
    # Nothing may be there yet (a .pth file, or an orbax/HF folder); its folder is made.
    writers.check_free(args.dst, "--dst")
    convert.convert(args.src, args.dst, to=args.to, kind=args.kind, part=args.part,
                    progress=not args.no_progress, num_frames=args.frames,
                    image_size=args.size, heads=args.heads, decoder_heads=args.decoder_heads,
                    student_layers=args.student_layers)
  except errors.BadInput as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  quiet.quiet_third_party()
  # Plain lines: what was read, dropped or drawn anew, and what was written.
  logging.basicConfig(level=logging.WARNING, format="%(message)s", force=True)
  logging.getLogger("amd_jax").setLevel(logging.INFO)
  sys.exit(main())
