"""The one place that knows what an experiment directory (exp/NAME) holds.

  config.json          the resolved config the run trains with
  config_history.jsonl every start's config, with what changed (a resume never loses the saved config)
  train.lock           held by the one run writing here (`flock`: a killed run's lock is taken over)
  stage1_config.json   XMC-GAN: the stage-1 dual encoder's config (its weights are in the GAN's checkpoints)
  checkpoints/<step>/  orbax: the whole train state and the tf.data iterator position, sealed by a manifest
  checkpoints_bad/     bad checkpoints a resume moved aside (never deleted)
  metrics.jsonl        every logged scalar and evaluation, one JSON line each
  scores.csv           `test.sh`: one row per checkpoint
  per_query/<eval>-<step>.npz  each evaluation's per-query results (ranks, AP), for paired bootstraps
  events.out.tfevents* TensorBoard of training; test/ that of `test.sh`
  samples/             `sample.sh`: PNG grids

Every other module reads and writes these through a `Workdir`, so a new file (a
lock, a config history) is added here once.
"""

import contextlib
import fcntl
import json
import os
import socket
import sys
import time

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from cmccl_jax import checkpoints
from cmccl_jax.errors import WRITE_FIXES, UserError, disk_error_code

CONFIG = "config.json"
CONFIG_HISTORY = "config_history.jsonl"
LOCK = "train.lock"
STAGE1_CONFIG = "stage1_config.json"
METRICS = "metrics.jsonl"
SCORES = "scores.csv"
PER_QUERY = "per_query"
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

  # ------------------------------------------------------------------ writing

  def _write(self, name: str, text: str, mode: str = "w") -> None:
    """Writes (or appends) `text` to `name`; a full disk or a refused write is one clear error.

    A rewrite goes through a temporary file and an atomic rename: a kill or a full disk never leaves half a file.
    """
    path = self.file(name)
    try:
      os.makedirs(self.path, exist_ok=True)
      if mode == "a":
        with open(path, "a", encoding="utf-8") as f:
          f.write(text)
        return
      with open(path + ".tmp", "w", encoding="utf-8") as f:
        f.write(text)
      os.replace(path + ".tmp", path)
    except OSError as e:
      raise write_error(path, e) from e

  # ------------------------------------------------------------------ the one writer

  @contextlib.contextmanager
  def lock(self):
    """Holds train.lock for the block: one training run per experiment, on any number of hosts.

    A `flock`, which the kernel releases when its process dies: a killed run's lock
    is free, and the next run takes it over (saying whose it was). Process 0 holds
    it for the whole job; every process learns whether it got it.
    """
    path, holder, f = self.file(LOCK), "", None
    if jax.process_index() == 0:
      try:
        os.makedirs(self.path, exist_ok=True)
        f = open(path, "a+", encoding="utf-8")
      except OSError as e:
        raise write_error(path, e) from e
      f.seek(0)
      previous = f.read().strip()
      try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
      except OSError:
        f.close()
        f, holder = None, previous or "another process"
    got = bool(multihost_utils.broadcast_one_to_all(f is not None or jax.process_index() != 0))
    if not got:
      raise UserError(f"{self.path} is being trained by {holder or 'another run'} (lock {path}); wait for that "
                      f"run to finish or stop it, or train under another name.")
    if f is not None:
      if previous:
        print(f"[{self.name}] took over {path} from {previous}, which is no longer running", flush=True)
      f.seek(0)
      f.truncate()
      f.write(f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')} "
              f"({' '.join(sys.argv[:1] + [a for a in sys.argv[1:] if a.startswith('--mode')])})\n")
      f.flush()
    try:
      yield
    finally:
      if f is not None:
        f.seek(0)
        f.truncate()  # a clean exit leaves no holder behind
        f.close()

  # ------------------------------------------------------------------ configs

  def save_config(self, config, name: str = CONFIG) -> None:
    """Writes `config` as JSON (process 0 only)."""
    if jax.process_index() == 0:
      self._write(name, config.to_json_best_effort(indent=2))

  def start_config(self, config, resume_step: int | None, safe_changes, added=None) -> list[str]:
    """Checks `config` against the saved one before a run starts; saves it and appends to the history.

    Resuming (`resume_step` not None), a changed field must match one of the
    `safe_changes` (dotted names; a trailing ".*" covers a block): any other change
    alters shapes, data or what the checkpoints mean, and raises naming the fields,
    with config.json left as it was. A field of `added` ({dotted field: value}) absent from
    the saved config counts as holding that value. Returns one line per allowed change.
    """
    new = json.loads(config.to_json_best_effort())
    changes = self.config_changes(config, added)
    if resume_step is not None:
      unsafe = {k: v for k, v in changes.items() if not _matches(k, safe_changes)}
      if unsafe:
        listed = "; ".join(f"config.{k}: {a} -> {b}" for k, (a, b) in sorted(unsafe.items()))
        raise UserError(
            f"{self.path} has checkpoints up to step {resume_step} of another config: {listed}. These change "
            "shapes, data or what the checkpoints mean, so the run cannot resume with them. Drop the "
            "overrides to resume (the saved config is config.json), or train under another name.")
    lines = [f"config.{k}: {a} -> {b}" for k, (a, b) in sorted(changes.items())]
    if jax.process_index() == 0:
      record = {"time": time.strftime("%Y-%m-%d %H:%M:%S"), "resume_step": resume_step,
                "changes": lines, "config": new}
      self._write(CONFIG_HISTORY, json.dumps(record) + "\n", mode="a")
      self._write(CONFIG, config.to_json_best_effort(indent=2))
    return lines

  def config_changes(self, config, added=None) -> dict[str, tuple[str, str]]:
    """{dotted field: (saved, new)} where `config` differs from config.json ({} without one); `added` as
    in `start_config`."""
    if not self.has_config():
      return {}
    flat_new = _flat(json.loads(config.to_json_best_effort()))
    added = {k: v for k, v in json.loads(json.dumps(added or {})).items() if k in flat_new}  # tuples as lists
    return _diff({**added, **_flat(json.loads(config_json_text(self.file(CONFIG))))}, flat_new)

  def has_config(self, name: str = CONFIG) -> bool:
    return os.path.isfile(self.file(name))

  def load_config(self, name: str = CONFIG) -> ml_collections.ConfigDict:
    """A new ConfigDict of the saved config (callers may change it; the file stays as it is)."""
    if not self.has_config(name):
      raise UserError(f"{self.file(name)} not found: {self.path} holds no trained experiment. "
                      f"Train it first with {self.train_command}.")
    return ml_collections.ConfigDict(json.loads(config_json_text(self.file(name))))

  # ------------------------------------------------------------------ metrics and scores

  def append_metrics(self, record: dict) -> None:
    """One JSON line per log and eval in metrics.jsonl: TensorBoard's scalars, machine-readable."""
    if jax.process_index() == 0:
      self._write(METRICS, json.dumps({k: float(v) if k != "step" else int(v) for k, v in record.items()}) + "\n",
                  mode="a")

  def forget_metrics_after(self, step: int) -> int:
    """Drops the metrics.jsonl records of steps after `step` (a resume replays them); returns how many."""
    records = self.read_metrics()
    kept = [r for r in records if int(r["step"]) <= step]
    if len(kept) < len(records) and jax.process_index() == 0:
      self._write(METRICS, "".join(json.dumps(r) + "\n" for r in kept))
    return len(records) - len(kept)

  def has_eval(self, step: int, eval_name: str) -> bool:
    """Whether metrics.jsonl holds evaluator `eval_name`'s scores of `step`."""
    prefix = f"{eval_name}/"
    return any(int(r["step"]) == step and any(k.startswith(prefix) for k in r) for r in self.read_metrics())

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
      lines = [",".join(keys)] + [",".join(str(row[k]) for k in keys) for row in rows]
      self._write(SCORES, "\n".join(lines) + "\n")
    return path

  def save_per_query(self, eval_name: str, step: int, arrays: dict) -> None:
    """per_query/<eval_name>-<step>.npz (process 0; nothing when `arrays` is empty)."""
    if not arrays or jax.process_index() != 0:
      return
    path = self.per_query_file(eval_name, step)
    try:
      os.makedirs(os.path.dirname(path), exist_ok=True)
      with open(path + ".tmp", "wb") as f:
        np.savez(f, **arrays)
      os.replace(path + ".tmp", path)
    except OSError as e:
      raise write_error(path, e) from e

  def per_query_file(self, eval_name: str, step: int) -> str:
    return os.path.join(self.path, PER_QUERY, f"{eval_name}-{step}.npz")

  def load_per_query(self, eval_name: str, step: int) -> dict:
    """The arrays `save_per_query` wrote, or {} when there are none."""
    path = self.per_query_file(eval_name, step)
    if not os.path.exists(path):
      return {}
    with np.load(path) as data:
      return {k: data[k] for k in data.files}

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
    """The whole train state of checkpoint `step`, placed as `abstract_state`'s shardings.

    Raises checkpoints.BadCheckpoint when the step is unreadable, altered or not finite.
    """
    return checkpoints.restore(self.checkpoint_manager(), step, abstract_state)

  def restore_params(self, step: int, abstract_params, field: str = "params"):
    """Only the `field` subtree of checkpoint `step`'s state (a trained model's weights, no optimizer
    moments), placed as `abstract_params`' shardings; a bad checkpoint is a UserError naming it."""
    item = {field: abstract_params}
    manager = self.checkpoint_manager()

    def restore():
      restored = manager.restore(step, args=ocp.args.Composite(**{
          checkpoints.STATE: ocp.args.PyTreeRestore(
              item=item, restore_args=ocp.checkpoint_utils.construct_restore_args(item), partial_restore=True)}))
      return restored[checkpoints.STATE][field]
    try:
      return checkpoints.checked_restore(manager, step, restore)
    except checkpoints.BadCheckpoint as e:
      raise UserError(f"{e}; pick another step of {self.path} (it has {self.checkpoint_steps()}).") from e


# ---------------------------------------------------------------------- helpers

def write_error(path: str, e: BaseException) -> BaseException:
  """A UserError for a write the disk refused (full, read-only, no permission); else `e` itself (a bug)."""
  code = disk_error_code(e)
  if code is None:
    return e
  return UserError(f"cannot write {path}: {os.strerror(code)}; {WRITE_FIXES[code]} and run the same command "
                   "again (training resumes from its newest complete checkpoint).")


def config_json_text(path: str) -> str:
  with open(path, encoding="utf-8") as f:
    return f.read()


def _flat(tree, prefix: str = "") -> dict:
  """{"a.b.c": leaf} of a nested dict (an empty dict is a leaf)."""
  if isinstance(tree, dict) and tree:
    return {k: v for key, sub in tree.items() for k, v in _flat(sub, f"{prefix}{key}.").items()}
  return {prefix[:-1]: tree}


_ABSENT = "(absent)"


def _diff(old: dict, new: dict) -> dict:
  """{dotted field: (old, new)} of the fields that differ (or exist in one only)."""
  return {k: (json.dumps(old.get(k, _ABSENT)), json.dumps(new.get(k, _ABSENT)))
          for k in sorted(set(old) | set(new)) if old.get(k, _ABSENT) != new.get(k, _ABSENT)}


def _matches(field: str, patterns) -> bool:
  return any(field == p or (p.endswith(".*") and field.startswith(p[:-1])) for p in patterns)
