"""What a checkpoint path holds: the kinds the converter reads, and the files that tell them apart.

Kinds: `pth` (an official VideoMAE/AMD `.pth`: a dict with the weights under
`model` or `module`, or the weights alone), `deepspeed` (a DeepSpeed folder with
`mp_rank_00_model_states.pt`), `hf` (a Hugging Face VideoMAE folder:
config.json + safetensors or pytorch_model.bin) and `orbax` (ours: a converted
checkpoint, model.json beside params/, or a training workdir).
"""

from __future__ import annotations

import os

from amd_jax import checkpoint, errors, files

KINDS = ("pth", "deepspeed", "hf", "orbax")
MODEL_JSON = "model.json"
PARAMS = "params"
DEEPSPEED_FILE = "mp_rank_00_model_states.pt"


def detect(path: str) -> str:
  """The kind of checkpoint at `path` (see the module docstring)."""
  if not os.path.exists(path):
    raise errors.BadInput(f"checkpoint {path} does not exist")
  if os.path.isfile(path):
    return "pth"
  entries = set(os.listdir(path))
  if MODEL_JSON in entries:
    return "orbax"
  if DEEPSPEED_FILE in entries or "latest" in entries:
    return "deepspeed"
  if "config.json" in entries and files.read_json(os.path.join(path, "config.json")).get(
      "model_type") == "videomae":
    return "hf"
  try:
    checkpoint.find_step_dir(path)
    return "orbax"
  except FileNotFoundError:
    pass
  raise errors.BadInput(f"cannot tell what {path} holds: expected a .pth file, a DeepSpeed "
                        f"folder ({DEEPSPEED_FILE}), a Hugging Face VideoMAE folder "
                        f"(config.json + weights), a converted checkpoint ({MODEL_JSON}) "
                        "or a training workdir")
