"""The statistics an ablation's conclusions rest on: intervals over seeds, paired bootstraps, convergence.

Host-side numpy and scipy; every function takes plain arrays so it can be checked
on cases with a known answer (tests/test_statistics.py).
"""

from typing import Mapping, Sequence

import numpy as np
from scipy import stats


def mean_ci(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
  """(mean, low, high): Student's t interval of the mean over seeds; NaN bounds for a single value."""
  x = np.asarray(values, np.float64)
  mean = float(x.mean())
  if x.size < 2:
    return mean, float("nan"), float("nan")
  half = float(stats.t.ppf(0.5 + level / 2, x.size - 1) * x.std(ddof=1) / np.sqrt(x.size))
  return mean, mean - half, mean + half


def paired_t(variant: Sequence[float], baseline: Sequence[float], level: float = 0.95) -> dict[str, float]:
  """The per-seed differences variant - baseline: mean, t interval and the two-sided paired t-test's p."""
  d = np.asarray(variant, np.float64) - np.asarray(baseline, np.float64)
  mean, low, high = mean_ci(d, level)
  if d.size < 2:
    p = float("nan")
  elif np.all(d == d[0]):
    p = 1.0 if d[0] == 0 else 0.0  # no spread: t is 0 or infinite
  else:
    p = float(stats.ttest_1samp(d, 0.0).pvalue)
  return {"mean": mean, "low": low, "high": high, "p": p}


def paired_bootstrap(variant: Sequence[np.ndarray], baseline: Sequence[np.ndarray], *, replicates: int = 2000,
                     level: float = 0.95, seed: int = 0) -> tuple[float, float]:
  """Percentile interval of the mean difference of a per-query metric, resampling seeds and test queries.

  variant[s] and baseline[s] are one seed's per-query values (e.g. hit@1 of every
  caption query) in the same query order. Each replicate draws seeds with
  replacement and, inside each drawn seed, queries with replacement, the same
  queries for both (the comparison is paired), so the interval holds both the
  seed-to-seed spread and the finite test set's sampling error.
  """
  a = np.stack([np.asarray(v, np.float64) for v in variant])
  b = np.stack([np.asarray(v, np.float64) for v in baseline])
  if a.shape != b.shape:
    raise ValueError(f"variant and baseline need the same seeds and queries, got {a.shape} and {b.shape}")
  diff = a - b  # [seeds, queries]
  num_seeds, num_queries = diff.shape
  rng = np.random.default_rng(seed)
  out = np.empty(replicates)
  for start in range(0, replicates, 100):  # bounded memory: 100 replicates' indices at a time
    n = min(100, replicates - start)
    seeds = rng.integers(num_seeds, size=(n, num_seeds))
    queries = rng.integers(num_queries, size=(n, num_seeds, num_queries))
    out[start:start + n] = diff[seeds[..., None], queries].mean(axis=(1, 2))
  low, high = np.quantile(out, [0.5 - level / 2, 0.5 + level / 2])
  return float(low), float(high)


def steps_to_target(history: Mapping[int, float], target: float) -> float | None:
  """The first step a run's metric reaches `target`, linearly interpolated between evals; None if never."""
  previous = None
  for step in sorted(history):
    value = history[step]
    if value >= target:
      if previous is None:
        return float(step)
      s0, v0 = previous
      return float(s0 + (step - s0) * (target - v0) / (value - v0))
    previous = (step, value)
  return None
