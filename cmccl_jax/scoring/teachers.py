"""Teachers of the offline scorers: frozen encoders that embed captions and images.

A `Teacher` is only its embedding functions (unit-norm rows) and, for a dual
encoder, its logit scale, so a scorer's maths can be tested with hand-made
embeddings. The real ones come from
  - `bert_teacher`: a pretrained BERT text tower, by default the packaged
    all-MiniLM-L6-v2 (mean-pooled and normalised, as sentence-transformers uses it);
  - `dual_encoder_teacher`: both towers of a dual encoder trained by this project,
    restored from an experiment directory (`bash train.sh NAME` → exp/NAME) by
    `tasks.dual_encoder.trained.load_dual_encoder`.

Encoders run jitted in fixed-shape chunks: rows are padded to `batch_size` and
token ids are cut to the batch's longest caption rounded up to a multiple of 8.
Cutting trailing padding changes no embedding (padding is masked out of attention
and pooling) and spares most of the work on short captions. Caption embeddings
are cached by text, since datasets repeat captions (the synthetic set has 9k
distinct captions among 47.5k).
"""

import dataclasses
from typing import Any, Callable, Sequence

import jax
import numpy as np

from cmccl_jax import losses
from cmccl_jax.data import augment
from cmccl_jax.data.tokenizer import Tokenizer, load_vocab
from cmccl_jax.models import hf_import
from cmccl_jax.models.bert import BertEncoder
from cmccl_jax.errors import UserError

# Captions kept in a text encoder's cache; beyond it new captions are embedded but not kept.
_CACHE_SIZE = 200_000
# Token ids per caption for a BERT teacher: the length all-MiniLM-L6-v2 was trained at.
BERT_MAX_LEN = 128
_LENGTH_MULTIPLE = 8


@dataclasses.dataclass(frozen=True)
class Teacher:
  """A frozen encoder's embedding functions; each returns float32 rows of unit norm.

  embed_texts: captions -> [n, d]; embed_images: uint8 HxWx3 images (any size) -> [n, d];
  logit_scale: the dual encoder's learned s in logits = s * cos (None for a text-only teacher).
  """

  name: str
  embed_texts: Callable[[Sequence[str]], np.ndarray] | None = None
  embed_images: Callable[[Sequence[np.ndarray]], np.ndarray] | None = None
  logit_scale: float | None = None


def _normalized(x: np.ndarray) -> np.ndarray:
  x = np.asarray(x, np.float32)
  return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _padded_chunks(rows: np.ndarray, batch_size: int):
  """(chunk padded with zero rows to batch_size, number of real rows), so one shape compiles once."""
  for start in range(0, rows.shape[0], batch_size):
    chunk = rows[start:start + batch_size]
    n = chunk.shape[0]
    if n < batch_size:
      chunk = np.concatenate([chunk, np.zeros((batch_size - n,) + chunk.shape[1:], chunk.dtype)])
    yield chunk, n


class TextEncoder:
  """Captions -> unit embeddings with a jitted `encode(params, tokens)`, cached by caption."""

  def __init__(self, encode: Callable, params: Any, tokenizer, batch_size: int):
    if batch_size < 1:
      raise UserError(f"config.scoring.batch_size must be >= 1, got {batch_size}")
    self._encode = jax.jit(encode)
    self._params = jax.device_put(params)  # once, not with every chunk
    self._tokenizer = tokenizer
    self._batch_size = batch_size
    self._cache: dict[str, np.ndarray] = {}

  def _embed_new(self, captions: list[str]) -> np.ndarray:
    tokens = np.asarray(self._tokenizer(captions), np.int32)
    longest = int(np.max(np.sum(tokens > 0, axis=1)))
    length = min(tokens.shape[1], -(-longest // _LENGTH_MULTIPLE) * _LENGTH_MULTIPLE)
    tokens = tokens[:, :length]
    out = [np.asarray(self._encode(self._params, chunk))[:n] for chunk, n in _padded_chunks(tokens, self._batch_size)]
    return _normalized(np.concatenate(out))

  def __call__(self, captions: Sequence[str]) -> np.ndarray:
    captions = [str(c) for c in captions]
    if not captions:
      raise ValueError("TextEncoder got no captions to embed")
    new = sorted({c for c in captions if c not in self._cache})
    embedded = dict(zip(new, self._embed_new(new))) if new else {}
    for caption, row in embedded.items():
      if len(self._cache) >= _CACHE_SIZE:
        break
      self._cache[caption] = row
    return np.stack([self._cache[c] if c in self._cache else embedded[c] for c in captions])


class ImageEncoder:
  """uint8 images of any size -> unit embeddings with a jitted `encode(params, images)`.

  Images are brought to image_size x image_size as evaluation does (shorter side
  resized, centre crop), so the teacher sees what it was trained and tested on.
  """

  def __init__(self, encode: Callable, params: Any, image_size: int, batch_size: int):
    if batch_size < 1:
      raise UserError(f"config.scoring.batch_size must be >= 1, got {batch_size}")
    self._encode = jax.jit(encode)
    self._params = jax.device_put(params)  # once, not with every chunk
    self._image_size = image_size
    self._batch_size = batch_size

  def _resized(self, image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.shape[:2] == (self._image_size, self._image_size):
      return image
    return np.asarray(augment.resize_shorter_center_crop(image, self._image_size))

  def __call__(self, images: Sequence[np.ndarray]) -> np.ndarray:
    if not len(images):
      raise ValueError("ImageEncoder got no images to embed")
    rows = np.stack([self._resized(im) for im in images]).astype(np.uint8)
    out = [np.asarray(self._encode(self._params, chunk))[:n] for chunk, n in _padded_chunks(rows, self._batch_size)]
    return _normalized(np.concatenate(out))


# ----------------------------------------------------------------------------- pretrained BERT

def bert_teacher(checkpoint: str = "minilm", batch_size: int = 256) -> Teacher:
  """A text-only teacher: a Hugging Face BERT folder ("minilm" = the packaged all-MiniLM-L6-v2).

  The embedding is the tower's pooled output (mean over real tokens for MiniLM),
  normalised: all-MiniLM-L6-v2's sentence embedding.
  """
  folder = hf_import.resolve_checkpoint(checkpoint)
  fields = hf_import.bert_config_from_hf(folder)
  model = BertEncoder(**{**fields, "dropout": 0.0})
  params = {"params": hf_import.load_bert_params(folder)}
  max_len = min(BERT_MAX_LEN, fields["max_position_embeddings"])
  tokenizer = Tokenizer(load_vocab(folder), max_len)
  encode = lambda p, tokens: model.apply(p, tokens, train=False)
  return Teacher(name=f"bert:{checkpoint}", embed_texts=TextEncoder(encode, params, tokenizer, batch_size))


# ----------------------------------------------------------------------------- trained dual encoders

def dual_encoder_teacher(trained, batch_size: int = 256) -> Teacher:
  """Both towers (with their projection heads) of a trained dual encoder (a
  `tasks.dual_encoder.trained.TrainedDualEncoder`), and its logit scale."""
  model = trained.model
  encode_texts = lambda p, tokens: losses.l2_normalize(model.apply(p, tokens, method=model.encode_text))
  encode_images = lambda p, images: losses.l2_normalize(model.apply(p, images, method=model.encode_image))
  scale = float(model.apply(trained.params, method=model.logit_scale))
  return Teacher(
      name=f"{trained.workdir}@{trained.step}",
      embed_texts=TextEncoder(encode_texts, trained.params, trained.tokenizer, batch_size),
      embed_images=ImageEncoder(encode_images, trained.params, trained.image_size, batch_size),
      logit_scale=scale)
