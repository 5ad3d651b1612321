r"""Image mode: fine-tuning on an image folder with the same encoder at T = 1
(docs/method.md#image-mode).

  python -m amd_jax.data.build image_folder --manual_dir /raw/imagenet
  python -m amd_jax.main --config=configs/image.py:model=B --workdir=runs/ft_b_in1k \
      --config.init=runs/amd_b_in1k

  model    S | B           backend   cpu | gpu | tpu

An image is a one-frame clip: variant "B/16" (tubelet 1), 14×14 tokens, and the
pre-training mask of a one-frame tube is per-patch random masking. The paper's
ImageMAE results (AMD ViT-S 82.1, ViT-B 84.6 top-1 on IN-1K) come with no
released recipe: **this recipe is unverified** — it is MAE's ViT-B fine-tuning
(100 epochs, base lr 5e-4 at batch 1024, layer decay 0.65, drop path 0.1,
RandAugment m9 ± 0.5 with 2 ops, random erasing 0.25, mixup 0.8 / cutmix 1.0,
label smoothing 0.1), and testing resizes the short side to 224 then takes the
centre crop (MAE resizes to 256 first: crop ratio 0.875).

`data.num_classes` stays 0: the run reads it from the folder's label map
(`image_folder` writes the class folders' names to classes.txt beside the data),
and test_results.json names the classes.
"""

from configs import common, finetune


def get_config(arg=None):
  arg = common.parse_arg(arg, model=("B", "S"), backend=common.BACKENDS)
  data = finetune.data_config("image_folder", sampler="segments", rate=1, flip=True,
                              test_sampler="segments", test_clips=1)
  data.update(frames=1, num_sample=1, test_crops=1)
  config = finetune.base_config(model=arg.model, data=data, backend=arg.backend,
                                runlocal=False)
  config.model.variant = f"{arg.model}/16"
  config.batch_size = 1024
  config.optim.update(base_lr=5e-4, epochs=100, warmup_epochs=5, layer_decay=0.65)
  return config
