"""Writing our weights as a checkpoint: ours (orbax, with model.json), an official-layout
`.pth` or a Hugging Face VideoMAE folder. Each is written beside its destination and
renamed into place once complete, so a failed write leaves no half checkpoint."""

from __future__ import annotations

import logging
import os
import shutil

import numpy as np

from amd_jax import checkpoint, errors, files, paths
from amd_jax.convert import extras, hf, kinds, tables
from amd_jax.convert import spec as spec_lib

log = logging.getLogger("amd_jax")


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
  """Ours: params/ (orbax) beside model.json, the spec and the `source` it came from."""
  tmp = _staging(dst)
  os.makedirs(tmp)
  checkpoint.save_tree(os.path.join(tmp, kinds.PARAMS), spec_lib.unflatten(weights))
  files.write_json(os.path.join(tmp, kinds.MODEL_JSON),
                   {**spec.to_json(), "converted_from": source})
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
  torch = extras.torch()
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


def write_hf(dst: str, spec: spec_lib.ModelSpec, weights: dict[str, np.ndarray]) -> None:
  """A Hugging Face VideoMAE folder: config.json + model.safetensors (hub names)."""
  st = extras.safetensors()
  _warn_eps(spec, dict(norm_eps=spec.ln_eps, fc_norm_eps=hf.TORCH_LN_EPS,
                       decoder_norm_eps=hf.TORCH_LN_EPS), "transformers")
  tensors = _exported("hf", spec, weights)
  tmp = _staging(dst)
  os.makedirs(tmp)
  st.numpy.save_file(tensors, os.path.join(tmp, "model.safetensors"), metadata={"format": "pt"})
  files.write_json(os.path.join(tmp, "config.json"), hf.config_json(spec))
  os.rename(tmp, dst)
