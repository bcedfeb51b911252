"""The one place that knows what an experiment directory (exp/NAME) holds.

  config.json          the resolved config the run trains with
  stage1_config.json   XMC-GAN: the stage-1 dual encoder's config (its weights are in the GAN's checkpoints)
  checkpoints/<step>/  orbax: the whole train state and the tf.data iterator position
  metrics.jsonl        every logged scalar and evaluation, one JSON line each
  scores.csv           `test.sh`: one row per checkpoint
  events.out.tfevents* TensorBoard of training; test/ that of `test.sh`
  samples/             `sample.sh`: PNG grids

Every other module reads and writes these through a `Workdir`, so a new file (a
lock, a config history) is added here once.
"""

import json
import os

import jax
import ml_collections
import orbax.checkpoint as ocp

from cmccl_jax import checkpoints
from cmccl_jax.errors import UserError

CONFIG = "config.json"
STAGE1_CONFIG = "stage1_config.json"
METRICS = "metrics.jsonl"
SCORES = "scores.csv"
TEST = "test"
SAMPLES = "samples"


class Workdir:
  """An experiment directory; `path` may be relative (exp/NAME) or start with ~."""

  def __init__(self, path: str):
    self.path = os.path.abspath(os.path.expanduser(str(path)))
    self.name = os.path.basename(os.path.normpath(self.path))

  def __repr__(self) -> str:
    return f"Workdir({self.path!r})"

  def file(self, name: str) -> str:
    return os.path.join(self.path, name)

  @property
  def train_command(self) -> str:
    return f"`bash train.sh {self.name}`"

  # ------------------------------------------------------------------ configs

  def save_config(self, config, name: str = CONFIG) -> None:
    """Writes `config` as JSON (process 0 only)."""
    if jax.process_index() == 0:
      os.makedirs(self.path, exist_ok=True)
      with open(self.file(name), "w", encoding="utf-8") as f:
        f.write(config.to_json_best_effort(indent=2))

  def has_config(self, name: str = CONFIG) -> bool:
    return os.path.isfile(self.file(name))

  def load_config(self, name: str = CONFIG) -> ml_collections.ConfigDict:
    """A new ConfigDict of the saved config (callers may change it; the file stays as it is)."""
    if not self.has_config(name):
      raise UserError(f"{self.file(name)} not found: {self.path} holds no trained experiment. "
                      f"Train it first with {self.train_command}.")
    with open(self.file(name), encoding="utf-8") as f:
      return ml_collections.ConfigDict(json.load(f))

  # ------------------------------------------------------------------ metrics and scores

  def append_metrics(self, record: dict) -> None:
    """One JSON line per log and eval in metrics.jsonl: TensorBoard's scalars, machine-readable."""
    if jax.process_index() == 0:
      os.makedirs(self.path, exist_ok=True)
      with open(self.file(METRICS), "a", encoding="utf-8") as f:
        f.write(json.dumps({k: float(v) if k != "step" else int(v) for k, v in record.items()}) + "\n")

  def read_metrics(self) -> list[dict]:
    if not os.path.isfile(self.file(METRICS)):
      return []
    with open(self.file(METRICS), encoding="utf-8") as f:
      return [json.loads(line) for line in f if line.strip()]

  def write_scores(self, rows: list[dict]) -> str:
    """scores.csv: one row per checkpoint, the columns of the first row; returns its path."""
    path = self.file(SCORES)
    if jax.process_index() == 0:
      keys = list(rows[0].keys())
      with open(path, "w", encoding="utf-8") as f:
        f.write(",".join(keys) + "\n")
        for row in rows:
          f.write(",".join(str(row[k]) for k in keys) + "\n")
    return path

  # ------------------------------------------------------------------ checkpoints

  def checkpoint_manager(self, *, every_steps: int = 1, keep: int = 1, read_only: bool = True):
    return checkpoints.checkpoint_manager(self.path, every_steps=every_steps, keep=keep, read_only=read_only)

  def checkpoint_steps(self) -> list[int]:
    """The saved steps, ascending; [] when there are none."""
    if not os.path.isdir(self.file("checkpoints")):
      return []
    return sorted(int(s) for s in self.checkpoint_manager().all_steps())

  def checkpoint_steps_or_raise(self) -> list[int]:
    steps = self.checkpoint_steps()
    if not steps:
      raise UserError(f"no checkpoints in {self.file('checkpoints')}; train first with {self.train_command}.")
    return steps

  def resolve_step(self, step: int, field: str = "step") -> int:
    """The checkpoint `step` names: -1 the latest, 0 the earliest, else that step (which must exist).

    Checks the config too, so a wrong path fails before anything expensive starts.
    """
    if not self.has_config():
      raise UserError(
          f"{self.path} is not a trained experiment (it has no {CONFIG}); train it first with "
          f"{self.train_command}, or point {field} at the exp/NAME of one that was trained.")
    steps = self.checkpoint_steps()
    if not steps:
      raise UserError(f"{self.path} holds no checkpoints yet; let {self.train_command} save one "
                      "(checkpoint_every_steps).")
    step = int(step)
    if step == -1:
      return steps[-1]
    if step == 0:
      return steps[0]
    if step not in steps:
      raise UserError(f"{field}={step}: {self.path} has no checkpoint at step {step}; it has steps {steps} "
                      "(or use -1 for the latest, 0 for the earliest).")
    return step

  def restore_state(self, step: int, abstract_state):
    """The whole train state of checkpoint `step`, placed as `abstract_state`'s shardings."""
    return checkpoints.restore(self.checkpoint_manager(), step, abstract_state)

  def restore_params(self, step: int, abstract_params, field: str = "params"):
    """Only the `field` subtree of checkpoint `step`'s state (a trained model's weights, no optimizer
    moments), placed as `abstract_params`' shardings."""
    item = {field: abstract_params}
    restored = self.checkpoint_manager().restore(step, args=ocp.args.Composite(**{
        checkpoints.STATE: ocp.args.PyTreeRestore(
            item=item, restore_args=ocp.checkpoint_utils.construct_restore_args(item), partial_restore=True)}))
    return restored[checkpoints.STATE][field]
