"""Quantile blocks of the training split: equal sizes, ties split by rank, other splits by value."""

import numpy as np
import pytest

from cmccl_jax.curriculum import blocks


def test_blocks_of_distinct_scores_are_quarters_in_score_order():
  scores = np.asarray([7, 0, 5, 2, 6, 1, 4, 3], np.float32)
  got = blocks.quantile_blocks(scores, np.arange(8), 4)
  np.testing.assert_array_equal(got, [3, 0, 2, 1, 3, 0, 2, 1])
  assert got.dtype == np.int32


def test_ties_at_an_edge_never_leave_a_block_empty():
  # The case: 40% score 1, 30% score 2, 30% score 3 into 4 blocks. By value this is [0, 40, 30, 30].
  scores = np.asarray([1] * 40 + [2] * 30 + [3] * 30, np.float32)
  got = blocks.quantile_blocks(scores, np.arange(100), 4)
  np.testing.assert_array_equal(np.bincount(got, minlength=4), [25, 25, 25, 25])
  # Order is kept across scores: every score-1 example is in block 0 or 1, every score-3 one in 2 or 3.
  assert set(got[:40]) == {0, 1} and set(got[70:]) == {2, 3}
  assert np.all(got[scores == 2] >= 1) and np.all(got[scores == 2] <= 2)


def test_which_tied_examples_go_down_depends_on_a_hash_of_their_id_not_their_position():
  scores = np.zeros(8, np.float32)
  ids = np.arange(100, 108)
  got = blocks.quantile_blocks(scores, ids, 2)
  assert np.bincount(got).tolist() == [4, 4]
  # The same ids in another order: the same example gets the same block.
  perm = np.asarray([3, 7, 0, 5, 1, 6, 2, 4])
  np.testing.assert_array_equal(blocks.quantile_blocks(scores[perm], ids[perm], 2), got[perm])
  # And the low block is not simply the first ids.
  assert got[:4].tolist() != [0, 0, 0, 0]


def test_equal_scores_share_a_block_away_from_an_edge():
  scores = np.asarray([0, 1, 1, 1, 1, 1, 1, 2], np.float32)
  got = blocks.quantile_blocks(scores, np.arange(8), 2)
  assert got[0] == 0 and got[7] == 1 and np.bincount(got).tolist() == [4, 4]
  ties = np.asarray([1, 1, 1, 1, 2, 2, 2, 2], np.float32)
  np.testing.assert_array_equal(blocks.quantile_blocks(ties, np.arange(8), 2), [0] * 4 + [1] * 4)


def test_other_splits_are_blocked_by_value_at_the_training_edges():
  rng = np.random.default_rng(0)
  train = rng.normal(size=4000).astype(np.float32)
  train_blocks, edges = blocks.split_blocks({"train": train, "test": train[:3]}, {"train": np.arange(4000)}, 4)
  np.testing.assert_array_equal(np.bincount(train_blocks["train"]), [1000] * 4)
  np.testing.assert_array_equal(train_blocks["test"], train_blocks["train"][:3])  # distinct scores: the same
  test = rng.normal(size=1000).astype(np.float32)
  got = blocks.assign_blocks(test, edges)
  assert np.all(np.diff(got[np.argsort(test)]) >= 0)  # monotone in the score
  assert np.all(np.abs(np.bincount(got, minlength=4) / 1000 - 0.25) < 0.06)


def test_value_blocks_are_half_open_intervals():
  edges = np.asarray([1.0, 2.0], np.float32)
  np.testing.assert_array_equal(blocks.assign_blocks([0.999, 1.0, 1.5, 2.0, 7.0], edges), [0, 1, 1, 2, 2])


def test_one_block_holds_everything():
  got = blocks.quantile_blocks(np.asarray([3.0, 1.0, 2.0]), np.arange(3), 1)
  np.testing.assert_array_equal(got, [0, 0, 0])
  assert blocks.block_edges([3.0, 1.0, 2.0], got, 1).shape == (0,)


def test_bad_input_is_refused():
  with pytest.raises(ValueError, match="num_blocks"):
    blocks.quantile_blocks(np.ones(4), np.arange(4), 0)
  with pytest.raises(ValueError, match="non-empty"):
    blocks.quantile_blocks(np.zeros([0]), np.zeros([0]), 4)
  with pytest.raises(ValueError, match="must match"):
    blocks.quantile_blocks(np.ones(4), np.arange(3), 2)
  with pytest.raises(ValueError, match="non-decreasing"):
    blocks.assign_blocks([1.0], [2.0, 1.0])
