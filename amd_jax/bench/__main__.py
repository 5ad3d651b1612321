"""python -m amd_jax.bench: the benchmarks' command line (amd_jax/bench/cli.py)."""

from amd_jax.bench import cli

if __name__ == "__main__":
  cli.main()
