"""The train state pytree and the optimizer built from the config."""

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax

from cmccl_jax.tasks.dual_encoder import staging
from cmccl_jax.errors import UserError


@flax.struct.dataclass
class TrainState:
  """Everything a step reads and writes; checkpointed whole, so a resumed run is exact."""
  step: jax.Array            # int32 scalar, steps done
  params: Any
  opt_state: Any
  rng: jax.Array             # raw uint32 key data (portable across checkpoints)
  # The dynamic curriculum's running state (curriculum/i2mcl.py: thresholds, routing counts); {} when off.
  curriculum: Any = flax.struct.field(default_factory=dict)
  # The memory queue's ring of past embeddings (memory_queue.py); {} when off.
  queue: Any = flax.struct.field(default_factory=dict)


def learning_rate_schedule(optim_config, num_steps: int) -> optax.Schedule:
  """Linear warmup from 0, then cosine decay to end_lr_fraction × peak at num_steps."""
  peak = float(optim_config.learning_rate)
  warmup = int(optim_config.warmup_steps)
  if warmup >= num_steps:
    raise UserError(f"config.optim.warmup_steps={warmup} must be smaller than config.num_steps={num_steps}.")
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=peak, warmup_steps=warmup, decay_steps=num_steps,
      end_value=peak * float(optim_config.end_lr_fraction))


def _decay_mask(params):
  """AdamW decays matrices only; biases, norms, scalars and position tables are left alone."""
  def decays(path, x):
    name = "/".join(str(getattr(k, "key", k)) for k in path)
    return x.ndim > 1 and "pos_embedding" not in name
  return jax.tree_util.tree_map_with_path(decays, params)


def make_optimizer(optim_config, num_steps: int, staging_config) -> optax.GradientTransformation:
  """AdamW with warmup + cosine and global grad-norm clipping, under the towers' staging."""
  return staging.wrap(optax.chain(
      optax.clip_by_global_norm(float(optim_config.grad_clip_norm)),
      optax.adamw(learning_rate_schedule(optim_config, num_steps), b1=float(optim_config.b1),
                  b2=float(optim_config.b2), weight_decay=float(optim_config.weight_decay), mask=_decay_mask),
  ), staging_config)


def create_train_state(model, tx, rng: jax.Array, sample_batch: dict[str, jax.Array],
                       pretrained: dict[str, Any] | None = None, curriculum_state: Any = None,
                       queue_state: Any = None) -> TrainState:
  """Initialises params and optimizer state; meant to run under jit with out_shardings.

  `pretrained` ({submodule name: params}) replaces those submodules' fresh params
  before the optimizer state is made, e.g. a text tower imported from Hugging Face.
  """
  init_rng, state_rng = jax.random.split(rng)
  params = model.init(init_rng, sample_batch["image"], sample_batch["tokens"], train=False)
  if pretrained:
    params = {**params, "params": {**params["params"], **_checked_overrides(params["params"], pretrained)}}
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                    rng=jax.random.key_data(state_rng), curriculum=curriculum_state or {}, queue=queue_state or {})


def _checked_overrides(params, pretrained: dict[str, Any]) -> dict[str, Any]:
  """`pretrained` cast to the fresh params' dtypes, after checking it has their exact structure and shapes."""
  out = {}
  for name, tree in pretrained.items():
    if name not in params:
      raise UserError(f"pretrained params for {name!r}, but the model has only {sorted(params)}.")
    fresh_shapes = jax.tree.map(jnp.shape, params[name])
    given_shapes = jax.tree.map(jnp.shape, tree)
    if jax.tree.structure(fresh_shapes) != jax.tree.structure(given_shapes) or fresh_shapes != given_shapes:
      raise UserError(f"pretrained params for {name!r} do not match the model's: "
                       f"{jax.tree.structure(given_shapes)} vs {jax.tree.structure(fresh_shapes)}.")
    out[name] = jax.tree.map(lambda p, x: jnp.asarray(x, p.dtype), params[name], tree)
  return out
