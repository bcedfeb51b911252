"""Generator, discriminator, frozen stage-1 encoder, sharded GAN state and the jitted GAN functions.

Stage 2 builds on stage 1: `config.gan.stage1` names a dual-encoder experiment
(`bash train.sh NAME` → exp/NAME); its text tower conditions G and D, its image
tower is the frozen encoder E of the real–fake term, and its tokenizer is the
GAN's. Its weights are copied into the GAN state once, so a GAN checkpoint does
not depend on the stage-1 folder afterwards.
"""

import functools

import jax
import jax.numpy as jnp

from cmccl_jax import parallel
from cmccl_jax.models.xmcgan import Discriminator, Generator
from cmccl_jax.train import checkpointing, gan_step


class GanSetup:

  def __init__(self, config, mesh, image_shape: tuple[int, ...], stage1):
    self.config = config
    self.mesh = mesh
    self.stage1 = stage1
    resolution = int(image_shape[0])
    self.generator = Generator(resolution=resolution, **config.gan.generator)
    self.discriminator = Discriminator(resolution=resolution, **config.gan.discriminator)
    self.encoder = stage1.model
    self.encoder_size = int(stage1.image_size)
    self.g_tx, self.d_tx = gan_step.make_optimizers(config.gan)
    self.max_len = int(stage1.config.tokenizer.max_len)
    self.image_shape = tuple(image_shape)
    abstract = jax.eval_shape(self._init, jax.random.key(0), stage1.params)
    self.state_shardings = parallel.tree_shardings(mesh, abstract, config.param_sharding)
    self.abstract_state = checkpointing.abstract_with_shardings(abstract, self.state_shardings)

  def _init(self, rng, encoder_vars) -> gan_step.GanState:
    g_rng, d_rng, state_rng = jax.random.split(rng, 3)
    tokens = jnp.ones((1, self.max_len), jnp.int32)
    sentence, words, word_mask = gan_step.text_features(encoder_vars, tokens, encoder=self.encoder)
    z = jnp.zeros((1, int(self.config.gan.z_dim)))
    g_vars = self.generator.init(g_rng, z, sentence, words, word_mask, jnp.ones((1,), bool), train=False)
    d_vars = self.discriminator.init(d_rng, jnp.zeros((1,) + self.image_shape), sentence, words, train=False)
    return gan_step.GanState(
        step=jnp.zeros((), jnp.int32), g_params=g_vars["params"], g_stats=g_vars["batch_stats"],
        d_params=d_vars["params"], d_stats=d_vars["batch_stats"], ema_params=g_vars["params"],
        g_opt=self.g_tx.init(g_vars["params"]), d_opt=self.d_tx.init(d_vars["params"]), encoder=encoder_vars,
        rng=jax.random.key_data(state_rng))

  def init_state(self) -> gan_step.GanState:
    """The fresh state, already sharded, with the stage-1 encoder's trained weights in it."""
    init = jax.jit(self._init, out_shardings=self.state_shardings)
    encoder = jax.device_put(self.stage1.params, self.state_shardings.encoder)
    return init(jax.random.key(int(self.config.seed)), encoder)

  def train_step(self):
    """The jitted GAN step: state donated, batch sharded over `data`, metrics replicated."""
    step = functools.partial(gan_step.gan_step, generator=self.generator, discriminator=self.discriminator,
                             encoder=self.encoder, encoder_size=self.encoder_size, g_tx=self.g_tx,
                             d_tx=self.d_tx, config=self.config)
    return jax.jit(step, in_shardings=(self.state_shardings, parallel.data_sharding(self.mesh)),
                   out_shardings=(self.state_shardings, parallel.replicated(self.mesh)), donate_argnums=0)

  @functools.cached_property
  def sampler(self):
    """jit (g_vars, encoder_vars, tokens [N, L], z [N, z_dim]) → images in [-1, 1]; rows sharded over `data`."""
    fn = functools.partial(gan_step.generate, generator=self.generator, encoder=self.encoder)
    data = parallel.data_sharding(self.mesh)
    return jax.jit(fn, in_shardings=(parallel.replicated(self.mesh), parallel.replicated(self.mesh), data, data),
                   out_shardings=parallel.replicated(self.mesh))

  @staticmethod
  def generator_vars(state: gan_step.GanState, ema: bool) -> dict:
    """G's variables for sampling: the EMA weights (or the raw ones) with G's running statistics."""
    return {"params": state.ema_params if ema else state.g_params, "batch_stats": state.g_stats}
