"""The host sampler: batches hold what their step's pacing shows, in proportion to w·n, resumably."""

import ml_collections
import numpy as np
import tensorflow as tf

from cmccl_jax.curriculum.curriculum import Curriculum
from cmccl_jax.data import curriculum_sampler, difficulty, pipeline
from cmccl_jax.data.tokenizer import build_tokenizer
from tests import tiny


def _curriculum(num_steps=100, **kw):
  base = dict(scorer="s", num_blocks=4, pacing="linear", phase_steps=(1, 1, 1), competence_steps=100,
              competence_init=0.25, soft=False, order="easy_first", order_seed=0, host_sampler=True)
  base.update(kw)
  return Curriculum.from_config(ml_collections.ConfigDict(base), num_steps)


def _block_of(blocks):
  """The join by id of examples whose id is their position: ids are stored shuffled, to be searched."""
  ids = np.random.default_rng(0).permutation(len(blocks)).astype(np.int64)
  lookup = difficulty.id_lookup(ids, {"block": np.asarray(blocks, np.int32)[ids]})
  return lambda query: lookup(query)["block"]


def _uniform_blocks(n=40_000):
  return tf.data.Dataset.from_tensor_slices({"id": np.arange(n, dtype=np.int64)}), _block_of(np.arange(n) % 4)


def test_soft_weights_set_the_share_of_each_block():
  # linear, soft, c0 = 0.625: c·K = 2.5 at step 0, so w = [1, 1, 0.5, 0] and equal
  # block sizes give shares 0.4, 0.4, 0.2, 0.
  curriculum = _curriculum(competence_init=0.625, soft=True)
  ids, block_of = _uniform_blocks()
  stream = curriculum_sampler.paced_stream(ids, curriculum=curriculum, local_batch_size=10_000, seed=0,
                                           sizes=np.full(4, 10_000), block_of=block_of)
  blocks = np.asarray([ex["id"] % 4 for ex in stream.take(10_000).as_numpy_iterator()])
  share = np.bincount(blocks, minlength=4) / blocks.size
  np.testing.assert_allclose(share, [0.4, 0.4, 0.2, 0.0], atol=0.02)


def test_stream_is_a_pure_function_of_the_seed():
  def take(seed):
    # Soft weights make keeping random (hard 0/1 weights decide by block alone).
    ids, block_of = _uniform_blocks(2000)
    stream = curriculum_sampler.paced_stream(ids, curriculum=_curriculum(soft=True), local_batch_size=8,
                                             seed=seed, sizes=np.full(4, 500), block_of=block_of)
    return [int(ex["id"]) for ex in stream.take(200).as_numpy_iterator()]
  assert take(3) == take(3) and take(3) != take(4)


def test_a_step_with_only_empty_visible_blocks_keeps_everything():
  # Phases of one step: step 0 shows block 0 only, which this slice lacks.
  keep = _curriculum(num_steps=1, pacing="phases").keep_table(sizes=np.asarray([0, 5, 5, 5]))
  np.testing.assert_array_equal(keep, [[1, 1, 1, 1], [1, 1, 0, 0]])


def test_every_batch_is_visible_in_every_phase(tiny_config):
  config = tiny_config
  config.curriculum.pacing = "phases"
  config.curriculum.phase_steps = (3, 3, 3)
  builder, run = tiny.tiny_difficulty(config)
  batches = pipeline.train_dataset(builder, config, build_tokenizer(config.tokenizer), 16, run).take(14)
  seen = set()
  for step, batch in enumerate(batches.as_numpy_iterator()):
    weights = run.curriculum.block_weights(step, np)
    visible = float(np.mean(weights[batch["block"]] > 0))
    assert visible >= 0.95, (step, visible, batch["block"])
    seen.update(np.unique(batch["block"]).tolist())
  assert seen == {0, 1, 2, 3}  # the last phase shows every block


def test_without_the_sampler_the_mask_does_the_pacing(tiny_config):
  config = tiny_config
  config.curriculum.host_sampler = False
  builder, run = tiny.tiny_difficulty(config)
  batch = next(pipeline.train_dataset(builder, config, build_tokenizer(config.tokenizer), 16, run).as_numpy_iterator())
  assert len(np.unique(batch["block"])) > 1  # step 0 shows block 0 only, yet the batch is uniform


def test_disjoint_phases_switch_exactly_at_the_batch_boundary():
  # Disjoint phases of 2 steps: a batch drawn with the previous step's weights would
  # hold blocks invisible now. Records of varying caption counts (as COCO's) too.
  n = 4000
  captions = tf.ragged.constant([["a"] * (1 + i % 3) for i in range(n)])
  blocks = np.random.RandomState(0).randint(4, size=n)  # kept counts vary from chunk to chunk
  stream = tf.data.Dataset.from_tensor_slices({"captions": captions, "id": np.arange(n, dtype=np.int64)}).repeat()
  curriculum = _curriculum(num_steps=10, pacing="disjoint_phases", phase_steps=(2, 2, 2))
  batch = 7
  paced = curriculum_sampler.paced_stream(stream, curriculum=curriculum, local_batch_size=batch, seed=0,
                                          sizes=np.full(4, n // 4), block_of=_block_of(blocks))
  for step, example in enumerate(paced.ragged_batch(batch).take(10).as_numpy_iterator()):
    weights = curriculum.block_weights(step, np)
    assert np.all(weights[blocks[example["id"]]] > 0), (step, blocks[example["id"]])
    assert [len(c) for c in example["captions"]] == [1 + i % 3 for i in example["id"]]  # records stay whole
