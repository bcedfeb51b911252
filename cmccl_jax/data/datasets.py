"""Finds, prepares and validates the TFDS dataset a config names.

Errors here are the ones a user hits first (a typo in the dataset name, a wrong
data_dir, a scorer that was never computed), so each names the bad value and the fix.
"""

import dataclasses
import os

import jax
import tensorflow_datasets as tfds
from jax.experimental import multihost_utils

from cmccl_jax.scoring import scorers as scorers_lib
from cmccl_jax.curriculum.pacing import LEARNED
from cmccl_jax.data import captioned_images
from cmccl_jax.data import coco_captions
from cmccl_jax.data import image_text_folder
from cmccl_jax.data import synthetic_shapes
from cmccl_jax.errors import UserError

# Datasets that need no files from the user and are built on first use.
BUILT_IN = ("synthetic_shapes",)
# Datasets built from the user's local files (config.data.<key>.root). With
# auto_prepare they too are built on first use, from those files; that takes long
# for COCO, where `python -m preprocess` shows progress and a summary of what it skipped.
FROM_LOCAL_FILES = ("coco_captions2014", "image_text_folder")
KNOWN = BUILT_IN + FROM_LOCAL_FILES


def scoring_params(scoring_config) -> dict:
  """Builder parameters from `config.scoring`: `scoring` settings and, unless () (dataset default), `scorers`."""
  if scoring_config is None:
    return {}
  fields = dict(scoring_config)
  names = scorers_lib.scorer_names(fields.pop("scorers", ()))
  known = {f.name for f in dataclasses.fields(scorers_lib.ScoringSettings)}
  unknown = sorted(set(fields) - known)
  if unknown:
    raise UserError(f"config.scoring has unknown fields {unknown}; its fields are scorers and "
                     f"{', '.join(sorted(known))} (see configs/default.py).")
  params = {"scoring": scorers_lib.ScoringSettings(**fields)}
  if names:
    params["scorers"] = tuple(names)
  return params


def _synthetic_builder(data_config, num_blocks: int, data_dir: str, scoring: dict):
  params = {**dict(data_config.synthetic), **scoring, "num_blocks": num_blocks}
  return synthetic_shapes.SyntheticShapes(
      data_dir=data_dir, config=synthetic_shapes.synthetic_shapes_config(**params))


def _local_params(data_config, key: str, name: str, num_blocks: int) -> dict:
  """The builder parameters in config.data.<key>, which must name the local root folder."""
  if key not in data_config:
    raise UserError(f"config.data.{key} is missing; {name} needs its builder parameters there "
                     "(see configs/default.py).")
  params = dict(data_config[key])
  if not params.get("root"):
    raise UserError(f"config.data.name={name!r} is built from local files, but config.data.{key}.root is "
                     f"empty; set --config.data.{key}.root=/path/to/{key}.")
  params["num_blocks"] = num_blocks
  return params


def _coco_builder(data_config, num_blocks: int, data_dir: str, scoring: dict):
  params = {**_local_params(data_config, "coco", "coco_captions2014", num_blocks), **scoring}
  return coco_captions.CocoCaptions2014(data_dir=data_dir, config=coco_captions.coco_captions_config(**params))


def _folder_builder(data_config, num_blocks: int, data_dir: str, scoring: dict):
  params = {**_local_params(data_config, "folder", "image_text_folder", num_blocks), **scoring}
  return image_text_folder.ImageTextFolder(
      data_dir=data_dir, config=image_text_folder.image_text_folder_config(**params))


_BUILDERS = {
    "synthetic_shapes": _synthetic_builder,
    "coco_captions2014": _coco_builder,
    "image_text_folder": _folder_builder,
}


def get_builder(data_config, num_blocks: int, scoring_config=None, *,
                progress: bool = False) -> tfds.core.DatasetBuilder:
  """The prepared builder for `config.data` scored as `config.scoring`, building it on first use if auto_prepare.

  scoring_config None means the default scoring (the dataset's default scorers);
  pass `config.scoring` so that a build with other scorers is found. `progress`: show
  TFDS's progress bars while building (`python -m preprocess`); a first use during
  training (seconds for synthetic_shapes) prints one line instead.
  """
  name = data_config.name
  if name not in KNOWN:
    raise UserError(
        f"unknown dataset config.data.name={name!r}; known datasets: {', '.join(KNOWN)}. "
        "Fix the name, e.g. --config.data.name=synthetic_shapes.")
  data_dir = os.path.abspath(os.path.expanduser(data_config.data_dir))
  auto = bool(data_config.auto_prepare)
  if not os.path.isdir(data_dir) and not auto:
    raise UserError(
        f"data directory config.data.data_dir={data_config.data_dir!r} ({data_dir}) does not exist. "
        f"Build {name} there with `python -m preprocess --config=<your config and overrides> "
        f"--data_dir={data_dir}`, "
        "or point --config.data.data_dir at the folder where it was built.")
  builder = _BUILDERS[name](data_config, num_blocks, data_dir, scoring_params(scoring_config))
  if not builder.is_prepared():
    if not auto:
      raise UserError(
          f"{name} ({builder.builder_config.name}) is not built in "
          f"{data_dir}. Build it with `python -m preprocess --config=<your config and overrides> "
          f"--data_dir={data_dir}` "
          "or set --config.data.auto_prepare=True.")
    if isinstance(builder, captioned_images.CaptionedImagesBuilder):
      builder.check_sources()  # every process: a wrong path must not leave the others waiting
    if jax.process_index() == 0:
      print(f"Preparing {name} in {builder.data_dir} (first use) ...", flush=True)
      tfds.display_progress_bar(progress)
      try:
        builder.download_and_prepare()
      finally:
        tfds.enable_progress_bar()
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices("prepare_dataset")
      # The other processes made their builder before the shards existed, and it keeps the empty
      # dataset info it read then: a new one reads the finished build.
      builder = _BUILDERS[name](data_config, num_blocks, data_dir, scoring_params(scoring_config))
  return builder


def check_curriculum_fields(builder: tfds.core.DatasetBuilder, scorer: str, num_blocks: int) -> None:
  """The shards must carry difficulty/<scorer> and block/<scorer> with K blocks (not the online "learned")."""
  available = sorted(builder.info.features["difficulty"].keys())
  if scorer not in available and scorer != LEARNED:
    raise UserError(
        f"config.curriculum.scorer={scorer!r} was not computed for {builder.name}; the shards in "
        f"{builder.data_dir} carry: {', '.join(available)}. Pick one of those, or add the scorer with "
        "`python -m preprocess`.")
  built_blocks = builder.info.metadata.get("num_blocks") if builder.info.metadata else None
  if built_blocks is not None and int(built_blocks) != num_blocks:
    raise UserError(
        f"config.curriculum.num_blocks={num_blocks} but {builder.name} in {builder.data_dir} was built "
        f"with {built_blocks} blocks; set --config.curriculum.num_blocks={built_blocks} or rebuild.")
