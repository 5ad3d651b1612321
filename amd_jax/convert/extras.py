"""The optional `convert` extra: torch and safetensors, imported only when a file needs
them, so the core package (and loading a converted checkpoint) works without them."""

from __future__ import annotations

from amd_jax import errors


def torch():
  """The torch module, or one line saying what to install."""
  try:
    import torch
  except ImportError:
    raise errors.BadInput("reading or writing PyTorch checkpoints needs torch: "
                          "pip install -e '.[convert]'") from None
  return torch


def safetensors():
  """The safetensors package with its numpy API loaded, or one line saying what to install."""
  try:
    import safetensors
    import safetensors.numpy
  except ImportError:
    raise errors.BadInput("reading or writing Hugging Face checkpoints needs safetensors: "
                          "pip install -e '.[convert]'") from None
  return safetensors
