"""CLIP/SigLIP-style dual encoder: two towers, projection heads, temperature and bias."""

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from cmccl_jax import losses
from cmccl_jax.models.bert import BertEncoder
from cmccl_jax.models.text_transformer import TextTransformer
from cmccl_jax.models.vit import ViT

# DualEncoder.text_kind -> the module of the text tower.
TEXT_TOWERS = {"transformer": TextTransformer, "bert": BertEncoder}


def _maybe_locked(tower, inputs, train: bool, lock: bool):
  """A locked tower (LiT) runs in inference mode and passes no gradient back."""
  if lock:
    return jax.lax.stop_gradient(tower(inputs, train=False))
  return tower(inputs, train=train)


class DifficultyHead(nn.Module):
  """d̂ = MLP([ẑ_i, ẑ_t, ẑ_i ⊙ ẑ_t]) on stop-gradient embeddings: the learnable difficulty evaluator
  (its loss and what it is for: curriculum/difficulty_head.py)."""

  hidden: int = 64

  @nn.compact
  def __call__(self, z_img, z_txt):
    a = losses.l2_normalize(jax.lax.stop_gradient(z_img))
    b = losses.l2_normalize(jax.lax.stop_gradient(z_txt))
    x = jnp.concatenate([a, b, a * b], axis=-1)
    x = nn.gelu(nn.Dense(self.hidden, name="hidden")(x))
    return nn.Dense(1, bias_init=nn.initializers.ones, name="out")(x)[..., 0]


class DualEncoder(nn.Module):
  """Returns unnormalised projected embeddings and the logit scale/bias.

  The scale is exp(t) with t learnable, clipped at `max_scale` (CLIP's fix for
  the instability of a growing scale); the contrastive loss normalises.
  """
  image: dict[str, Any]
  text: dict[str, Any]
  text_kind: str = "transformer"
  embed_dim: int = 128
  scale_init: float = 1 / 0.07
  max_scale: float = 100.0
  bias_init: float = -10.0
  lock_image: bool = False
  lock_text: bool = False
  difficulty_hidden: int = 0   # > 0: the learnable difficulty evaluator with this hidden width
  # ((modality, teacher width), ...): I2MCL's linear maps from the embedding to a teacher's feature width,
  # for the modalities whose teacher is not embed_dim wide. Only training builds them (a trained model is
  # restored without them: its towers are all that embed).
  distill_widths: tuple[tuple[str, int], ...] = ()

  def setup(self):
    self.image_tower = ViT(**self.image)
    self.text_tower = TEXT_TOWERS[self.text_kind](**self.text)
    self.image_proj = nn.Dense(self.embed_dim, use_bias=False, name="image_proj")
    self.text_proj = nn.Dense(self.embed_dim, use_bias=False, name="text_proj")
    self.log_scale = self.param("log_scale", nn.initializers.constant(math.log(self.scale_init)), ())
    self.bias = self.param("bias", nn.initializers.constant(self.bias_init), ())
    if self.difficulty_hidden > 0:
      self.difficulty_head = DifficultyHead(self.difficulty_hidden)
    self.distill_proj = {m: nn.Dense(width, use_bias=False, name=f"distill_{m}") for m, width in self.distill_widths}

  def encode_image(self, images, *, train: bool = False):
    return self.image_proj(_maybe_locked(self.image_tower, images, train, self.lock_image))

  def encode_text(self, tokens, *, train: bool = False):
    return self.text_proj(_maybe_locked(self.text_tower, tokens, train, self.lock_text))

  def encode_words(self, tokens):
    """(sentence embedding [N, embed_dim], per-token hidden states [N, L, width]) in inference mode.

    XMC-GAN's text encoder: the sentence in the aligned space, the words from the tower.
    """
    pooled, hidden = self.text_tower(tokens, train=False, return_hidden=True)
    return self.text_proj(pooled), hidden

  def image_features(self, images):
    """The image tower's pooled features in inference mode: the stage-1 space of the offline Fréchet distance."""
    return self.image_tower(images, train=False)

  def logit_scale(self):
    return jnp.minimum(jnp.exp(self.log_scale), self.max_scale)

  def __call__(self, images, tokens, *, train: bool = False):
    z_img = self.encode_image(images, train=train)
    z_txt = self.encode_text(tokens, train=train)
    out = {"scale": self.logit_scale(), "bias": self.bias}
    if self.difficulty_hidden > 0:
      out["difficulty"] = self.difficulty_head(z_img, z_txt)
    for m in self.distill_proj:  # so that init creates them
      self.distill_project(z_img if m == "image" else z_txt, m)
    return z_img, z_txt, out

  def distill_project(self, z, modality: str):
    """A modality's representation in its teacher's feature width (the identity when the widths agree)."""
    if modality in self.distill_proj:
      return self.distill_proj[modality](z)
    return z

  def predict_difficulty(self, z_img, z_txt):
    """The difficulty evaluator's predicted loss of each (image, text) embedding pair."""
    return self.difficulty_head(z_img, z_txt)
