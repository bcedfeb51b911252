import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from cmccl_jax.curriculum import pacing
from cmccl_jax.curriculum.curriculum import Curriculum


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


def test_disjoint_phases_show_one_block_at_a_time():
  cfg = _cfg(pacing="disjoint_phases")
  rows = [np.asarray(pacing.block_weights(jnp.int32(s), cfg)).tolist() for s in (0, 9, 10, 30, 59, 60, 10_000)]
  assert rows == [[1, 0, 0, 0], [1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 0], [0, 0, 0, 1], [0, 0, 0, 1]]


def test_geometric_competence_grows_by_a_constant_factor():
  c = np.asarray([pacing.geometric_competence(s, 100, 0.25) for s in (0, 25, 50, 75, 100, 150)])
  np.testing.assert_allclose(c, [0.25, 0.25**0.75, 0.5, 0.25**0.25, 1.0, 1.0], rtol=1e-6)
  ratios = c[1:4] / c[:3]
  np.testing.assert_allclose(ratios, ratios[0], rtol=1e-6)
  # Slowest start of the three: geometric < linear < root before T.
  for s in (10, 50, 90):
    assert (float(pacing.geometric_competence(s, 100, 0.25)) < float(pacing.linear_competence(s, 100, 0.25))
            < float(pacing.root_competence(s, 100, 0.25)))


@pytest.mark.parametrize("kind", ["linear", "root", "geometric"])
def test_soft_weights_fade_blocks_in_and_match_hard_visibility(kind):
  soft, hard = _cfg(pacing=kind, soft=True), _cfg(pacing=kind)
  previous = np.zeros(4)
  for s in range(0, 130):
    w = np.asarray(pacing.block_weights(jnp.int32(s), soft))
    assert np.all((w > 0) == (np.asarray(pacing.block_weights(jnp.int32(s), hard)) > 0))
    assert np.all(w >= previous - 1e-7) and np.all(np.diff(w) <= 1e-7)  # monotone in step, easy blocks first
    previous = w
  np.testing.assert_array_equal(previous, np.ones(4))


def test_soft_weight_is_the_covered_fraction_of_the_block():
  # linear at t=50: c = 0.25 + 0.75·0.5 = 0.625, c·K = 2.5 → blocks 0, 1 full, block 2 half, block 3 none.
  w = np.asarray(pacing.block_weights(jnp.int32(50), _cfg(pacing="linear", soft=True)))
  np.testing.assert_allclose(w, [1, 1, 0.5, 0], atol=1e-6)


def test_hard_first_reverses_and_random_permutes_the_blocks():
  easy = np.asarray(pacing.block_weights(jnp.int32(35), _cfg(pacing="phases")))
  hard = np.asarray(pacing.block_weights(jnp.int32(35), _cfg(pacing="phases", order="hard_first")))
  np.testing.assert_array_equal(easy, [1, 1, 1, 0])
  np.testing.assert_array_equal(hard, [0, 1, 1, 1])
  perm = pacing.block_positions(4, "random", seed=3)
  assert sorted(perm.tolist()) == [0, 1, 2, 3]
  rnd = np.asarray(pacing.block_weights(jnp.int32(0), _cfg(pacing="phases", order="random", order_seed=3)))
  np.testing.assert_array_equal(rnd, (perm == 0).astype(np.float32))
  assert any(not np.array_equal(pacing.block_positions(4, "random", seed=s), np.arange(4)) for s in range(3))


@pytest.mark.parametrize("kind", pacing.PACINGS)
def test_host_table_equals_the_device_function(kind):
  cfg = _cfg(pacing=kind, order="random", order_seed=1, soft=True, scorer="s")
  curriculum = Curriculum.from_config(cfg, num_steps=130)
  table = curriculum.weight_table()
  assert table.shape == (131, 4)
  device = jax.jit(lambda s: pacing.block_weights(s, cfg))  # the config and the object pace alike
  for s in (0, 9, 10, 33, 34, 59, 60, 99, 100, 130):
    np.testing.assert_allclose(table[s], np.asarray(device(jnp.int32(s))), atol=1e-6)


def test_bad_order_names_the_choices():
  with pytest.raises(ValueError, match="order='backwards'.*'hard_first'"):
    pacing.block_weights(0, _cfg(pacing="root", order="backwards"))
