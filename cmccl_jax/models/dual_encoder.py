"""CLIP/SigLIP-style dual encoder: two towers, projection heads, temperature and bias."""

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from cmccl_jax.models.text_transformer import TextTransformer
from cmccl_jax.train import staging
from cmccl_jax.models.vit import ViT


def _maybe_locked(tower, inputs, train: bool, lock: bool):
  """A locked tower (LiT) runs in inference mode and passes no gradient back."""
  if lock:
    return jax.lax.stop_gradient(tower(inputs, train=False))
  return tower(inputs, train=train)


class DualEncoder(nn.Module):
  """Returns unnormalised projected embeddings and the logit scale/bias.

  The scale is exp(t) with t learnable, clipped at `max_scale` (CLIP's fix for
  the instability of a growing scale); the contrastive loss normalises.
  """
  image: dict[str, Any]
  text: dict[str, Any]
  embed_dim: int = 128
  scale_init: float = 1 / 0.07
  max_scale: float = 100.0
  bias_init: float = -10.0
  lock_image: bool = False
  lock_text: bool = False

  def setup(self):
    self.image_tower = ViT(**self.image)
    self.text_tower = TextTransformer(**self.text)
    self.image_proj = nn.Dense(self.embed_dim, use_bias=False, name="image_proj")
    self.text_proj = nn.Dense(self.embed_dim, use_bias=False, name="text_proj")
    self.log_scale = self.param("log_scale", nn.initializers.constant(math.log(self.scale_init)), ())
    self.bias = self.param("bias", nn.initializers.constant(self.bias_init), ())

  def encode_image(self, images, *, train: bool = False):
    return self.image_proj(_maybe_locked(self.image_tower, images, train, self.lock_image))

  def encode_text(self, tokens, *, train: bool = False):
    return self.text_proj(_maybe_locked(self.text_tower, tokens, train, self.lock_text))

  def logit_scale(self):
    return jnp.minimum(jnp.exp(self.log_scale), self.max_scale)

  def __call__(self, images, tokens, *, train: bool = False):
    z_img = self.encode_image(images, train=train)
    z_txt = self.encode_text(tokens, train=train)
    return z_img, z_txt, {"scale": self.logit_scale(), "bias": self.bias}


def dual_encoder_from_config(config, vocab_size: int) -> DualEncoder:
  """The DualEncoder a config describes; the text tower's vocabulary comes from the tokenizer."""
  text = dict(config.model.text)
  text.update(vocab_size=vocab_size, max_len=int(config.tokenizer.max_len))
  return DualEncoder(image=dict(config.model.image), text=text, embed_dim=int(config.model.embed_dim),
                     scale_init=float(config.loss.scale_init), max_scale=float(config.loss.max_scale),
                     bias_init=float(config.loss.bias_init),
                     lock_image=staging.locked(config.staging, "image"),
                     lock_text=staging.locked(config.staging, "text"))
