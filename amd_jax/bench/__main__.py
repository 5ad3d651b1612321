"""python -m amd_jax.bench: the benchmarks' command line (amd_jax/bench/cli.py)."""

from amd_jax import quiet
from amd_jax.bench import cli

if __name__ == "__main__":
  quiet.quiet_third_party()
  cli.main()
