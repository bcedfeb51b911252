"""Stateless augmentation of training images and caption strings inside tf.data.

Every random choice is drawn with `tf.random.stateless_*` from a seed derived
from (run seed, element index), one `stateless_fold_in` per operation, exactly
like the caption pick in `pipeline._train_example`. The augmented stream is then
a pure function of the seed and the element index, so a checkpointed tf.data
iterator resumes on the very same augmented examples.

Images: an Inception-style random resized crop (or a shorter-side resize and
centre crop), horizontal flip, SimCLR-style colour jitter and Gaussian blur.
Captions, before tokenization: synonym replacement from a table
(`cmccl_jax.data.synonyms`), swaps of adjacent words, and word dropout.

Evaluation never augments; it only resizes (`resize_shorter_center_crop`).
"""

import math

import numpy as np
import tensorflow as tf

# Folded into the per-example seed, one per operation, so operations draw independently.
_CROP, _FLIP, _JITTER, _BLUR, _SYNONYM, _REORDER, _DROPOUT = range(1, 8)
# to_hash_bucket_fast buckets: a 63-bit fingerprint, so distinct table words never collide in practice.
_HASH_BUCKETS = 2**63 - 1


def op_seed(seed: tf.Tensor, op: int) -> tf.Tensor:
  """An independent stateless seed for operation `op` of the element whose seed is `seed`."""
  return tf.random.experimental.stateless_fold_in(seed, op)


def _coin(seed: tf.Tensor, prob: float) -> tf.Tensor:
  return tf.random.stateless_uniform([], seed=seed) < prob


def to_float(image: tf.Tensor) -> tf.Tensor:
  """uint8 [0, 255] → float32 [0, 1]."""
  return tf.cast(image, tf.float32) / 255.0


def to_uint8(image: tf.Tensor) -> tf.Tensor:
  """float32 [0, 1] → uint8, rounded (not truncated, which would darken every image by half a level)."""
  return tf.cast(tf.round(tf.clip_by_value(image, 0.0, 1.0) * 255.0), tf.uint8)


# ------------------------------------------------------------------------------------- geometry

def resize_shorter_center_crop(image: tf.Tensor, size: int) -> tf.Tensor:
  """Resizes the shorter side to `size`, then takes the central size×size square.

  An image that is already size×size is returned untouched (bit for bit), so a
  fixed-size dataset at its own resolution reads exactly as without this op.
  """
  dtype = image.dtype

  def resize():
    shape = tf.shape(image)
    h, w = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
    scale = size / tf.minimum(h, w)
    new_h = tf.maximum(size, tf.cast(tf.round(h * scale), tf.int32))
    new_w = tf.maximum(size, tf.cast(tf.round(w * scale), tf.int32))
    x = tf.image.resize(image, tf.stack([new_h, new_w]), method="bilinear", antialias=True)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    x = x[top:top + size, left:left + size]
    return _cast_like(x, dtype)

  static = image.shape
  if static[0] == size and static[1] == size:
    return image
  shape = tf.shape(image)
  out = tf.cond((shape[0] == size) & (shape[1] == size), lambda: image, resize)
  return tf.ensure_shape(out, [size, size, static[-1]])


def _cast_like(x: tf.Tensor, dtype: tf.DType) -> tf.Tensor:
  if dtype == tf.uint8:
    return tf.cast(tf.round(tf.clip_by_value(x, 0.0, 255.0)), tf.uint8)
  return tf.cast(x, dtype)


def random_resized_crop(image: tf.Tensor, size: int, seed: tf.Tensor, scale=(0.08, 1.0),
                        ratio=(3 / 4, 4 / 3)) -> tf.Tensor:
  """Inception crop: a box of area fraction in `scale` and aspect (width/height) in `ratio`, resized to size×size.

  Returns float32 on the input's value scale. When 10 tries find no box that fits
  (e.g. ratio (1, 1) on a wide image with scale (1, 1)), the whole image is used,
  as in tf.image.sample_distorted_bounding_box.
  """
  begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
      tf.shape(image), tf.zeros([0, 0, 4], tf.float32), seed=seed, min_object_covered=0.0,
      aspect_ratio_range=tuple(map(float, ratio)), area_range=tuple(map(float, scale)), max_attempts=10,
      use_image_if_no_bounding_boxes=True)
  crop = tf.slice(image, begin, crop_size)
  out = tf.image.resize(crop, [size, size], method="bilinear", antialias=True)
  return tf.ensure_shape(out, [size, size, image.shape[-1]])


def random_flip(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
  """Mirrors left↔right with probability 1/2."""
  return tf.cond(_coin(seed, 0.5), lambda: tf.image.flip_left_right(image), lambda: image)


# ------------------------------------------------------------------------------------- photometric

def color_jitter(image: tf.Tensor, seed: tf.Tensor, strength: float, prob: float = 0.8) -> tf.Tensor:
  """SimCLR colour distortion of a float [0, 1] image, applied with probability `prob`.

  Brightness (a factor), contrast and saturation vary by ±0.8·strength and hue by
  ±0.2·strength (SimCLR: strength 1.0 on ImageNet, 0.5 on CIFAR). The order is
  fixed (SimCLR shuffles it); strength 0 is the identity.
  """
  if strength <= 0 or prob <= 0:
    return image
  s = float(strength)
  seeds = [op_seed(seed, i) for i in range(5)]

  def jitter():
    lo, hi = max(0.0, 1 - 0.8 * s), 1 + 0.8 * s
    x = image * tf.random.stateless_uniform([], seed=seeds[0], minval=lo, maxval=hi)
    x = tf.clip_by_value(tf.image.stateless_random_contrast(tf.clip_by_value(x, 0.0, 1.0), lo, hi, seeds[1]),
                         0.0, 1.0)
    x = tf.image.stateless_random_saturation(x, lo, hi, seeds[2])
    x = tf.image.stateless_random_hue(tf.clip_by_value(x, 0.0, 1.0), 0.2 * s, seeds[3])
    return tf.clip_by_value(x, 0.0, 1.0)

  return tf.cond(_coin(seeds[4], prob), jitter, lambda: image)


def gaussian_kernel(sigma: tf.Tensor, radius: int) -> tf.Tensor:
  """The normalized 1-D Gaussian on -radius..radius."""
  x = tf.range(-radius, radius + 1, dtype=tf.float32)
  k = tf.exp(-tf.square(x) / (2.0 * tf.square(tf.cast(sigma, tf.float32))))
  return k / tf.reduce_sum(k)


def _mirrored_blur_matrix(kernel: tf.Tensor, n: tf.Tensor, radius: int) -> tf.Tensor:
  """[n, n]: row i is the kernel centred on pixel i, taps past an edge folded back (mirror padding, edge repeated)."""
  idx = tf.range(n)[:, None] + tf.range(-radius, radius + 1)[None, :]
  idx = tf.where(idx < 0, -idx - 1, idx)
  idx = tf.where(idx >= n, 2 * n - 1 - idx, idx)
  return tf.reduce_sum(tf.one_hot(idx, n) * kernel[None, :, None], axis=1)


def gaussian_blur(image: tf.Tensor, seed: tf.Tensor, prob: float, sigma=(0.1, 2.0)) -> tf.Tensor:
  """Blurs a float [H, W, C] image with probability `prob`, sigma (pixels) uniform in `sigma`.

  Separable, with the kernel cut at 3·sigma_max and mirrored edges (borders do
  not darken). Each 1-D pass is a banded [H, H] / [W, W] matrix product rather
  than a depthwise convolution: the same numbers, but about 3× faster on CPU at
  224 px, where tf.data runs (a 3-channel depthwise conv vectorizes poorly).
  """
  if prob <= 0:
    return image
  smallest_side = min(d for d in (image.shape[0], image.shape[1], 2**31) if d is not None)
  radius = max(1, min(int(math.ceil(3 * float(sigma[1]))), smallest_side))
  s_sigma, s_coin = op_seed(seed, 0), op_seed(seed, 1)

  def blur():
    k = gaussian_kernel(tf.random.stateless_uniform([], s_sigma, float(sigma[0]), float(sigma[1])), radius)
    shape = tf.shape(image)
    x = tf.einsum("ij,jwc->iwc", _mirrored_blur_matrix(k, shape[0], radius), image)
    return tf.einsum("vw,iwc->ivc", _mirrored_blur_matrix(k, shape[1], radius), x)

  return tf.cond(_coin(s_coin, prob), blur, lambda: image)


# ------------------------------------------------------------------------------------- images

def image_enabled(cfg) -> bool:
  """Whether `config.augment.image` changes anything."""
  return bool(cfg.random_resized_crop or cfg.flip or (cfg.color_jitter > 0 and cfg.color_jitter_prob > 0)
              or cfg.blur_prob > 0)


def augment_image(image: tf.Tensor, seed: tf.Tensor, size: int, cfg) -> tf.Tensor:
  """uint8 [H, W, 3] of any size → augmented uint8 [size, size, 3], per `config.augment.image`."""
  if not image_enabled(cfg):
    return resize_shorter_center_crop(image, size)
  if cfg.random_resized_crop:
    x = random_resized_crop(image, size, op_seed(seed, _CROP), cfg.crop_scale, cfg.crop_ratio) / 255.0
  else:
    x = to_float(resize_shorter_center_crop(image, size))
  if cfg.flip:
    x = random_flip(x, op_seed(seed, _FLIP))
  x = color_jitter(x, op_seed(seed, _JITTER), float(cfg.color_jitter), float(cfg.color_jitter_prob))
  x = gaussian_blur(x, op_seed(seed, _BLUR), float(cfg.blur_prob), cfg.blur_sigma)
  return to_uint8(x)


# ------------------------------------------------------------------------------------- captions

def split_words(caption: tf.Tensor) -> tf.Tensor:
  """A scalar string → its words; punctuation becomes words of its own, as BERT tokenization splits it anyway."""
  return tf.strings.split(tf.strings.regex_replace(caption, r"([[:punct:]])", r" \1 "))


def join_words(words: tf.Tensor) -> tf.Tensor:
  return tf.strings.reduce_join(words, separator=" ")


def word_dropout(words: tf.Tensor, seed: tf.Tensor, prob: float) -> tf.Tensor:
  """Drops each word with probability `prob`; if that would drop them all, one random word stays."""
  n = tf.size(words)
  keep = tf.random.stateless_uniform([n], seed=op_seed(seed, 0)) >= prob
  rescue = tf.cast(tf.random.stateless_uniform([], seed=op_seed(seed, 1)) * tf.cast(n, tf.float32), tf.int32)
  keep |= (~tf.reduce_any(keep)) & tf.equal(tf.range(n), rescue)
  return tf.boolean_mask(words, keep)


def swap_adjacent(words: tf.Tensor, seed: tf.Tensor, prob: float) -> tf.Tensor:
  """Pairs the words off (starting at word 0 or 1, at random) and swaps each pair with probability `prob`.

  A word moves by at most one place, so phrases stay roughly intact ("a red
  circle" may become "red a circle", never "circle a red").
  """
  n = tf.size(words)
  offset = tf.random.stateless_uniform([], seed=op_seed(seed, 0), maxval=2, dtype=tf.int32)
  i = tf.range(n)
  j = i - offset
  partner = tf.where(tf.math.floormod(j, 2) == 0, i + 1, i - 1)
  pair_swaps = tf.random.stateless_uniform([n // 2 + 1], seed=op_seed(seed, 1)) < prob
  swap = (j >= 0) & (partner >= 0) & (partner < n) & tf.gather(pair_swaps, tf.maximum(j, 0) // 2)
  return tf.gather(words, tf.where(swap, partner, i))


class SynonymTable:
  """A word → synonyms table as plain constant tensors (no lookup-table resource in the input graph).

  Words are found by a 63-bit hash with a sorted search, then confirmed by string
  equality, so a hash collision can never replace the wrong word.
  """

  def __init__(self, table: dict[str, list[str]]):
    if not table or not all(table.values()):
      raise ValueError("a synonym table needs at least one word, and every word at least one synonym.")
    words = sorted(table)
    hashes = tf.strings.to_hash_bucket_fast(words, _HASH_BUCKETS).numpy()
    order = np.argsort(hashes, kind="stable")
    if np.any(np.diff(hashes[order]) == 0):
      raise ValueError("two synonym-table words share a 63-bit hash; rename one.")
    words = [words[o] for o in order]
    lengths = np.array([len(table[w]) for w in words], np.int32)
    self.hashes = hashes[order]
    self.words = np.array(words, dtype=object)
    self.starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int32)
    self.lengths = lengths
    self.synonyms = np.array([s for w in words for s in table[w]], dtype=object)

  def replace(self, words: tf.Tensor, seed: tf.Tensor, prob: float) -> tf.Tensor:
    """Replaces each word that has synonyms, with probability `prob`, by one of them chosen uniformly."""
    n = tf.size(words)
    lower = tf.strings.lower(words, encoding="utf-8")
    hashes = tf.strings.to_hash_bucket_fast(lower, _HASH_BUCKETS)
    pos = tf.minimum(tf.searchsorted(tf.constant(self.hashes), hashes), len(self.hashes) - 1)
    found = (tf.gather(tf.constant(self.hashes), pos) == hashes) & (tf.gather(tf.constant(self.words), pos) == lower)
    lengths = tf.gather(tf.constant(self.lengths), pos)
    u = tf.random.stateless_uniform([n], seed=op_seed(seed, 0))
    which = tf.minimum(tf.cast(tf.random.stateless_uniform([n], seed=op_seed(seed, 1)) *
                               tf.cast(lengths, tf.float32), tf.int32), lengths - 1)
    replacement = tf.gather(tf.constant(self.synonyms), tf.gather(tf.constant(self.starts), pos) + which)
    return tf.where(found & (u < prob), replacement, words)


def text_enabled(cfg) -> bool:
  """Whether `config.augment.text` changes anything."""
  return bool(cfg.word_dropout > 0 or cfg.word_reorder > 0 or cfg.synonym_prob > 0)


def augment_caption(caption: tf.Tensor, seed: tf.Tensor, cfg, table: SynonymTable | None = None) -> tf.Tensor:
  """A scalar caption string → augmented string, per `config.augment.text`: synonyms, then swaps, then dropout."""
  if not text_enabled(cfg):
    return caption
  words = split_words(caption)
  if cfg.synonym_prob > 0:
    if table is None:
      raise ValueError("config.augment.text.synonym_prob > 0 needs a synonym table; set config.augment.text.synonyms.")
    words = table.replace(words, op_seed(seed, _SYNONYM), float(cfg.synonym_prob))
  if cfg.word_reorder > 0:
    words = swap_adjacent(words, op_seed(seed, _REORDER), float(cfg.word_reorder))
  if cfg.word_dropout > 0:
    words = word_dropout(words, op_seed(seed, _DROPOUT), float(cfg.word_dropout))
  return join_words(words)
