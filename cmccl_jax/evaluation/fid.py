"""Fréchet Inception Distance and Inception Score from Inception activations (host-side numpy/scipy).

The network lives in cmccl_jax.models.inception; this file holds only the maths on
its outputs: pool_3 features → (mu, sigma) → FID (Heusel et al. 2017), and the
1008-way logits → IS (Salimans et al. 2016), with the conventions of the reference
implementations (np.cov's ddof=1, IS splits as in the original code) so numbers are
comparable with papers. Statistics are saved as npz with the keys `mu` and `sigma`,
the layout pytorch-fid uses for its precomputed statistics.
"""

import os

import numpy as np
from scipy import special

from cmccl_jax.errors import UserError


def _features_2d(features, what: str) -> np.ndarray:
  features = np.asarray(features, np.float64)
  if features.ndim != 2:
    raise ValueError(f"{what} must be [num_samples, dim]; got shape {features.shape}.")
  if not np.isfinite(features).all():
    raise ValueError(f"{what} holds NaN or inf; check the images and the Inception weights.")
  return features


def activation_statistics(features) -> tuple[np.ndarray, np.ndarray]:
  """mu = mean_i x_i, sigma = sum_i (x_i - mu)(x_i - mu)^T / (n - 1) over rows of [n, d] features, in float64."""
  features = _features_2d(features, "features")
  if features.shape[0] < 2:
    raise ValueError(f"a covariance needs at least 2 samples; got {features.shape[0]}.")
  return features.mean(axis=0), np.atleast_2d(np.cov(features, rowvar=False))


class RunningStatistics:
  """activation_statistics over batches, without keeping the features: O(d²) memory however many samples.

  Batches are merged with Chan et al.'s pairwise update of the mean and the centred
  scatter matrix, which stays accurate when the mean is large next to the spread
  (a raw sum of outer products would cancel catastrophically there).
  """

  def __init__(self, dim: int):
    self.dim = int(dim)
    self.count = 0
    self.mean = np.zeros(self.dim, np.float64)
    self.scatter = np.zeros((self.dim, self.dim), np.float64)

  def update(self, features) -> None:
    """Adds a batch: n ← n + m, mean ← mean + δ m/n, S ← S + S_b + δδ^T n_old m/n with δ = mean_b - mean."""
    features = _features_2d(features, "a batch of features")
    if features.shape[1] != self.dim:
      raise ValueError(f"a batch of features has dim {features.shape[1]}; this RunningStatistics has dim {self.dim}.")
    m = features.shape[0]
    if m == 0:
      return
    batch_mean = features.mean(axis=0)
    centred = features - batch_mean
    delta = batch_mean - self.mean
    total = self.count + m
    self.scatter += centred.T @ centred + np.outer(delta, delta) * (self.count * m / total)
    self.mean += delta * (m / total)
    self.count = total

  def statistics(self) -> tuple[np.ndarray, np.ndarray]:
    """(mu, sigma) of everything added so far, equal to activation_statistics of the concatenated batches."""
    if self.count < 2:
      raise ValueError(f"a covariance needs at least 2 samples; {self.count} were added.")
    return self.mean.copy(), self.scatter / (self.count - 1)


def _psd_eigh(a) -> tuple[np.ndarray, np.ndarray]:
  """eigh of PSD `a`, eigenvalues under d·eps·max zeroed: they are eigh's round-off, and their roots would be ~1e-8."""
  w, v = np.linalg.eigh((a + a.T) / 2)
  return np.where(w > a.shape[0] * np.finfo(np.float64).eps * w.max(initial=0.0), w, 0.0), v


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
  """d² = |mu1-mu2|² + Tr S1 + Tr S2 - 2 Tr (√S1 S2 √S1)^½ by eigh, as that is symmetric PSD even for singular S."""
  mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
  sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
  d = mu1.shape[0]
  if mu1.shape != (d,) or mu2.shape != (d,) or sigma1.shape != (d, d) or sigma2.shape != (d, d):
    raise ValueError(f"FID needs two means of shape (d,) and two covariances of shape (d, d); got mu1 {mu1.shape}, "
                     f"sigma1 {sigma1.shape}, mu2 {mu2.shape}, sigma2 {sigma2.shape}.")
  diff = mu1 - mu2
  # S1 S2 = √S1 (√S1 S2) and (√S1 S2) √S1 have the same eigenvalues (AB and BA), so their roots' traces agree.
  w1, v1 = _psd_eigh(sigma1)
  sqrt_sigma1 = (v1 * np.sqrt(w1)) @ v1.T
  trace_covmean = np.sqrt(_psd_eigh(sqrt_sigma1 @ sigma2 @ sqrt_sigma1)[0]).sum()
  return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_covmean)


def inception_score(logits, splits: int = 10) -> tuple[float, float]:
  """IS = exp(E_x KL(p(y|x) || p(y))) per split, p(y|x) = softmax(logits), p(y) the split's mean; (mean, std).

  Split k holds rows [k n // splits, (k + 1) n // splits), the boundaries of the
  original Inception Score code, and std is over splits with ddof=0 as there.
  """
  logits = _features_2d(logits, "logits")
  n = logits.shape[0]
  if not 1 <= splits <= n:
    raise ValueError(f"inception_score needs 1 <= splits <= number of samples; got splits={splits} for {n} samples.")
  log_p = special.log_softmax(logits, axis=1)
  p = np.exp(log_p)
  scores = []
  for k in range(splits):
    part, log_part = p[k * n // splits:(k + 1) * n // splits], log_p[k * n // splits:(k + 1) * n // splits]
    marginal = part.mean(axis=0)
    # xlogy: a class no sample in the split can reach has p(y) = 0 and contributes 0, not 0 * log 0 = nan.
    kl = (part * log_part).sum(axis=1) - special.xlogy(part, marginal).sum(axis=1)
    scores.append(np.exp(kl.mean()))
  return float(np.mean(scores)), float(np.std(scores))


def save_statistics(path, mu, sigma) -> None:
  """Writes (mu, sigma) to an npz at exactly `path`, with pytorch-fid's keys `mu` and `sigma`."""
  path = os.path.expanduser(str(path))
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  # np.savez given a name appends ".npz"; given an open file it writes where it is told.
  with open(path, "wb") as f:
    np.savez(f, mu=np.asarray(mu, np.float64), sigma=np.asarray(sigma, np.float64))


def load_statistics(path) -> tuple[np.ndarray, np.ndarray]:
  """(mu, sigma) from an npz written by save_statistics or by pytorch-fid's --save-stats."""
  path = os.path.expanduser(str(path))
  if not os.path.isfile(path):
    raise UserError(f"Inception statistics file {path!r} does not exist; compute them from the real "
                            "images and write them with save_statistics.")
  with np.load(path) as f:
    missing = [k for k in ("mu", "sigma") if k not in f.files]
    if missing:
      raise UserError(f"{path} has arrays {sorted(f.files)} but no {missing}; it is not an Inception statistics file.")
    mu, sigma = f["mu"], f["sigma"]
  if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
    raise UserError(f"{path} holds mu of shape {mu.shape} and sigma of shape {sigma.shape}; sigma must be (d, d) "
                     "for mu of shape (d,).")
  return mu, sigma
