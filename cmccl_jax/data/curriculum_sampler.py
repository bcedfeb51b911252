"""The host sampler: each training batch holds only examples its step's pacing shows.

The device mask alone wastes what it masks (with root pacing from c0 = 0.25, half
of every early batch). The sampler evaluates the same pacing function on the host
(`Curriculum.keep_table`) and keeps an example of block b, on its way into the batch
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

from typing import Callable

import numpy as np
import tensorflow as tf

from cmccl_jax.curriculum.curriculum import Curriculum


def block_sizes(ids: tf.data.Dataset, block_of: Callable[[tf.Tensor], tf.Tensor], num_blocks: int) -> np.ndarray:
  """int64 [K]: examples of each block among the example ids of `ids` (one pass over the id column)."""
  counts = np.zeros(num_blocks, np.int64)
  for blocks in ids.batch(8192).map(block_of, num_parallel_calls=tf.data.AUTOTUNE).as_numpy_iterator():
    counts += np.bincount(np.clip(blocks, 0, num_blocks - 1), minlength=num_blocks)
  return counts


def paced_stream(stream: tf.data.Dataset, *, curriculum: Curriculum, local_batch_size: int, seed: int,
                 sizes: np.ndarray, block_of: Callable[[tf.Tensor], tf.Tensor]) -> tf.data.Dataset:
  """`stream` (infinite, shuffled) thinned so that the batch of step t holds only what pacing shows at t.

  `block_of` maps a vector of example ids to their blocks (the run's join by id).
  """
  k = curriculum.num_blocks
  num_steps = curriculum.num_steps
  table = tf.constant(curriculum.keep_table(sizes))
  batch = tf.constant(local_batch_size, tf.int64)

  def weights_at(step):
    return table[tf.minimum(step, num_steps)]

  def decide(kept, element):
    chunk, examples = element
    block = tf.clip_by_value(tf.cast(block_of(examples["id"]), tf.int32), 0, k - 1)
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
