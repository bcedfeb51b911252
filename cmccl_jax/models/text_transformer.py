"""A Transformer text tower over word-piece ids (id 0 is padding)."""

import flax.linen as nn
import jax.numpy as jnp

from cmccl_jax.models.transformer import Encoder, masked_mean_pool
from cmccl_jax.errors import UserError


class TextTransformer(nn.Module):
  vocab_size: int
  max_len: int = 24
  width: int = 128
  depth: int = 2
  num_heads: int = 4
  mlp_dim: int = 256
  dropout: float = 0.0
  pool: str = "mean"

  @nn.compact
  def __call__(self, tokens, *, train: bool = False, return_hidden: bool = False):
    pad_mask = tokens > 0
    x = nn.Embed(self.vocab_size, self.width, embedding_init=nn.initializers.normal(0.02),
                 name="token_embedding")(tokens)
    x = x + self.param("pos_embedding", nn.initializers.normal(0.02), (1, self.max_len, self.width))[:, :tokens.shape[1]]
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    x = Encoder(self.depth, self.num_heads, self.mlp_dim, self.dropout, name="encoder")(x, pad_mask, train=train)
    if self.pool == "mean":
      pooled = masked_mean_pool(x, pad_mask)
    elif self.pool == "cls":
      pooled = x[:, 0]
    else:
      raise UserError(f"unknown text pool {self.pool!r}; use 'mean' or 'cls'.")
    return (pooled, x) if return_hidden else pooled
