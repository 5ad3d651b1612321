"""The base of the builders over files a user supplies in TFDS's manual dir."""

from __future__ import annotations

import abc

import tensorflow_datasets as tfds


class ManualBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """A builder whose input files the user puts in the manual dir.

  `layout()` says what goes where, once: TFDS shows it as the manual download
  instructions, and every message about a missing or malformed file ends with it.
  """

  @classmethod
  @abc.abstractmethod
  def layout(cls) -> str:
    """'NAME: expected … in the manual dir …', one line."""

  @property
  def MANUAL_DOWNLOAD_INSTRUCTIONS(self):  # noqa: N802 (tfds's name)
    return self.layout()
