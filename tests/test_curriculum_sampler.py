"""The host sampler: batches hold what their step's pacing shows, in proportion to w·n, resumably."""

import ml_collections
import numpy as np
import tensorflow as tf

from cmccl_jax.curriculum import pacing
from cmccl_jax.data import curriculum_sampler, datasets, pipeline
from cmccl_jax.data.tokenizer import build_tokenizer


def _curriculum(**kw):
  base = dict(scorer="s", num_blocks=4, pacing="linear", phase_steps=(1, 1, 1), competence_steps=100,
              competence_init=0.25, soft=False, order="easy_first", order_seed=0, host_sampler=True)
  base.update(kw)
  return ml_collections.ConfigDict(base)


def _uniform_blocks(n=40_000):
  blocks = np.arange(n) % 4
  return tf.data.Dataset.from_tensor_slices({"block": {"s": blocks}, "i": np.arange(n)})


def test_soft_weights_set_the_share_of_each_block():
  # linear, soft, c0 = 0.625: c·K = 2.5 at step 0, so w = [1, 1, 0.5, 0] and equal
  # block sizes give shares 0.4, 0.4, 0.2, 0.
  curriculum = _curriculum(competence_init=0.625, soft=True)
  stream = curriculum_sampler.paced_stream(_uniform_blocks(), curriculum=curriculum, num_steps=100,
                                           local_batch_size=10_000, seed=0, sizes=np.full(4, 10_000))
  blocks = np.asarray([ex["block"]["s"] for ex in stream.take(10_000).as_numpy_iterator()])
  share = np.bincount(blocks, minlength=4) / blocks.size
  np.testing.assert_allclose(share, [0.4, 0.4, 0.2, 0.0], atol=0.02)


def test_stream_is_a_pure_function_of_the_seed():
  def take(seed):
    # Soft weights make keeping random (hard 0/1 weights decide by block alone).
    stream = curriculum_sampler.paced_stream(_uniform_blocks(2000), curriculum=_curriculum(soft=True),
                                             num_steps=100,
                                             local_batch_size=8, seed=seed, sizes=np.full(4, 500))
    return [int(ex["i"]) for ex in stream.take(200).as_numpy_iterator()]
  assert take(3) == take(3) and take(3) != take(4)


def test_a_step_with_only_empty_visible_blocks_keeps_everything():
  weights = np.asarray([[1, 0, 0, 0], [1, 1, 0, 0]], np.float32)
  keep = curriculum_sampler.keep_probabilities(weights, sizes=np.asarray([0, 5, 5, 5]))
  np.testing.assert_array_equal(keep, [[1, 1, 1, 1], [1, 1, 0, 0]])


def test_every_batch_is_visible_in_every_phase(tiny_config):
  config = tiny_config
  config.curriculum.pacing = "phases"
  config.curriculum.phase_steps = (3, 3, 3)
  builder = datasets.get_builder(config.data, 4)
  batches = pipeline.train_dataset(builder, config, build_tokenizer(config.tokenizer), 16).take(14)
  seen = set()
  for step, batch in enumerate(batches.as_numpy_iterator()):
    weights = pacing.block_weights(step, config.curriculum, np)
    visible = float(np.mean(weights[batch["block"]] > 0))
    assert visible >= 0.95, (step, visible, batch["block"])
    seen.update(np.unique(batch["block"]).tolist())
  assert seen == {0, 1, 2, 3}  # the last phase shows every block


def test_without_the_sampler_the_mask_does_the_pacing(tiny_config):
  config = tiny_config
  config.curriculum.host_sampler = False
  builder = datasets.get_builder(config.data, 4)
  batch = next(pipeline.train_dataset(builder, config, build_tokenizer(config.tokenizer), 16).as_numpy_iterator())
  assert len(np.unique(batch["block"])) > 1  # step 0 shows block 0 only, yet the batch is uniform


def test_disjoint_phases_switch_exactly_at_the_batch_boundary():
  # Disjoint phases of 2 steps: a batch drawn with the previous step's weights would
  # hold blocks invisible now. Records of varying caption counts (as COCO's) too.
  n = 4000
  captions = tf.ragged.constant([["a"] * (1 + i % 3) for i in range(n)])
  blocks = np.random.RandomState(0).randint(4, size=n)  # kept counts vary from chunk to chunk
  stream = tf.data.Dataset.from_tensor_slices({"block": {"s": blocks}, "captions": captions,
                                               "i": np.arange(n)}).repeat()
  curriculum = _curriculum(pacing="disjoint_phases", phase_steps=(2, 2, 2))
  batch = 7
  paced = curriculum_sampler.paced_stream(stream, curriculum=curriculum, num_steps=10, local_batch_size=batch,
                                          seed=0, sizes=np.full(4, n // 4))
  for step, example in enumerate(paced.ragged_batch(batch).take(10).as_numpy_iterator()):
    weights = pacing.block_weights(step, curriculum, np)
    assert np.all(weights[example["block"]["s"]] > 0), (step, example["block"]["s"])
    assert [len(c) for c in example["captions"]] == [1 + i % 3 for i in example["i"]]  # records stay whole
