"""The host loop of XMC-GAN experiments (config.model_type == "xmcgan"): train, evaluate, sample.

Reads top to bottom like the dual-encoder loop: logging → mesh → stage 1 → input →
model → sharding → update step → checkpoint → evaluators → loop.
"""

import json
import os
import time

import jax
import ml_collections
import numpy as np
from clu import metric_writers

from cmccl_jax import parallel
from cmccl_jax.curriculum import teachers
from cmccl_jax.data import datasets, pipeline
from cmccl_jax.evaluation.generation import GenerationEvaluator
from cmccl_jax.train import checkpointing, dashboard, loop
from cmccl_jax.train.gan_setup import GanSetup

# The samples shown in TensorBoard: the first evaluation captions, fixed noise.
GRID_SIZE = 16
# The stage-1 experiment's config, copied into the GAN's workdir: its weights are in the GAN's checkpoints.
STAGE1_CONFIG = "stage1_config.json"


def to_uint8(images) -> np.ndarray:
  """[-1, 1] floats → uint8 pixels."""
  return np.clip(np.round((np.asarray(images, np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def _inception(config):
  """The jitted Flax FID Inception with the user's weights, or None when config.gan.eval.inception is ""."""
  path = config.gan.eval.get("inception", "")
  if not path:
    return None
  from cmccl_jax.models import inception
  model = inception.InceptionV3()
  variables = inception.load_inception(os.path.expanduser(path))
  return jax.jit(lambda images: model.apply(variables, images))


def _stage1(config, workdir: str) -> teachers.TrainedDualEncoder:
  """The stage-1 dual encoder: read from config.gan.stage1 while `workdir` has no checkpoint yet (and its
  config copied there), afterwards only its architecture: the weights are in the GAN's own checkpoints."""
  saved = os.path.join(workdir, STAGE1_CONFIG)
  if os.path.isfile(saved) and teachers.checkpoint_steps(workdir):
    with open(saved) as f:
      return teachers.dual_encoder_architecture(ml_collections.ConfigDict(json.load(f)), saved)
  trained = teachers.load_dual_encoder(config.gan.stage1)
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    with open(saved, "w") as f:
      f.write(trained.config.to_json_best_effort(indent=2))
  return trained


class GanExperiment:
  """What training, checkpoint evaluation and sampling need: mesh, stage 1, data, model, shardings."""

  def __init__(self, config, workdir: str, *, with_data: bool = True):
    self.config = config
    # ---------------------------------------------------------------- mesh
    self.mesh = parallel.make_mesh(config.mesh)
    # ---------------------------------------------------------------- stage 1: text encoder, E, tokenizer
    self.stage1 = _stage1(config, workdir)
    self.tokenizer = self.stage1.tokenizer
    # ---------------------------------------------------------------- input
    k = int(config.curriculum.num_blocks)
    self.builder = datasets.get_builder(config.data, k, config.get("scoring")) if with_data else None
    if with_data:
      datasets.check_curriculum_fields(self.builder, config.curriculum.scorer, k)
      image_shape = pipeline.image_shape(self.builder, config)
    else:
      size = int(config.data.get("image_size") or config.data.synthetic.image_size)
      image_shape = (size, size, 3)
    # ---------------------------------------------------------------- model + sharding
    self.setup = GanSetup(config, self.mesh, image_shape, self.stage1)

  def evaluator(self) -> GenerationEvaluator:
    e = self.config.gan.eval
    if not e.get("inception", "") and jax.process_index() == 0:
      print("No FID Inception weights given (bash test.sh EXP --inception=PATH to pt_inception-2015-12-05-*.pth, "
            "or config.gan.eval.inception): FID and IS are not computed. Reporting the offline metrics only: "
            "fd_stage1, a Frechet distance in the stage-1 image tower's feature space (not FID), and the "
            "alignment of samples with their captions under the stage-1 dual encoder.", flush=True)
    return GenerationEvaluator(self.builder, self.config.data.eval_split, self.tokenizer, self.setup,
                               int(self.config.eval_batch_size), int(e.num_images), int(e.candidates),
                               inception=_inception(self.config), stats_dir=e.get("stats_dir") or None,
                               seed=int(self.config.seed))

  def restore(self, workdir: str, step: int):
    manager = checkpointing.checkpoint_manager(workdir, every_steps=1, keep=1, read_only=True)
    return checkpointing.restore(manager, step, self.setup.abstract_state)


def _eval_scores(evaluator, state) -> dict[str, float]:
  """The evaluator's scores for G and for its EMA, as g/<metric> and ema/<metric>."""
  scores = {}
  for name, ema in (("g", False), ("ema", True)):
    scores.update({f"{name}/{k}": v for k, v in evaluator(GanSetup.generator_vars(state, ema), state.encoder).items()})
  return scores


def _summary(scores: dict[str, float]) -> str:
  line = " | ".join(f"{n} FD(stage-1) {scores[f'{n}/fd_stage1']:.2f} R-prec {scores[f'{n}/alignment/r_precision']:.1f}%"
                    for n in ("g", "ema"))
  line += f" | real R-prec {scores['g/alignment/r_precision_real']:.1f}% (chance {scores['g/chance/r_precision']:.0f}%)"
  if "ema/fid" in scores:
    line += f" | EMA FID {scores['ema/fid']:.2f} IS {scores['ema/is']:.2f}"
  return line


def write_samples(writer, step: int, exp: GanExperiment, evaluator: GenerationEvaluator, state, *,
                  with_real: bool) -> None:
  """Image grids of G and EMA-G samples (and the real images) for the fixed grid captions."""
  tokens, z = evaluator.tokens[:GRID_SIZE], evaluator.z[:GRID_SIZE]
  sampler = exp.setup.sampler
  images = {}
  for name, ema in (("g", False), ("ema", True)):
    padded = [pipeline.pad_rows(x, evaluator.batch_size) for x in (tokens, z)]
    images[f"samples/{name}"] = to_uint8(sampler(GanSetup.generator_vars(state, ema), state.encoder, *padded)[:len(tokens)])
  if with_real:
    images["samples/real"] = evaluator.real[:GRID_SIZE]
    captions = exp.tokenizer.decode(tokens)
    writer.write_texts(step, {"samples/captions": "\n\n".join(f"{i}: `{c}`" for i, c in enumerate(captions))})
  writer.write_images(step, {k: dashboard.image_grid(v)[None] for k, v in images.items()})


def train_gan(config, workdir: str) -> dict[str, float]:
  """Trains the GAN (resuming from the latest checkpoint in `workdir`); returns the last eval scores."""
  # ------------------------------------------------------------------ logging
  os.makedirs(workdir, exist_ok=True)
  loop.save_config(config, workdir)
  writer = metric_writers.create_default_writer(workdir, just_logging=jax.process_index() > 0)
  name = os.path.basename(os.path.normpath(workdir))

  exp = GanExperiment(config, workdir)
  num_steps = int(config.num_steps)
  local_bs = parallel.local_batch_size(int(config.batch_size), exp.mesh)
  train_iter = iter(pipeline.train_dataset(exp.builder, config, exp.tokenizer, local_bs))

  # ------------------------------------------------------------------ update step
  step_fn = exp.setup.train_step()

  # ------------------------------------------------------------------ checkpoint
  manager = checkpointing.checkpoint_manager(
      workdir, every_steps=int(config.checkpoint_every_steps), keep=int(config.keep_checkpoints))
  state = loop.resume_or_init(manager, exp.setup, train_iter, name)
  start = int(state.step)

  # ------------------------------------------------------------------ evaluators
  evaluator = exp.evaluator()
  first_eval = True
  last_eval: dict[str, float] = {}

  def evaluate(step: int) -> dict[str, float]:
    nonlocal first_eval
    t0 = time.time()
    write_samples(writer, step, exp, evaluator, state, with_real=first_eval)
    first_eval = False
    scores = _eval_scores(evaluator, state)
    writer.write_scalars(step, {f"eval/{k}": v for k, v in scores.items()})
    loop.append_jsonl(workdir, {"step": step, **{f"eval/{k}": v for k, v in scores.items()}})
    print(f"[{name}] eval @ {step}: {_summary(scores)} ({time.time() - t0:.1f}s)", flush=True)
    return scores

  # ------------------------------------------------------------------ loop
  if start >= num_steps:
    print(f"[{name}] already trained to step {start} (config.num_steps={num_steps}).", flush=True)
  timer = loop.StepTimer(start, num_steps, int(config.batch_size))
  for step in range(start + 1, num_steps + 1):
    host_batch = next(train_iter)
    if step == start + 1:
      dashboard.write_input_examples(writer, step, host_batch, exp.tokenizer)
    state, metrics = step_fn(state, parallel.global_batch(exp.mesh, host_batch))
    timer.step_done(step, state)
    if step % int(config.log_every_steps) == 0 or step == num_steps:
      scalars = {**{k: float(v) for k, v in jax.device_get(metrics).items()}, **timer.scalars(step)}
      writer.write_scalars(step, scalars)
      loop.append_jsonl(workdir, {"step": step, **scalars})
      print(f"[{name}] step {step}/{num_steps} ({100 * step / num_steps:.0f}%) D {scalars['loss/d_total']:.3f} "
            f"G {scalars['loss/g_total']:.3f} (hinge D {scalars['loss/hinge_d']:.3f} G {scalars['loss/hinge_g']:.3f}) "
            f"visible {scalars['visible_fraction']:.0%} {timer.progress(step, scalars)}", flush=True)

    checkpointing.save(manager, step, state, train_iter, force=step == num_steps)
    if loop.is_eval_step(step, config):
      t0 = time.time()
      last_eval = evaluate(step)
      timer.exclude(time.time() - t0)
  manager.wait_until_finished()
  writer.flush()
  return last_eval


def evaluate_gan_checkpoints(config, workdir: str) -> list[dict[str, float]]:
  """Scores G and EMA-G of every checkpoint in `workdir`: `scores.csv` and TensorBoard eval/* (run `test`)."""
  steps = loop.checkpoint_steps_or_raise(workdir)
  exp = GanExperiment(config, workdir)
  writer = metric_writers.create_default_writer(os.path.join(workdir, "test"), just_logging=jax.process_index() > 0)
  evaluator = exp.evaluator()
  rows = []
  for step in steps:
    state = exp.restore(workdir, step)
    scores = _eval_scores(evaluator, state)
    write_samples(writer, step, exp, evaluator, state, with_real=step == steps[0])
    writer.write_scalars(step, {f"eval/{k}": v for k, v in scores.items()})
    rows.append({"step": step, **scores})
    print(f"step {step}: {_summary(scores)}", flush=True)
  writer.flush()
  loop.write_scores_csv(workdir, rows)
  return rows


def sample(config, workdir: str, captions: list[str], *, num_per_caption: int = 8, step: int = -1,
           ema: bool = True, out: str = "") -> str:
  """A PNG grid, one row per caption and `num_per_caption` samples across; returns its path."""
  from PIL import Image
  import tensorflow as tf
  if not captions:
    raise ValueError('give at least one caption: bash sample.sh EXP "a caption" ["another" ...]')
  steps = loop.checkpoint_steps_or_raise(workdir)
  exp = GanExperiment(config, workdir, with_data=False)
  step = steps[-1] if step < 0 else step
  if step not in steps:
    raise ValueError(f"no checkpoint at step {step} in {workdir}; it has steps {steps}.")
  state = exp.restore(workdir, step)
  tokens = np.repeat(exp.tokenizer(tf.constant(captions)).numpy(), num_per_caption, axis=0)
  z = np.random.default_rng(int(config.seed)).standard_normal(
      (len(tokens), int(config.gan.z_dim))).astype(np.float32)
  shards = exp.mesh.shape[parallel.DATA_AXIS]
  padded = -(-len(tokens) // shards) * shards
  images = exp.setup.sampler(GanSetup.generator_vars(state, ema), state.encoder,
                               pipeline.pad_rows(tokens, padded), pipeline.pad_rows(z, padded))
  grid = dashboard.image_grid(to_uint8(images[:len(tokens)]), cols=num_per_caption)
  zoom = max(1, 128 // int(images.shape[1]))  # small images are enlarged (nearest) to be seen
  out = out or os.path.join(workdir, "samples", f"step{step}_{'ema' if ema else 'g'}_{int(time.time())}.png")
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  Image.fromarray(grid).resize((grid.shape[1] * zoom, grid.shape[0] * zoom), Image.NEAREST).save(out)
  with open(os.path.splitext(out)[0] + ".txt", "w") as f:
    f.write("".join(f"row {i}: {c}\n" for i, c in enumerate(captions)))
  return out
