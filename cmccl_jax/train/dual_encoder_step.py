"""The jitted dual-encoder train step and the embedding functions used by evaluation.

Pure functions over explicit pytrees; `make_train_step` closes over the static
pieces (model, optimizer, config) so the jitted function takes only arrays.
"""

import functools

import jax
import jax.numpy as jnp
import optax

from cmccl_jax import losses
from cmccl_jax.curriculum import pacing
from cmccl_jax.train import staging
from cmccl_jax.train.state import TrainState


def dual_encoder_loss(params, batch, step, rng, *, model, loss_config, curriculum_config):
  """Masked, curriculum-weighted contrastive loss of a batch at `step`.

  The pacing function of the step maps each example's block to a weight; weight 0
  masks the example out of the loss as anchor and as negative.
  """
  k = int(curriculum_config.num_blocks)
  block_w = pacing.block_weights(step, curriculum_config)
  weights = block_w[jnp.clip(batch["block"], 0, k - 1)]
  valid = weights > 0
  z_img, z_txt, out = model.apply(params, batch["image"], batch["tokens"], train=True, rngs={"dropout": rng})
  loss, parts = losses.contrastive_loss(
      z_img, z_txt, scale=out["scale"], bias=out["bias"], kind=loss_config.kind, valid=valid, weights=weights)
  aux = {
      "accuracy": parts["accuracy"],
      "positive_logit": parts["positive_logit"],
      "negative_logit": parts["negative_logit"],
      "scale": out["scale"],
      "bias": out["bias"],
      "visible_fraction": jnp.mean(valid.astype(jnp.float32)),
      "visible_blocks": jnp.sum(block_w > 0),
      "block_counts": jnp.sum(jax.nn.one_hot(batch["block"], k, dtype=jnp.int32), axis=0),
  }
  return loss, aux


def dual_encoder_step(state: TrainState, batch, *, model, tx, loss_config, curriculum_config, staging_config,
                      lr_schedule):
  """One AdamW step on `dual_encoder_loss`; dropout noise is keyed by (seed, step)."""
  rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
  loss_fn = functools.partial(dual_encoder_loss, batch=batch, step=state.step, rng=rng, model=model,
                              loss_config=loss_config, curriculum_config=curriculum_config)
  (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), "learning_rate": lr_schedule(state.step), **aux}
  for tower in staging.TOWERS:
    metrics[f"trainable/{tower}"] = staging.tower_trainable(state.step, staging_config, tower)
  return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics


def make_train_step(model, tx, config, lr_schedule):
  return functools.partial(dual_encoder_step, model=model, tx=tx, loss_config=config.loss,
                           curriculum_config=config.curriculum, staging_config=config.staging,
                           lr_schedule=lr_schedule)


def embed_images(params, images, *, model):
  return losses.l2_normalize(model.apply(params, images, method=model.encode_image))


def embed_texts(params, tokens, *, model):
  return losses.l2_normalize(model.apply(params, tokens, method=model.encode_text))
