"""The dual-encoder task: CLIP/SigLIP training with the curriculum, retrieval evaluation, the dashboard.

`DualEncoderModel` is the model, optimizer, sharded state and jitted step for a
config on a mesh, built from shapes alone (tests, teachers and stage 1 of XMC-GAN
use it without data); `DualEncoderTask` adds the data and what the loop shows.
"""

import functools

import jax
import jax.numpy as jnp

from cmccl_jax import checkpoints, losses, memory_queue, parallel
from cmccl_jax import config_validation as cv
from cmccl_jax.curriculum.curriculum import Curriculum
from cmccl_jax.curriculum.hardness import Hardness
from cmccl_jax.curriculum.i2mcl import I2MCL
from cmccl_jax.data import augment, datasets, difficulty, pipeline, teacher_features
from cmccl_jax.data.teacher_features import MODALITIES
from cmccl_jax.errors import UserError
from cmccl_jax.memory_queue import MemoryQueue
from cmccl_jax.data.tokenizer import build_tokenizer
from cmccl_jax.tasks import base
from cmccl_jax.tasks.dual_encoder import dashboard, online_teachers, step as dual_encoder_step
from cmccl_jax.tasks.dual_encoder.evaluator import RetrievalEvaluator
from cmccl_jax.tasks.dual_encoder.model import dual_encoder_from_config, pretrained_params
from cmccl_jax.tasks.dual_encoder.state import create_train_state, learning_rate_schedule, make_optimizer


class DualEncoderModel:
  """Model, optimizer, sharded state and the jitted step of a dual-encoder config on `mesh`."""

  def __init__(self, config, mesh, image_shape: tuple[int, ...], vocab_size: int,
               curriculum: Curriculum | None = None, teacher_widths: dict[str, int] | None = None,
               online_teachers=None):
    """`teacher_widths` ({modality: feature width} of the run's teachers) is what training with I2MCL's
    distillation needs; without it the model is the towers and heads only (evaluation, reuse).
    `online_teachers` (online_teachers.OnlineTeachers) computes the teachers' features in the step."""
    self.online_teachers = online_teachers
    if online_teachers is not None:
      teacher_widths = online_teachers.widths
    self.config = config
    self.mesh = mesh
    self.curriculum = curriculum or Curriculum.from_config(config.curriculum, int(config.num_steps))
    self.vocab_size = vocab_size
    self.dynamic = dynamic_curriculum(config, teacher_widths)
    distill_widths = tuple((m, int(w)) for m, w in (teacher_widths or {}).items()
                           if int(w) != int(config.model.embed_dim))
    self.model = dual_encoder_from_config(config, vocab_size, distill_widths)
    self.lr_schedule = learning_rate_schedule(config.optim, int(config.num_steps))
    self.tx = make_optimizer(config.optim, int(config.num_steps), config.staging)
    sample = {"image": jnp.zeros((1,) + tuple(image_shape), jnp.uint8),
              "tokens": jnp.zeros((1, int(config.tokenizer.max_len)), jnp.int32)}
    self.queue = MemoryQueue.from_config(config.loss, int(config.batch_size))
    self._init = functools.partial(create_train_state, self.model, self.tx, sample_batch=sample,
                                   curriculum_state=self.dynamic.init_state() if self.dynamic else None,
                                   queue_state=self.queue.init(int(config.model.embed_dim)))
    abstract = jax.eval_shape(self._init, jax.random.key(0))
    self.state_shardings = parallel.tree_shardings(mesh, abstract,
                                                   tuple(config.param_sharding) + memory_queue.SHARDING_RULES)
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
    if self.dynamic is None:
      raise ValueError("training with config.curriculum.dynamic.distill needs the teachers' widths "
                       "(DualEncoderModel(teacher_widths=...)); DualEncoderTask passes them")
    online = self.online_teachers
    in_shardings = (self.state_shardings, parallel.data_sharding(self.mesh))
    if online:  # the teachers' weights: a third, replicated argument
      in_shardings += (parallel.replicated(self.mesh),)
    step = jax.jit(
        dual_encoder_step.make_train_step(self.model, self.tx, self.config, self.lr_schedule, self.curriculum,
                                          self.dynamic, online.features if online else None, self.queue,
                                          self.mesh),
        in_shardings=in_shardings, out_shardings=(self.state_shardings, parallel.replicated(self.mesh)),
        donate_argnums=0)
    if not online:
      return step
    teacher_params = online.device_params(self.mesh)
    bound = lambda state, batch: step(state, batch, teacher_params)
    bound._cache_size = step._cache_size  # what the compile-once checks read
    return bound


def dynamic_curriculum(config, teacher_widths: dict[str, int] | None) -> I2MCL | None:
  """The run's I2MCL over the modalities that have a teacher (all when not distilling); None when it
  distills but `teacher_widths` is not given (a model built for evaluation or reuse, not to train)."""
  dynamic = config.curriculum.get("dynamic")
  distill = dynamic is not None and bool(dynamic.get("distill", False))
  if distill and teacher_widths is None:
    return None
  modalities = tuple(m for m in MODALITIES if m in teacher_widths) if distill else MODALITIES
  out = I2MCL.from_config(dynamic, modalities)
  if out.inter and len(modalities) < 2:
    raise UserError(f"config.curriculum.dynamic.inter=True routes between modalities that have teachers; only "
                    f"{modalities} has one. Set both image_teacher and text_teacher, or inter=False.")
  return out


class DualEncoderTask(base.Task):
  """Dual-encoder training on a dataset's shards, paced by the curriculum."""

  EVALUATORS = {"retrieval": "image→text and text→image retrieval metrics on a split"}
  # I2MCL's and the hard-negative fields came later; off is what the code did before.
  ADDED_FIELDS = {**base.Task.ADDED_FIELDS, **{
      f"curriculum.dynamic.{k}": v for k, v in dict(
          distill=False, intra="none", inter=False, image_teacher="", text_teacher="", teacher_step=-1,
          distill_weight=1.0, momentum=0.9, spl_scale=2.0, superloss_beta=1.0,
          teacher_features=online_teachers.PRECOMPUTED).items()},
      **{f"loss.{k}": v for k, v in dict(
          hard_negatives="none", hn_alpha=1.0, beta=0.0, tau_plus=0.1, hinge=0.2, margin=0.0,
          margin_by_difficulty=False, chunk_size=0, ring=False).items()},
      "loss.queue.size": 0, "loss.queue.warmup_steps": 0,
      **{f"loss.hardness.{k}": v for k, v in dict(
          pacing="none", steps=0, init=0.1, beta_start=0.0, margin_start=0.0).items()}}
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
    self.image_shape = pipeline.image_shape(self.builder, config)
    cv.patch_size_divides(config.model.image.patch_size, self.image_shape[0])  # a dataset's stored size
    resolved = teacher_features.resolve_teachers(config.curriculum.get("dynamic"))
    self.online_teachers = (online_teachers.OnlineTeachers(resolved, config, self.image_shape[0])
                            if resolved and online_teachers.mode(config) == online_teachers.ONLINE else None)
    self.teachers = None if self.online_teachers else teacher_features.load_run_teachers(self.builder, resolved)
    # ---------------------------------------------------------------- model + sharding
    self.model = DualEncoderModel(config, self.mesh, self.image_shape, self.tokenizer.vocab_size, self.curriculum,
                                  self.teachers.widths if self.teachers else {}, self.online_teachers)
    self.abstract_state = self.model.abstract_state
    self._histograms = dashboard.DifficultyHistograms(self.curriculum)

  def train_batches(self, local_batch_size: int):
    return iter(pipeline.train_dataset(self.builder, self.config, self.tokenizer, local_batch_size,
                                       self.difficulty, self.teachers))

  def describe(self) -> str:
    lines = [self.difficulty.describe(), f"dynamic curriculum: {self.model.dynamic.describe()}"]
    if self.online_teachers is not None:
      lines.append(self.online_teachers.describe())
    elif self.teachers is not None:
      line = self.teachers.describe() + " of the un-augmented inputs"
      if augment.image_enabled(self.config.augment.image) or augment.text_enabled(self.config.augment.text):
        line += "; the student sees augmented ones (teacher_features='online' matches them)"
      lines.append(line)
    return "\n".join(lines)

  def make_evaluator(self, kind: str, split: str) -> RetrievalEvaluator:
    del kind  # "retrieval", the only one
    return RetrievalEvaluator(self.builder, split, self.tokenizer, self.mesh, self.model.model,
                              self.model.state_shardings.params, int(self.config.eval_batch_size),
                              self.image_shape[0], self.difficulty)

  def scalars(self, metrics: dict) -> dict[str, float]:
    self._weight_histograms = dashboard.weight_histograms(metrics)  # written by write_log_summaries
    return dashboard.scalars(metrics, self.curriculum.num_blocks)

  def divergence_hint(self) -> str:
    lr = float(self.config.optim.learning_rate)
    return (f"lower config.optim.learning_rate={lr:g} (e.g. --config.optim.learning_rate={lr / 3:.1e}) or "
            f"config.optim.grad_clip_norm={float(self.config.optim.grad_clip_norm):g}")

  def log_line(self, scalars: dict[str, float]) -> str:
    line = (f"loss {scalars['loss']:.4f} acc {scalars['accuracy']:.2f} "
            f"visible {scalars['visible_fraction']:.0%}")
    distill = [f"{k.rsplit('/', 1)[1]} {v:.3f}" for k, v in scalars.items() if k.startswith("i2mcl/raw_loss/distill/")]
    if distill:
      line += " | distill " + " ".join(distill)
    if Hardness.from_config(self.config.loss, int(self.config.num_steps)).on:
      line += (f" | beta {scalars['negatives/beta']:.2f} margin {scalars['negatives/margin']:.3f} "
               f"top{losses.TOP_K} {scalars[f'negatives/top{losses.TOP_K}_mass']:.2f}")
    alpha = [f"{k.rsplit('/', 1)[1]} {v:.2f}" for k, v in scalars.items() if k.startswith("i2mcl/alpha/")]
    if alpha:
      line += " | alpha " + " ".join(alpha)
    return line

  def observe_batch(self, step: int, batch) -> None:
    self._histograms.add(step, batch)

  def write_log_summaries(self, writer, step: int) -> None:
    self._histograms.write(writer, step)
    if getattr(self, "_weight_histograms", None):
      writer.write_histograms(step, self._weight_histograms)
      self._weight_histograms = {}

  def write_eval_summaries(self, writer, step: int, metrics: dict, batch) -> None:
    row_offset = jax.process_index() * len(batch["image"])  # this process's rows in the global batch
    dashboard.write_hardest_now(writer, step, metrics, batch, self.tokenizer, row_offset)
