import dataclasses
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from cmccl_jax.curriculum import blocks as blocks_lib
from cmccl_jax.data import difficulty, shapes_scene, synthetic_shapes
from cmccl_jax.scoring import score_shards, scorers
from tests import tiny

_TINY = dict(num_train=40, num_validation=8, num_test=8, corrupt_fraction=0.25)


def test_default_config_name_encodes_every_parameter():
  config = synthetic_shapes.synthetic_shapes_config()
  # The generator's parameters, nothing of the curriculum: scores are builds of their own.
  assert config.name == "s32-tr8000-va500-te1000-o4-c5-p0.0-seed0"
  changes = dict(image_size=64, num_train=7, num_validation=7, num_test=7, max_objects=3, num_captions=3,
                 corrupt_fraction=0.125, seed=3, min_objects=2, caption_levels=("relation", "scene"),
                 distractors=True)
  fields = {f.name for f in dataclasses.fields(synthetic_shapes.SyntheticShapesConfig)}
  assert set(changes) == fields - {f.name for f in dataclasses.fields(tfds.core.BuilderConfig)}
  names = {synthetic_shapes.synthetic_shapes_config(**{k: v}).name for k, v in changes.items()}
  assert len(names) == len(changes) and config.name not in names
  assert synthetic_shapes.synthetic_shapes_config(corrupt_fraction=0.12).name != \
      synthetic_shapes.synthetic_shapes_config(corrupt_fraction=0.125).name


def test_config_rejects_bad_parameters():
  with pytest.raises(ValueError, match="corrupt_fraction"):
    synthetic_shapes.synthetic_shapes_config(corrupt_fraction=1.0)
  with pytest.raises(ValueError, match="max_objects"):
    synthetic_shapes.synthetic_shapes_config(max_objects=shapes_scene.MAX_OBJECTS + 1)
  with pytest.raises(ValueError, match="does not match"):
    synthetic_shapes.SyntheticShapesConfig(name="mine", num_train=10)


def test_builder_without_config_uses_the_default(tmp_path):
  builder = synthetic_shapes.SyntheticShapes(data_dir=str(tmp_path))
  assert builder.builder_config.name == synthetic_shapes.synthetic_shapes_config().name
  assert not builder.is_prepared()
  by_name = tfds.builder("synthetic_shapes", data_dir=str(tmp_path))
  assert isinstance(by_name, synthetic_shapes.SyntheticShapes)
  assert by_name.builder_config.name == builder.builder_config.name


def _tiny_config(data_dir: str, num_blocks: int = 4):
  config = tiny.tiny_config(data_dir)
  config.data.synthetic.update(_TINY)
  config.curriculum.num_blocks = num_blocks
  return config


@pytest.fixture(scope="module")
def tiny_build(tmp_path_factory):
  data_dir = str(tmp_path_factory.mktemp("synthetic_shapes"))
  config = _tiny_config(data_dir)
  builder = score_shards.prepare_data(config)
  splits = {split: list(tfds.as_numpy(builder.as_dataset(split=split))) for split in shapes_scene.SPLITS}
  return config, builder, splits


def test_tiny_build_blocks_follow_the_train_edges(tiny_build):
  config, builder, splits = tiny_build
  assert [len(splits[s]) for s in shapes_scene.SPLITS] == [40, 8, 8]
  run = tiny.tiny_difficulty(config)[1]
  assert run.table.scorers == ("caption_length", "ground_truth", "noun_count")
  for name in run.table.scorers:
    per_split = {split: run.table.columns[split][name] for split in shapes_scene.SPLITS}
    blocks, edges = run.curriculum.blocks(per_split, run.table.ids)
    train_ids = run.table.ids["train"]
    np.testing.assert_array_equal(blocks["train"], blocks_lib.quantile_blocks(per_split["train"], train_ids, 4))
    np.testing.assert_array_equal(np.bincount(blocks["train"], minlength=4), [10] * 4)  # ties split: none empty
    np.testing.assert_array_equal(edges, blocks_lib.block_edges(per_split["train"], blocks["train"], 4))
    for split in ("validation", "test"):
      assert blocks[split].dtype == np.int32 and per_split[split].dtype == np.float32
      np.testing.assert_array_equal(blocks[split], blocks_lib.assign_blocks(per_split[split], edges))
    if name == config.curriculum.scorer:
      for split in shapes_scene.SPLITS:
        np.testing.assert_array_equal(run.blocks[split], blocks[split])


def test_tiny_build_stores_the_generated_examples_and_their_scores_by_id(tiny_build):
  config, builder, splits = tiny_build
  c = builder.builder_config
  _, run = tiny.tiny_difficulty(config)
  noun_count = scorers.get_scorer("noun_count")
  for split, examples in splits.items():
    ids, columns = run.table.split(split)
    assert sorted(int(ex["id"]) for ex in examples) == ids.tolist()
    row = {int(i): r for r, i in enumerate(ids)}
    for stored in examples:
      index = int(stored["id"]) % shapes_scene.ID_STRIDE
      assert int(stored["id"]) // shapes_scene.ID_STRIDE == shapes_scene.SPLITS.index(split)
      made = shapes_scene.make_example(c.seed, split, index, c.image_size, c.max_objects, c.num_captions,
                                       c.corrupt_fraction, c.num_train)
      np.testing.assert_array_equal(stored["image"], made["image"])
      assert [t.decode() for t in stored["captions"]] == made["captions"]
      np.testing.assert_array_equal(stored["caption_levels"], made["caption_levels"])
      assert stored["corrupted"] == made["corrupted"] and stored["num_objects"] == made["num_objects"]
      r = row[int(stored["id"])]
      assert stored["complexity"] == np.float32(made["complexity"]) == columns["ground_truth"][r]
      assert columns["caption_length"][r] == scorers.get_scorer("caption_length").score([made])[0]
      assert columns["noun_count"][r] == noun_count.score([made])[0]
  assert any(ex["corrupted"] for ex in splits["train"])
  assert not any(ex["corrupted"] for s in ("validation", "test") for ex in splits[s])


def test_changing_k_or_adding_a_scorer_rebuilds_no_image(tiny_build):
  config, builder, _ = tiny_build
  images = os.path.join(builder.data_dir, "dataset_info.json")
  written = os.path.getmtime(images)
  other_k = _tiny_config(config.data.data_dir, num_blocks=3)
  assert score_shards.prepare_data(other_k).data_dir == builder.data_dir
  assert score_shards.prepare_scores(other_k, builder) == []  # K only changes the blocks, made at the start
  assert tiny.tiny_difficulty(other_k)[1].block_sizes("train") == [14, 13, 13]
  more = _tiny_config(config.data.data_dir)
  more.scoring.scorers = ("caption_length", "combined")
  more.scoring.combined = ("caption_length", "ground_truth")
  assert score_shards.prepare_scores(more, builder) == ["combined"]  # its members' builds are reused
  assert os.path.getmtime(images) == written


def test_tiny_build_loads_by_name_from_files(tiny_build):
  config, builder, _ = tiny_build
  data_dir = config.data.data_dir
  ds = tfds.load(f"synthetic_shapes/{builder.builder_config.name}", split="validation", data_dir=data_dir)
  assert ds.element_spec["complexity"].dtype.name == "float32" and "block" not in ds.element_spec
  assert len(list(ds)) == 8
  reread = synthetic_shapes.SyntheticShapes(data_dir=data_dir, config=synthetic_shapes.synthetic_shapes_config(**_TINY))
  assert reread.is_prepared()
  score_build = difficulty.score_builder(builder, "ground_truth", difficulty.ScoringSettings())
  assert score_build.is_prepared()
  assert score_build.info.metadata["dataset"] == difficulty.dataset_ref(builder)
  scores = tfds.load(f"difficulty_scores/{score_build.builder_config.name}", split="test", data_dir=data_dir)
  assert set(scores.element_spec) == {"id", "difficulty"} and len(list(scores)) == 8
