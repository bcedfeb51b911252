"""Finds and prepares the TFDS image/caption dataset a config names (its scores: data/difficulty.py).

Errors here are the ones a user hits first (a typo in the dataset name, a wrong
data_dir), so each names the bad value and the fix.
"""

import contextlib
import fcntl
import glob
import os
import shutil
from typing import Callable

import jax
import tensorflow_datasets as tfds
from jax.experimental import multihost_utils

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


def _synthetic_builder(data_config, data_dir: str):
  params = dict(data_config.synthetic)
  return synthetic_shapes.SyntheticShapes(
      data_dir=data_dir, config=synthetic_shapes.synthetic_shapes_config(**params))


def _local_params(data_config, key: str, name: str) -> dict:
  """The builder parameters in config.data.<key>, which must name the local root folder."""
  if key not in data_config:
    raise UserError(f"config.data.{key} is missing; {name} needs its builder parameters there "
                     "(see configs/default.py).")
  params = dict(data_config[key])
  if not params.get("root"):
    raise UserError(f"config.data.name={name!r} is built from local files, but config.data.{key}.root is "
                     f"empty; set --config.data.{key}.root=/path/to/{key}.")
  return params


def _coco_builder(data_config, data_dir: str):
  params = _local_params(data_config, "coco", "coco_captions2014")
  return coco_captions.CocoCaptions2014(data_dir=data_dir, config=coco_captions.coco_captions_config(**params))


def _folder_builder(data_config, data_dir: str):
  params = _local_params(data_config, "folder", "image_text_folder")
  return image_text_folder.ImageTextFolder(
      data_dir=data_dir, config=image_text_folder.image_text_folder_config(**params))


_BUILDERS = {
    "synthetic_shapes": _synthetic_builder,
    "coco_captions2014": _coco_builder,
    "image_text_folder": _folder_builder,
}


def get_builder(data_config, *, progress: bool = False) -> tfds.core.DatasetBuilder:
  """The prepared image/caption builder for `config.data`, building it on first use if auto_prepare.

  `progress`: show TFDS's progress bars while building (`python -m preprocess`); a
  first use during training (seconds for synthetic_shapes) prints one line instead.
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
  builder = _BUILDERS[name](data_config, data_dir)
  if not builder.is_prepared():
    if not auto:
      raise UserError(
          f"{name} ({builder.builder_config.name}) is not built in "
          f"{data_dir}. Build it with `python -m preprocess --config=<your config and overrides> "
          f"--data_dir={data_dir}` "
          "or set --config.data.auto_prepare=True.")
    if isinstance(builder, captioned_images.CaptionedImagesBuilder):
      builder.check_sources()  # every process: a wrong path must not leave the others waiting
    make = lambda: _BUILDERS[name](data_config, data_dir)
    builder = build_on_first_process(lambda: make().download_and_prepare(), make,
                                     f"Preparing {name} in {builder.data_dir} (first use) ...", progress,
                                     data_dir=data_dir)
  return builder


BUILD_LOCK = ".cmccl_build.lock"


@contextlib.contextmanager
def exclusive_builds(data_dir: str):
  """Holds data_dir's build lock (one build at a time, across runs) and removes what killed builds left.

  TFDS writes a build into `incomplete.XXXXXX_<version>/` beside its final folder and
  renames it when done; a killed build leaves that folder behind for good. Under the
  lock no other build is running, so every such folder is a leftover.
  """
  os.makedirs(data_dir, exist_ok=True)
  with open(os.path.join(data_dir, BUILD_LOCK), "a+") as lock:
    try:
      fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
      print(f"waiting for another run's build in {data_dir} to finish ...", flush=True)
      fcntl.flock(lock, fcntl.LOCK_EX)
    for leftover in sorted(glob.glob(os.path.join(data_dir, "*", "*", "incomplete.*"))):
      print(f"removing {leftover}, an unfinished build a killed run left", flush=True)
      shutil.rmtree(leftover, ignore_errors=True)
    yield


def build_on_first_process(build: Callable[[], None], reopen: Callable[[], tfds.core.DatasetBuilder],
                           message: str, progress: bool = False, *, data_dir: str) -> tfds.core.DatasetBuilder:
  """Runs `build` (printing `message`) on process 0 while the others wait; returns `reopen()`.

  Builds into `data_dir` are one at a time (`exclusive_builds`). A builder made
  before its shards existed keeps the empty dataset info it read then, so every
  process reads the finished build through a new one.
  """
  if jax.process_index() == 0:
    with exclusive_builds(data_dir):
      print(message, flush=True)
      tfds.display_progress_bar(progress)
      try:
        build()
      finally:
        tfds.enable_progress_bar()
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(f"build {message}")
  return reopen()
