"""The intra-modal curriculum's maths: Lambert W₀ against scipy, the weights, the thresholds."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special

from cmccl_jax.curriculum import self_paced
from cmccl_jax.curriculum.self_paced import SelfPaced, lambert_w0, superloss_sigma


def _scipy_w0(x):
  x = np.asarray(x, np.float64)
  return np.where(x <= -1 / math.e, -1.0, scipy.special.lambertw(np.maximum(x, -1 / math.e)).real)


def test_lambert_w0_matches_scipy_over_the_range_in_float32():
  branch = np.float32(-1 / math.e)
  x = np.concatenate([
      branch + np.arange(20000, dtype=np.float32) * np.float32(3e-8),   # the square-root singularity
      np.linspace(-1 / math.e, 0.0, 50001, dtype=np.float32),
      np.geomspace(1e-8, 1e3, 50001).astype(np.float32),
      -np.geomspace(1e-8, 0.3678, 5001).astype(np.float32),
      np.float32([0.0, 1e3]),
  ])
  w = np.asarray(jax.jit(lambert_w0)(x), np.float64)
  ref = _scipy_w0(x)
  rel = np.abs(w - ref) / np.maximum(np.abs(ref), 1e-30)
  assert rel.max() < 1e-6, (rel.max(), x[np.argmax(rel)])
  assert float(lambert_w0(jnp.float32(-1 / math.e))) == -1.0  # exact at the branch point
  assert float(lambert_w0(jnp.float32(-1.0))) == -1.0  # below it: clamped
  np.testing.assert_allclose(float(lambert_w0(jnp.float32(math.e))), 1.0, rtol=1e-7)


def test_lambert_w0_gradient():
  x = jnp.float32([-0.3, 0.5, 2.0, 100.0])
  w = _scipy_w0(np.asarray(x))
  np.testing.assert_allclose(jax.vmap(jax.grad(lambert_w0))(x), w / (np.asarray(x) * (1 + w)), rtol=1e-5)


@pytest.mark.parametrize("scaled,sigma", [(-2 / math.e, math.e), (-0.5, 1.430), (0.0, 1.0), (1.0, 0.704),
                                          (5.0, 0.383), (-3.0, math.e)])
def test_superloss_sigma_at_the_reference_points(scaled, sigma):
  # β′ = (ℓ − τ)/β; ALGORITHMS.md's values, from scipy.
  np.testing.assert_allclose(float(superloss_sigma(jnp.float32(scaled), 0.0, 1.0)), sigma, atol=6e-4)
  np.testing.assert_allclose(float(superloss_sigma(jnp.float32(2 * scaled + 1.0), 1.0, 2.0)), sigma, atol=6e-4)


def test_threshold_starts_at_the_first_mean_and_then_moves_by_ema():
  sp = SelfPaced("spl_linear", momentum=0.9)
  valid = jnp.array([True, True, False])
  state = sp.update(SelfPaced.init(), jnp.array([1.0, 3.0, 100.0]), valid)
  assert float(state["tau"]) == 2.0 and int(state["updates"]) == 1
  state = sp.update(state, jnp.array([4.0, 4.0, 0.0]), valid)
  np.testing.assert_allclose(float(state["tau"]), 0.9 * 2.0 + 0.1 * 4.0, rtol=1e-6)
  same = sp.update(state, jnp.array([9.0, 9.0, 9.0]), valid, active=False)
  assert float(same["tau"]) == float(state["tau"]) and int(same["updates"]) == 2
  empty = sp.update(state, jnp.array([9.0, 9.0, 9.0]), jnp.zeros(3, bool))
  assert float(empty["tau"]) == float(state["tau"])


@pytest.mark.parametrize("weighting", ["spl_linear", "spl_hard", "superloss"])
def test_weights_fall_with_the_loss_and_the_gradient_is_weight_times_loss_gradient(weighting):
  sp = SelfPaced(weighting, spl_scale=2.0, superloss_beta=1.0)
  loss = jnp.linspace(0.0, 6.0, 25)
  tau = jnp.float32(1.5)
  w = np.asarray(sp.weights(loss, tau))
  assert np.all(np.diff(w) <= 1e-7) and np.all(w >= 0)
  if weighting == "spl_linear":
    np.testing.assert_allclose(w, np.clip(1 - np.asarray(loss) / 3.0, 0, 1), rtol=1e-6)
  if weighting == "spl_hard":
    np.testing.assert_array_equal(w, (np.asarray(loss) <= 3.0).astype(np.float32))
  if weighting == "superloss":
    assert w.max() <= math.e + 1e-6
    np.testing.assert_allclose(float(sp.weights(tau, tau)), 1.0)
  # ℓ as a function of parameters θ: the objective's gradient is Σ w_i ∂ℓ_i/∂θ.
  theta = jnp.float32([0.3, -1.2, 2.0])
  x = jnp.asarray(np.random.default_rng(0).normal(size=(25, 3)), jnp.float32)
  per = lambda t: jnp.square(x @ t)
  def objective(t):
    ell = per(t)
    return jnp.sum(sp.objective(ell, tau, sp.weights(ell, tau)))
  weights = sp.weights(per(theta), tau)
  expected = jax.grad(lambda t: jnp.sum(weights * per(t)))(theta)
  np.testing.assert_allclose(jax.grad(objective)(theta), expected, rtol=1e-5, atol=1e-6)


def test_unknown_weighting():
  with pytest.raises(ValueError, match="unknown weighting"):
    SelfPaced("focal")
  assert "superloss" in self_paced.WEIGHTINGS
