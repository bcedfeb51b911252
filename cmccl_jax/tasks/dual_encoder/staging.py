"""Staged training of the two towers: train, freeze, lock (LiT), unfreeze on a schedule.

Config (`config.staging`), per tower (`image`, `text`):
  <tower>:                 "train" | "freeze" | "lock"
  <tower>_train_from_step: with "train", the tower stays frozen before this step.
"freeze" never updates the tower; "lock" is LiT's locked tower (Zhai et al. 2022):
frozen *and* run in inference mode behind a stop-gradient, so no backward pass is
spent on it. Projection heads, temperature and bias always train: with a locked
tower the head is what adapts its features to the shared space.
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from cmccl_jax.errors import UserError

TOWERS = {"image": "image_tower", "text": "text_tower"}
MODES = ("train", "freeze", "lock")


def tower_train_from(staging, tower: str) -> int:
  """First step at which `tower` gets updates; -1 for never."""
  mode = staging[tower]
  if mode not in MODES:
    raise UserError(f"config.staging.{tower}={mode!r} is not one of {', '.join(map(repr, MODES))}.")
  if mode != "train":
    return -1
  start = int(staging[f"{tower}_train_from_step"])
  if start < 0:
    raise UserError(f"config.staging.{tower}_train_from_step={start} must be >= 0.")
  return start


def tower_trainable(step, staging, tower: str) -> jax.Array:
  """1.0 where `tower` is being updated at `step`, else 0.0 (logged to TensorBoard)."""
  start = tower_train_from(staging, tower)
  return jnp.asarray(start >= 0, jnp.float32) * (step >= start).astype(jnp.float32)


def _leaf_train_from(path, staging) -> int:
  names = [str(getattr(k, "key", k)) for k in path]
  for tower, module in TOWERS.items():
    if module in names:
      return tower_train_from(staging, tower)
  return 0


class FreezeState(NamedTuple):
  count: jax.Array


def freeze_until(staging) -> optax.GradientTransformation:
  """Zeroes the updates of every tower parameter before its tower's first training step.

  Placed both before clipping (frozen gradients must not inflate the global norm)
  and after AdamW (its weight decay would otherwise shrink a frozen tower).
  """
  def init(params):
    del params
    return FreezeState(count=jnp.zeros((), jnp.int32))

  def update(updates, state, params=None):
    del params
    def mask(path, u):
      start = _leaf_train_from(path, staging)
      if start == 0:
        return u
      on = (start > 0) & (state.count >= start)
      return jnp.where(on, u, jnp.zeros_like(u))
    return jax.tree_util.tree_map_with_path(mask, updates), FreezeState(count=state.count + 1)

  return optax.GradientTransformation(init, update)


def locked(staging, tower: str) -> bool:
  return staging[tower] == "lock"


def wrap(tx: optax.GradientTransformation, staging: Any) -> optax.GradientTransformation:
  """`tx` with the staging schedule applied; `tx` itself when both towers simply train."""
  if all(tower_train_from(staging, t) == 0 for t in TOWERS):
    return tx
  return optax.chain(freeze_until(staging), tx, freeze_until(staging))
