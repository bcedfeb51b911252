"""How well each difficulty scorer orders the synthetic set like its ground truth.

  python benchmarks/scorer_correlations.py [--scorers=caption_length,noun_count,knn_text]
      [--num_train=8000] [--teacher=exp/NAME] [--knn_k=10]

Generates the default synthetic_shapes training split (no TFDS build), scores it
with the scorers preprocessing runs (`scorers.make_scorers`, `fit_scorers`,
`score_split`) and prints Spearman's rho of every scorer with the generator's
`complexity`, the ground truth the curriculum ablation compares scorers against.
Teacher scorers (knn_image, misalignment, distillation) need --teacher.
"""

import argparse
import time

import numpy as np

from cmccl_jax.curriculum import analysis
from cmccl_jax.data import difficulty, shapes_scene
from cmccl_jax.scoring import scorers


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--scorers", default="caption_length,noun_count,knn_text",
                      help="comma-separated scorer names")
  parser.add_argument("--num_train", type=int, default=8000)
  parser.add_argument("--teacher", default="", help="dual-encoder experiment dir for the teacher scorers")
  parser.add_argument("--teacher_step", type=int, default=-1)
  parser.add_argument("--student_step", type=int, default=0)
  parser.add_argument("--knn_k", type=int, default=10)
  parser.add_argument("--batch_size", type=int, default=256)
  args = parser.parse_args()

  names = difficulty.check_scorer_names(difficulty.scorer_names(args.scorers))
  settings = difficulty.ScoringSettings(
      teacher=args.teacher, teacher_step=args.teacher_step, student_step=args.student_step, knn_k=args.knn_k,
      combined=tuple(n for n in names if n != "combined"), batch_size=args.batch_size).resolved(names)

  def examples():
    for index in range(args.num_train):
      yield shapes_scene.make_example(0, "train", index, image_size=32, max_objects=4, num_captions=5,
                                      corrupt_fraction=0.0, num_examples=args.num_train)

  complexity = np.asarray([ex["complexity"] for ex in examples()], np.float32)
  rows = []
  for name in names:
    if name == "combined":
      continue
    t0 = time.perf_counter()
    fitted = scorers.fit_scorers(scorers.make_scorers([name], settings),
                                 lambda: scorers.batched(examples(), args.batch_size))
    scores = scorers.score_split(examples(), fitted, args.batch_size)[name]
    rows.append((name, scores, time.perf_counter() - t0))
  if "combined" in names:
    combined = scorers.RankAverage([n for n, _, _ in rows]).combine({n: s for n, s, _ in rows})
    rows.append(("combined", combined, 0.0))

  print(f"Spearman rho with synthetic `complexity`, default synthetic_shapes train split ({args.num_train} "
        f"examples{', teacher ' + settings.teacher + '@' + str(settings.teacher_step) if args.teacher else ''})")
  print(f"{'scorer':<16}{'rho':>8}{'seconds':>10}   distinct scores")
  for name, scores, seconds in rows:
    print(f"{name:<16}{analysis.spearman(scores, complexity):>8.3f}{seconds:>10.1f}   {len(np.unique(scores))}")


if __name__ == "__main__":
  main()
