"""Orbax checkpoints holding the train state *and* the tf.data iterator position, sealed and checked.

The iterator is saved with `tf.train.Checkpoint` by a small orbax handler, so it
lands in the same atomic step directory as the state: a run killed at any moment
resumes from a step whose parameters and data position agree.

Once orbax has finished a step, `seal` writes a manifest into it (every file's size
and SHA-256). `restore` checks the manifest, restores, and checks that every float
is finite; whatever fails raises `BadCheckpoint` naming the step and the reason, so
a resume can fall back to the newest good step (`restore_newest_good`) and
`test.sh` can score the good ones and list the bad. Orbax itself checks neither
(a flipped byte restores as silently wrong numbers).
"""

import concurrent.futures
import dataclasses
import hashlib
import json
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import tensorflow as tf
from etils import epath
from jax.experimental import multihost_utils

from cmccl_jax import parallel
from cmccl_jax.errors import UserError

STATE = "state"
DATA = "data"
MANIFEST = "cmccl_manifest.json"
QUARANTINE = "checkpoints_bad"  # beside checkpoints/: bad steps a resume moved out of the way, kept for a look


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


class NonFiniteState(Exception):
  """A state holding NaN or inf was about to be saved; nothing was written."""


def save(manager: ocp.CheckpointManager, step: int, state, iterator, *, force: bool = False) -> bool:
  """Starts saving `step` (asynchronously) and seals the steps orbax has finished since the last call.

  A state with a NaN or an infinity is never written (NonFiniteState): a checkpoint is always one to resume from.
  """
  if force or manager.should_save(step):
    bad = _non_finite(state)
    if bad:
      raise NonFiniteState(f"the train state holds NaN or inf in {_listed(bad)}")
  saved = manager.save(step, args=ocp.args.Composite(
      **{STATE: ocp.args.StandardSave(_stored(state)), DATA: TfIteratorSave(iterator)}), force=force)
  seal(manager)
  return saved


def finish(manager: ocp.CheckpointManager) -> None:
  """Waits for the save in flight and seals every step."""
  manager.wait_until_finished()
  seal(manager, wait=True)


# ---------------------------------------------------------------------- manifests


class BadCheckpoint(Exception):
  """A checkpoint that cannot be trusted: unreadable, incomplete, altered, or holding non-finite values."""

  def __init__(self, step: int, directory: str, reason: str):
    super().__init__(f"checkpoint {directory} (step {step}) {reason}")
    self.step, self.directory, self.reason = step, directory, reason


def step_directory(manager: ocp.CheckpointManager, step: int) -> str:
  return os.path.join(os.fspath(manager.directory), str(step))


def _files(directory: str) -> list[str]:
  out = []
  for root, _, names in os.walk(directory):
    out += [os.path.relpath(os.path.join(root, n), directory) for n in names if n != MANIFEST]
  return sorted(out)


def _digest(path: str) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      h.update(chunk)
  return h.hexdigest()


def _write_manifest(directory: str) -> None:
  try:
    manifest = {name: [os.path.getsize(os.path.join(directory, name)), _digest(os.path.join(directory, name))]
                for name in _files(directory)}
    tmp = os.path.join(directory, MANIFEST + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
      json.dump(manifest, f)
    os.replace(tmp, os.path.join(directory, MANIFEST))  # atomic: a kill leaves no half manifest
  except FileNotFoundError:
    if os.path.isdir(directory):
      raise
    # rotated away by orbax while it was being sealed: nothing to seal


# Hashing a big state takes seconds (about 1.5 GB/s on one core): one background
# thread does it while training goes on (hashlib lets go of the GIL on big chunks).
_sealer = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="cmccl_seal")
_sealing: dict[str, concurrent.futures.Future] = {}  # checkpoints directory -> the seal job in flight


def seal(manager: ocp.CheckpointManager, *, wait: bool = False) -> None:
  """Starts writing the manifest of every finished step that has none (process 0; the files are on a shared disk).

  One job per checkpoints directory at a time; its error (a full disk) is raised
  by the next call. `wait` waits for it and seals what is left.
  """
  if jax.process_index() != 0:
    return
  key = os.fspath(manager.directory)
  job = _sealing.get(key)
  if job is not None:
    if not (wait or job.done()):
      return
    del _sealing[key]
    job.result()
  # orbax finishes one save before it starts the next: only the latest step can be in flight.
  exclude = manager.latest_step() if manager.is_saving_in_progress() else None
  todo = [step_directory(manager, step) for step in manager.all_steps() if step != exclude]
  todo = [d for d in todo if os.path.isdir(d) and not os.path.exists(os.path.join(d, MANIFEST))]
  if not todo:
    return
  job = _sealer.submit(lambda: [_write_manifest(d) for d in todo])
  if wait:
    job.result()
  else:
    _sealing[key] = job


def verify(manager: ocp.CheckpointManager, step: int) -> str | None:
  """Why checkpoint `step`'s files differ from its manifest, or None (also for an unsealed step).

  An unsealed step is one a kill caught between orbax's end and the seal, or one
  written before manifests existed: `restore` still checks that it restores and is finite.
  """
  directory = step_directory(manager, step)
  if not os.path.isdir(directory):
    return "is gone (removed after it was listed: another run's rotation, or by hand)"
  path = os.path.join(directory, MANIFEST)
  if not os.path.exists(path):
    return None
  try:
    with open(path, encoding="utf-8") as f:
      manifest = json.load(f)
  except (OSError, ValueError) as e:
    return f"has an unreadable manifest {MANIFEST} ({e})"
  for name, (size, digest) in manifest.items():
    file = os.path.join(directory, name)
    if not os.path.isfile(file):
      return f"is missing {name}"
    if os.path.getsize(file) != size:
      return f"has {name} of {os.path.getsize(file)} bytes where {size} were written"
    if _digest(file) != digest:
      return f"has {name} altered since it was written (its SHA-256 differs)"
  return None


# ---------------------------------------------------------------------- restoring


# One compile per tree structure: jit caches on the leaves' shapes and shardings.
_leaves_finite = jax.jit(lambda xs: jnp.stack([jnp.all(jnp.isfinite(x)) for x in xs]))


def leaf_name(path) -> str:
  """A key path as "params/image_tower/kernel"."""
  return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def finite_flags(tree):
  """(key paths of `tree`'s float leaves, a device bool per leaf: no NaN or inf), dispatched, not waited for."""
  floats = [(path, x) for path, x in jax.tree_util.tree_leaves_with_path(tree)
            if jnp.issubdtype(x.dtype, jnp.floating)]
  paths = [leaf_name(path) for path, _ in floats]
  return paths, (_leaves_finite([x for _, x in floats]) if floats else None)


def non_finite(paths: list[str], flags) -> list[str]:
  """The paths whose flag of `finite_flags` is False (waits for the flags)."""
  return [] if flags is None else [p for p, ok in zip(paths, parallel.to_host(flags)) if not ok]


def _non_finite(tree) -> list[str]:
  """Key paths of the float leaves of `tree` that hold a NaN or an infinity."""
  return non_finite(*finite_flags(tree))


def _listed(paths: list[str]) -> str:
  return ", ".join(paths[:3]) + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")


def _first_line(e: BaseException) -> str:
  text = str(e).strip().splitlines()
  return f"{type(e).__name__}: {text[0][:300] if text else ''}".rstrip(": ")


def agreed(reason: str | None) -> str | None:
  """`reason` where every process found none bad (None) or this one did; else that another process did.

  A collective: all processes call it with their own finding, and all get a
  reason when any has one, so they skip or restore the same step together.
  """
  if jax.process_count() == 1:
    return reason
  ok = multihost_utils.process_allgather(np.array(reason is None))
  if reason is None and not ok.all():
    return f"failed its check on process {int(np.argmin(ok))}"
  return reason


def checked_restore(manager: ocp.CheckpointManager, step: int, restore: Callable[[], Any]):
  """`restore()` of checkpoint `step`, after its manifest and before its finiteness is checked.

  Raises BadCheckpoint with the reason; any failure of orbax or tf.data to read a
  step counts as one (their messages, e.g. "Event loop is closed", rarely name the file).
  On several processes, the manifest verdict is agreed before orbax's restore, which
  ends at a barrier: a process that skipped a step there would leave the others
  waiting. (A read failing on one process only, past a good manifest, still does:
  orbax's barrier times out on the others.)
  """
  directory = step_directory(manager, step)
  reason = agreed(verify(manager, step))
  if reason:
    raise BadCheckpoint(step, directory, reason)
  try:
    restored = restore()
  except Exception as e:  # noqa: BLE001 - see the docstring; the cause stays chained
    if not os.path.isdir(directory):
      raise BadCheckpoint(step, directory, verify(manager, step)) from e
    raise BadCheckpoint(step, directory, f"cannot be read ({_first_line(e)})") from e
  bad = _non_finite(restored)
  if bad:
    raise BadCheckpoint(step, directory, f"holds non-finite values (NaN or inf) in {_listed(bad)}")
  return restored


def _stored(state):
  """What of a train state is written: its fields as a dict, without those that hold nothing.

  A field that came later and is empty when its feature is off (the dual encoder's
  dynamic-curriculum state) is left out, so checkpoints written before it existed
  and those written with it off have one layout, and both restore.
  """
  if not dataclasses.is_dataclass(state):
    return state
  fields = {f.name: getattr(state, f.name) for f in dataclasses.fields(state)}
  return {k: v for k, v in fields.items() if jax.tree.leaves(v) or not isinstance(v, (dict, tuple, list))}


def _rebuilt(abstract_state, stored):
  return abstract_state.replace(**stored) if dataclasses.is_dataclass(abstract_state) else stored


def restore(manager: ocp.CheckpointManager, step: int, abstract_state, iterator=None):
  """Restores the state (placed as `abstract_state`'s shardings) and, if given, the iterator; checked."""
  items = {STATE: ocp.args.StandardRestore(_stored(abstract_state))}
  if iterator is not None:
    items[DATA] = TfIteratorRestore(iterator)
  return checked_restore(manager, step, lambda: _rebuilt(
      abstract_state, manager.restore(step, args=ocp.args.Composite(**items))[STATE]))


def quarantine(manager: ocp.CheckpointManager, step: int) -> str:
  """Moves checkpoint `step` to checkpoints_bad/<step> (nothing is deleted); returns where it went."""
  source = step_directory(manager, step)
  target = os.path.join(os.path.dirname(os.fspath(manager.directory)), QUARANTINE, str(step))
  if jax.process_index() == 0:
    os.makedirs(os.path.dirname(target), exist_ok=True)
    n = 1
    while os.path.exists(target):
      target = os.path.join(os.path.dirname(target), f"{step}.{n}")
      n += 1
    os.replace(source, target)
  multihost_utils.sync_global_devices(f"cmccl_quarantine_{step}")
  manager.reload()
  return target


def restore_newest_good(manager: ocp.CheckpointManager, abstract_state, iterator, log: Callable[[str], None]):
  """(step, state) of the newest checkpoint that restores and checks out, or (None, None) when there are none.

  Bad newer steps are moved to checkpoints_bad/ with one line each, so that the
  run saves those steps anew and rotation only ever counts good checkpoints. When
  every step is bad, nothing is moved (the cause may be this code or config, not
  the files) and a UserError lists them.
  """
  bad: list[BadCheckpoint] = []
  for step in sorted(manager.all_steps(), reverse=True):
    try:
      state = restore(manager, step, abstract_state, iterator)
    except BadCheckpoint as e:
      bad.append(e)
      continue
    for b in bad:
      log(f"skipped the bad checkpoint of step {b.step}: {b.reason}; moved it to {quarantine(manager, b.step)}")
    return step, state
  if bad:
    raise UserError("no checkpoint can be resumed from: " + "; ".join(str(b) for b in bad)
                    + ". Move them away to train from scratch, or check the config against config.json.")
  return None, None


def abstract_with_shardings(state, shardings):
  """ShapeDtypeStructs carrying the target shardings, the restore target for orbax."""
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, shardings)
