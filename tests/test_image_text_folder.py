"""image_text_folder from tiny jsonl and tsv folders, the shared image checks, and the training pipeline."""

import io
import os
import shutil

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image, ImageFile

from cmccl_jax.curriculum.curriculum import Curriculum
from cmccl_jax.data import captioned_images as ci
from cmccl_jax.data import datasets, difficulty
from cmccl_jax.data import image_text_folder as itf
from cmccl_jax.data import pipeline
from cmccl_jax.data.tokenizer import SPECIAL_TOKENS, Tokenizer
from cmccl_jax.scoring import score_shards
from tests import captioned_fixtures as fx
from tests import tiny
from cmccl_jax.errors import UserError


def _build(data_dir, root, **params):
  builder = itf.ImageTextFolder(
      data_dir=str(data_dir), config=itf.image_text_folder_config(root=root, image_size=16, **params))
  builder.download_and_prepare()
  return builder


def _by_captions(builder):
  """{split: {first caption: example}}: captions identify the fixture images."""
  return {split: {ex["captions"][0].decode(): ex for ex in tfds.as_numpy(builder.as_dataset(split=split))}
          for split in builder.info.splits}


def _check_against_fixture(builder):
  splits = _by_captions(builder)
  expected = fx.expected_folder()
  assert sorted(splits) == ["test", "train", "validation"]
  for split, examples in splits.items():
    want = {captions[0]: captions for captions in expected[split].values()}
    assert sorted(examples) == sorted(want)
    for first, ex in examples.items():
      assert [c.decode() for c in ex["captions"]] == want[first]
      assert ex["image"].shape[2] == 3 and min(ex["image"].shape[:2]) == 16
  ids = [int(ex["id"]) for examples in splits.values() for ex in examples.values()]
  assert len(set(ids)) == len(ids) and min(ids) >= 0
  skipped = builder.info.metadata["skipped"]
  for split in ("train", "validation", "test", "unassigned"):
    assert skipped.get(split, {}) == fx.FOLDER_SKIPS.get(split, {}), split
  return splits


@pytest.fixture(scope="module")
def jsonl_build(tmp_path_factory):
  root = fx.make_folder(str(tmp_path_factory.mktemp("folder")), fmt="jsonl")
  return _build(tmp_path_factory.mktemp("tfds"), root)


def test_jsonl_folder_keeps_the_good_images_with_grouped_captions(jsonl_build):
  splits = _check_against_fixture(jsonl_build)
  dog = splits["train"]["a dog"]
  assert [c.decode() for c in dog["captions"]] == ["a dog", "a brown dog", "dog on grass"]  # from two lines
  assert [c.decode() for c in splits["test"]["a bird in the sky"]["captions"]] == ["a bird in the sky"]


def test_tsv_folder_gives_the_same_examples(tmp_path):
  root = fx.make_folder(str(tmp_path / "folder"), fmt="tsv")
  _check_against_fixture(_build(tmp_path / "tfds", root))


def test_tsv_without_header_or_split_column(tmp_path):
  table = {f"img{i}.jpg": ("rgb", [f"caption {i}", f"another caption {i}"], "train") for i in range(4)}
  root = fx.make_folder(str(tmp_path / "folder"), fmt="tsv", table=table, with_split=False)
  path = os.path.join(root, "captions.tsv")
  with open(path) as f:
    lines = f.read().splitlines()[1:]  # drop the header
  with open(os.path.join(root, "mine.tsv"), "w") as f:
    f.write("\n".join(lines) + "\n")
  os.remove(path)
  builder = _build(tmp_path / "tfds", root, captions_file="mine.tsv", validation_fraction=0.0, test_fraction=0.0)
  examples = _by_captions(builder)["train"]
  assert sorted(examples) == [f"caption {i}" for i in range(4)]
  assert all(len(ex["captions"]) == 2 for ex in examples.values())
  assert builder.info.metadata["num_examples"] == {"train": 4, "validation": 0, "test": 0}


def test_hash_split_depends_only_on_each_image_path(tmp_path):
  table = {f"photos/{i:02d}.jpg": ("rgb", [f"photo number {i}"], None) for i in range(12)}
  root = fx.make_folder(str(tmp_path / "a"), table=table, with_split=False)
  first = _build(tmp_path / "tfds", root, validation_fraction=0.25, test_fraction=0.25)
  # A copy elsewhere, with one more image, keeps every image's split.
  other = str(tmp_path / "b")
  shutil.copytree(root, other)
  fx.write_file(os.path.join(other, "photos/extra.jpg"), "rgb", 0)
  with open(os.path.join(other, "captions.jsonl"), "a") as f:
    f.write('{"image": "photos/extra.jpg", "caption": "one more photo"}\n')
  second = _build(tmp_path / "tfds", other, validation_fraction=0.25, test_fraction=0.25)
  assert first.builder_config.name != second.builder_config.name
  a, b = _by_captions(first), _by_captions(second)
  assert all(a[split] for split in ("train", "validation", "test"))
  for split in a:
    assert sorted(a[split]) == sorted(set(b[split]) - {"one more photo"})
    for caption, ex in a[split].items():
      assert ex["id"] == b[split][caption]["id"]  # ids are stable too


def test_missing_folder_and_captions_file_are_named(tmp_path):
  with pytest.raises(UserError, match=r"no_folder .*does not exist"):
    _build(tmp_path / "tfds", str(tmp_path / "no_folder"))
  (tmp_path / "empty").mkdir()
  with pytest.raises(UserError, match=r"empty: looked for captions.jsonl and captions.tsv"):
    _build(tmp_path / "tfds", str(tmp_path / "empty"))
  with pytest.raises(UserError, match=r"empty/nope.jsonl .*does not exist"):
    _build(tmp_path / "tfds", str(tmp_path / "empty"), captions_file="nope.jsonl")


def test_folder_without_any_usable_training_image_says_what_was_skipped(tmp_path):
  table = {"bad.jpg": ("corrupt", ["a corrupt file"], "train"), "cut.jpg": ("truncated", ["cut"], "train")}
  root = fx.make_folder(str(tmp_path / "folder"), table=table)
  with pytest.raises(ValueError, match=r"no usable training example.*corrupt_image.*truncated_image"):
    _build(tmp_path / "tfds", root)


def test_folder_without_root_says_which_flag_to_set(tmp_path):
  config = tiny.tiny_config(str(tmp_path))
  config.data.name = "image_text_folder"
  with pytest.raises(ValueError, match=r"--config.data.folder.root=/path/to/folder"):
    datasets.get_builder(config.data)


def test_built_shards_feed_the_training_pipeline(jsonl_build, tmp_path):
  config = tiny.tiny_config(str(tmp_path))
  config.data.name = "image_text_folder"
  config.data.image_size = 16
  config.curriculum.scorer = "caption_length"
  config.curriculum.num_blocks = 2
  config.curriculum.phase_steps = (6,)
  config.scoring.scorers = ("caption_length",)
  assert score_shards.prepare_scores(config, jsonl_build) == ["caption_length"]
  assert score_shards.prepare_scores(config, jsonl_build) == []  # built once, beside the images
  run = difficulty.load_run_difficulty(config, jsonl_build, Curriculum.from_config(config.curriculum, 12))
  words = sorted({w for caps in fx.expected_folder()["train"].values() for c in caps for w in c.split()})
  tokenizer = Tokenizer(list(SPECIAL_TOKENS) + words, max_len=8)
  batch = next(pipeline.train_dataset(jsonl_build, config, tokenizer, 3, run).as_numpy_iterator())
  assert batch["image"].shape == (3, 16, 16, 3) and batch["image"].dtype == np.uint8
  assert batch["tokens"].shape == (3, 8) and np.all(batch["tokens"][:, 0] == SPECIAL_TOKENS.index("[CLS]"))
  assert not np.any(batch["tokens"] == SPECIAL_TOKENS.index("[UNK]"))
  assert batch["block"].shape == (3,) and set(batch["block"]) <= {0, 1}


# ----------------------------------------------------------------------------- the shared image checks

def _png(mode, color, size=(6, 10)):
  buffer = io.BytesIO()
  Image.new(mode, size, color).save(buffer, format="PNG")
  return buffer.getvalue()


def test_decode_image_converts_every_mode_to_rgb(tmp_path):
  cases = {"gray.png": _png("L", 100), "rgba.png": _png("RGBA", (255, 0, 0, 0)), "la.png": _png("LA", (0, 0)),
           "palette.png": _png("P", 3)}
  for name, data in cases.items():
    (tmp_path / name).write_bytes(data)
  fx.write_file(str(tmp_path / "cmyk.jpg"), "cmyk", 0)
  gray = np.asarray(ci.decode_image(str(tmp_path / "gray.png"), 0))
  assert gray.shape == (10, 6, 3) and np.all(gray == 100)
  for name in ("rgba.png", "la.png"):  # fully transparent: white, not the colour underneath
    assert np.all(np.asarray(ci.decode_image(str(tmp_path / name), 0)) == 255), name
  for name in ("palette.png", "cmyk.jpg"):
    assert ci.decode_image(str(tmp_path / name), 0).mode == "RGB"


def test_decode_image_resizes_the_shorter_side(tmp_path):
  (tmp_path / "wide.png").write_bytes(_png("RGB", (1, 2, 3), size=(40, 20)))
  (tmp_path / "tall.jpg").write_bytes(fx.image_bytes(0, size=(48, 24)))
  assert ci.decode_image(str(tmp_path / "wide.png"), 10).size == (20, 10)
  assert ci.decode_image(str(tmp_path / "wide.png"), 30).size == (60, 30)  # small images are enlarged
  assert ci.decode_image(str(tmp_path / "tall.jpg"), 8).size == (8, 16)
  assert ci.decode_image(str(tmp_path / "tall.jpg"), 0).size == (24, 48)


def test_truncation_is_detected_even_if_pil_was_told_to_accept_it(tmp_path):
  path = str(tmp_path / "cut.jpg")
  fx.write_file(path, "truncated", 0)
  previous = ImageFile.LOAD_TRUNCATED_IMAGES
  ImageFile.LOAD_TRUNCATED_IMAGES = True
  try:
    with pytest.raises(ci.BadImage) as error:
      ci.decode_image(path, 16)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # restored
  finally:
    ImageFile.LOAD_TRUNCATED_IMAGES = previous
  assert error.value.reason == "truncated_image"
  with Image.open(path) as image:  # the header is valid: only a full decode tells
    assert image.size == (48, 40)


def test_caption_cleaning():
  skipped = ci.SkipCounter()
  raw = ["  two\n dogs\u00a0 ", "", " \t", "caf\udce9", None, "ok"]
  assert ci.clean_captions(raw, "train", skipped) == ("two dogs", "ok")
  assert skipped.as_dict(["train"]) == {
      "train": {"empty_caption": 2, "malformed_record": 1, "undecodable_caption": 1}}
