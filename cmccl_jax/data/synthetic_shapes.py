"""TFDS builder of `synthetic_shapes`: procedural captioned scenes with their generator's difficulty.

Nothing is downloaded: every example is generated from (seed, split, index) by
`shapes_scene.make_example`. The shards hold the images, captions, id and what the
generator knows (`complexity`, the number of objects, which captions it corrupted);
difficulty scores are their own builds beside them (`data/difficulty.py`). With
`distractors`, each caption also gets a false one a word away (`shapes_truth.distractor`).
Since every scene can be regenerated from its id, the builder also says which
images a caption is true of (`relevance`), for semantic retrieval metrics.

Usage:
  builder = SyntheticShapes(data_dir=d, config=synthetic_shapes_config(num_train=64))
  builder.download_and_prepare()
  ds = builder.as_dataset(split="train")
"""

import dataclasses
from typing import Any, Iterator

import numpy as np
import tensorflow_datasets as tfds

from cmccl_jax.data import shapes_scene, shapes_truth
from cmccl_jax.data.local_builder import LocalBuilder
from cmccl_jax.errors import UserError

_DISTRACTOR_STREAM = 2  # a seed word apart from the scene's stream and the corruption's (1)


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
  min_objects: int = 1
  caption_levels: tuple[str, ...] = shapes_scene.CAPTION_LEVELS  # which kinds of caption scenes get
  distractors: bool = False  # a one-word-off false caption per caption (feature "distractors")

  def __post_init__(self):
    self.corrupt_fraction = float(self.corrupt_fraction)
    self.caption_levels = tuple(self.caption_levels)
    unknown = [k for k in self.caption_levels if k not in shapes_scene.CAPTION_LEVELS]
    if unknown or not self.caption_levels:
      raise UserError(f"caption_levels={self.caption_levels} must be a non-empty subset of "
                      f"{shapes_scene.CAPTION_LEVELS}")
    if not 1 <= self.min_objects <= self.max_objects:
      raise UserError(f"min_objects must be in 1..max_objects={self.max_objects}, got {self.min_objects}")
    if self.min_objects == 1 and set(self.caption_levels) <= {"pair", "relation"}:
      raise UserError(f"caption_levels={self.caption_levels} need two objects, but min_objects=1; "
                      "set min_objects=2 or add 'object', 'sized_object' or 'scene'")
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
  # repr of a float is exact, so distinct corrupt fractions never share a name; the
  # later parameters appear only when not at their defaults, so older builds keep their names.
  name = (f"s{c.image_size}-tr{c.num_train}-va{c.num_validation}-te{c.num_test}"
          f"-o{c.max_objects}-c{c.num_captions}-p{c.corrupt_fraction!r}-seed{c.seed}")
  if c.min_objects != 1:
    name += f"-min{c.min_objects}"
  if c.caption_levels != shapes_scene.CAPTION_LEVELS:
    name += "-L" + "".join(str(shapes_scene.CAPTION_LEVELS.index(k)) for k in c.caption_levels)
  return name + ("-d" if c.distractors else "")


def synthetic_shapes_config(**overrides: Any) -> SyntheticShapesConfig:
  """The config with `overrides` applied to the defaults, named after all its parameters."""
  return SyntheticShapesConfig(**overrides)


class SyntheticShapes(LocalBuilder):
  """Captioned shapes scenes, keyed by id, with the generator's own difficulty (`complexity`)."""

  # min_objects, caption_levels and distractors came later without a new version: at
  # their defaults every example and name is as before, and other values name new configs.
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
            **({"distractors": tfds.features.Sequence(tfds.features.Text(), length=c.num_captions)}
               if c.distractors else {}),
        }),
        metadata=tfds.core.MetadataDict(),
    )

  def _split_sizes(self) -> dict[str, int]:
    c = self.builder_config
    return {"train": c.num_train, "validation": c.num_validation, "test": c.num_test}

  def _examples(self, split: str) -> Iterator[dict[str, Any]]:
    c = self.builder_config
    for index in range(self._split_sizes()[split]):
      example = shapes_scene.make_example(
          c.seed, split, index, image_size=c.image_size, max_objects=c.max_objects,
          num_captions=c.num_captions, corrupt_fraction=c.corrupt_fraction, num_examples=c.num_train,
          min_objects=c.min_objects, caption_levels=c.caption_levels)
      if c.distractors:
        example["distractors"] = self._distractors(split, index, example["captions"])
      yield example

  def _distractors(self, split: str, index: int, captions: list[str]) -> list[str]:
    """Per caption, a false one a word away from it, false of the scene the captions describe."""
    c = self.builder_config
    partner = shapes_scene.corruption_partner(c.seed, index, c.corrupt_fraction, c.num_train) if (
        split == "train") else None
    described = shapes_scene.scene(c.seed, split, index if partner is None else partner, c.max_objects,
                                   c.min_objects)
    rng = np.random.default_rng([c.seed, shapes_scene.SPLITS.index(split), index, _DISTRACTOR_STREAM])
    return [shapes_truth.distractor(text, described, rng) for text in captions]

  def relevance(self, split: str, ids: np.ndarray, captions: list[str]) -> np.ndarray:
    """bool [len(ids), len(captions)]: caption j is true of the image of example ids[i] of `split`."""
    c = self.builder_config
    split_id = shapes_scene.SPLITS.index(split)
    ids = np.asarray(ids, np.int64)
    foreign = ids[ids // shapes_scene.ID_STRIDE != split_id]
    if foreign.size:
      raise ValueError(f"id {foreign[0]} is not of the {split} split")
    scenes = [shapes_scene.scene(c.seed, split, int(i % shapes_scene.ID_STRIDE), c.max_objects, c.min_objects)
              for i in ids]
    return shapes_truth.relevance(scenes, captions)

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # nothing to download
    return {split: self._generate_examples(split) for split in shapes_scene.SPLITS}

  def _generate_examples(self, split: str):
    for index, example in enumerate(self._examples(split)):
      yield index, example
