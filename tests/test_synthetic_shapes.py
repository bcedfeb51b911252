import dataclasses

import numpy as np
import pytest
import tensorflow_datasets as tfds

from cmccl_jax.curriculum import blocks as blocks_lib
from cmccl_jax.scoring import scorers
from cmccl_jax.data import shapes_scene
from cmccl_jax.data import synthetic_shapes

_TINY = dict(num_train=40, num_validation=8, num_test=8, corrupt_fraction=0.25)


def test_default_config_name_encodes_every_parameter():
  config = synthetic_shapes.synthetic_shapes_config()
  assert config.name == "s32-tr8000-va500-te1000-o4-c5-p0.0-seed0-k4-caption_length.ground_truth.noun_count"
  changes = dict(image_size=64, num_train=7, num_validation=7, num_test=7, max_objects=3, num_captions=3,
                 corrupt_fraction=0.125, seed=3, num_blocks=5, scorers=("ground_truth",),
                 scoring=scorers.ScoringSettings(combined=("caption_length",)))
  fields = {f.name for f in dataclasses.fields(synthetic_shapes.SyntheticShapesConfig)}
  assert set(changes) == fields - {f.name for f in dataclasses.fields(tfds.core.BuilderConfig)}
  # Scoring settings count only where a chosen scorer reads them.
  assert synthetic_shapes.synthetic_shapes_config(scoring=changes.pop("scoring")).name == config.name
  combined = dict(scorers=("caption_length", "noun_count", "combined"))
  assert (synthetic_shapes.synthetic_shapes_config(**combined).name
          != synthetic_shapes.synthetic_shapes_config(
              **combined, scoring=scorers.ScoringSettings(combined=("noun_count",))).name)
  names = {synthetic_shapes.synthetic_shapes_config(**{k: v}).name for k, v in changes.items()}
  assert len(names) == len(changes) and config.name not in names
  assert synthetic_shapes.synthetic_shapes_config(corrupt_fraction=0.12).name != \
      synthetic_shapes.synthetic_shapes_config(corrupt_fraction=0.125).name


def test_config_rejects_bad_parameters():
  with pytest.raises(ValueError, match="unknown scorer 'foo'"):
    synthetic_shapes.synthetic_shapes_config(scorers=("foo",))
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


@pytest.fixture(scope="module")
def tiny_build(tmp_path_factory):
  data_dir = str(tmp_path_factory.mktemp("synthetic_shapes"))
  config = synthetic_shapes.synthetic_shapes_config(**_TINY)
  builder = synthetic_shapes.SyntheticShapes(data_dir=data_dir, config=config)
  builder.download_and_prepare()
  splits = {split: list(tfds.as_numpy(builder.as_dataset(split=split))) for split in shapes_scene.SPLITS}
  return data_dir, builder, splits


def test_tiny_build_blocks_follow_the_train_edges(tiny_build):
  _, builder, splits = tiny_build
  assert [len(splits[s]) for s in shapes_scene.SPLITS] == [40, 8, 8]
  assert builder.info.metadata["num_blocks"] == 4
  edges = builder.info.metadata["block_edges"]
  assert sorted(edges) == ["caption_length", "ground_truth", "noun_count"]
  assert {name: sum(sizes["train"]) for name, sizes in builder.info.metadata["block_sizes"].items()} == {
      "caption_length": 40, "ground_truth": 40, "noun_count": 40}
  for name in edges:
    train = np.asarray([ex["difficulty"][name] for ex in splits["train"]])
    train_ids = np.asarray([ex["id"] for ex in splits["train"]])
    train_blocks = np.asarray([ex["block"][name] for ex in splits["train"]])
    np.testing.assert_array_equal(train_blocks, blocks_lib.quantile_blocks(train, train_ids, 4))
    np.testing.assert_array_equal(np.bincount(train_blocks, minlength=4), [10] * 4)  # ties split: none empty
    np.testing.assert_array_equal(edges[name], blocks_lib.block_edges(train, train_blocks, 4))
    for split in ("validation", "test"):
      difficulty = np.asarray([ex["difficulty"][name] for ex in splits[split]])
      blocks = np.asarray([ex["block"][name] for ex in splits[split]])
      assert blocks.dtype == np.int32 and difficulty.dtype == np.float32
      np.testing.assert_array_equal(blocks, blocks_lib.assign_blocks(difficulty, edges[name]))


def test_tiny_build_stores_the_generated_examples(tiny_build):
  _, builder, splits = tiny_build
  c = builder.builder_config
  noun_count = scorers.get_scorer("noun_count")
  for split, examples in splits.items():
    for stored in examples:
      index = int(stored["id"]) % shapes_scene.ID_STRIDE
      assert int(stored["id"]) // shapes_scene.ID_STRIDE == shapes_scene.SPLITS.index(split)
      made = shapes_scene.make_example(c.seed, split, index, c.image_size, c.max_objects, c.num_captions,
                                       c.corrupt_fraction, c.num_train)
      np.testing.assert_array_equal(stored["image"], made["image"])
      assert [t.decode() for t in stored["captions"]] == made["captions"]
      np.testing.assert_array_equal(stored["caption_levels"], made["caption_levels"])
      assert stored["corrupted"] == made["corrupted"] and stored["num_objects"] == made["num_objects"]
      assert stored["complexity"] == np.float32(made["complexity"]) == stored["difficulty"]["ground_truth"]
      assert stored["difficulty"]["caption_length"] == scorers.get_scorer("caption_length").score([made])[0]
      assert stored["difficulty"]["noun_count"] == noun_count.score([made])[0]
  assert any(ex["corrupted"] for ex in splits["train"])
  assert not any(ex["corrupted"] for s in ("validation", "test") for ex in splits[s])


def test_tiny_build_loads_by_name_from_files(tiny_build):
  data_dir, builder, _ = tiny_build
  ds = tfds.load(f"synthetic_shapes/{builder.builder_config.name}", split="validation", data_dir=data_dir)
  assert ds.element_spec["block"]["ground_truth"].dtype.name == "int32"
  assert len(list(ds)) == 8
  reread = synthetic_shapes.SyntheticShapes(data_dir=data_dir, config=synthetic_shapes.synthetic_shapes_config(**_TINY))
  assert reread.is_prepared()
  assert reread.info.metadata["block_edges"] == builder.info.metadata["block_edges"]
