"""The host loop: the only place with side effects (I/O, checkpoints, summaries).

Reads top to bottom: logging → mesh → input → model → sharding → update step →
checkpoint → evaluators → loop.
"""

import json
import os
import time

import jax
from clu import metric_writers

from cmccl_jax import parallel
from cmccl_jax.data import datasets, pipeline
from cmccl_jax.data.tokenizer import build_tokenizer
from cmccl_jax.evaluation.evaluator import RetrievalEvaluator
from cmccl_jax.train import checkpointing, dashboard
from cmccl_jax.train.model_setup import ModelSetup


def format_duration(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def save_config(config, workdir: str) -> None:
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json_best_effort(indent=2))


METRICS_FILE = "metrics.jsonl"


def append_jsonl(workdir: str, record: dict) -> None:
  """One JSON line per log and eval in `workdir/metrics.jsonl`: TensorBoard's scalars, machine-readable."""
  if jax.process_index() == 0:
    with open(os.path.join(workdir, METRICS_FILE), "a") as f:
      f.write(json.dumps({k: float(v) if k != "step" else int(v) for k, v in record.items()}) + "\n")


def read_jsonl(workdir: str) -> list[dict]:
  path = os.path.join(workdir, METRICS_FILE)
  if not os.path.isfile(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def resume_or_init(manager, setup, train_iter, name: str):
  """The latest checkpoint's state (and data position) in `manager`, or `setup`'s fresh state."""
  latest = manager.latest_step()
  if latest is None:
    return setup.init_state()
  state = checkpointing.restore(manager, latest, setup.abstract_state, train_iter)
  print(f"[{name}] resumed from step {latest} in {manager.directory}", flush=True)
  return state


class StepTimer:
  """Times training steps only: the first (compiling) step and evaluations are left out."""

  def __init__(self, start: int, num_steps: int, batch_size: int):
    self.start, self.num_steps, self.batch_size = start, num_steps, batch_size
    self.t_start = self.t_last = None
    self.last_logged = start

  def step_done(self, step: int, state) -> None:
    if self.t_start is None:
      jax.block_until_ready(state)
      self.t_start = self.t_last = time.time()
      self.last_logged = step

  def scalars(self, step: int) -> dict[str, float]:
    """step_time_ms and examples_per_sec since the last call (none right after the first step)."""
    now = time.time()
    out = {}
    if step > self.last_logged:
      dt = max(now - self.t_last, 1e-9)
      out = {"step_time_ms": 1000 * dt / (step - self.last_logged),
             "examples_per_sec": (step - self.last_logged) * self.batch_size / dt}
    self.t_last, self.last_logged = now, step
    return out

  def progress(self, step: int, scalars: dict) -> str:
    """The log line's tail: ex/s, ms/step and the ETA at the training rate so far."""
    rate = (step - (self.start + 1)) / max(time.time() - self.t_start, 1e-9)
    eta = (self.num_steps - step) / rate if rate > 0 else 0.0
    return (f"| {scalars.get('examples_per_sec', 0):.0f} ex/s {scalars.get('step_time_ms', 0):.0f} ms/step "
            f"| ETA {format_duration(eta)}")

  def exclude(self, seconds: float) -> None:
    """Leaves `seconds` (an evaluation) out of the throughput and the ETA."""
    if self.t_start is not None:
      self.t_start += seconds
      self.t_last += seconds


def is_eval_step(step: int, config) -> bool:
  every = int(config.eval_every_steps)
  return (every > 0 and step % every == 0) or step == int(config.num_steps)


class Experiment:
  """What both training and checkpoint evaluation need: mesh, data, model, shardings."""

  def __init__(self, config):
    self.config = config
    # ---------------------------------------------------------------- mesh
    self.mesh = parallel.make_mesh(config.mesh)
    # ---------------------------------------------------------------- input
    k = int(config.curriculum.num_blocks)
    self.builder = datasets.get_builder(config.data, k, config.get("scoring"))
    datasets.check_curriculum_fields(self.builder, config.curriculum.scorer, k)
    self.tokenizer = build_tokenizer(config.tokenizer)
    # ---------------------------------------------------------------- model + sharding
    self.image_shape = pipeline.image_shape(self.builder, config)
    self.setup = ModelSetup(config, self.mesh, self.image_shape, self.tokenizer.vocab_size)

  def evaluator(self) -> RetrievalEvaluator:
    return RetrievalEvaluator(self.builder, self.config.data.eval_split, self.tokenizer, self.mesh,
                              self.setup.model, self.setup.state_shardings.params,
                              int(self.config.eval_batch_size), self.image_shape[0])


def train_and_evaluate(config, workdir: str) -> dict[str, float]:
  """Trains (resuming from the latest checkpoint in `workdir`) and returns the last eval metrics."""
  # ------------------------------------------------------------------ logging
  os.makedirs(workdir, exist_ok=True)
  save_config(config, workdir)
  writer = metric_writers.create_default_writer(workdir, just_logging=jax.process_index() > 0)
  name = os.path.basename(os.path.normpath(workdir))

  exp = Experiment(config)
  num_steps = int(config.num_steps)
  k = int(config.curriculum.num_blocks)
  local_bs = parallel.local_batch_size(int(config.batch_size), exp.mesh)
  train_iter = iter(pipeline.train_dataset(exp.builder, config, exp.tokenizer, local_bs))

  # ------------------------------------------------------------------ update step
  step_fn = exp.setup.train_step()

  # ------------------------------------------------------------------ checkpoint
  manager = checkpointing.checkpoint_manager(
      workdir, every_steps=int(config.checkpoint_every_steps), keep=int(config.keep_checkpoints))
  state = resume_or_init(manager, exp.setup, train_iter, name)
  start = int(state.step)

  # ------------------------------------------------------------------ evaluators
  evaluator = exp.evaluator()
  last_eval: dict[str, float] = {}

  def evaluate(step: int) -> dict[str, float]:
    t0 = time.time()
    scores = evaluator(state.params)
    writer.write_scalars(step, {f"eval/{k_}": v for k_, v in scores.items()})
    append_jsonl(workdir, {"step": step, **{f"eval/{k_}": v for k_, v in scores.items()}})
    if evaluator.last_difficulty is not None and jax.process_index() == 0:
      dashboard.write_difficulty_ranking(writer, step, evaluator.last_difficulty, evaluator.images, exp.tokenizer)
    print(f"[{name}] eval @ {step}: t2i R@1 {scores['t2i/R@1']:.2f} R@5 {scores['t2i/R@5']:.2f} | "
          f"i2t R@1 {scores['i2t/R@1']:.2f} R@5 {scores['i2t/R@5']:.2f} | chance t2i R@1 "
          f"{scores['chance/t2i_R@1']:.2f} ({time.time() - t0:.1f}s)", flush=True)
    return scores

  # ------------------------------------------------------------------ loop
  if start >= num_steps:
    print(f"[{name}] already trained to step {start} (config.num_steps={num_steps}).", flush=True)
  timer = StepTimer(start, num_steps, int(config.batch_size))
  histograms = dashboard.DifficultyHistograms(config.curriculum)
  row_offset = jax.process_index() * local_bs  # this process's rows in the global batch
  for step in range(start + 1, num_steps + 1):
    host_batch = next(train_iter)
    if step == start + 1:
      dashboard.write_input_examples(writer, step, host_batch, exp.tokenizer)
    histograms.add(step - 1, host_batch)
    state, metrics = step_fn(state, parallel.global_batch(exp.mesh, host_batch))
    timer.step_done(step, state)
    if step % int(config.log_every_steps) == 0 or step == num_steps:
      metrics = jax.device_get(metrics)
      scalars = {**dashboard.scalars(metrics, k), **timer.scalars(step)}
      histograms.write(writer, step)
      writer.write_scalars(step, scalars)
      append_jsonl(workdir, {"step": step, **scalars})
      print(f"[{name}] step {step}/{num_steps} ({100 * step / num_steps:.0f}%) loss {scalars['loss']:.4f} "
            f"acc {scalars['accuracy']:.2f} visible {scalars['visible_fraction']:.0%} "
            f"{timer.progress(step, scalars)}", flush=True)

    checkpointing.save(manager, step, state, train_iter, force=step == num_steps)
    if is_eval_step(step, config):
      dashboard.write_hardest_now(writer, step, jax.device_get(metrics), host_batch, exp.tokenizer, row_offset)
      t0 = time.time()
      last_eval = evaluate(step)
      timer.exclude(time.time() - t0)
  manager.wait_until_finished()
  writer.flush()
  return last_eval


def evaluate_checkpoints(config, workdir: str) -> list[dict[str, float]]:
  """Scores every checkpoint in `workdir`: `scores.csv` and TensorBoard eval/* (run `test`)."""
  exp = Experiment(config)
  steps = checkpoint_steps_or_raise(workdir)
  manager = checkpointing.checkpoint_manager(workdir, every_steps=1, keep=1, read_only=True)
  writer = metric_writers.create_default_writer(os.path.join(workdir, "test"),
                                                just_logging=jax.process_index() > 0)
  evaluator = exp.evaluator()
  rows = []
  for step in steps:
    state = checkpointing.restore(manager, step, exp.setup.abstract_state)
    scores = evaluator(state.params)
    writer.write_scalars(step, {f"eval/{k}": v for k, v in scores.items()})
    rows.append({"step": step, **scores})
    print(f"step {step}: " + "  ".join(f"{k} {scores[k]:.2f}" for k in
                                       ("t2i/R@1", "t2i/R@5", "i2t/R@1", "i2t/R@5", "t2i/mAP")), flush=True)
  writer.flush()
  write_scores_csv(workdir, rows)
  return rows


def checkpoint_steps_or_raise(workdir: str) -> list[int]:
  """The steps of `workdir`'s checkpoints, in order; an error naming the fix when there are none."""
  manager = checkpointing.checkpoint_manager(workdir, every_steps=1, keep=1, read_only=True)
  steps = sorted(manager.all_steps())
  if not steps:
    raise FileNotFoundError(f"no checkpoints in {manager.directory}; train first with `bash train.sh "
                            f"{os.path.basename(os.path.normpath(workdir))}`.")
  return steps


def write_scores_csv(workdir: str, rows: list[dict]) -> None:
  """`workdir/scores.csv`: one row per checkpoint, the columns of the first row."""
  if jax.process_index() == 0:
    keys = list(rows[0].keys())
    with open(os.path.join(workdir, "scores.csv"), "w") as f:
      f.write(",".join(keys) + "\n")
      for row in rows:
        f.write(",".join(str(row[k]) for k in keys) + "\n")
    print(f"wrote {os.path.join(workdir, 'scores.csv')} ({len(rows)} checkpoints)", flush=True)
