"""XMC-GAN's generator and discriminator (Zhang et al., CVPR 2021), sized by config.

Generator: global condition c = [Dense(sentence), z]; a 4×4 start and residual
up-blocks with conditional batch norm (γ, β from c). At 16×16 an attention of
every region over the caption's words (softmax over words, ρ0-scaled cosine,
padding masked) gives a per-region word context; the blocks after it use local
(spatially varying) conditional batch norm, γ and β from [c, context] per pixel.

Discriminator: spectrally normalised residual down-blocks; its 16×16 features are
the regions of the region–word contrastive term; the pooled feature gives the
projection logit Dense(1)(pool) + ⟨pool, Dense(sentence)⟩ and the image features
of the image–sentence and real–fake contrastive terms.

Images are float [N, H, W, 3] in [-1, 1]. Batch norm statistics and spectral norm
power-iteration vectors live in the "batch_stats" collection.
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from cmccl_jax import losses
from cmccl_jax.errors import UserError

REGION_SIZE = 16  # XMC-GAN attends over, and contrasts, 16×16 regions
_NEG = -1e9


def _levels(resolution: int) -> int:
  """Number of ×2 steps between 4×4 and `resolution` (a power of two ≥ 32)."""
  levels = int(round(math.log2(resolution / 4)))
  if resolution < 2 * REGION_SIZE or 4 * 2 ** levels != resolution:
    raise UserError(f"XMC-GAN needs a power-of-two image size of at least {2 * REGION_SIZE} (it attends at "
                     f"{REGION_SIZE}x{REGION_SIZE}), got {resolution}; set --config.data.image_size accordingly.")
  return levels


def _upsample(x, factor: int = 2):
  """Nearest-neighbour ×factor by broadcasting: its gradient is a sum, not the scatter of a gather."""
  if factor == 1:
    return x
  n, h, w, c = x.shape
  x = jnp.broadcast_to(x[:, :, None, :, None, :], (n, h, factor, w, factor, c))
  return x.reshape(n, h * factor, w * factor, c)


def _avg_pool(x):
  return nn.avg_pool(x, (2, 2), strides=(2, 2))


class ConditionalBatchNorm(nn.Module):
  """x̂ = BN(x) without affine; out = (1 + γ) x̂ + β, γ and β linear in the condition.

  cond [N, D] is the global condition; context [N, h, w, D'] (optional) the word
  context of local conditional batch norm, at x's size or a divisor of it. γ, β are
  linear in [cond, nearest-upsampled context], computed as Dense(cond) per example
  plus Dense(context) at the context's size, then upsampled: the same function as a
  Dense over the concatenation at every pixel, a fraction of its cost.
  Both start at 0, so the block starts as plain batch norm. `mask` [N] keeps
  curriculum-masked examples out of the statistics.
  """

  @nn.compact
  def __call__(self, x, cond, mask, *, train: bool, context=None):
    x = nn.BatchNorm(use_running_average=not train, use_scale=False, use_bias=False, momentum=0.9,
                     epsilon=1e-5)(x, mask=mask[:, None, None, None])
    affine = {}
    for name in ("gamma", "beta"):
      value = nn.Dense(x.shape[-1], kernel_init=nn.initializers.zeros, name=name)(cond)[:, None, None, :]
      if context is not None:
        local = nn.Dense(x.shape[-1], use_bias=False, kernel_init=nn.initializers.zeros,
                         name=f"{name}_local")(context)
        value = value + _upsample(local, x.shape[1] // context.shape[1])
      affine[name] = value
    return x * (1.0 + affine["gamma"]) + affine["beta"]


class UpBlock(nn.Module):
  """BigGAN residual up-block: CBN → ReLU → ×2 → conv3 → CBN → ReLU → conv3, plus conv1(×2 x).

  With a word `context` both batch norms are local (spatially conditioned).
  """
  features: int

  @nn.compact
  def __call__(self, x, cond, mask, *, train: bool, context=None):
    h = nn.relu(ConditionalBatchNorm(name="cbn1")(x, cond, mask, train=train, context=context))
    h = nn.Conv(self.features, (3, 3), name="conv1")(_upsample(h))
    h = nn.relu(ConditionalBatchNorm(name="cbn2")(h, cond, mask, train=train, context=context))
    h = nn.Conv(self.features, (3, 3), name="conv2")(h)
    return h + nn.Conv(self.features, (1, 1), name="skip")(_upsample(x))


def word_region_attention(regions, words, word_mask, rho0: float):
  """Per-region word context: Σ_l softmax_l(ρ0 cos(r, w_l)) w_l over real words (pads masked)."""
  scores = rho0 * jnp.einsum("nhwd,nld->nhwl", losses.l2_normalize(regions), losses.l2_normalize(words))
  scores = jnp.where(word_mask[:, None, None, :], scores, _NEG)
  return jnp.einsum("nhwl,nld->nhwd", jax.nn.softmax(scores, axis=-1), words)


class Generator(nn.Module):
  """G(z, sentence, words) → images in [-1, 1] of size `resolution`."""
  resolution: int = 32
  channels: int = 32          # width unit; block i has channels × multipliers
  cond_dim: int = 128         # Dense(sentence) width, concatenated with z
  attention_dim: int = 64     # width of the word–region attention
  rho0: float = 15.0

  @staticmethod
  def _multiplier(level: int, levels: int) -> int:
    """Channel multiplier at 4·2^level px (level 0 is the 4×4 stem): halves per level, 1 at full size, ≤ 8."""
    return min(8, 2 ** (levels - max(level, 1)))

  @nn.compact
  def __call__(self, z, sentence, words, word_mask, mask, *, train: bool = False):
    levels = _levels(self.resolution)
    cond = jnp.concatenate([nn.Dense(self.cond_dim, name="sentence_proj")(sentence), z], axis=-1)
    ch = self.channels * self._multiplier(0, levels)
    x = nn.Dense(4 * 4 * ch, name="stem")(cond).reshape(z.shape[0], 4, 4, ch)
    context = None
    for level in range(1, levels + 1):
      features = self.channels * self._multiplier(level, levels)
      size = 4 * 2 ** level
      x = UpBlock(features, name=f"up_{size}")(x, cond, mask, train=train, context=context)
      if size == REGION_SIZE:
        query = nn.Conv(self.attention_dim, (1, 1), name="region_query")(x)
        keys = nn.Dense(self.attention_dim, name="word_key")(words)
        context = word_region_attention(query, keys, word_mask, self.rho0)
    x = nn.relu(ConditionalBatchNorm(name="out_cbn")(x, cond, mask, train=train, context=context))
    return jnp.tanh(nn.Conv(3, (3, 3), name="to_rgb")(x))


class DownBlock(nn.Module):
  """Residual down-block: [ReLU →] SNconv3 → ReLU → SNconv3 → pool, plus SNconv1 skip (pooled)."""
  features: int
  first: bool = False
  downsample: bool = True

  @nn.compact
  def __call__(self, x, *, train: bool):
    pool = _avg_pool if self.downsample else (lambda y: y)
    h = x if self.first else nn.relu(x)
    h = nn.SpectralNorm(nn.Conv(self.features, (3, 3)), name="conv1")(h, update_stats=train)
    h = nn.SpectralNorm(nn.Conv(self.features, (3, 3)), name="conv2")(nn.relu(h), update_stats=train)
    if self.first:  # BigGAN's optimised first block: pool the input, then project
      skip = nn.SpectralNorm(nn.Conv(self.features, (1, 1)), name="skip")(pool(x), update_stats=train)
    else:
      skip = pool(nn.SpectralNorm(nn.Conv(self.features, (1, 1)), name="skip")(x, update_stats=train))
    return pool(h) + skip


class Discriminator(nn.Module):
  """D(images, sentence, words) → logits and the features of XMC-GAN's contrastive terms."""
  resolution: int = 32
  channels: int = 32
  contrastive_dim: int = 128

  @nn.compact
  def __call__(self, images, sentence, words, *, train: bool = False):
    levels = _levels(self.resolution)
    x, regions = images, None
    for i in range(levels):
      size = self.resolution // 2 ** (i + 1)
      x = DownBlock(self.channels * 2 ** min(i, 4), first=i == 0, name=f"down_{size}")(x, train=train)
      if size == REGION_SIZE:
        regions = x
    x = DownBlock(x.shape[-1], downsample=False, name="final")(x, train=train)
    pool = jnp.sum(nn.relu(x), axis=(1, 2))
    sentence_proj = nn.SpectralNorm(nn.Dense(pool.shape[-1]), name="projection")(sentence, update_stats=train)
    logit = nn.SpectralNorm(nn.Dense(1), name="logit")(pool, update_stats=train)[:, 0]
    logit = logit + jnp.sum(pool * sentence_proj, axis=-1)
    n, h, w, c = regions.shape
    return {
        "logit": logit,
        "image": nn.Dense(self.contrastive_dim, name="image_head")(pool),
        "sentence": nn.Dense(self.contrastive_dim, name="sentence_head")(sentence),
        "regions": nn.Dense(self.contrastive_dim, name="region_head")(regions.reshape(n, h * w, c)),
        "words": nn.Dense(self.contrastive_dim, name="word_head")(words),
    }
