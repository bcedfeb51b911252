"""The XMC-GAN task: generator, discriminator, frozen stage-1 encoder, their sharded state and step.

Stage 2 builds on stage 1: `config.gan.stage1` names a dual-encoder experiment
(`bash train.sh NAME` → exp/NAME); its text tower conditions G and D, its image
tower is the frozen encoder E of the real–fake term, and its tokenizer is the
GAN's. Its weights are copied into the GAN state once and its config into the
GAN's workdir (stage1_config.json), so a GAN experiment does not depend on the
stage-1 folder afterwards.
"""

import functools
import math
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import tensorflow as tf
from PIL import Image

from cmccl_jax import checkpoints, parallel
from cmccl_jax.curriculum.curriculum import Curriculum
from cmccl_jax.data import datasets, difficulty, pipeline
from cmccl_jax.errors import UserError
from cmccl_jax.models import inception as inception_lib
from cmccl_jax.models.xmcgan import Discriminator, Generator
from cmccl_jax.summaries import image_grid
from cmccl_jax.tasks import base
from cmccl_jax.tasks.dual_encoder import trained
from cmccl_jax.tasks.xmcgan import step as gan_step
from cmccl_jax.tasks.xmcgan.evaluator import GenerationEvaluator, generator_vars, to_uint8
from cmccl_jax.workdir import STAGE1_CONFIG, Workdir


class XmcganModel:
  """G, D, the frozen encoder, the sharded GAN state and the jitted step and sampler, from shapes alone."""

  def __init__(self, gan_config, curriculum: Curriculum, mesh, param_sharding, image_shape: tuple[int, ...],
               stage1, seed: int = 0):
    self.gan = gan_config
    self.curriculum = curriculum
    self.mesh = mesh
    self.stage1 = stage1
    self.seed = int(seed)
    resolution = int(image_shape[0])
    self.generator = Generator(resolution=resolution, **gan_config.generator)
    self.discriminator = Discriminator(resolution=resolution, **gan_config.discriminator)
    self.encoder = stage1.model
    self.encoder_size = int(stage1.image_size)
    self.g_tx, self.d_tx = gan_step.make_optimizers(gan_config)
    self.max_len = int(stage1.config.tokenizer.max_len)
    self.image_shape = tuple(image_shape)
    abstract = jax.eval_shape(self._init, jax.random.key(0), stage1.params)
    self.state_shardings = parallel.tree_shardings(mesh, abstract, param_sharding)
    self.abstract_state = checkpoints.abstract_with_shardings(abstract, self.state_shardings)

  def _init(self, rng, encoder_vars) -> gan_step.GanState:
    g_rng, d_rng, state_rng = jax.random.split(rng, 3)
    tokens = jnp.ones((1, self.max_len), jnp.int32)
    sentence, words, word_mask = gan_step.text_features(encoder_vars, tokens, encoder=self.encoder)
    z = jnp.zeros((1, int(self.gan.z_dim)))
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
    return init(jax.random.key(self.seed), encoder)

  def train_step(self):
    """The jitted GAN step: state donated, batch sharded over `data`, metrics replicated."""
    step = functools.partial(gan_step.gan_step, generator=self.generator, discriminator=self.discriminator,
                             encoder=self.encoder, encoder_size=self.encoder_size, g_tx=self.g_tx,
                             d_tx=self.d_tx, gan_config=self.gan, curriculum=self.curriculum)
    return jax.jit(step, in_shardings=(self.state_shardings, parallel.data_sharding(self.mesh)),
                   out_shardings=(self.state_shardings, parallel.replicated(self.mesh)), donate_argnums=0)

  @functools.cached_property
  def sampler(self):
    """jit (g_vars, encoder_vars, tokens [N, L], z [N, z_dim]) → images in [-1, 1]; rows sharded over `data`."""
    fn = functools.partial(gan_step.generate, generator=self.generator, encoder=self.encoder)
    data = parallel.data_sharding(self.mesh)
    return jax.jit(fn, in_shardings=(parallel.replicated(self.mesh), parallel.replicated(self.mesh), data, data),
                   out_shardings=parallel.replicated(self.mesh))


def load_stage1(config, workdir: Workdir) -> trained.TrainedDualEncoder:
  """The stage-1 dual encoder: read from config.gan.stage1 (and its config copied into `workdir`) while the
  GAN has no checkpoint yet; afterwards only its architecture, since the weights are in the GAN's checkpoints."""
  if workdir.has_config(STAGE1_CONFIG) and workdir.checkpoint_steps():
    return trained.dual_encoder_architecture(workdir.load_config(STAGE1_CONFIG), workdir.file(STAGE1_CONFIG))
  stage1 = trained.load_dual_encoder(config.gan.stage1)
  workdir.save_config(stage1.config, STAGE1_CONFIG)
  return stage1


def _inception(gan_config, mesh):
  """The jitted Flax FID Inception with the user's weights, or None when gan.eval.inception is ""."""
  path = gan_config.eval.get("inception", "")
  if not path:
    return None
  model = inception_lib.InceptionV3()
  variables = inception_lib.load_inception(os.path.expanduser(path))
  return jax.jit(lambda images: model.apply(variables, images), out_shardings=parallel.replicated(mesh))


class XmcganTask(base.Task):
  """XMC-GAN training on a dataset's shards with a frozen stage-1 dual encoder, paced by the curriculum."""

  EVALUATORS = {"generation": "Fréchet distances and caption alignment of G and EMA-G samples"}
  SAFE_ON_RESUME = base.Task.SAFE_ON_RESUME + ("gan.optim.*", "gan.eval.*")

  def __init__(self, config, workdir: Workdir, *, with_data: bool = True):
    self.config = config
    # ---------------------------------------------------------------- mesh
    self.mesh = parallel.make_mesh(config.mesh)
    # ---------------------------------------------------------------- stage 1: text encoder, E, tokenizer
    self.stage1 = load_stage1(config, workdir)
    self.tokenizer = self.stage1.tokenizer
    # ---------------------------------------------------------------- input
    self.curriculum = Curriculum.from_config(config.curriculum, int(config.num_steps))
    self.builder = self.difficulty = None
    if with_data:
      self.builder = datasets.get_builder(config.data)
      self.difficulty = difficulty.load_run_difficulty(config, self.builder, self.curriculum)
      image_shape = pipeline.image_shape(self.builder, config)
    else:
      size = int(config.data.get("image_size") or config.data.synthetic.image_size)
      image_shape = (size, size, 3)
    # ---------------------------------------------------------------- model + sharding
    self.model = XmcganModel(config.gan, self.curriculum, self.mesh, config.param_sharding, image_shape,
                             self.stage1, seed=int(config.seed))
    self.abstract_state = self.model.abstract_state

  def make_evaluator(self, kind: str, split: str) -> GenerationEvaluator:
    del kind  # "generation", the only one
    e = self.config.gan.eval
    if not e.get("inception", "") and jax.process_index() == 0:
      print("No FID Inception weights given (bash test.sh EXP --inception=PATH to pt_inception-2015-12-05-*.pth, "
            "or config.gan.eval.inception): FID and IS are not computed. Reporting the offline metrics only: "
            "fd_stage1, a Frechet distance in the stage-1 image tower's feature space (not FID), and the "
            "alignment of samples with their captions under the stage-1 dual encoder.", flush=True)
    return GenerationEvaluator(self.builder, split, self.tokenizer, self.model, int(self.config.eval_batch_size),
                               int(e.num_images), int(self.config.gan.z_dim), int(e.candidates),
                               inception=_inception(self.config.gan, self.mesh),
                               stats_dir=e.get("stats_dir") or None, seed=int(self.config.seed))

  def divergence_hint(self) -> str:
    o = self.config.gan.optim
    return (f"lower config.gan.optim.g_learning_rate={float(o.g_learning_rate):g} and "
            f"config.gan.optim.d_learning_rate={float(o.d_learning_rate):g} (e.g. by 3x)")

  def log_line(self, scalars: dict[str, float]) -> str:
    return (f"D {scalars['loss/d_total']:.3f} G {scalars['loss/g_total']:.3f} (hinge D {scalars['loss/hinge_d']:.3f} "
            f"G {scalars['loss/hinge_g']:.3f}) visible {scalars['visible_fraction']:.0%}")

  # ------------------------------------------------------------------ sample.sh

  def sample(self, workdir: Workdir, captions: list[str], *, num_per_caption: int = 8, step: int = -1,
             ema: bool = True, out: str = "") -> str:
    """A PNG grid, one row per caption and `num_per_caption` samples across; returns its path."""
    if not captions:
      raise UserError('give at least one caption: bash sample.sh EXP "a caption" ["another" ...]')
    steps = workdir.checkpoint_steps_or_raise()
    step = steps[-1] if step < 0 else step
    if step not in steps:
      raise UserError(f"no checkpoint at step {step} in {workdir.path}; it has steps {steps}.")
    try:
      state = workdir.restore_state(step, self.abstract_state)
    except checkpoints.BadCheckpoint as e:
      raise UserError(f"{e}; sample another step with --step (it has {steps}).") from e
    tokens = np.repeat(self.tokenizer(tf.constant(captions)).numpy(), num_per_caption, axis=0)
    z = np.random.default_rng(int(self.config.seed)).standard_normal(
        (len(tokens), int(self.config.gan.z_dim))).astype(np.float32)
    unit = math.lcm(self.mesh.shape[parallel.DATA_AXIS], jax.process_count())
    batch = -(-len(tokens) // unit) * unit  # one batch: every row on its device, on any number of processes
    images = parallel.batched_apply(self.model.sampler, self.mesh, batch, [tokens, z],
                                    args=(generator_vars(state, ema), state.encoder))
    grid = image_grid(to_uint8(images), cols=num_per_caption)
    zoom = max(1, 128 // int(images.shape[1]))  # small images are enlarged (nearest) to be seen
    out = out or os.path.join(workdir.file("samples"), f"step{step}_{'ema' if ema else 'g'}_{int(time.time())}.png")
    if jax.process_index() == 0:
      os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
      Image.fromarray(grid).resize((grid.shape[1] * zoom, grid.shape[0] * zoom), Image.NEAREST).save(out)
      with open(os.path.splitext(out)[0] + ".txt", "w") as f:
        f.write("".join(f"row {i}: {c}\n" for i, c in enumerate(captions)))
    return out
