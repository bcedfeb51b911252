import numpy as np
import pytest

from cmccl_jax.curriculum import analysis
from cmccl_jax.data import difficulty
from cmccl_jax.data.difficulty import ScoringSettings
from cmccl_jax.scoring import scorers
from cmccl_jax.errors import UserError


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


def test_model_free_scorers_follow_the_protocol():
  # The model-based ones are checked in test_teacher_scorers.py, where their models load once.
  for name in ("caption_length", "ground_truth", "noun_count"):
    scorer = scorers.get_scorer(name)
    assert isinstance(scorer, scorers.Scorer) and not isinstance(scorer, scorers.SplitScorer)
    assert scorer.name == name
  combined = scorers.get_scorer("combined")
  assert isinstance(combined, scorers.SplitScorer) and combined.name == "combined"
  assert combined.members == ScoringSettings().combined


def test_unknown_scorer_names_the_known_ones():
  with pytest.raises(ValueError) as info:
    scorers.get_scorer("foo")
  assert str(info.value) == ("unknown scorer 'foo'; known scorers: caption_length, combined, distillation, "
                             "ground_truth, knn_image, knn_text, misalignment, noun_count")


def test_scorer_names_split_commas_from_the_command_line():
  assert difficulty.scorer_names(("caption_length, noun_count", "knn_text")) == [
      "caption_length", "noun_count", "knn_text"]
  assert difficulty.scorer_names("noun_count") == ["noun_count"]
  with pytest.raises(ValueError, match="unique"):
    difficulty.check_scorer_names(["noun_count", "noun_count"])


# ---------------------------------------------------------------- noun_count


@pytest.fixture(scope="module")
def tagger():
  return scorers.load_tagger()


def test_tagger_loads_offline_with_only_what_noun_count_needs(tagger):
  assert tagger.pipe_names == ["tok2vec", "tagger"]


def test_count_nouns_hand_tagged(tagger):
  captions = [
      "Two dogs chase a ball in the park.",  # dogs/NNS ball/NN park/NN
      "Alice visits New York",  # Alice/NNP New/NNP York/NNP (proper nouns count too)
      "very quickly and quietly",  # no noun at all: a legal caption that counts 0
  ]
  counts = scorers.count_nouns(captions, tagger)
  assert counts.dtype == np.int32
  np.testing.assert_array_equal(counts, [3, 3, 0])


def test_noun_count_is_the_max_over_captions_and_caches_by_caption(tagger):
  class CountingTagger:
    """The real tagger, counting the captions it is asked to tag."""

    def __init__(self):
      self.tagged = []

    def pipe(self, captions, batch_size):
      self.tagged.extend(captions)
      return tagger.pipe(captions, batch_size=batch_size)

  counting = CountingTagger()
  scorer = scorers.NounCount(counting)
  examples = [
      _example(["very quickly and quietly", "Two dogs chase a ball in the park."]),  # max(0, 3)
      _example(["very quickly and quietly"]),  # 0
      _example(["A man rides a horse", "very quickly and quietly"]),  # man/NN horse/NN: max(2, 0)
  ]
  scores = scorer.score(examples)
  assert scores.dtype == np.float32
  np.testing.assert_array_equal(scores, [3, 0, 2])
  assert sorted(counting.tagged) == sorted({c for ex in examples for c in ex["captions"]})  # each once
  np.testing.assert_array_equal(scorer.score(examples[::-1]), [2, 0, 3])
  assert len(counting.tagged) == 3  # all served from the cache


def test_noun_count_rejects_an_example_without_captions(tagger):
  with pytest.raises(ValueError, match="example 17 has no caption"):
    scorers.NounCount(tagger).score([{"captions": [], "id": 17}])


# ---------------------------------------------------------------- combined


def test_combined_is_the_rank_average_worked_by_hand():
  scores = {
      "a": np.asarray([10.0, 20.0, 20.0, 5.0, 30.0]),  # ranks 2, 3.5, 3.5, 1, 5 -> (r - 1) / 4
      "b": np.asarray([1.0, 1.0, 1.0, 1.0, 0.0]),  # ranks 3.5, 3.5, 3.5, 3.5, 1
  }
  combined = scorers.RankAverage(["a", "b"]).combine(scores)
  a = np.asarray([1, 2.5, 2.5, 0, 4]) / 4
  b = np.asarray([2.5, 2.5, 2.5, 2.5, 0]) / 4
  assert combined.dtype == np.float32
  np.testing.assert_allclose(combined, (a + b) / 2, rtol=1e-6)
  np.testing.assert_allclose(combined, [0.4375, 0.625, 0.625, 0.3125, 0.5], rtol=1e-6)


def test_score_split_computes_combined_last_over_the_whole_split():
  examples = [_example(["w " * n], complexity=c) for n, c in [(3, 2.0), (1, 9.0), (2, 2.0), (5, 1.0)]]
  fitted = scorers.make_scorers(["combined", "caption_length", "ground_truth"],
                                ScoringSettings(combined=("caption_length", "ground_truth")))
  scores = scorers.score_split(examples, fitted, batch_size=3)  # combined spans both batches
  assert list(scores) == ["combined", "caption_length", "ground_truth"]
  # caption_length 3, 1, 2, 5 -> ranks 3, 1, 2, 4; ground_truth 2, 9, 2, 1 -> 2.5, 4, 2.5, 1
  expected = ((np.asarray([3, 1, 2, 4]) - 1) / 3 + (np.asarray([2.5, 4, 2.5, 1]) - 1) / 3) / 2
  np.testing.assert_allclose(scores["combined"], expected, rtol=1e-6)


def test_combined_members_must_be_other_known_scorers():
  # Members need not be listed among the scorers: their scores are computed (or reused) for combined.
  assert ScoringSettings(combined=("caption_length", "noun_count")).inputs(["combined"]) == [
      "combined", "caption_length", "noun_count"]
  for bad in (("combined",), ("caption_length", "nouns")):
    with pytest.raises(UserError, match=r"config.scoring.combined=.*bad: \['(combined|nouns)'\]"):
      ScoringSettings(combined=bad).resolved(["combined"])
  with pytest.raises(ValueError, match="were not scored"):
    scorers.RankAverage(["noun_count"]).combine({"caption_length": np.zeros(3)})


# ---------------------------------------------------------------- settings and config names


def test_settings_tag_only_what_changes_the_chosen_scores():
  base = ScoringSettings()
  plain = ["caption_length", "noun_count"]
  assert base.tag(plain) == "" and base.describe(plain) == {}
  # Settings no chosen scorer reads change nothing.
  assert ScoringSettings(knn_k=3, teacher="/elsewhere").tag(plain) == ""
  knn = ["noun_count", "knn_text"]
  assert base.describe(knn) == {"text_teacher": "minilm", "knn_k": 10}
  assert base.tag(knn).startswith("-x") and len(base.tag(knn)) == 12
  assert ScoringSettings(knn_k=3).tag(knn) != base.tag(knn)
  combined = ["caption_length", "noun_count", "combined"]
  assert base.tag(combined) != ScoringSettings(combined=("noun_count",)).tag(combined)
  # combined's scores change with its members' settings.
  assert ScoringSettings(combined=("knn_text",)).describe(["combined"]) == {
      "combined": ["knn_text"], "text_teacher": "minilm", "knn_k": 10}
  teacher = ["knn_image"]
  assert (ScoringSettings(teacher="/a", teacher_step=5).tag(teacher)
          != ScoringSettings(teacher="/a", teacher_step=6).tag(teacher)
          != ScoringSettings(teacher="/b", teacher_step=6).tag(teacher))


def test_settings_reject_bad_values_naming_the_field():
  with pytest.raises(ValueError, match=r"config.scoring.knn_k must be >= 1, got 0"):
    ScoringSettings(knn_k=0)
  with pytest.raises(ValueError, match=r"config.scoring.batch_size"):
    ScoringSettings(batch_size=0)
  with pytest.raises(UserError, match="config.scoring.text_teacher='/no/such/bert'"):
    ScoringSettings(text_teacher="/no/such/bert").resolved(["knn_text"])


# ---------------------------------------------------------------- Spearman


def test_average_ranks_share_ties():
  np.testing.assert_array_equal(analysis.average_ranks([5, 1, 5, 2]), [3.5, 1, 3.5, 2])
  np.testing.assert_array_equal(analysis.average_ranks([7, 7, 7]), [2, 2, 2])
  np.testing.assert_array_equal(analysis.normalized_ranks([3.0, 1.0, 2.0]), [1.0, 0.0, 0.5])
  np.testing.assert_array_equal(analysis.normalized_ranks([4.0]), [0.5])


def test_spearman_hand_worked_and_against_scipy():
  # No ties: d = rank differences (0, 0, -1, 1, 0): rho = 1 - 6 * 2 / (5 * 24) = 0.9.
  assert analysis.spearman([1, 2, 3, 4, 5], [10, 20, 40, 30, 50]) == pytest.approx(0.9)
  assert analysis.spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
  assert np.isnan(analysis.spearman([1, 1, 1], [1, 2, 3]))
  stats = pytest.importorskip("scipy.stats")
  rng = np.random.default_rng(0)
  for _ in range(5):
    a = rng.integers(0, 6, size=40).astype(float)  # many ties
    b = a + rng.integers(0, 4, size=40)
    assert analysis.spearman(a, b) == pytest.approx(stats.spearmanr(a, b).statistic, abs=1e-12)


def test_spearman_rejects_mismatched_or_bad_vectors():
  with pytest.raises(ValueError, match="common length"):
    analysis.spearman([1, 2, 3], [1, 2])
  with pytest.raises(ValueError, match="non-finite"):
    analysis.spearman([1, np.nan, 3], [1, 2, 3])


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
