"""python -m amd_jax.study: the embedded study's command line (amd_jax/study/run.py)."""

from amd_jax.study import run

if __name__ == "__main__":
  run.main()
