"""Builds a dataset into TFDS shards with its difficulty fields.

  python -m preprocess [--config=configs/default.py] [--dataset=NAME] [--data_dir=DIR] [--config.x=y]

  python -m preprocess --dataset=coco_captions2014 --config.data.coco.root=/data/coco \\
      [--config.data.coco.karpathy_split=dataset_coco.json]
  python -m preprocess --dataset=image_text_folder --config.data.folder.root=/data/mine

Builds what `config.data` describes (dataset, data_dir, builder parameters) with
progress bars, then prints a summary: examples per split, what was skipped per
split and reason, the scoring settings (teacher checkpoint, k, ...), and per
scorer the block edges and block sizes. Which scorers run is `config.scoring`:

  python -m preprocess --config.scoring.scorers=caption_length,noun_count,knn_text,combined
  python -m preprocess --config.scoring.scorers=noun_count,knn_image,misalignment \\
      --config.scoring.teacher=exp/demo
"""

import os

from absl import app, flags, logging
from ml_collections import config_flags

from cmccl_jax import cli

_CONFIG = config_flags.DEFINE_config_file("config", "configs/default.py", "Config whose `data` to build.",
                                          lock_config=True)
_DATASET = flags.DEFINE_string("dataset", None, "Overrides config.data.name.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Overrides config.data.data_dir.")


def _block_sizes_from_shards(builder, num_blocks: int) -> dict[str, dict[str, list[int]]]:
  """{scorer: {split: sizes}} counted from the shards, for builds that did not record them."""
  import numpy as np
  import tensorflow_datasets as tfds
  sizes: dict[str, dict[str, list[int]]] = {}
  for split in builder.info.splits:
    ds = builder.as_dataset(split=split, decoders={"image": tfds.decode.SkipDecoding()})
    for blocks in ds.map(lambda ex: ex["block"]).batch(4096).as_numpy_iterator():
      for name, values in blocks.items():
        counts = sizes.setdefault(name, {}).get(split, 0) + np.bincount(values, minlength=num_blocks)
        sizes[name][split] = counts
  return {name: {split: c.tolist() for split, c in per_split.items()} for name, per_split in sizes.items()}


def summary(builder, num_blocks: int) -> list[str]:
  """The lines printed after a build: examples, skips and blocks per split."""
  from cmccl_jax.data import captioned_images
  metadata = dict(builder.info.metadata or {})
  lines = [f"{builder.name} ({builder.builder_config.name}) in {builder.data_dir}"]
  written = {split: info.num_examples for split, info in builder.info.splits.items()}
  for split in metadata.get("num_examples") or written:
    lines.append(f"  {split}: {written[split]} examples" if split in written else
                 f"  {split}: 0 examples (empty, not written)")
  if "skipped" in metadata:
    lines.append("  skipped:")
    reasons = set()
    for split, counts in metadata["skipped"].items():
      reasons.update(counts)
      where = "not tied to a split" if split == captioned_images.UNASSIGNED else split
      text = ", ".join(f"{reason} {n}" for reason, n in counts.items()) or "nothing"
      lines.append(f"    {where}: {text}")
    for reason in sorted(reasons):
      lines.append(f"      ({reason}: {captioned_images.SKIP_REASONS.get(reason, '?')})")
  for setting, value in (metadata.get("scoring") or {}).items():
    lines.append(f"  scoring {setting}: {value}")
  edges = metadata.get("block_edges", {})
  block_sizes = metadata.get("block_sizes") or _block_sizes_from_shards(builder, num_blocks)
  for name, per_split in block_sizes.items():
    lines.append(f"  block/{name}: edges {[round(float(e), 3) for e in edges.get(name, [])]}")
    for split, sizes in per_split.items():
      lines.append(f"    {split} block sizes {list(sizes)}")
  return lines


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.ERROR)
  cli.hide_gpus_from_tf()
  # After TF: its start-up notices are held back there, and datasets imports it.
  from cmccl_jax.data import datasets

  config = _CONFIG.value
  with config.unlocked():
    if _DATASET.value:
      config.data.name = _DATASET.value
    if _DATA_DIR.value:
      config.data.data_dir = _DATA_DIR.value
    config.data.auto_prepare = True
  os.makedirs(os.path.expanduser(config.data.data_dir), exist_ok=True)
  builder = datasets.get_builder(config.data, int(config.curriculum.num_blocks), config.scoring, progress=True)
  print("\n".join(summary(builder, int(config.curriculum.num_blocks))), flush=True)


if __name__ == "__main__":
  cli.run(main)
