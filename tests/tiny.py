"""The tiny config every end-to-end test uses: seconds per run on 2 CPU cores."""

import math

import jax
import numpy as np
import tensorflow as tf

from cmccl_jax import checkpoints, parallel
from cmccl_jax.curriculum.curriculum import Curriculum
from cmccl_jax.data import datasets, difficulty
from cmccl_jax.data.tokenizer import build_tokenizer
from cmccl_jax.tasks.dual_encoder.task import DualEncoderModel
from cmccl_jax.workdir import Workdir
from configs import default, xmcgan_synthetic


def _tiny_shared(c, data_dir: str):
  """The tiny sizes of the blocks every task shares."""
  c.data.data_dir = data_dir
  c.data.shuffle_buffer = 64
  c.data.synthetic.update(num_train=96, num_validation=16, num_test=24)
  c.batch_size = 16
  c.num_steps = 12
  c.curriculum.pacing = "phases"
  c.curriculum.phase_steps = (3, 3, 3)
  c.log_every_steps = 4
  c.checkpoint_every_steps = 4
  c.eval_every_steps = 0
  c.eval_batch_size = 16
  return c


def tiny_config(data_dir: str):
  c = _tiny_shared(default.get_config(), data_dir)
  c.tokenizer.max_len = 12
  c.model.embed_dim = 16
  c.model.image.update(patch_size=8, width=16, depth=1, num_heads=2, mlp_dim=32)
  c.model.text.update(width=16, depth=1, num_heads=2, mlp_dim=32)
  c.optim.warmup_steps = 2
  return c


def save_random_experiment(workdir: str, steps_and_scales, text_tower: dict | None = None) -> None:
  """An experiment directory as train.sh writes it: config.json and orbax checkpoints (state + data).

  The states are random draws shaped like the tiny config's (initialising would
  compile for seconds), each with its own logit scale; `text_tower` replaces
  config.model.text (e.g. a BERT tower).
  """
  config = tiny_config(str(workdir))
  if text_tower is not None:
    config.model.text = text_tower
  Workdir(workdir).save_config(config)
  mesh = parallel.make_mesh({"data": 1}, jax.devices()[:1])
  size = config.data.synthetic.image_size
  setup = DualEncoderModel(config, mesh, (size, size, 3), build_tokenizer(config.tokenizer).vocab_size)
  manager = checkpoints.checkpoint_manager(workdir, every_steps=1, keep=10)
  iterator = iter(tf.data.Dataset.range(3))
  rng = np.random.default_rng(0)
  for step, scale in steps_and_scales:
    def draw(path, leaf):
      if jax.tree_util.keystr(path).endswith("['log_scale']"):
        return np.asarray(math.log(scale), leaf.dtype)
      if np.issubdtype(leaf.dtype, np.floating):
        return (0.2 * rng.normal(size=leaf.shape)).astype(leaf.dtype)
      return np.zeros(leaf.shape, leaf.dtype)
    state = jax.tree_util.tree_map_with_path(draw, setup.abstract_state).replace(step=np.int32(step))
    checkpoints.save(manager, step, state, iterator, force=True)
  manager.wait_until_finished()


def tiny_gan_config(data_dir: str, stage1: str):
  """The tiny XMC-GAN experiment on a stage-1 experiment `stage1`: narrow G and D, 4 steps."""
  c = _tiny_shared(xmcgan_synthetic.get_config(), data_dir)
  c.gan = xmcgan_synthetic.gan_block(stage1)
  c.gan.z_dim = 8
  c.gan.generator.update(channels=8, cond_dim=8, attention_dim=8)
  c.gan.discriminator.update(channels=8, contrastive_dim=8)
  c.gan.eval.update(num_images=16, candidates=8)
  c.num_steps = 4
  c.checkpoint_every_steps = 2
  c.log_every_steps = 2
  return c


def tiny_difficulty(config):
  """(the prepared image builder, its RunDifficulty) of a tiny config whose data the fixtures built."""
  builder = datasets.get_builder(config.data)
  curriculum = Curriculum.from_config(config.curriculum, int(config.num_steps))
  return builder, difficulty.load_run_difficulty(config, builder, curriculum)
