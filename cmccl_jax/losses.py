"""The contrastive family: one function serves every model of the project.

Dual encoders call `contrastive_loss` on image and text embeddings; every XMC-GAN
term calls it too. Inputs are global (sharded) arrays, so negatives are global:
the logits see the whole batch, not a device's slice.
"""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

# A finite stand-in for -inf: exp(_NEG - max) underflows to exactly 0 in float32,
# so a masked column gets exactly zero probability and zero gradient, and rows
# that are entirely masked stay finite (no inf - inf = nan).
_NEG = -1e9


def l2_normalize(x: jax.Array, axis: int = -1, eps: float = 1e-8) -> jax.Array:
  """x / max(||x||, eps)."""
  return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(jnp.square(x), axis=axis, keepdims=True), eps * eps))


def _masked_mean(values: jax.Array, valid: jax.Array, weights: jax.Array) -> jax.Array:
  """sum_i valid_i w_i v_i / max(sum_i valid_i, 1): weights rescale, the count normalises."""
  weighted = jnp.where(valid, weights * values, 0.0)
  return jnp.sum(weighted) / jnp.maximum(jnp.sum(valid), 1)


def softmax_contrastive(logits: jax.Array, valid: jax.Array, weights: jax.Array) -> dict[str, jax.Array]:
  """InfoNCE in both directions on square logits whose diagonal holds the positives.

  L = ½ [CE(rows) + CE(columns)]; an invalid example is dropped as an anchor (its
  row/column loss does not count) and as a negative (its column/row is excluded).
  """
  pair_valid = valid[:, None] & valid[None, :]
  masked = jnp.where(pair_valid, logits, _NEG)
  diag = jnp.diagonal(masked)
  a2b = jax.nn.logsumexp(masked, axis=1) - diag
  b2a = jax.nn.logsumexp(masked, axis=0) - diag
  per_example = 0.5 * (a2b + b2a)
  eye = jnp.eye(logits.shape[0], dtype=bool)
  correct_a2b = jnp.argmax(masked, axis=1) == jnp.arange(logits.shape[0])
  return {
      "loss": _masked_mean(per_example, valid, weights),
      "loss_a2b": _masked_mean(a2b, valid, weights),
      "loss_b2a": _masked_mean(b2a, valid, weights),
      "per_example": jnp.where(valid, per_example, 0.0),
      "accuracy": _masked_mean(correct_a2b.astype(jnp.float32), valid, jnp.ones_like(weights)),
      "positive_logit": _masked_mean(diag, valid, jnp.ones_like(weights)),
      "negative_logit": jnp.sum(jnp.where(pair_valid & ~eye, logits, 0.0))
      / jnp.maximum(jnp.sum(pair_valid & ~eye), 1),
  }


def sigmoid_contrastive(logits: jax.Array, valid: jax.Array, weights: jax.Array) -> dict[str, jax.Array]:
  """SigLIP: ℓ_i = −Σ_j log σ(z_ij · logit_ij), z = +1 on the diagonal, −1 elsewhere.

  The sum runs over valid columns only; the loss is the (weighted) mean over
  valid rows, as in SigLIP where it is normalised by the batch size.
  """
  n = logits.shape[0]
  eye = jnp.eye(n, dtype=bool)
  labels = jnp.where(eye, 1.0, -1.0)
  pair_valid = valid[:, None] & valid[None, :]
  pair_loss = jnp.where(pair_valid, -jax.nn.log_sigmoid(labels * logits), 0.0)
  per_example = jnp.sum(pair_loss, axis=1)
  correct = jnp.where(pair_valid, (logits > 0) == eye, True)
  return {
      "loss": _masked_mean(per_example, valid, weights),
      "per_example": jnp.where(valid, per_example, 0.0),
      "accuracy": _masked_mean(jnp.all(correct, axis=1).astype(jnp.float32), valid, jnp.ones_like(weights)),
      "positive_logit": _masked_mean(jnp.diagonal(logits), valid, jnp.ones_like(weights)),
      "negative_logit": jnp.sum(jnp.where(pair_valid & ~eye, logits, 0.0))
      / jnp.maximum(jnp.sum(pair_valid & ~eye), 1),
  }


def contrastive_loss(
    emb_a: jax.Array,
    emb_b: jax.Array,
    *,
    scale: jax.Array | float,
    bias: jax.Array | float = 0.0,
    kind: str = "softmax",
    valid: jax.Array | None = None,
    weights: jax.Array | None = None,
    normalize: bool = True,
    similarity: Callable[[jax.Array, jax.Array], jax.Array] | None = None,
) -> tuple[jax.Array, dict[str, Any]]:
  """The project's one contrastive function: logits = scale · â b̂ᵀ + bias over the global batch.

  Args:
    emb_a, emb_b: [N, ..., D] embeddings; row i of each is a positive pair. Global
      arrays: under jit with a data-sharded batch the logits are [local, global] per device.
    scale: 1/τ (exp of the learnable temperature, already clipped).
    bias: additive logit bias (SigLIP); ignored by the softmax loss.
    kind: "softmax" (InfoNCE/CLIP) or "sigmoid" (SigLIP).
    valid: [N] bool; masked examples are neither anchors nor negatives.
    weights: [N] per-example loss weights (curriculum); default 1.
    normalize: l2-normalise the embeddings first (cosine similarities).
    similarity: (a, b) -> [N, N] similarity of every a_i with every b_j; default the
      dot product of [N, D] rows. XMC-GAN's region–word term passes `region_word_similarity`.

  Returns:
    (loss, parts): parts holds the directional losses, per-example losses,
    accuracy and mean positive/negative logits.
  """
  n = emb_a.shape[0]
  if emb_b.shape[0] != n:
    raise ValueError(f"contrastive_loss needs paired embeddings, got {emb_a.shape} and {emb_b.shape}.")
  valid = jnp.ones((n,), bool) if valid is None else valid.astype(bool)
  weights = jnp.ones((n,), jnp.float32) if weights is None else weights.astype(jnp.float32)
  # Masked rows are zeroed first, before anything computes on them: a non-finite
  # value there then reaches neither the logits of valid pairs nor, through the
  # normalisation's backward pass (0 · nan = nan), any gradient.
  emb_a = jnp.where(valid.reshape((n,) + (1,) * (emb_a.ndim - 1)), emb_a, 0.0)
  emb_b = jnp.where(valid.reshape((n,) + (1,) * (emb_b.ndim - 1)), emb_b, 0.0)
  if normalize:
    emb_a, emb_b = l2_normalize(emb_a), l2_normalize(emb_b)
  if similarity is None:
    logits = scale * jnp.einsum("id,jd->ij", emb_a, emb_b, preferred_element_type=jnp.float32)
  else:
    logits = scale * similarity(emb_a, emb_b).astype(jnp.float32)
  if kind == "softmax":
    parts = softmax_contrastive(logits, valid, weights)
  elif kind == "sigmoid":
    parts = sigmoid_contrastive(logits + bias, valid, weights)
  else:
    raise ValueError(f"unknown contrastive loss kind {kind!r}; use 'softmax' or 'sigmoid'.")
  return parts["loss"], parts


def region_word_similarity(regions: jax.Array, words: jax.Array, word_mask: jax.Array, *, rho1: float = 5.0,
                           rho2: float = 5.0) -> jax.Array:
  """DAMSM S_ij = (1/ρ2) log Σ_l exp(ρ2 cos(w_jl, c_ijl)), c_ijl = Σ_r softmax_r(ρ1 cos(w_jl, r_ir)) r_ir.

  regions [N, R, D] of image i, words [N, L, D] of caption j (l2-normalised by the
  caller), word_mask [N, L] marks real words; the sum runs over real words only.
  """
  attention = jax.nn.softmax(rho1 * jnp.einsum("jld,ird->ijlr", words, regions), axis=-1)
  context = l2_normalize(jnp.einsum("ijlr,ird->ijld", attention, regions))
  match = rho2 * jnp.einsum("jld,ijld->ijl", words, context)
  return jax.nn.logsumexp(jnp.where(word_mask[None], match, _NEG), axis=-1) / rho2


def hinge_d_loss(real_logits: jax.Array, fake_logits: jax.Array, valid: jax.Array) -> jax.Array:
  """L_D = mean relu(1 − D(real)) + mean relu(1 + D(fake)), over valid examples."""
  ones = jnp.ones_like(real_logits)
  return (_masked_mean(jax.nn.relu(1.0 - real_logits), valid, ones)
          + _masked_mean(jax.nn.relu(1.0 + fake_logits), valid, ones))


def hinge_g_loss(fake_logits: jax.Array, valid: jax.Array) -> jax.Array:
  """L_G = −mean D(fake), over valid examples."""
  return -_masked_mean(fake_logits, valid, jnp.ones_like(fake_logits))
