"""python -m amd_jax.proj.study: the embedded study's command line (run.py)."""

from amd_jax.proj.study import run

if __name__ == "__main__":
  run.main()
