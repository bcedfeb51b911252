"""tf.data input pipelines over the TFDS shards.

Training: each process reads its own slice of the split, shuffles, picks one
random caption per image per step and augments image and caption (all stateless
in the element index, so the stream is a pure function of the seed and the
iterator state can be checkpointed), and batches to the per-process batch size.
Evaluation: every process walks the whole split in the same order, so all
processes run the same number of sharded steps; it never augments.

Images of any stored size reach the model at `image_shape(builder, config)`:
shorter side resized to `config.data.image_size`, centre crop (or the random
resized crop of `config.augment.image`).
"""

import functools

import jax
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from cmccl_jax.data import augment, curriculum_sampler, synonyms
from cmccl_jax.data.difficulty import RunDifficulty
from cmccl_jax.data.teacher_features import RunTeachers
from cmccl_jax.data.tokenizer import Tokenizer
from cmccl_jax.errors import UserError


def _options() -> tf.data.Options:
  options = tf.data.Options()
  options.deterministic = True
  options.experimental_optimization.map_parallelization = True
  return options


def image_shape(builder: tfds.core.DatasetBuilder, config) -> tuple[int, int, int]:
  """The model's input image shape: `config.data.image_size` squared, or the dataset's fixed stored size.

  The one place that decides it, so the model, training and evaluation agree.
  """
  stored = tuple(builder.info.features["image"].shape)
  channels = stored[-1] or 3
  size = config.data.get("image_size")
  if size is None:
    if None in stored[:2] or stored[0] != stored[1]:
      raise UserError(
          f"{builder.name} stores images of {'varying size' if None in stored[:2] else f'size {stored}'} "
          "and config.data.image_size is None; set the model's input resolution, e.g. "
          "--config.data.image_size=224 (shorter side resized to it, then a centre crop).")
    return (int(stored[0]), int(stored[1]), int(channels))
  if int(size) <= 0:
    raise UserError(f"config.data.image_size={size!r} must be a positive integer (or None for the stored size).")
  return (int(size), int(size), int(channels))


def _train_example(index, example, *, image_feature, lookup, seed: int, size: int, augment_config,
                   synonym_table, teacher_lookup=None):
  captions = example["captions"]
  element_seed = tf.stack([tf.constant(seed, tf.int64), index])
  pick = tf.random.stateless_uniform([], seed=element_seed, maxval=tf.shape(captions)[0], dtype=tf.int32)
  image = image_feature.decode_example(example["image"])
  teachers = {}
  if teacher_lookup is not None:  # I2MCL's precomputed teacher features; the text one of the picked caption
    teachers = teacher_lookup(example["id"])
    if "teacher/text" in teachers:
      teachers["teacher/text"] = teachers["teacher/text"][pick]
  return {
      **teachers,
      "image": augment.augment_image(image, element_seed, size, augment_config.image),
      "caption": augment.augment_caption(captions[pick], element_seed, augment_config.text, synonym_table),
      **lookup(example["id"]),  # block and difficulty, joined by id (0 for the online "learned" scorer)
      "id": example["id"],
  }


def _tokenize_batch(tokenizer: Tokenizer):
  """Tokenizes a whole batch of captions at once: far cheaper than per example."""
  def tokenize(batch):
    batch = dict(batch)
    batch["tokens"] = tokenizer(batch.pop("caption"))
    return batch
  return tokenize


def train_dataset(builder: tfds.core.DatasetBuilder, config, tokenizer: Tokenizer, local_batch_size: int,
                  difficulty: RunDifficulty, teachers: RunTeachers | None = None) -> tf.data.Dataset:
  """Infinite, shuffled, augmented, batched training stream of this process's slice.

  Each example gets its `block` and `difficulty` from `difficulty` (joined by id), and with `teachers` its
  teacher features "teacher/<modality>" (the text one of the caption it trains on).
  With the curriculum's host sampler each batch is drawn from the blocks its step's
  pacing shows (curriculum_sampler); otherwise uniformly, and the device mask paces.
  """
  size = image_shape(builder, config)[0]
  table = None
  if config.augment.text.synonym_prob > 0:
    table = augment.SynonymTable(synonyms.load(config.augment.text.synonyms, config.data.data_dir))
  split = tfds.split_for_jax_process(config.data.train_split, drop_remainder=True)
  seed = int(config.seed) * 1000 + jax.process_index()

  def read(shuffle_seed: int) -> tf.data.Dataset:
    return builder.as_dataset(split=split, shuffle_files=True, read_config=tfds.ReadConfig(shuffle_seed=shuffle_seed),
                              decoders={"image": tfds.decode.SkipDecoding()})

  ds = read(seed).repeat().shuffle(int(config.data.shuffle_buffer), seed=seed, reshuffle_each_iteration=True)
  train_split = str(config.data.train_split).split("[")[0]  # "train[:80%]" reads train
  lookup = difficulty.train_lookup(train_split)
  teacher_lookup = teachers.train_lookup(train_split) if teachers is not None else None
  curriculum = difficulty.curriculum
  if curriculum.samples_on_host:
    block_of = lambda ids: lookup(ids)["block"]
    sizes = curriculum_sampler.block_sizes(read(seed).map(lambda ex: ex["id"]), block_of, curriculum.num_blocks)
    ds = curriculum_sampler.paced_stream(ds, curriculum=curriculum, local_batch_size=local_batch_size,
                                         seed=seed + 1, sizes=sizes, block_of=block_of)
  ds = ds.enumerate().map(
      functools.partial(_train_example, image_feature=builder.info.features["image"], lookup=lookup,
                        seed=seed, size=size, augment_config=config.augment, synonym_table=table,
                        teacher_lookup=teacher_lookup),
      num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  ds = ds.batch(local_batch_size, drop_remainder=True)
  ds = ds.map(_tokenize_batch(tokenizer), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(2)
  return ds.with_options(_options())


def eval_examples(builder: tfds.core.DatasetBuilder, split: str, tokenizer: Tokenizer,
                  batch_size: int, image_size: int, difficulty: RunDifficulty | None = None):
  """Yields {'image': uint8 [b, S, S, 3], 'tokens': int32 [b, C, L], 'captions': bytes [b, C], 'id': [b]},
  with `difficulty` 'difficulty': {scorer: [b]} of every scorer the run reads, and for a dataset with
  distractor captions 'distractor_tokens': int32 [b, C, L].

  Images are resized (shorter side to `image_size`) and centre-cropped, never
  augmented. Images with fewer captions get all-padding rows. The last batch may
  be short; callers pad it (fixed shapes keep one compilation).
  """
  scores = difficulty.scores_lookup(split) if difficulty is not None else None

  def prepare(example):
    out = {"image": augment.resize_shorter_center_crop(example["image"], image_size),
           "tokens": tokenizer(example["captions"]), "captions": example["captions"], "id": example["id"]}
    if "distractors" in example:
      out["distractor_tokens"] = tokenizer(example["distractors"])
    if scores is not None:
      out["difficulty"] = scores(example["id"])
    return out

  ds = builder.as_dataset(split=split, shuffle_files=False)
  ds = ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  ds = ds.padded_batch(batch_size).prefetch(2).with_options(_options())
  yield from tfds.as_numpy(ds)
