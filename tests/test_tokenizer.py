import numpy as np
import pytest
import tensorflow as tf

from cmccl_jax.data.tokenizer import Tokenizer, load_vocab
from cmccl_jax.errors import UserError


def _tok(max_len=8):
  return Tokenizer(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "red", "circle", "left", "of", "##s"],
                   max_len=max_len)


def test_cls_text_sep_then_padding():
  ids = _tok()(tf.constant(["A red circle", "circles"])).numpy()
  np.testing.assert_array_equal(ids, [[2, 5, 6, 7, 3, 0, 0, 0], [2, 7, 10, 3, 0, 0, 0, 0]])


def test_unknown_words_and_truncation_keep_sep():
  ids = _tok(max_len=5)(tf.constant(["a purple circle left of a"])).numpy()
  np.testing.assert_array_equal(ids, [[2, 5, 1, 7, 3]])


def test_rank_is_preserved():
  ids = _tok()(tf.constant([["a", "red"], ["circle", "a red"]])).numpy()
  assert ids.shape == (2, 2, 8)


def test_synthetic_vocab_covers_specials_first():
  vocab = load_vocab("synthetic")
  assert vocab[:4] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]"] and len(set(vocab)) == len(vocab)


def test_missing_vocab_file_names_the_path(tmp_path):
  with pytest.raises(UserError, match="nope.txt"):
    load_vocab(str(tmp_path / "nope.txt"))
