import numpy as np
import pytest

from cmccl_jax.curriculum import scorers


def _example(captions=("a red circle",), complexity=1.0):
  return {"captions": list(captions), "complexity": complexity}


def test_caption_length_is_mean_words_per_caption():
  examples = [
      _example(["a red circle", "a small red circle left of a blue square"]),  # (3 + 9) / 2
      _example(["three shapes: a red circle, a blue square and a green triangle"]),  # 12
      _example(["two red shapes and one blue shape", "one circle", "a cyan cross"]),  # (7 + 2 + 3) / 3
  ]
  scores = scorers.get_scorer("caption_length").score(examples)
  assert scores.dtype == np.float32
  np.testing.assert_allclose(scores, [6.0, 12.0, 4.0])


def test_ground_truth_is_the_complexity_field():
  scores = scorers.get_scorer("ground_truth").score([_example(complexity=c) for c in (1.25, 3.5, 2.0)])
  assert scores.dtype == np.float32
  np.testing.assert_array_equal(scores, [1.25, 3.5, 2.0])


def test_registered_scorers_follow_the_protocol():
  for name in scorers.SCORERS:
    scorer = scorers.get_scorer(name)
    assert isinstance(scorer, scorers.Scorer) and scorer.name == name


def test_unknown_scorer_names_the_known_ones():
  with pytest.raises(ValueError) as info:
    scorers.get_scorer("foo")
  assert str(info.value) == "unknown scorer 'foo'; known scorers: caption_length, ground_truth"


# ---------------------------------------------------------------- quantile blocks


def test_quantile_edges_and_blocks_hand_worked():
  scores = np.arange(8, dtype=np.float32)
  edges = scorers.quantile_edges(scores, 4)
  np.testing.assert_allclose(edges, [1.75, 3.5, 5.25])  # (n - 1) q: 1.75, 3.5, 5.25
  np.testing.assert_array_equal(scorers.assign_blocks(scores, edges), [0, 0, 1, 1, 2, 2, 3, 3])
  assert scorers.assign_blocks(scores, edges).dtype == np.int32


def test_blocks_are_half_open_intervals():
  edges = np.asarray([1.0, 2.0], np.float32)
  np.testing.assert_array_equal(scorers.assign_blocks([0.999, 1.0, 1.5, 2.0, 7.0], edges), [0, 1, 1, 2, 2])


def test_equal_scores_share_a_block():
  scores = np.asarray([0, 1, 1, 1, 1, 1, 1, 2], np.float32)
  edges = scorers.quantile_edges(scores, 2)
  assert edges.tolist() == [1.0]
  np.testing.assert_array_equal(scorers.assign_blocks(scores, edges), [0, 1, 1, 1, 1, 1, 1, 1])
  ties = np.asarray([1, 1, 1, 1, 2, 2, 2, 2], np.float32)
  np.testing.assert_array_equal(scorers.assign_blocks(ties, scorers.quantile_edges(ties, 2)), [0] * 4 + [1] * 4)


def test_one_block_holds_everything():
  edges = scorers.quantile_edges(np.asarray([3.0, 1.0, 2.0]), 1)
  assert edges.shape == (0,)
  np.testing.assert_array_equal(scorers.assign_blocks([-5.0, 0.0, 9.0], edges), [0, 0, 0])


def test_four_blocks_are_quarters_of_the_train_split_and_apply_to_others():
  rng = np.random.default_rng(0)
  train = rng.normal(size=4000).astype(np.float32)
  edges = scorers.quantile_edges(train, 4)
  np.testing.assert_array_equal(np.bincount(scorers.assign_blocks(train, edges)), [1000] * 4)
  test = rng.normal(size=1000).astype(np.float32)
  blocks = scorers.assign_blocks(test, edges)
  assert np.all(np.diff(blocks[np.argsort(test)]) >= 0)  # monotone in the score
  assert np.all(np.abs(np.bincount(blocks, minlength=4) / 1000 - 0.25) < 0.06)


def test_quantile_edges_rejects_bad_input():
  with pytest.raises(ValueError, match="num_blocks"):
    scorers.quantile_edges(np.ones(4), 0)
  with pytest.raises(ValueError, match="non-empty"):
    scorers.quantile_edges(np.zeros([0]), 4)
  with pytest.raises(ValueError, match="non-decreasing"):
    scorers.assign_blocks([1.0], [2.0, 1.0])


# ---------------------------------------------------------------- scoring a stream


class _RecordingScorer:
  name = "recording"

  def __init__(self):
    self.batch_sizes = []

  def score(self, examples):
    self.batch_sizes.append(len(examples))
    return np.asarray([ex["complexity"] * 2 for ex in examples])


def test_score_split_scores_batch_by_batch():
  examples = [_example([f"a red circle {'and a blue square ' * k}"], complexity=k) for k in range(10)]
  recording = _RecordingScorer()
  stream = (ex for ex in examples)  # a one-pass iterator, as the builder gives
  scores = scorers.score_split(stream, [recording, scorers.get_scorer("ground_truth")], batch_size=3)
  assert recording.batch_sizes == [3, 3, 3, 1]
  np.testing.assert_array_equal(scores["recording"], 2 * np.arange(10))
  np.testing.assert_array_equal(scores["ground_truth"], np.arange(10))
  assert scores["recording"].dtype == np.float32


def test_score_split_of_nothing_is_empty():
  scores = scorers.score_split(iter([]), [scorers.get_scorer("caption_length")], batch_size=4)
  assert scores["caption_length"].shape == (0,)


def test_score_split_rejects_wrong_scores():
  class Short:
    name = "short"

    def score(self, examples):
      return np.zeros(len(examples) - 1)

  class NaN:
    name = "nan"

    def score(self, examples):
      return np.full(len(examples), np.nan)

  for bad in (Short(), NaN()):
    with pytest.raises(ValueError, match=bad.name):
      scorers.score_split([_example()] * 4, [bad], batch_size=2)
  with pytest.raises(ValueError, match="unique"):
    scorers.score_split([_example()], [scorers.get_scorer("ground_truth")] * 2, batch_size=2)


class _CentredComplexity:
  """A FitScorer: complexity minus its training-split mean."""

  name = "centred"

  def __init__(self, mean=None):
    self.mean = mean

  def fit(self, train_batches):
    values = [ex["complexity"] for batch in train_batches for ex in batch]
    return _CentredComplexity(float(np.mean(values)))

  def score(self, examples):
    return np.asarray([ex["complexity"] - self.mean for ex in examples], np.float32)


def test_fit_scorers_fits_only_the_scorers_that_need_it():
  train = [_example(complexity=c) for c in (1.0, 2.0, 6.0)]
  passes = []

  def train_batches():
    passes.append(1)
    return scorers.batched(train, 2)

  fitted = scorers.fit_scorers([scorers.get_scorer("ground_truth"), _CentredComplexity()], train_batches)
  assert len(passes) == 1
  np.testing.assert_allclose(fitted[1].score([_example(complexity=5.0)]), [2.0])
  assert isinstance(fitted[0], scorers.GroundTruth)
  scorers.fit_scorers([scorers.get_scorer("caption_length")], train_batches)
  assert len(passes) == 1
