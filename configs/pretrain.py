r"""AMD pre-training: a ViT student distilled from a frozen VideoMAE teacher (Table S1).

Mirrors the supplementary's Table S1 (both columns); the argument picks the column
and the student:

  python -m amd_jax.main --config=configs/pretrain.py:data=ssv2,model=B \
      --workdir=runs/amd_b_ssv2 --config.teacher.init=/ckpt/VideoMAEv1_vit_L_ssv2_pt_2400e.pth

  data     ssv2 | k400 | video_folder    model   S | B    runlocal   tiny smoke run
  backend  cpu | gpu | tpu     (see configs/common.py: bf16 compute on gpu/tpu)

`data=video_folder` pre-trains on your own videos, labelled or not (docs/data.md),
with K400's clip rule and one pass = the folder's videos: prepared with `python -m
amd_jax.data.build video_folder --manual_dir YOUR_VIDEOS`; with several folders
built, `--config.data.name=video_folder/NAME` picks one.

Hardware: the paper used 32 A100-80G for 800 epochs (= 200 passes × 4 repeated
samples) at 2048 clips per step; `--config.grad_accum=4` gives the same update on
8 GPUs. Planned for that hardware (python -m amd_jax.plan, backend=gpu, 64 clips
per GPU; docs/benchmarks.md#planned-without-a-device): ViT-B student + ViT-L
teacher 15.1 GiB per A100-80G (18.1 on an H100), ViT-S 9.8 GiB: the defaults fit
with room to spare, data-parallel, no grad_accum, remat or FSDP. A TPU v5e chip
(16 GiB, backend=tpu) holds the same 64 clips in 14.7 GiB. Expected fine-tuned top-1 (Table S2 recipe): ViT-S 70.2 / ViT-B 73.3 on
SSV2, ViT-S 80.1 / ViT-B 82.2 on K400 (AMD README).

Learning rate: lr = base_lr × videos per update / 256 = 1.2e-3 × 512 / 256 =
2.4e-3 peak (the scripts' rule; repeated samples are not counted).

`runlocal`: (with `backend=`, or `data=video_folder` for the same tiny run on your
videos; any other data= or a model= beside it is refused, as runlocal picks them) a ViT-"Mu" student (width 64, 4 blocks) distilled from a randomly
initialised ViT-Ti teacher (unless teacher.init is given) on 8-frame 64×64
clips of the embedded moving_digits dataset (built on first use, about 30 s,
into $AMD_JAX_DATA or ~/.cache/amd_jax), global batch 8; about a minute on 2 CPU
cores, loss falls.
"""

import ml_collections

from configs import common

# Training videos per dataset (AMD docs/DATASET.md); one pass = videos // (batch / num_sample) steps.
TRAIN_VIDEOS = {"k400": 240_436, "ssv2": 168_913}
# runlocal: 64 moving_digits videos (built on first use), 8 of their 16 frames
# (the K400 rule at rate 2), 64×64 multi-scale crops.
RUNLOCAL_DATA = dict(name="moving_digits", data_dir="", split="train[:64]", frames=8,
                     size=64, sampler="dense", sampling_rate=2, train_videos=0,
                     worker_count=0)


def runlocal_clips(arg: ml_collections.ConfigDict) -> dict:
  """config.data's runlocal values: RUNLOCAL_DATA, or its clip sizes alone on a video folder."""
  if arg.data == "video_folder":
    return {k: v for k, v in RUNLOCAL_DATA.items() if k not in ("name", "data_dir", "split")}
  return RUNLOCAL_DATA


def data_config(data: str) -> ml_collections.ConfigDict:
  """config.data of pre-training on `data` (docs/method.md#pre-training-clips)."""
  return ml_collections.ConfigDict(dict(
      name=data,
      data_dir="",                    # where `python -m amd_jax.data.build` prepared it
      split="train",                  # TFDS split, slicing allowed ('train[:10%]')
      frames=16, size=224,
      # K400 (and a video folder): 16 frames 4 apart from a random start; SSV2: AMD's
      # span rule, 16 frames spread over a random 32-frame window (VideoMAE v1 used
      # dense, rate 2).
      sampler={"k400": "dense", "ssv2": "span", "video_folder": "dense"}[data],
      sampling_rate={"k400": 4, "ssv2": 2, "video_folder": 4}[data],
      num_sample=4,                   # repeated sampling: clips drawn per decoded video
      # Videos one pass counts for the schedule: the paper's count, so the
      # schedule is the paper's whatever the local copy lacks; 0 = the split's size.
      train_videos=TRAIN_VIDEOS.get(data, 0),
      worker_count=8))                # grain worker processes decoding per host


def get_config(arg=None):
  arg = common.parse_arg(arg, data=("k400", "ssv2", "video_folder"), model=("B", "S"),
                         runlocal=False, backend=common.BACKENDS)
  common.refuse_with_runlocal(arg, **common.runlocal_data(arg), model="Mu/8x2")
  config = ml_collections.ConfigDict()
  config.mode = "amd"
  config.seed = 0

  config.model = ml_collections.ConfigDict(dict(
      variant=f"{arg.model}/16x2", decoder_depth=4, drop_path=0.0, ln_eps=1e-6,
      remat=False, dtype="float32"))
  # The teacher: VideoMAE ViT-L (1600 ep K400 / 2400 ep SSV2 in the official scripts).
  config.teacher = ml_collections.ConfigDict(dict(
      variant="L/16x2", init="", ln_eps=1e-6, dtype="float32"))
  config.align = ml_collections.ConfigDict(dict(
      method="serial",                # direct | generation | parallel | serial (Supp. B)
      student_layers=(6, 12), teacher_layers=(12, 24),
      generator_depth=2, loss="l2",   # l2 | l1 | smooth_l1
      # Teacher features as targets: none = raw residual stream (the official
      # code); layernorm = MVD's non-affine LayerNorm, an opt-in deviation.
      target_norm="none",
      # The official generator mask tokens are never registered as parameters, so
      # they stay at their random init; True trains them (an opt-in deviation).
      learnable_mask_tokens=False))
  config.loss = ml_collections.ConfigDict(dict(rec=1.0, dir=1.0, gen=1.0))
  config.masking = ml_collections.ConfigDict(dict(student_ratio=0.9, teacher_ratio=0.75))

  config.data = data_config(arg.data)

  config.batch_size = 2048            # clips per update, all hosts, repeated samples included
  config.grad_accum = 1               # micro-batches per update (same update, less memory)
  config.optim = ml_collections.ConfigDict(dict(
      base_lr=1.2e-3, min_lr=1e-5, epochs=800, warmup_epochs=40,
      b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.05, clip_norm=0.02))
  common.add_runtime(config, runlocal=arg.runlocal, backend=arg.backend)

  if arg.runlocal:
    config.model.variant = "Mu/8x2"
    config.model.decoder_depth = 2
    config.teacher.variant = "Ti/8x2"
    config.align.student_layers = (2, 4)
    config.align.teacher_layers = (6, 12)
    config.data.update(runlocal_clips(arg))
    config.batch_size = 8
    # 2 videos per update: base 0.1 gives a 7.8e-4 peak, enough to move in 128 steps.
    config.optim.update(dict(epochs=16, warmup_epochs=2, base_lr=0.1))
  return config
