"""Rank statistics over difficulty scores: ranks with ties, rank averages, Spearman correlation.

Scorers disagree in scale and units (words, nouns, cosine densities), so the ways
of comparing or combining them here use ranks only: the combined scorer averages
normalised ranks, and the ablation reports how well each scorer orders the
synthetic set like its ground-truth `complexity` (Spearman's rho).
"""

import numpy as np


def _vector(values, name: str) -> np.ndarray:
  x = np.asarray(values, np.float64)
  if x.ndim != 1:
    raise ValueError(f"{name} must be a vector of scores, got shape {x.shape}")
  if not np.all(np.isfinite(x)):
    raise ValueError(f"{name} holds {int(np.sum(~np.isfinite(x)))} non-finite scores; ranks need finite ones")
  return x


def average_ranks(values) -> np.ndarray:
  """1-based ranks, tied values sharing the mean of the ranks they span: [5, 1, 5, 2] -> [3.5, 1, 3.5, 2].

  Average ranks keep the sum of ranks n(n+1)/2 whatever the ties, so tied scores
  favour no example over another.
  """
  x = _vector(values, "values")
  order = np.argsort(x, kind="stable")
  sorted_x = x[order]
  # Runs of equal values in sorted order: run r spans sorted positions [start_r, end_r).
  starts = np.flatnonzero(np.r_[True, sorted_x[1:] != sorted_x[:-1]])
  ends = np.r_[starts[1:], x.size]
  run_rank = (starts + 1 + ends) / 2.0  # mean of the 1-based ranks start+1 .. end
  ranks = np.empty(x.size, np.float64)
  ranks[order] = np.repeat(run_rank, ends - starts)
  return ranks


def normalized_ranks(values) -> np.ndarray:
  """Average ranks mapped onto [0, 1]: (rank - 1) / (n - 1); a single value gets 0.5.

  The scale of the combined scorer: every member contributes on the same [0, 1]
  scale whatever its units.
  """
  x = _vector(values, "values")
  if x.size == 1:
    return np.full(1, 0.5)
  return (average_ranks(x) - 1.0) / (x.size - 1)


def rank_average(scores: dict[str, np.ndarray]) -> np.ndarray:
  """float32 mean over the members of their normalised ranks: c_i = (1/M) sum_m (rank_m(i) - 1) / (n - 1)."""
  if not scores:
    raise ValueError("rank_average needs at least one member's scores")
  vectors = {name: _vector(s, f"the scores of {name!r}") for name, s in scores.items()}
  lengths = {name: v.size for name, v in vectors.items()}
  if len(set(lengths.values())) != 1:
    raise ValueError(f"the members' scores must have one common length, got {lengths}")
  if not next(iter(lengths.values())):
    return np.zeros([0], np.float32)
  return np.mean([normalized_ranks(v) for v in vectors.values()], axis=0).astype(np.float32)


def spearman(a, b) -> float:
  """Spearman's rho: the Pearson correlation of the two vectors' average ranks.

  rho = cov(R(a), R(b)) / (std(R(a)) std(R(b))); with ties this is the tie-corrected
  coefficient (what scipy.stats.spearmanr returns), not 1 - 6 sum d^2 / (n (n^2 - 1)),
  which only holds without ties. NaN when either vector is constant: no ordering
  to correlate.
  """
  x, y = _vector(a, "a"), _vector(b, "b")
  if x.shape != y.shape or x.size < 2:
    raise ValueError(f"spearman needs two vectors of one common length >= 2, got {x.shape} and {y.shape}")
  rx, ry = average_ranks(x), average_ranks(y)
  rx -= rx.mean()
  ry -= ry.mean()
  denominator = np.sqrt(np.sum(rx * rx) * np.sum(ry * ry))
  if denominator == 0:
    return float("nan")
  return float(np.sum(rx * ry) / denominator)
