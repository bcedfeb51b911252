"""Word-piece tokenization inside tf.data with tensorflow-text.

BERT conventions: [CLS] text [SEP], padded with id 0 ([PAD]) to `max_len`. The
vocabulary is either the synthetic dataset's words or a BERT `vocab.txt`.
"""

import os

import tensorflow as tf
import tensorflow_text as tf_text

from cmccl_jax.data import shapes_scene
from cmccl_jax.errors import UserError
from cmccl_jax.models import hf_import

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def load_vocab(vocab: str) -> list[str]:
  """The token list for `config.tokenizer.vocab`: "synthetic", "minilm", a vocab.txt or a folder holding one."""
  if vocab == "synthetic":
    return list(SPECIAL_TOKENS) + list(shapes_scene.VOCAB)
  if vocab == "minilm":
    vocab = os.path.join(hf_import.default_minilm_path(), "vocab.txt")
  path = os.path.expanduser(vocab)
  if os.path.isdir(path):
    path = os.path.join(path, "vocab.txt")
  if not os.path.isfile(path):
    raise UserError(
        f"config.tokenizer.vocab={vocab!r}: {path} is not an existing vocab.txt file; use 'synthetic', "
        "'minilm', or the vocab.txt (or folder) of a BERT checkpoint.")
  with open(path, encoding="utf-8") as f:
    return [line.rstrip("\n") for line in f]


class Tokenizer:
  """Strings → int32 [..., max_len] ids with [CLS]/[SEP] and zero padding."""

  def __init__(self, vocab: list[str], max_len: int, lower_case: bool = True):
    missing = [t for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]") if t not in vocab]
    if missing or vocab[0] != "[PAD]":
      raise UserError(f"the vocabulary needs [PAD] at id 0 and {missing or 'all special tokens'}; "
                       "use a BERT-style vocab.txt.")
    if max_len < 3:
      raise UserError(f"config.tokenizer.max_len={max_len} leaves no room for text between [CLS] and [SEP].")
    self.vocab_size = len(vocab)
    self.vocab = list(vocab)
    self.max_len = max_len
    self.cls_id = vocab.index("[CLS]")
    self.sep_id = vocab.index("[SEP]")
    self._tokenizer = tf_text.FastBertTokenizer(
        vocab=vocab, token_out_type=tf.int32, lower_case_nfd_strip_accents=lower_case)

  def __call__(self, text: tf.Tensor) -> tf.Tensor:
    """Tokenizes a string tensor of any rank; returns ids of shape text.shape + [max_len]."""
    text = tf.convert_to_tensor(text)
    flat = tf.reshape(text, [-1])
    ids = self._tokenizer.tokenize(flat)[:, : self.max_len - 2]
    n = tf.shape(flat)[0]
    cls = tf.fill([n, 1], self.cls_id)
    sep = tf.fill([n, 1], self.sep_id)
    ids = tf.concat([cls, ids, sep], axis=1)
    ids = ids.to_tensor(default_value=0, shape=[None, self.max_len])
    return tf.reshape(ids, tf.concat([tf.shape(text), [self.max_len]], axis=0))

  def decode(self, ids) -> list[str]:
    """int [n, max_len] ids → n strings of word pieces ("##" joined), without [CLS]/[SEP]/[PAD].

    For showing what the model reads (TensorBoard), so [UNK] and truncation stay visible.
    """
    texts = []
    for row in ids:
      words: list[str] = []
      for i in row:
        if int(i) in (0, self.cls_id, self.sep_id):
          continue
        token = self.vocab[int(i)]
        if token.startswith("##") and words:
          words[-1] += token[2:]
        else:
          words.append(token)
      texts.append(" ".join(words))
    return texts


def build_tokenizer(tokenizer_config) -> Tokenizer:
  return Tokenizer(load_vocab(tokenizer_config.vocab), int(tokenizer_config.max_len),
                   bool(tokenizer_config.lower_case))
