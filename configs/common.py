"""Pieces every config shares: argument parsing, mesh, sharding rules, logging."""

from __future__ import annotations

import ml_collections


def parse_arg(arg: str | None, **spec) -> ml_collections.ConfigDict:
  """Parses a config argument 'key=value,flag,...' against `spec`.

  spec maps each known key to its default; a tuple default is the list of
  allowed values (the first is the default), a bool default makes a flag that a
  bare `key` switches on. Anything else is refused with one line naming it.
  """
  out = {k: (v[0] if isinstance(v, tuple) else v) for k, v in spec.items()}
  for item in filter(None, (arg or "").split(",")):
    key, sep, value = item.partition("=")
    key = key.strip()
    if key not in spec:
      raise ValueError(f"unknown config argument {key!r}: known are {', '.join(spec)}")
    default = spec[key]
    if isinstance(default, bool):
      out[key] = value.lower() in ("", "1", "true", "yes") if sep else True
    elif isinstance(default, tuple):
      if value not in default:
        raise ValueError(f"config argument {key}={value!r}: choose from {'|'.join(default)}")
      out[key] = value
    else:
      out[key] = type(default)(value)
  return ml_collections.ConfigDict(out)


def pure_fsdp_rules() -> tuple[tuple[str, str | None], ...]:
  """Logical axis → mesh axis. Only the model width is split (over 'fsdp')."""
  return (
      ("embed", "fsdp"),
      ("mlp", None),
      ("qkv", None),
      ("decoder", None),
      ("pixels", None),
      ("classes", None),
  )


BACKENDS = ("cpu", "gpu", "tpu")


def add_runtime(config: ml_collections.ConfigDict, *, runlocal: bool, backend: str) -> None:
  """Mesh, sharding, backend, run length, logging and checkpointing fields, identical in
  every config.

  Backends (config argument `backend=`):
    cpu  float32 everywhere (the default; what tests and runlocal use);
         attention "auto" (vit.auto_attention: the blocked einsums on CPU).
    gpu  bfloat16 compute with float32 parameters, softmax, norms and losses;
         attention "cudnn", cuDNN's fused kernel (jax.nn.dot_product_attention
         takes XLA's unfused path unless asked); it needs bfloat16, so whoever
         overrides a dtype to float32 sets that model's attention to "auto" too.
         Launch with launch/env/gpu.sh sourced (the launch scripts do) for the
         XLA/NCCL flags.
    tpu  bfloat16 compute as on gpu, attention "auto" (XLA's); launch/env/tpu.sh.
  `model.attention` and `teacher.attention` take vit.ATTENTION_IMPLEMENTATIONS.
  """
  config.backend = backend
  models = [config.model] + ([config.teacher] if "teacher" in config else [])
  for model in models:
    model.attention = "cudnn" if backend == "gpu" else "auto"
    if backend in ("gpu", "tpu"):
      model.dtype = "bfloat16"
  config.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1))
  # Teacher parameters follow the same rules unless replicated (small teachers).
  config.sharding = ml_collections.ConfigDict(dict(rules=pure_fsdp_rules(),
                                                   replicate_teacher=False))
  # Updates the run makes; 0: optim.epochs' worth. The cosine schedule ends
  # with the run either way; the warm-up stays in epochs.
  config.total_steps = 0
  config.log_every = 10 if runlocal else 50
  config.ckpt_every = 50 if runlocal else 1000
  config.keep_ckpts = 3
  config.progress = True
