"""Builds a dataset into TFDS shards with its difficulty fields.

  python -m preprocess [--config=configs/default.py] [--dataset=NAME] [--data_dir=DIR] [--config.x=y]

Builds what `config.data` describes (dataset, data_dir, builder parameters) and
prints a summary: examples per split and, per scorer, the block edges and sizes.
"""

import os

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", "configs/default.py", "Config whose `data` to build.",
                                          lock_config=True)
_DATASET = flags.DEFINE_string("dataset", None, "Overrides config.data.name.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Overrides config.data.data_dir.")


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.ERROR)
  import numpy as np
  import tensorflow as tf
  tf.config.set_visible_devices([], "GPU")
  from cmccl_jax.data import datasets

  config = _CONFIG.value
  with config.unlocked():
    if _DATASET.value:
      config.data.name = _DATASET.value
    if _DATA_DIR.value:
      config.data.data_dir = _DATA_DIR.value
    config.data.auto_prepare = True
  os.makedirs(os.path.expanduser(config.data.data_dir), exist_ok=True)
  builder = datasets.get_builder(config.data, int(config.curriculum.num_blocks))
  print(f"{builder.name} ({builder.builder_config.name}) in {builder.data_dir}")
  for split, info in builder.info.splits.items():
    print(f"  {split}: {info.num_examples} examples")
  edges = builder.info.metadata.get("block_edges", {}) if builder.info.metadata else {}
  train = builder.as_dataset(split="train").map(lambda ex: ex["block"])
  counts: dict[str, np.ndarray] = {}
  for blocks in train.batch(4096).as_numpy_iterator():
    for name, values in blocks.items():
      counts[name] = counts.get(name, 0) + np.bincount(values, minlength=int(config.curriculum.num_blocks))
  for name, c in counts.items():
    print(f"  block/{name}: train block sizes {c.tolist()}, edges {np.round(edges.get(name, []), 3).tolist()}")


if __name__ == "__main__":
  app.run(main)
