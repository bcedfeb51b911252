"""tf.data input pipelines over the TFDS shards.

Training: each process reads its own slice of the split, shuffles, picks one
random caption per image per step (stateless in the element index, so the stream
is a pure function of the seed and the iterator state can be checkpointed), and
batches to the per-process batch size. Evaluation: every process walks the whole
split in the same order, so all processes run the same number of sharded steps.
"""

import functools

import jax
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from cmccl_jax.data.tokenizer import Tokenizer


def _options() -> tf.data.Options:
  options = tf.data.Options()
  options.deterministic = True
  options.experimental_optimization.map_parallelization = True
  return options


def _train_example(index, example, *, image_feature, scorer: str, seed: int):
  captions = example["captions"]
  pick = tf.random.stateless_uniform(
      [], seed=tf.stack([tf.constant(seed, tf.int64), index]), maxval=tf.shape(captions)[0], dtype=tf.int32)
  return {
      "image": image_feature.decode_example(example["image"]),
      "caption": captions[pick],
      "block": tf.cast(example["block"][scorer], tf.int32),
      "difficulty": tf.cast(example["difficulty"][scorer], tf.float32),
      "id": example["id"],
  }


def _tokenize_batch(tokenizer: Tokenizer):
  """Tokenizes a whole batch of captions at once: far cheaper than per example."""
  def tokenize(batch):
    batch = dict(batch)
    batch["tokens"] = tokenizer(batch.pop("caption"))
    return batch
  return tokenize


def train_dataset(builder: tfds.core.DatasetBuilder, config, tokenizer: Tokenizer,
                  local_batch_size: int) -> tf.data.Dataset:
  """Infinite, shuffled, batched training stream of this process's slice."""
  split = tfds.split_for_jax_process(config.data.train_split, drop_remainder=True)
  seed = int(config.seed) * 1000 + jax.process_index()
  ds = builder.as_dataset(
      split=split, shuffle_files=True, read_config=tfds.ReadConfig(shuffle_seed=seed),
      decoders={"image": tfds.decode.SkipDecoding()})
  ds = ds.repeat().shuffle(int(config.data.shuffle_buffer), seed=seed, reshuffle_each_iteration=True)
  ds = ds.enumerate().map(
      functools.partial(_train_example, image_feature=builder.info.features["image"],
                        scorer=config.curriculum.scorer, seed=seed),
      num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  ds = ds.batch(local_batch_size, drop_remainder=True)
  ds = ds.map(_tokenize_batch(tokenizer), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(2)
  return ds.with_options(_options())


def eval_examples(builder: tfds.core.DatasetBuilder, split: str, tokenizer: Tokenizer,
                  batch_size: int):
  """Yields {'image': uint8 [b, H, W, 3], 'tokens': int32 [b, C, L], 'id': [b]} over the whole split.

  The last batch may be short; callers pad it (fixed shapes keep one compilation).
  """
  def prepare(example):
    return {"image": example["image"], "tokens": tokenizer(example["captions"]), "id": example["id"]}

  ds = builder.as_dataset(split=split, shuffle_files=False)
  ds = ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  ds = ds.padded_batch(batch_size).prefetch(2).with_options(_options())
  yield from tfds.as_numpy(ds)


def pad_rows(x: np.ndarray, rows: int) -> np.ndarray:
  """Pads the leading dimension with zeros up to `rows`."""
  if x.shape[0] == rows:
    return x
  return np.concatenate([x, np.zeros((rows - x.shape[0],) + x.shape[1:], x.dtype)], axis=0)
