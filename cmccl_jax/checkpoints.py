"""Orbax checkpoints holding the train state *and* the tf.data iterator position.

The iterator is saved with `tf.train.Checkpoint` by a small orbax handler, so it
lands in the same atomic step directory as the state: a run killed at any moment
resumes from a step whose parameters and data position agree.
"""

import dataclasses
import os
from typing import Any

import jax
import orbax.checkpoint as ocp
import tensorflow as tf
from etils import epath

STATE = "state"
DATA = "data"


class TfIteratorHandler(ocp.CheckpointHandler):
  """Saves/restores a tf.data iterator; one file set per process (each reads its own slice)."""

  def _prefix(self, directory: epath.Path) -> str:
    return os.fspath(directory / f"process_{jax.process_index()}")

  def save(self, directory: epath.Path, args: "TfIteratorSave"):
    directory.mkdir(parents=True, exist_ok=True)
    tf.train.Checkpoint(iterator=args.iterator).write(self._prefix(directory))

  def restore(self, directory: epath.Path, args: "TfIteratorRestore"):
    tf.train.Checkpoint(iterator=args.iterator).read(self._prefix(directory)).assert_consumed()
    return args.iterator


@ocp.args.register_with_handler(TfIteratorHandler, for_save=True)
@dataclasses.dataclass
class TfIteratorSave(ocp.args.CheckpointArgs):
  iterator: Any


@ocp.args.register_with_handler(TfIteratorHandler, for_restore=True)
@dataclasses.dataclass
class TfIteratorRestore(ocp.args.CheckpointArgs):
  iterator: Any


def checkpoint_manager(workdir: str, *, every_steps: int, keep: int, read_only: bool = False) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(
      save_interval_steps=every_steps, max_to_keep=keep, create=not read_only, read_only=read_only)
  return ocp.CheckpointManager(
      os.path.join(os.path.abspath(workdir), "checkpoints"), item_names=(STATE, DATA), options=options)


def save(manager: ocp.CheckpointManager, step: int, state, iterator, *, force: bool = False) -> bool:
  return manager.save(step, args=ocp.args.Composite(
      **{STATE: ocp.args.StandardSave(state), DATA: TfIteratorSave(iterator)}), force=force)


def restore(manager: ocp.CheckpointManager, step: int, abstract_state, iterator=None):
  """Restores the state (placed as `abstract_state`'s shardings) and, if given, the iterator."""
  items = {STATE: ocp.args.StandardRestore(abstract_state)}
  if iterator is not None:
    items[DATA] = TfIteratorRestore(iterator)
  restored = manager.restore(step, args=ocp.args.Composite(**items))
  return restored[STATE]


def abstract_with_shardings(state, shardings):
  """ShapeDtypeStructs carrying the target shardings, the restore target for orbax."""
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, shardings)
