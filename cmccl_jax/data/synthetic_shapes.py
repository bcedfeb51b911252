"""TFDS builder of `synthetic_shapes`: procedural captioned scenes with their generator's difficulty.

Nothing is downloaded: every example is generated from (seed, split, index) by
`shapes_scene.make_example`. The shards hold the images, captions, id and what the
generator knows (`complexity`, the number of objects, which captions it corrupted);
difficulty scores are their own builds beside them (`data/difficulty.py`).

Usage:
  builder = SyntheticShapes(data_dir=d, config=synthetic_shapes_config(num_train=64))
  builder.download_and_prepare()
  ds = builder.as_dataset(split="train")
"""

import dataclasses
from typing import Any, Iterator

import numpy as np
import tensorflow_datasets as tfds

from cmccl_jax.data import shapes_scene
from cmccl_jax.data.local_builder import LocalBuilder
from cmccl_jax.errors import UserError



@dataclasses.dataclass(eq=False, kw_only=True)
class SyntheticShapesConfig(tfds.core.BuilderConfig):
  """Every parameter of a build. The name is derived from all of them, so builds
  with different parameters land in different directories under data_dir."""

  name: str = ""
  image_size: int = 32
  num_train: int = 8000
  num_validation: int = 500
  num_test: int = 1000
  max_objects: int = 4
  num_captions: int = 5
  corrupt_fraction: float = 0.0
  seed: int = 0

  def __post_init__(self):
    self.corrupt_fraction = float(self.corrupt_fraction)
    for field in ("image_size", "num_train", "num_validation", "num_test", "num_captions"):
      if getattr(self, field) < 1:
        raise UserError(f"{field} must be >= 1, got {getattr(self, field)}")
    if not 1 <= self.max_objects <= shapes_scene.MAX_OBJECTS:
      raise UserError(f"max_objects must be in 1..{shapes_scene.MAX_OBJECTS}, got {self.max_objects}")
    if not 0.0 <= self.corrupt_fraction < 1.0:
      raise UserError(f"corrupt_fraction must be in [0, 1), got {self.corrupt_fraction}")
    if self.corrupt_fraction > 0 and self.num_train < 2:
      raise UserError("corrupting captions needs num_train >= 2")
    expected = _config_name(self)
    if self.name and self.name != expected:
      raise UserError(f"config name {self.name!r} does not match its parameters; leave it "
                       f"empty to get {expected!r}")
    self.name = expected
    self.description = self.description or f"synthetic_shapes with {expected}"


def _config_name(c: SyntheticShapesConfig) -> str:
  # repr of a float is exact, so distinct corrupt fractions never share a name.
  return (f"s{c.image_size}-tr{c.num_train}-va{c.num_validation}-te{c.num_test}"
          f"-o{c.max_objects}-c{c.num_captions}-p{c.corrupt_fraction!r}-seed{c.seed}")


def synthetic_shapes_config(**overrides: Any) -> SyntheticShapesConfig:
  """The config with `overrides` applied to the defaults, named after all its parameters."""
  return SyntheticShapesConfig(**overrides)


class SyntheticShapes(LocalBuilder):
  """Captioned shapes scenes, keyed by id, with the generator's own difficulty (`complexity`)."""

  VERSION = tfds.core.Version("2.0.0")
  RELEASE_NOTES = {
      "2.0.0": "Images, captions and generator fields only: difficulty scores and blocks moved to their own builds.",
      "1.1.0": "Quantile blocks split ties at a block edge by rank, so no block is empty.",
      "1.0.0": "First release.",
  }
  # The offline scorers a run reads when config.scoring.scorers is () (data/difficulty.py).
  # noun_count adds ~14 s to the first use: 9k distinct captions tagged at ~1000/s, the
  # other 38k repeats served from its cache.
  DEFAULT_SCORERS = ("caption_length", "ground_truth", "noun_count")

  def get_default_builder_config(self) -> SyntheticShapesConfig:
    # Configs are made from parameters, not picked from BUILDER_CONFIGS: TFDS
    # rejects a custom config that shares a listed config's name.
    return synthetic_shapes_config()

  def _info(self) -> tfds.core.DatasetInfo:
    c = self.builder_config
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__.split("\n\n")[0],
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(c.image_size, c.image_size, 3), encoding_format="png"),
            "captions": tfds.features.Sequence(tfds.features.Text(), length=c.num_captions),
            "caption_levels": tfds.features.Tensor(shape=(c.num_captions,), dtype=np.int32),
            "complexity": tfds.features.Scalar(dtype=np.float32),
            "num_objects": tfds.features.Scalar(dtype=np.int32),
            "corrupted": tfds.features.Scalar(dtype=np.bool_),
            "id": tfds.features.Scalar(dtype=np.int64),
        }),
        metadata=tfds.core.MetadataDict(),
    )

  def _split_sizes(self) -> dict[str, int]:
    c = self.builder_config
    return {"train": c.num_train, "validation": c.num_validation, "test": c.num_test}

  def _examples(self, split: str) -> Iterator[dict[str, Any]]:
    c = self.builder_config
    for index in range(self._split_sizes()[split]):
      yield shapes_scene.make_example(
          c.seed, split, index, image_size=c.image_size, max_objects=c.max_objects,
          num_captions=c.num_captions, corrupt_fraction=c.corrupt_fraction, num_examples=c.num_train)

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # nothing to download
    return {split: self._generate_examples(split) for split in shapes_scene.SPLITS}

  def _generate_examples(self, split: str):
    for index, example in enumerate(self._examples(split)):
      yield index, example
