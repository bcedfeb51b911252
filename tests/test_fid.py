"""FID and IS maths against closed forms, and the streaming and saved statistics against the batch ones."""

import numpy as np
import pytest

from cmccl_jax.evaluation import fid
from cmccl_jax.errors import UserError


def _random_covariance(rng, d):
  a = rng.normal(size=(d, d))
  return a @ a.T / d + 0.1 * np.eye(d)


def test_frechet_distance_of_1d_gaussians():
  # W2² of N(m1, s1²) and N(m2, s2²) is (m1 - m2)² + (s1 - s2)².
  m1, s1, m2, s2 = 0.3, 2.0, -1.2, 0.5
  got = fid.frechet_distance([m1], [[s1**2]], [m2], [[s2**2]])
  np.testing.assert_allclose(got, (m1 - m2)**2 + (s1 - s2)**2, rtol=1e-12)


def test_frechet_distance_of_commuting_covariances():
  # Covariances sharing eigenvectors Q: sqrt(S1 S2) = Q sqrt(L1 L2) Q^T, so the trace term is
  # sum_i (sqrt(l1_i) - sqrt(l2_i))², whatever the rotation.
  rng = np.random.default_rng(0)
  d = 6
  q, _ = np.linalg.qr(rng.normal(size=(d, d)))
  l1, l2 = rng.uniform(0.1, 3.0, d), rng.uniform(0.1, 3.0, d)
  mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
  got = fid.frechet_distance(mu1, q @ np.diag(l1) @ q.T, mu2, q @ np.diag(l2) @ q.T)
  want = np.sum((mu1 - mu2)**2) + np.sum((np.sqrt(l1) - np.sqrt(l2))**2)
  np.testing.assert_allclose(got, want, rtol=1e-9)


def test_frechet_distance_zero_for_identical_and_symmetric():
  rng = np.random.default_rng(1)
  mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
  s1, s2 = _random_covariance(rng, 5), _random_covariance(rng, 5)
  assert abs(fid.frechet_distance(mu1, s1, mu1, s1)) < 1e-9
  d12, d21 = fid.frechet_distance(mu1, s1, mu2, s2), fid.frechet_distance(mu2, s2, mu1, s1)
  assert d12 > 0.1
  np.testing.assert_allclose(d12, d21, rtol=1e-9)


def test_frechet_distance_of_singular_covariances():
  # Rank-1 covariances in 3-D: S1 = a² u u^T, S2 = b² w w^T with unit u, w. S1 S2 = a² b² (u.w) u w^T has the one
  # nonzero eigenvalue a² b² (u.w)², so Tr sqrt(S1 S2) = a b |u.w| and d² = a² + b² - 2 a b |u.w|.
  u = np.array([1.0, 2.0, 2.0]) / 3.0
  # Same direction (where scipy 1.17's sqrtm returns an imaginary part of ~1e8): the 1-D answer (a - b)².
  got = fid.frechet_distance(np.zeros(3), 4.0 * np.outer(u, u), np.zeros(3), 1.0 * np.outer(u, u))
  np.testing.assert_allclose(got, (2.0 - 1.0)**2, rtol=1e-12)
  # Different directions, u.w = 2/3: d² = 4 + 1 - 2 * 2 * 1 * 2/3 = 7/3.
  w = np.array([0.0, 0.0, 1.0])
  got = fid.frechet_distance(np.zeros(3), 4.0 * np.outer(u, u), np.zeros(3), 1.0 * np.outer(w, w))
  np.testing.assert_allclose(got, 7.0 / 3.0, rtol=1e-12)


def test_frechet_distance_matches_scipy_sqrtm_on_well_conditioned_covariances():
  # 200 samples in 16-D: full-rank covariances, where the textbook Tr sqrtm(S1 S2) is accurate.
  from scipy import linalg
  rng = np.random.default_rng(7)
  x1 = rng.normal(size=(200, 16)) @ rng.normal(size=(16, 16))
  x2 = rng.normal(size=(200, 16)) @ rng.normal(size=(16, 16)) + 0.5
  (mu1, s1), (mu2, s2) = fid.activation_statistics(x1), fid.activation_statistics(x2)
  want = np.sum((mu1 - mu2)**2) + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(linalg.sqrtm(s1 @ s2)).real
  np.testing.assert_allclose(fid.frechet_distance(mu1, s1, mu2, s2), want, rtol=1e-8)


def test_frechet_distance_of_rank_deficient_covariances_matches_singular_values():
  # 10 samples in 64-D: rank-9 covariances S = A A^T, A the centred samples^T / sqrt(n - 1). S1 S2 = A1 (A1^T A2 A2^T)
  # has the nonzero eigenvalues of (A1^T A2)(A1^T A2)^T, so Tr sqrt(S1 S2) is the sum of the singular values of
  # A1^T A2, and Tr S = ||A||_F²: an exact formula that needs no square root of a singular matrix.
  rng = np.random.default_rng(8)
  x1, x2 = rng.normal(size=(10, 64)), 2.0 * rng.normal(size=(10, 64)) + 0.3
  (mu1, s1), (mu2, s2) = fid.activation_statistics(x1), fid.activation_statistics(x2)
  a1, a2 = (x1 - mu1).T / np.sqrt(9), (x2 - mu2).T / np.sqrt(9)
  want = (np.sum((mu1 - mu2)**2) + np.sum(a1**2) + np.sum(a2**2)
          - 2.0 * np.linalg.svd(a1.T @ a2, compute_uv=False).sum())
  got = fid.frechet_distance(mu1, s1, mu2, s2)
  assert isinstance(got, float) and np.isfinite(got) and got >= 0.0
  np.testing.assert_allclose(got, want, rtol=1e-12)
  np.testing.assert_allclose(fid.frechet_distance(mu2, s2, mu1, s1), want, rtol=1e-12)
  assert abs(fid.frechet_distance(mu1, s1, mu1, s1)) < 1e-12 * np.trace(s1)


def test_frechet_distance_rejects_mismatched_shapes():
  with pytest.raises(ValueError, match=r"sigma2 \(3, 3\)"):
    fid.frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), np.eye(3))


def test_activation_statistics_match_numpy():
  x = np.random.default_rng(2).normal(size=(50, 4)) * [1.0, 2.0, 0.5, 3.0] + [1.0, -1.0, 0.0, 5.0]
  mu, sigma = fid.activation_statistics(x)
  np.testing.assert_allclose(mu, x.sum(0) / 50, rtol=1e-12)
  centred = x - x.sum(0) / 50
  np.testing.assert_allclose(sigma, centred.T @ centred / 49, rtol=1e-12)  # ddof=1, as np.cov and pytorch-fid
  with pytest.raises(ValueError, match="at least 2 samples; got 1"):
    fid.activation_statistics(x[:1])


def test_running_statistics_equal_batch_statistics():
  rng = np.random.default_rng(3)
  # A mean far from zero: a raw sum of outer products would lose digits here; the merge must not.
  x = rng.normal(size=(103, 7)) + 1e4
  running = fid.RunningStatistics(7)
  for chunk in np.split(x, [1, 20, 20, 64]):  # uneven batches, one empty
    running.update(chunk.astype(np.float64))
  mu, sigma = running.statistics()
  mu_ref, sigma_ref = fid.activation_statistics(x)
  np.testing.assert_allclose(mu, mu_ref, rtol=1e-12)
  np.testing.assert_allclose(sigma, sigma_ref, rtol=1e-8, atol=1e-10)
  assert running.count == 103


def test_running_statistics_errors():
  running = fid.RunningStatistics(3)
  with pytest.raises(ValueError, match="has dim 4; this RunningStatistics has dim 3"):
    running.update(np.zeros((2, 4)))
  running.update(np.zeros((1, 3)))
  with pytest.raises(ValueError, match="1 were added"):
    running.statistics()


def _one_hot_logits(labels, num_classes):
  # exp(-1e4) underflows to exactly 0 in float64, so the softmax is exactly one-hot.
  logits = np.zeros((len(labels), num_classes))
  logits[np.arange(len(labels)), labels] = 1e4
  return logits


def test_inception_score_identical_predictions_is_one():
  logits = np.tile(np.random.default_rng(4).normal(size=(1, 1008)), (20, 1))
  mean, std = fid.inception_score(logits, splits=2)
  np.testing.assert_allclose([mean, std], [1.0, 0.0], atol=1e-9)


def test_inception_score_uniform_one_hot_is_number_of_classes():
  mean, std = fid.inception_score(_one_hot_logits(np.arange(40) % 8, 1008), splits=5)  # each split: 8 classes once
  np.testing.assert_allclose([mean, std], [8.0, 0.0], rtol=1e-12)


def test_inception_score_two_class_closed_form():
  # Rows (a, 1 - a) and (1 - a, a): p(y) is uniform, so IS = exp(log 2 + a log a + (1 - a) log(1 - a)).
  a = 0.8
  logits = np.log([[a, 1 - a], [1 - a, a]])
  mean, _ = fid.inception_score(logits, splits=1)
  np.testing.assert_allclose(mean, 2.0 * a**a * (1 - a)**(1 - a), rtol=1e-12)


def test_inception_score_splits_follow_the_original_boundaries():
  # 10 rows in 3 splits: rows [0, 3), [3, 6), [6, 10). Split scores 1, 3 and 4.
  labels = np.array([5, 5, 5, 0, 1, 2, 0, 1, 2, 3])
  mean, std = fid.inception_score(_one_hot_logits(labels, 6), splits=3)
  np.testing.assert_allclose(mean, (1 + 3 + 4) / 3, rtol=1e-12)
  np.testing.assert_allclose(std, np.std([1.0, 3.0, 4.0]), rtol=1e-12)  # ddof=0, as the original code
  with pytest.raises(ValueError, match="splits=11 for 10 samples"):
    fid.inception_score(_one_hot_logits(labels, 6), splits=11)


def test_statistics_round_trip_and_errors(tmp_path):
  rng = np.random.default_rng(5)
  mu, sigma = rng.normal(size=4), _random_covariance(rng, 4)
  path = tmp_path / "stats" / "real.npz"
  fid.save_statistics(path, mu, sigma)
  loaded_mu, loaded_sigma = fid.load_statistics(path)
  np.testing.assert_array_equal(loaded_mu, mu)
  np.testing.assert_array_equal(loaded_sigma, sigma)
  with pytest.raises(UserError, match="missing.npz"):
    fid.load_statistics(tmp_path / "missing.npz")
  np.savez(tmp_path / "other.npz", mean=mu)
  with pytest.raises(ValueError, match=r"no \['mu', 'sigma'\]"):
    fid.load_statistics(tmp_path / "other.npz")
