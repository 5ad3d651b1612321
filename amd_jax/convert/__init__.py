"""Checkpoint conversion: official VideoMAE/AMD `.pth`, DeepSpeed and Hugging Face ⇄ ours.

    python -m amd_jax.convert --src SRC --dst DST [--to orbax|hf|pth] [--from KIND]

`read(path)` turns any checkpoint (a local path, or a Hugging Face Hub repo id
such as MCG-NJU/videomae-base: amd_jax.hub says which is which) into a
`ModelSpec` and our flat weights (numpy float32); `convert` writes them as an
orbax checkpoint (model.json beside the weights, so `amd_jax.pretrained.load`
needs nothing else), a Hugging Face folder or an official-layout `.pth`. Names
and layouts come from `tables` (one table per layout and task, used in both
directions); every source tensor is either mapped or reported, and every shape
is checked against the model the spec builds. Tensors are converted one at a
time and let go as they are, so a ViT-L never sits in memory more than twice
(the source and ours).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable

import jax
import numpy as np
import tqdm

from amd_jax import errors, hub
from amd_jax.convert import readers, tables, writers
from amd_jax.convert.spec import ModelSpec, flatten, unflatten
from amd_jax.convert.spec import infer as infer_spec
from amd_jax.models import vit

__all__ = ["ModelSpec", "read", "convert", "flatten", "unflatten", "infer_spec"]

log = logging.getLogger("amd_jax")
TARGETS = ("orbax", "hf", "pth")
PARTS = ("encoder",)


def _plan(src: readers.Source) -> tuple[list[tables.Item], dict[str, str]]:
  """Our tensor ← the source's, for every source tensor (unknown ones refused), and
  the source tensors left out → why."""
  if src.layout is None:
    return [tables.Item(k, (k,), tables.COPY) for k in src.shapes], {}
  matched = tables.match_theirs(tables.table(src.layout, src.task), src.shapes)
  if matched.unknown:
    more = len(matched.unknown) - 1
    raise errors.BadInput(
        f"{src.path}: no rule maps {matched.unknown[0]}{f' (and {more} more)' if more else ''} "
        f"of this {src.layout} {src.task} checkpoint; it is not a VideoMAE/AMD layout this "
        "converter knows")
  return matched.items, matched.dropped


def _shapes(src: readers.Source, items: list[tables.Item]) -> dict[str, tuple[int, ...]]:
  out = {}
  for item in items:
    missing = [t for t in item.theirs if t not in src.shapes]
    if missing:
      raise errors.BadInput(f"{src.path} lacks {missing[0]} (needed with {item.theirs[0]})")
    try:
      out[item.ours] = tables.shape_after(item.hook, [src.shapes[t] for t in item.theirs])
    except ValueError:
      raise errors.BadInput(f"{src.path}: {' + '.join(item.theirs)} have shapes "
                            f"{[src.shapes[t] for t in item.theirs]} that do not fit together"
                            ) from None
  return out


def _table(src: readers.Source) -> tables.Table | None:
  return None if src.layout is None else tables.table(src.layout, src.task)


def _their_name(src: readers.Source, ours: str) -> str:
  """The source's name for one of our tensors (inside the encoder when only it is kept)."""
  if src.layout is None:
    return ours
  name = tables.theirs_for(_table(src), ours)
  return tables.theirs_for(_table(src), f"encoder/{ours}") if name == ours else name


def _check(src: readers.Source, spec: ModelSpec, shapes: dict[str, tuple[int, ...]]
           ) -> dict[str, tuple[int, ...]]:
  """Every tensor the model needs, with its shape; returns the ones to draw anew."""
  want = spec.shapes()
  what = f"the {spec.describe()} model {'stored' if src.spec else 'inferred'}"
  extra = [k for k in shapes if k not in want]
  if extra:
    raise errors.BadInput(f"{src.path}: {what} has no place for {_their_name(src, extra[0])}")
  missing = [k for k in want if k not in shapes]
  table = _table(src)
  fresh = {k: table.unstored_why(k) for k in missing if table and table.unstored_why(k)}
  missing = [k for k in missing if k not in fresh]
  if missing:
    more = len(missing) - 1
    raise errors.BadInput(f"{src.path} lacks {_their_name(src, missing[0])}"
                          f"{f' (and {more} more)' if more else ''}, needed by {what}")
  for k, shape in want.items():
    if k in shapes and shapes[k] != shape:
      raise errors.BadInput(f"{src.path}: {_their_name(src, k)} gives {k} the shape {shapes[k]}; "
                            f"{what} needs {shape}")
  for why in sorted(set(fresh.values())):
    log.info("drawn anew: %s (%s)", ", ".join(k for k, w in fresh.items() if w == why), why)
  return {k: want[k] for k in fresh}


def _encoder_only(spec: ModelSpec, items: list[tables.Item], shapes: dict):
  """The spec, items and shapes of the encoder alone (under our Encoder's names)."""
  prefix = "encoder/"
  keep = spec.encoder_part().shapes()
  left = sorted({k.split("/")[0] for k in shapes if not k.startswith(prefix)})
  if left:
    log.info("kept the encoder; left out %s", ", ".join(left))
  inner = lambda k: k[len(prefix):] if k.startswith(prefix) else None
  items = [dataclasses.replace(i, ours=inner(i.ours)) for i in items if inner(i.ours) in keep]
  shapes = {inner(k): v for k, v in shapes.items() if inner(k) in keep}
  return spec.encoder_part(), items, shapes


def read(path: str, *, kind: str | None = None, part: str | None = None,
         progress: bool = False, check: Callable[[ModelSpec], None] | None = None,
         **options) -> tuple[ModelSpec, dict[str, np.ndarray]]:
  """Any checkpoint → (its ModelSpec, our flat key → float32 numpy array).

  path: a local path, or a Hugging Face Hub repo id (owner/name[@revision]) when no
  local path has that name (amd_jax.hub); every loader reads through here.
  kind: pth | deepspeed | hf | orbax (default: detected). part="encoder" keeps
  only the encoder (reported: what is left out). check(spec) may refuse the
  model before any tensor is converted. options override what the source
  says: heads, decoder_heads (a .pth does not store them; the standard ones for
  the width are assumed), num_frames, image_size (int or (H, W)), student_layers
  (an AMD student's aligned layers, 1-indexed; an official .pth names them only
  in its saved args).
  """
  if part not in (None, *PARTS):
    raise errors.BadInput(f"unknown part {part!r}: choose from {'|'.join(PARTS)}")
  if isinstance(options.get("image_size"), int):
    options["image_size"] = (options["image_size"],) * 2
  with readers.open_source(hub.local(path), kind, options) as src:
    items, dropped = _plan(src)
    shapes = _shapes(src, items)
    if src.spec is not None:
      frames, size = options.get("num_frames"), options.get("image_size")
      spec = dataclasses.replace(src.spec, num_frames=frames or src.spec.num_frames,
                                 image_size=tuple(size) if size else src.spec.image_size)
    else:
      spec = infer_spec(src.task, shapes, src.meta)
    if part == "encoder" and spec.task != "encoder":
      spec, items, shapes = _encoder_only(spec, items, shapes)
    # Said once the model is known: a refused source prints only its error line.
    for why in sorted(set(dropped.values())):
      log.info("dropped %s: %s", ", ".join(n for n, w in dropped.items() if w == why), why)
    log.info("%s (%s): %s", path, src.kind, spec.describe())
    if check is not None:
      check(spec)
    fresh = _check(src, spec, shapes)
    weights = {}
    for item in tqdm.tqdm(items, desc="converting", unit="tensor", disable=not progress,
                          dynamic_ncols=True):
      value = item.hook.forward(*(src.get(t) for t in item.theirs))
      # A view into the source (a mapped file, a transposed tensor) becomes our own copy.
      if not (value.flags.owndata and value.flags.c_contiguous and value.dtype == np.float32):
        value = np.array(value, dtype=np.float32, order="C")
      weights[item.ours] = value
      for t in item.theirs:
        src.release(t)
  key = jax.random.key(0)
  for k, shape in fresh.items():
    key, sub = jax.random.split(key)
    # The generators' own init (decoders.Generator's mask token).
    weights[k] = np.asarray(vit.truncated_normal_1sigma(0.02)(sub, shape))
  return spec, weights


def convert(src: str, dst: str, *, to: str | None = None, kind: str | None = None,
            part: str | None = None, progress: bool = True, **options) -> ModelSpec:
  """Reads `src` (see `read`) and writes it to `dst` as `to` (default: pth for a
  .pth/.pt destination, else orbax). Returns the spec written."""
  to = to or ("pth" if dst.endswith((".pth", ".pt")) else "orbax")
  if to not in TARGETS:
    raise errors.BadInput(f"unknown target format {to!r}: choose from {'|'.join(TARGETS)}")
  writers.check_free(dst)      # before the work, not after it
  spec, weights = read(src, kind=kind, part=part, progress=progress, **options)
  if to == "orbax":
    writers.write_orbax(dst, spec, weights,
                        source=src if hub.is_repo_id(src) else os.path.abspath(src))
  elif to == "hf":
    writers.write_hf(dst, spec, weights)
  else:
    writers.write_pth(dst, spec, weights)
  log.info("wrote %s (%s)", dst, to)
  return spec
