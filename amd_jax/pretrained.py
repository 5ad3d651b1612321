"""Weights from checkpoints: ready models, and the weights a run starts from (the
teacher of an AMD run, the encoder a fine-tuning starts from, a classifier to test).

Any checkpoint `amd_jax.convert` reads will do — an official VideoMAE/AMD
`.pth`, a DeepSpeed folder, a Hugging Face VideoMAE folder, a converted orbax
checkpoint or a training workdir of ours — converted on the fly. Where PATH is
no local path, a Hugging Face Hub repo id (owner/name[@revision]) names the
model, read through huggingface_hub's cache (amd_jax.hub).

    model = pretrained.load(PATH)          # eval mode
    model = pretrained.load("MCG-NJU/videomae-base-finetuned-kinetics")   # by Hub id
    logits = model(video)                  # a classification checkpoint: (B, classes)
    features, hidden = model(video)        # an encoder checkpoint: (B, N, D), per-block
    encoder = pretrained.load(PATH, part="encoder")   # the encoder of any checkpoint

video: float32 (B, T, H, W, 3), normalised with ImageNet mean/std. A
pre-training checkpoint loads as the whole `Pretrainer` (called with mask
indices, see amd_jax.models.pretrain).
"""

from __future__ import annotations

import logging

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from amd_jax import convert, errors, sharding
from amd_jax.convert import spec as spec_lib
from amd_jax.models import vit

log = logging.getLogger("amd_jax")


def build(spec: spec_lib.ModelSpec, weights: dict[str, np.ndarray]) -> nnx.Module:
  """The model of `spec` holding `weights` (our flat keys; each is let go once placed)."""
  graphdef, state = spec.abstract()
  paths = jax.tree_util.tree_flatten_with_path(state)[0]
  leaves = [jnp.asarray(weights.pop(spec_lib.flat_key(p)), x.dtype) for p, x in paths]
  return nnx.merge(graphdef, jax.tree.unflatten(jax.tree.structure(state), leaves))


def load(path: str, *, part: str | None = None, kind: str | None = None,
         **options) -> nnx.Module:
  """The model a checkpoint holds, in eval mode (see the module docstring).

  path: a local path, or a Hugging Face Hub repo id when no local path has that
  name. kind overrides detection (pth | deepspeed | hf | orbax). options: num_frames,
  image_size (int or (H, W)) rebuild it for another clip (positions are fixed
  sinusoids, so any grid works); heads, decoder_heads for a .pth whose model
  does not have the standard heads of its width; student_layers (e.g. (6, 12))
  for an AMD .pth whose saved args do not name its aligned layers.
  """
  spec, weights = convert.read(path, kind=kind, part=part, **options)
  model = build(spec, weights)
  model.eval()
  return model


def load_encoder(path: str, target: nnx.State, clip: tuple[int, int], *,
                 what: str = "teacher") -> tuple[nnx.State, float]:
  """The encoder of the checkpoint at `path` (any kind), shaped like `target`.

  target: the abstract parameter state of the encoder to fill (ShapeDtypeStructs).
  clip: (frames, size) the config builds it for, in place of the sizes a .pth
  without saved args would be assumed to have (the weights fit any clip).
  A checkpoint whose encoder differs in width, depth, heads, patch or tubelet is
  refused with a line naming both, before anything is converted. The source's
  final norm is ignored when the target has none (a teacher's features are
  taken before it). Returns host numpy arrays in target's structure, and the
  source blocks' LayerNorm epsilon (HF models use 1e-12, the official ones 1e-6),
  which the encoder must be built with to reproduce its source.
  """
  wanted = spec_lib.flatten(target)
  # The config's variant has the standard heads of its width; infer assumes the same.
  need = spec_lib.infer("encoder", {k: tuple(x.shape) for k, x in wanted.items()}, {}).variant
  fields = ("width", "depth", "heads", "mlp_dim", "patch", "tubelet")
  describe = lambda v: ", ".join(f"{f} {getattr(v, f)}" for f in fields)

  def fits(spec: spec_lib.ModelSpec) -> None:
    if any(getattr(spec.variant, f) != getattr(need, f) for f in fields):
      v = spec.variant
      name = vit.variant_name(v.width, v.depth, v.heads, v.patch, v.tubelet)
      hint = (f": set --config.{'teacher' if what == 'teacher' else 'model'}.variant={name}"
              + (" and align.teacher_layers within its "
                 f"{v.depth} blocks" if what == "teacher" else "")) if name else ""
      raise errors.BadInput(f"{what} checkpoint {path} does not fit the config: its encoder "
                            f"has {describe(spec.variant)}; the config's {what} needs "
                            f"{describe(need)} (different parameter shapes or heads){hint}")
    if spec.norm_eps is None and "norm/scale" in wanted:
      raise errors.BadInput(f"{what} checkpoint {path}: its encoder has no final norm and "
                            f"the config's {what} needs one")

  spec, weights = convert.read(path, part="encoder", check=fits, num_frames=clip[0],
                               image_size=clip[1])
  log.info("%s checkpoint %s: %s, LayerNorm eps %g in its blocks", what, path,
           spec.describe(), spec.ln_eps)
  # A final norm the target lacks is left out: a teacher's features come before it.
  leaves = [np.asarray(weights[spec_lib.flat_key(p)], x.dtype)
            for p, x in jax.tree_util.tree_flatten_with_path(target)[0]]
  return jax.tree.unflatten(jax.tree.structure(target), leaves), spec.ln_eps


def load_init(config: ml_collections.ConfigDict, state: dict, state_sharding: dict) -> dict:
  """The train state with its encoder taken from the pre-training checkpoint config.init.

  Only encoder weights move (bit for bit); the source's decoder and alignment
  heads are left, and its final norm too unless the model has one (the AVA
  detector uses it); fc_norm and head keep their fresh initialisation.
  """
  target = state["params"]["encoder"]
  host, ln_eps = load_encoder(config.init, sharding.abstract_like(
      target, state_sharding["params"]["encoder"]), (config.data.frames, config.data.size),
      what="init")
  if ln_eps != config.model.ln_eps:
    # The epsilon is static (in the graphdef) and must be the same on every resume.
    raise errors.BadInput(f"init {config.init} was trained with LayerNorm eps {ln_eps:g}: "
                          f"add --config.model.ln_eps={ln_eps:g}")
  loaded = spec_lib.flatten(jax.device_put(host, state_sharding["params"]["encoder"]))
  params = jax.tree_util.tree_map_with_path(
      lambda path, x: loaded.get(spec_lib.flat_key(path).removeprefix("encoder/"), x)
      if spec_lib.flat_key(path).startswith("encoder/") else x, state["params"])
  new = sorted(k for k in state["params"] if k != "encoder")
  norm = "with its final norm" if "norm" in target else "without its final norm"
  log.info("init: encoder (%d tensors) loaded from %s %s; decoder and alignment heads left "
           "out; %s newly initialised", len(jax.tree.leaves(host)), config.init, norm,
           ", ".join(new))
  return dict(state, params=params)


def load_classifier(config: ml_collections.ConfigDict, params: nnx.State, shardings
                    ) -> nnx.State:
  """Parameters of a fine-tuned classification checkpoint of any kind, placed like `params`."""
  spec, weights = convert.read(config.init)
  if spec.task != "classifier":
    raise errors.BadInput(f"init {config.init} holds a {spec.task} model: mode=test needs a "
                          "fine-tuned classifier (or a workdir with checkpoints)")
  wanted = spec_lib.flatten(params)
  got = {k: tuple(v.shape) for k, v in weights.items()}
  need = {k: tuple(v.shape) for k, v in wanted.items()}
  if got != need:
    diff = sorted(set(got.items()) ^ set(need.items()))[0][0]
    raise errors.BadInput(f"init {config.init} does not fit the config's classifier "
                          f"({config.model.variant}, {config.data.num_classes} classes): "
                          f"{diff} differs")
  if spec.ln_eps != config.model.ln_eps:
    raise errors.BadInput(f"init {config.init} was trained with LayerNorm eps "
                          f"{spec.ln_eps:g}: add --config.model.ln_eps={spec.ln_eps:g}")
  host = jax.tree.unflatten(jax.tree.structure(params),
                            [weights[k] for k in wanted])
  log.info("testing the classifier at %s", config.init)
  return jax.device_put(host, shardings)
