"""A perfect oracle on a synthetic_shapes test split, scored by the project's own evaluation code.

  python -m cmccl_jax.experiments.oracle [--config=configs/X.py] [--draws=20] [--out=FILE.md]

The oracle's similarity is 1 for every (image, caption) the caption is true of and
0 otherwise, plus noise below 0.5 that orders the true items at random: it knows
what is true but, like any model, cannot tell which true image was the paired one.
It must score 100 on every semantic metric, and on each paired metric the stated
ceiling (`retrieval.paired_ceiling`) up to the spread over tie orders.
"""

import numpy as np
import tensorflow_datasets as tfds
from absl import flags
from ml_collections import config_flags

from cmccl_jax import cli
from cmccl_jax.errors import UserError
from cmccl_jax.evaluation.retrieval import retrieval_metrics

METRICS = ("R@1", "R@5", "R@10", "mAP", "R-precision")


def split_captions(builder, split: str) -> tuple[np.ndarray, list[str], np.ndarray]:
  """(ids, captions, caption_to_image) of `split` in the evaluator's order (images by position)."""
  ds = builder.as_dataset(split=split, shuffle_files=False, decoders={"image": tfds.decode.SkipDecoding()})
  ids, texts, owners = [], [], []
  for n, example in enumerate(ds.as_numpy_iterator()):
    ids.append(example["id"])
    texts += [t.decode("utf-8") for t in example["captions"]]
    owners += [n] * len(example["captions"])
  return np.asarray(ids), texts, np.asarray(owners)


def oracle_scores(relevance: np.ndarray, caption_to_image: np.ndarray, draws: int, seed: int = 0) -> list[dict]:
  rng = np.random.default_rng(seed)
  return [retrieval_metrics(relevance + 0.5 * rng.random(relevance.shape, np.float32), caption_to_image,
                            relevance=relevance) for _ in range(draws)]


def markdown(runs: list[dict], name: str, split: str) -> str:
  lines = [f"# A perfect oracle on {name}, {split} split", "",
           f"{len(runs)} random tie orders; paired: mean ± std over them.", "",
           "| metric | semantic (all true items) | paired (own captions only) | stated paired ceiling |",
           "|---|---|---|---|"]
  for d in ("t2i", "i2t"):
    for m in METRICS:
      paired = np.array([r[f"{d}/{m}"] for r in runs])
      semantic = np.array([r[f"semantic/{d}/{m}"] for r in runs])
      lines.append(f"| {d} {m} | {semantic.mean():.2f} | {paired.mean():.2f} ± {paired.std():.2f} | "
                   f"{runs[0][f'ceiling/{d}/{m}']:.2f} |")
  return "\n".join(lines) + "\n"


def main(argv) -> None:
  del argv
  cli.hide_gpus_from_tf()
  from cmccl_jax.data import datasets
  f = flags.FLAGS
  config = f.config
  builder = datasets.get_builder(config.data)
  if not hasattr(builder, "relevance"):
    raise UserError(f"config.data.name={config.data.name!r} does not know which images a caption is true of; "
                    "the oracle needs synthetic_shapes")
  ids, texts, owners = split_captions(builder, f.split)
  runs = oracle_scores(builder.relevance(f.split, ids, texts), owners, f.draws)
  text = markdown(runs, f"synthetic_shapes ({builder.builder_config.name})", f.split)
  print(text, flush=True)
  if f.out:
    with open(f.out, "w") as out:
      out.write(text)


def _define_flags() -> None:
  """Flags of the command only: the functions above are also imported (tests, other commands)."""
  config_flags.DEFINE_config_file("config", "configs/default.py", "Config naming the dataset.", lock_config=True)
  flags.DEFINE_integer("draws", 20, "Random tie orders of the true items to average over.")
  flags.DEFINE_string("split", "test", "The split to score.")
  flags.DEFINE_string("out", "", "Also write the table to this markdown file.")


if __name__ == "__main__":
  _define_flags()
  cli.run(main)
