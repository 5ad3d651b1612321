"""Checkpoint files: what a path holds, reading its tensors one by one, writing ours.

Kinds: `pth` (an official VideoMAE/AMD `.pth`: a dict with the weights under
`model` or `module`, or the weights alone), `deepspeed` (a DeepSpeed folder with
`mp_rank_00_model_states.pt`), `hf` (a Hugging Face VideoMAE folder:
config.json + safetensors or pytorch_model.bin) and `orbax` (ours: a converted
checkpoint, model.json beside params/, or a training workdir).

torch and safetensors are imported only when a file needs them, so the core
package works without them. `.pth` files are read with
`torch.load(weights_only=True)`: a file that would run code is refused.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import pickle
import shutil
import warnings
import zipfile

import numpy as np

from amd_jax import checkpoint, errors, paths
from amd_jax import workdir as workdir_lib
from amd_jax.convert import spec as spec_lib
from amd_jax.convert import tables
from amd_jax.models import vit

log = logging.getLogger("amd_jax")

KINDS = ("pth", "deepspeed", "hf", "orbax")
MODEL_JSON = "model.json"
PARAMS = "params"
DEEPSPEED_FILE = "mp_rank_00_model_states.pt"
HF_ARCHITECTURES = {"VideoMAEModel": "encoder", "VideoMAEForVideoClassification": "classifier",
                    "VideoMAEForPreTraining": "pretrainer"}
# transformers builds fc_norm and the decoder's final norm with torch's default eps.
TORCH_LN_EPS = 1e-5
# VideoMAEConfig's defaults, for fields a config.json leaves out.
HF_DEFAULTS = dict(image_size=224, patch_size=16, num_channels=3, num_frames=16, tubelet_size=2,
                   num_attention_heads=12, decoder_num_attention_heads=6, hidden_act="gelu",
                   layer_norm_eps=1e-12, qv_bias=True, use_mean_pooling=True)


def _torch():
  try:
    import torch
  except ImportError:
    raise errors.BadInput("reading or writing PyTorch checkpoints needs torch: "
                          "pip install -e '.[convert]'") from None
  return torch


def _safetensors_numpy():
  try:
    import safetensors
    import safetensors.numpy
  except ImportError:
    raise errors.BadInput("reading or writing Hugging Face checkpoints needs safetensors: "
                          "pip install -e '.[convert]'") from None
  return safetensors


# ----------------------------------------------------------------- what a path holds
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
  if "config.json" in entries and _read_json(os.path.join(path, "config.json")).get(
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


def _read_json(path: str) -> dict:
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError) as e:
    raise errors.BadInput(f"{path} is not readable JSON ({e})") from None


# ----------------------------------------------------------------- sources
class Source:
  """A checkpoint's tensors under their own names, read one at a time.

  layout: the naming of tables.table ("official" | "hf"), None for ours.
  shapes: name → shape of every tensor it holds (nothing read yet).
  meta: what it says about the model beyond shapes (spec.infer's meta).
  spec: for ours, the stored ModelSpec (others are inferred from shapes).
  """

  kind: str
  path: str
  layout: str | None
  task: str
  shapes: dict[str, tuple[int, ...]]
  meta: dict
  spec: spec_lib.ModelSpec | None = None

  def get(self, name: str) -> np.ndarray:
    raise NotImplementedError

  def release(self, name: str) -> None:
    """Lets the tensor's memory go once it has been converted."""

  def close(self) -> None:
    pass

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


def _to_numpy(tensor) -> np.ndarray:
  # bf16/fp16 checkpoints become float32, our parameter dtype.
  if tensor.dtype != _torch().float32:
    tensor = tensor.float()
  return tensor.numpy()


def torch_load(path: str):
  """torch.load(weights_only=True), with every failure as one BadInput line.

  argparse.Namespace is allowed: the official scripts save their arguments in
  every checkpoint, and building a Namespace runs no code of the file's choosing.
  """
  torch = _torch()
  try:
    with warnings.catch_warnings(), torch.serialization.safe_globals([argparse.Namespace]):
      warnings.simplefilter("ignore")
      # mmap: tensors are paged in when read, so the file never sits in memory
      # twice; only the zip format (torch ≥ 1.6) can be mapped.
      return torch.load(path, map_location="cpu", weights_only=True,
                        mmap=zipfile.is_zipfile(path))
  except pickle.UnpicklingError as e:
    lines = [l.strip() for l in str(e).splitlines()]
    culprit = next((l for l in lines if "GLOBAL" in l or "Unsupported" in l), lines[0])
    # An unknown opcode is a file that is no pickle at all, not one that asks to run code.
    if "Weights only load failed" not in str(e) or "Unsupported operand" in culprit:
      raise errors.BadInput(f"{path} is truncated or not a PyTorch checkpoint "
                            f"({culprit})") from None
    raise errors.BadInput(
        f"{path} refused: unpickling it would run code or build objects other than "
        f"tensors ({culprit}); nothing in it was executed. Only plain weight files are "
        "read (torch.load weights_only=True)") from None
  except (RuntimeError, EOFError, KeyError, ValueError, OSError) as e:
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise errors.BadInput(f"{path} is truncated or not a PyTorch checkpoint ({first})") from None


def _state_dict(obj, path: str) -> dict:
  """The weights inside what torch.load returned: under model, module, or the dict itself."""
  torch = _torch()
  if isinstance(obj, dict):
    for key in ("model", "module"):
      if isinstance(obj.get(key), dict):
        obj = obj[key]
        break
  if not (isinstance(obj, dict) and obj and
          all(isinstance(v, torch.Tensor) for v in obj.values())):
    raise errors.BadInput(f"{path} holds no state dict: expected tensors under 'model' or "
                          "'module', or a dict of tensors")
  return obj


class StateDictSource(Source):
  """A torch state dict (official .pth, DeepSpeed, HF pytorch_model.bin)."""

  def __init__(self, kind: str, path: str, state_dict: dict, names: dict[str, str]):
    self.kind, self.path = kind, path
    self._sd = state_dict
    self._names = names            # our view of the name → the dict's key
    self.shapes = {n: tuple(state_dict[k].shape) for n, k in names.items()}

  def get(self, name):
    return _to_numpy(self._sd[self._names[name]])

  def release(self, name):
    self._sd.pop(self._names[name], None)


def _strip_wrappers(names: list[str]) -> dict[str, str]:
  """Official key → stored key, without the prefixes of a wrapped model.

  `module.` (DDP) and `backbone.` wrap a whole model; `encoder.` on every key is
  an encoder saved alone (a pre-training checkpoint also holds decoder keys).
  """
  mapping = {n: n for n in names}
  for prefix in ("module.", "backbone.", "encoder."):
    if all(n.startswith(prefix) for n in mapping):
      mapping = {n[len(prefix):]: k for n, k in mapping.items()}
  return mapping


def _official_task(names) -> str:
  if any(n.startswith(("decoder.", "generators.")) or n in ("encoder_to_decoder.weight",
                                                            "mask_token") for n in names):
    return "pretrainer"
  return "classifier" if "head.weight" in names or "fc_norm.weight" in names else "encoder"


def _saved_args(obj) -> dict:
  """The arguments the official scripts save beside the weights (a Namespace; ours write
  a plain dict), or {}."""
  args = obj.get("args") if isinstance(obj, dict) else None
  args = vars(args) if isinstance(args, argparse.Namespace) else args
  return args if isinstance(args, dict) else {}


def _official_student_layers(args: dict, path: str) -> dict:
  """{"student_layers": [...]} when the saved args name the aligned student layers, else {}."""
  direct, gen = (args.get(f"student_layer_{branch}_align") or [] for branch in ("direct", "gen"))
  if direct and gen and list(direct) != list(gen):
    raise errors.BadInput(f"{path}: its args align student layers {list(direct)} directly and "
                          f"{list(gen)} by generation; the serial alignment shares one "
                          "projection per layer between both, so they must be the same")
  layers = direct or gen
  return {"student_layers": [int(l) for l in layers]} if layers else {}


def _official_clip(args: dict, path: str) -> dict:
  """num_frames and image_size from the saved args, where they are: the official scripts
  build the model for num_frames × num_segments frames (segments: fine-tuning only) of
  input_size² pixels. The tensors cannot tell: the position tables are not stored."""
  out = {}
  try:
    if args.get("num_frames"):
      out["num_frames"] = int(args["num_frames"]) * int(args.get("num_segments") or 1)
    size = args.get("input_size")
    if size:
      out["image_size"] = (int(size),) * 2 if isinstance(size, int) else tuple(map(int, size))
  except (TypeError, ValueError):
    raise errors.BadInput(f"{path}: its saved args have num_frames {args.get('num_frames')!r}, "
                          f"num_segments {args.get('num_segments')!r}, input_size "
                          f"{args.get('input_size')!r}: not numbers of frames and pixels"
                          ) from None
  return out


def _say_assumed_clip(src: Source) -> None:
  """One line naming the clip sizes an official checkpoint is built for that neither its
  saved args nor the caller gave: the official defaults (ModelSpec's)."""
  frames, size = "num_frames" not in src.meta, "image_size" not in src.meta
  if not (frames or size):
    return
  h, w = spec_lib.ModelSpec.image_size
  length = f"{spec_lib.ModelSpec.num_frames} frames"
  if frames and size:
    what, missing, assumed, flags, names = (
        "its clip", "num_frames or input_size", f"{length} of {h}×{w}",
        "them with --frames/--size", "num_frames=/image_size=")
  elif frames:
    what, missing, assumed, flags, names = (
        "its clip length", "num_frames", length, "it with --frames", "num_frames=")
  else:
    what, missing, assumed, flags, names = (
        "its image size", "input_size", f"{h}×{w}", "it with --size", "image_size=")
  log.warning("%s does not say %s (no %s in saved args): assumed %s; set %s "
              "(pretrained.load: %s)", src.path, what, missing, assumed, flags, names)


def _open_official(kind: str, path: str, file: str) -> Source:
  obj = torch_load(file)
  sd = _state_dict(obj, file)
  src = StateDictSource(kind, path, sd, _strip_wrappers(list(sd)))
  src.layout, src.task = "official", _official_task(src.shapes)
  args = _saved_args(obj)
  # The official code's frozen generator mask tokens; every LayerNorm at 1e-6.
  src.meta = dict(learnable_mask_tokens=False, **_official_student_layers(args, file),
                  **_official_clip(args, file))
  return src


def _deepspeed_file(path: str) -> str:
  folder = path
  if not os.path.exists(os.path.join(folder, DEEPSPEED_FILE)):
    latest = os.path.join(path, "latest")
    tag = open(latest).read().strip() if os.path.isfile(latest) else ""
    folder = os.path.join(path, tag)
  if os.path.exists(os.path.join(folder, "mp_rank_01_model_states.pt")):
    raise errors.BadInput(f"{folder} is a model-parallel DeepSpeed checkpoint; only "
                          "mp_rank_00 (no model parallelism) is read")
  file = os.path.join(folder, DEEPSPEED_FILE)
  if not os.path.isfile(file):
    raise errors.BadInput(f"DeepSpeed folder {path} has no {DEEPSPEED_FILE} (nor a 'latest' "
                          "file naming the folder that holds it)")
  return file


class SafetensorsSource(Source):
  """One or more .safetensors files, each tensor read when asked for."""

  def __init__(self, kind: str, path: str, files: list[str], strip: str = ""):
    st = _safetensors_numpy()
    self.kind, self.path = kind, path
    self._where = {}
    try:
      for file in files:
        handle = st.safe_open(file, framework="numpy")
        for key in handle.keys():
          self._where[tables.canonical_hf_name(key.removeprefix(strip))] = (handle, key)
      self.shapes = {n: tuple(h.get_slice(k).get_shape()) for n, (h, k) in self._where.items()}
    except (OSError, st.SafetensorError) as e:
      raise errors.BadInput(f"{path}: a weights file is truncated or not safetensors "
                            f"({str(e).splitlines()[0]})") from None

  def get(self, name):
    handle, key = self._where[name]
    return handle.get_tensor(key).astype(np.float32, copy=False)


def _hf_meta(config: dict, path: str) -> tuple[str, dict]:
  c = {**HF_DEFAULTS, **config}
  if "qkv_bias" in config:          # the field's older name
    c["qv_bias"] = config["qkv_bias"]
  arch = (config.get("architectures") or ["none"])[0]
  if arch not in HF_ARCHITECTURES:
    raise errors.BadInput(f"{path}: architecture {arch} is not one of "
                          f"{', '.join(HF_ARCHITECTURES)}")
  task = HF_ARCHITECTURES[arch]
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


def _open_hf(path: str) -> Source:
  task, meta = _hf_meta(_read_json(os.path.join(path, "config.json")), path)
  # A bare VideoMAEModel saved from a task model keeps its "videomae." prefix.
  strip = "videomae." if task == "encoder" else ""
  index = os.path.join(path, "model.safetensors.index.json")
  single = os.path.join(path, "model.safetensors")
  if os.path.isfile(index):
    files = sorted(set(_read_json(index)["weight_map"].values()))
    src = SafetensorsSource("hf", path, [os.path.join(path, f) for f in files], strip)
  elif os.path.isfile(single):
    src = SafetensorsSource("hf", path, [single], strip)
  elif os.path.isfile(os.path.join(path, "pytorch_model.bin")):
    file = os.path.join(path, "pytorch_model.bin")
    sd = _state_dict(torch_load(file), file)
    src = StateDictSource("hf", path, sd, {tables.canonical_hf_name(k.removeprefix(strip)): k
                                          for k in sd})
  else:
    raise errors.BadInput(f"{path} has a config.json but no model.safetensors, "
                          "model.safetensors.index.json or pytorch_model.bin")
  src.layout, src.task, src.meta = "hf", task, meta
  return src


class OrbaxSource(Source):
  """Ours: a converted checkpoint (model.json + params/) or a training workdir."""

  def __init__(self, path: str):
    self.kind, self.path, self.layout, self.task = "orbax", path, None, "pretrainer"
    self.meta = {}
    if os.path.isfile(os.path.join(path, MODEL_JSON)):
      self.spec = spec_lib.ModelSpec.from_json(_read_json(os.path.join(path, MODEL_JSON)),
                                               path)
      self.task = self.spec.task
      self._dir, self._subtrees = os.path.join(path, PARAMS), None
    else:
      # A training workdir: the student's trainable and frozen variables, read now
      # to tell a damaged step from a readable one.
      self._subtrees = ("params", "frozen")
      step_dir, self._values = self._newest_readable(path)
      self._dir = os.path.join(step_dir, "state")
      self.meta = _workdir_meta(path, step_dir)
      self.task = self.meta.pop("task", "pretrainer")
      self.shapes = {k: tuple(x.shape) for k, x in self._values.items()}
      return
    try:
      tree = checkpoint.tree_shapes(self._dir)
    except (OSError, ValueError, KeyError) as e:
      raise errors.BadInput(f"{path}: unreadable orbax checkpoint ({e})") from None
    self.shapes = {k: tuple(x.shape) for k, x in self._ours(tree).items()}
    self._values = None

  def _newest_readable(self, path: str) -> tuple[str, dict]:
    """(step folder, our flat weights) of a workdir's newest step that reads; a damaged newer
    step is named in one line each (left in place: a reader does not move a run's files)."""
    try:
      candidates = checkpoint.step_dirs(path)
    except FileNotFoundError as e:
      raise errors.BadInput(str(e)) from None
    for i, step_dir in enumerate(candidates):
      try:
        values = checkpoint.read_tree(os.path.join(step_dir, "state"), self._subtrees)
      except Exception as e:  # noqa: BLE001 -- whatever reading a damaged step raises
        why = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        then = (f"reading step {os.path.basename(candidates[i + 1])}"
                if i + 1 < len(candidates) else "no older step")
        log.warning("%s: step %s is damaged (%s: %s); %s", path, os.path.basename(step_dir),
                    type(e).__name__, why, then)
        continue
      return step_dir, self._ours(values)
    raise errors.BadInput(f"{path}: no checkpoint step reads (steps "
                          f"{', '.join(os.path.basename(d) for d in candidates)} are damaged)")

  def _ours(self, tree) -> dict:
    flat = spec_lib.flatten(tree)
    if not self._subtrees:
      return flat
    # params/encoder/... and frozen/alignment/... are one model's variables.
    return {k.split("/", 1)[1]: v for k, v in flat.items()}

  def get(self, name):
    if self._values is None:
      try:
        self._values = self._ours(checkpoint.read_tree(self._dir, self._subtrees))
      except (OSError, ValueError, KeyError) as e:
        raise errors.BadInput(f"{self.path}: unreadable orbax checkpoint ({e})") from None
    return self._values[name]

  def release(self, name):
    self._values.pop(name, None)


def _workdir_meta(path: str, step_dir: str) -> dict:
  """What a training run's config.json says about its student (none: shapes only)."""
  for folder in (path, os.path.dirname(os.path.dirname(os.path.normpath(step_dir)))):
    file = os.path.join(folder, workdir_lib.CONFIG_FILE)
    if os.path.isfile(file):
      config = _read_json(file)
      break
  else:
    log.warning("%s: no config.json beside the checkpoints; assuming standard heads, "
                "LayerNorm eps 1e-6, 16 frames of 224²", path)
    return {}
  model, data = config.get("model", {}), config.get("data", {})
  meta = dict(ln_eps=model.get("ln_eps", spec_lib.OFFICIAL_EPS))
  if "variant" in model:
    v = vit.decode_variant(model["variant"])
    meta.update(heads=v.heads, decoder_heads=v.decoder_heads)
  if "frames" in data and "size" in data:
    meta.update(num_frames=data["frames"], image_size=(data["size"], data["size"]))
  if config.get("mode") in ("finetune", "test"):
    meta["task"] = "classifier"
  if config.get("mode") == "amd":
    align = config.get("align", {})
    meta.update(student_layers=align.get("student_layers"),
                learnable_mask_tokens=align.get("learnable_mask_tokens", True))
  return meta


def open_source(path: str, kind: str | None = None, options: dict | None = None) -> Source:
  """The checkpoint at `path`; `kind` overrides what `detect` would say.

  options (all optional) override what the source says: heads, decoder_heads,
  num_frames, image_size, student_layers.
  """
  path = os.fspath(path)
  if not os.path.exists(path):
    raise errors.BadInput(f"checkpoint {path} does not exist")
  # A release (the study's teacher: card.json beside checkpoint/) stands for its checkpoint.
  inner = os.path.join(path, "checkpoint")
  if (os.path.isdir(path) and not os.path.exists(os.path.join(path, MODEL_JSON))
      and os.path.isfile(os.path.join(inner, MODEL_JSON))):
    path = inner
  kind = kind or detect(path)
  if kind == "pth":
    if not os.path.isfile(path):
      raise errors.BadInput(f"{path} is a folder, not a .pth file")
    src = _open_official("pth", path, path)
  elif kind == "deepspeed":
    src = _open_official("deepspeed", path, _deepspeed_file(path))
  elif kind == "hf":
    if not os.path.isfile(os.path.join(path, "config.json")):
      raise errors.BadInput(f"{path} is not a Hugging Face folder (no config.json)")
    src = _open_hf(path)
  elif kind == "orbax":
    src = OrbaxSource(path)
  else:
    raise errors.BadInput(f"unknown checkpoint kind {kind!r}: choose from {'|'.join(KINDS)}")
  src.meta = {**src.meta, **{k: v for k, v in (options or {}).items() if v is not None}}
  if src.layout == "official":
    _say_assumed_clip(src)
  return src


# ----------------------------------------------------------------- writers
def check_free(dst: str, what: str = "destination") -> None:
  """Refuses a destination that exists or cannot be created, before the work; its
  missing folders are made (paths.new_output)."""
  paths.new_output(dst, what)


def _staging(dst: str) -> str:
  """A fresh sibling of dst to write into; renamed to dst once complete."""
  check_free(dst)
  tmp = f"{dst}.partial"
  if os.path.isdir(tmp):
    shutil.rmtree(tmp)
  elif os.path.exists(tmp):
    os.remove(tmp)
  return tmp


def write_orbax(dst: str, spec: spec_lib.ModelSpec, weights: dict[str, np.ndarray],
                source: str) -> None:
  tmp = _staging(dst)
  os.makedirs(tmp)
  checkpoint.save_tree(os.path.join(tmp, PARAMS), spec_lib.unflatten(weights))
  with open(os.path.join(tmp, MODEL_JSON), "w") as f:
    json.dump({**spec.to_json(), "converted_from": source}, f, indent=2)
  os.rename(tmp, dst)


def export_items(layout: str, spec: spec_lib.ModelSpec, names) -> list[tables.Item]:
  """Our tensors → the layout's, refusing what the layout cannot hold."""
  table = tables.table(layout, spec.task)
  items, unplaceable = tables.match_ours(table, names)
  unstored = {n: table.unstored_why(n) for n in unplaceable if table.unstored_why(n)}
  for why in sorted(set(unstored.values())):
    log.warning("not written: %s (%s)", ", ".join(n for n, w in unstored.items() if w == why),
                why)
  unplaceable = [n for n in unplaceable if n not in unstored]
  if unplaceable:
    where = {"official": "an official .pth", "hf": "Hugging Face VideoMAE"}[layout]
    hint = (" (AMD's alignment heads: export to .pth, or only the encoder with --part encoder)"
            if any(n.startswith("alignment/") for n in unplaceable) else "")
    more = len(unplaceable) - 1
    raise errors.BadInput(f"{where} has no place for {unplaceable[0]}"
                          f"{f' and {more} more' if more else ''}{hint}")
  return items


def _exported(layout: str, spec: spec_lib.ModelSpec, weights: dict[str, np.ndarray]) -> dict:
  """name → tensor in the layout; our arrays are let go one by one."""
  out = {}
  for item in export_items(layout, spec, list(weights)):
    for name, value in zip(item.theirs, item.hook.inverse(weights.pop(item.ours)), strict=True):
      out[name] = np.ascontiguousarray(value)
  return out


def _warn_eps(spec: spec_lib.ModelSpec, fixed: dict[str, float], where: str) -> None:
  for norm, eps in fixed.items():
    ours = getattr(spec, norm)
    if ours is not None and ours != eps:
      log.warning("%s uses LayerNorm eps %g for %s; this model uses %g: outputs will differ "
                  "slightly", where, eps, norm, ours)


def write_pth(dst: str, spec: spec_lib.ModelSpec, weights: dict[str, np.ndarray]) -> None:
  """An official-layout .pth: {'model': state_dict, 'args': ...}, as the official scripts
  save, `args` holding under the official scripts' argument names what the tensors do
  not say: the clip (num_frames, input_size) and an AMD student's aligned layers. A
  plain dict, not the official Namespace: torch.load's default weights_only=True
  reads it without an allowlist."""
  torch = _torch()
  _warn_eps(spec, dict(ln_eps=spec_lib.OFFICIAL_EPS, norm_eps=spec_lib.OFFICIAL_EPS,
                       fc_norm_eps=spec_lib.OFFICIAL_EPS,
                       decoder_norm_eps=spec_lib.OFFICIAL_EPS), "the official code")
  tensors = {k: torch.from_numpy(v) for k, v in _exported("official", spec, weights).items()}
  h, w = spec.image_size
  args = dict(num_frames=spec.num_frames, input_size=h if h == w else [h, w])
  if spec.align:
    layers = list(spec.align["student_layers"])
    args.update(student_layer_direct_align=layers, student_layer_gen_align=layers)
  saved = {"model": tensors, "args": args}
  tmp = _staging(dst)
  torch.save(saved, tmp)
  os.rename(tmp, dst)


def videomae_config(variant: vit.Variant, *, image_size: int | tuple[int, int], num_frames: int,
                    layer_norm_eps: float, use_mean_pooling: bool = True,
                    decoder_depth: int | None = None, **extra) -> dict:
  """The transformers `VideoMAEConfig` fields of our ViT `variant`: the one mapping of our
  models onto HF's, for the config.json we write (`hf_config`) and for the PyTorch
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


def hf_config(spec: spec_lib.ModelSpec) -> dict:
  """The config.json of a Hugging Face folder holding `spec`."""
  arch = {t: a for a, t in HF_ARCHITECTURES.items()}[spec.task]
  config = dict(architectures=[arch], model_type="videomae", **videomae_config(
      spec.variant, image_size=spec.image_size, num_frames=spec.num_frames,
      layer_norm_eps=spec.ln_eps,
      use_mean_pooling=spec.task == "classifier" or spec.norm_eps is None,
      decoder_depth=spec.decoder_depth if spec.task == "pretrainer" else None, dtype="float32"))
  if spec.task == "classifier":
    config["id2label"] = {str(i): f"LABEL_{i}" for i in range(spec.num_classes)}
    config["label2id"] = {f"LABEL_{i}": i for i in range(spec.num_classes)}
  return config


def write_hf(dst: str, spec: spec_lib.ModelSpec, weights: dict[str, np.ndarray]) -> None:
  """A Hugging Face VideoMAE folder: config.json + model.safetensors (hub names)."""
  st = _safetensors_numpy()
  _warn_eps(spec, dict(norm_eps=spec.ln_eps, fc_norm_eps=TORCH_LN_EPS,
                       decoder_norm_eps=TORCH_LN_EPS), "transformers")
  tensors = _exported("hf", spec, weights)
  tmp = _staging(dst)
  os.makedirs(tmp)
  st.numpy.save_file(tensors, os.path.join(tmp, "model.safetensors"), metadata={"format": "pt"})
  with open(os.path.join(tmp, "config.json"), "w") as f:
    json.dump(hf_config(spec), f, indent=2)
  os.rename(tmp, dst)
