r"""Transfer of a K400 pre-trained student to UCF101, HMDB51 and AVA v2.2 (Table S3).

  python -m amd_jax.main --config=configs/transfer.py:data=ucf101,model=B \
      --workdir=runs/ft_b_ucf --config.init=runs/amd_b_k400
  python -m amd_jax.data.build ava --manual_dir /raw/ava --short_side 256
  python -m amd_jax.main --config=configs/transfer.py:data=ava,model=B \
      --workdir=runs/ava_b --config.init=runs/amd_b_k400

  data     ucf101 | hmdb51 | ava    model   S | B    runlocal   tiny run (see below)
  backend  cpu | gpu | tpu

Only the K400 pre-trained model is transferred (Supp. A); testing uses 5 clips
× 3 crops. Everything else (init loading, `--config.mode=test`, the learning-rate
rule) is configs/finetune.py's. Expected (AMD paper, ViT-B, K400 pre-training):
UCF101 97.1, HMDB51 79.6 top-1. The batch sizes count clips with the 2 repeated
samples, as Table S2's.

AVA (docs/method.md#ava-action-detection, the two-stage setting of Supp. A): the detector
(amd_jax/models/roi.py) is the encoder with its pre-trained final norm, mean over
time, RoIAlign 7×7 on the 1/16 map, max-pool, a linear layer over the 80
actions; sigmoid BCE on the (jittered) ground-truth people, no mixup, no
RandAugment, no repeated sampling; testing scores the detector's proposals with
score ≥ 0.8 on 256-short-side frames; metrics.jsonl gets `map`, the official
frame mAP@0.5 over the 60 evaluated classes (amd_jax/evaluators/ava_map.py). Expected:
AMD ViT-B 29.9 mAP (K400 pre-training). The test is the val split. Planned at the
paper's 4 clips per GPU (128 on 32 GPUs; backend=gpu,
docs/benchmarks.md#planned-without-a-device): 3.9 GiB per A100-80G.

`runlocal` (data=ava or no data: model= beside it is refused, and so is
data=ucf101|hmdb51, which runlocal would replace): without data,
configs/finetune.py's runlocal (moving_digits) with this table's UCF101
regularisation (head dropout 0.5); with data=ava, a "Mu" detector
on a small AVA-layout folder (no AVA data ships with amd_jax: build one with
`python -m amd_jax.data.build ava`), 112-pixel crops, a few steps.
"""

import ml_collections

from configs import common, finetune

TABLE_S3 = {
    "hmdb51": dict(base_lr=1e-3, batch_size=128, epochs=60, rate=2, drop_path=0.1,
                   layer_decay=0.75),
    "ucf101": dict(base_lr=5e-4, batch_size=256, epochs=100, rate=4, drop_path=0.2,
                   # VideoMAE's UCF101 script agrees: layer decay 0.7.
                   layer_decay=0.70),
}


def ava_config(model: str, backend: str, runlocal: bool):
  """Table S3's AVA column."""
  data = ml_collections.ConfigDict(dict(
      name="ava", data_dir="", split="train",
      num_classes=80, frames=16, size=224, short_side=256, num_sample=1,
      max_boxes=32,                  # people per clip (VideoMAE-AVA caps at 100; 32 suffice)
      test_height=256, test_width=464,   # the test canvas: 16:9 at short side 256
      box_threshold=0.8,             # proposals scoring less are not evaluated (Supp. A)
      train_videos=0, worker_count=8))
  config = finetune.base_config(model=model, data=data, backend=backend, runlocal=runlocal)
  config.model.update(head="detector", drop_path=0.2, head_dropout=0.0)
  # AVA's test is its val split (Supp. A); each key frame scored on its proposals.
  config.evals = finetune.evals(val="val", test="val", views=False)
  config.mixup.update(prob=0.0, label_smoothing=0.0)   # unused: no mixup, sigmoid BCE
  config.batch_size = 128
  config.eval_batch_size = 32
  config.optim.update(base_lr=2.5e-4, epochs=30, warmup_epochs=5, layer_decay=0.75)
  if runlocal:
    config.model.update(variant="Mu/16x2", drop_path=0.0)
    config.data.update(size=112, short_side=128, test_height=128, test_width=240, max_boxes=4,
                       worker_count=0)
    config.batch_size = 8
    config.eval_batch_size = 8
    config.optim.update(base_lr=1e-2, epochs=4, warmup_epochs=1)
  return config


def get_config(arg=None):
  arg = common.parse_arg(arg, data=("ucf101", "hmdb51", "ava"), model=("B", "S"),
                         runlocal=False, backend=common.BACKENDS)
  # runlocal keeps data=ava (its AVA-layout form); ucf101/hmdb51 would become moving_digits.
  common.refuse_with_runlocal(arg, model="Mu", **({} if arg.data == "ava" else
                                                 {"data": "moving_digits"}))
  if arg.data == "ava":
    return ava_config(arg.model, arg.backend, arg.runlocal)
  row = TABLE_S3[arg.data]
  data = finetune.data_config(arg.data, sampler="span", rate=row["rate"], flip=True,
                              test_sampler="dense", test_clips=5)
  config = finetune.base_config(model=arg.model, data=data, backend=arg.backend,
                                runlocal=arg.runlocal)
  config.model.update(drop_path=row["drop_path"], head_dropout=0.5)
  config.batch_size = row["batch_size"]
  config.optim.update(base_lr=row["base_lr"], epochs=row["epochs"], warmup_epochs=5,
                      layer_decay=row["layer_decay"])
  if arg.runlocal:
    finetune.runlocal(config)
  return config
