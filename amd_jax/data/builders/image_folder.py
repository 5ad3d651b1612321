"""An image folder (ImageNet layout) as one-frame videos: the image mode
(docs/method.md#image-mode).

`--manual_dir` holds `train/` and/or `val/` (and `test/`), each with one folder
per class holding its images (JPEG or PNG): `train/n01440764/n01440764_10026.JPEG`.
Classes are the sorted folder names of the first split found; every split must
use the same ones. An image is stored as its file's bytes in `frames` (a list of
one JPEG/PNG), so the video pipeline reads it as a one-frame clip: the same
encoder with T = 1, tubelet 1 (variant "S/16"), and per-patch random masking
(a tube of one frame).
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow_datasets as tfds

from amd_jax import errors
from amd_jax.data import decode
from amd_jax.data.builders import manual

SPLITS = ("train", "val", "test")
EXTENSIONS = (".jpg", ".jpeg", ".png")
EXAMPLE = "train/n01440764/n01440764_10026.JPEG"


def _class_folders(split_dir: str) -> list[str]:
  return sorted(d for d in os.listdir(split_dir) if os.path.isdir(os.path.join(split_dir, d)))


def _images(split_dir: str) -> list[tuple[str, str]]:
  """[(image path, its class folder)] of one split, in a stable order."""
  return [(os.path.join(split_dir, c, f), c) for c in _class_folders(split_dir)
          for f in sorted(os.listdir(os.path.join(split_dir, c)))
          if f.lower().endswith(EXTENSIONS)]


class ImageFolder(manual.ManualBuilder, skip_registration=True):
  """Records: frames (one encoded image), label, path."""

  name = "image_folder"
  VERSION = tfds.core.Version("1.0.0")
  OPTIONS = ("validate",)
  MANUAL_DIR = "IMAGE_DIR"

  def __init__(self, *, validate: bool = False, **kwargs):
    self.validate = validate
    super().__init__(**kwargs)

  @classmethod
  def layout(cls) -> str:
    return (f"{cls.name}: expected train/, val/ and/or test/ in the manual dir, each with "
            f"one folder of images per class, like '{EXAMPLE}'")

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self, description=__doc__,
        features=tfds.features.FeaturesDict({
            "frames": tfds.features.Tensor(shape=(None,), dtype=np.object_),
            "label": tfds.features.Tensor(shape=(), dtype=np.int64),
            "path": tfds.features.Text(),
        }))

  def source_files(self, manual_dir: str) -> list[str]:
    """Every image of every split's class folders (the build reads no list)."""
    return [path for split in SPLITS if os.path.isdir(os.path.join(manual_dir, split))
            for path, _ in _images(os.path.join(manual_dir, split))]

  def _split_generators(self, dl_manager):
    root = str(dl_manager.manual_dir)
    splits = [s for s in SPLITS if os.path.isdir(os.path.join(root, s))]
    if not splits:
      raise errors.BadInput(f"no split folder in {root}; " + self.layout())
    classes = _class_folders(os.path.join(root, splits[0]))
    if not classes:
      raise errors.BadInput(f"{os.path.join(root, splits[0])} holds no class folder; "
                            + self.layout())
    out = {}
    for split in splits:
      split_dir = os.path.join(root, split)
      if set(_class_folders(split_dir)) - set(classes):
        extra = sorted(set(_class_folders(split_dir)) - set(classes))[0]
        raise errors.BadInput(f"{split_dir}: class folder {extra} is not among the "
                              f"{len(classes)} classes of the first split")
      labels = {c: label for label, c in enumerate(classes)}
      files = [(path, labels[c]) for path, c in _images(split_dir)]
      if not files:
        raise errors.BadInput(f"{split_dir} holds no image; " + self.layout())
      out[split] = self._generate_examples(files)
    with open(os.path.join(self.data_dir, manual.CLASSES_FILE), "w") as f:
      f.write("\n".join(classes) + "\n")
    return out

  def _generate_examples(self, files):
    for key, (path, label) in enumerate(files):
      with open(path, "rb") as f:
        data = f.read()
      if self.validate:
        try:
          decode.jpeg_frames([data], [0])
        except decode.Undecodable:
          with open(os.path.join(self.data_dir, "bad_files.txt"), "a") as f:
            f.write(path + "\n")
          continue
      yield key, {"frames": [data], "label": label, "path": path}
