"""What a run's config says about the model it trained, beyond its weights' shapes.

build.py builds a run's model from its config; this reads the same config back
for a checkpoint of that run (a workdir's saved config.json, or a live
ConfigDict): which model the task builds, the attention heads of the variant,
the LayerNorm epsilon, the clip, and an AMD student's aligned layers and mask
tokens. convert rebuilds a training workdir's model from it (`spec_meta`).
"""

from __future__ import annotations

from collections.abc import Mapping

from amd_jax import config_files, task_names
from amd_jax.models import vit

# The model each task trains (tasks.py, Task.model), under the task names of convert's
# ModelSpec (encoder | classifier | pretrainer); a detector has no ModelSpec.
MODELS = {task_names.AMD: "pretrainer", task_names.VIDEOMAE: "pretrainer",
          task_names.CLASSIFICATION: "classifier", task_names.DETECTION: "detector"}
DETECTOR = MODELS[task_names.DETECTION]


def spec_meta(config: Mapping) -> dict:
  """`task` (a value of MODELS) and what spec.infer's meta takes from a run's config:
  heads, decoder_heads, ln_eps, num_frames, image_size and, for AMD, student_layers
  and learnable_mask_tokens. What the config leaves out is left out (spec.infer's
  official defaults), but for the mask tokens (the pre-training config's default).
  A config with no mode, not a training run's, reads as a pre-training model."""
  model, data = config.get("model", {}), config.get("data", {})
  task = task_names.of(config)
  meta = dict(task=MODELS.get(task, "pretrainer"))
  if "ln_eps" in model:
    meta["ln_eps"] = model["ln_eps"]
  if "variant" in model:
    v = vit.decode_variant(model["variant"])
    meta.update(heads=v.heads, decoder_heads=v.decoder_heads)
  if "frames" in data and "size" in data:
    meta.update(num_frames=data["frames"], image_size=(data["size"], data["size"]))
  if task == task_names.AMD:
    align = config.get("align", {})
    layers = align.get("student_layers")
    # A ConfigDict holds a tuple, its saved JSON a list: the meta is the same for both.
    meta.update(student_layers=None if layers is None else list(layers),
                learnable_mask_tokens=_learnable_mask_tokens(align))
  return meta


def _learnable_mask_tokens(align: Mapping) -> bool:
  if "learnable_mask_tokens" in align:
    return align["learnable_mask_tokens"]
  # Read where the default is set (configs/pretrain.py), not restated here.
  return config_files.load("pretrain").align.learnable_mask_tokens
