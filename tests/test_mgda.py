"""The inter-modal curriculum's α against a direct min-norm solve, and the tie rule."""

import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize

from cmccl_jax.curriculum import mgda


def _direct_min_norm(g_task, g_distill):
  """argmin over α in [0, 1] of ‖α g_m + (1 − α) g₀‖², by a bounded scalar solve."""
  f = lambda a: float(np.sum(np.square(a * g_distill + (1 - a) * g_task)))
  return scipy.optimize.minimize_scalar(f, bounds=(0.0, 1.0), method="bounded",
                                        options={"xatol": 1e-10}).x


def test_alpha_matches_the_direct_solve_on_random_gradients():
  rng = np.random.default_rng(0)
  interior = 0
  for _ in range(200):
    g0 = rng.normal(size=(8, 5)) * rng.uniform(0.1, 3)
    gm = rng.normal(size=(8, 5)) * rng.uniform(0.1, 3) + rng.uniform(-1, 1) * g0
    alpha = float(mgda.min_norm_alpha(jnp.float32(g0), jnp.float32(gm)))
    direct = _direct_min_norm(g0, gm)
    if 0.001 < direct < 0.999:
      interior += 1
      np.testing.assert_allclose(alpha, direct, atol=2e-5)
    else:  # the reference code's clamps stand in for 0 and 1
      assert alpha == pytest.approx(0.001 if direct < 0.5 else 0.999, abs=1e-7)
      assert abs(alpha - direct) <= 0.001 + 1e-5
  assert 50 < interior < 200  # both kinds were seen


def test_alpha_clamps():
  g0 = jnp.float32(np.random.default_rng(1).normal(size=(4, 3)))
  # g_m·g₀ ≥ g₀·g₀: the task gradient alone is the min-norm point -> α = 0.001.
  assert float(mgda.min_norm_alpha(g0, 2.0 * g0)) == pytest.approx(0.001)
  # g_m·g₀ ≥ g_m·g_m: the distillation gradient alone is -> α = 0.999.
  assert float(mgda.min_norm_alpha(g0, 0.5 * g0)) == pytest.approx(0.999)
  # Equal gradients: the first clamp.
  assert float(mgda.min_norm_alpha(g0, g0)) == pytest.approx(0.001)
  # Opposite, equal norms: the midpoint.
  assert float(mgda.min_norm_alpha(g0, -g0)) == pytest.approx(0.5)


def test_task_learner_is_the_argmax_and_ties_go_to_the_first_modality():
  assert int(mgda.task_learner(jnp.float32([0.2, 0.7, 0.5]))) == 1
  assert int(mgda.task_learner(jnp.float32([0.6, 0.6, 0.1]))) == 0
  assert int(mgda.task_learner(jnp.float32([0.1, 0.6, 0.6]))) == 1
