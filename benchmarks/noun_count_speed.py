"""Captions per second of the noun_count scorer on this machine.

  python benchmarks/noun_count_speed.py [--num_captions=5000] [--batch_size=1024]

Two numbers: the tagger alone on distinct captions (what a dataset of unique
captions, such as COCO, gets) and NounCount.score on the default synthetic
stream, where repeated captions are served from its cache. The goal is >= 1000
captions/s for the tagger alone.
"""

import argparse
import time

from cmccl_jax.scoring import scorers
from cmccl_jax.data import shapes_scene


def _synthetic_example(index: int) -> dict:
  return shapes_scene.make_example(0, "train", index, image_size=32, max_objects=4, num_captions=5,
                                   corrupt_fraction=0.0, num_examples=8000)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--num_captions", type=int, default=5000, help="distinct captions to tag")
  parser.add_argument("--batch_size", type=int, default=1024, help="spaCy's nlp.pipe batch size")
  args = parser.parse_args()

  t0 = time.perf_counter()
  tagger = scorers.load_tagger()
  print(f"tagger {scorers.NOUN_TAGGER} with {tagger.pipe_names} loaded in {time.perf_counter() - t0:.1f} s")

  distinct: dict[str, None] = {}
  index = 0
  while len(distinct) < args.num_captions:
    distinct.update(dict.fromkeys(_synthetic_example(index)["captions"]))
    index += 1
  captions = list(distinct)[:args.num_captions]
  scorers.count_nouns(captions[:64], tagger)  # warm-up
  t0 = time.perf_counter()
  scorers.count_nouns(captions, tagger, batch_size=args.batch_size)
  seconds = time.perf_counter() - t0
  print(f"tagger alone: {len(captions)} distinct captions in {seconds:.2f} s = "
        f"{len(captions) / seconds:.0f} captions/s")

  stream = [_synthetic_example(i) for i in range(2000)]
  scorer = scorers.NounCount(tagger)
  t0 = time.perf_counter()
  for batch in scorers.batched(stream, 256):
    scorer.score(batch)
  seconds = time.perf_counter() - t0
  total = sum(len(ex["captions"]) for ex in stream)
  print(f"NounCount.score, synthetic stream with its cache: {total} captions in {seconds:.2f} s = "
        f"{total / seconds:.0f} captions/s")


if __name__ == "__main__":
  main()
