r"""Benchmarks: one subcommand each, printing JSON lines (docs/benchmarks.md).

  python -m amd_jax.bench input --dataset k400 [--data_dir DIR] [--split train] \
      [--mode pretrain|finetune|test] [--batches 20] [--workers 8] [--videos 8]
  python -m amd_jax.bench input --compare [--dir D] [--sources 8] [--short_sides 320,160] \
      [--compare_workers 0,1,2]
  python -m amd_jax.bench step --mode amd --student S --teacher B --batch 2 [--dtype bfloat16] \
      [--attention auto|blocked|xla|cudnn] [--steps 5] [--reference torch] ...
  python -m amd_jax.bench checkpoint --mode amd --student B --teacher L [--repeats 3] [--dir D]
  python -m amd_jax.bench table RESULTS.jsonl

`input` (input_pipeline.py): the input pipeline alone (decode, sample, augment, mask, batch),
no model: videos_per_s and clips_per_s after the first batch (worker start-up
and the first decodes are left out), skipped videos, batch shapes, the worker
count, and per-core rates (each worker process runs `--threads` threads, 1 by
default, so a worker is one core; with 0 workers the main process does the work).
With `--compare` it makes K400-like mp4s (10 s, 340x256 to 854x480, long GOPs
with B-frames), stores them as made, re-encoded at each short side and as JPEG
frames, and benches pre-training on each storage with each worker count in one
run: a JSON line per row, then a table with the cores that 150 videos/s take.

`step` (step.py): one jitted pre-training update on random data:
step_s, clips_per_s, model and XLA FLOPs, MFU, compile time, peak device
memory; `--reference torch` times the same update in PyTorch beside it.

`checkpoint` (checkpoint.py): how long `Checkpointer.save` blocks
the training loop, asynchronous (train.py's) against synchronous, for the train
state of the given model.

`table` (step.py): `step` lines collected in a file as a short
text table (launch/gpu_check.sh prints one last). It prints no JSON.

Modules: input_pipeline.py, step.py (with the PyTorch reference in torch_reference.py),
checkpoint.py, one benchmark each; cli.py, the command line (__main__.py).
"""
