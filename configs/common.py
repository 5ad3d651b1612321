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
  given = []
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
    given.append(key)
  out["given"] = tuple(given)          # the keys the argument named (refuse_with_runlocal)
  return ml_collections.ConfigDict(out)


def refuse_with_runlocal(arg: ml_collections.ConfigDict, **picked: str) -> None:
  """`runlocal` picks these arguments itself (key → what it picks): one named beside it
  would be silently replaced, so the pair is refused in one line."""
  clash = [k for k in picked if arg.runlocal and k in arg.given]
  if clash:
    raise ValueError(
        f"runlocal picks its own {' and '.join(f'{k} ({picked[k]})' for k in clash)}: "
        f"drop {' and '.join(f'{k}={arg[k]}' for k in clash)}, or drop runlocal")


def runlocal_data(arg: ml_collections.ConfigDict) -> dict[str, str]:
  """What runlocal picks of the data, for refuse_with_runlocal: beside data=video_folder
  nothing (runlocal is then the tiny run on the user's videos), else moving_digits."""
  return {} if arg.data == "video_folder" else {"data": "moving_digits"}


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


# Every config key's meaning in one line: what `python -m amd_jax.main --config=...
# --print_config` prints beside each value, and config.txt in every workdir.
# tests/test_configs.py keeps it complete (every key of every config) and current.
MEANINGS = {
    "mode": "amd | videomae (pre-training); finetune | test (classification, AVA)",
    "seed": "seeds the initialisation, the data order, the masks and every step's rng",
    "init": "checkpoint to fine-tune from: a workdir, checkpoint folder, .pth or HF folder",
    "backend": "cpu | gpu | tpu: float32 on cpu; bfloat16 compute (cuDNN attention on gpu)",
    "batch_size": "clips per update over all hosts and devices, repeated samples included",
    "grad_accum": "micro-batches per update: the same update in less memory",
    "eval_batch_size": "videos per evaluation batch (each with all its test views)",
    "evals.val.split": "the validation's split",
    "evals.val.every": "steps between validations; 0: once per epoch; -1: at the end only",
    "evals.val.views": "centre (one clip, as in training, fixed seed) | multi (the test's)",
    "evals.test.split": "the test's split (test_results.json; mode=test runs it alone)",
    "evals.test.every": "steps between tests; 0: once per epoch; -1: at the end only",
    "evals.test.views": "centre | multi (data.test_clips × data.test_crops per video)",
    "total_steps": "updates the run makes; 0: optim.epochs' worth (the schedule ends with it)",
    "log_every": "steps between metrics rows (metrics.jsonl, TensorBoard)",
    "ckpt_every": "steps between checkpoints",
    "keep_ckpts": "checkpoints kept in the workdir (older ones are deleted)",
    "progress": "show a progress bar",
    "model.variant": "the ViT: SIZE/PATCHxTUBELET, e.g. B/16x2 (sizes Mu Ti Mi S B L H)",
    "model.decoder_depth": "blocks of the pixel decoder (pre-training)",
    "model.drop_path": "stochastic depth rate of the last block (linear over depth)",
    "model.ln_eps": "LayerNorm epsilon",
    "model.remat": "recompute each block's activations in the backward pass (less memory)",
    "model.dtype": "compute dtype (parameters stay float32)",
    "model.attention": "auto | blocked | xla | cudnn: how attention is computed",
    "model.head": "classifier | detector (AVA)",
    "model.head_dropout": "dropout before the classification head",
    "model.init_scale": "scale of the head's initial weights",
    "teacher.variant": "the frozen VideoMAE teacher's ViT (AMD)",
    "teacher.init": "the teacher's weights: a VideoMAE workdir, checkpoint, .pth or HF folder",
    "teacher.ln_eps": "the teacher's LayerNorm epsilon (a checkpoint's own wins)",
    "teacher.dtype": "the teacher's compute dtype",
    "teacher.attention": "auto | blocked | xla | cudnn, for the teacher",
    "align.method": "direct | generation | parallel | serial: how features are aligned",
    "align.student_layers": "student blocks whose features are aligned (1-based)",
    "align.teacher_layers": "teacher blocks they are aligned to, pairwise (1-based)",
    "align.generator_depth": "blocks of each generator (teacher width)",
    "align.loss": "l2 | l1 | smooth_l1, the alignment loss",
    "align.target_norm": "none | layernorm: the teacher features as targets",
    "align.learnable_mask_tokens": "train the generators' mask tokens (official: frozen)",
    "loss.rec": "weight of the pixel reconstruction loss",
    "loss.dir": "weight of the direct alignment loss (AMD)",
    "loss.gen": "weight of the generation alignment loss (AMD)",
    "masking.student_ratio": "fraction of the tubes hidden from the student",
    "masking.teacher_ratio": "fraction of the tubes hidden from the teacher (AMD)",
    "data.name": "the dataset, as `python -m amd_jax.data.build NAME` prepared it; "
                 "video_folder/NAME picks one of several built video folders",
    "data.data_dir": "the data root the dataset was prepared in; empty: $AMD_JAX_DATA, "
                     "else ~/.cache/amd_jax",
    "data.split": "training split, slicing allowed ('train[:10%]')",
    "data.num_classes": "classes of the dataset; 0: read from its label map (video and "
                        "image folders)",
    "data.frames": "frames per clip",
    "data.size": "crop side in pixels",
    "data.sampler": "dense | span | segments: which frames a training clip takes",
    "data.sampling_rate": "frame stride of dense and span sampling",
    "data.num_sample": "repeated sampling: clips drawn from each decoded video",
    "data.train_videos": "videos one epoch counts for the schedule; 0: the split's size",
    "data.worker_count": "grain worker processes decoding per host (0: in the main process)",
    "data.flip": "random horizontal flip (off where left and right differ)",
    "data.rand_augment.num_ops": "RandAugment operations per clip",
    "data.rand_augment.magnitude": "RandAugment magnitude",
    "data.rand_augment.magnitude_std": "spread of the RandAugment magnitude",
    "data.erase_prob": "random erasing probability",
    "data.test_sampler": "segments | dense: how the test views take their frames",
    "data.test_clips": "temporal clips per test video",
    "data.test_crops": "spatial crops per test clip",
    "data.per_class": "> 0: train on the split's first N videos of each class",
    "data.short_side": "AVA: frames resized to this short side before cropping",
    "data.max_boxes": "AVA: people per training clip (padded)",
    "data.test_height": "AVA: test frame height",
    "data.test_width": "AVA: test frame width",
    "data.box_threshold": "AVA: proposals scoring less are not evaluated",
    "mixup.mixup_alpha": "mixup's Beta parameter",
    "mixup.cutmix_alpha": "cutmix's Beta parameter",
    "mixup.prob": "probability of mixing a batch",
    "mixup.switch_prob": "probability of cutmix instead of mixup",
    "mixup.label_smoothing": "label smoothing of the soft targets",
    "optim.base_lr": "learning rate per 256 videos (lr = base_lr × videos per update / 256)",
    "optim.min_lr": "the cosine schedule's final learning rate",
    "optim.epochs": "epochs of the schedule (pre-training: passes × num_sample)",
    "optim.warmup_epochs": "epochs of linear warm-up",
    "optim.b1": "AdamW beta1",
    "optim.b2": "AdamW beta2",
    "optim.eps": "AdamW epsilon",
    "optim.weight_decay": "AdamW weight decay (none on biases, norms and embeddings)",
    "optim.clip_norm": "global gradient norm clip; 0: none",
    "optim.layer_decay": "layer-wise learning-rate decay (fine-tuning)",
    "mesh.data": "devices along the data axis (-1: the rest)",
    "mesh.fsdp": "devices a weight's width is split over (-1: the rest); 1: data-parallel",
    "sharding.rules": "logical axis → mesh axis, for every parameter",
    "sharding.replicate_teacher": "keep the teacher whole on every device",
}
