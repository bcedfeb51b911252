"""The jitted dual-encoder train step and the embedding functions used by evaluation.

Pure functions over explicit pytrees; `make_train_step` binds the static pieces
(model, optimizer, the config blocks the step reads) so the jitted function takes only arrays.
"""

import functools

import jax
import jax.numpy as jnp
import optax

from cmccl_jax import losses
from cmccl_jax.curriculum import difficulty_head
from cmccl_jax.curriculum.curriculum import Curriculum
from cmccl_jax.curriculum.hardness import Hardness
from cmccl_jax.curriculum.i2mcl import I2MCL
from cmccl_jax.memory_queue import MemoryQueue
from cmccl_jax.tasks.dual_encoder import staging
from cmccl_jax.tasks.dual_encoder.model import difficulty_head_config
from cmccl_jax.tasks.dual_encoder.state import TrainState


def curriculum_dashboard(per_example, block, difficulty, valid, num_blocks: int) -> dict:
  """Per-block mean loss of the visible examples (block_loss [K]) and the batch's per-example arrays."""
  one_hot = jax.nn.one_hot(jnp.clip(block, 0, num_blocks - 1), num_blocks) * valid[:, None]
  count = jnp.sum(one_hot, axis=0)
  return {
      "block_loss": jnp.sum(one_hot * per_example[:, None], axis=0) / jnp.maximum(count, 1),
      "per_example_loss": per_example,
      "visible": valid,
      "difficulty": difficulty,
  }


def dynamic_objective(params, batch, z_img, z_txt, out, valid, weights, dynamic_state, *, model, contrast,
                      dynamic: I2MCL):
  """I2MCL's objective of a batch (curriculum/i2mcl.py): (objective, contrastive parts, new state, metrics).

  The representations are the l2-normalised embeddings the contrastive loss compares;
  a modality's distillation regresses them (through `distill_project`) onto its teacher's features.
  """
  z = {"image": losses.l2_normalize(z_img), "text": losses.l2_normalize(z_txt)}

  def task_fn(zz):
    _, parts = contrast(zz["image"], zz["text"], normalize=False)
    return parts["per_example"], parts

  def distill_fn(modality, z_m):
    projected = model.apply(params, z_m, modality, method=model.distill_project)
    return jnp.sum(jnp.square(projected - batch[f"teacher/{modality}"]), axis=-1)

  objective, new_state, aux = dynamic.objective(dynamic_state, z, task_fn, distill_fn, valid, weights)
  parts = aux.pop("task_parts")
  metrics = {}
  visible = jnp.maximum(jnp.sum(valid), 1)
  for name in dynamic.loss_names:
    metrics[f"i2mcl/loss/{name}"] = aux[f"loss/{name}"]  # the weighted objective (SuperLoss's may be < 0)
    metrics[f"i2mcl/raw_loss/{name}"] = jnp.sum(aux[f"per_example/{name}"]) / visible
    metrics[f"i2mcl/tau/{name}"] = aux[f"tau/{name}"]
    metrics[f"i2mcl/weight_mean/{name}"] = jnp.sum(aux[f"weights/{name}"]) / visible
    metrics[f"i2mcl/weights/{name}"] = aux[f"weights/{name}"]  # per example: histograms, extremes
  for i, m in enumerate(dynamic.modalities):
    if dynamic.inter:
      metrics[f"i2mcl/alpha/{m}"] = aux["alpha"][i]
      metrics[f"i2mcl/learns_from_task/{m}"] = (aux["task_learner"] == i).astype(jnp.float32)
      metrics[f"i2mcl/task_share/{m}"] = aux["task_share"][i]
  return objective, parts, new_state, metrics


def dual_encoder_loss(params, batch, step, rng, dynamic_state=None, queue_state=None, *, model, loss_config,
                      curriculum: Curriculum, head_weight=0.0, dynamic: I2MCL | None = None,
                      queue: MemoryQueue | None = None, mesh=None):
  """Masked, curriculum-weighted contrastive loss of a batch at `step`; (total, (metrics, dynamic state)).

  The curriculum's pacing at the step maps each example's block (for the online
  "learned" scorer: the head's ranking of the batch) to a weight; weight 0 masks
  the example out of the loss as anchor and as negative. With the dynamic
  curriculum on (`dynamic`), I2MCL's distillation, self-paced weights and routing
  make the objective; `loss` stays the plain contrastive loss, comparable across runs.
  `mesh`: the step's mesh, which SigLIP's ring (loss.ring) passes the text shards around.
  """
  k = curriculum.num_blocks
  z_img, z_txt, out = model.apply(params, batch["image"], batch["tokens"], train=True, rngs={"dropout": rng})
  block = curriculum.batch_blocks(batch["block"], out.get("difficulty"))
  valid, weights = curriculum.example_weights(step, block)
  # The loss kind, hard negatives and margins at this step (curriculum/hardness.py).
  hardness = Hardness.from_config(loss_config, curriculum.num_steps)
  margins = hardness.margins(step, block, k)
  contrast = functools.partial(
      losses.contrastive_loss, scale=out["scale"], bias=out["bias"], kind=hardness.kind, valid=valid,
      weights=weights, hard_negatives=hardness.negatives(step), margin=margins, hinge=hardness.hinge,
      chunk_size=int(loss_config.get("chunk_size", 0)), ring=mesh if loss_config.get("ring", False) else None,
      queue=queue.negatives(queue_state, step) if queue is not None and queue.on else None, ids=batch.get("id"))
  dynamic_metrics = {}
  if dynamic is not None and dynamic.on:
    total, parts, dynamic_state, dynamic_metrics = dynamic_objective(
        params, batch, z_img, z_txt, out, valid, weights, dynamic_state, model=model, contrast=contrast,
        dynamic=dynamic)
    loss = parts["loss"]
  else:
    loss, parts = contrast(z_img, z_txt)
    total = loss
  visible = jnp.maximum(jnp.sum(valid), 1)
  dynamic_metrics.update({
      "negatives/beta": hardness.beta_at(step),
      "negatives/margin": jnp.sum(jnp.where(valid, jnp.broadcast_to(margins, valid.shape), 0.0)) / visible,
      f"negatives/top{losses.TOP_K}_mass": parts["top_negative_mass"]})
  per_example = parts["per_example"]
  metrics = curriculum_dashboard(per_example, block, batch["difficulty"], valid, k)
  metrics.update(dynamic_metrics)
  if "difficulty" in out:  # the difficulty evaluator learns alongside; its inputs carry no gradient back
    head = difficulty_head.head_loss(out["difficulty"], per_example, valid)
    total = total + head_weight * head
    # Its rank correlations with the losses and the offline difficulty are O(B²): the host computes
    # them from these per-example arrays at log steps only (dashboard.scalars).
    metrics.update({"difficulty_head/mse": head, "predicted_difficulty": out["difficulty"]})
  aux = {
      **metrics,
      "contrastive_loss": loss,
      "accuracy": parts["accuracy"],
      "positive_logit": parts["positive_logit"],
      "negative_logit": parts["negative_logit"],
      "scale": out["scale"],
      "bias": out["bias"],
      "visible_fraction": jnp.mean(valid.astype(jnp.float32)),
      "visible_blocks": jnp.sum(curriculum.block_weights(step) > 0),
      "block_counts": jnp.sum(jax.nn.one_hot(block, k, dtype=jnp.int32), axis=0),
  }
  if queue is not None and queue.on:  # what the step writes into the ring after the update
    aux["queue_push"] = (losses.l2_normalize(z_img), losses.l2_normalize(z_txt), valid)
  return total, (aux, dynamic_state)


def dual_encoder_step(state: TrainState, batch, teacher_params=None, *, model, tx, loss_config,
                      curriculum: Curriculum, staging_config, lr_schedule, head_weight=0.0,
                      dynamic: I2MCL | None = None, teacher_features=None, queue: MemoryQueue | None = None,
                      mesh=None):
  """One AdamW step on `dual_encoder_loss`; dropout noise is keyed by (seed, step).

  With online teachers, `teacher_features(teacher_params, batch)` adds the frozen teachers'
  features of this very (augmented) batch, as the precomputed ones would be joined.
  """
  if teacher_features is not None:
    batch = {**batch, **teacher_features(teacher_params, batch)}
  rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
  loss_fn = functools.partial(dual_encoder_loss, batch=batch, step=state.step, rng=rng,
                              dynamic_state=state.curriculum, queue_state=state.queue, model=model,
                              loss_config=loss_config, queue=queue,
                              curriculum=curriculum, head_weight=head_weight, dynamic=dynamic, mesh=mesh)
  (total, (aux, dynamic_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics = {"loss": aux.pop("contrastive_loss"), "total_loss": total, "grad_norm": optax.tree.norm(grads),
             "learning_rate": lr_schedule(state.step), **aux}
  for tower in staging.TOWERS:
    metrics[f"trainable/{tower}"] = staging.tower_trainable(state.step, staging_config, tower)
  ring = state.queue
  if "queue_push" in metrics:
    z_img, z_txt, valid = metrics.pop("queue_push")
    ring = queue.push(ring, z_img, z_txt, batch["id"], valid)
    metrics["queue/usable_fraction"] = jnp.mean(queue.negatives(ring, state.step + 1).usable.astype(jnp.float32))
  return state.replace(step=state.step + 1, params=params, opt_state=opt_state, curriculum=dynamic_state,
                       queue=ring), metrics


def make_train_step(model, tx, config, lr_schedule, curriculum: Curriculum, dynamic: I2MCL | None = None,
                    teacher_features=None, queue: MemoryQueue | None = None, mesh=None):
  return functools.partial(dual_encoder_step, model=model, tx=tx, loss_config=config.loss,
                           curriculum=curriculum, staging_config=config.staging,
                           lr_schedule=lr_schedule, head_weight=difficulty_head_config(config)[1], dynamic=dynamic,
                           teacher_features=teacher_features, queue=queue, mesh=mesh)


def embed_images(params, images, *, model):
  return losses.l2_normalize(model.apply(params, images, method=model.encode_image))


def embed_texts(params, tokens, *, model):
  return losses.l2_normalize(model.apply(params, tokens, method=model.encode_text))
