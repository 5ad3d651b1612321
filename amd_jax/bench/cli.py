"""The benchmarks' command line: python -m amd_jax.bench COMMAND (see __init__.py)."""

from __future__ import annotations

import argparse
import json

import amd_jax.bench
from amd_jax import errors, paths
from amd_jax.bench import checkpoint, input_pipeline, step


def parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog="python -m amd_jax.bench",
                              description=amd_jax.bench.__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = p.add_subparsers(dest="command", required=True)
  input_pipeline.add_parser(sub)
  step.add_parser(sub)
  checkpoint.add_parser(sub)
  return p


def main(argv=None) -> None:
  args = parser().parse_args(argv)
  with errors.exit_on_bad_input():
    # The output paths first, before any model is built or clip read.
    if getattr(args, "dir", None):                 # checkpoint: where its saves go
      paths.output_dir(args.dir, "--dir")
    if getattr(args, "bad_files", None):           # input: undecodable videos
      paths.output_file(args.bad_files, "--bad_files")
    result = args.run(args)
  if result is not None:               # `table` prints its own text
    print(json.dumps(result), flush=True)
