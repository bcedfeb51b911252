"""The curriculum dashboard: per-block scalars, difficulty histograms of visible examples, hardest/easiest now."""

import ml_collections
import numpy as np

from cmccl_jax.curriculum.curriculum import Curriculum
from cmccl_jax.tasks.dual_encoder import dashboard


class FakeWriter:
  def __init__(self):
    self.calls = []

  def write_histograms(self, step, hists):
    self.calls.append(("hist", step, hists))

  def write_images(self, step, images):
    self.calls.append(("images", step, images))

  def write_texts(self, step, texts):
    self.calls.append(("texts", step, texts))


class FakeTokenizer:
  def decode(self, ids):
    return [f"caption {int(row[0])}" for row in ids]


def _curriculum():
  return Curriculum.from_config(ml_collections.ConfigDict(dict(
      num_blocks=3, pacing="phases", phase_steps=(10, 10), order="easy_first", scorer="ground_truth")), 30)


def test_scalars_spread_per_block_values_and_skip_per_example_arrays():
  metrics = {"loss": np.float32(2.0), "block_counts": np.asarray([3, 0, 1]),
             "block_loss": np.asarray([1.5, 0.0, 4.0]), "per_example_loss": np.ones(4), "visible": np.ones(4, bool),
             "difficulty": np.ones(4), "predicted_difficulty": np.ones(4)}
  out = dashboard.scalars(metrics, 3)
  assert out == {"loss": 2.0, "block_count/0": 3.0, "block_count/1": 0.0, "block_count/2": 1.0,
                 "block_loss/0": 1.5, "block_loss/2": 4.0}  # no loss for a block with no example


def test_histograms_hold_only_visible_examples_per_block():
  h = dashboard.DifficultyHistograms(_curriculum())
  batch = {"block": np.asarray([0, 1, 2, 0]), "difficulty": np.asarray([0.1, 0.5, 0.9, 0.2], np.float32)}
  h.add(0, batch)    # phase 0: block 0 only
  h.add(15, batch)   # phase 1: blocks 0, 1
  writer = FakeWriter()
  h.write(writer, 20)
  (_, step, hists), = writer.calls
  assert step == 20 and sorted(hists) == ["curriculum/difficulty_block0", "curriculum/difficulty_block1"]
  np.testing.assert_allclose(sorted(hists["curriculum/difficulty_block0"]), [0.1, 0.1, 0.2, 0.2])
  np.testing.assert_allclose(hists["curriculum/difficulty_block1"], [0.5])
  h.write(writer, 30)
  assert len(writer.calls) == 1  # emptied after each write


def test_hardest_and_easiest_now_come_from_this_process_rows_and_skip_masked():
  batch = {"image": np.arange(3 * 4 * 4 * 3, dtype=np.uint8).reshape(3, 4, 4, 3),
           "tokens": np.asarray([[10], [11], [12]]), "block": np.asarray([0, 1, 2]),
           "difficulty": np.asarray([0.1, 0.2, 0.3], np.float32)}
  # Global arrays of 6 rows; this process owns rows 3..5. Row 5 is masked despite its huge loss.
  metrics = {"per_example_loss": np.asarray([9, 9, 9, 1.0, 2.0, 50.0]),
             "visible": np.asarray([1, 1, 1, 1, 1, 0], bool)}
  writer = FakeWriter()
  dashboard.write_hardest_now(writer, 7, metrics, batch, FakeTokenizer(), offset=3, count=8)
  texts = {name: text for kind, _, d in writer.calls if kind == "texts" for name, text in d.items()}
  hardest = texts["curriculum/hardest_now"].split("\n\n")
  easiest = texts["curriculum/easiest_now"].split("\n\n")
  assert len(hardest) == 2 and "caption 11" in hardest[0] and "loss 2.000" in hardest[0]
  assert "caption 10" in easiest[0] and "caption 12" not in texts["curriculum/hardest_now"]
  images = [d for kind, _, d in writer.calls if kind == "images"]
  assert images[0]["curriculum/hardest_now"].shape == (1, 6, 12, 3)  # 2 images side by side, framed


def test_i2mcl_weights_make_histograms_and_the_lowest_and_highest_weight_examples():
  batch = {"image": np.zeros((3, 4, 4, 3), np.uint8), "tokens": np.asarray([[10], [11], [12]]),
           "block": np.asarray([0, 1, 2]), "difficulty": np.asarray([0.1, 0.2, 0.3], np.float32)}
  # The highest loss has the lowest self-paced weight; row 2 is masked (weight 0, not "lowest").
  metrics = {"per_example_loss": np.asarray([1.0, 3.0, 9.0]), "visible": np.asarray([1, 1, 0], bool),
             "i2mcl/weights/task": np.asarray([0.9, 0.2, 0.0]), "i2mcl/weights/distill/image": np.ones(3),
             "loss": np.float32(1.0), "block_counts": np.asarray([1, 1, 1]), "block_loss": np.ones(3)}
  hists = dashboard.weight_histograms(metrics)
  assert sorted(hists) == ["i2mcl/weights/distill/image", "i2mcl/weights/task"]
  np.testing.assert_allclose(hists["i2mcl/weights/task"], [0.9, 0.2])
  assert not any(k.startswith("i2mcl/weights/") for k in dashboard.scalars(metrics, 3))
  writer = FakeWriter()
  dashboard.write_hardest_now(writer, 7, metrics, batch, FakeTokenizer(), offset=0, count=8)
  texts = {name: text for kind, _, d in writer.calls if kind == "texts" for name, text in d.items()}
  lowest = texts["i2mcl/lowest_weight_now"].split("\n\n")
  highest = texts["i2mcl/highest_weight_now"].split("\n\n")
  assert len(lowest) == 2 and "caption 11" in lowest[0] and "weight 0.200" in lowest[0] and "loss 3.000" in lowest[0]
  assert "caption 10" in highest[0] and "caption 12" not in texts["i2mcl/lowest_weight_now"]
  assert "weight 0.900" in texts["curriculum/hardest_now"]  # the loss extremes show the weight too


class FakeScalarWriter(FakeWriter):
  def write_scalars(self, step, scalars):
    self.calls.append(("scalars", step, scalars))


def test_difficulty_ranking_shows_the_heads_hardest_and_easiest_eval_examples():
  report = {"predicted": np.asarray([0.5, 2.0, 1.0, 0.1]), "tokens": np.asarray([[20], [21], [22], [23]]),
            "spearman": {"caption_length": 0.25}}
  images_at = lambda rows: np.stack([np.full((4, 4, 3), 10 * r, np.uint8) for r in rows])
  writer = FakeScalarWriter()
  dashboard.write_difficulty_ranking(writer, 5, report, images_at, FakeTokenizer(), count=2)
  texts = {n: t for kind, _, d in writer.calls if kind == "texts" for n, t in d.items()}
  assert texts["difficulty_head/hardest_eval"].index("caption 21") < texts["difficulty_head/hardest_eval"].index(
      "caption 22")
  assert "caption 23" in texts["difficulty_head/easiest_eval"] and "caption 21" not in texts[
      "difficulty_head/easiest_eval"]
  assert ("scalars", 5, {"difficulty_head/eval_spearman_caption_length": 0.25}) in writer.calls


def test_evaluator_reports_the_heads_predictions_over_the_split(tiny_config):
  from cmccl_jax.tasks.dual_encoder.task import DualEncoderTask
  task = DualEncoderTask(tiny_config)
  (evaluator, _), = task.evaluators().values()
  scores = evaluator(task.init_state())
  report = evaluator.last_difficulty
  assert scores["t2i/R@1"] >= 0 and report["predicted"].shape == (24,)  # the tiny test split
  assert {"caption_length", "ground_truth"} <= set(report["spearman"])
  assert all(-1 <= rho <= 1 for rho in report["spearman"].values())
  images = evaluator.images([23, 0])
  assert images.shape == (2, 32, 32, 3) and images.dtype == np.uint8
