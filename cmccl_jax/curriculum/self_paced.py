"""Intra-modal curriculum: per-example loss weights from a running loss threshold, inside the jitted step.

One `Threshold` per loss (the contrastive task loss, each modality's distillation):
τ starts at the first batch's mean loss and then follows τ ← m·τ + (1 − m)·mean(ℓ),
updated *before* the weights of the step are computed (I2MCL, eq. 8). Examples with
ℓ ≤ τ are easy. The weights (`WEIGHTINGS`):

- "spl_linear" (default): self-paced linear weights on that threshold,
  w = clip(1 − ℓ / (s·τ), 0, 1), s = `spl_scale` (2: an example at twice the running
  mean loss gets no weight, one at the mean half);
- "spl_hard": hard self-paced weights, w = 1[ℓ ≤ s·τ];
- "superloss": SuperLoss (Castells et al. 2020), as I2MCL uses it:
  σ = exp(−W₀(½ · max((ℓ − τ)/β, −2/e))), σ ∈ (0, e], σ = 1 at ℓ = τ, and the loss
  (ℓ − τ)·σ + β·(log σ)². SuperLoss has a pending patent (US20220114444A1,
  EP3982299A1), so it is an explicit option and the self-paced weights, which are
  older than it and patent-free, are the default.

Weights and thresholds are constants for the gradient (stop-gradient): only ℓ is
differentiated, so the gradient is Σ wᵢ ∇ℓᵢ / n in every form.

Pure maths on arrays (W₀ written here: jax has no Lambert W; Halley iterations
from a branch-point series / asymptotic start).
"""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

WEIGHTINGS = ("none", "spl_linear", "spl_hard", "superloss")

_INV_E = math.exp(-1.0)
# 1/e split into a float32 head and the rest, so that x + 1/e is exact near the branch point (x + head is exact
# there by Sterbenz's lemma): W₀ has a square-root singularity at −1/e, and 2(e·x + 1) in float32 would cost
# 1e-4 of W's accuracy next to it.
_INV_E_HI = float(np.float32(_INV_E))
_INV_E_LO = _INV_E - _INV_E_HI
# Below this distance p = sqrt(2(e·x + 1)) from the branch point the series is already exact in float32
# (its first omitted term is 0.026 p^6 < 1e-7) and Halley's f = w·e^w − x would only add cancellation.
_SERIES_P = 0.06
_HALLEY_STEPS = 4


@jax.custom_jvp
def lambert_w0(x):
  """The principal branch W₀ of the Lambert W function (w·e^w = x) for x ≥ −1/e, elementwise.

  float32 exact to a few ulps over [−1/e, 1e3] (tests/test_self_paced.py against scipy);
  W₀(−1/e) = −1 exactly; x < −1/e is clamped to −1/e (W₀ is not real there).
  """
  x = jnp.maximum(jnp.asarray(x, jnp.float32), jnp.float32(-_INV_E))
  # x + 1/e; the barrier keeps XLA from folding the two constants back into one (x + float32(1/e)).
  distance = jax.lax.optimization_barrier(x + _INV_E_HI) + _INV_E_LO
  p = jnp.sqrt(jnp.maximum(2.0 * math.e * distance, 0.0))
  # W₀ near the branch point: −1 + p − p²/3 + 11/72 p³ − 43/540 p⁴ + 769/17280 p⁵ (Corless et al. 1996).
  series = -1.0 + p * (1.0 + p * (-1.0 / 3.0 + p * (11.0 / 72.0 + p * (-43.0 / 540.0 + p * 769.0 / 17280.0))))
  log1p = jnp.log1p(jnp.maximum(x, -0.3))
  # Winitzki's approximation in the middle, log x − log log x + log log x / log x for large x.
  middle = log1p * (1.0 - jnp.log1p(log1p) / (2.0 + log1p))
  big = jnp.log(jnp.maximum(x, 3.0))
  large = big - jnp.log(big) + jnp.log(big) / big
  w = jnp.where(x < -0.25, series, jnp.where(x < 3.0, middle, large))
  for _ in range(_HALLEY_STEPS):
    ew = jnp.exp(w)
    f = w * ew - x
    wp1 = w + 1.0
    safe = jnp.where(jnp.abs(wp1) < 1e-6, 1.0, wp1)
    step = f / (ew * safe - (w + 2.0) * f / (2.0 * safe))
    w = jnp.where(p < _SERIES_P, w, w - step)
  return jnp.where(p < _SERIES_P, series, w)


@lambert_w0.defjvp
def _lambert_w0_jvp(primals, tangents):
  (x,), (dx,) = primals, tangents
  w = lambert_w0(x)
  # W′(x) = W / (x (1 + W)) = 1 / (e^W (1 + W)); infinite at the branch point.
  return w, dx / (jnp.exp(w) * (1.0 + w))


def superloss_sigma(loss, tau, beta: float = 1.0):
  """σ = exp(−W₀(½ · max((ℓ − τ)/β, −2/e))) ∈ (0, e]: SuperLoss's closed-form confidence."""
  z = jnp.maximum((loss - tau) / beta, -2.0 * _INV_E)
  return jnp.exp(-lambert_w0(0.5 * z))


@dataclasses.dataclass(frozen=True)
class SelfPaced:
  """config.curriculum.dynamic's intra-modal weighting (see the module docstring)."""

  weighting: str = "spl_linear"
  momentum: float = 0.9
  spl_scale: float = 2.0
  superloss_beta: float = 1.0

  def __post_init__(self):
    if self.weighting not in WEIGHTINGS:
      raise ValueError(f"unknown weighting {self.weighting!r}; one of {WEIGHTINGS}")

  @staticmethod
  def init() -> dict:
    """A loss's threshold state: τ and how many times it was updated (0: τ takes the next batch's mean)."""
    return {"tau": jnp.zeros((), jnp.float32), "updates": jnp.zeros((), jnp.int32)}

  def update(self, state: dict, loss, valid, active=True) -> dict:
    """τ after a batch of per-example losses `loss` [B] (`valid` of them count); unchanged if not `active`."""
    loss = jax.lax.stop_gradient(loss)
    count = jnp.sum(valid)
    mean = jnp.sum(jnp.where(valid, loss, 0.0)) / jnp.maximum(count, 1)
    ema = jnp.where(state["updates"] > 0, self.momentum * state["tau"] + (1.0 - self.momentum) * mean, mean)
    active = jnp.logical_and(active, count > 0)
    return {"tau": jnp.where(active, ema, state["tau"]).astype(jnp.float32),
            "updates": state["updates"] + active.astype(jnp.int32)}

  def weights(self, loss, tau):
    """Per-example weights (constants for the gradient) of losses `loss` under threshold τ."""
    loss, tau = jax.lax.stop_gradient(loss), jax.lax.stop_gradient(tau)
    if self.weighting == "none":
      return jnp.ones_like(loss)
    if self.weighting == "superloss":
      return superloss_sigma(loss, tau, self.superloss_beta)
    limit = jnp.maximum(self.spl_scale * tau, 1e-12)
    if self.weighting == "spl_hard":
      return (loss <= limit).astype(jnp.float32)
    return jnp.clip(1.0 - loss / limit, 0.0, 1.0)

  def objective(self, loss, tau, weights):
    """The per-example objective whose gradient is wᵢ ∇ℓᵢ: SuperLoss's (ℓ − τ)σ + β(log σ)², else w·ℓ."""
    if self.weighting == "superloss":
      log_sigma = jnp.log(weights)
      return (loss - tau) * weights + self.superloss_beta * jnp.square(log_sigma)
    return weights * loss
