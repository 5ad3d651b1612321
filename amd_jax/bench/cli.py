"""The benchmarks' command line: python -m amd_jax.bench COMMAND (see __init__.py)."""

from __future__ import annotations

import argparse
import json
import sys

import amd_jax.bench
from amd_jax import errors
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
  try:
    result = args.run(args)
  except errors.BadInput as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  if result is not None:               # `table` prints its own text
    print(json.dumps(result), flush=True)
