import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from cmccl_jax.curriculum import pacing


def _cfg(**kw):
  base = dict(num_blocks=4, pacing="none", phase_steps=(10, 20, 30), competence_steps=100, competence_init=0.25)
  base.update(kw)
  return ml_collections.ConfigDict(base)


def _visible(step, cfg):
  return int(np.sum(np.asarray(pacing.block_weights(jnp.int32(step), cfg)) > 0))


def test_phases_switch_at_cumulative_boundaries():
  cfg = _cfg(pacing="phases")
  assert [_visible(s, cfg) for s in (0, 9, 10, 29, 30, 59, 60, 10_000)] == [1, 1, 2, 2, 3, 3, 4, 4]


def test_phases_are_cumulative_easy_blocks_stay():
  w = np.asarray(pacing.block_weights(jnp.int32(35), _cfg(pacing="phases")))
  np.testing.assert_array_equal(w, [1, 1, 1, 0])


@pytest.mark.parametrize("kind", ["linear", "root"])
def test_competence_monotone_and_reaches_full_data(kind):
  cfg = _cfg(pacing=kind)
  fn = pacing.linear_competence if kind == "linear" else pacing.root_competence
  c = np.asarray([fn(s, 100, 0.25) for s in range(0, 150)])
  assert np.all(np.diff(c) >= 0)
  np.testing.assert_allclose(c[0], 0.25, rtol=1e-6)
  assert c[99] < 1.0 and c[100] == 1.0
  assert _visible(0, cfg) == 1 and _visible(100, cfg) == 4


def test_root_is_ahead_of_linear():
  assert float(pacing.root_competence(30, 100, 0.1)) > float(pacing.linear_competence(30, 100, 0.1))


def test_linear_block_thresholds():
  # c = 0.25 + 0.75 t/100 passes b/K = 0.5 at t = 33.3 and 0.75 at t = 66.7.
  cfg = _cfg(pacing="linear")
  assert [_visible(s, cfg) for s in (0, 1, 33, 34, 66, 67)] == [1, 2, 2, 3, 3, 4]


def test_none_shows_everything_and_jits_without_retracing():
  f = jax.jit(lambda s: pacing.block_weights(s, _cfg(pacing="root")))
  for s in range(0, 200, 7):
    f(jnp.int32(s))
  assert f._cache_size() == 1
  np.testing.assert_array_equal(pacing.block_weights(0, _cfg()), np.ones(4))


def test_bad_phase_list_names_the_value():
  with pytest.raises(ValueError, match=r"\(10, 20\)"):
    pacing.block_weights(0, _cfg(pacing="phases", phase_steps=(10, 20)))
