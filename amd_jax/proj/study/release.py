"""The teacher release: made once by --make-teacher (pre-training, fine-tuning with
the study's protocol, probe, reconstruction loss), checked by every study."""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import platform
import shutil

import jax

from amd_jax import convert, errors, files, metrics
from amd_jax import workdir as workdir_lib
from amd_jax.analysis import probe, reconstruction
from amd_jax.data.builders import moving_digits
from amd_jax.proj.study import diagnostics
from amd_jax.proj.study.chains import say, run_training
from amd_jax.proj.study.recipe import (FINETUNE_OVERRIDES, SIZES, Size, finetune_config_for,
                                  teacher_config)

CARD_FILE = "card.json"
# The released teacher the study distils from unless --teacher says otherwise: beside
# this module, in a checkout and in an installed package (package data) alike.
RELEASED_TEACHER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "teacher")


def read_release(path: str, size_name: str) -> dict:
  """The card of the teacher release at `path`, checked against the size's recipe."""
  card_path = os.path.join(path, CARD_FILE)
  if not os.path.isfile(card_path):
    raise errors.BadInput(f"{path} is not a teacher release (no {CARD_FILE}); make one with "
                          f"`python -m amd_jax.proj.study --make-teacher {path}`")
  card = files.read_json(card_path)
  want = dataclasses.asdict(SIZES[size_name].teacher)
  if card["recipe"] != want:
    raise errors.BadInput(f"the teacher at {path} was made with {card['recipe']}; the "
                          f"'{size_name}' study needs {want}")
  if card["data"] != data_id():
    raise errors.BadInput(f"the teacher at {path} was trained on {card['data']}, this study "
                          f"reads {data_id()}: make a new one with --make-teacher")
  return card


def data_id() -> str:
  return f"moving_digits {moving_digits.MovingDigits.VERSION}"


def make_teacher(workdir: str, out: str, command: str, size_name: str = "default") -> dict:
  """Pre-trains the teacher of `size_name` in workdir/pretrain, fine-tunes and tests
  it with that size's protocol (workdir/finetune_SIZE), probes it and writes the
  release to `out`; returns its card, which records `command` (as it was typed,
  so that it reads the same on any machine). (Longer sizes fine-tune it themselves.)"""
  if os.path.exists(out):
    raise errors.BadInput(f"{out} exists: a teacher release goes to a new directory")
  size = SIZES[size_name]
  pre_dir = os.path.join(workdir, "pretrain")
  say(f"[1/3] teacher: VideoMAE pre-training of {size.teacher.variant}")
  pre = run_training(f"teacher: {size.teacher.steps} steps", teacher_config(size), pre_dir,
                     size.teacher.steps)
  say(f"[2/3] teacher: fine-tuning + test with the '{size_name}' protocol")
  record = run_training(*teacher_finetune_stage(size, pre_dir,
                                                os.path.join(workdir, f"finetune_{size_name}")))
  finetune = {size_name: {k: record.get(k) for k in ("top1", "top5", "views", "steps", "time_s")}}
  say("[3/3] teacher: probe, reconstruction loss, release")
  staging = out.rstrip(os.sep) + ".partial"
  shutil.rmtree(staging, ignore_errors=True)
  os.makedirs(staging)
  convert.convert(pre_dir, os.path.join(staging, "checkpoint"), progress=False)
  shutil.copy(os.path.join(pre_dir, workdir_lib.METRICS_FILE), staging)
  recon = reconstruction.reconstructions_report({"teacher": pre_dir}, staging,
                                                scores=diagnostics.flat_tube_scores)
  probed = probe.probe_report({"teacher": pre_dir}, videos=size.probe_videos)["models"]["teacher"]
  rows = [r for r in metrics.read_rows(pre_dir) if "loss" in r]
  card = dict(
      recipe=dataclasses.asdict(size.teacher), data=data_id(),
      command=command,
      config=json.loads(teacher_config(size).to_json()),
      pretrain=dict(steps=pre["steps"], time_s=pre["time_s"],
                    final_loss=rows[-1]["loss"] if rows else None),
      reconstruction_loss=recon["loss"], reconstruction_videos=recon["videos"],
      finetune=finetune, finetune_recipe=dict(FINETUNE_OVERRIDES,
                                              **{"optim.base_lr": size.teacher.finetune_base_lr}),
      probe={k: probed[k] for k in ("test_top1", "val_top1", "train_top1", "l2", "videos")},
      made=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      machine=machine())
  files.write_json(os.path.join(staging, CARD_FILE), card)
  os.replace(staging, out)
  say(f"teacher release: {out}")
  return card



def teacher_finetune_stage(size: Size, checkpoint: str, workdir: str, seed: int = 0,
                           overrides: dict | None = None, label: str = "teacher") -> tuple:
  """The teacher fine-tuned and tested with the size's protocol and its own lr
  (`overrides`: a FINETUNE_ABLATIONS setting's)."""
  config = finetune_config_for(size, size.teacher.variant, checkpoint, seed=seed,
                               base_lr=size.teacher.finetune_base_lr, overrides=overrides)
  return (f"{label}: fine-tuning + test (seed {seed})", config, workdir, size.finetune_steps)


def _cpu() -> str:
  """The CPU's name, family and model where Linux tells them. Results are the same bit
  for bit on one machine but were not on two VMs of the same name and core count
  (docs/study/README.md, "The default study"), so a result says which CPU made it."""
  try:
    with open("/proc/cpuinfo") as f:
      info = {key.strip(): value.strip()
              for key, value in (line.split(":", 1) for line in f if ":" in line)}
  except OSError:
    return platform.processor() or platform.machine()
  return (f"{info.get('model name', platform.machine())} (family {info.get('cpu family', '?')}, "
          f"model {info.get('model', '?')})")


def machine() -> dict:
  return {"platform": platform.platform(), "cpu": _cpu(), "cpus": os.cpu_count(),
          "device": jax.devices()[0].device_kind, "jax": jax.__version__}
