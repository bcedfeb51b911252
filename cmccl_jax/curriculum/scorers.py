"""Offline difficulty scorers and the quantile blocks built from their scores.

A scorer maps raw examples (dicts as `shapes_scene.make_example` returns: image,
captions, ...) to one float each, higher = harder. Preprocessing writes every
scorer's score into the shards as `difficulty/<name>` and its quantile block as
`block/<name>`, so switching scorer at training time is a config change.

Scorers are batched (`score` takes a list of examples) because the ones that need
a model (teacher embeddings, a POS tagger) are only efficient on batches. A scorer
whose score depends on the whole training split (kNN density over the training
embeddings) is a `FitScorer`: `fit` sees the training split once, in batches, and
returns the scorer that scores; `fit_scorers` runs that step before any scoring.
"""

import itertools
import re
from typing import Any, Callable, Iterable, Iterator, Mapping, Protocol, Sequence, runtime_checkable

import numpy as np

Example = Mapping[str, Any]


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


SCORERS: Mapping[str, Callable[[], Scorer]] = {
    CaptionLength.name: CaptionLength,
    GroundTruth.name: GroundTruth,
}


def get_scorer(name: str) -> Scorer:
  """A new scorer registered under `name`."""
  if name not in SCORERS:
    raise ValueError(f"unknown scorer {name!r}; known scorers: {', '.join(sorted(SCORERS))}")
  return SCORERS[name]()


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


def score_split(examples: Iterable[Example], scorers: Sequence[Scorer],
                batch_size: int) -> dict[str, np.ndarray]:
  """{scorer name: float32 [num_examples]}, scoring a stream batch by batch.

  Only the scores are kept, so a split larger than memory can be scored.
  """
  names = [s.name for s in scorers]
  if len(set(names)) != len(names):
    raise ValueError(f"scorer names must be unique, got {names}")
  parts: dict[str, list[np.ndarray]] = {name: [] for name in names}
  for batch in batched(examples, batch_size):
    for scorer in scorers:
      scores = np.asarray(scorer.score(batch), np.float32)
      if scores.shape != (len(batch),) or not np.all(np.isfinite(scores)):
        raise ValueError(f"scorer {scorer.name!r} must return {len(batch)} finite scores, "
                         f"got shape {scores.shape} with {np.sum(~np.isfinite(scores))} non-finite")
      parts[scorer.name].append(scores)
  return {name: np.concatenate(p) if p else np.zeros([0], np.float32) for name, p in parts.items()}


def quantile_edges(train_scores: np.ndarray, num_blocks: int) -> np.ndarray:
  """The K-1 inner edges: the b/K quantiles (b = 1..K-1) of the training scores.

  Linearly interpolated between order statistics, then float32, the dtype the
  scores are stored in, so that the stored edges block every stored score the
  same way on reload.
  """
  scores = np.asarray(train_scores, np.float32)
  if num_blocks < 1:
    raise ValueError(f"num_blocks must be >= 1, got {num_blocks}")
  if scores.ndim != 1 or scores.size == 0:
    raise ValueError(f"train_scores must be a non-empty vector, got shape {scores.shape}")
  return np.quantile(scores.astype(np.float64), np.arange(1, num_blocks) / num_blocks).astype(np.float32)


def assign_blocks(scores: np.ndarray, edges: np.ndarray) -> np.ndarray:
  """int32 block per score: block b holds [edge_{b-1}, edge_b), edge_{-1} = -inf, edge_{K-1} = inf.

  A score equal to an edge goes to the upper block, so equal scores share a block.
  """
  edges = np.asarray(edges, np.float32)
  if np.any(np.diff(edges) < 0):
    raise ValueError(f"edges must be non-decreasing, got {edges}")
  return np.searchsorted(edges, np.asarray(scores, np.float32), side="right").astype(np.int32)
