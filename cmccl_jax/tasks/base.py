"""What a task gives the one host loop (`cmccl_jax.run.loop`): a model family behind one interface.

A task owns its state, its jitted step, its evaluators and its TensorBoard hooks;
the loop owns everything with side effects that every task shares (the workdir,
checkpoints, the schedule, timing, metrics.jsonl). A new model is a new task,
never a new loop.

Evaluators are chosen from `config.evals`: {name: {kind, split, every_steps}}, one
entry per evaluation (`kind` one of the task's `EVALUATORS`; every_steps 0 means
config.eval_every_steps). An evaluator's scores go to TensorBoard and
metrics.jsonl as `<name>/<metric>`; the evaluator named "eval" is the main one.
"""

import abc
from typing import Any, Iterator

import numpy as np

from cmccl_jax.data import pipeline, shapes_scene
from cmccl_jax.errors import UserError


class Evaluator(abc.ABC):
  """Scores a train state; one of a task's evaluators."""

  @abc.abstractmethod
  def __call__(self, state) -> dict[str, float]:
    """{metric: value} of `state` (host floats)."""

  @abc.abstractmethod
  def summary(self, scores: dict[str, float]) -> str:
    """The one-line digest of `scores` the loop prints."""

  def write_summaries(self, writer, step: int, state, *, first: bool) -> None:
    """Images and texts beyond the scalars, after a call at `step`; `first`: this run's first evaluation."""

  def per_query(self) -> dict:
    """{name: array over the split's queries} behind the last call's scores, saved beside the metrics."""
    return {}


class Task(abc.ABC):
  """A model family as the loop runs it.

  Attributes set by a subclass: `config`, `mesh`, `tokenizer` (decodes the batch's
  tokens for the input grid), `abstract_state` (ShapeDtypeStructs with shardings:
  the restore target), `builder` (the dataset's TFDS builder), `difficulty` (its
  scores and the curriculum's blocks, `data.difficulty.RunDifficulty`) and `model`
  (the state and step built from shapes alone, with `init_state()` and `train_step()`).
  """

  # {config.evals kind: what it computes}; a subclass lists its own.
  EVALUATORS: dict[str, str] = {}

  # The config fields a resume may change (dotted; "x.*" a block): the schedule, the evaluations and the
  # optimiser's scalars, which alter neither shapes nor data nor what the checkpoints hold, and the
  # ablation grid (read by the ablation driver only: a grid grown mid-way must not strand its runs). A
  # subclass adds its own; every other change is refused on resume (Workdir.start_config).
  SAFE_ON_RESUME: tuple[str, ...] = (
      "num_steps", "log_every_steps", "eval_every_steps", "checkpoint_every_steps", "keep_checkpoints",
      "eval_batch_size", "evals.*", "data.auto_prepare", "ablation.*")
  # Fields added after experiments were saved without them: {dotted field: the value that does what
  # the code did before}. Resuming such an experiment with that value is no change.
  ADDED_FIELDS: dict[str, Any] = {
      "data.synthetic.min_objects": 1,
      "data.synthetic.caption_levels": list(shapes_scene.CAPTION_LEVELS),
      "data.synthetic.distractors": False,
  }

  config: Any
  mesh: Any
  tokenizer: Any
  abstract_state: Any
  builder: Any
  difficulty: Any
  model: Any

  def init_state(self):
    """The fresh state, created already sharded."""
    return self.model.init_state()

  def train_step(self):
    """The jitted step: (state, global batch) -> (state, metrics); state donated."""
    return self.model.train_step()

  def train_batches(self, local_batch_size: int) -> Iterator[dict[str, np.ndarray]]:
    """This process's infinite stream of training batches; a checkpointable tf.data iterator."""
    return iter(pipeline.train_dataset(self.builder, self.config, self.tokenizer, local_batch_size,
                                       self.difficulty))

  def describe(self) -> str:
    """What the run's log and TensorBoard say about its curriculum at the start (lines)."""
    return self.difficulty.describe()

  @abc.abstractmethod
  def make_evaluator(self, kind: str, split: str) -> Evaluator:
    """The evaluator `kind` (a key of EVALUATORS) on `split`."""

  @abc.abstractmethod
  def log_line(self, scalars: dict[str, float]) -> str:
    """The middle of the loop's progress line: the task's loss terms."""

  def scalars(self, metrics: dict) -> dict[str, float]:
    """The step's metrics (host arrays) as TensorBoard scalars."""
    return {k: float(v) for k, v in metrics.items()}

  def observe_batch(self, step: int, batch: dict[str, np.ndarray]) -> None:
    """Sees each host batch before the step at state step `step` uses it (e.g. to collect histograms)."""

  def write_log_summaries(self, writer, step: int) -> None:
    """Summaries beyond the scalars, at every log step."""

  def write_eval_summaries(self, writer, step: int, metrics: dict, batch: dict[str, np.ndarray]) -> None:
    """Summaries of the current training batch (`metrics` on the host), at every evaluation step."""

  def divergence_hint(self) -> str:
    """What to change when the loss or the gradients stop being finite (the end of the loop's message)."""
    return "lower the learning rate"

  # ------------------------------------------------------------------ evaluators from the config

  def evaluators(self) -> dict[str, tuple[Evaluator, int]]:
    """{name: (evaluator, every_steps)} from config.evals."""
    out = {}
    for name, spec in configured_evals(self.config, self.EVALUATORS).items():
      out[name] = (self.make_evaluator(spec["kind"], spec["split"]), spec["every_steps"])
    return out


def configured_evals(config, kinds: dict[str, str]) -> dict[str, dict[str, Any]]:
  """config.evals checked against the task's evaluator `kinds`, every_steps resolved."""
  if "evals" not in config:  # saved before config.evals existed: their one evaluator, on data.eval_split
    evals = {"eval": {"kind": next(iter(kinds)), "split": config.data.get("eval_split", "test")}}
  else:
    evals = dict(config.evals or {})
  out = {}
  for name, spec in evals.items():
    spec = dict(spec)
    unknown = sorted(set(spec) - {"kind", "split", "every_steps"})
    if unknown:
      raise UserError(f"config.evals.{name} has unknown fields {unknown}; its fields are kind, split and "
                      "every_steps.")
    kind = spec.get("kind", "")
    if kind not in kinds:
      raise UserError(f"config.evals.{name}.kind={kind!r} is not one of {', '.join(map(repr, kinds))}; "
                      f"set --config.evals.{name}.kind=<one of them>.")
    if not spec.get("split"):
      raise UserError(f"config.evals.{name}.split is empty; name a split of the dataset, e.g. test.")
    every = int(spec.get("every_steps", 0) or config.eval_every_steps)
    if every < 0:
      raise UserError(f"config.evals.{name}.every_steps={every} must be >= 0 (0: config.eval_every_steps).")
    out[name] = {"kind": kind, "split": str(spec["split"]), "every_steps": every}
  return out


def is_eval_step(step: int, every_steps: int, num_steps: int) -> bool:
  """Every `every_steps` steps (0: never) and always at the last step."""
  return (every_steps > 0 and step % every_steps == 0) or step == num_steps
