"""Planning a run for accelerators this machine does not have: `python -m amd_jax.plan`.

  targets.py   the chips (published peaks, bandwidths, memory) and their compile-only
               devices: libtpu's topologies, the CUDA plugin's deviceless compiler
  program.py   a config's real update (state.build_training, abstract) compiled for
               them, and what the compiled program says: memory, FLOPs, collectives
  cli.py       the command line
"""
