"""python -m amd_jax.plan: compile a config for accelerators without one (amd_jax/plan/cli.py)."""

from amd_jax.plan import cli

if __name__ == "__main__":
  cli.main()
