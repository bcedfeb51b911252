"""CLIP/SigLIP-style dual encoder: two towers, projection heads, temperature and bias."""

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from cmccl_jax.curriculum.difficulty_head import DifficultyHead
from cmccl_jax.models import hf_import
from cmccl_jax.models.bert import BertEncoder
from cmccl_jax.models.text_transformer import TextTransformer
from cmccl_jax.models.vit import ViT
from cmccl_jax.train import staging

# config.model.text.kind -> the module of the text tower.
TEXT_TOWERS = {"transformer": TextTransformer, "bert": BertEncoder}
# Fields of config.model.text that describe where the tower comes from, not its module.
_TEXT_SOURCE_FIELDS = ("kind", "checkpoint")


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
  text_kind: str = "transformer"
  embed_dim: int = 128
  scale_init: float = 1 / 0.07
  max_scale: float = 100.0
  bias_init: float = -10.0
  lock_image: bool = False
  lock_text: bool = False
  difficulty_hidden: int = 0   # > 0: the learnable difficulty evaluator with this hidden width

  def setup(self):
    self.image_tower = ViT(**self.image)
    self.text_tower = TEXT_TOWERS[self.text_kind](**self.text)
    self.image_proj = nn.Dense(self.embed_dim, use_bias=False, name="image_proj")
    self.text_proj = nn.Dense(self.embed_dim, use_bias=False, name="text_proj")
    self.log_scale = self.param("log_scale", nn.initializers.constant(math.log(self.scale_init)), ())
    self.bias = self.param("bias", nn.initializers.constant(self.bias_init), ())
    if self.difficulty_hidden > 0:
      self.difficulty_head = DifficultyHead(self.difficulty_hidden)

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
    return z_img, z_txt, out

  def predict_difficulty(self, z_img, z_txt):
    """The difficulty evaluator's predicted loss of each (image, text) embedding pair."""
    return self.difficulty_head(z_img, z_txt)


def text_tower_fields(config, vocab_size: int) -> tuple[str, dict[str, Any], str | None]:
  """(kind, module fields, checkpoint folder or None) of config.model.text.

  A "bert" tower with a `checkpoint` ("minilm" or a Hugging Face folder) takes its
  architecture from the checkpoint's config.json; `pool` and `dropout`, when set
  in the config, override the checkpoint's. Without a checkpoint every field
  comes from the config and the tower starts from random weights.
  """
  text = dict(config.model.text)
  kind = text.get("kind", "transformer")
  if kind not in TEXT_TOWERS:
    raise ValueError(f"config.model.text.kind={kind!r} is not one of {', '.join(map(repr, TEXT_TOWERS))}.")
  checkpoint = text.get("checkpoint") or None
  fields = {k: v for k, v in text.items() if k not in _TEXT_SOURCE_FIELDS}
  max_len = int(config.tokenizer.max_len)
  if kind == "transformer":
    if checkpoint:
      raise ValueError(f"config.model.text.checkpoint={checkpoint!r} needs config.model.text.kind='bert'; "
                       "a 'transformer' tower always starts from scratch.")
    return kind, {**fields, "vocab_size": vocab_size, "max_len": max_len}, None
  fields = {k: v for k, v in fields.items() if v is not None}  # None: the checkpoint's or BertEncoder's default
  if checkpoint:
    folder = hf_import.resolve_checkpoint(checkpoint)
    fields = {**hf_import.bert_config_from_hf(folder), **fields}
  else:
    folder = None
    fields = {**fields, "vocab_size": vocab_size}
  if fields.get("vocab_size") != vocab_size:
    raise ValueError(
        f"the text checkpoint {checkpoint!r} has a vocabulary of {fields.get('vocab_size')} tokens but the "
        f"tokenizer (config.tokenizer.vocab={config.tokenizer.vocab!r}) has {vocab_size}; set "
        f"--config.tokenizer.vocab to the checkpoint's vocab.txt (or 'minilm' for the default checkpoint).")
  max_positions = int(fields.get("max_position_embeddings", 512))
  if max_len > max_positions:
    raise ValueError(f"config.tokenizer.max_len={max_len} exceeds the BERT tower's max_position_embeddings="
                     f"{max_positions}; lower --config.tokenizer.max_len.")
  return kind, fields, folder


def dual_encoder_from_config(config, vocab_size: int) -> DualEncoder:
  """The DualEncoder a config describes; the text tower's vocabulary comes from the tokenizer."""
  text_kind, text, _ = text_tower_fields(config, vocab_size)
  return DualEncoder(image=dict(config.model.image), text=text, text_kind=text_kind,
                     embed_dim=int(config.model.embed_dim),
                     scale_init=float(config.loss.scale_init), max_scale=float(config.loss.max_scale),
                     bias_init=float(config.loss.bias_init),
                     lock_image=staging.locked(config.staging, "image"),
                     lock_text=staging.locked(config.staging, "text"),
                     difficulty_hidden=difficulty_head_config(config)[0])


def difficulty_head_config(config) -> tuple[int, float]:
  """(hidden width, loss weight) of the difficulty evaluator; (0, 0) when off or absent (older configs)."""
  head = config.curriculum.get("difficulty_head")
  if not head or int(head.get("hidden", 0)) <= 0:
    return 0, 0.0
  return int(head["hidden"]), float(head.get("weight", 1.0))


def pretrained_params(config, vocab_size: int) -> dict[str, Any]:
  """{submodule name: params} to load over the fresh init: the text checkpoint's weights, if any."""
  _, _, folder = text_tower_fields(config, vocab_size)
  return {"text_tower": hf_import.load_bert_params(folder)} if folder else {}
