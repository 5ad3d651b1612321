"""python -m amd_jax.plan.table DIR: the plans under DIR (DIR/ROW/plan.json, as
launch/plan_paper.sh writes them) as one Markdown table, rows in name order; a
row whose plan.json is missing shows the last line of its DIR/ROW.log."""

from __future__ import annotations

import glob
import json
import os
import sys

from amd_jax import errors

HEADER = ("row", "target", "mesh", "batch/dev", "params+opt", "teacher", "temp", "total GiB",
          "of", "fits", "TFLOP/dev XLA", "formula", "collectives (count)",
          "est. step s", "clips/s", "MFU", "max batch/dev", "compile s")


def _cells(name: str, r: dict) -> list[str]:
  m = r["memory_gib"]
  mesh = "×".join(str(v) for v in r["mesh"].values())
  colls = "not compiled" if r["collectives"] is None else ", ".join(
      f"{k.replace('collective-', 'c-')} {v['count']}" for k, v in r["collectives"].items()) or "-"
  est = r["step_s_estimate"]
  mb = r.get("max_batch", "")
  return [name, r["target"], mesh, f"{r['batch_per_device']:g}",
          f"{m['params'] + m['opt_state']:.2f}", f"{m['teacher']:.2f}", f"{m['temp']:.2f}",
          f"{m['total']:.2f}", f"{m['capacity']:.0f}", "yes" if r["fits"] else "**no**",
          f"{r['flops_per_device'] / 1e12:.2f}", f"{r['formula_flops_per_device'] / 1e12:.2f}",
          colls, "-" if est is None else f"{est:.3f}",
          "-" if est is None else f"{r['clips_per_s_estimate']:.0f}",
          "-" if est is None else f"{100 * r['mfu_estimate']:.0f}%",
          "" if mb == "" else ("none" if mb is None else f"{mb / r['devices']:g}"),
          f"{r['compile_s']:.0f}"]


def table(root: str) -> str:
  rows = []
  for log in sorted(glob.glob(os.path.join(root, "*.log"))):
    name = os.path.basename(log)[:-len(".log")]
    path = os.path.join(root, name, "plan.json")
    if os.path.exists(path):
      with open(path) as f:
        rows.append(_cells(name, json.load(f)))
    else:
      with open(log) as f:
        lines = [l.strip() for l in f if l.strip()]
      rows.append([name, f"failed: {lines[-1] if lines else 'no output'}"]
                  + [""] * (len(HEADER) - 2))
  out = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
  out += ["| " + " | ".join(r) + " |" for r in rows]
  return "\n".join(out)


def main(argv: list[str]) -> None:
  with errors.exit_on_bad_input():
    if len(argv) != 1 or not os.path.isdir(argv[0]):
      raise errors.BadInput("usage: python -m amd_jax.plan.table DIR (a folder of "
                            "launch/plan_paper.sh's plans)")
    print(table(argv[0]))


if __name__ == "__main__":
  main(sys.argv[1:])
