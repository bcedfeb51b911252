"""The host sampler: each training batch holds only examples its step's pacing shows.

The device mask alone wastes what it masks (with root pacing from c0 = 0.25, half
of every early batch). The sampler evaluates the same pacing function on the host
(`pacing.weight_table`) and keeps an example of block b, on its way into the batch
of step t, with probability w_b(t): rejection sampling from the one shuffled
stream, so the batch is drawn in proportion to w_b(t) · n_b (uniformly over the
visible examples, soft weights scaling a block's share).

The stream is decided a chunk of B records at a time, with vectorised ops: per
record tf.data work (a scan step, a filter, a map) cost more CPU than reading the
rejected records, and on a small host that CPU is taken from the train step. An
example's step is still exactly (examples kept before it) // B: a chunk of B
records keeps at most B, so it crosses at most one batch boundary, and the records
after the boundary are decided with the next step's weights.

The kept count is the state of a `Dataset.scan`, part of the checkpointed iterator,
and the keep draws are stateless in (seed, chunk index), so resumed runs keep the
pacing exactly.
"""

import numpy as np
import tensorflow as tf

from cmccl_jax.curriculum import pacing
from cmccl_jax.errors import UserError


def block_sizes(dataset: tf.data.Dataset, scorer: str, num_blocks: int) -> np.ndarray:
  """int64 [K]: examples of each block/<scorer> in `dataset` (one pass over the block column)."""
  counts = np.zeros(num_blocks, np.int64)
  column = dataset.map(lambda ex: ex["block"][scorer], num_parallel_calls=tf.data.AUTOTUNE)
  for blocks in column.batch(8192).as_numpy_iterator():
    counts += np.bincount(np.clip(blocks, 0, num_blocks - 1), minlength=num_blocks)
  return counts


def keep_probabilities(weights: np.ndarray, sizes: np.ndarray) -> np.ndarray:
  """float32 [S, K]: the chance of keeping an example of block b at step t, w_b(t).

  A step whose visible blocks are all empty in this process's slice (possible only
  on tiny data or many hosts) keeps every example instead, so the stream never
  stalls; the device mask then drops them and `visible_fraction` shows it.
  """
  weights = np.asarray(weights, np.float32)
  sizes = np.asarray(sizes, np.float64)
  if not np.any(sizes > 0):
    raise UserError("the training split has no examples in any difficulty block; rebuild the dataset.")
  stalled = (weights * sizes[None, :]).sum(axis=1) <= 0
  return np.where(stalled[:, None], 1.0, weights).astype(np.float32)


def paced_stream(stream: tf.data.Dataset, *, curriculum, num_steps: int, local_batch_size: int, seed: int,
                 sizes: np.ndarray) -> tf.data.Dataset:
  """`stream` (infinite, shuffled) thinned so that the batch of step t holds only what pacing shows at t."""
  k = int(curriculum.num_blocks)
  scorer = curriculum.scorer
  table = tf.constant(keep_probabilities(pacing.weight_table(num_steps, curriculum), sizes))
  batch = tf.constant(local_batch_size, tf.int64)

  def weights_at(step):
    return table[tf.minimum(step, num_steps)]

  def decide(kept, element):
    chunk, examples = element
    block = tf.clip_by_value(tf.cast(examples["block"][scorer], tf.int32), 0, k - 1)
    draw = tf.random.stateless_uniform(tf.shape(block), seed=tf.stack([tf.constant(seed, tf.int64), chunk]))
    step = kept // batch
    keep_now = draw < tf.gather(weights_at(step), block)
    # Records after the one that fills step's batch belong to step + 1's.
    kept_before = kept + tf.cumsum(tf.cast(keep_now, tf.int64), exclusive=True)
    keep = tf.where(kept_before < (step + 1) * batch, keep_now, draw < tf.gather(weights_at(step + 1), block))
    return kept + tf.reduce_sum(tf.cast(keep, tf.int64)), tf.nest.map_structure(
        lambda x: tf.ragged.boolean_mask(x, keep) if isinstance(x, tf.RaggedTensor) else tf.boolean_mask(x, keep),
        examples)

  chunks = stream.ragged_batch(local_batch_size).enumerate()
  return chunks.scan(tf.constant(0, tf.int64), decide).unbatch()
