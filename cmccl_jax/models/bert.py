"""A BERT-compatible text tower over word-piece ids (id 0 is padding).

transformers 5 has no Flax models (4.57 was the last with FlaxBertModel), so the
module is ours; `hf_import.load_bert_params` maps a Hugging Face BERT checkpoint
onto its parameters. The defaults are all-MiniLM-L6-v2's.
"""

import functools

import flax.linen as nn
import jax.numpy as jnp

from cmccl_jax.models.transformer import masked_mean_pool
from cmccl_jax.errors import UserError

# Hugging Face's names for BERT's activations; its "gelu" is the exact erf GELU.
ACTIVATIONS = {
    "gelu": functools.partial(nn.gelu, approximate=False),
    "gelu_new": functools.partial(nn.gelu, approximate=True),
    "gelu_pytorch_tanh": functools.partial(nn.gelu, approximate=True),
    "relu": nn.relu,
}

_init = nn.initializers.normal(0.02)


class BertLayer(nn.Module):
  """Post-LN block: x = LN(x + attn(x)); x = LN(x + W2 act(W1 x))."""
  num_heads: int
  intermediate_size: int
  layer_norm_eps: float
  hidden_act: str
  dropout: float

  @nn.compact
  def __call__(self, x, attn_mask, *, train: bool):
    width = x.shape[-1]
    y = nn.MultiHeadDotProductAttention(
        num_heads=self.num_heads, kernel_init=_init, dropout_rate=self.dropout,
        deterministic=not train, name="attention")(x, x, mask=attn_mask)
    y = nn.Dropout(self.dropout, deterministic=not train)(y)
    x = nn.LayerNorm(epsilon=self.layer_norm_eps, name="attention_norm")(x + y)
    y = nn.Dense(self.intermediate_size, kernel_init=_init, name="intermediate")(x)
    y = ACTIVATIONS[self.hidden_act](y)
    y = nn.Dense(width, kernel_init=_init, name="output")(y)
    y = nn.Dropout(self.dropout, deterministic=not train)(y)
    return nn.LayerNorm(epsilon=self.layer_norm_eps, name="output_norm")(x + y)


class BertEncoder(nn.Module):
  """BERT with token type 0 and positions 0..L-1; pools "mean" (over real tokens) or "cls"."""
  vocab_size: int = 30522
  hidden_size: int = 384
  num_layers: int = 6
  num_heads: int = 12
  intermediate_size: int = 1536
  max_position_embeddings: int = 512
  type_vocab_size: int = 2
  layer_norm_eps: float = 1e-12
  hidden_act: str = "gelu"
  dropout: float = 0.1
  pool: str = "mean"

  @nn.compact
  def __call__(self, tokens, *, train: bool = False, return_hidden: bool = False):
    if self.hidden_act not in ACTIVATIONS:
      raise UserError(f"unknown BERT hidden_act {self.hidden_act!r}; use one of {sorted(ACTIVATIONS)}.")
    if self.pool not in ("mean", "cls"):
      raise UserError(f"unknown text pool {self.pool!r}; use 'mean' or 'cls'.")
    length = tokens.shape[-1]
    if length > self.max_position_embeddings:
      raise UserError(f"{length} tokens exceed BERT's max_position_embeddings={self.max_position_embeddings}; "
                       "lower config.tokenizer.max_len.")
    pad_mask = tokens > 0
    x = nn.Embed(self.vocab_size, self.hidden_size, embedding_init=_init, name="word_embeddings")(tokens)
    x = x + nn.Embed(self.max_position_embeddings, self.hidden_size, embedding_init=_init,
                     name="position_embeddings")(jnp.arange(length))
    x = x + nn.Embed(self.type_vocab_size, self.hidden_size, embedding_init=_init,
                     name="token_type_embeddings")(jnp.zeros((), jnp.int32))
    x = nn.LayerNorm(epsilon=self.layer_norm_eps, name="embeddings_norm")(x)
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    # As in BERT only keys are masked: pad positions still attend to the real tokens,
    # so their outputs match Hugging Face's too.
    attn_mask = pad_mask[:, None, None, :]
    for i in range(self.num_layers):
      x = BertLayer(self.num_heads, self.intermediate_size, self.layer_norm_eps, self.hidden_act,
                    self.dropout, name=f"layer_{i}")(x, attn_mask, train=train)
    pooled = masked_mean_pool(x, pad_mask) if self.pool == "mean" else x[:, 0]
    return (pooled, x) if return_hidden else pooled
