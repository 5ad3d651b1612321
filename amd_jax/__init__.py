"""amd_jax: Asymmetric Masked Distillation (CVPR 2024) in JAX/Flax NNX."""

__version__ = "0.1.0"
