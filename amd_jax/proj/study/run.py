"""The study and its ablations: every stage, the probes, the plots and results.json;
the command line (python -m amd_jax.proj.study, see __init__.py)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import sys
import time

import jax
import ml_collections
import numpy as np

import amd_jax.proj.study
from amd_jax import errors, files
from amd_jax import paths as paths_lib
from amd_jax import workdir as workdir_lib
from amd_jax.analysis import attention, curves, per_class, probe, reconstruction
from amd_jax.models import vit
from amd_jax.proj.study import diagnostics
from amd_jax.proj.study.chains import (Failed, Stopped, default_jobs, quiet_logging, run_chains,
                                       say)
from amd_jax.proj.study.recipe import (ABLATIONS, FINETUNE_ABLATIONS, MODELS, SIZES, STUDENTS,
                                       Size, finetune_config_for, student_config)
from amd_jax.proj.study.release import (RELEASED_TEACHER, data_id, machine, make_teacher,
                                        read_release, teacher_finetune_stage)

STUDY_FILE = "study.json"
PROBE_FILE = "probe.json"
PLOTS = ("pretrain_losses.png", "finetune_curves.png", "reconstructions.png", "per_class.png",
         "attention_distance.png", "probe_blocks.png")


@dataclasses.dataclass(frozen=True)
class Layout:
  """Where every run of a study lives."""

  root: str

  def student(self, name: str, seed: int, part: str) -> str:
    return os.path.join(self.root, f"seed_{seed}", name, part)

  def ablation(self, name: str, setting: str, seed: int, part: str) -> str:
    if not ABLATIONS[name][setting]:      # the study's own AMD student
      return self.student("amd_student", seed, part)
    return os.path.join(self.root, "ablation", name, f"seed_{seed}", setting, part)

  def finetune_ablation(self, name: str, setting: str, seed: int, model: str) -> str:
    """Where `model` is fine-tuned under a FINETUNE_ABLATIONS setting: a student's
    run without overrides is the study's own; the teacher's are all here (the
    study fine-tunes it with seed 0 only, if at all)."""
    if model in STUDENTS and not FINETUNE_ABLATIONS[name][setting]:
      return self.student(model, seed, "finetune")
    return os.path.join(self.root, "ablation", name, f"seed_{seed}", setting, model, "finetune")


def student_chain(layout: Layout, size: Size, seed: int, name: str, teacher: str,
                  fine: str = "", overrides: dict | None = None, label: str = ""
                  ) -> list[tuple]:
  """Student `name`'s stages with `seed`: its pre-training (but the scratch one's)
  and its fine-tuning + test, in the study's `fine` unless another is given, with
  the fine-tuning `overrides` of a FINETUNE_ABLATIONS setting. teacher: the
  release's checkpoint."""
  method = STUDENTS[name]
  fine = fine or layout.student(name, seed, "finetune")
  label = label or name
  if not method:
    return [(f"{label}: fine-tuning + test (seed {seed})",
             finetune_config_for(size, size.student, "", seed, overrides=overrides), fine,
             size.finetune_steps)]
  return pretrain_then_finetune(label, method, size, seed,
                                student_config(size, method, seed, teacher=teacher),
                                layout.student(name, seed, "pretrain"), fine, overrides)


def pretrain_then_finetune(name: str, method: str, size: Size, seed: int,
                           config: ml_collections.ConfigDict, pre: str, fine: str,
                           finetune_overrides: dict | None = None) -> list[tuple]:
  """Student `name`'s pre-training by `method` with `config` in `pre`, then its
  fine-tuning + test from there in `fine`: the stages of one chain."""
  return [(f"{name}: {method} pre-training (seed {seed})", config, pre, size.student_steps),
          (f"{name}: fine-tuning + test (seed {seed})",
           finetune_config_for(size, size.student, pre, seed, overrides=finetune_overrides),
           fine, size.finetune_steps)]


def probes(path: str, checkpoints: dict[str, str | vit.Encoder], size: Size) -> dict:
  """The linear probe of every checkpoint (or encoder), of its output and after each
  block → `path` (probe.json); those already in it are not probed again."""
  done = files.read_json(path, {"models": {}})
  todo = {name: p for name, p in checkpoints.items()
          if "blocks" not in done["models"].get(name, {})}
  if not todo:
    say("  probes: done, skipped")
    return done
  say(f"  probes: {', '.join(todo)}")
  report = probe.probe_report(todo, splits=("train", "val", "test"), videos=size.probe_videos,
                              blocks="all")
  report["models"] = {**done["models"], **report["models"]}
  files.write_json(path, report)
  for name in todo:
    say(f"  probe {name}: test top-1 {report['models'][name]['test_top1']:.3f}")
  return report


def plots(layout: Layout, size: Size, teacher: str) -> list[str]:
  """The PNGs (and their JSON numbers) from seed 0's runs, and the probe after each
  block from every seed's (probe.json); each drawn only if missing."""
  root = layout.root
  pre = {"teacher": teacher,
         "amd_student": layout.student("amd_student", 0, "pretrain"),
         "videomae_student": layout.student("videomae_student", 0, "pretrain")}
  students_pre = {k: v for k, v in pre.items() if k != "teacher"}
  fine = {name: layout.student(name, 0, "finetune") for name in STUDENTS}
  draw = {
      "pretrain_losses.png": lambda: curves.plot_pretrain_losses(
          students_pre, os.path.join(root, "pretrain_losses.png")),
      "finetune_curves.png": lambda: curves.plot_finetune_curves(
          fine, os.path.join(root, "finetune_curves.png")),
      "reconstructions.png": lambda: reconstruction.reconstructions_report(
          pre, root, scores=diagnostics.flat_tube_scores),
      "per_class.png": lambda: per_class.per_class_report(
          fine["videomae_student"], fine["amd_student"], root,
          names=("videomae_student", "amd_student")),
      "attention_distance.png": lambda: attention.attention_distance_report(
          pre, root, videos=size.analysis_videos),
      "probe_blocks.png": lambda: probe.plot_blocks(
          files.read_json(os.path.join(root, PROBE_FILE)),
          os.path.join(root, "probe_blocks.png")),
  }
  for name in PLOTS:
    path = os.path.join(root, name)
    if os.path.isfile(path):
      say(f"  {name}: exists, skipped")
    else:
      draw[name]()
      say(f"  {name}: drawn")
  return [os.path.join(root, name) for name in PLOTS]


# ----------------------------------------------------------------- results

def _stats(values: list) -> tuple[float | None, float | None]:
  """(mean, sample std) of the non-null values; std is None with fewer than two."""
  values = [v for v in values if v is not None]
  if not values:
    return None, None
  std = float(np.std(values, ddof=1)) if len(values) > 1 else None
  return float(np.mean(values)), std


def _probed(m: dict) -> dict:
  """A run's probe results from its probe.json entry: the output's test top-1 and
  each block's."""
  return {"probe_top1": m["test_top1"],
          "probe_blocks": {b: v["test_top1"] for b, v in m["blocks"].items()}}


def summarize(runs: list[dict], variant: str) -> dict:
  """One model's row from its runs ({seed, pretrain: record | None, finetune: record |
  None, probe_top1: float | None, probe_blocks: {block: top-1} | None}).

  Times and top-k are means over the runs (std: the sample std, None for one run).
  """
  row = {"variant": variant, "seeds": [r["seed"] for r in runs]}
  pre = [r["pretrain"] or {} for r in runs]
  fine = [r["finetune"] or {} for r in runs]
  for key in ("top1", "top5"):
    row[key], row[f"{key}_std"] = _stats([f.get(key) for f in fine])
  row["probe_top1"], row["probe_top1_std"] = _stats([r.get("probe_top1") for r in runs])
  blocks = [r.get("probe_blocks") or {} for r in runs]
  stats = {b: _stats([per.get(b) for per in blocks]) for b in blocks[0]}
  row["probe_blocks"] = {b: mean for b, (mean, _) in stats.items()}
  row["probe_blocks_std"] = {b: std for b, (_, std) in stats.items()}
  row["views"] = fine[0].get("views")
  row["pretrain_time_s"], _ = _stats([p.get("time_s") for p in pre])
  row["finetune_time_s"], _ = _stats([f.get("time_s") for f in fine])
  row["pretrain_steps"] = pre[0].get("steps", 0)
  row["finetune_steps"] = fine[0].get("steps")
  row["runs"] = [{"seed": r["seed"], "top1": f.get("top1"), "top5": f.get("top5"),
                  "probe_top1": r.get("probe_top1"), "probe_blocks": r.get("probe_blocks"),
                  "pretrain_time_s": p.get("time_s"),
                  "finetune_time_s": f.get("time_s")}
                 for r, p, f in zip(runs, pre, fine)]
  return row




def _cell(mean: float | None, std: float | None) -> str:
  if mean is None:
    return "—"
  return f"{mean:.3f}" + (f" ± {std:.3f}" if std is not None else "")


def table(rows: dict[str, dict], first: str = "model") -> str:
  """A plain-text table of result rows (also valid Markdown)."""
  head = [first, "variant", "top-1", "top-5", "probe top-1", "pre-train", "fine-tune"]
  lines = [head]
  for name, r in rows.items():
    lines.append([name, r["variant"], _cell(r["top1"], r["top1_std"]),
                  _cell(r["top5"], r["top5_std"]),
                  _cell(r.get("probe_top1"), r.get("probe_top1_std")),
                  "—" if r["pretrain_time_s"] is None else
                  f"{r['pretrain_steps']} steps, {r['pretrain_time_s']:.0f} s",
                  "—" if r["finetune_time_s"] is None else
                  f"{r['finetune_steps']} steps, {r['finetune_time_s']:.0f} s"])
  widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
  fmt = lambda line: "| " + " | ".join(c.ljust(w) for c, w in zip(line, widths)) + " |"
  return "\n".join([fmt(lines[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
                   + [fmt(line) for line in lines[1:]])


# ----------------------------------------------------------------- the study

def _check_size(root: str, size_name: str) -> None:
  """A DIR holds one size of study: resuming it with another would mix runs."""
  path = os.path.join(root, STUDY_FILE)
  if os.path.isfile(path):
    held = files.read_json(path)["size"]
    if held != size_name:
      raise errors.BadInput(f"{root} holds a '{held}' study; use --size {held} (or --full "
                            "accordingly) to resume it, or another --workdir")
  else:
    os.makedirs(root, exist_ok=True)
    files.write_json(path, {"size": size_name, **dataclasses.asdict(SIZES[size_name])})


def _open(root: str, size_name: str, seeds: int | None, teacher: str
          ) -> tuple[Size, int, dict, Layout, str]:
  """What every study command starts from: the size, its seeds, the teacher release's
  card (checked for this size), DIR's layout (checked to hold this size) and the
  teacher's checkpoint."""
  size = SIZES[size_name]
  card = read_release(teacher, size_name)
  _check_size(root, size_name)
  return size, seeds or size.seeds, card, Layout(root), os.path.join(teacher, "checkpoint")


def _release_name(teacher: str) -> str:
  """The release as results.json records it: the packaged one by its place in the
  repository (the same on every machine), any other by the path given."""
  if os.path.realpath(teacher) == os.path.realpath(RELEASED_TEACHER):
    return os.path.join("amd_jax", "proj", "study", "teacher")
  return teacher


def run_study(root: str, size_name: str = "default", seeds: int | None = None,
              teacher: str = RELEASED_TEACHER, jobs: int = 1) -> dict:
  """Every stage of the study into `root`; returns (and writes) results.json's content."""
  size, seeds, card, layout, ckpt = _open(root, size_name, seeds, teacher)
  start = time.perf_counter()
  plan = [(seed, name) for name in STUDENTS for seed in range(seeds)]   # longest first
  chains = [student_chain(layout, size, seed, name, ckpt) for seed, name in plan]
  # The teacher's fine-tuned top-1 comes from its release's card, or, for a size
  # the release was not measured with, from its own fine-tuning beside the students.
  measure_teacher = size_name not in card["finetune"]
  if measure_teacher:
    chains.insert(0, [teacher_finetune_stage(size, ckpt,
                                             os.path.join(root, "teacher", "finetune"))])
  say(f"[1/3] students ({', '.join(STUDENTS)} × {seeds} seed{'s' * (seeds > 1)}"
       + (", and the teacher's fine-tuning" if measure_teacher else "")
       + f"): {len(chains)} chains of pre-training, fine-tuning, test; {jobs} at a time")
  records = run_chains(chains, jobs)
  teacher_finetune = records.pop(0)[0] if measure_teacher else card["finetune"][size_name]
  by_seed: dict[int, dict] = {}
  for (seed, name), chain in zip(plan, records):
    by_seed.setdefault(seed, {})[name] = {"pretrain": chain[0] if len(chain) == 2 else None,
                                          "finetune": chain[-1]}
  say("[2/3] probes and plots (seed 0)")
  encoders = {f"{name}/seed_{s}": layout.student(name, s, "pretrain") if method else
              probe.random_encoder(size.student, num_frames=8, image_size=size.image_size,
                                   seed=s)
              for s in by_seed for name, method in STUDENTS.items()}
  probed = probes(os.path.join(root, PROBE_FILE), {"teacher": ckpt, **encoders}, size)["models"]
  paths = plots(layout, size, ckpt)
  say("[3/3] results")
  source = "measured here" if measure_teacher else "from its release's card"
  models = {}
  for name, method in STUDENTS.items():
    runs = [{"seed": s, **by_seed[s][name],
             **_probed(probed[f"{name}/seed_{s}"])}
            for s in sorted(by_seed)]
    models[name] = summarize(runs, size.student)
  models["teacher"] = summarize(
      [{"seed": 0, "pretrain": card["pretrain"], "finetune": teacher_finetune,
        **_probed(probed["teacher"])}], size.teacher.variant)
  release = _release_name(teacher)
  models["teacher"]["note"] = (
      f"released teacher ({release}): pre-trained once ({card['command']}); its fine-tuned "
      f"top-1 ('{size_name}' protocol, base lr {size.teacher.finetune_base_lr:g}) is "
      f"{source}; its probe is measured here")
  results = {
      "study": dict(size=size_name, seeds=sorted(by_seed), data=data_id(), frames=8,
                    image_size=size.image_size, teacher=size.teacher.variant,
                    student=size.student, teacher_release=dict(path=release, made=card["made"]),
                    times="wall clock of each stage, compilation included",
                    this_call_s=time.perf_counter() - start, machine=machine()),
      "models": models,
      "plots": [os.path.relpath(p, root) for p in paths],
  }
  files.write_json(os.path.join(root, "results.json"), results)
  return results


def run_ablation(root: str, name: str, size_name: str = "default", seeds: int | None = None,
                 teacher: str = RELEASED_TEACHER, jobs: int = 1) -> dict:
  """The AMD student under each setting of ablation `name`, fine-tuned and probed →
  DIR/ablation_NAME.json."""
  size, seeds, _, layout, ckpt = _open(root, size_name, seeds, teacher)
  plan = [(seed, setting) for seed in range(seeds) for setting in ABLATIONS[name]]
  chains = [pretrain_then_finetune(
      f"{name}={setting}", "AMD", size, seed,
      student_config(size, "amd", seed, teacher=ckpt, overrides=ABLATIONS[name][setting]),
      layout.ablation(name, setting, seed, "pretrain"),
      layout.ablation(name, setting, seed, "finetune")) for seed, setting in plan]
  records = run_chains(chains, jobs)
  # The probe of every setting's encoder; the default setting's is the study's AMD
  # student, under the study's name in the same probe.json.
  names = {(seed, setting): (f"amd_student/seed_{seed}" if not ABLATIONS[name][setting]
                             else f"ablation/{name}/{setting}/seed_{seed}")
           for seed, setting in plan}
  probed = probes(os.path.join(root, PROBE_FILE),
                  {names[key]: layout.ablation(name, key[1], key[0], "pretrain")
                   for key in plan}, size)["models"]
  runs = {setting: [] for setting in ABLATIONS[name]}
  for (seed, setting), (pre, fine) in zip(plan, records):
    runs[setting].append({"seed": seed, "pretrain": pre, "finetune": fine,
                          **_probed(probed[names[seed, setting]])})
  rows = {setting: dict(summarize(r, size.student), overrides=ABLATIONS[name][setting])
          for setting, r in runs.items()}
  out = {"ablation": name, "size": size_name, "settings": rows, "machine": machine()}
  files.write_json(os.path.join(root, f"ablation_{name}.json"), out)
  return out


def run_finetune_ablation(root: str, name: str, size_name: str = "default",
                          seeds: int | None = None, teacher: str = RELEASED_TEACHER,
                          jobs: int = 1) -> dict:
  """Every model of the study, the teacher included, fine-tuned and tested with every
  seed under each setting of fine-tuning factor `name` (FINETUNE_ABLATIONS), from
  the study's pre-training (run first where missing) → DIR/ablation_NAME.json."""
  size, seeds, card, layout, ckpt = _open(root, size_name, seeds, teacher)
  settings = FINETUNE_ABLATIONS[name]
  plan = [(setting, model, seed) for setting in settings for model in MODELS
          for seed in range(seeds)]
  chains = []
  for setting, model, seed in plan:
    fine, overrides = layout.finetune_ablation(name, setting, seed, model), settings[setting]
    label = f"{model}, {name}={setting}"
    chains.append([teacher_finetune_stage(size, ckpt, fine, seed, overrides, label)]
                  if model == "teacher" else
                  student_chain(layout, size, seed, model, ckpt, fine, overrides, label))
  records = run_chains(chains, jobs)
  runs: dict[str, dict[str, list]] = {setting: {model: [] for model in MODELS}
                                      for setting in settings}
  for (setting, model, seed), chain in zip(plan, records):
    pre = card["pretrain"] if model == "teacher" else chain[0] if len(chain) == 2 else None
    runs[setting][model].append({"seed": seed, "pretrain": pre, "finetune": chain[-1]})
  rows = {setting: {"overrides": settings[setting],
                    "models": {model: summarize(r, size.teacher.variant if model == "teacher"
                                                else size.student)
                               for model, r in runs[setting].items()}}
          for setting in settings}
  out = {"ablation": name, "size": size_name, "settings": rows, "machine": machine()}
  files.write_json(os.path.join(root, f"ablation_{name}.json"), out)
  return out


def main(argv: list[str] | None = None) -> None:
  quiet_logging()
  parser = argparse.ArgumentParser(prog="python -m amd_jax.proj.study",
                                   description=amd_jax.proj.study.__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--workdir", help="default: runs/demo (runs/teacher with --make-teacher)")
  parser.add_argument("--size", default="default", choices=tuple(SIZES))
  parser.add_argument("--seeds", type=int, help="students' seeds (default: 1 at smoke, else 3)")
  parser.add_argument("--teacher", default=RELEASED_TEACHER,
                      help="the teacher release to distil from (default: the shipped one)")
  parser.add_argument("--ablation", choices=(*ABLATIONS, *FINETUNE_ABLATIONS))
  parser.add_argument("--make-teacher", metavar="OUT",
                      help="pre-train, fine-tune and probe the teacher; its release → OUT")
  parser.add_argument("--jobs", type=int,
                      help="students' runs at once, each in its own process (default: 2 on "
                           "CPU, 1 on an accelerator); the results do not depend on it")
  args = parser.parse_args(argv)
  if args.seeds is not None and args.seeds < 1:
    parser.error("--seeds must be at least 1")
  if args.jobs is not None and args.jobs < 1:
    parser.error("--jobs must be at least 1")
  workdir = args.workdir or ("runs/teacher" if args.make_teacher else "runs/demo")
  with errors.exit_on_bad_input():
    workdir_lib.check_local(workdir)      # abspath would turn gs://b into ./gs:/b
  root = os.path.abspath(workdir)
  # Every seed's programs are seed 0's (the seed is data, not code): a persistent
  # compilation cache in DIR spares the later seeds (and reruns) their compiles.
  if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    jax.config.update("jax_compilation_cache_dir", os.path.join(root, "jax_cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  teacher = os.path.abspath(args.teacher)
  jobs = args.jobs or default_jobs()
  try:
    with errors.exit_on_bad_input():
      if args.make_teacher:       # a new release folder: nothing there yet
        paths_lib.new_output(args.make_teacher, "--make-teacher")
      workdir_lib.check(root)     # as for a training run: refused before anything runs
      if args.make_teacher:
        typed = sys.argv[1:] if argv is None else argv
        card = make_teacher(root, os.path.abspath(args.make_teacher),
                            "python -m amd_jax.proj.study " + shlex.join(typed), args.size)
        print(json.dumps({k: card[k] for k in ("finetune", "probe", "reconstruction_loss")},
                         indent=2))
      elif args.ablation in FINETUNE_ABLATIONS:
        out = run_finetune_ablation(root, args.ablation, args.size, args.seeds, teacher, jobs)
        for setting, row in out["settings"].items():
          print(f"\n{args.ablation} = {setting}\n" + table(row["models"]))
        print(f"\n{os.path.join(root, f'ablation_{args.ablation}.json')}")
      elif args.ablation:
        out = run_ablation(root, args.ablation, args.size, args.seeds, teacher, jobs)
        print(table(out["settings"], first=args.ablation))
        print(f"\n{os.path.join(root, f'ablation_{args.ablation}.json')}")
      else:
        out = run_study(root, args.size, args.seeds, teacher, jobs)
        print(table(out["models"]))
        print(f"\nresults: {os.path.join(root, 'results.json')}; plots: "
              + ", ".join(out["plots"]))
  except Stopped as e:      # as amd_jax.main after SIGTERM: saved, exit 0
    print(f"{e}; the same command resumes it", file=sys.stderr)
  except Failed as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)
