"""Running the study's stages: one stage (a training run that is skipped when done
and resumed when interrupted), and chains of stages, `jobs` at a time in worker
processes of their own."""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue
import signal
import sys
import time

import jax
import ml_collections
from absl import logging as absl_logging

from amd_jax import errors, files, metrics, quiet, train
from amd_jax import workdir as workdir_lib

STAGE_FILE = workdir_lib.STAGE_FILE


def say(text: str) -> None:
  print(text, file=sys.stderr, flush=True)


class Stopped(Exception):
  """A stage ended before its last step (SIGTERM): the study stops, resumable."""


def run_training(title: str, config: ml_collections.ConfigDict, workdir: str,
                 steps: int) -> dict:
  """train(config, workdir) for `steps` updates unless workdir/stage.json says it
  completed; its record.

  The record: time_s (wall clock of every attempt together, compilation
  included), steps, and for fine-tuning the test's top1/top5/views. An
  interrupted attempt's time is kept, and train() resumes from its checkpoint.
  """
  path = os.path.join(workdir, STAGE_FILE)
  record = _stage_record(workdir)
  if record["done"]:
    say(f"  {title}: done ({record['time_s']:.0f} s), skipped")
    return record
  say(f"  {title} → {workdir}")
  os.makedirs(workdir, exist_ok=True)
  start = time.perf_counter()
  try:
    train.train(config, workdir)
  finally:
    record["time_s"] += time.perf_counter() - start
    files.write_json(path, record)
  rows = metrics.read_rows(workdir)
  done = max((r["step"] for r in rows if "split" not in r), default=0)
  if done < steps:   # train() returns early, checkpoint saved, after a SIGTERM
    raise Stopped(f"{title} stopped at step {done} of {steps}")
  record.update(done=True, steps=done)
  results = os.path.join(workdir, workdir_lib.TEST_RESULTS_FILE)
  if os.path.isfile(results):
    test = files.read_json(results)
    record.update(top1=test["top1"], top5=test["top5"], views=test["views"])
  files.write_json(path, record)
  say(f"  {title}: {record['time_s']:.0f} s, {record['steps']} steps"
       + (f", test top-1 {record['top1']:.3f}" if "top1" in record else ""))
  return record


def _stage_record(workdir: str) -> dict:
  return files.read_json(os.path.join(workdir, STAGE_FILE), {"time_s": 0.0, "done": False})


class Failed(Exception):
  """A worker process died (its traceback is above the line that says so)."""


def default_jobs() -> int:
  """Chains of stages run at once. On CPU two: XLA leaves part of the cores idle on
  models this small, so two runs side by side finish sooner than one after the other
  (docs/study/README.md, "How the recipes were chosen"). On an accelerator one: each
  process would claim the device's memory."""
  return 2 if jax.default_backend() == "cpu" else 1


def run_chains(chains: list[list[tuple]], jobs: int) -> list[list[dict]]:
  """The stages of every chain in order (a stage: run_training's arguments); their
  records, chain by chain. With jobs > 1 the chains run `jobs` at a time in worker
  processes, without progress bars (they would interleave): a line per stage and a
  count of finished chains instead. The records are the same either way.

  Ctrl-C reaches the workers from the terminal (a stage saves and stops, a second
  Ctrl-C exits at once, as in train()); a SIGTERM to this process is passed on to
  them; either way no worker starts another stage. Then, as after a stage stopped
  early, Stopped: the same command resumes.
  """
  todo = [i for i, chain in enumerate(chains)
          if not all(_stage_record(workdir)["done"] for _, _, workdir, _ in chain)]
  if jobs <= 1 or len(todo) <= 1:
    return [[run_training(*stage) for stage in chain] for chain in chains]
  done = {i: [run_training(*stage) for stage in chain]      # reads their records
          for i, chain in enumerate(chains) if i not in todo}
  todo_out = _in_workers([chains[i] for i in todo], jobs)
  return [done[i] if i in done else todo_out[todo.index(i)] for i in range(len(chains))]


def _in_workers(chains: list[list[tuple]], jobs: int) -> list[list[dict]]:
  """run_chains with worker processes: `jobs` of them take the chains in turn."""
  for chain in chains:
    for _, config, _, _ in chain:
      config.progress = False
  ctx = multiprocessing.get_context("spawn")   # fork would copy this process's JAX runtime
  tasks, results = ctx.Queue(), ctx.Queue()
  for item in enumerate(chains):
    tasks.put(item)
  # Set on the first Ctrl-C or SIGTERM: no worker starts another stage. (A signal
  # during a stage is train()'s, which may end that stage complete.)
  stop = ctx.Event()
  # Started with Ctrl-C ignored (inherited through exec) until _worker handles it:
  # one landing while a worker imports would be a KeyboardInterrupt traceback.
  previous = {signal.SIGINT: signal.signal(signal.SIGINT, signal.SIG_IGN)}
  workers = _start_workers(ctx, tasks, results, stop, min(jobs, len(chains)))
  signals: list[int] = []    # a handler only notes it: the Event's lock is not for handlers
  previous[signal.SIGTERM] = _handle_signals(workers, signals)
  try:
    out, problems = _collect(workers, tasks, results, stop, signals, len(chains))
  finally:
    for w in workers:
      w.join()
    for s, handler in previous.items():
      signal.signal(s, handler)
  return _outcome(out, problems, signals, workers)


def _start_workers(ctx, tasks, results, stop, count: int) -> list:
  """`count` started worker processes, each told by a None in `tasks` when to end;
  they compile into this process's persistent compilation cache."""
  cache = (jax.config.jax_compilation_cache_dir,
           jax.config.jax_persistent_cache_min_compile_time_secs)
  workers = [ctx.Process(target=_worker, args=(tasks, results, stop, cache))
             for _ in range(count)]
  for _ in workers:
    tasks.put(None)
  for w in workers:
    w.start()
  return workers


def _handle_signals(workers: list, signals: list[int]):
  """This process's Ctrl-C and SIGTERM handlers while the workers run: each signal is
  noted in `signals`; a SIGTERM is passed on to the workers, and a second Ctrl-C
  (the workers had theirs from the terminal) exits at once. Returns the SIGTERM
  handler it replaced."""
  def on_signal(signum, frame):
    if signum == signal.SIGTERM:
      for w in workers:
        if w.pid and w.is_alive():
          os.kill(w.pid, signal.SIGTERM)
    elif signal.SIGINT in signals:
      os._exit(128 + signum)
    signals.append(signum)

  previous = signal.signal(signal.SIGTERM, on_signal)
  signal.signal(signal.SIGINT, on_signal)
  return previous


def _collect(workers: list, tasks, results, stop, signals: list[int], count: int
             ) -> tuple[list, list]:
  """The records of each of `count` chains as the workers put them (None for a chain
  not done), and the problems they reported, each (status, message); a line per
  finished chain. A signal sets `stop`; a problem stops new chains."""
  out: list = [None] * count
  problems = []
  start = time.perf_counter()
  while any(w.is_alive() for w in workers) or not results.empty():
    if signals and not stop.is_set():
      stop.set()
    try:
      index, status, value = results.get(timeout=0.2)
    except queue.Empty:
      continue
    if status != "done":     # no new chains: the study stops once the others end theirs
      problems.append((status, value))
      _drain(tasks)
      for _ in workers:
        tasks.put(None)
      continue
    out[index] = value
    finished = sum(o is not None for o in out)
    elapsed = time.perf_counter() - start
    say(f"  [{finished}/{count} chains done, {elapsed / 60:.1f} min, about "
         f"{elapsed / finished * (count - finished) / 60:.1f} min left]")
  return out, problems


def _outcome(out: list, problems: list, signals: list[int], workers: list) -> list[list[dict]]:
  """Every chain's records, or why there are not: a worker's BadInput as one line,
  Stopped after a stopped stage or a signal, Failed for a worker that died."""
  errors_ = [value for status, value in problems if status == "error"]
  if errors_:
    raise errors.BadInput(errors_[0])
  if problems or signals:
    raise Stopped(problems[0][1] if problems else "stopped")
  if None in out:
    codes = ", ".join(str(w.exitcode) for w in workers if w.exitcode)
    raise Failed(f"a worker process failed (exit code {codes}; its traceback is above); "
                 "the same command resumes the study")
  return out


def _drain(tasks) -> None:
  try:
    while True:
      tasks.get(timeout=0.1)
  except queue.Empty:
    pass


def _worker(tasks, results, stop, cache: tuple[str | None, float]) -> None:
  """A worker process of run_chains: takes (index, chain) from `tasks` until None,
  puts (index, "done", records), or "stopped" | "error" with a message and ends."""
  quiet_logging()
  if cache[0]:
    jax.config.update("jax_compilation_cache_dir", cache[0])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", cache[1])
  signals = []   # between stages; train() handles those during one
  for s in (signal.SIGINT, signal.SIGTERM):
    signal.signal(s, lambda signum, frame: signals.append(signum))
  for index, chain in iter(tasks.get, None):
    try:
      records = []
      for stage in chain:
        if signals or stop.is_set():
          raise Stopped(f"{stage[0]}: not started")
        records.append(run_training(*stage))
    except Stopped as e:
      results.put((index, "stopped", str(e)))
      return
    except errors.BadInput as e:
      results.put((index, "error", str(e)))
      return
    results.put((index, "done", records))


def quiet_logging() -> None:
  """Stage lines and progress, not every checkpoint save (orbax logs through absl)
  nor the third-party warnings quiet.py names; the first call of every process of
  the study (its command line and each worker)."""
  quiet.quiet_third_party()
  absl_logging.set_verbosity(absl_logging.WARNING)
  logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
