r"""VideoMAE pre-training (no teacher): how an AMD teacher is made, and the baseline.

  python -m amd_jax.main --config=configs/videomae.py:data=k400,model=L --workdir=runs/vmae_l

  data     k400 | ssv2 | video_folder    model   S | B | L | H    runlocal   tiny smoke run
  backend  cpu | gpu | tpu   (see configs/common.py: bf16 compute on gpu/tpu)

Recipe of VideoMAE v1 (NeurIPS 2022) as its scripts run it: tube masking 90%,
normalised-pixel MSE, AdamW (0.9, 0.95), wd 0.05, base lr 1.5e-4 scaled by
batch/256, warm-up 40 epochs, cosine, no repeated sampling, no gradient clipping,
decoder depth 4 (12 for ViT-L and ViT-H). [The batch size and epochs follow the
VideoMAE paper's appendix and were not re-checked here.] The released ViT-L
teachers AMD uses were trained 1600 epochs (K400, 85.2 top-1 fine-tuned) and
2400 epochs (SSV2). Hardware: 64 V100 for ViT-B, about 27 h per 800 K400 epochs.
Planned at its 16 clips per GPU (backend=gpu, docs/benchmarks.md#planned-without-a-device):
ViT-B 4.2 GiB, ViT-L 14.4 GiB per A100-80G (not planned for V100s: no target).

`data=video_folder`: your own videos, as in configs/pretrain.py (docs/data.md).

`runlocal` (with `backend=`, or `data=video_folder` for the same tiny run on your
videos; any other data= or a model= beside it is refused, as runlocal picks them)
a ViT-Ti on 8-frame 64×64 moving_digits clips, global batch 8, about a
minute on 2 CPU cores; its workdir can serve as `teacher.init` for
`configs/pretrain.py:runlocal`.
"""

import ml_collections

from configs import common, pretrain


def get_config(arg=None):
  arg = common.parse_arg(arg, data=("k400", "ssv2", "video_folder"),
                         model=("B", "S", "L", "H"), runlocal=False, backend=common.BACKENDS)
  common.refuse_with_runlocal(arg, **common.runlocal_data(arg), model="Ti/8x2")
  config = ml_collections.ConfigDict()
  config.mode = "videomae"
  config.seed = 0
  config.model = ml_collections.ConfigDict(dict(
      variant=f"{arg.model}/16x2", decoder_depth=12 if arg.model in ("L", "H") else 4,
      drop_path=0.0, ln_eps=1e-6, remat=False, dtype="float32"))
  config.loss = ml_collections.ConfigDict(dict(rec=1.0))
  config.masking = ml_collections.ConfigDict(dict(student_ratio=0.9))
  config.data = pretrain.data_config(arg.data)
  config.data.num_sample = 1
  config.batch_size = 1024
  config.grad_accum = 1
  config.optim = ml_collections.ConfigDict(dict(
      base_lr=1.5e-4, min_lr=1e-5, epochs=800, warmup_epochs=40,
      b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.05, clip_norm=0.0))
  common.add_runtime(config, runlocal=arg.runlocal, backend=arg.backend)

  if arg.runlocal:
    config.model.variant = "Ti/8x2"
    config.model.decoder_depth = 2
    config.data.update(pretrain.runlocal_clips(arg), num_sample=4)
    config.batch_size = 8
    config.optim.update(dict(epochs=16, warmup_epochs=2, base_lr=0.1))
  return config
