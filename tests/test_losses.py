import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cmccl_jax import losses


def _normalize(x):
  return x / np.linalg.norm(x, axis=1, keepdims=True)


def _softmax_reference(a, b, scale, valid, weights):
  """Plain numpy InfoNCE over the valid sub-batch only, written independently."""
  idx = np.nonzero(valid)[0]
  logits = scale * _normalize(a[idx]) @ _normalize(b[idx]).T
  def ce(l):
    m = l.max(axis=1, keepdims=True)
    lse = np.log(np.exp(l - m).sum(axis=1)) + m[:, 0]
    return lse - np.diag(l)
  per = 0.5 * (ce(logits) + ce(logits.T))
  return float(np.sum(weights[idx] * per) / len(idx))


def _sigmoid_reference(a, b, scale, bias, valid):
  idx = np.nonzero(valid)[0]
  logits = scale * _normalize(a[idx]) @ _normalize(b[idx]).T + bias
  labels = 2 * np.eye(len(idx)) - 1
  return float(np.mean(np.sum(np.log1p(np.exp(-labels * logits)), axis=1)))


@pytest.fixture
def embeddings():
  rng = np.random.default_rng(0)
  return rng.normal(size=(6, 5)).astype(np.float32), rng.normal(size=(6, 5)).astype(np.float32)


def test_softmax_matches_reference_with_mask_and_weights(embeddings):
  a, b = embeddings
  valid = np.array([1, 1, 0, 1, 0, 1], bool)
  weights = np.array([1.0, 0.5, 3.0, 2.0, 7.0, 1.0], np.float32)
  loss, _ = losses.contrastive_loss(a, b, scale=10.0, valid=valid, weights=weights)
  np.testing.assert_allclose(loss, _softmax_reference(a, b, 10.0, valid, weights), rtol=1e-5)


def test_softmax_unmasked_uniform_logits_is_log_n():
  a = np.ones((4, 3), np.float32)
  loss, _ = losses.contrastive_loss(a, a, scale=5.0)
  np.testing.assert_allclose(loss, np.log(4.0), rtol=1e-6)


def test_sigmoid_matches_reference(embeddings):
  a, b = embeddings
  valid = np.array([1, 0, 1, 1, 1, 0], bool)
  loss, _ = losses.contrastive_loss(a, b, scale=10.0, bias=-2.0, kind="sigmoid", valid=valid)
  np.testing.assert_allclose(loss, _sigmoid_reference(a, b, 10.0, -2.0, valid), rtol=1e-5)


@pytest.mark.parametrize("kind", ["softmax", "sigmoid"])
def test_masked_example_has_no_influence(embeddings, kind):
  a, b = embeddings
  valid = jnp.array([1, 1, 0, 1, 1, 1], bool)

  def loss_fn(a, b):
    return losses.contrastive_loss(a, b, scale=7.0, bias=-1.0, kind=kind, valid=valid)[0]

  loss1, (ga1, gb1) = jax.value_and_grad(loss_fn, argnums=(0, 1))(a, b)
  a2, b2 = a.copy(), b.copy()
  a2[2] = 1e4 * np.arange(5)
  b2[2] = -3.0
  loss2, (ga2, gb2) = jax.value_and_grad(loss_fn, argnums=(0, 1))(a2, b2)
  assert float(loss1) == float(loss2)
  np.testing.assert_array_equal(np.delete(ga1, 2, 0), np.delete(ga2, 2, 0))
  np.testing.assert_array_equal(np.delete(gb1, 2, 0), np.delete(gb2, 2, 0))
  np.testing.assert_array_equal(ga2[2], 0.0)


@pytest.mark.parametrize("kind", ["softmax", "sigmoid"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, 0.0])
def test_a_masked_non_finite_or_zero_row_leaves_every_gradient_finite(embeddings, kind, bad):
  # A zero row is the other trap: the norm's derivative at 0 is where an unmasked eps clamp still bites.
  a, b = embeddings
  a, b = a.copy(), b.copy()
  a[2], b[4] = bad, bad
  valid = jnp.array([1, 1, 0, 1, 0, 1], bool)
  loss, (ga, gb) = jax.value_and_grad(
      lambda a, b: losses.contrastive_loss(a, b, scale=7.0, bias=-1.0, kind=kind, valid=valid)[0],
      argnums=(0, 1))(a, b)
  assert np.isfinite(float(loss))
  assert np.all(np.isfinite(ga)) and np.all(np.isfinite(gb))
  np.testing.assert_array_equal(ga[2], 0.0)
  np.testing.assert_array_equal(gb[4], 0.0)


def test_all_masked_is_finite(embeddings):
  a, b = embeddings
  loss, grads = jax.value_and_grad(
      lambda a: losses.contrastive_loss(a, b, scale=3.0, valid=jnp.zeros(6, bool))[0])(a)
  assert float(loss) == 0.0 and np.all(np.isfinite(grads))


def test_unknown_kind_names_the_value(embeddings):
  with pytest.raises(ValueError, match="'cosine'"):
    losses.contrastive_loss(*embeddings, scale=1.0, kind="cosine")
