"""Model, optimizer, sharded state and the jitted step for a config on a mesh.

Kept apart from the data so tests (and later other entry points) can build the
exact jitted step the train loop runs from shapes alone.
"""

import functools

import jax
import jax.numpy as jnp

from cmccl_jax import parallel
from cmccl_jax.models.dual_encoder import dual_encoder_from_config, pretrained_params
from cmccl_jax.train import checkpointing, dual_encoder_step
from cmccl_jax.train.state import create_train_state, learning_rate_schedule, make_optimizer


class ModelSetup:

  def __init__(self, config, mesh, image_shape: tuple[int, ...], vocab_size: int):
    self.config = config
    self.mesh = mesh
    self.vocab_size = vocab_size
    self.model = dual_encoder_from_config(config, vocab_size)
    self.lr_schedule = learning_rate_schedule(config.optim, int(config.num_steps))
    self.tx = make_optimizer(config.optim, int(config.num_steps), config.staging)
    sample = {"image": jnp.zeros((1,) + tuple(image_shape), jnp.uint8),
              "tokens": jnp.zeros((1, int(config.tokenizer.max_len)), jnp.int32)}
    self._init = functools.partial(create_train_state, self.model, self.tx, sample_batch=sample)
    abstract = jax.eval_shape(self._init, jax.random.key(0))
    self.state_shardings = parallel.tree_shardings(mesh, abstract, config.param_sharding)
    self.abstract_state = checkpointing.abstract_with_shardings(abstract, self.state_shardings)

  def init_state(self):
    """Creates the state already sharded, with pretrained weights (a text checkpoint) loaded over the init.

    Pretrained weights are only read here, for a fresh run: a resumed run restores them from its checkpoint.
    """
    pretrained = pretrained_params(self.config, self.vocab_size)
    init = jax.jit(lambda rng, p: self._init(rng, pretrained=p), out_shardings=self.state_shardings)
    return init(jax.random.key(int(self.config.seed)), pretrained)

  def train_step(self):
    """The jitted step: state donated, batch sharded over `data`, metrics replicated."""
    return jax.jit(
        dual_encoder_step.make_train_step(self.model, self.tx, self.config, self.lr_schedule),
        in_shardings=(self.state_shardings, parallel.data_sharding(self.mesh)),
        out_shardings=(self.state_shardings, parallel.replicated(self.mesh)),
        donate_argnums=0)
