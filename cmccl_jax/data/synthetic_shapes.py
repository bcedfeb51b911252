"""TFDS builder of `synthetic_shapes`: procedural captioned scenes with difficulty scores.

Nothing is downloaded: every example is regenerated from (seed, split, index) by
`shapes_scene.make_example`. Preparation makes two passes so that only scores are
ever held in memory: pass 1 scores every split and takes the block edges from the
training scores; pass 2 regenerates the examples and writes them with their
`difficulty/<scorer>` and `block/<scorer>` features. Validation and test are
blocked with the training edges, which are kept in the dataset metadata
(`builder.info.metadata["block_edges"]`, with the block sizes per split and the
scoring settings that decided the scores).

Usage:
  builder = SyntheticShapes(data_dir=d, config=synthetic_shapes_config(num_train=64))
  builder.download_and_prepare()
  ds = builder.as_dataset(split="train")
"""

import dataclasses
from typing import Any, Iterator

import numpy as np
import tensorflow_datasets as tfds

from cmccl_jax.curriculum import blocks as blocks_lib
from cmccl_jax.scoring import scorers as scorers_lib
from cmccl_jax.data.features import curriculum_features
from cmccl_jax.data import shapes_scene
from cmccl_jax.data.local_builder import LocalBuilder
from cmccl_jax.errors import UserError


# noun_count adds ~14 s to the default build (32 s -> 46 s on 2 busy CPU cores): 9k distinct
# captions tagged at ~1000/s, the other 38k repeats served from its cache.
DEFAULT_SCORERS = ("caption_length", "ground_truth", "noun_count")


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
  num_blocks: int = 4
  scorers: tuple[str, ...] = DEFAULT_SCORERS
  # What the model-based scorers depend on; made concrete (absolute paths, checkpoint
  # steps) here, so the name below says which checkpoint scored the build.
  scoring: scorers_lib.ScoringSettings = scorers_lib.ScoringSettings()

  def __post_init__(self):
    self.corrupt_fraction = float(self.corrupt_fraction)
    self.scorers = scorers_lib.check_scorer_names(scorers_lib.scorer_names(self.scorers))
    self.scoring = self.scoring.resolved(self.scorers)
    for field in ("image_size", "num_train", "num_validation", "num_test", "num_captions", "num_blocks"):
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
  # repr of a float is exact, so distinct corrupt fractions never share a name;
  # scorer names are joined with "." because TFDS config names allow [\w.-]; the
  # scoring settings those scorers depend on add a hash (none for the default scorers).
  return (f"s{c.image_size}-tr{c.num_train}-va{c.num_validation}-te{c.num_test}"
          f"-o{c.max_objects}-c{c.num_captions}-p{c.corrupt_fraction!r}-seed{c.seed}"
          f"-k{c.num_blocks}-{'.'.join(c.scorers)}{c.scoring.tag(c.scorers)}")


def synthetic_shapes_config(**overrides: Any) -> SyntheticShapesConfig:
  """The config with `overrides` applied to the defaults, named after all its parameters."""
  return SyntheticShapesConfig(**overrides)


class SyntheticShapes(LocalBuilder):
  """Captioned shapes scenes with per-scorer difficulty and quantile block."""

  VERSION = tfds.core.Version("1.1.0")
  RELEASE_NOTES = {
      "1.1.0": "Quantile blocks split ties at a block edge by rank, so no block is empty.",
      "1.0.0": "First release.",
  }
  RELEASE_NOTES = {"1.0.0": "Initial release."}

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
            **curriculum_features(c.scorers),
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
    c = self.builder_config
    batch_size = int(c.scoring.batch_size)
    scorers = scorers_lib.fit_scorers(
        scorers_lib.make_scorers(c.scorers, c.scoring),
        lambda: scorers_lib.batched(self._examples("train"), batch_size))
    scores = {split: scorers_lib.score_split(self._examples(split), scorers, batch_size)
              for split in shapes_scene.SPLITS}
    ids = {split: shapes_scene.SPLITS.index(split) * shapes_scene.ID_STRIDE + np.arange(n, dtype=np.int64)
           for split, n in self._split_sizes().items()}
    blocks, edges = blocks_lib.blocks_by_scorer(scores, ids, c.num_blocks)
    self.info.metadata.update(
        num_blocks=c.num_blocks,
        block_edges={name: [float(e) for e in edge] for name, edge in edges.items()},
        block_sizes={name: {split: np.bincount(blocks[split][name], minlength=c.num_blocks).tolist()
                            for split in shapes_scene.SPLITS} for name in c.scorers},
        scoring=c.scoring.describe(c.scorers),
    )
    return {split: self._generate_examples(split, scores[split], blocks[split]) for split in shapes_scene.SPLITS}

  def _generate_examples(self, split: str, scores: dict[str, np.ndarray], blocks: dict[str, np.ndarray]):
    for index, example in enumerate(self._examples(split)):
      yield index, {
          **example,
          "difficulty": {name: s[index] for name, s in scores.items()},
          "block": {name: b[index] for name, b in blocks.items()},
      }
