"""Inter-modal curriculum: MGDA-UB between a modality's task and distillation gradients (I2MCL, eq. 14-17).

For modality m, g₀ = ∂L_task/∂Z_m and g_m = ∂L_distill,m/∂Z_m are gradients with
respect to its representation Z_m (MGDA-UB's shortcut: the representation, not
the encoder's weights, so no backward pass through the encoder is needed). The
min-norm point of the segment between them, min_α ‖α g_m + (1 − α) g₀‖², is

  α_m = 0.001                                  if g_m·g₀ ≥ g₀·g₀,
        0.999                                  if g_m·g₀ ≥ g_m·g_m,
        (g₀·g₀ − g_m·g₀) / max(‖g₀ − g_m‖², 1e-8)   otherwise,

clamped to (0, 1) as the reference code does (the paper writes 0 and 1). A large
α means the task gradient dominates the distillation one: learning from the task
comes easier to that modality. The modality with the largest α learns from the
task and every other one from its teacher; ties go to the modality listed first
(the order of config.curriculum.dynamic's modalities: image, then text).

Pure maths on arrays.
"""

import jax
import jax.numpy as jnp

ALPHA_MIN = 0.001
ALPHA_MAX = 0.999


def _dot(a, b):
  return jnp.sum(a.astype(jnp.float32) * b.astype(jnp.float32))


def min_norm_alpha(g_task, g_distill):
  """α of the two-gradient min-norm problem (the module docstring); any shapes, flattened."""
  tt = _dot(g_task, g_task)
  dd = _dot(g_distill, g_distill)
  dt = _dot(g_distill, g_task)
  diff = g_task.astype(jnp.float32) - g_distill.astype(jnp.float32)
  inner = (tt - dt) / jnp.maximum(jnp.sum(diff * diff), 1e-8)
  return jnp.where(dt >= tt, ALPHA_MIN, jnp.where(dt >= dd, ALPHA_MAX, inner)).astype(jnp.float32)


def task_learner(alphas):
  """Index of the modality that learns from the task: argmax of α [M], the first one on ties."""
  return jnp.argmax(jax.lax.stop_gradient(alphas)).astype(jnp.int32)
