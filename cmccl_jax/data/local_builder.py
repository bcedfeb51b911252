"""The TFDS builder base of the project's datasets: built from local files or generated, never downloaded."""

import tensorflow_datasets as tfds


class LocalBuilder(tfds.core.GeneratorBasedBuilder):
  """A GeneratorBasedBuilder without TFDS's download report.

  TFDS prints "Downloading and preparing dataset Unknown size ..." and "downloaded
  and prepared" for every build; nothing downloads here, and the callers print
  what is being built and where (TFDS's private hooks for these lines, overridden).
  """

  def _log_download_bytes(self) -> None:
    """Silent: nothing is downloaded, and datasets.get_builder says what it builds where."""

  def _log_download_done(self) -> None:
    """Silent: the build's summary (preprocess) or the training log follows."""
