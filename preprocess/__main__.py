"""Builds a dataset into TFDS image/caption shards and scores it into id-keyed difficulty shards.

  python -m preprocess [--config=configs/default.py] [--dataset=NAME] [--data_dir=DIR] [--config.x=y]

  python -m preprocess --dataset=coco_captions2014 --config.data.coco.root=/data/coco \\
      [--config.data.coco.karpathy_split=dataset_coco.json]
  python -m preprocess --dataset=image_text_folder --config.data.folder.root=/data/mine

Builds what `config.data` describes (dataset, data_dir, builder parameters) with
progress bars, then every offline scorer a run of the config reads
(`config.scoring.scorers`, () = the dataset's default, and
`config.curriculum.scorer`), each into its own build beside the images. Builds that
exist are reused: adding a scorer or changing a teacher scores again and
re-encodes no image. Then it prints a summary: examples per split, what was
skipped per split and reason, and per scorer the settings that made its scores
and the blocks a run with `config.curriculum.num_blocks` would start from.

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


def summary(builder, run_difficulty, settings, built: list[str]) -> list[str]:
  """The lines printed after a build: examples and skips per split, then each scorer's settings and blocks.

  `settings`: the resolved `difficulty.ScoringSettings` the scores were found under.
  """
  import numpy as np
  from cmccl_jax.data import captioned_images, difficulty
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
    examples = metadata.get("skipped_examples") or {}
    for reason in sorted(reasons):
      lines.append(f"      ({reason}: {captioned_images.SKIP_REASONS.get(reason, '?')})")
      if examples.get(reason):
        lines.append(f"        e.g. {', '.join(examples[reason])}")
  table, curriculum = run_difficulty.table, run_difficulty.curriculum
  lines.append(f"difficulty scores ({'built now: ' + ', '.join(built) if built else 'all built before'}); "
               f"blocks for config.curriculum.num_blocks={curriculum.num_blocks}:")
  for name in table.scorers:
    score_build = difficulty.score_builder(builder, name, settings)
    described = dict(score_build.info.metadata or {}).get("settings") or {}
    lines.append(f"  {name} in {score_build.data_dir}" + (f" ({described})" if described else ""))
    blocks, edges = curriculum.blocks({s: table.columns[s][name] for s in table.ids}, table.ids)
    lines.append(f"    edges {[round(float(e), 3) for e in edges]}")
    for split, b in blocks.items():
      lines.append(f"    {split} block sizes {np.bincount(b, minlength=curriculum.num_blocks).tolist()}")
  return lines


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.ERROR)
  cli.hide_gpus_from_tf()
  # After TF: its start-up notices are held back there, and these modules import it.
  from cmccl_jax.curriculum.curriculum import Curriculum
  from cmccl_jax.data import datasets, difficulty, teacher_features
  from cmccl_jax.scoring import score_shards

  config = _CONFIG.value
  with config.unlocked():
    if _DATASET.value:
      config.data.name = _DATASET.value
    if _DATA_DIR.value:
      config.data.data_dir = _DATA_DIR.value
    config.data.auto_prepare = True
  os.makedirs(os.path.expanduser(config.data.data_dir), exist_ok=True)
  builder = datasets.get_builder(config.data, progress=True)
  built = score_shards.prepare_scores(config, builder, progress=True)
  features = score_shards.prepare_teacher_features(config, builder, progress=True)
  curriculum = Curriculum.from_config(config.curriculum, int(config.num_steps))
  run_difficulty = difficulty.load_run_difficulty(config, builder, curriculum)
  settings = difficulty.ScoringSettings.from_config(config.scoring).resolved(run_difficulty.table.scorers)
  print("\n".join(summary(builder, run_difficulty, settings, built)), flush=True)
  run_teachers = teacher_features.load_run_teachers(
      builder, teacher_features.resolve_teachers(config.curriculum.get("dynamic")))
  if run_teachers is not None:
    print(f"{run_teachers.describe()}; built now: {', '.join(features) or 'none'}", flush=True)


if __name__ == "__main__":
  cli.run(main)
