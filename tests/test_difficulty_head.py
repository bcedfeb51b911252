"""The learnable difficulty evaluator: ranks with ties, its loss, no gradient into the encoders, it learns."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy import stats

from cmccl_jax.curriculum import analysis, difficulty_head as dh
from cmccl_jax.models.dual_encoder import DifficultyHead
from cmccl_jax.tasks.dual_encoder import dashboard


def test_average_ranks_share_ties_and_skip_masked_entries():
  v = jnp.asarray([3.0, 1.0, 3.0, 2.0, -5.0])
  valid = jnp.asarray([True, True, True, True, False])
  np.testing.assert_allclose(dh.average_ranks(v, valid)[:4], [2.5, 0.0, 2.5, 1.0])


def _metrics(predicted, loss, difficulty, visible):
  return {"per_example_loss": loss, "visible": visible, "difficulty": difficulty,
          "predicted_difficulty": predicted, "block_counts": np.zeros(4), "difficulty_head/mse": 0.0}


def test_dashboard_rank_correlations_match_scipy_on_the_visible_examples():
  rng = np.random.default_rng(0)
  x = rng.integers(0, 5, 40).astype(np.float32)  # many ties
  y = (x + rng.normal(0, 2, 40)).astype(np.float32)
  d = rng.normal(size=40).astype(np.float32)
  valid = rng.random(40) < 0.7
  out = dashboard.scalars(_metrics(x, y, d, valid), 4)
  np.testing.assert_allclose(out["difficulty_head/spearman_loss"], stats.spearmanr(x[valid], y[valid]).statistic,
                             rtol=1e-5)
  np.testing.assert_allclose(out["difficulty_head/spearman_offline"],
                             stats.spearmanr(x[valid], d[valid]).statistic, rtol=1e-5)


def test_no_offline_correlation_is_logged_without_an_offline_score():
  # The "learned" scorer: the batch's difficulty column is all zeros; a correlation with it means nothing.
  rng = np.random.default_rng(1)
  out = dashboard.scalars(_metrics(rng.normal(size=8), rng.normal(size=8), np.zeros(8), np.ones(8, bool)), 4)
  assert "difficulty_head/spearman_offline" not in out and "difficulty_head/spearman_loss" in out


def test_head_loss_regresses_the_relative_loss_of_visible_examples():
  per_example = jnp.asarray([1.0, 3.0, 2.0, 100.0])
  valid = jnp.asarray([True, True, True, False])
  # mean visible loss 2 → targets 0.5, 1.5, 1.0; predicting 1 everywhere errs by 0.25, 0.25, 0.
  np.testing.assert_allclose(dh.relative_loss(per_example, valid), [0.5, 1.5, 1.0, 0.0])
  np.testing.assert_allclose(float(dh.head_loss(jnp.ones(4), per_example, valid)), 0.5 / 3, rtol=1e-6)


def test_head_passes_no_gradient_to_the_embeddings_or_the_target():
  head = DifficultyHead(8)
  z_img, z_txt = jax.random.normal(jax.random.key(0), (2, 6, 4))
  params = head.init(jax.random.key(1), z_img, z_txt)

  def loss(z_img, z_txt, per_example):
    return dh.head_loss(head.apply(params, z_img, z_txt), per_example, jnp.ones(6, bool))

  grads = jax.grad(loss, argnums=(0, 1, 2))(z_img, z_txt, jnp.arange(1.0, 7.0))
  for g in grads:
    np.testing.assert_array_equal(g, 0.0)


def test_head_learns_a_difficulty_that_depends_on_the_pair():
  # The "loss" of a pair is high when its embeddings disagree: the head must find that.
  rng = jax.random.key(0)
  z_img = jax.random.normal(rng, (256, 8))
  z_txt = z_img + jax.random.normal(jax.random.key(1), (256, 8)) * jnp.linspace(0.0, 2.0, 256)[:, None]
  cos = jnp.sum(dh.losses.l2_normalize(z_img) * dh.losses.l2_normalize(z_txt), axis=-1)
  per_example = 3.0 - 2.0 * cos
  valid = jnp.ones(256, bool)
  head = DifficultyHead(32)
  params = head.init(jax.random.key(2), z_img, z_txt)
  tx = optax.adam(1e-2)
  opt = tx.init(params)

  @jax.jit
  def step(params, opt):
    loss, g = jax.value_and_grad(lambda p: dh.head_loss(head.apply(p, z_img, z_txt), per_example, valid))(params)
    updates, opt = tx.update(g, opt)
    return optax.apply_updates(params, updates), opt, loss

  first = None
  for _ in range(300):
    params, opt, loss = step(params, opt)
    first = float(loss) if first is None else first
  predicted = head.apply(params, z_img, z_txt)
  assert float(loss) < 0.1 * first
  v = np.asarray(valid)
  assert analysis.spearman(np.asarray(predicted)[v], np.asarray(per_example)[v]) > 0.9


def test_learned_blocks_are_quantiles_of_the_prediction_within_the_batch():
  predicted = jnp.asarray([0.9, 0.1, 0.5, 0.3, 0.7, 0.2, 0.8, 0.4])
  np.testing.assert_array_equal(dh.learned_blocks(predicted, 4), [3, 0, 2, 1, 2, 0, 3, 1])


def test_learned_scorer_paces_the_step_by_the_heads_ranking():
  from cmccl_jax import parallel, tasks
  from cmccl_jax.data.tokenizer import load_vocab
  from cmccl_jax.tasks.dual_encoder.task import DualEncoderModel
  from tests import tiny
  from tests.test_train_step import IMAGE_SHAPE, _batch
  config = tiny.tiny_config("unused")
  config.curriculum.scorer = "learned"  # phases (3, 3, 3): step 0 shows block 0, a quarter of the batch
  tasks.validate(config)
  mesh = parallel.make_mesh({"data": 1}, jax.devices()[:1])
  setup = DualEncoderModel(config, mesh, IMAGE_SHAPE, len(load_vocab("synthetic")))
  _, metrics = setup.train_step()(setup.init_state(), parallel.global_batch(mesh, _batch(config)))
  assert float(metrics["visible_fraction"]) == 0.25
  predicted, visible = np.asarray(metrics["predicted_difficulty"]), np.asarray(metrics["visible"])
  assert predicted[visible].max() < predicted[~visible].min()  # the easiest quarter as the head sees it
  config.curriculum.difficulty_head.hidden = 0
  with pytest.raises(ValueError, match="scorer='learned'.*hidden"):
    tasks.validate(config)
