"""coco_captions2014 from a tiny local COCO-2014 copy in the real formats, one of every bad input."""

import dataclasses
import os
import re
import shutil

import numpy as np
import pytest
import tensorflow_datasets as tfds

from cmccl_jax.curriculum import blocks as blocks_lib
from cmccl_jax.curriculum.curriculum import Curriculum
from cmccl_jax.data import coco_captions, datasets, difficulty
from cmccl_jax.scoring import score_shards, scorers
from tests import captioned_fixtures as fx
from tests import tiny
from cmccl_jax.errors import UserError


def _build(data_dir, **params):
  builder = coco_captions.CocoCaptions2014(
      data_dir=str(data_dir), config=coco_captions.coco_captions_config(image_size=16, **params))
  builder.download_and_prepare()
  return builder


def _read(builder):
  return {split: {int(ex["id"]): ex for ex in tfds.as_numpy(builder.as_dataset(split=split))}
          for split in builder.info.splits}


@pytest.fixture(scope="module")
def coco_root(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("coco"))
  return fx.make_coco(root, karpathy_file=os.path.join(root, "dataset_coco.json"))


@pytest.fixture(scope="module")
def official(coco_root, tmp_path_factory):
  builder = _build(tmp_path_factory.mktemp("tfds"), root=coco_root)
  return builder, _read(builder), builder.info.metadata["skipped"]


@pytest.fixture(scope="module")
def karpathy(coco_root, tmp_path_factory):
  builder = _build(tmp_path_factory.mktemp("tfds"), root=coco_root, karpathy_split="dataset_coco.json")
  return builder, _read(builder), builder.info.metadata["skipped"]


def test_good_examples_are_all_there_with_their_captions_and_ids(official):
  builder, splits, _ = official
  expected = fx.expected_coco()
  assert sorted(splits) == ["train", "validation"]
  for split, examples in splits.items():
    assert sorted(examples) == sorted(expected[split])
    for image_id, ex in examples.items():
      assert [c.decode() for c in ex["captions"]] == expected[split][image_id]
      assert ex["image"].dtype == np.uint8 and ex["image"].shape[2] == 3 and min(ex["image"].shape[:2]) == 16
  assert builder.info.metadata["num_examples"] == {"train": 4, "validation": 3}


def test_scores_are_keyed_by_id_and_blocks_follow_the_train_edges(official):
  builder, splits, _ = official
  config = tiny.tiny_config(os.path.dirname(os.path.dirname(os.path.dirname(builder.data_dir))))
  config.curriculum.update(scorer="caption_length", num_blocks=2)
  config.scoring.scorers = ("caption_length",)
  score_shards.prepare_scores(config, builder)
  run = difficulty.load_run_difficulty(config, builder, Curriculum.from_config(config.curriculum, 12))
  train_ids, train_columns = run.table.split("train")
  train = train_columns["caption_length"]
  train_blocks = blocks_lib.quantile_blocks(train, train_ids, 2)
  np.testing.assert_array_equal(run.blocks["train"], train_blocks)
  np.testing.assert_array_equal(run.edges, blocks_lib.block_edges(train, train_blocks, 2))
  for split, examples in splits.items():
    ids, columns = run.table.split(split)
    assert sorted(examples) == ids.tolist()
    for row, example_id in enumerate(ids):
      words = np.mean([scorers.caption_words(c.decode()) for c in examples[example_id]["captions"]])
      assert columns["caption_length"][row] == pytest.approx(words)
      if split != "train":
        assert run.blocks[split][row] == blocks_lib.assign_blocks([words], run.edges)[0]


def test_corrupt_image_is_skipped_and_counted(official):
  _, splits, skipped = official
  assert skipped["train"]["corrupt_image"] == 1 and 4 not in splits["train"]


def test_truncated_image_is_skipped_and_counted(official):
  _, splits, skipped = official
  assert skipped["train"]["truncated_image"] == 1 and 5 not in splits["train"]


def test_missing_image_file_is_skipped_and_counted(official):
  _, splits, skipped = official
  assert skipped["train"]["missing_image"] == 1 and 6 not in splits["train"]


def test_empty_caption_is_dropped_and_counted(official):
  _, splits, skipped = official
  assert [c.decode() for c in splits["train"][3]["captions"]] == ["a red bus"]
  assert skipped["train"]["empty_caption"] == 2  # image 3's "" and image 8's whitespace


def test_whitespace_only_caption_leaves_its_image_without_captions(official):
  _, splits, skipped = official
  assert 8 not in splits["train"] and skipped["train"]["no_caption"] == 2  # images 7 and 8


def test_undecodable_caption_is_dropped_and_counted(official):
  _, splits, skipped = official
  assert [c.decode() for c in splits["train"][9]["captions"]] == ["a bird on a wire"]
  assert skipped["train"]["undecodable_caption"] == 1


def test_image_without_annotations_is_skipped_and_counted(official):
  _, splits, skipped = official
  assert 7 not in splits["train"] and skipped["train"]["no_caption"] == 2


def test_annotation_of_an_unlisted_image_is_counted_as_malformed(official, karpathy):
  assert official[2]["train"]["malformed_record"] == 1 and official[2]["validation"] == {"malformed_record": 1}
  # With Karpathy's split those orphans, and its entry without a valid cocoid, belong to no split.
  assert karpathy[2]["unassigned"] == {"malformed_record": 3}


def test_karpathy_split_assigns_restval_to_train(karpathy):
  builder, splits, skipped = karpathy
  expected = fx.expected_coco(karpathy=True)
  assert {s: sorted(ex) for s, ex in splits.items()} == {s: sorted(ex) for s, ex in expected.items()}
  assert sorted(splits["train"]) == [1, 2, 3, 101]
  # Captions come from the official annotation files, not from Karpathy's sentences.
  assert [c.decode() for c in splits["validation"][102]["captions"]] == ["a plate of food", "food on a plate"]
  assert skipped["train"] == {"corrupt_image": 1, "empty_caption": 1}
  assert skipped["test"] == {"undecodable_caption": 1}


def test_sources_name_the_build_directory(official, karpathy, coco_root):
  assert official[0].builder_config.name != karpathy[0].builder_config.name
  other = coco_captions.coco_captions_config(root=coco_root + "/", image_size=16)
  assert other.name == official[0].builder_config.name  # the same folder, spelled differently
  moved = coco_captions.coco_captions_config(root=os.path.join(coco_root, "copy", ".."), image_size=16)
  assert moved.name == official[0].builder_config.name
  elsewhere = coco_captions.coco_captions_config(root="/somewhere/else/" + os.path.basename(coco_root),
                                                 image_size=16)
  assert elsewhere.name != official[0].builder_config.name


def test_config_name_encodes_every_parameter(coco_root):
  base = coco_captions.coco_captions_config(root=coco_root)
  # The source and the image size, nothing of the curriculum: its scores are builds of their own.
  changes = dict(root=coco_root + "_other", karpathy_split="dataset_coco.json", image_size=0)
  fields = {f.name for f in dataclasses.fields(coco_captions.CocoCaptionsConfig)}
  assert set(changes) == fields - {f.name for f in dataclasses.fields(tfds.core.BuilderConfig)}
  names = {coco_captions.coco_captions_config(**{"root": coco_root, k: v}).name for k, v in changes.items()}
  assert len(names) == len(changes) and base.name not in names
  assert all(re.fullmatch(r"[\w.-]+", name) for name in names)
  with pytest.raises(ValueError, match="image_size must be >= 0"):
    coco_captions.coco_captions_config(root=coco_root, image_size=-1)


def test_missing_root_names_the_path_and_where_to_get_it(tmp_path):
  root = str(tmp_path / "no_coco")
  with pytest.raises(UserError, match=r"no_coco.*does not exist.*cocodataset.org"):
    _build(tmp_path / "tfds", root=root)


def test_missing_annotation_file_names_the_path(tmp_path, coco_root):
  root = str(tmp_path / "coco")
  shutil.copytree(coco_root, root)
  os.remove(os.path.join(root, "annotations", "captions_val2014.json"))
  with pytest.raises(UserError) as error:
    _build(tmp_path / "tfds", root=root)
  message = str(error.value)
  assert os.path.join(root, "annotations", "captions_val2014.json") in message
  assert "annotations_trainval2014.zip" in message and "cocodataset.org" in message
  assert "captions_train2014.json" not in message


def test_missing_image_folder_names_the_path(tmp_path, coco_root):
  root = str(tmp_path / "coco")
  shutil.copytree(coco_root, root)
  shutil.rmtree(os.path.join(root, "train2014"))
  with pytest.raises(UserError, match=r"coco/train2014/ \(the 2014 Train images, train2014.zip\)"):
    _build(tmp_path / "tfds", root=root)


def test_missing_karpathy_file_names_the_path(tmp_path, coco_root):
  with pytest.raises(UserError, match=r"nowhere/dataset_coco.json.*caption_datasets.zip"):
    _build(tmp_path / "tfds", root=coco_root, karpathy_split=str(tmp_path / "nowhere" / "dataset_coco.json"))


def test_broken_annotation_json_names_the_file(tmp_path, coco_root):
  root = str(tmp_path / "coco")
  shutil.copytree(coco_root, root)
  with open(os.path.join(root, "annotations", "captions_train2014.json"), "w") as f:
    f.write('{"images": [')
  with pytest.raises(ValueError, match=r"captions_train2014.json is not valid JSON"):
    _build(tmp_path / "tfds", root=root)


def test_coco_without_root_says_which_flag_to_set(tmp_path):
  config = tiny.tiny_config(str(tmp_path))
  config.data.name = "coco_captions2014"
  with pytest.raises(ValueError, match=r"--config.data.coco.root=/path/to/coco"):
    datasets.get_builder(config.data)


def test_get_builder_builds_coco_from_its_root_and_reuses_it(tmp_path, coco_root, official):
  config = tiny.tiny_config(str(tmp_path))
  config.data.name = "coco_captions2014"
  config.data.coco.update(root=coco_root, image_size=16)
  config.data.auto_prepare = False
  with pytest.raises(UserError, match="is not built in"):
    datasets.get_builder(config.data)
  config.data.data_dir = os.path.dirname(os.path.dirname(os.path.dirname(official[0].data_dir)))
  builder = datasets.get_builder(config.data)
  assert builder.is_prepared() and builder.builder_config.name == official[0].builder_config.name
