r"""Transfer of a K400 pre-trained student to UCF101 and HMDB51 (Table S3).

  python -m amd_jax.main --config=configs/transfer.py:data=ucf101,model=B \
      --workdir=runs/ft_b_ucf --config.init=runs/amd_b_k400

  data     ucf101 | hmdb51     model   S | B         runlocal   tiny run on moving_digits
  backend  cpu | gpu | tpu

Only the K400 pre-trained model is transferred (Supp. A); testing uses 5 clips
× 3 crops. Everything else (init loading, `--config.mode=test`, the learning-rate
rule) is configs/finetune.py's. Expected (AMD paper, ViT-B, K400 pre-training):
UCF101 97.1, HMDB51 79.6 top-1. The batch sizes count clips with the 2 repeated
samples, as Table S2's.

`runlocal`: configs/finetune.py's runlocal (moving_digits) with this table's
regularisation (head dropout 0.5).
"""

from configs import common, finetune

TABLE_S3 = {
    "hmdb51": dict(base_lr=1e-3, batch_size=128, epochs=60, rate=2, drop_path=0.1,
                   layer_decay=0.75),
    "ucf101": dict(base_lr=5e-4, batch_size=256, epochs=100, rate=4, drop_path=0.2,
                   # VideoMAE's UCF101 script agrees: layer decay 0.7.
                   layer_decay=0.70),
}


def get_config(arg=None):
  arg = common.parse_arg(arg, data=("ucf101", "hmdb51"), model=("B", "S"), runlocal=False,
                         backend=common.BACKENDS)
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
