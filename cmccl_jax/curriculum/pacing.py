"""Pacing functions: the step counter → per-block visibility weights.

Plain `jnp` on the (traced) step, so they run inside the jitted step with static
shapes and never trigger a recompilation. Every pacing returns a float vector
[num_blocks] in [0, 1]; block b of difficulty (0 = easiest) is visible where its
weight is > 0. The train step turns the batch's `block` column into the loss
mask with `weights[block]`, and a host sampler can use the same vector.

Config (`config.curriculum`):
  pacing:            "none" | "phases" | "linear" | "root"
  num_blocks:        K, as built into the shards
  phase_steps:       "phases": lengths of phases 0..K-2; phase k shows blocks 0..k
                     (cumulative, so earlier blocks stay and are not forgotten);
                     after the last one every block is visible.
  competence_steps:  "linear"/"root": step T at which all data is visible.
  competence_init:   c0, the fraction visible at step 0.
"""

from collections.abc import Sequence

import jax.numpy as jnp

PACINGS = ("none", "phases", "linear", "root")


def cumulative_phase_weights(step, num_blocks: int, phase_steps: Sequence[int]):
  """Phase k = number of phase boundaries passed; blocks 0..k are visible."""
  if len(phase_steps) != num_blocks - 1:
    raise ValueError(
        f"curriculum.phase_steps={tuple(phase_steps)} must give the lengths of the first "
        f"{num_blocks - 1} phases (num_blocks - 1); the last phase, all blocks, runs to the end.")
  boundaries = jnp.cumsum(jnp.asarray(phase_steps, jnp.int32))
  phase = jnp.sum(step >= boundaries)
  return (jnp.arange(num_blocks) <= phase).astype(jnp.float32)


def linear_competence(step, total_steps: int, c0: float):
  """c(t) = min(1, c0 + (1 − c0) · t / T)  (Platanios et al. 2019)."""
  t = jnp.asarray(step, jnp.float32) / max(total_steps, 1)
  return jnp.minimum(1.0, c0 + (1.0 - c0) * t)


def root_competence(step, total_steps: int, c0: float):
  """c(t) = min(1, sqrt(c0² + (1 − c0²) · t / T))  (Platanios et al. 2019)."""
  t = jnp.asarray(step, jnp.float32) / max(total_steps, 1)
  return jnp.minimum(1.0, jnp.sqrt(c0**2 + (1.0 - c0**2) * t))


def competence_weights(competence, num_blocks: int):
  """Block b (covering difficulty quantiles [b/K, (b+1)/K)) is visible once b/K < c."""
  return (jnp.arange(num_blocks) / num_blocks < competence).astype(jnp.float32)


def block_weights(step, curriculum) -> "jnp.ndarray":
  """Per-block weights [K] at `step` for the pacing named in `curriculum.pacing`."""
  k = int(curriculum.num_blocks)
  pacing = curriculum.pacing
  if pacing == "none":
    return jnp.ones((k,), jnp.float32)
  if pacing == "phases":
    return cumulative_phase_weights(step, k, curriculum.phase_steps)
  if pacing == "linear":
    return competence_weights(linear_competence(step, curriculum.competence_steps, curriculum.competence_init), k)
  if pacing == "root":
    return competence_weights(root_competence(step, curriculum.competence_steps, curriculum.competence_init), k)
  raise ValueError(f"unknown curriculum.pacing {pacing!r}; choose one of {', '.join(PACINGS)}.")
