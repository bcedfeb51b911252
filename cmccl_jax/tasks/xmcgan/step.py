"""The jitted XMC-GAN step: D steps per G step (unrolled), one forward with two VJPs, EMA of G.

Every contrastive term (image–sentence, region–word, real–fake in D space and in
the frozen encoder's space) goes through `losses.contrastive_loss` on the global
batch, so negatives span all devices. The curriculum's pacing mask drops an
example from every loss term and from G's batch statistics, as in the dual-encoder
step. The frozen stage-1 encoder is part of the state (never differentiated), so
it is an argument of the step, not a compile-time constant, and a checkpoint is
self-contained.
"""

import functools
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax

from cmccl_jax import losses
from cmccl_jax.curriculum.curriculum import Curriculum

LOSS_TERMS = ("hinge_d", "hinge_g", "sentence_real", "sentence_fake", "word_real", "word_fake", "image_d", "image_e")


@flax.struct.dataclass
class GanState:
  """Everything the GAN step reads and writes; checkpointed whole."""
  step: jax.Array          # int32 scalar, G steps done
  g_params: Any
  g_stats: Any             # G's batch-norm running statistics
  d_params: Any
  d_stats: Any             # D's spectral-norm power-iteration vectors
  ema_params: Any          # exponential moving average of g_params
  g_opt: Any
  d_opt: Any
  encoder: Any             # frozen stage-1 dual-encoder variables
  rng: jax.Array           # raw uint32 key data


def to_unit_range(images: jax.Array) -> jax.Array:
  """uint8 [0, 255] → float [-1, 1], the generator's output range."""
  return images.astype(jnp.float32) / 127.5 - 1.0


def to_encoder_input(images: jax.Array, size: int) -> jax.Array:
  """[-1, 1] images → the stage-1 tower's input: pixel values in [0, 255] at its resolution (bilinear)."""
  n, h, w, c = images.shape
  if h != size or w != size:
    images = jax.image.resize(images, (n, size, size, c), "bilinear")
  return (images + 1.0) * 127.5


def text_features(encoder_vars, tokens, *, encoder):
  """(sentence [N, E], words [N, L, W], word mask [N, L]) from the frozen text tower."""
  sentence, words = encoder.apply(encoder_vars, tokens, method=encoder.encode_words)
  return jax.lax.stop_gradient(sentence), jax.lax.stop_gradient(words), tokens > 0


def generate(g_vars, encoder_vars, tokens, z, *, generator, encoder):
  """Images in [-1, 1] for `tokens` and noise `z`, batch norm on its running statistics."""
  sentence, words, word_mask = text_features(encoder_vars, tokens, encoder=encoder)
  valid = jnp.ones((tokens.shape[0],), bool)
  return generator.apply(g_vars, z, sentence, words, word_mask, valid, train=False)


def gan_losses(g_params, d_params, g_stats, d_stats, *, encoder_vars, real, text, z, valid, generator,
               discriminator, encoder, encoder_size: int, loss_config):
  """((L_D, L_G), aux) of one forward: G(z | text), D on [real; fake], E on [real; fake].

  L_D = hinge_D + w_s·sentence_real + w_w·word_real (only real images train D's
  contrastive heads); L_G = hinge_G + w_s·sentence_fake + w_w·word_fake + w_d·image_d + w_e·image_e.
  """
  sentence, words, word_mask = text
  n = real.shape[0]
  fake, g_vars = generator.apply({"params": g_params, "batch_stats": g_stats}, z, sentence, words, word_mask,
                                 valid, train=True, mutable=["batch_stats"])
  d_out, d_vars = discriminator.apply(
      {"params": d_params, "batch_stats": d_stats}, jnp.concatenate([real, fake]),
      jnp.concatenate([sentence, sentence]), jnp.concatenate([words, words]), train=True, mutable=["batch_stats"])
  d_real = jax.tree.map(lambda x: x[:n], d_out)
  d_fake = jax.tree.map(lambda x: x[n:], d_out)
  features = encoder.apply(encoder_vars, to_encoder_input(jnp.concatenate([real, fake]), encoder_size),
                           method=encoder.image_features)
  nce = functools.partial(losses.contrastive_loss, scale=1.0 / float(loss_config.temperature), valid=valid)
  word_nce = functools.partial(
      losses.contrastive_loss, scale=float(loss_config.word_scale), valid=valid,
      similarity=functools.partial(losses.region_word_similarity, word_mask=word_mask,
                                   rho1=float(loss_config.rho1), rho2=float(loss_config.rho2)))
  terms = {
      "hinge_d": losses.hinge_d_loss(d_real["logit"], d_fake["logit"], valid),
      "hinge_g": losses.hinge_g_loss(d_fake["logit"], valid),
      "sentence_real": nce(d_real["image"], d_real["sentence"])[0],
      "sentence_fake": nce(d_fake["image"], d_fake["sentence"])[0],
      "word_real": word_nce(d_real["regions"], d_real["words"])[0],
      "word_fake": word_nce(d_fake["regions"], d_fake["words"])[0],
      "image_d": nce(d_real["image"], d_fake["image"])[0],
      "image_e": nce(jax.lax.stop_gradient(features[:n]), features[n:])[0],
  }
  w = loss_config.weights
  d_loss = terms["hinge_d"] + w.sentence * terms["sentence_real"] + w.word * terms["word_real"]
  g_loss = (terms["hinge_g"] + w.sentence * terms["sentence_fake"] + w.word * terms["word_fake"]
            + w.image_d * terms["image_d"] + w.image_e * terms["image_e"])
  count = jnp.maximum(jnp.sum(valid), 1)
  aux = {
      "terms": terms,
      "g_stats": g_vars["batch_stats"],
      "d_stats": d_vars["batch_stats"],
      "d_real_logit": jnp.sum(jnp.where(valid, d_real["logit"], 0.0)) / count,
      "d_fake_logit": jnp.sum(jnp.where(valid, d_fake["logit"], 0.0)) / count,
  }
  return (d_loss, g_loss), aux


def _first(losses_and_aux):
  """((L_D, L_G), aux) → (L_D, aux)."""
  (d_loss, _), aux = losses_and_aux
  return d_loss, aux


def gan_step(state: GanState, batch, *, generator, discriminator, encoder, encoder_size: int, g_tx, d_tx, gan_config,
             curriculum: Curriculum):
  """`d_steps` discriminator updates; the last shares its forward with the generator update.

  Each D step draws fresh noise for the same real batch. The pacing of the step
  masks examples exactly as in the dual-encoder step.
  """
  gan = gan_config
  valid, _ = curriculum.example_weights(state.step, batch["block"])
  real = to_unit_range(batch["image"])
  text = text_features(state.encoder, batch["tokens"], encoder=encoder)
  rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
  d_steps = int(gan.d_steps)
  z_shape = (real.shape[0], int(gan.z_dim))
  forward = functools.partial(gan_losses, encoder_vars=state.encoder, real=real, text=text, valid=valid,
                              generator=generator, discriminator=discriminator, encoder=encoder,
                              encoder_size=encoder_size, loss_config=gan.loss)

  def d_only(i, carry):
    d_params, d_opt, g_stats, d_stats = carry
    z = jax.random.normal(jax.random.fold_in(rng, i), z_shape)
    # The gradient of L_D alone: the terms only L_G uses (E on the fakes, word_fake, ...) are dead code here.
    d_grads, aux = jax.grad(lambda dp: _first(forward(state.g_params, dp, g_stats, d_stats, z=z)), has_aux=True)(
        d_params)
    updates, d_opt = d_tx.update(d_grads, d_opt, d_params)
    return optax.apply_updates(d_params, updates), d_opt, aux["g_stats"], aux["d_stats"]

  # Unrolled: in a while loop XLA:CPU ran the D step's convolutions about 6x slower (4 s vs 0.7 s
  # for a 32 px batch of 16), and d_steps is a small constant.
  carry = (state.d_params, state.d_opt, state.g_stats, state.d_stats)
  for i in range(d_steps - 1):
    carry = d_only(i, carry)
  d_params, d_opt, g_stats, d_stats = carry
  z = jax.random.normal(jax.random.fold_in(rng, d_steps - 1), z_shape)
  (d_loss, g_loss), vjp, aux = jax.vjp(
      lambda gp, dp: forward(gp, dp, g_stats, d_stats, z=z), state.g_params, d_params, has_aux=True)
  _, d_grads = vjp((jnp.ones(()), jnp.zeros(())))
  g_grads, _ = vjp((jnp.zeros(()), jnp.ones(())))
  d_updates, d_opt = d_tx.update(d_grads, d_opt, d_params)
  g_updates, g_opt = g_tx.update(g_grads, state.g_opt, state.g_params)
  g_params = optax.apply_updates(state.g_params, g_updates)
  decay = float(gan.ema_decay)
  ema_params = jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, state.ema_params, g_params)
  metrics = {
      **{f"loss/{name}": value for name, value in aux["terms"].items()},
      "loss/d_total": d_loss,
      "loss/g_total": g_loss,
      "d_real_logit": aux["d_real_logit"],
      "d_fake_logit": aux["d_fake_logit"],
      "grad_norm/g": optax.tree.norm(g_grads),
      "grad_norm/d": optax.tree.norm(d_grads),
      "visible_fraction": jnp.mean(valid.astype(jnp.float32)),
  }
  new_state = state.replace(step=state.step + 1, g_params=g_params, g_stats=aux["g_stats"],
                            d_params=optax.apply_updates(d_params, d_updates), d_stats=aux["d_stats"],
                            ema_params=ema_params, g_opt=g_opt, d_opt=d_opt)
  return new_state, metrics


def make_optimizers(gan_config) -> tuple[optax.GradientTransformation, optax.GradientTransformation]:
  """(G, D) Adam optimizers: XMC-GAN's lr 1e-4 / 4e-4 with β = (0.5, 0.999) by default."""
  o = gan_config.optim
  adam = functools.partial(optax.adam, b1=float(o.b1), b2=float(o.b2))
  return adam(float(o.g_learning_rate)), adam(float(o.d_learning_rate))
