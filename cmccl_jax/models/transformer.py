"""Pre-LayerNorm Transformer encoder shared by the image and text towers."""

import flax.linen as nn
import jax
import jax.numpy as jnp


class MlpBlock(nn.Module):
  mlp_dim: int
  dropout: float = 0.0

  @nn.compact
  def __call__(self, x, *, train: bool):
    width = x.shape[-1]
    x = nn.Dense(self.mlp_dim, kernel_init=nn.initializers.xavier_uniform())(x)
    x = nn.gelu(x)
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return nn.Dense(width, kernel_init=nn.initializers.xavier_uniform())(x)


class EncoderBlock(nn.Module):
  num_heads: int
  mlp_dim: int
  dropout: float = 0.0

  @nn.compact
  def __call__(self, x, mask, *, train: bool):
    y = nn.LayerNorm()(x)
    y = nn.MultiHeadDotProductAttention(
        num_heads=self.num_heads, kernel_init=nn.initializers.xavier_uniform(),
        dropout_rate=self.dropout, deterministic=not train)(y, y, mask=mask)
    x = x + nn.Dropout(self.dropout, deterministic=not train)(y)
    y = nn.LayerNorm()(x)
    y = MlpBlock(self.mlp_dim, self.dropout)(y, train=train)
    return x + nn.Dropout(self.dropout, deterministic=not train)(y)


class Encoder(nn.Module):
  """A stack of pre-LN blocks with a final LayerNorm; `pad_mask` [B, L] marks real tokens."""
  depth: int
  num_heads: int
  mlp_dim: int
  dropout: float = 0.0

  @nn.compact
  def __call__(self, x, pad_mask: jax.Array | None = None, *, train: bool):
    attn_mask = None if pad_mask is None else nn.make_attention_mask(pad_mask, pad_mask)
    for i in range(self.depth):
      x = EncoderBlock(self.num_heads, self.mlp_dim, self.dropout, name=f"block_{i}")(x, attn_mask, train=train)
    return nn.LayerNorm(name="encoder_norm")(x)


def masked_mean_pool(x: jax.Array, mask: jax.Array) -> jax.Array:
  """Mean over the positions where mask is true."""
  mask = mask.astype(x.dtype)[..., None]
  return jnp.sum(x * mask, axis=-2) / jnp.maximum(jnp.sum(mask, axis=-2), 1.0)
