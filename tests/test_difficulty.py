"""Difficulty beside the images: the join by id, the score table, the run's curriculum object."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import tensorflow as tf

from cmccl_jax.curriculum import blocks as blocks_lib
from cmccl_jax.curriculum.curriculum import Curriculum
from cmccl_jax.data import datasets, difficulty
from cmccl_jax.errors import UserError
from tests import tiny


def _curriculum(**kw):
  base = dict(scorer="s", num_blocks=4, pacing="phases", phase_steps=(2, 2, 2), competence_steps=10,
              competence_init=0.25, host_sampler=False)
  base.update(kw)
  return Curriculum.from_config(ml_collections.ConfigDict(base), num_steps=8)


def test_id_lookup_joins_any_shape_of_ids_and_fails_on_an_unknown_id():
  ids = np.asarray([907, 3, 55, 12], np.int64)
  lookup = difficulty.id_lookup(ids, {"block": np.asarray([0, 1, 2, 3], np.int32),
                                      "difficulty": np.asarray([0.5, 1.5, 2.5, 3.5], np.float32)})
  out = lookup(tf.constant([[3, 907], [12, 55]], tf.int64))
  np.testing.assert_array_equal(out["block"].numpy(), [[1, 0], [3, 2]])
  np.testing.assert_array_equal(out["difficulty"].numpy(), [[1.5, 0.5], [3.5, 2.5]])
  ds = tf.data.Dataset.from_tensor_slices(np.asarray([55, 4], np.int64)).map(lookup)
  with pytest.raises(tf.errors.InvalidArgumentError, match="example ids without difficulty scores"):
    list(ds.as_numpy_iterator())


def test_score_table_aligns_scorers_by_id_and_rejects_other_examples():
  table = difficulty.ScoreTable({
      "a": {"train": (np.asarray([5, 1, 3]), np.asarray([50.0, 10.0, 30.0]))},
      "b": {"train": (np.asarray([3, 5, 1]), np.asarray([0.3, 0.5, 0.1]))}})
  ids, columns = table.split("train")
  np.testing.assert_array_equal(ids, [1, 3, 5])
  np.testing.assert_allclose(columns["a"], [10, 30, 50])
  np.testing.assert_allclose(columns["b"], [0.1, 0.3, 0.5])
  with pytest.raises(UserError, match="no difficulty scores for the split 'test'"):
    table.split("test")
  with pytest.raises(ValueError, match="cover other examples"):
    difficulty.ScoreTable({"a": {"train": (np.asarray([1, 2]), np.zeros(2))},
                           "b": {"train": (np.asarray([1, 3]), np.zeros(2))}})


def test_score_build_names_say_image_build_scorer_and_settings():
  config = difficulty.DifficultyScoresConfig(dataset="coco_captions2014/root-abc-official-s256/2.0.0",
                                             scorer="noun_count")
  assert config.name == "noun_count-coco_captions2014-root-abc-official-s256-v2.0.0"
  knn = difficulty.DifficultyScoresConfig(dataset=config.dataset, scorer="knn_text",
                                          settings='{"knn_k": 10, "text_teacher": "minilm"}')
  other_k = difficulty.DifficultyScoresConfig(dataset=config.dataset, scorer="knn_text",
                                              settings='{"knn_k": 5, "text_teacher": "minilm"}')
  assert knn.name.startswith("knn_text-x") and knn.name != other_k.name
  with pytest.raises(UserError, match="unknown scorer 'nouns'"):
    difficulty.DifficultyScoresConfig(dataset=config.dataset, scorer="nouns")


def test_curriculum_blocks_split_ties_so_no_block_is_empty():
  # 40% x 1, 30% x 2, 30% x 3 into 4 blocks: by value the first block would be empty.
  scores = np.asarray([1.0] * 4 + [2.0] * 3 + [3.0] * 3, np.float32)
  ids = np.arange(10) * 7
  blocks, edges = _curriculum().blocks({"train": scores, "test": np.asarray([1.0, 2.5, 3.0])},
                                       {"train": ids, "test": np.arange(3)})
  assert np.bincount(blocks["train"], minlength=4).tolist() == [3, 2, 3, 2]
  np.testing.assert_array_equal(blocks["test"], blocks_lib.assign_blocks([1.0, 2.5, 3.0], edges))
  with pytest.raises(UserError, match="training split's scores"):
    _curriculum().blocks({"test": scores}, {"test": ids})


def test_one_object_paces_the_device_mask_and_the_host_sampler_alike():
  curriculum = _curriculum(pacing="root", soft=True, host_sampler=True)
  table = curriculum.weight_table()
  block = jnp.asarray([0, 1, 2, 3], jnp.int32)
  for step in range(9):
    np.testing.assert_allclose(table[step], np.asarray(curriculum.block_weights(jnp.int32(step))), atol=1e-6)
    visible, weights = jax.jit(curriculum.example_weights)(jnp.int32(step), block)
    np.testing.assert_array_equal(np.asarray(visible), table[step] > 0)
    # The host sampler drew the batch by the weights: on the device they only mask.
    np.testing.assert_array_equal(np.asarray(weights), (table[step] > 0).astype(np.float32))
  soft_only = _curriculum(pacing="root", soft=True, host_sampler=False)
  _, weights = soft_only.example_weights(jnp.int32(0), block)
  np.testing.assert_allclose(np.asarray(weights), soft_only.weight_table()[0], atol=1e-6)
  assert not _curriculum(pacing="none", host_sampler=True).samples_on_host
  assert not _curriculum(scorer="learned", host_sampler=True).samples_on_host


def test_learned_scorer_takes_its_blocks_from_the_heads_ranking():
  curriculum = _curriculum(scorer="learned")
  predicted = jnp.asarray([0.9, 0.1, 0.5, 0.3, 0.7, 0.2, 0.8, 0.4])
  np.testing.assert_array_equal(np.asarray(curriculum.batch_blocks(jnp.zeros(8, jnp.int32), predicted)),
                                [3, 0, 2, 1, 2, 0, 3, 1])
  offline = _curriculum()
  np.testing.assert_array_equal(np.asarray(offline.batch_blocks(jnp.arange(8) % 4, predicted)), np.arange(8) % 4)


def test_run_reads_its_scorers_and_checks_them_against_the_dataset(tiny_config):
  builder = datasets.get_builder(tiny_config.data)
  assert difficulty.run_scorers(tiny_config, builder) == ("caption_length", "ground_truth", "noun_count")
  tiny_config.scoring.scorers = ("caption_length",)
  assert difficulty.run_scorers(tiny_config, builder) == ("caption_length", "ground_truth")  # + the pacing one
  tiny_config.curriculum.scorer = "learned"
  assert difficulty.run_scorers(tiny_config, builder) == ("caption_length",)
  _, run = tiny.tiny_difficulty(tiny_config)
  assert set(run.blocks["train"]) == {0} and "online blocks" in run.describe()
  real = type("Folder", (), {"name": "image_text_folder", "info": type("Info", (), {"features": {"image": 0}})()})()
  tiny_config.curriculum.scorer = "ground_truth"
  with pytest.raises(UserError, match="ground_truth reads the generator's `complexity`.*image_text_folder"):
    difficulty.run_scorers(tiny_config, real)
