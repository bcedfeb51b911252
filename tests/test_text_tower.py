"""Choosing the text tower from the config: from scratch, BERT from random init, BERT from a checkpoint."""

import jax
import numpy as np
import pytest

from cmccl_jax import parallel
from cmccl_jax.data.tokenizer import load_vocab
from cmccl_jax.models import hf_import
from cmccl_jax.tasks.dual_encoder.model import text_tower_fields
from cmccl_jax.tasks.dual_encoder.task import DualEncoderModel
from configs import minilm_synthetic
from tests import tiny
from tests.test_train_step import IMAGE_SHAPE, _batch
from cmccl_jax.errors import UserError

TINY_BERT = dict(kind="bert", checkpoint="", vocab_size=None, hidden_size=16, num_layers=1, num_heads=2,
                 intermediate_size=32, max_position_embeddings=16, dropout=0.0, pool="mean")


def _setup(config, vocab_size):
  mesh = parallel.make_mesh({"data": 1}, jax.devices()[:1])
  return mesh, DualEncoderModel(config, mesh, IMAGE_SHAPE, vocab_size)


@pytest.fixture(scope="module")
def minilm_config():
  config = minilm_synthetic.get_config()
  tiny_config = tiny.tiny_config("unused")
  config.model.image = tiny_config.model.image
  config.model.embed_dim = 16
  config.tokenizer.max_len = 12
  config.batch_size = 8
  return config


def test_minilm_config_loads_the_checkpoint_into_the_state(minilm_config):
  vocab = load_vocab(minilm_config.tokenizer.vocab)
  assert vocab == load_vocab(hf_import.default_minilm_path())  # "minilm" and the folder agree
  mesh, setup = _setup(minilm_config, len(vocab))
  state = setup.init_state()
  expected = hf_import.load_bert_params(hf_import.default_minilm_path())
  got = jax.device_get(state.params["params"]["text_tower"])
  jax.tree.map(np.testing.assert_array_equal, got, expected)
  # The locked tower stays exactly the checkpoint while the rest trains.
  state, metrics = setup.train_step()(state, parallel.global_batch(mesh, _batch(minilm_config, seed=0)))
  assert np.isfinite(float(metrics["loss"]))
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(state.params["params"]["text_tower"]), expected)


def test_bert_without_checkpoint_takes_its_fields_from_the_config():
  config = tiny.tiny_config("unused")
  config.model.text = TINY_BERT
  kind, fields, folder = text_tower_fields(config, vocab_size=50)
  assert (kind, folder, fields["vocab_size"], fields["hidden_size"]) == ("bert", None, 50, 16)
  _, setup = _setup(config, 50)
  params = jax.eval_shape(setup.init_state).params["params"]["text_tower"]
  assert params["word_embeddings"]["embedding"].shape == (50, 16)


def test_checkpoint_vocabulary_must_match_the_tokenizer(minilm_config):
  config = minilm_config.copy_and_resolve_references()
  config.tokenizer.vocab = "synthetic"
  with pytest.raises(ValueError, match=r"30522 tokens.*'synthetic'.*--config.tokenizer.vocab"):
    text_tower_fields(config, len(load_vocab("synthetic")))


def test_max_len_beyond_the_position_table_is_refused():
  config = tiny.tiny_config("unused")
  config.model.text = TINY_BERT
  config.tokenizer.max_len = 17
  with pytest.raises(ValueError, match="max_len=17 exceeds.*max_position_embeddings=16"):
    text_tower_fields(config, 50)


@pytest.mark.parametrize("text, message", [
    (dict(kind="lstm"), "kind='lstm' is not one of 'transformer', 'bert'"),
    (dict(kind="transformer", checkpoint="minilm"), "checkpoint='minilm' needs config.model.text.kind='bert'"),
])
def test_bad_text_tower_settings_name_the_field(text, message):
  config = tiny.tiny_config("unused")
  config.model.text.update(text)
  with pytest.raises(ValueError, match=message):
    text_tower_fields(config, 50)


def test_missing_checkpoint_folder_is_named(tmp_path):
  config = tiny.tiny_config("unused")
  config.model.text = dict(TINY_BERT, checkpoint=str(tmp_path / "bert-base"))
  with pytest.raises(UserError, match="bert-base.*does not exist"):
    text_tower_fields(config, 50)
