"""The dual-encoder task: CLIP/SigLIP training with the curriculum, retrieval evaluation, the dashboard.

`DualEncoderModel` is the model, optimizer, sharded state and jitted step for a
config on a mesh, built from shapes alone (tests, teachers and stage 1 of XMC-GAN
use it without data); `DualEncoderTask` adds the data and what the loop shows.
"""

import functools

import jax
import jax.numpy as jnp

from cmccl_jax import checkpoints, parallel
from cmccl_jax import config_validation as cv
from cmccl_jax.curriculum.curriculum import Curriculum
from cmccl_jax.data import datasets, difficulty, pipeline
from cmccl_jax.data.tokenizer import build_tokenizer
from cmccl_jax.tasks import base
from cmccl_jax.tasks.dual_encoder import dashboard, step as dual_encoder_step
from cmccl_jax.tasks.dual_encoder.evaluator import RetrievalEvaluator
from cmccl_jax.tasks.dual_encoder.model import dual_encoder_from_config, pretrained_params
from cmccl_jax.tasks.dual_encoder.state import create_train_state, learning_rate_schedule, make_optimizer


class DualEncoderModel:
  """Model, optimizer, sharded state and the jitted step of a dual-encoder config on `mesh`."""

  def __init__(self, config, mesh, image_shape: tuple[int, ...], vocab_size: int,
               curriculum: Curriculum | None = None):
    self.config = config
    self.mesh = mesh
    self.curriculum = curriculum or Curriculum.from_config(config.curriculum, int(config.num_steps))
    self.vocab_size = vocab_size
    self.model = dual_encoder_from_config(config, vocab_size)
    self.lr_schedule = learning_rate_schedule(config.optim, int(config.num_steps))
    self.tx = make_optimizer(config.optim, int(config.num_steps), config.staging)
    sample = {"image": jnp.zeros((1,) + tuple(image_shape), jnp.uint8),
              "tokens": jnp.zeros((1, int(config.tokenizer.max_len)), jnp.int32)}
    self._init = functools.partial(create_train_state, self.model, self.tx, sample_batch=sample)
    abstract = jax.eval_shape(self._init, jax.random.key(0))
    self.state_shardings = parallel.tree_shardings(mesh, abstract, config.param_sharding)
    self.abstract_state = checkpoints.abstract_with_shardings(abstract, self.state_shardings)

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
        dual_encoder_step.make_train_step(self.model, self.tx, self.config, self.lr_schedule, self.curriculum),
        in_shardings=(self.state_shardings, parallel.data_sharding(self.mesh)),
        out_shardings=(self.state_shardings, parallel.replicated(self.mesh)),
        donate_argnums=0)


class DualEncoderTask(base.Task):
  """Dual-encoder training on a dataset's shards, paced by the curriculum."""

  EVALUATORS = {"retrieval": "image→text and text→image retrieval metrics on a split"}
  SAFE_ON_RESUME = base.Task.SAFE_ON_RESUME + tuple(
      f"optim.{f}" for f in ("learning_rate", "warmup_steps", "end_lr_fraction", "weight_decay", "grad_clip_norm",
                             "b1", "b2"))

  def __init__(self, config, workdir=None):
    del workdir  # nothing of the dual encoder's set-up lives beside its checkpoints
    self.config = config
    # ---------------------------------------------------------------- mesh
    self.mesh = parallel.make_mesh(config.mesh)
    # ---------------------------------------------------------------- input
    self.curriculum = Curriculum.from_config(config.curriculum, int(config.num_steps))
    self.builder = datasets.get_builder(config.data)
    self.difficulty = difficulty.load_run_difficulty(config, self.builder, self.curriculum)
    self.tokenizer = build_tokenizer(config.tokenizer)
    # ---------------------------------------------------------------- model + sharding
    self.image_shape = pipeline.image_shape(self.builder, config)
    cv.patch_size_divides(config.model.image.patch_size, self.image_shape[0])  # a dataset's stored size
    self.model = DualEncoderModel(config, self.mesh, self.image_shape, self.tokenizer.vocab_size, self.curriculum)
    self.abstract_state = self.model.abstract_state
    self._histograms = dashboard.DifficultyHistograms(self.curriculum)

  def make_evaluator(self, kind: str, split: str) -> RetrievalEvaluator:
    del kind  # "retrieval", the only one
    return RetrievalEvaluator(self.builder, split, self.tokenizer, self.mesh, self.model.model,
                              self.model.state_shardings.params, int(self.config.eval_batch_size),
                              self.image_shape[0], self.difficulty)

  def scalars(self, metrics: dict) -> dict[str, float]:
    return dashboard.scalars(metrics, self.curriculum.num_blocks)

  def divergence_hint(self) -> str:
    lr = float(self.config.optim.learning_rate)
    return (f"lower config.optim.learning_rate={lr:g} (e.g. --config.optim.learning_rate={lr / 3:.1e}) or "
            f"config.optim.grad_clip_norm={float(self.config.optim.grad_clip_norm):g}")

  def log_line(self, scalars: dict[str, float]) -> str:
    return (f"loss {scalars['loss']:.4f} acc {scalars['accuracy']:.2f} "
            f"visible {scalars['visible_fraction']:.0%}")

  def observe_batch(self, step: int, batch) -> None:
    self._histograms.add(step, batch)

  def write_log_summaries(self, writer, step: int) -> None:
    self._histograms.write(writer, step)

  def write_eval_summaries(self, writer, step: int, metrics: dict, batch) -> None:
    row_offset = jax.process_index() * len(batch["image"])  # this process's rows in the global batch
    dashboard.write_hardest_now(writer, step, metrics, batch, self.tokenizer, row_offset)
