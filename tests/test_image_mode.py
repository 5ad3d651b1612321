"""Image mode (docs/method.md#image-mode): an image folder of real scans fine-tunes the
T = 1 encoder."""

import os

import numpy as np
import pytest
from PIL import Image

from amd_jax import errors, train
from amd_jax.data import sources
from configs import image as image_config


def digit_folder(root, per_class):
  """An ImageNet-layout folder of scikit-learn's real 8×8 digit scans, as 32×32 RGB PNGs."""
  from sklearn.datasets import load_digits
  digits = load_digits()
  seen = {}
  for img, label in zip(digits.images, digits.target):
    index = seen.get(label, 0)
    seen[label] = index + 1
    split = "train" if index < per_class["train"] else (
        "val" if index < per_class["train"] + per_class["val"] else None)
    if split is None:
      continue
    folder = os.path.join(root, split, f"digit_{label}")
    os.makedirs(folder, exist_ok=True)
    gray = (img * 255 / 16).astype(np.uint8)
    Image.fromarray(gray).convert("RGB").resize((32, 32), Image.BILINEAR).save(
        os.path.join(folder, f"{index:04d}.png"))


def test_image_folder_fine_tunes(tmp_path):
  manual, data = str(tmp_path / "raw"), str(tmp_path / "data")
  digit_folder(manual, {"train": 40, "val": 10})
  sources.prepare("image_folder", data, manual)
  with open(os.path.join(data, "image_folder", "1.0.0", "classes.txt")) as f:
    assert f.read().split() == [f"digit_{i}" for i in range(10)]
  config = image_config.get_config("model=S")
  assert config.model.variant == "S/16" and config.data.frames == 1
  config.model.variant = "Mu/8"
  config.model.drop_path = 0.0
  config.data.update(data_dir=data, size=32, num_classes=10, worker_count=0,
                     rand_augment=dict(num_ops=0), erase_prob=0.0)
  config.evals.val.split = config.evals.test.split = "val"
  config.mixup.prob = 0.0
  config.batch_size = 40
  config.eval_batch_size = 40
  config.optim.update(base_lr=0.05, epochs=30, warmup_epochs=1)
  config.update(log_every=10, ckpt_every=1000, progress=False)
  rows = train.train(config, str(tmp_path / "run"))
  test = [r for r in rows if r.get("split") == "test"][-1]
  assert test["views"] == 1 and test["videos"] == 100
  assert test["top1"] > 0.3, test            # chance: 0.1


def test_image_folder_wrong_layout_is_one_line(tmp_path):
  (tmp_path / "raw" / "images").mkdir(parents=True)
  with pytest.raises(errors.BadInput, match="expected train/, val/ and/or test/"):
    sources.prepare("image_folder", str(tmp_path / "data"), str(tmp_path / "raw"))
