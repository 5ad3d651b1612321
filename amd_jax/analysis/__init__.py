r"""Analyses of trained models, as plots (PNG) with the numbers behind them (JSON).

  python -m amd_jax.analysis attention-distance --checkpoint [NAME=]PATH [...] --out DIR \
      [--data moving_digits --split test --videos 64 --frame-spacing 0]
  python -m amd_jax.analysis per-class --a RUN_A --b RUN_B --out DIR [--names A B] [--top K]
  python -m amd_jax.analysis curves --run NAME=WORKDIR [...] --out DIR
  python -m amd_jax.analysis reconstructions --run NAME=WORKDIR [...] --out DIR \
      [--videos 64 --show 2 --mask-ratio 0.9 --teacher-mask-ratio 0.75]
  python -m amd_jax.analysis probe --checkpoint [NAME=]PATH [...] --out DIR \
      [--data moving_digits --videos N]

- attention distance (the supplementary's Figure S2, the ViT paper's "mean
  attention distance"): per layer and head, for every query token the
  attention-weighted mean distance to the key tokens, in pixels of the input,
  averaged over queries and clips. Distance is *spatial* by default — between
  the centres of the two tokens' patches in the frame, whatever their time
  slices — so numbers compare with image ViTs. `--frame-spacing P` adds time:
  tokens one frame apart are P pixels apart in a third axis (the
  supplementary's caption, "frame spacing is calculated over the maximum
  distance of each frame", reads as P = the frame's diagonal; unverified).
  Clips are whole (every token visible), one test view per video.
- per-class (Figure S3's form): two fine-tuned runs' per-class test accuracy
  side by side, classes sorted by the difference, from each run's
  test_results.json.
- curves: pre-training losses (each term) and fine-tuning curves from metrics.jsonl,
  each run drawn in the plot of its kind (told by its config.json, else its metrics).
- reconstructions: `--videos` test clips through pre-training checkpoints, one mask
  for all of them, `--show` of them drawn, and the masked-pixel loss of each
  beside trivial predictors (the pre-training mask ratio by default; a lower one
  shows what a model infers when it sees more).
- probe: a linear probe on each checkpoint's frozen, mean-pooled encoder
  features (train → test, L2 chosen on val; probe.py) → probe.json.

Any checkpoint `amd_jax.pretrained.load` reads works for attention distance
(a training workdir of ours, a converted checkpoint, an official .pth, a
Hugging Face folder or Hub id). Each command prints its numbers as well as writing them.

Modules: attention.py, per_class.py, curves.py, reconstruction.py, probe.py
(one analysis each), output.py (figures), __main__.py (the
command line).
"""
