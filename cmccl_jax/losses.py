"""The contrastive family: one function serves every model of the project.

Dual encoders call `contrastive_loss` on image and text embeddings; every XMC-GAN
term calls it too. Inputs are global (sharded) arrays, so negatives are global:
the logits see the whole batch, not a device's slice.

Kinds: "softmax" (InfoNCE/CLIP), "sigmoid" (SigLIP), "max_violation" (VSE++'s hinge on
the hardest negative). Hard negatives (`HardNegatives`): "hn_nce" (Radenovic et al.
2023) and "hcl" (Robinson et al. 2021) reweight the negatives of each anchor; a margin
on the positive (scalar, scheduled by the caller, or one per example) makes every kind
ask for a gap. All keep the mask: a masked example is neither an anchor nor a negative.
"""

from collections.abc import Callable
from typing import Any

import flax
import jax
import jax.numpy as jnp

# A finite stand-in for -inf: exp(_NEG - max) underflows to exactly 0 in float32,
# so a masked column gets exactly zero probability and zero gradient, and rows
# that are entirely masked stay finite (no inf - inf = nan).
_NEG = -1e9


def l2_normalize(x: jax.Array, axis: int = -1, eps: float = 1e-8) -> jax.Array:
  """x / max(||x||, eps)."""
  return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(jnp.square(x), axis=axis, keepdims=True), eps * eps))


KINDS = ("softmax", "sigmoid", "max_violation")
HARD_NEGATIVES = ("none", "hn_nce", "hcl")
# "negatives/top_mass": the share of an anchor's negative probability mass on its TOP_K hardest negatives.
TOP_K = 5


@flax.struct.dataclass
class HardNegatives:
  """How the negatives of each anchor are weighted; the numbers may be traced (a schedule of the step).

  kind "none": as the loss kind defines. "hn_nce" (softmax, sigmoid): negative j of anchor i
  gets w_ij = (k−1)·softmax_{l≠i}(β s_il)_j, normalised over that anchor's own negatives
  (row i for image anchors, column i for text anchors), so Σ_j≠i w_ij = k−1 (k valid examples)
  and β = 0 is the unweighted loss; `alpha` scales the positive in the softmax denominator
  (1: InfoNCE's). w is a constant for the gradient (stop-gradient): it is an importance
  weight of the negative distribution, not something to optimise. "hcl" (softmax): HCL's
  debiased, β-tilted negative term, with τ⁺ = `tau_plus`, clamped at N·e^{−scale} (the
  smallest e^{s}), gradients through it as in its reference code.
  """

  kind: str = flax.struct.field(pytree_node=False, default="none")
  alpha: Any = 1.0
  beta: Any = 0.0
  tau_plus: Any = 0.1


@flax.struct.dataclass
class QueueNegatives:
  """Past embeddings used as extra negatives (detached, unit norm): `a` [Q, D] of the first modality
  (negatives of the second's anchors), `b` [Q, D] of the second, their example `ids` [Q] and `usable` [Q]
  (written and past the warm-up). An entry with an anchor's own id is not that anchor's negative."""

  a: Any
  b: Any
  ids: Any
  usable: Any


def _queue_logits(anchors, entries, queue: QueueNegatives, ids, scale, valid):
  """[N, Q] logits of each anchor against the queue entries, _NEG where the entry may not be its negative."""
  logits = scale * jnp.einsum("id,qd->iq", anchors, jax.lax.stop_gradient(entries), preferred_element_type=jnp.float32)
  allowed = valid[:, None] & queue.usable[None, :] & (queue.ids[None, :] != ids[:, None])
  return jnp.where(allowed, logits, _NEG), allowed


def _off_diagonal_log_weights(logits, pair_valid, beta, axis: int):
  """log w of HN-NCE over `axis` (1: each row's negatives, 0: each column's), detached; −∞-like off the mask."""
  n = logits.shape[0]
  negative = pair_valid & ~jnp.eye(n, dtype=bool)
  tilted = jnp.where(negative, beta * logits, _NEG)
  count = jnp.sum(negative, axis=axis, keepdims=True)
  log_w = jnp.log(jnp.maximum(count, 1).astype(jnp.float32)) + tilted - jax.nn.logsumexp(
      tilted, axis=axis, keepdims=True)
  return jax.lax.stop_gradient(jnp.where(negative, log_w, _NEG))


def top_negative_mass(logits, pair_valid, log_weights=None, k: int = TOP_K):
  """Mean over valid anchors (rows) of the share of the row's negative mass (w_ij e^{s_ij}) on its k largest."""
  n = logits.shape[0]
  negative = pair_valid & ~jnp.eye(n, dtype=bool)
  scores = jnp.where(negative, logits if log_weights is None else logits + log_weights, _NEG)
  p = jax.nn.softmax(scores, axis=1) * negative
  top = jax.lax.top_k(p, min(k, n))[0]
  has = jnp.any(negative, axis=1)
  return jnp.sum(jnp.where(has, jnp.sum(top, axis=1), 0.0)) / jnp.maximum(jnp.sum(has), 1)


def _masked_mean(values: jax.Array, valid: jax.Array, weights: jax.Array) -> jax.Array:
  """sum_i valid_i w_i v_i / max(sum_i valid_i, 1): weights rescale, the count normalises."""
  weighted = jnp.where(valid, weights * values, 0.0)
  return jnp.sum(weighted) / jnp.maximum(jnp.sum(valid), 1)


def softmax_contrastive(logits: jax.Array, valid: jax.Array, weights: jax.Array,
                        hard: HardNegatives = HardNegatives(), margin_logit: jax.Array | float = 0.0,
                        scale: jax.Array | float = 1.0, extra=None) -> dict[str, jax.Array]:
  """InfoNCE in both directions on square logits whose diagonal holds the positives.

  L = ½ [CE(rows) + CE(columns)]; an invalid example is dropped as an anchor (its
  row/column loss does not count) and as a negative (its column/row is excluded).
  `margin_logit` ([N] or scalar) is subtracted from each positive logit; `hard` reweights
  the negatives (HardNegatives); `scale` is the logits' 1/τ (HCL's clamp). `extra`: ([N, Q] logits of
  each first-modality anchor, [N, Q] of each second-modality anchor) against queued negatives.
  """
  n = logits.shape[0]
  eye = jnp.eye(n, dtype=bool)
  pair_valid = valid[:, None] & valid[None, :]
  shifted = logits - jnp.where(eye, margin_logit, 0.0)  # the margin on the diagonal only
  masked = jnp.where(pair_valid, shifted, _NEG)
  diag = jnp.diagonal(masked)
  log_w_rows = log_w_cols = None
  if extra is not None:
    if hard.kind != "none":
      raise ValueError(f"queued negatives go with the plain losses, not hard negatives {hard.kind!r}")
    a2b = jax.nn.logsumexp(jnp.concatenate([masked, extra[0]], axis=1), axis=1) - diag
    b2a = jax.nn.logsumexp(jnp.concatenate([masked.T, extra[1]], axis=1), axis=1) - diag
  elif hard.kind == "none":
    a2b = jax.nn.logsumexp(masked, axis=1) - diag
    b2a = jax.nn.logsumexp(masked, axis=0) - diag
  elif hard.kind == "hn_nce":
    log_alpha = jnp.where(hard.alpha > 0, jnp.log(jnp.maximum(hard.alpha, 1e-30)), _NEG)
    log_w_rows = _off_diagonal_log_weights(logits, pair_valid, hard.beta, axis=1)
    log_w_cols = _off_diagonal_log_weights(logits, pair_valid, hard.beta, axis=0)
    positive = jnp.where(eye, masked + log_alpha, _NEG)
    a2b = jax.nn.logsumexp(jnp.where(eye, positive, masked + log_w_rows), axis=1) - diag
    b2a = jax.nn.logsumexp(jnp.where(eye, positive, masked + log_w_cols), axis=0) - diag
  elif hard.kind == "hcl":
    a2b = _hcl(masked, pair_valid, hard, scale, axis=1)
    b2a = _hcl(masked, pair_valid, hard, scale, axis=0)
  else:
    raise ValueError(f"unknown hard-negative kind {hard.kind!r}; use one of {HARD_NEGATIVES}")
  per_example = 0.5 * (a2b + b2a)
  correct_a2b = jnp.argmax(masked, axis=1) == jnp.arange(n)
  return {
      "loss": _masked_mean(per_example, valid, weights),
      "loss_a2b": _masked_mean(a2b, valid, weights),
      "loss_b2a": _masked_mean(b2a, valid, weights),
      "per_example": jnp.where(valid, per_example, 0.0),
      "accuracy": _masked_mean(correct_a2b.astype(jnp.float32), valid, jnp.ones_like(weights)),
      "positive_logit": _masked_mean(jnp.diagonal(logits), valid, jnp.ones_like(weights)),
      "negative_logit": jnp.sum(jnp.where(pair_valid & ~eye, logits, 0.0))
      / jnp.maximum(jnp.sum(pair_valid & ~eye), 1),
      "top_negative_mass": top_negative_mass(logits, pair_valid, log_w_rows),
  }


def _hcl(masked, pair_valid, hard: HardNegatives, scale, axis: int):
  """HCL's per-anchor loss along `axis`: −log(e^{s⁺} / (e^{s⁺} + N_g)), in log space (e^{s} overflows at s > 88).

  N_g = max((R − τ⁺·N·e^{s⁺}) / (1 − τ⁺), N·e^{−scale}), R = N·Σ e^{(1+β)s} / Σ e^{βs} over the N negatives.
  """
  n = masked.shape[0]
  negative = pair_valid & ~jnp.eye(n, dtype=bool)
  count = jnp.maximum(jnp.sum(negative, axis=axis), 1).astype(jnp.float32)
  pos = jnp.diagonal(masked)
  neg = jnp.where(negative, masked, _NEG)
  log_r = (jnp.log(count) + jax.nn.logsumexp(jnp.where(negative, (1 + hard.beta) * neg, _NEG), axis=axis)
           - jax.nn.logsumexp(jnp.where(negative, hard.beta * neg, _NEG), axis=axis))
  top = jnp.maximum(pos, log_r)
  e_pos = jnp.exp(pos - top)
  ng = jnp.maximum((jnp.exp(log_r - top) - hard.tau_plus * count * e_pos) / (1 - hard.tau_plus),
                   count * jnp.exp(-scale - top))
  loss = top - pos + jnp.log(e_pos + ng)
  return jnp.where(jnp.any(negative, axis=axis), loss, 0.0)  # no negative: nothing to contrast


def max_violation_contrastive(cosines: jax.Array, valid: jax.Array, weights: jax.Array,
                              margin: jax.Array | float = 0.0, hinge: float = 0.2) -> dict[str, jax.Array]:
  """VSE++ (Faghri et al. 2018): ℓ_i = ½ [max_j≠i (h + c_ij − c'_ii)₊ + max_j≠i (h + c_ji − c'_ii)₊]
  on cosines, c'_ii = c_ii − margin (h = `hinge`, VSE++'s 0.2; its loss is the sum, 2 × this)."""
  n = cosines.shape[0]
  eye = jnp.eye(n, dtype=bool)
  pair_valid = valid[:, None] & valid[None, :]
  negative = pair_valid & ~eye
  pos = jnp.diagonal(cosines) - margin
  violation = jnp.where(negative, jax.nn.relu(hinge + cosines - pos[:, None]), 0.0)
  a2b = jnp.max(violation, axis=1)
  violation_t = jnp.where(negative, jax.nn.relu(hinge + cosines - pos[None, :]), 0.0)
  b2a = jnp.max(violation_t, axis=0)
  per_example = 0.5 * (a2b + b2a)
  hardest = jnp.max(jnp.where(negative, cosines, -jnp.inf), axis=1)
  return {
      "loss": _masked_mean(per_example, valid, weights),
      "loss_a2b": _masked_mean(a2b, valid, weights),
      "loss_b2a": _masked_mean(b2a, valid, weights),
      "per_example": jnp.where(valid, per_example, 0.0),
      "accuracy": _masked_mean((jnp.diagonal(cosines) > hardest).astype(jnp.float32), valid, jnp.ones_like(weights)),
      "positive_logit": _masked_mean(jnp.diagonal(cosines), valid, jnp.ones_like(weights)),
      "negative_logit": jnp.sum(jnp.where(negative, cosines, 0.0)) / jnp.maximum(jnp.sum(negative), 1),
      "top_negative_mass": top_negative_mass(cosines, pair_valid),
  }


def sigmoid_contrastive(logits: jax.Array, valid: jax.Array, weights: jax.Array,
                        hard: HardNegatives = HardNegatives(), margin_logit: jax.Array | float = 0.0,
                        extra=None) -> dict[str, jax.Array]:
  """SigLIP: ℓ_i = −Σ_j log σ(z_ij · logit_ij), z = +1 on the diagonal, −1 elsewhere.

  The sum runs over valid columns only; the loss is the (weighted) mean over
  valid rows, as in SigLIP where it is normalised by the batch size. `margin_logit` is
  subtracted from each positive logit; with `hard` "hn_nce" each negative pair's term is
  weighted by HN-NCE's w_ij over its row (α has no meaning here; "hcl" is softmax only). `extra`:
  ([N, Q] logits with bias, [N, Q] allowed) pairs of example i with queued entries, all negatives.
  """
  n = logits.shape[0]
  eye = jnp.eye(n, dtype=bool)
  labels = jnp.where(eye, 1.0, -1.0)
  pair_valid = valid[:, None] & valid[None, :]
  shifted = logits - jnp.where(eye, margin_logit, 0.0)
  pair_loss = jnp.where(pair_valid, -jax.nn.log_sigmoid(labels * shifted), 0.0)
  log_w = None
  if hard.kind == "hn_nce":
    log_w = _off_diagonal_log_weights(logits, pair_valid, hard.beta, axis=1)
    pair_loss = pair_loss * jnp.where(eye, 1.0, jnp.exp(log_w))
  elif hard.kind != "none":
    raise ValueError(f"hard negatives {hard.kind!r} have no sigmoid form; use 'hn_nce' or the softmax loss")
  per_example = jnp.sum(pair_loss, axis=1)
  if extra is not None:
    if hard.kind != "none":
      raise ValueError(f"queued negatives go with the plain losses, not hard negatives {hard.kind!r}")
    for queued, allowed in extra:
      per_example = per_example + jnp.sum(jnp.where(allowed, -jax.nn.log_sigmoid(-queued), 0.0), axis=1)
  correct = jnp.where(pair_valid, (logits > 0) == eye, True)
  return {
      "loss": _masked_mean(per_example, valid, weights),
      "per_example": jnp.where(valid, per_example, 0.0),
      "accuracy": _masked_mean(jnp.all(correct, axis=1).astype(jnp.float32), valid, jnp.ones_like(weights)),
      "positive_logit": _masked_mean(jnp.diagonal(logits), valid, jnp.ones_like(weights)),
      "negative_logit": jnp.sum(jnp.where(pair_valid & ~eye, logits, 0.0))
      / jnp.maximum(jnp.sum(pair_valid & ~eye), 1),
      "top_negative_mass": top_negative_mass(logits, pair_valid, log_w),
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
    hard_negatives: HardNegatives | None = None,
    margin: jax.Array | float = 0.0,
    hinge: float = 0.2,
    chunk_size: int = 0,
    queue: QueueNegatives | None = None,
    ids: jax.Array | None = None,
    ring: Any = None,
) -> tuple[jax.Array, dict[str, Any]]:
  """The project's one contrastive function: logits = scale · â b̂ᵀ + bias over the global batch.

  Args:
    emb_a, emb_b: [N, ..., D] embeddings; row i of each is a positive pair. Global
      arrays: under jit with a data-sharded batch the logits are [local, global] per device.
    scale: 1/τ (exp of the learnable temperature, already clipped).
    bias: additive logit bias (SigLIP); ignored by the softmax loss.
    kind: "softmax" (InfoNCE/CLIP), "sigmoid" (SigLIP) or "max_violation" (VSE++, on the
      similarities before scale and bias).
    valid: [N] bool; masked examples are neither anchors nor negatives.
    weights: [N] per-example loss weights (curriculum); default 1.
    normalize: l2-normalise the embeddings first (cosine similarities).
    similarity: (a, b) -> [N, N] similarity of every a_i with every b_j; default the
      dot product of [N, D] rows. XMC-GAN's region–word term passes `region_word_similarity`.
    hard_negatives: how each anchor's negatives are weighted (HardNegatives); default none.
    margin: subtracted from each positive similarity before scaling (scalar or [N]: per
      example), so the positive logit becomes scale · (s_ii − m): CosFace's additive margin.
    hinge: max_violation's hinge margin (VSE++: 0.2).
    chunk_size: > 0: softmax and sigmoid computed `chunk_size` columns at a time
      (chunked_losses.py: O(N × chunk) memory, same value and gradient); 0: dense.
    queue, ids: queued past embeddings as extra negatives of every anchor (softmax, sigmoid),
      except the entries whose id is the anchor example's own (`ids` [N]).
    ring: a Mesh: the sigmoid loss with `emb_b`'s shards passed around its data axis
      (chunked_losses.ring_sigmoid: [local × local] blocks, or [local × chunk_size] with
      chunk_size > 0; no gather); None: not.

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
  hard = hard_negatives or HardNegatives()
  if ring is not None:
    if kind != "sigmoid" or queue is not None or similarity is not None or hard.kind != "none":
      raise ValueError("the ring loss is the plain dot-product sigmoid loss, without queued or hard negatives; "
                       f"got kind {kind!r}, a queue: {queue is not None}, hard negatives {hard.kind!r}, a custom "
                       f"similarity: {similarity is not None}. Set loss.ring=False for those.")
    from cmccl_jax import chunked_losses  # it builds on this module
    parts = chunked_losses.ring_sigmoid(emb_a, emb_b, scale=scale, bias=bias, valid=valid, weights=weights,
                                        margin=margin, mesh=ring, chunk=int(chunk_size))
    return parts["loss"], parts
  if chunk_size:
    if queue is not None:
      raise ValueError("the chunked loss takes no queued negatives; set loss.chunk_size=0 or loss.queue.size=0")
    if similarity is not None or hard.kind != "none" or kind not in ("softmax", "sigmoid"):
      raise ValueError("the chunked loss is the dot-product softmax or sigmoid loss without hard negatives; "
                       f"got kind {kind!r}, hard negatives {hard.kind!r}, a custom similarity: "
                       f"{similarity is not None}. Set loss.chunk_size=0 for those.")
    from cmccl_jax import chunked_losses  # it builds on this module
    parts = chunked_losses.chunked_contrastive(emb_a, emb_b, scale=scale, bias=bias, kind=kind, valid=valid,
                                               weights=weights, margin=margin, chunk=int(chunk_size))
    return parts["loss"], parts
  if similarity is None:
    sims = jnp.einsum("id,jd->ij", emb_a, emb_b, preferred_element_type=jnp.float32)
  else:
    sims = similarity(emb_a, emb_b).astype(jnp.float32)
  logits = scale * sims
  extra = None
  if queue is not None:
    if similarity is not None or kind not in ("softmax", "sigmoid") or ids is None:
      raise ValueError("queued negatives need the dot-product softmax or sigmoid loss and the examples' ids")
    a_vs_queue, a_allowed = _queue_logits(emb_a, queue.b, queue, ids, scale, valid)
    b_vs_queue, b_allowed = _queue_logits(emb_b, queue.a, queue, ids, scale, valid)
    extra = ((a_vs_queue, b_vs_queue) if kind == "softmax"
             else ((a_vs_queue + bias, a_allowed), (b_vs_queue + bias, b_allowed)))
  if kind == "softmax":
    parts = softmax_contrastive(logits, valid, weights, hard, scale * margin, scale, extra)
  elif kind == "sigmoid":
    parts = sigmoid_contrastive(logits + bias, valid, weights, hard, scale * margin, extra)
  elif kind == "max_violation":
    if hard.kind != "none":
      raise ValueError(f"max_violation already takes the hardest negative; hard negatives {hard.kind!r} do not apply")
    parts = max_violation_contrastive(sims, valid, weights, margin, hinge)
  else:
    raise ValueError(f"unknown contrastive loss kind {kind!r}; use one of {KINDS}.")
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
