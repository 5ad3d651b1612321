"""Hugging Face `transformers`' VideoMAE config.json, both ways: our model → its fields
(`videomae_config`, `config_json`) and a folder's config.json → the task and what
`spec.infer` needs beyond the weights' shapes (`task_and_meta`)."""

from __future__ import annotations

from amd_jax import errors
from amd_jax.convert import spec as spec_lib
from amd_jax.models import vit

ARCHITECTURES = {"VideoMAEModel": "encoder", "VideoMAEForVideoClassification": "classifier",
                 "VideoMAEForPreTraining": "pretrainer"}
# transformers builds fc_norm and the decoder's final norm with torch's default eps.
TORCH_LN_EPS = 1e-5
# VideoMAEConfig's defaults, for fields a config.json leaves out.
DEFAULTS = dict(image_size=224, patch_size=16, num_channels=3, num_frames=16, tubelet_size=2,
                num_attention_heads=12, decoder_num_attention_heads=6, hidden_act="gelu",
                layer_norm_eps=1e-12, qv_bias=True, use_mean_pooling=True)


def videomae_config(variant: vit.Variant, *, image_size: int | tuple[int, int], num_frames: int,
                    layer_norm_eps: float, use_mean_pooling: bool = True,
                    decoder_depth: int | None = None, **extra) -> dict:
  """The transformers `VideoMAEConfig` fields of our ViT `variant`: the one mapping of our
  models onto HF's, for the config.json we write (`config_json`) and for the PyTorch
  references built from transformers (amd_jax/bench, tests). `use_mean_pooling` true
  (HF's default) leaves the encoder without a final norm; the decoder's fields come
  only with `decoder_depth`; `extra` adds fields as they are (num_labels, dtype, …)."""
  v = variant
  h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
  config = dict(
      image_size=h if h == w else [h, w], patch_size=v.patch, num_channels=3,
      num_frames=num_frames, tubelet_size=v.tubelet, hidden_size=v.width,
      num_hidden_layers=v.depth, num_attention_heads=v.heads, intermediate_size=v.mlp_dim,
      hidden_act="gelu", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
      initializer_range=0.02, layer_norm_eps=layer_norm_eps, qv_bias=True,
      use_mean_pooling=use_mean_pooling, norm_pix_loss=True)
  if decoder_depth is not None:
    config.update(decoder_hidden_size=v.decoder_width, decoder_num_hidden_layers=decoder_depth,
                  decoder_num_attention_heads=v.decoder_heads,
                  decoder_intermediate_size=4 * v.decoder_width)
  return dict(**config, **extra)


def config_json(spec: spec_lib.ModelSpec) -> dict:
  """The config.json of a Hugging Face folder holding `spec`."""
  arch = {t: a for a, t in ARCHITECTURES.items()}[spec.task]
  config = dict(architectures=[arch], model_type="videomae", **videomae_config(
      spec.variant, image_size=spec.image_size, num_frames=spec.num_frames,
      layer_norm_eps=spec.ln_eps,
      use_mean_pooling=spec.task == "classifier" or spec.norm_eps is None,
      decoder_depth=spec.decoder_depth if spec.task == "pretrainer" else None, dtype="float32"))
  if spec.task == "classifier":
    config["id2label"] = {str(i): f"LABEL_{i}" for i in range(spec.num_classes)}
    config["label2id"] = {f"LABEL_{i}": i for i in range(spec.num_classes)}
  return config


def task_and_meta(config: dict, path: str) -> tuple[str, dict]:
  """(task, spec.infer's meta) of the Hugging Face folder at `path` whose config.json is
  `config`; a setting the models lack is one line."""
  c = {**DEFAULTS, **config}
  if "qkv_bias" in config:          # the field's older name
    c["qv_bias"] = config["qkv_bias"]
  arch = (config.get("architectures") or ["none"])[0]
  if arch not in ARCHITECTURES:
    raise errors.BadInput(f"{path}: architecture {arch} is not one of "
                          f"{', '.join(ARCHITECTURES)}")
  task = ARCHITECTURES[arch]
  problems = []
  if c["hidden_act"] != "gelu":
    problems.append(f"hidden_act {c['hidden_act']!r} (the models use exact GELU)")
  if not c["qv_bias"]:
    problems.append("qv_bias false (the models learn q/v biases)")
  if task == "classifier" and not c["use_mean_pooling"]:
    problems.append("use_mean_pooling false (HF then classifies token 0 without fc_norm)")
  if task == "pretrainer" and c["use_mean_pooling"]:
    problems.append("use_mean_pooling true (the pre-training encoder then lacks its final norm)")
  if problems:
    raise errors.BadInput(f"{path}: unsupported VideoMAE config: {'; '.join(problems)}")
  size = c["image_size"]
  eps = float(c["layer_norm_eps"])
  claims = {k: config[f] for k, f in (("width", "hidden_size"), ("depth", "num_hidden_layers"),
                                      ("mlp_dim", "intermediate_size"), ("patch", "patch_size"),
                                      ("tubelet", "tubelet_size")) if f in config}
  if task == "pretrainer":
    claims.update({k: config[f] for k, f in (("decoder_width", "decoder_hidden_size"),
                                             ("decoder_depth", "decoder_num_hidden_layers"))
                   if f in config})
  if task == "classifier" and "id2label" in config:
    claims["num_classes"] = len(config["id2label"])
  return task, dict(claims=claims, heads=c["num_attention_heads"],
                    decoder_heads=c["decoder_num_attention_heads"], ln_eps=eps, norm_eps=eps,
                    fc_norm_eps=TORCH_LN_EPS, decoder_norm_eps=TORCH_LN_EPS,
                    num_frames=c["num_frames"],
                    image_size=(size, size) if isinstance(size, int) else tuple(size))
