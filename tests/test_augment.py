"""Augmentation: stateless determinism, what each op does, synonym tables, config errors, the pipeline."""

import types

import numpy as np
import pytest
import tensorflow as tf

from cmccl_jax import tasks
from cmccl_jax.data import augment, pipeline, synonyms
from configs import default
from tests import tiny
from cmccl_jax.errors import UserError


def _seed(index, seed=0):
  return tf.constant([seed, index], tf.int64)


def _image(h=40, w=60, seed=0):
  return tf.constant(np.random.RandomState(seed).randint(0, 256, (h, w, 3)).astype(np.uint8))


def _all_on(c):
  c.augment.image.update(random_resized_crop=True, flip=True, color_jitter=1.0, color_jitter_prob=0.8,
                         blur_prob=0.5)
  c.augment.text.update(word_dropout=0.2, word_reorder=0.3)
  return c


def _words(s) -> list[str]:
  return s.numpy().decode().split()


# ---------------------------------------------------------------------------------------- images

def test_image_augmentation_is_a_function_of_seed_and_index():
  cfg = _all_on(default.get_config()).augment.image
  image = _image()
  a = augment.augment_image(image, _seed(5), 32, cfg).numpy()
  np.testing.assert_array_equal(a, augment.augment_image(image, _seed(5), 32, cfg).numpy())
  assert not np.array_equal(a, augment.augment_image(image, _seed(6), 32, cfg).numpy())
  assert not np.array_equal(a, augment.augment_image(image, _seed(5, seed=1), 32, cfg).numpy())


@pytest.mark.parametrize("shape", [(40, 60), (100, 30), (32, 32), (20, 20)])
def test_any_image_size_becomes_uint8_square(shape):
  c = _all_on(default.get_config())
  fn = tf.function(lambda im, s: augment.augment_image(im, s, 32, c.augment.image),
                   input_signature=[tf.TensorSpec([None, None, 3], tf.uint8), tf.TensorSpec([2], tf.int64)])
  out = fn(_image(*shape), _seed(1))
  assert out.shape == (32, 32, 3) and out.dtype == tf.uint8
  plain = augment.resize_shorter_center_crop(_image(*shape), 24)
  assert plain.shape == (24, 24, 3) and plain.dtype == tf.uint8


def test_resize_is_a_noop_at_the_stored_size_even_when_the_shape_is_unknown():
  image = _image(32, 32)
  assert augment.resize_shorter_center_crop(image, 32) is image
  fn = tf.function(lambda im: augment.resize_shorter_center_crop(im, 32),
                   input_signature=[tf.TensorSpec([None, None, 3], tf.uint8)])
  np.testing.assert_array_equal(fn(image).numpy(), image.numpy())


def test_center_crop_keeps_the_middle():
  # A 32×64 image whose left and right quarters are black and middle white: the centre crop is all white.
  image = np.zeros((32, 64, 3), np.uint8)
  image[:, 16:48] = 255
  out = augment.resize_shorter_center_crop(tf.constant(image), 32).numpy()
  assert out.min() == 255


def test_flip_mirrors_or_keeps():
  x = augment.to_float(_image(16, 16))
  flipped = 0
  for i in range(20):
    out = augment.random_flip(x, _seed(i)).numpy()
    if np.array_equal(out, x.numpy()[:, ::-1]):
      flipped += 1
    else:
      np.testing.assert_array_equal(out, x.numpy())
  assert 3 <= flipped <= 17


def test_crop_with_full_scale_and_square_ratio_is_a_plain_resize():
  image = _image(48, 48)
  for i in range(3):
    out = augment.random_resized_crop(image, 32, _seed(i), scale=(1.0, 1.0), ratio=(1.0, 1.0))
    np.testing.assert_allclose(out.numpy(), tf.image.resize(image, [32, 32], antialias=True).numpy(), atol=1e-4)


def test_crop_area_and_aspect_stay_in_range():
  # Each pixel holds its coordinates, so the resized crop's value span reveals the box.
  h, w = 64, 96
  yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
  image = tf.constant(np.stack([yy, xx, np.zeros_like(yy)], -1).astype(np.float32))
  boxes = set()
  for i in range(10):
    out = augment.random_resized_crop(image, 16, _seed(i), scale=(0.3, 0.6), ratio=(0.75, 4 / 3)).numpy()
    box_h = (out[-1, :, 0].mean() - out[0, :, 0].mean()) * 16 / 15
    box_w = (out[:, -1, 1].mean() - out[:, 0, 1].mean()) * 16 / 15
    assert 0.25 <= box_h * box_w / (h * w) <= 0.65 and 0.7 <= box_w / box_h <= 1.45, (box_h, box_w)
    boxes.add((round(box_h), round(box_w), round(out[0, 0, 0]), round(out[0, 0, 1])))
  assert len(boxes) > 5


def test_color_jitter_zero_is_identity_and_stays_in_range():
  x = augment.to_float(_image())
  assert augment.color_jitter(x, _seed(0), 0.0, 1.0) is x
  assert augment.color_jitter(x, _seed(0), 1.0, 0.0) is x
  outs = [augment.color_jitter(x, _seed(i), 1.0, 1.0).numpy() for i in range(4)]
  assert all(o.min() >= 0 and o.max() <= 1 and o.shape == x.shape for o in outs)
  assert all(not np.allclose(o, x.numpy()) for o in outs)


def test_blur_tiny_sigma_is_identity_and_blur_keeps_the_mean():
  x = augment.to_float(_image(32, 32))
  out = augment.gaussian_blur(x, _seed(0), 1.0, sigma=(1e-3, 1e-3))
  np.testing.assert_allclose(out.numpy(), x.numpy(), atol=1e-6)
  # A smooth image (mirrored edges are then nearly exact) keeps its mean; a constant one stays constant.
  yy, xx = np.meshgrid(np.linspace(0, 1, 32), np.linspace(0, 1, 32), indexing="ij")
  smooth = tf.constant(np.stack([yy, xx, yy * xx], -1).astype(np.float32))
  blurred = augment.gaussian_blur(smooth, _seed(1), 1.0, sigma=(2.0, 2.0)).numpy()
  np.testing.assert_allclose(blurred.mean(axis=(0, 1)), smooth.numpy().mean(axis=(0, 1)), atol=2e-3)
  const = tf.fill([20, 20, 3], 0.3)
  np.testing.assert_allclose(augment.gaussian_blur(const, _seed(2), 1.0).numpy(), 0.3, atol=1e-6)
  # Blur really smooths: neighbouring pixels of random noise get closer.
  noisy = augment.gaussian_blur(x, _seed(3), 1.0, sigma=(1.5, 1.5)).numpy()
  assert np.abs(np.diff(noisy, axis=1)).mean() < 0.5 * np.abs(np.diff(x.numpy(), axis=1)).mean()


def test_blur_matches_scipy():
  from scipy import ndimage
  x = augment.to_float(_image(24, 40)).numpy()
  out = augment.gaussian_blur(tf.constant(x), _seed(0), 1.0, sigma=(1.5, 1.5)).numpy()
  # Radius ceil(3 * 1.5) = 5; scipy's "reflect" is TF's "SYMMETRIC" mirror.
  ref = ndimage.gaussian_filter(x, sigma=(1.5, 1.5, 0), mode="reflect", truncate=5 / 1.5)
  np.testing.assert_allclose(out, ref, atol=1e-5)


def test_gaussian_kernel_matches_formula():
  k = augment.gaussian_kernel(tf.constant(1.3), 4).numpy()
  ref = np.exp(-np.arange(-4, 5) ** 2 / (2 * 1.3**2))
  np.testing.assert_allclose(k, ref / ref.sum(), rtol=1e-6)


# ---------------------------------------------------------------------------------------- captions

CAPTION = "one two three four five six seven eight nine ten"


def _map_captions(fn, n, caption=CAPTION):
  ds = tf.data.Dataset.range(n).map(lambda i: fn(tf.constant(caption), tf.stack([tf.constant(0, tf.int64), i])))
  return [s.decode().split() for s in ds.batch(n).get_single_element().numpy()]


def test_word_dropout_drops_about_p_and_never_everything():
  kept = _map_captions(lambda c, s: augment.join_words(augment.word_dropout(augment.split_words(c), s, 0.3)), 1000)
  dropped = 1 - sum(map(len, kept)) / (10 * len(kept))
  assert abs(dropped - 0.3) < 0.02, dropped
  assert all(k == [w for w in CAPTION.split() if w in k] for k in kept)  # order kept
  for p in (0.9, 1.0):
    kept = _map_captions(lambda c, s: augment.join_words(augment.word_dropout(augment.split_words(c), s, p)), 300,
                         caption="a red circle")
    assert all(kept) and (p < 1 or all(len(k) == 1 for k in kept))
  empty = augment.word_dropout(augment.split_words(tf.constant("")), _seed(0), 0.5)
  assert empty.shape == (0,)


def test_reorder_keeps_the_words_and_moves_each_by_at_most_one():
  outs = _map_captions(lambda c, s: augment.join_words(augment.swap_adjacent(augment.split_words(c), s, 0.5)), 200)
  words = CAPTION.split()
  for out in outs:
    assert sorted(out) == sorted(words)
    assert all(abs(out.index(w) - i) <= 1 for i, w in enumerate(words))
  moved = np.mean([o != words for o in outs])
  assert 0.5 < moved < 1.0
  assert _map_captions(lambda c, s: augment.join_words(augment.swap_adjacent(augment.split_words(c), s, 0.0)),
                       5) == [words] * 5


def test_synonyms_come_only_from_the_table():
  table = {"red": ["crimson", "scarlet"], "circle": ["ring"], "two": ["2"]}
  syn = augment.SynonymTable(table)
  words = augment.split_words(tf.constant("Two red circles, a red circle and a blue square."))
  for i in range(10):
    out = [w.decode() for w in syn.replace(words, _seed(i), 1.0).numpy()]
    for before, after in zip([w.decode() for w in words.numpy()], out, strict=True):
      assert after in table.get(before.lower(), [before])
      assert before.lower() not in table or after != before  # prob 1 replaces every table word
  assert [w.decode() for w in syn.replace(words, _seed(0), 0.0).numpy()] == [w.decode() for w in words.numpy()]
  seen = {w.decode() for i in range(30) for w in syn.replace(words, _seed(i), 1.0).numpy()}
  assert {"crimson", "scarlet"} <= seen


def test_caption_augmentation_is_a_function_of_seed_and_index():
  c = _all_on(default.get_config())
  c.augment.text.synonym_prob = 0.5
  table = augment.SynonymTable({"red": ["crimson"], "blue": ["azure"]})
  cap = tf.constant("a red circle is left of a blue square")
  a = augment.augment_caption(cap, _seed(3), c.augment.text, table)
  assert a.numpy() == augment.augment_caption(cap, _seed(3), c.augment.text, table).numpy()
  assert len({augment.augment_caption(cap, _seed(i), c.augment.text, table).numpy() for i in range(10)}) > 3
  off = default.get_config().augment.text
  assert augment.augment_caption(cap, _seed(3), off) is cap


# ---------------------------------------------------------------------------------------- synonym tables

def test_nearest_neighbours_blocked_matches_brute_force():
  x = np.random.RandomState(0).normal(size=(50, 8)).astype(np.float32)
  got = synonyms.nearest_neighbours(x, top_k=4, min_cosine=0.6, block_size=7)
  xn = x / np.linalg.norm(x, axis=1, keepdims=True)
  sim = xn @ xn.T
  np.fill_diagonal(sim, -np.inf)
  for i, row in enumerate(got):
    order = np.argsort(-sim[i])[:4]
    assert [j for j, _ in row] == [int(j) for j in order if sim[i, j] >= 0.6]
    np.testing.assert_allclose([s for _, s in row], [sim[i, j] for j, _ in row], rtol=1e-5)
  assert any(len(row) < 4 for row in got) and any(len(row) == 4 for row in got)


def test_table_from_a_tiny_embedding_matrix():
  vocab = ["[PAD]", "[UNK]", "cat", "kitten", "dog", "puppy", "dogs", "##ing", "ox", "car", "2024"]
  e = np.zeros((len(vocab), 4), np.float32)
  e[vocab.index("cat")] = [1, 0.1, 0, 0]
  e[vocab.index("kitten")] = [1, 0.2, 0, 0]
  e[vocab.index("##ing")] = [1, 0.15, 0, 0]   # a word piece: never a head or a synonym
  e[vocab.index("dog")] = [0, 1, 0.1, 0]
  e[vocab.index("puppy")] = [0, 1, 0.2, 0]
  e[vocab.index("dogs")] = [0, 1, 0.12, 0]    # an inflection of dog: dropped although nearest
  e[vocab.index("ox")] = [0, 0, 1, 0]         # too short
  e[vocab.index("car")] = [0, 0, 0, 1]        # nothing close: no entry
  e[vocab.index("2024")] = [1, 0.1, 0, 0]     # not alphabetic
  e[:2] = [[1, 0.1, 0, 0], [0, 1, 0.1, 0]]    # special tokens next to cat and dog: ignored
  table = synonyms.table_from_embeddings(vocab, e, top_k=2, min_cosine=0.9, block_size=2)
  assert table == {"cat": ["kitten"], "kitten": ["cat"], "dog": ["puppy"], "puppy": ["dogs", "dog"],
                   "dogs": ["puppy"]}


def test_tsv_round_trip_and_errors(tmp_path):
  path = str(tmp_path / "syn.tsv")
  synonyms.write_tsv({"red": ["crimson", "scarlet"], "car": ["automobile"]}, path, header="made by a test")
  assert synonyms.read_tsv(path) == {"red": ["crimson", "scarlet"], "car": ["automobile"]}
  assert synonyms.load(path, str(tmp_path)) == synonyms.read_tsv(path)
  bad = tmp_path / "bad.tsv"
  bad.write_text("red\tcrimson\nblue azure\n")
  with pytest.raises(ValueError, match=r"bad.tsv:2"):
    synonyms.read_tsv(str(bad))
  with pytest.raises(UserError, match=r"nope.tsv.*preprocess.synonyms"):
    synonyms.load(str(tmp_path / "nope.tsv"), str(tmp_path))


def test_default_table_is_read_from_the_cache(tmp_path):
  cached = synonyms.default_table_path(str(tmp_path))
  synonyms.write_tsv({"bike": ["bicycle"]}, cached)
  assert synonyms.load("default", str(tmp_path)) == {"bike": ["bicycle"]}


# ---------------------------------------------------------------------------------------- config

@pytest.mark.parametrize("field,value,match", [
    ("augment.image.crop_scale", (0.9, 0.5), "augment.image.crop_scale"),
    ("augment.image.crop_scale", (0.0, 1.0), "augment.image.crop_scale"),
    ("augment.image.crop_ratio", (4 / 3, 3 / 4), "augment.image.crop_ratio"),
    ("augment.image.blur_sigma", (2.0, 0.1), "augment.image.blur_sigma"),
    ("augment.image.color_jitter", 3.0, "augment.image.color_jitter"),
    ("augment.image.color_jitter_prob", 1.5, "augment.image.color_jitter_prob"),
    ("augment.image.blur_prob", -0.1, "augment.image.blur_prob"),
    ("augment.text.word_dropout", 1.2, "augment.text.word_dropout"),
    ("augment.text.word_reorder", -1.0, "augment.text.word_reorder"),
    ("augment.text.synonym_prob", 0.1, "synonyms=default"),
    ("data.image_size", 0, "data.image_size"),
])
def test_bad_augment_config_names_the_field(field, value, match):
  c = default.get_config()
  block, name = field.rsplit(".", 1)
  node = c
  for part in block.split("."):
    node = node[part]
  node[name] = value
  with pytest.raises(ValueError, match=match):
    tasks.validate(c)


def test_missing_synonym_file_names_the_path_and_how_to_make_it(tmp_path):
  c = default.get_config()
  c.augment.text.update(synonym_prob=0.1, synonyms=str(tmp_path / "syn.tsv"))
  with pytest.raises(UserError, match=r"syn.tsv.*python -m preprocess.synonyms --out="):
    tasks.validate(c)
  c.augment.text.synonyms = "default"
  tasks.validate(c)
  tasks.validate(_all_on(default.get_config()))


def test_variable_size_dataset_needs_image_size():
  builder = types.SimpleNamespace(name="coco_captions",
                                  info=types.SimpleNamespace(features={"image": types.SimpleNamespace(
                                      shape=(None, None, 3))}))
  c = default.get_config()
  with pytest.raises(ValueError, match=r"--config.data.image_size=224"):
    pipeline.image_shape(builder, c)
  c.data.image_size = 64
  assert pipeline.image_shape(builder, c) == (64, 64, 3)


# ---------------------------------------------------------------------------------------- pipeline

def _first_batch(config, tokenizer, batches=1):
  builder, run = tiny.tiny_difficulty(config)
  it = iter(pipeline.train_dataset(builder, config, tokenizer, 8, run))
  return builder, [next(it) for _ in range(batches)]


def test_train_images_without_augmentation_are_the_stored_ones(tiny_config):
  from cmccl_jax.data.tokenizer import build_tokenizer
  tokenizer = build_tokenizer(tiny_config.tokenizer)
  builder, (batch,) = _first_batch(tiny_config, tokenizer)
  assert pipeline.image_shape(builder, tiny_config) == (32, 32, 3)
  stored = {int(ex["id"]): ex["image"] for ex in builder.as_dataset(split="train").as_numpy_iterator()}
  for image, id_ in zip(batch["image"], batch["id"]):
    np.testing.assert_array_equal(image, stored[int(id_)])
  tiny_config.data.image_size = 32
  _, (same,) = _first_batch(tiny_config, tokenizer)
  np.testing.assert_array_equal(same["image"], batch["image"])


def test_augmented_train_stream_runs_and_resumes_exactly(tiny_config, tmp_path):
  from cmccl_jax.data.tokenizer import build_tokenizer
  c = _all_on(tiny_config)
  c.data.image_size = 24
  table = tmp_path / "syn.tsv"
  table.write_text("red\tcrimson\ncircle\tring\n")
  c.augment.text.update(synonym_prob=0.5, synonyms=str(table))
  tasks.validate(c)
  tokenizer = build_tokenizer(c.tokenizer)
  builder, run = tiny.tiny_difficulty(c)
  it = iter(pipeline.train_dataset(builder, c, tokenizer, 8, run))
  first = next(it)
  assert first["image"].shape == (8, 24, 24, 3) and first["image"].dtype == np.uint8
  assert first["tokens"].shape == (8, c.tokenizer.max_len)
  ckpt = tf.train.Checkpoint(iterator=it)
  prefix = ckpt.write(str(tmp_path / "it"))
  expected = [next(it) for _ in range(2)]
  fresh = iter(pipeline.train_dataset(builder, c, tokenizer, 8, run))
  tf.train.Checkpoint(iterator=fresh).read(prefix).assert_consumed()
  for want in expected:
    got = next(fresh)
    for key in want:
      np.testing.assert_array_equal(got[key], want[key])
  # Captions as the model reads them: [UNK] marks the table's words missing from the synthetic vocabulary.
  text = " ".join(tokenizer.decode(np.concatenate([first["tokens"]] + [e["tokens"] for e in expected])))
  assert "[UNK]" in text


def test_eval_images_are_resized_not_augmented(tiny_config):
  from cmccl_jax.data import datasets
  from cmccl_jax.data.tokenizer import build_tokenizer
  builder = datasets.get_builder(tiny_config.data)
  tokenizer = build_tokenizer(tiny_config.tokenizer)
  batch = next(pipeline.eval_examples(builder, "test", tokenizer, 8, 20))
  assert batch["image"].shape == (8, 20, 20, 3) and batch["image"].dtype == np.uint8
  stored = next(pipeline.eval_examples(builder, "test", tokenizer, 8, 32))
  raw = next(builder.as_dataset(split="test").batch(8).as_numpy_iterator())
  np.testing.assert_array_equal(stored["image"], raw["image"])


def test_decode_shows_what_the_model_reads():
  from cmccl_jax.data.tokenizer import Tokenizer
  tokenizer = Tokenizer(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "a", "red", "circ", "##le"], max_len=8)
  ids = tokenizer(tf.constant(["A red circle", "a blue circle"])).numpy()
  assert tokenizer.decode(ids) == ["a red circle", "a [UNK] circle"]


def test_train_loop_writes_the_first_batch_to_tensorboard():
  from cmccl_jax.data.tokenizer import Tokenizer
  from cmccl_jax import summaries
  calls = {}
  writer = types.SimpleNamespace(write_images=lambda step, d: calls.update(images=(step, d)),
                                 write_texts=lambda step, d: calls.update(texts=(step, d)))
  tokenizer = Tokenizer(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "a", "red"], max_len=6)
  batch = {"image": np.full((5, 8, 8, 3), 200, np.uint8),
           "tokens": tokenizer(tf.constant(["a red"] * 5)).numpy()}
  summaries.write_input_examples(writer, 3, batch, tokenizer)
  step, images = calls["images"]
  grid = images["train/augmented_examples"]
  assert step == 3 and grid.shape == (1, 2 * 10, 3 * 10, 3) and (grid == 200).sum() == 5 * 8 * 8 * 3
  assert calls["texts"][1]["train/augmented_captions"].count("`a red`") == 5
