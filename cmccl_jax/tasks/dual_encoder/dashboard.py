"""The dual encoder's curriculum dashboard in TensorBoard (host side: its task calls these at log and eval steps).

Per log interval: the difficulty histogram of the visible examples of each block,
loss per block, visible fraction (from the step's metrics) and the difficulty
evaluator's rank correlations. At eval steps: the hardest examples of the current
batch (highest loss now) and the easiest, as images with their captions; and the
eval-split examples the difficulty head ranks hardest and easiest, with its
Spearman ρ against every offline scorer.
"""

import numpy as np

from cmccl_jax.curriculum import analysis
from cmccl_jax.summaries import grid_caption, image_grid

# Per-example arrays in the step's metrics: for the dashboard, not scalars.
PER_EXAMPLE = ("per_example_loss", "visible", "difficulty", "predicted_difficulty")
# I2MCL's per-example weights of each loss (i2mcl/weights/<loss>): histograms and the extremes of a batch.
WEIGHTS_PREFIX = "i2mcl/weights/"


def weight_histograms(metrics: dict) -> dict[str, np.ndarray]:
  """{i2mcl/weights/<loss>: the visible examples' weights} of a step's host metrics."""
  visible = np.asarray(metrics["visible"]).astype(bool)
  return {k: np.asarray(v)[visible] for k, v in metrics.items() if k.startswith(WEIGHTS_PREFIX)}


class DifficultyHistograms:
  """Collects the offline difficulty of the visible examples per block over a log interval."""

  def __init__(self, curriculum):
    self.curriculum = curriculum
    self.k = int(curriculum.num_blocks)
    self._values: list[list[np.ndarray]] = [[] for _ in range(self.k)]

  def add(self, step: int, batch: dict[str, np.ndarray]) -> None:
    """`step` is the state's step when the batch is used: the pacing the device mask applies."""
    if self.curriculum.learned:  # no offline difficulty in the batch to show
      return
    weights = self.curriculum.block_weights(step, np)
    block = np.clip(np.asarray(batch["block"]), 0, self.k - 1)
    visible = weights[block] > 0
    for b in range(self.k):
      self._values[b].append(np.asarray(batch["difficulty"])[visible & (block == b)])

  def write(self, writer, step: int) -> None:
    hists = {f"curriculum/difficulty_block{b}": np.concatenate(v) for b, v in enumerate(self._values)
             if v and sum(x.size for x in v)}
    if hists:
      writer.write_histograms(step, hists)
    self._values = [[] for _ in range(self.k)]


def scalars(metrics: dict, num_blocks: int) -> dict[str, float]:
  """The step's scalar metrics, with block_counts and block_loss spread into one scalar per block."""
  out = {k: float(v) for k, v in metrics.items()
         if k not in PER_EXAMPLE + ("block_counts", "block_loss") and not k.startswith(WEIGHTS_PREFIX)}
  counts = np.asarray(metrics["block_counts"])[:num_blocks]
  for b, count in enumerate(counts):
    out[f"block_count/{b}"] = float(count)
  if "block_loss" in metrics:
    for b, value in enumerate(np.asarray(metrics["block_loss"])[:num_blocks]):
      if counts[b] > 0:
        out[f"block_loss/{b}"] = float(value)
  if "predicted_difficulty" in metrics:
    visible = np.asarray(metrics["visible"]).astype(bool)
    predicted = np.asarray(metrics["predicted_difficulty"])[visible]
    for name, key in (("spearman_loss", "per_example_loss"), ("spearman_offline", "difficulty")):
      other = np.asarray(metrics[key])[visible]
      # No offline difficulty (the "learned" scorer) or one value only: no ranking to correlate with.
      if other.size >= 2 and np.ptp(other) > 0 and np.ptp(predicted) > 0:
        out[f"difficulty_head/{name}"] = float(analysis.spearman(predicted, other))
  return out


def write_hardest_now(writer, step: int, metrics: dict, batch: dict[str, np.ndarray], tokenizer,
                      offset: int, count: int = 8) -> None:
  """The visible examples of this process's batch with the highest and lowest loss, with their captions;
  with I2MCL's self-paced weights also those of the lowest and highest task weight (its Table 3).

  `offset` is where this process's rows sit in the global per-example arrays.
  """
  _write_extremes(writer, step, metrics, batch, tokenizer, offset, count)
  weights = metrics.get(WEIGHTS_PREFIX + "task")
  if weights is not None:
    _write_extremes(writer, step, metrics, batch, tokenizer, offset, count, key=WEIGHTS_PREFIX + "task",
                    names=("i2mcl/highest_weight_now", "i2mcl/lowest_weight_now"))


def _write_extremes(writer, step: int, metrics: dict, batch: dict[str, np.ndarray], tokenizer, offset: int,
                    count: int, key: str = "per_example_loss",
                    names: tuple[str, str] = ("curriculum/hardest_now", "curriculum/easiest_now")) -> None:
  """The visible examples with the highest and the lowest `key` (names[0] and names[1]), with their captions."""
  n = len(batch["image"])
  order_by = np.asarray(metrics[key])[offset:offset + n]
  loss = np.asarray(metrics["per_example_loss"])[offset:offset + n]
  weights = metrics.get(WEIGHTS_PREFIX + "task")
  weights = None if weights is None else np.asarray(weights)[offset:offset + n]
  visible = np.asarray(metrics["visible"])[offset:offset + n].astype(bool)
  predicted = metrics.get("predicted_difficulty")
  predicted = None if predicted is None else np.asarray(predicted)[offset:offset + n]
  shown = min(count, int(visible.sum()))
  if not shown:
    return
  highest = np.argsort(np.where(visible, -order_by, np.inf), kind="stable")[:shown]
  lowest = np.argsort(np.where(visible, order_by, np.inf), kind="stable")[:shown]
  for name, rows in ((names[0], highest), (names[1], lowest)):
    captions = tokenizer.decode(np.asarray(batch["tokens"])[rows])
    cols = int(np.ceil(np.sqrt(len(rows))))
    lines = []
    for i, (row, text) in enumerate(zip(rows, captions)):
      extra = "" if predicted is None else f", predicted {predicted[row]:.3f}"
      extra += "" if weights is None else f", weight {weights[row]:.3f}"
      lines.append(grid_caption(i, cols, text) + f" loss {loss[row]:.3f}{extra}, block {int(batch['block'][row])}, "
                   f"difficulty {float(batch['difficulty'][row]):.3f}")
    writer.write_images(step, {name: image_grid(np.asarray(batch["image"])[rows])[None]})
    writer.write_texts(step, {name: "\n\n".join(lines)})


def write_difficulty_ranking(writer, step: int, report: dict, images_at, tokenizer, count: int = 8) -> None:
  """What the difficulty head ranks hardest and easiest on the eval split (images with their first
  caption and prediction), and its Spearman ρ with each offline scorer there.

  `images_at(indices)` returns the split's eval images at those positions.
  """
  predicted = np.asarray(report["predicted"])
  writer.write_scalars(step, {f"difficulty_head/eval_spearman_{name}": rho
                              for name, rho in report["spearman"].items()})
  shown = min(count, len(predicted))
  for name, rows in (("hardest", np.argsort(-predicted, kind="stable")[:shown]),
                     ("easiest", np.argsort(predicted, kind="stable")[:shown])):
    captions = tokenizer.decode(np.asarray(report["tokens"])[rows])
    cols = int(np.ceil(np.sqrt(shown)))
    writer.write_images(step, {f"difficulty_head/{name}_eval": image_grid(images_at(rows))[None]})
    writer.write_texts(step, {f"difficulty_head/{name}_eval": "\n\n".join(
        grid_caption(i, cols, text) + f" predicted {predicted[row]:.3f}"
        for i, (row, text) in enumerate(zip(rows, captions)))})
