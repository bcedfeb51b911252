"""A small Vision Transformer image tower (Dosovitskiy et al. 2021)."""

import flax.linen as nn
import jax.numpy as jnp

from cmccl_jax.models.transformer import Encoder
from cmccl_jax.errors import UserError


class ViT(nn.Module):
  """Patch embedding + learned position embedding + pre-LN encoder, pooled.

  Images come in as uint8 [B, H, W, 3] and are scaled to [-1, 1] here, so the
  host ships a quarter of the bytes of float32.
  """
  patch_size: int = 4
  width: int = 128
  depth: int = 2
  num_heads: int = 4
  mlp_dim: int = 256
  dropout: float = 0.0
  pool: str = "gap"

  @nn.compact
  def __call__(self, images, *, train: bool = False):
    x = images.astype(jnp.float32) / 127.5 - 1.0
    x = nn.Conv(self.width, (self.patch_size,) * 2, strides=(self.patch_size,) * 2, padding="VALID",
                name="embedding")(x)
    b, h, w, c = x.shape
    x = x.reshape(b, h * w, c)
    if self.pool == "cls":
      cls = self.param("cls", nn.initializers.zeros, (1, 1, c))
      x = jnp.concatenate([jnp.tile(cls, (b, 1, 1)), x], axis=1)
    x = x + self.param("pos_embedding", nn.initializers.normal(0.02), (1, x.shape[1], c))
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    x = Encoder(self.depth, self.num_heads, self.mlp_dim, self.dropout, name="encoder")(x, train=train)
    if self.pool == "cls":
      return x[:, 0]
    if self.pool == "gap":
      return jnp.mean(x, axis=1)
    raise UserError(f"unknown ViT pool {self.pool!r}; use 'gap' or 'cls'.")
