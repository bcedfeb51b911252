"""The TFDS builder base of the project's datasets: built from local files or generated, never downloaded."""

import tensorflow_datasets as tfds

from cmccl_jax.errors import UserError


def derived_name(given: str, prefix: str, dataset: str) -> str:
  """The config name of a build derived from the image build `dataset` ("builder/config/version"):
  `prefix` (what the build holds) then the image build; a `given` name must be that one."""
  builder, config, version = dataset.split("/")
  expected = f"{prefix}-{builder}-{config}-v{version}"
  if given and given != expected:
    raise UserError(f"config name {given!r} does not match its parameters; leave it empty to get {expected!r}")
  return expected


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
