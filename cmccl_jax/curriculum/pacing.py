"""Pacing functions: the step counter → per-block visibility weights.

Pure functions of the step, written once against an array module `xp`: `jnp`
inside the jitted step (the device mask; the step is traced, so phases never
trigger a recompilation) and `np` on the host (the sampler's per-block weights).
`curriculum` is a `curriculum.Curriculum` (or config.curriculum: the same fields).
Every pacing returns a float vector [num_blocks] in [0, 1]; block b of difficulty
(0 = easiest) is visible where its weight is > 0. The train step turns the batch's
`block` column into the loss mask and example weights with `weights[block]`.

A pacing schedules curriculum *positions* 0..K-1 (position 0 is shown first);
`order` says which block sits at which position, so the same schedule gives the
curriculum, the anti-curriculum and a random-order control.

Config (`config.curriculum`):
  pacing:            "none" | "phases" | "disjoint_phases" | "linear" | "root" | "geometric"
  num_blocks:        K quantile blocks of the training scores, computed when a run starts
  phase_steps:       "phases": lengths of phases 0..K-2; phase k shows positions 0..k
                     (cumulative, so earlier blocks stay and are not forgotten); after
                     the last one every block is visible.
                     "disjoint_phases": phase k shows position k only, and the last
                     position runs to the end (Ayyubi et al. 2023's noun-count phases).
  competence_steps:  competence pacings: step T at which all data is visible.
  competence_init:   c0, the fraction of the data visible at step 0.
  soft:              competence pacings: a block's weight is the fraction of its
                     quantile range the competence covers, clip(c·K − position, 0, 1),
                     instead of 1 as soon as any of it is covered.
  order:             "easy_first" (curriculum) | "hard_first" (anti-curriculum) |
                     "random" (a fixed random block order: the control)
  order_seed:        the seed of the "random" order.
"""

from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np

from cmccl_jax.errors import UserError

PACINGS = ("none", "phases", "disjoint_phases", "linear", "root", "geometric")
COMPETENCE_PACINGS = ("linear", "root", "geometric")
PHASE_PACINGS = ("phases", "disjoint_phases")
ORDERS = ("easy_first", "hard_first", "random")


def _check_phase_steps(num_blocks: int, phase_steps: Sequence[int]) -> None:
  if len(phase_steps) != num_blocks - 1:
    raise UserError(
        f"curriculum.phase_steps={tuple(phase_steps)} must give the lengths of the first "
        f"{num_blocks - 1} phases (num_blocks - 1); the last phase runs to the end.")


def phase_index(step, phase_steps: Sequence[int], xp=jnp):
  """The phase at `step`: the number of phase boundaries (cumulative lengths) passed."""
  boundaries = np.cumsum(np.asarray(phase_steps, np.int64))
  return xp.sum(xp.asarray(step) >= xp.asarray(boundaries))


def cumulative_phase_weights(step, num_blocks: int, phase_steps: Sequence[int], xp=jnp):
  """Phase k shows positions 0..k."""
  _check_phase_steps(num_blocks, phase_steps)
  return (xp.arange(num_blocks) <= phase_index(step, phase_steps, xp)).astype(xp.float32)


def disjoint_phase_weights(step, num_blocks: int, phase_steps: Sequence[int], xp=jnp):
  """Phase k shows position k only."""
  _check_phase_steps(num_blocks, phase_steps)
  return (xp.arange(num_blocks) == phase_index(step, phase_steps, xp)).astype(xp.float32)


def _progress(step, total_steps: int, xp):
  return xp.clip(xp.asarray(step, xp.float32) / max(int(total_steps), 1), 0.0, 1.0)


def linear_competence(step, total_steps: int, c0: float, xp=jnp):
  """c(t) = min(1, c0 + (1 − c0) · t / T)  (Platanios et al. 2019)."""
  return xp.minimum(1.0, c0 + (1.0 - c0) * _progress(step, total_steps, xp))


def root_competence(step, total_steps: int, c0: float, xp=jnp):
  """c(t) = min(1, sqrt(c0² + (1 − c0²) · t / T))  (Platanios et al. 2019)."""
  return xp.minimum(1.0, xp.sqrt(c0**2 + (1.0 - c0**2) * _progress(step, total_steps, xp)))


def geometric_competence(step, total_steps: int, c0: float, xp=jnp):
  """c(t) = min(1, c0 · (1/c0)^(t/T)): the visible data grows by a constant factor per step
  (the continuous form of Hacohen & Weinshall 2019's exponential pacing)."""
  return xp.minimum(1.0, c0 ** (1.0 - _progress(step, total_steps, xp)))


COMPETENCES = {"linear": linear_competence, "root": root_competence, "geometric": geometric_competence}


def competence_weights(competence, num_blocks: int, soft: bool = False, xp=jnp):
  """Position p (covering difficulty quantiles [p/K, (p+1)/K)) at competence c.

  Hard: 1 once p/K < c. Soft: the covered fraction of its range, clip(c·K − p, 0, 1).
  """
  positions = xp.arange(num_blocks, dtype=xp.float32)
  if soft:
    return xp.clip(competence * num_blocks - positions, 0.0, 1.0).astype(xp.float32)
  return (positions / num_blocks < competence).astype(xp.float32)


def block_positions(num_blocks: int, order: str, seed: int = 0) -> np.ndarray:
  """int [K]: the curriculum position of each block (0 = shown first)."""
  if order == "easy_first":
    return np.arange(num_blocks)
  if order == "hard_first":
    return np.arange(num_blocks)[::-1].copy()
  if order == "random":
    return np.random.default_rng(seed).permutation(num_blocks)
  raise UserError(f"config.curriculum.order={order!r} is not one of {', '.join(map(repr, ORDERS))}.")


def position_weights(step, curriculum, xp=jnp):
  """Weights [K] of the curriculum positions at `step` for `curriculum.pacing`."""
  k = int(curriculum.num_blocks)
  kind = curriculum.pacing
  if kind == "none":
    return xp.ones((k,), xp.float32)
  if kind == "phases":
    return cumulative_phase_weights(step, k, curriculum.phase_steps, xp)
  if kind == "disjoint_phases":
    return disjoint_phase_weights(step, k, curriculum.phase_steps, xp)
  if kind in COMPETENCES:
    c = COMPETENCES[kind](step, int(curriculum.competence_steps), float(curriculum.competence_init), xp)
    return competence_weights(c, k, bool(getattr(curriculum, "soft", False)), xp)
  raise UserError(f"unknown curriculum.pacing {kind!r}; choose one of {', '.join(PACINGS)}.")


def block_weights(step, curriculum, xp=jnp):
  """Per-block weights [K] at `step`: the pacing's position weights, in `curriculum.order`."""
  positions = block_positions(int(curriculum.num_blocks), getattr(curriculum, "order", "easy_first"),
                              int(getattr(curriculum, "order_seed", 0)))
  return position_weights(step, curriculum, xp)[xp.asarray(positions)]
