"""The mapping tables: our parameter ← the source's tensors, with a hook per rule.

One table per (layout, task) describes both directions: importing applies each
rule's hook to the source tensors, exporting applies its inverse. Layouts
(docs/method.md#checkpoints): the official VideoMAE/AMD one ("official") and Hugging Face
`transformers`' VideoMAE ("hf"). Our names are the flat keys of the model's
nnx state, e.g. `encoder/blocks/layers/3/attn/qkv/kernel`.

Templates hold placeholders ({i} block, {k} aligned layer pair); every name is
matched as a whole, so a tensor no rule claims is reported, never skipped.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Callable, Iterable

import numpy as np

TASKS = ("encoder", "classifier", "pretrainer")
LAYOUTS = ("official", "hf")


@dataclasses.dataclass(frozen=True)
class Hook:
  """forward: source tensors (in the rule's order) → ours; inverse: ours → source tensors."""
  name: str
  forward: Callable[..., np.ndarray]
  inverse: Callable[[np.ndarray], tuple[np.ndarray, ...]]


COPY = Hook("copy", lambda x: x, lambda x: (x,))
# torch Linear W[out, in] ↔ kernel [in, out].
LINEAR = Hook("linear", lambda w: w.T, lambda k: (k.T,))
# Conv3d W[D, C, kt, kh, kw] ↔ our patch kernel (kt, kh, kw, C, D).
CONV3D = Hook("conv3d", lambda w: w.transpose(2, 3, 4, 1, 0),
              lambda k: (k.transpose(4, 3, 0, 1, 2),))
# The decoder's mask token (1, 1, D) ↔ (D,).
TOKEN = Hook("token", lambda t: t.reshape(-1), lambda t: (t.reshape(1, 1, -1),))
# HF splits the fused qkv Linear into query/key/value [D, D] each: stacking the
# rows (q, k, v) gives the official [3D, D] weight, whose transpose is our kernel.
# q/v biases map one to one; the k bias is a constant zero on every side.
FUSE_QKV = Hook("fuse_qkv", lambda q, k, v: np.concatenate([q, k, v]).T,
                lambda kernel: tuple(np.split(kernel.T, 3)))


@dataclasses.dataclass(frozen=True)
class Rule:
  ours: str
  theirs: tuple[str, ...]
  hook: Hook


@dataclasses.dataclass(frozen=True)
class Table:
  """Rules; source tensors read and dropped on purpose (their template, why); and
  ours that the layout never stores (our template, why): drawn anew on import,
  left out on export."""
  layout: str
  task: str
  rules: tuple[Rule, ...]
  dropped: tuple[tuple[str, str], ...] = ()
  unstored: tuple[tuple[str, str], ...] = ()

  def unstored_why(self, ours: str) -> str | None:
    return next((why for t, why in self.unstored if _regex(t).fullmatch(ours)), None)


def _linear(ours: str, theirs: str, bias: bool = True) -> list[Rule]:
  rules = [Rule(f"{ours}/kernel", (f"{theirs}.weight",), LINEAR)]
  if bias:
    rules.append(Rule(f"{ours}/bias", (f"{theirs}.bias",), COPY))
  return rules


def _norm(ours: str, theirs: str) -> list[Rule]:
  return [Rule(f"{ours}/scale", (f"{theirs}.weight",), COPY),
          Rule(f"{ours}/bias", (f"{theirs}.bias",), COPY)]


def _official_block(ours: str, theirs: str) -> list[Rule]:
  return [*_norm(f"{ours}norm1", f"{theirs}norm1"),
          *_linear(f"{ours}attn/qkv", f"{theirs}attn.qkv", bias=False),
          Rule(f"{ours}attn/q_bias", (f"{theirs}attn.q_bias",), COPY),
          Rule(f"{ours}attn/v_bias", (f"{theirs}attn.v_bias",), COPY),
          *_linear(f"{ours}attn/proj", f"{theirs}attn.proj"),
          *_norm(f"{ours}norm2", f"{theirs}norm2"),
          *_linear(f"{ours}mlp/fc1", f"{theirs}mlp.fc1"),
          *_linear(f"{ours}mlp/fc2", f"{theirs}mlp.fc2")]


def _hf_block(ours: str, theirs: str) -> list[Rule]:
  a = f"{theirs}attention.attention."
  return [*_norm(f"{ours}norm1", f"{theirs}layernorm_before"),
          Rule(f"{ours}attn/qkv/kernel",
               (f"{a}query.weight", f"{a}key.weight", f"{a}value.weight"), FUSE_QKV),
          Rule(f"{ours}attn/q_bias", (f"{a}q_bias",), COPY),
          Rule(f"{ours}attn/v_bias", (f"{a}v_bias",), COPY),
          *_linear(f"{ours}attn/proj", f"{theirs}attention.output.dense"),
          *_norm(f"{ours}norm2", f"{theirs}layernorm_after"),
          *_linear(f"{ours}mlp/fc1", f"{theirs}intermediate.dense"),
          *_linear(f"{ours}mlp/fc2", f"{theirs}output.dense")]


def _encoder(layout: str, ours: str, theirs: str) -> list[Rule]:
  """Patch embedding, blocks and the final norm (a rule that matches nothing is fine:
  completeness is checked against the model, which may have no final norm)."""
  if layout == "official":
    patch, block, blocks, norm = (f"{theirs}patch_embed.proj", _official_block,
                                  f"{theirs}blocks.{{i}}.", f"{theirs}norm")
  else:
    patch, block, blocks, norm = (f"{theirs}embeddings.patch_embeddings.projection", _hf_block,
                                  f"{theirs}encoder.layer.{{i}}.", f"{theirs}layernorm")
  return [Rule(f"{ours}patch_embed/kernel", (f"{patch}.weight",), CONV3D),
          Rule(f"{ours}patch_embed/bias", (f"{patch}.bias",), COPY),
          *block(f"{ours}blocks/layers/{{i}}/", blocks),
          *_norm(f"{ours}norm", norm)]


@functools.cache
def table(layout: str, task: str) -> Table:
  """The table for a checkpoint of `task` in `layout`."""
  official = layout == "official"
  dropped, unstored = (), ()
  if task == "encoder":
    rules = _encoder(layout, "", "")
  elif task == "classifier":
    rules = [*_encoder(layout, "encoder/", "" if official else "videomae."),
             *_norm("fc_norm", "fc_norm"),
             *_linear("head", "head" if official else "classifier")]
  elif task == "pretrainer":
    block = _official_block if official else _hf_block
    rules = [*_encoder(layout, "encoder/", "encoder." if official else "videomae."),
             *_linear("decoder/encoder_to_decoder", "encoder_to_decoder", bias=False),
             Rule("decoder/mask_token", ("mask_token",), TOKEN),
             *block("decoder/blocks/layers/{i}/",
                    "decoder.blocks.{i}." if official else "decoder.decoder_layers.{i}."),
             *_norm("decoder/norm", "decoder.norm"),
             *_linear("decoder/head", "decoder.head")]
    if official:  # AMD's serial alignment; HF has no place for it
      rules += [*_linear("alignment/projection_heads/{k}", "encoder.projection_heads.{k}",
                         bias=False),
                *_official_block("alignment/generators/{k}/blocks/layers/{i}/",
                                 "generators.{k}.blocks.{i}.")]
      why = ("the official generators build a final norm their forward never uses; "
             "ours have none")
      dropped = (("generators.{k}.norm.weight", why), ("generators.{k}.norm.bias", why))
      unstored = (("alignment/generators/{k}/mask_token",
                   "the official code never saves its generator mask tokens: it draws "
                   "frozen ones anew at every start (docs/method.md#generator-mask-tokens)"),)
  else:
    raise ValueError(f"unknown task {task!r}")
  return Table(layout, task, tuple(rules), dropped, unstored)


# Other names for the same tensor: transformers ≥ 5 holds the q/v biases as the
# biases of its split query/value Linears (hub files keep q_bias/v_bias).
HF_ALIASES = ((re.compile(r"(.*attention\.attention\.)query\.bias"), r"\1q_bias"),
              (re.compile(r"(.*attention\.attention\.)value\.bias"), r"\1v_bias"))


def canonical_hf_name(name: str) -> str:
  for pattern, repl in HF_ALIASES:
    if pattern.fullmatch(name):
      return pattern.sub(repl, name)
  return name


@functools.cache
def _regex(template: str) -> re.Pattern:
  pattern = re.escape(template)
  for p in ("i", "k"):
    pattern = pattern.replace(re.escape(f"{{{p}}}"), f"(?P<{p}>\\d+)")
  return re.compile(pattern)


@dataclasses.dataclass(frozen=True)
class Item:
  """One of our tensors and the source tensors it is made from."""
  ours: str
  theirs: tuple[str, ...]
  hook: Hook


@dataclasses.dataclass
class Matched:
  items: list[Item]
  dropped: dict[str, str]       # source name → why
  unknown: list[str]            # source names no rule claims


def match_theirs(tab: Table, names: Iterable[str]) -> Matched:
  """Import: every source name claimed by a rule (as its first tensor, or as one of a
  rule's further tensors), dropped on purpose, or unknown."""
  names = list(names)
  present = set(names)
  items, claimed, dropped = [], set(), {}
  for name in names:
    for rule in tab.rules:
      m = _regex(rule.theirs[0]).fullmatch(name)
      if m:
        theirs = tuple(t.format(**m.groupdict()) for t in rule.theirs)
        items.append(Item(rule.ours.format(**m.groupdict()), theirs, rule.hook))
        claimed.update(t for t in theirs if t in present)
        break
    else:
      for template, why in tab.dropped:
        if _regex(template).fullmatch(name):
          dropped[name] = why
          break
  unknown = [n for n in names if n not in claimed and n not in dropped]
  return Matched(items, dropped, unknown)


def match_ours(tab: Table, names: Iterable[str]) -> tuple[list[Item], list[str]]:
  """Export: (items, our names no rule can place in this layout)."""
  items, unplaceable = [], []
  for name in names:
    for rule in tab.rules:
      m = _regex(rule.ours).fullmatch(name)
      if m:
        items.append(Item(name, tuple(t.format(**m.groupdict()) for t in rule.theirs),
                          rule.hook))
        break
    else:
      unplaceable.append(name)
  return items, unplaceable


def theirs_for(tab: Table, ours: str) -> str:
  """The source name(s) one of our tensors comes from, for error messages."""
  items, _ = match_ours(tab, [ours])
  return " + ".join(items[0].theirs) if items else ours


def shape_after(hook: Hook, shapes: Iterable[tuple[int, ...]]) -> tuple[int, ...]:
  """The shape `hook.forward` gives, computed on zero-memory broadcast arrays."""
  dummies = [np.broadcast_to(np.float32(0), s) for s in shapes]
  return tuple(hook.forward(*dummies).shape)
