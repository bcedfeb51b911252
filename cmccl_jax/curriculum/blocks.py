"""Curriculum blocks from difficulty scores: K quantile blocks of the training split.

Training examples are ranked by score and cut into K blocks of ⌊n/K⌋ or ⌈n/K⌉
examples: block b holds ranks [b·n/K, (b+1)·n/K). Discrete scores (word counts,
noun counts, a synthetic complexity level) tie in long runs; cutting by value
would put a whole run on one side of an edge and could leave a block empty
(40% ×1, 30% ×2, 30% ×3 into 4 blocks gives sizes [0, 40, 30, 30], and a phased
curriculum would train its first phase on nothing). So ties are split by rank:
within a run of equal scores the order is a fixed pseudo-random permutation keyed
by example id (a hash, the same on every process and machine), so which of the
tied examples land in the lower block is neither arbitrary between runs nor
correlated with how ids were assigned. Equal scores share a block unless a block
boundary falls inside their run.

Other splits are blocked by value with `edges` (the lowest score of each block
1..K-1 of the training split): a score equal to an edge goes to the upper block.
"""

import numpy as np


def tie_keys(ids) -> np.ndarray:
  """uint64 [n]: a fixed pseudo-random key per example id (SplitMix64's finaliser)."""
  x = np.asarray(ids).astype(np.uint64)
  with np.errstate(over="ignore"):
    x = (x + np.uint64(0x9E3779B97F4A7C15))
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
  return x ^ (x >> np.uint64(31))


def quantile_blocks(scores, ids, num_blocks: int) -> np.ndarray:
  """int32 [n]: block ⌊K · rank / n⌋ of each training example, ranked by (score, tie key of its id)."""
  scores = np.asarray(scores, np.float32)
  if num_blocks < 1:
    raise ValueError(f"num_blocks must be >= 1, got {num_blocks}")
  if scores.ndim != 1 or scores.size == 0:
    raise ValueError(f"scores must be a non-empty vector, got shape {scores.shape}")
  ids = np.asarray(ids)
  if ids.shape != scores.shape:
    raise ValueError(f"ids {ids.shape} and scores {scores.shape} must match")
  order = np.lexsort((tie_keys(ids), scores))
  ranks = np.empty(scores.size, np.int64)
  ranks[order] = np.arange(scores.size)
  return (ranks * num_blocks // scores.size).astype(np.int32)


def block_edges(scores, blocks, num_blocks: int) -> np.ndarray:
  """float32 [K-1]: the lowest score of each block 1..K-1 (the value edges other splits are blocked by)."""
  scores, blocks = np.asarray(scores, np.float32), np.asarray(blocks)
  return np.asarray([scores[blocks == b].min() if np.any(blocks == b) else np.inf
                     for b in range(1, num_blocks)], np.float32)


def assign_blocks(scores, edges) -> np.ndarray:
  """int32 block per score: block b holds [edge_{b-1}, edge_b), edge_{-1} = -inf, edge_{K-1} = inf."""
  edges = np.asarray(edges, np.float32)
  if np.any(np.diff(edges) < 0):
    raise ValueError(f"edges must be non-decreasing, got {edges}")
  return np.searchsorted(edges, np.asarray(scores, np.float32), side="right").astype(np.int32)


def split_blocks(scores: dict[str, np.ndarray], ids: dict[str, np.ndarray], num_blocks: int):
  """({split: blocks}, edges) for one scorer: quantile blocks of "train", the others by its edges."""
  train = quantile_blocks(scores["train"], ids["train"], num_blocks)
  edges = block_edges(scores["train"], train, num_blocks)
  blocks = {split: train if split == "train" else assign_blocks(s, edges) for split, s in scores.items()}
  return blocks, edges


def blocks_by_scorer(scores: dict[str, dict[str, np.ndarray]], ids: dict[str, np.ndarray], num_blocks: int):
  """({split: {scorer: blocks}}, {scorer: edges}) from {split: {scorer: scores}} and {split: ids}."""
  names = list(scores["train"])
  per_scorer = {name: split_blocks({split: s[name] for split, s in scores.items()}, ids, num_blocks)
                for name in names}
  blocks = {split: {name: per_scorer[name][0][split] for name in names} for split in scores}
  return blocks, {name: per_scorer[name][1] for name in names}
