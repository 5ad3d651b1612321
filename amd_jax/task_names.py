"""Which task a run's config describes: the one reader of config.mode and model.head.

Four tasks: AMD and VideoMAE pre-training, classification and AVA detection
fine-tuning. Works on a live ConfigDict and on a run's saved config.json (a dict),
so the modules below the trainer (convert, analysis) can tell a run's task without
building it. What each task does is amd_jax/tasks.py.
"""

from __future__ import annotations

from collections.abc import Mapping

from amd_jax import errors

AMD, VIDEOMAE, CLASSIFICATION, DETECTION = "amd", "videomae", "classification", "detection"
PRETRAINING = (AMD, VIDEOMAE)
# The modes a config file offers: the pre-training configs (they have a `masking`
# block) train AMD or VideoMAE (their mode is their task's name); the fine-tuning
# configs train (finetune) or only test.
FINETUNING_MODES = ("finetune", "test")


def modes(config: Mapping) -> tuple[str, ...]:
  """The values config.mode may take in this config file."""
  return PRETRAINING if "masking" in config else FINETUNING_MODES


def of(config: Mapping) -> str | None:
  """AMD, VIDEOMAE, CLASSIFICATION or DETECTION; None for a config with no mode (not
  a training run's); a mode the config file does not offer is one line."""
  mode = config.get("mode")
  if mode is None:
    return None
  if mode not in modes(config):
    raise errors.BadInput(f"config.mode={mode!r}: this config's modes are "
                          f"{'|'.join(modes(config))}")
  if mode in PRETRAINING:
    return mode
  head = (config.get("model") or {}).get("head")
  return DETECTION if head == "detector" else CLASSIFICATION


def evaluate_only(config: Mapping) -> bool:
  """mode=test: the fine-tuned model is tested, not trained."""
  return config.get("mode") == "test"
