"""Reading a checkpoint of any kind (`kinds`): `open_source` gives its tensors under
their own names, read one at a time, and what it says about the model beyond
shapes (a training workdir's config.json through models.saved).

`.pth` files are read with `torch.load(weights_only=True)`: a file that would
run code is refused.
"""

from __future__ import annotations

import abc
import argparse
import logging
import os
import pickle
import warnings
import zipfile

import numpy as np

from amd_jax import checkpoint, errors, files
from amd_jax import workdir as workdir_lib
from amd_jax.convert import extras, hf, kinds, tables
from amd_jax.convert import spec as spec_lib
from amd_jax.models import saved

log = logging.getLogger("amd_jax")


class Source(abc.ABC):
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

  @abc.abstractmethod
  def get(self, name: str) -> np.ndarray:
    """The tensor `name`, read now."""

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
  if tensor.dtype != extras.torch().float32:
    tensor = tensor.float()
  return tensor.numpy()


def torch_load(path: str):
  """torch.load(weights_only=True), with every failure as one BadInput line.

  argparse.Namespace is allowed: the official scripts save their arguments in
  every checkpoint, and building a Namespace runs no code of the file's choosing.
  """
  torch = extras.torch()
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
  torch = extras.torch()
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
  if not os.path.exists(os.path.join(folder, kinds.DEEPSPEED_FILE)):
    latest = os.path.join(path, "latest")
    tag = open(latest).read().strip() if os.path.isfile(latest) else ""
    folder = os.path.join(path, tag)
  if os.path.exists(os.path.join(folder, "mp_rank_01_model_states.pt")):
    raise errors.BadInput(f"{folder} is a model-parallel DeepSpeed checkpoint; only "
                          "mp_rank_00 (no model parallelism) is read")
  file = os.path.join(folder, kinds.DEEPSPEED_FILE)
  if not os.path.isfile(file):
    raise errors.BadInput(f"DeepSpeed folder {path} has no {kinds.DEEPSPEED_FILE} (nor a 'latest' "
                          "file naming the folder that holds it)")
  return file


class SafetensorsSource(Source):
  """One or more .safetensors files, each tensor read when asked for."""

  def __init__(self, kind: str, path: str, files: list[str], strip: str = ""):
    st = extras.safetensors()
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


def _open_hf(path: str) -> Source:
  task, meta = hf.task_and_meta(files.read_json(os.path.join(path, "config.json")), path)
  # A bare VideoMAEModel saved from a task model keeps its "videomae." prefix.
  strip = "videomae." if task == "encoder" else ""
  index = os.path.join(path, "model.safetensors.index.json")
  single = os.path.join(path, "model.safetensors")
  if os.path.isfile(index):
    shards = sorted(set(files.read_json(index)["weight_map"].values()))
    src = SafetensorsSource("hf", path, [os.path.join(path, f) for f in shards], strip)
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
    self.kind, self.path, self.layout = "orbax", path, None
    if os.path.isfile(os.path.join(path, kinds.MODEL_JSON)):
      self._open_converted(path)
    else:
      self._open_workdir(path)

  def _open_converted(self, path: str) -> None:
    self.spec = spec_lib.ModelSpec.from_json(
        files.read_json(os.path.join(path, kinds.MODEL_JSON)), path)
    self.task, self.meta = self.spec.task, {}
    self._dir, self._subtrees, self._values = os.path.join(path, kinds.PARAMS), None, None
    try:
      tree = checkpoint.tree_shapes(self._dir)
    except (OSError, ValueError, KeyError) as e:
      raise errors.BadInput(f"{path}: unreadable orbax checkpoint ({e})") from None
    self.shapes = {k: tuple(x.shape) for k, x in self._ours(tree).items()}

  def _open_workdir(self, path: str) -> None:
    """What the run's config says first (a run no ModelSpec describes is refused before
    its weights are read), then the student's trainable and frozen variables, read now
    to tell a damaged step from a readable one."""
    try:
      candidates = checkpoint.step_dirs(path)
    except FileNotFoundError as e:
      raise errors.BadInput(str(e)) from None
    self.meta = _run_meta(path, candidates[0])
    self.task = self.meta.pop("task")
    self._subtrees = ("params", "frozen")
    step_dir, self._values = self._newest_readable(path, candidates)
    self._dir = os.path.join(step_dir, "state")
    self.shapes = {k: tuple(x.shape) for k, x in self._values.items()}

  def _newest_readable(self, path: str, candidates: list[str]) -> tuple[str, dict]:
    """(step folder, our flat weights) of a workdir's newest step that reads; a damaged newer
    step is named in one line each (left in place: a reader does not move a run's files)."""
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


def _run_meta(path: str, step_dir: str) -> dict:
  """What a training run's config.json says about its student (models.saved.spec_meta);
  without one, shapes only. A detection run is refused: no ModelSpec builds a detector."""
  for folder in (path, os.path.dirname(os.path.dirname(os.path.normpath(step_dir)))):
    file = os.path.join(folder, workdir_lib.CONFIG_FILE)
    if os.path.isfile(file):
      meta = saved.spec_meta(files.read_json(file))
      break
  else:
    log.warning("%s: no config.json beside the checkpoints; assuming standard heads, "
                "LayerNorm eps 1e-6, 16 frames of 224²", path)
    return {"task": "pretrainer"}
  if meta["task"] == saved.DETECTOR:
    raise errors.BadInput(f"{path} is a detection run (model.head=detector): detector "
                          "checkpoints are not convertible (a converted model is an "
                          "encoder, a classifier or a pre-training model)")
  return meta


def open_source(path: str, kind: str | None = None, options: dict | None = None) -> Source:
  """The checkpoint at `path`; `kind` overrides what `kinds.detect` would say.

  options (all optional) override what the source says: heads, decoder_heads,
  num_frames, image_size, student_layers.
  """
  path = os.fspath(path)
  if not os.path.exists(path):
    raise errors.BadInput(f"checkpoint {path} does not exist")
  # A release (the study's teacher: card.json beside checkpoint/) stands for its checkpoint.
  inner = os.path.join(path, "checkpoint")
  if (os.path.isdir(path) and not os.path.exists(os.path.join(path, kinds.MODEL_JSON))
      and os.path.isfile(os.path.join(inner, kinds.MODEL_JSON))):
    path = inner
  kind = kind or kinds.detect(path)
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
    raise errors.BadInput(f"unknown checkpoint kind {kind!r}: choose from "
                          f"{'|'.join(kinds.KINDS)}")
  src.meta = {**src.meta, **{k: v for k, v in (options or {}).items() if v is not None}}
  if src.layout == "official":
    _say_assumed_clip(src)
  return src
