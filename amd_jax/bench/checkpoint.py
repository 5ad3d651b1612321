r"""The checkpoint benchmark: how long a save holds up the training loop.

  python -m amd_jax.bench checkpoint --mode amd --student B --teacher L [--repeats 3] \
      [--keep 3] [--dir /tmp] [--devices N]

Builds the train state as amd_jax/train.py does (state.create_state: the
student's parameters, its frozen tokens and the AdamW moments, float32) and
saves it through checkpoint.Checkpointer as the training loop does, alternately
with the asynchronous save that train.py uses and with a synchronous one:

  async_save_s    the loop is blocked in `save` (orbax copies the arrays to host
                  memory, then writes in a background thread)
  async_commit_s  from the start of `save` until the step is committed (`wait`)
  sync_save_s     a synchronous `save` of the same state: what the loop would wait

Medians over `--repeats` (each run's values in the `_all` lists: the first save
also starts orbax's threads). Every save is a new step; the two checkpoint
folders live in a temporary folder under `--dir`, deleted at the end. The load
average before and after goes into the line: the write competes with anything
else on the machine.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time

import jax

from amd_jax import checkpoint, optim, sharding, tasks
from amd_jax import state as state_lib
from amd_jax.bench import step as bench_step


def run(args) -> dict:
  config = bench_step.make_config(args)
  devices = jax.devices()[:args.devices] if args.devices else jax.devices()
  mesh = sharding.make_mesh(config, devices)
  # The optimiser state's shapes do not depend on the schedule's values.
  schedule = optim.Schedule(peak=1e-3, final=1e-5, warmup_steps=0, total_steps=1000)
  state = state_lib.create_state(config, mesh, schedule)[0]
  jax.block_until_ready(state)
  # What train.py saves beside the state: the input iterator's small JSON state.
  data_state = {"next_index": 0}
  load_before = os.getloadavg()
  times = {"async_save_s": [], "async_commit_s": [], "sync_save_s": []}
  with tempfile.TemporaryDirectory(dir=args.dir, prefix="bench_checkpoint_") as root:
    async_ckpt = checkpoint.Checkpointer(os.path.join(root, "async"), save_every=1,
                                         keep=args.keep, async_save=True)
    sync_ckpt = checkpoint.Checkpointer(os.path.join(root, "sync"), save_every=1,
                                        keep=args.keep, async_save=False)
    try:
      for step in range(1, args.repeats + 1):
        start = time.perf_counter()
        async_ckpt.save(step, state, data_state)
        times["async_save_s"].append(time.perf_counter() - start)
        async_ckpt.wait()
        times["async_commit_s"].append(time.perf_counter() - start)
        start = time.perf_counter()
        sync_ckpt.save(step, state, data_state)
        times["sync_save_s"].append(time.perf_counter() - start)
    finally:
      async_ckpt.close()
      sync_ckpt.close()
  medians = {k: statistics.median(v) for k, v in times.items()}
  return {
      "bench": "checkpoint", "mode": config.mode, "student": config.model.variant,
      "teacher": config.teacher.variant if tasks.of(config).distills else None,
      "params": sum(x.size for x in jax.tree.leaves(state["params"])),
      "state_bytes": sum(x.nbytes for x in jax.tree.leaves(state)), "repeats": args.repeats,
      **medians, **{f"{k}_all": v for k, v in times.items()},
      "async_over_sync": medians["async_save_s"] / medians["sync_save_s"],
      "device": devices[0].device_kind, "device_count": len(devices),
      "cpu_count": len(os.sched_getaffinity(0)),
      "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
      "dir": args.dir or tempfile.gettempdir(),
  }


def add_parser(sub) -> None:
  """Registers `checkpoint` on bench.py's subparsers."""
  c = sub.add_parser("checkpoint", help="how long an (a)synchronous checkpoint save blocks")
  bench_step.add_model_args(c)
  c.add_argument("--repeats", type=int, default=3, help="saves of each kind (median reported)")
  c.add_argument("--keep", type=int, default=3, help="checkpoints kept, as config.keep_ckpts")
  c.add_argument("--dir", default=None, help="where the temporary checkpoints go "
                 "(default: the system's temporary folder)")
  c.add_argument("--devices", type=int, default=0, help="devices to shard the state over "
                 "(0: all)")
  c.set_defaults(run=run)
