"""The ablation's statistics on cases with a known answer."""

import math

import numpy as np
import pytest

from cmccl_jax.experiments import statistics


def test_the_t_interval_of_one_to_five():
  mean, low, high = statistics.mean_ci([1, 2, 3, 4, 5])
  half = 2.7764451051977987 * math.sqrt(2.5) / math.sqrt(5)  # t(0.975, 4) × s / √n
  assert mean == 3 and low == pytest.approx(3 - half) and high == pytest.approx(3 + half)
  assert all(math.isnan(v) for v in statistics.mean_ci([4.0])[1:])


def test_the_paired_t_test_against_its_formula():
  variant, baseline = [5.0, 6.0, 7.5, 6.5, 8.0], [4.0, 5.5, 6.0, 6.5, 6.0]
  d = np.subtract(variant, baseline)
  t = d.mean() / (d.std(ddof=1) / math.sqrt(d.size))
  result = statistics.paired_t(variant, baseline)
  assert result["mean"] == pytest.approx(d.mean())
  # Two-sided p of t with 4 degrees of freedom, from the t distribution's closed-form CDF for 4 df.
  a = 1 + t * t / 4
  cdf = 0.5 + 3 / 8 * (abs(t) / math.sqrt(a)) * (1 - t * t / (12 * a))
  p = 2 * (1 - cdf)
  assert result["p"] == pytest.approx(p, rel=1e-6)
  assert result["low"] < d.mean() < result["high"]
  assert statistics.paired_t([1, 2], [1, 2])["p"] == 1.0


def test_the_bootstrap_interval_of_a_bernoulli_difference_has_the_binomial_width():
  rng = np.random.default_rng(0)
  q = 4000
  variant = [(rng.random(q) < 0.3).astype(float)]  # one seed: only the queries vary
  baseline = [np.zeros(q)]
  low, high = statistics.paired_bootstrap(variant, baseline, replicates=2000)
  p = variant[0].mean()
  half = 1.959964 * math.sqrt(p * (1 - p) / q)
  assert low == pytest.approx(p - half, abs=0.15 * half) and high == pytest.approx(p + half, abs=0.15 * half)


def test_the_bootstrap_is_paired_and_sees_the_seed_spread():
  same = [np.arange(50.0) % 2 for _ in range(3)]
  assert statistics.paired_bootstrap(same, same, replicates=200) == (0.0, 0.0)  # identical runs: no difference
  # Seeds that disagree widen the interval though every seed's queries agree exactly.
  variant = [np.full(50, 1.0), np.full(50, 3.0), np.full(50, 2.0)]
  low, high = statistics.paired_bootstrap(variant, [np.zeros(50)] * 3, replicates=500)
  assert 1.0 <= low < 2.0 < high <= 3.0
  with pytest.raises(ValueError, match="same seeds and queries"):
    statistics.paired_bootstrap([np.zeros(3)], [np.zeros(4)])


def test_steps_to_target_interpolates_the_first_crossing():
  history = {200: 10.0, 400: 20.0, 600: 40.0, 800: 30.0}
  assert statistics.steps_to_target(history, 30.0) == pytest.approx(500.0)
  assert statistics.steps_to_target(history, 5.0) == 200.0
  assert statistics.steps_to_target(history, 41.0) is None
