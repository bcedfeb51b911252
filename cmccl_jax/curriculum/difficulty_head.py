"""The learnable difficulty evaluator: a small head that predicts an example's loss from its features.

`curriculum.LEARNED` ("learned") is the config.curriculum.scorer that paces by its predictions.

The head (`models.dual_encoder.DifficultyHead`) reads the pair's normalised embeddings behind a stop-gradient, so it never
shapes the encoders, and regresses the example's *relative* contrastive loss (a
stop-gradient target):

  d̂_i = MLP([ẑ_i, ẑ_t, ẑ_i ⊙ ẑ_t]),   r_i = ℓ_i / mean_visible(ℓ),
  L_head = mean over visible i of (d̂_i − r_i)².

Relative, because the loss level falls as training goes while the ranking is what
a scorer needs; and because a target near 1 (the output bias starts there) keeps
the head's gradients small next to the model's, which share one global-norm clip.
d̂ = 1.3 reads "30% harder than the batch's average example".

Trained alongside the model by the same optimizer, it is an online difficulty
scorer that needs no batch (unlike the loss itself, which depends on the
negatives the batch happened to hold). Interpretability comes from the dashboard:
the examples it ranks hardest and easiest, and the rank correlation of its
predictions with the actual losses and with the offline scorers.
"""

import jax
import jax.numpy as jnp

from cmccl_jax import losses


def relative_loss(per_example_loss, valid):
  """r_i = ℓ_i / mean of ℓ over the visible examples (0 where not visible)."""
  count = jnp.maximum(jnp.sum(valid), 1)
  mean = jnp.sum(jnp.where(valid, per_example_loss, 0.0)) / count
  return jnp.where(valid, per_example_loss / jnp.maximum(mean, 1e-6), 0.0)


def head_loss(predicted, per_example_loss, valid):
  """Mean squared error of the predicted relative losses over visible examples; no gradient to the target."""
  target = jax.lax.stop_gradient(relative_loss(per_example_loss, valid))
  err = jnp.square(predicted - target)
  return jnp.sum(jnp.where(valid, err, 0.0)) / jnp.maximum(jnp.sum(valid), 1)


def learned_blocks(predicted, num_blocks: int):
  """Online difficulty blocks: block = ⌊K · rank / N⌋ of the predicted difficulty within the global batch.

  For `config.curriculum.scorer="learned"`: the head's ranking replaces the offline
  quantile blocks, per batch, so pacing shows the batch's easiest c(t) fraction
  as the head sees it now. Until the head has learned, that is close to random.
  """
  n = predicted.shape[0]
  ranks = average_ranks(predicted, jnp.ones((n,), bool))
  return jnp.minimum(jnp.floor(num_blocks * ranks / n), num_blocks - 1).astype(jnp.int32)


def average_ranks(v, valid):
  """Rank of each valid entry among the valid ones, ties sharing their average rank (0-based).

  By pairwise comparison, O(N²) for a batch of N: cheap next to the N² logits.
  """
  pair = valid[:, None] & valid[None, :]
  below = jnp.sum(pair & (v[None, :] < v[:, None]), axis=1)
  equal = jnp.sum(pair & (v[None, :] == v[:, None]), axis=1)
  return (below + (equal - 1) / 2).astype(jnp.float32)
