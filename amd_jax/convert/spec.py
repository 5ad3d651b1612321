"""What a checkpoint holds: the model's description, stored as `model.json`.

A `ModelSpec` rebuilds the model without anything else: the task (encoder |
classifier | pretrainer), the sizes, the clip it was made for and every
LayerNorm's epsilon. Sizes come from the tensors' shapes (`infer`); what
shapes cannot tell (attention heads, epsilons, frames, image size) comes from
the source's own metadata or the official defaults.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re

import jax
from flax import nnx, traverse_util

from amd_jax import errors
from amd_jax.models import heads as heads_lib
from amd_jax.models import pretrain, vit

FORMAT_VERSION = 1
# Every official LayerNorm's epsilon (docs/method.md#transformer-block).
OFFICIAL_EPS = 1e-6
STANDARD_SIZES = ("Mu", "Ti", "S", "B", "L", "H")


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """A model to rebuild. Epsilons: `ln_eps` every block (encoder, decoder,
  generators); `norm_eps` the encoder's final norm (None: the encoder has none);
  `fc_norm_eps` the classifier's; `decoder_norm_eps` the pixel decoder's.
  `align` (AMD students only): method, student_layers, generator_depth,
  learnable_mask_tokens, teacher_width."""
  task: str
  variant: vit.Variant
  num_frames: int = 16
  image_size: tuple[int, int] = (224, 224)
  ln_eps: float = OFFICIAL_EPS
  norm_eps: float | None = None
  fc_norm_eps: float | None = None
  decoder_norm_eps: float | None = None
  num_classes: int | None = None
  decoder_depth: int | None = None
  align: dict | None = None

  def build(self, rngs: nnx.Rngs) -> nnx.Module:
    v = self.variant
    if self.task == "encoder":
      return vit.Encoder(v, num_frames=self.num_frames, image_size=self.image_size,
                         final_norm=self.norm_eps is not None, ln_eps=self.ln_eps,
                         norm_eps=self.norm_eps, rngs=rngs)
    if self.task == "classifier":
      return heads_lib.Classifier(v, self.num_classes, num_frames=self.num_frames,
                                  image_size=self.image_size, ln_eps=self.ln_eps,
                                  fc_norm_eps=self.fc_norm_eps, rngs=rngs)
    align, teacher = None, None
    if self.align is not None:
      a = self.align
      align = pretrain.Align(method=a["method"], student_layers=tuple(a["student_layers"]),
                             generator_depth=a["generator_depth"],
                             learnable_mask_tokens=a["learnable_mask_tokens"])
      # The student reads only the teacher's width.
      teacher = dataclasses.replace(v, width=a["teacher_width"], mlp_dim=4 * a["teacher_width"])
    return pretrain.Pretrainer(v, num_frames=self.num_frames, image_size=self.image_size,
                               decoder_depth=self.decoder_depth, align=align,
                               teacher_variant=teacher, ln_eps=self.ln_eps,
                               norm_eps=self.norm_eps, decoder_norm_eps=self.decoder_norm_eps,
                               rngs=rngs)

  def abstract(self) -> tuple[nnx.GraphDef, nnx.State]:
    """The model's graphdef and state of ShapeDtypeStructs (cached: tracing a big
    model's initialisation takes seconds, and a load needs it twice)."""
    return _abstract(json.dumps(self.to_json(), sort_keys=True))

  def shapes(self) -> dict[str, tuple[int, ...]]:
    """Our flat key → shape of every variable the model holds."""
    return {k: tuple(x.shape) for k, x in flatten(self.abstract()[1]).items()}

  def encoder_part(self) -> ModelSpec:
    """The encoder alone (its final norm only where the checkpoint's encoder has one)."""
    return dataclasses.replace(
        self, task="encoder", variant=dataclasses.replace(
            self.variant, decoder_width=0, decoder_heads=0),
        norm_eps=self.norm_eps if self.task != "classifier" else None,
        fc_norm_eps=None, decoder_norm_eps=None, num_classes=None, decoder_depth=None,
        align=None)

  def describe(self) -> str:
    v = self.variant
    text = (f"{self.task}: width {v.width}, depth {v.depth}, heads {v.heads}, "
            f"patch {v.patch}, tubelet {v.tubelet}")
    if self.num_classes:
      text += f", {self.num_classes} classes"
    if self.decoder_depth:
      text += f", decoder {v.decoder_width}×{self.decoder_depth}"
    if self.align:
      text += (f", {self.align['method']} alignment at layers "
               f"{tuple(self.align['student_layers'])} to width {self.align['teacher_width']}")
    return text

  def to_json(self) -> dict:
    out = dataclasses.asdict(self)
    out["image_size"] = list(self.image_size)
    return {"format": FORMAT_VERSION, **out}

  @classmethod
  def from_json(cls, d: dict, where: str) -> ModelSpec:
    if d.get("format") != FORMAT_VERSION:
      raise errors.BadInput(f"{where}: model.json format {d.get('format')!r}, this version "
                            f"reads {FORMAT_VERSION}")
    fields = {f.name for f in dataclasses.fields(cls)}
    try:
      d = {k: v for k, v in d.items() if k in fields}
      return cls(**{**d, "variant": vit.Variant(**d["variant"]),
                    "image_size": tuple(d["image_size"])})
    except (KeyError, TypeError) as e:
      raise errors.BadInput(f"{where}: model.json is incomplete or malformed ({e})") from None


@functools.lru_cache(maxsize=8)
def _abstract(spec_json: str) -> tuple[nnx.GraphDef, nnx.State]:
  spec = ModelSpec.from_json(json.loads(spec_json), "spec")
  return nnx.split(nnx.eval_shape(lambda: spec.build(nnx.Rngs(0))))


def flat_key(path) -> str:
  """'blocks/layers/0/attn/qkv/kernel' for a pytree key path (nnx '.value' dropped)."""
  parts = [str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path]
  if parts and parts[-1] == "value":
    parts.pop()
  return "/".join(parts)


def flatten(tree) -> dict[str, object]:
  """Our flat key → leaf."""
  return {flat_key(p): x for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


def unflatten(flat: dict[str, object]) -> dict:
  """Nested dicts from flat keys (how converted weights are saved)."""
  return traverse_util.unflatten_dict(flat, sep="/")


def default_heads(width: int, *, decoder: bool = False) -> int:
  """Attention heads of the standard model of this width (head dim 64 otherwise)."""
  for name in STANDARD_SIZES:
    v = vit.decode_variant(f"{name}/16")
    if (v.decoder_width if decoder else v.width) == width:
      return v.decoder_heads if decoder else v.heads
  if width % 64:
    raise errors.BadInput(f"cannot tell the attention heads of a width-{width} model: "
                          "pass them (--heads / --decoder_heads)")
  return width // 64


def _indices(shapes: dict, pattern: str) -> list[int]:
  return sorted({int(m.group(1)) for k in shapes if (m := re.fullmatch(pattern, k))})


def _depth(shapes: dict, prefix: str) -> int:
  found = _indices(shapes, re.escape(prefix) + r"blocks/layers/(\d+)/.*")
  return max(found) + 1 if found else 0


def infer(task: str, shapes: dict[str, tuple[int, ...]], meta: dict) -> ModelSpec:
  """The spec of a `task` model whose (our-named) tensors have these shapes.

  meta: what the source says beyond shapes (any of heads, decoder_heads, ln_eps,
  norm_eps, fc_norm_eps, decoder_norm_eps, num_frames, image_size, student_layers,
  learnable_mask_tokens); missing entries take the official values. meta["claims"]
  (a config's sizes: width, depth, mlp_dim, patch, tubelet, decoder_width,
  decoder_depth, num_classes) must agree with the shapes.
  """
  spec = _infer(task, shapes, meta)
  found = {**dataclasses.asdict(spec.variant), "decoder_depth": spec.decoder_depth,
           "num_classes": spec.num_classes}
  for name, claim in meta.get("claims", {}).items():
    if claim != found[name]:
      raise errors.BadInput(f"the config says {name} {claim} but the weights have {found[name]}: "
                            "config and weights do not belong together")
  return spec


def _infer(task: str, shapes: dict[str, tuple[int, ...]], meta: dict) -> ModelSpec:
  enc = "" if task == "encoder" else "encoder/"
  try:
    kt, p, _, c, width = shapes[f"{enc}patch_embed/kernel"]
    mlp = shapes[f"{enc}blocks/layers/0/mlp/fc1/kernel"][1]
  except KeyError as e:
    raise errors.BadInput(f"no {e.args[0]} among the converted tensors: not a video ViT "
                          f"{task} checkpoint") from None
  if c != 3:
    raise errors.BadInput(f"the patch embedding takes {c} channels; the models take RGB (3)")
  eps = meta.get("ln_eps", OFFICIAL_EPS)
  dec_width = shapes.get("decoder/norm/scale", (0,))[0]
  variant = vit.Variant(
      width=width, depth=_depth(shapes, enc), heads=meta.get("heads") or default_heads(width),
      mlp_dim=mlp, patch=p, tubelet=kt, decoder_width=dec_width,
      decoder_heads=(meta.get("decoder_heads") or default_heads(dec_width, decoder=True)
                     if dec_width else 0))
  has_norm = f"{enc}norm/scale" in shapes
  spec = ModelSpec(task=task, variant=variant, num_frames=meta.get("num_frames", 16),
                   image_size=tuple(meta.get("image_size", (224, 224))), ln_eps=eps,
                   norm_eps=meta.get("norm_eps", eps) if has_norm else None)
  if task == "classifier":
    return dataclasses.replace(spec, num_classes=shapes["head/kernel"][1],
                               fc_norm_eps=meta.get("fc_norm_eps", eps))
  if task == "pretrainer":
    spec = dataclasses.replace(spec, decoder_depth=_depth(shapes, "decoder/"),
                               decoder_norm_eps=meta.get("decoder_norm_eps", eps))
    return dataclasses.replace(spec, align=_infer_align(shapes, variant, meta))
  return spec


def _infer_align(shapes: dict, variant: vit.Variant, meta: dict) -> dict | None:
  """AMD's alignment heads, from which module families are present (decoders.Alignment)."""
  families = {f: _indices(shapes, rf"alignment/{f}/(\d+)/.*")
              for f in ("projection_heads", "generator_projections", "direct_heads",
                        "generators")}
  if not any(families.values()):
    return None
  method = ("direct" if families["direct_heads"] else
            "parallel" if families["projection_heads"] and families["generator_projections"] else
            "generation" if families["generator_projections"] else "serial")
  pairs = max(len(v) for v in families.values())
  if method == "direct":
    teacher_width = shapes["alignment/direct_heads/0/fc1/kernel"][1]
    generator_depth = 0
  else:
    teacher_width = shapes["alignment/generators/0/blocks/layers/0/norm1/scale"][0]
    generator_depth = _depth(shapes, "alignment/generators/0/")
  # The tensors tell how many layers are aligned, not which: that comes from the
  # source's config or args, or from the user.
  layers = meta.get("student_layers")
  if not layers:
    raise errors.BadInput(f"the checkpoint has alignment heads for {pairs} student layer(s) "
                          "but does not say which layers feed them: pass them with "
                          "--student_layers (pretrained.load: student_layers=), e.g. 6,12, "
                          "the official scripts' for a 12-block student")
  layers = [int(l) for l in layers]
  if len(layers) != pairs:
    raise errors.BadInput(f"student layers {','.join(map(str, layers))} do not fit the "
                          f"checkpoint: it has alignment heads for {pairs} layer(s)")
  if len(set(layers)) != len(layers) or not all(1 <= l <= variant.depth for l in layers):
    raise errors.BadInput(f"student layers {','.join(map(str, layers))}: each must be a "
                          f"different block of the student's 1..{variant.depth}")
  return dict(method=method, student_layers=layers, generator_depth=generator_depth,
              learnable_mask_tokens=meta.get("learnable_mask_tokens", True),
              teacher_width=teacher_width)
