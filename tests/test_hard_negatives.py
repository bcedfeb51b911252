"""Hard negatives and margins in the one contrastive function, against numpy references of the papers' formulas."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cmccl_jax import losses
from cmccl_jax.losses import HardNegatives

N, D = 7, 5


def _embeddings(seed=0):
  rng = np.random.default_rng(seed)
  a = rng.normal(size=(N, D)).astype(np.float32)
  b = (a + 0.8 * rng.normal(size=(N, D))).astype(np.float32)
  return a, b


def _cos(a, b):
  a = a / np.linalg.norm(a, axis=1, keepdims=True)
  b = b / np.linalg.norm(b, axis=1, keepdims=True)
  return (a @ b.T).astype(np.float64)


VALID = np.array([1, 1, 0, 1, 1, 1, 0], bool)


def _ref_hn_nce(s, valid, alpha, beta, margin=0.0):
  """Radenovic et al. eq.: image side over row i's negatives, text side over column i's."""
  idx = np.flatnonzero(valid)
  k = len(idx)
  out = []
  for i in idx:
    sides = []
    for sim in (s, s.T):  # rows: image anchors; the transpose's rows: text anchors
      negs = [j for j in idx if j != i]
      w = (k - 1) * np.exp(beta * sim[i, negs]) / np.sum(np.exp(beta * sim[i, negs]))
      pos = sim[i, i] - margin
      sides.append(-pos + np.log(alpha * np.exp(pos) + np.sum(w * np.exp(sim[i, negs]))))
    out.append(0.5 * sum(sides))
  return np.mean(out)


def _ref_hcl(s, valid, tau_plus, beta, scale):
  """Robinson et al.'s reference code, per anchor, both directions."""
  idx = np.flatnonzero(valid)
  out = []
  for i in idx:
    sides = []
    for sim in (s, s.T):
      negs = np.exp(sim[i, [j for j in idx if j != i]])
      pos = np.exp(sim[i, i])
      n = len(negs)
      imp = negs ** beta
      reweight = np.sum(imp * negs) / np.mean(imp)
      ng = max((-tau_plus * n * pos + reweight) / (1 - tau_plus), n * np.exp(-scale))
      sides.append(-np.log(pos / (pos + ng)))
    out.append(0.5 * sum(sides))
  return np.mean(out)


def _ref_max_violation(c, valid, hinge, margin=0.0):
  idx = np.flatnonzero(valid)
  out = []
  for i in idx:
    negs = [j for j in idx if j != i]
    pos = c[i, i] - margin
    out.append(0.5 * (max(0, max(hinge + c[i, negs] - pos)) + max(0, max(hinge + c[negs, i] - pos))))
  return np.mean(out)


def _loss(kind="softmax", hard=None, scale=10.0, valid=VALID, margin=0.0, bias=0.0, seed=0):
  a, b = _embeddings(seed)
  return losses.contrastive_loss(jnp.asarray(a), jnp.asarray(b), scale=scale, bias=bias, kind=kind,
                                 valid=jnp.asarray(valid), hard_negatives=hard, margin=margin)


@pytest.mark.parametrize("axis", [0, 1])
def test_hn_nce_weights_of_every_anchor_sum_to_k_minus_1(axis):
  """The copied-implementation bug normalises by the wrong row; β = 0 would hide it, so β > 0 here."""
  a, b = _embeddings()
  logits = jnp.asarray(10.0 * _cos(a, b), jnp.float32)
  pair_valid = jnp.asarray(VALID[:, None] & VALID[None, :])
  w = np.exp(np.asarray(losses._off_diagonal_log_weights(logits, pair_valid, 0.5, axis=axis)))
  sums = w.sum(axis=axis)
  k = VALID.sum()
  np.testing.assert_allclose(sums[VALID], k - 1, rtol=1e-5)
  assert np.all(w[~VALID, :] < 1e-30) and np.all(w[:, ~VALID] < 1e-30) and np.all(np.diag(w) < 1e-30)
  assert not np.allclose(w[VALID][:, VALID][~np.eye(k, dtype=bool)], 1.0)  # β > 0 really reweights


def test_hn_nce_at_beta_0_alpha_1_is_infonce_value_and_gradient():
  a, b = _embeddings()

  def f(hard):
    return lambda x, y: losses.contrastive_loss(x, y, scale=10.0, valid=jnp.asarray(VALID), hard_negatives=hard)[0]

  plain = jax.value_and_grad(f(None), argnums=(0, 1))(jnp.asarray(a), jnp.asarray(b))
  hn = jax.value_and_grad(f(HardNegatives("hn_nce", alpha=1.0, beta=0.0)), argnums=(0, 1))(jnp.asarray(a),
                                                                                             jnp.asarray(b))
  np.testing.assert_allclose(hn[0], plain[0], rtol=1e-6)
  for g1, g2 in zip(hn[1], plain[1]):
    np.testing.assert_allclose(g1, g2, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("alpha,beta,margin", [(1.0, 0.5, 0.0), (0.7, 0.25, 0.1), (0.0, 1.0, 0.0)])
def test_hn_nce_against_the_formula(alpha, beta, margin):
  a, b = _embeddings()
  loss, _ = _loss(hard=HardNegatives("hn_nce", alpha=alpha, beta=beta), margin=margin)
  np.testing.assert_allclose(loss, _ref_hn_nce(10.0 * _cos(a, b), VALID, alpha, beta, 10.0 * margin), rtol=1e-5)


@pytest.mark.parametrize("tau_plus,beta,scale", [(0.1, 1.0, 2.0), (0.0, 0.0, 5.0), (0.3, 0.5, 10.0)])
def test_hcl_against_its_reference_code(tau_plus, beta, scale):
  a, b = _embeddings()
  loss, _ = _loss(hard=HardNegatives("hcl", tau_plus=tau_plus, beta=beta), scale=scale)
  np.testing.assert_allclose(loss, _ref_hcl(scale * _cos(a, b), VALID, tau_plus, beta, scale), rtol=1e-5)


def test_hcl_stays_finite_where_exp_of_the_logits_overflows_float32():
  loss, _ = _loss(hard=HardNegatives("hcl", tau_plus=0.1, beta=1.0), scale=100.0)
  grads = jax.grad(lambda x: losses.contrastive_loss(x, x[::-1], scale=100.0, hard_negatives=HardNegatives(
      "hcl", tau_plus=0.1, beta=1.0))[0])(jnp.asarray(_embeddings()[0]))
  assert np.isfinite(loss) and np.all(np.isfinite(grads))


@pytest.mark.parametrize("margin", [0.0, 0.1])
def test_max_violation_against_vse_plus_plus(margin):
  a, b = _embeddings()
  loss, parts = _loss(kind="max_violation", margin=margin)
  np.testing.assert_allclose(loss, _ref_max_violation(_cos(a, b), VALID, 0.2, margin), rtol=1e-5)
  assert 0 <= parts["accuracy"] <= 1


def test_a_per_example_margin_shifts_each_positive_logit():
  a, b = _embeddings()
  margin = np.linspace(0.0, 0.3, N).astype(np.float32)
  loss, _ = _loss(margin=jnp.asarray(margin))
  s = 10.0 * _cos(a, b)
  idx = np.flatnonzero(VALID)
  ref = []
  for i in idx:
    pos = s[i, i] - 10.0 * margin[i]
    row = np.log(np.exp(pos) + np.sum(np.exp([s[i, j] for j in idx if j != i]))) - pos
    col = np.log(np.exp(pos) + np.sum(np.exp([s[j, i] for j in idx if j != i]))) - pos
    ref.append(0.5 * (row + col))
  np.testing.assert_allclose(loss, np.mean(ref), rtol=1e-5)


def test_sigmoid_hn_nce_reweights_negative_pairs_and_is_siglip_at_beta_0():
  a, b = _embeddings()
  plain, _ = _loss(kind="sigmoid", bias=-2.0)
  flat, _ = _loss(kind="sigmoid", bias=-2.0, hard=HardNegatives("hn_nce", beta=0.0))
  np.testing.assert_allclose(flat, plain, rtol=1e-6)
  loss, _ = _loss(kind="sigmoid", bias=-2.0, hard=HardNegatives("hn_nce", beta=0.5), margin=0.05)
  s = 10.0 * _cos(a, b) - 2.0
  raw = 10.0 * _cos(a, b)
  idx = np.flatnonzero(VALID)
  ref = []
  for i in idx:
    negs = [j for j in idx if j != i]
    w = (len(idx) - 1) * np.exp(0.5 * raw[i, negs]) / np.sum(np.exp(0.5 * raw[i, negs]))
    pos = s[i, i] - 10.0 * 0.05
    ref.append(np.log1p(np.exp(-pos)) + np.sum(w * np.log1p(np.exp(s[i, negs]))))
  np.testing.assert_allclose(loss, np.mean(ref), rtol=1e-5)


@pytest.mark.parametrize("kind,hard", [("softmax", HardNegatives("hn_nce", alpha=0.5, beta=0.5)),
                                       ("softmax", HardNegatives("hcl", tau_plus=0.1, beta=1.0)),
                                       ("sigmoid", HardNegatives("hn_nce", beta=0.5)),
                                       ("max_violation", None)])
def test_a_masked_example_is_neither_anchor_nor_negative(kind, hard):
  a, b = _embeddings()
  changed_a, changed_b = a.copy(), b.copy()
  changed_a[2] *= -5.0  # example 2 is masked: nothing about it may matter
  changed_b[6] = 100.0

  def f(x, y):
    return losses.contrastive_loss(x, y, scale=10.0, kind=kind, valid=jnp.asarray(VALID), hard_negatives=hard,
                                   margin=0.05)[0]

  base = jax.value_and_grad(f, argnums=(0, 1))(jnp.asarray(a), jnp.asarray(b))
  moved = jax.value_and_grad(f, argnums=(0, 1))(jnp.asarray(changed_a), jnp.asarray(changed_b))
  np.testing.assert_allclose(moved[0], base[0], rtol=1e-6)
  for g1, g2 in zip(moved[1], base[1]):
    np.testing.assert_allclose(np.asarray(g1)[VALID], np.asarray(g2)[VALID], rtol=1e-5, atol=1e-7)
    assert np.all(np.asarray(g1)[~VALID] == 0)


def test_top_negative_mass_is_the_share_on_the_k_hardest():
  logits = jnp.asarray([[5.0, 1.0, 1.0, 0.0], [1.0, 5.0, 3.0, 3.0], [0.0, 0.0, 5.0, 0.0], [0.0, 0.0, 0.0, 5.0]])
  pair_valid = jnp.ones((4, 4), bool)
  mass = losses.top_negative_mass(logits, pair_valid, k=1)
  e = np.exp
  expected = np.mean([e(1) / (2 * e(1) + 1), e(3) / (e(1) + 2 * e(3)), 1 / 3, 1 / 3])
  np.testing.assert_allclose(mass, expected, rtol=1e-6)
  assert float(losses.top_negative_mass(logits, pair_valid, k=3)) == pytest.approx(1.0)


def test_kinds_that_have_no_form_say_so():
  with pytest.raises(ValueError, match="no sigmoid form"):
    _loss(kind="sigmoid", hard=HardNegatives("hcl"))
  with pytest.raises(ValueError, match="max_violation"):
    _loss(kind="max_violation", hard=HardNegatives("hn_nce"))


def test_the_hardness_schedule_goes_from_its_start_to_its_end_along_the_competence_shape():
  import ml_collections
  from cmccl_jax.curriculum.hardness import Hardness
  from cmccl_jax.errors import UserError

  def hardness(**fields):
    loss = ml_collections.ConfigDict(dict(kind="softmax", hard_negatives="hn_nce", beta=0.5, margin=0.2,
                                          margin_by_difficulty=True, hardness=dict(pacing="root", steps=100,
                                                                                   init=0.1, beta_start=0.0,
                                                                                   margin_start=0.0)))
    loss.update(fields.pop("loss", {}))
    loss.hardness.update(fields)
    return Hardness.from_config(loss, 1000)

  h = hardness()
  assert float(h.beta_at(0)) == 0.0 and float(h.beta_at(100)) == pytest.approx(0.5)
  assert float(h.beta_at(500)) == pytest.approx(0.5)  # held after `steps`
  root = (np.sqrt(0.01 + 0.99 * 0.25) - 0.1) / 0.9  # competence at t = T/4, rescaled to [0, 1]
  assert float(h.beta_at(25)) == pytest.approx(0.5 * root, rel=1e-5)
  assert float(h.beta_at(25)) > 0.5 * 0.25  # root grows fast early
  np.testing.assert_allclose(h.margins(100, jnp.asarray([0, 1, 3]), 4), [0.2, 0.2 * 2 / 3, 0.0], rtol=1e-6)
  constant = hardness(pacing="none")
  assert float(constant.beta_at(0)) == 0.5 and float(constant.margin_at(0)) == pytest.approx(0.2)
  assert hardness(steps=0).steps == 1000  # 0: the run's length
  assert constant.negatives(0).kind == "hn_nce"
  for fields, match in [(dict(pacing="cubic"), "hardness.pacing"), (dict(init=0.0), "hardness.init"),
                        (dict(loss=dict(hard_negatives="hcl", kind="sigmoid")), "softmax loss"),
                        (dict(loss=dict(kind="max_violation")), "hardest negative"),
                        (dict(loss=dict(kind="arcface")), "loss.kind")]:
    with pytest.raises(UserError, match=match):
      hardness(**fields)


def _queue(a_entries, b_entries, ids, usable):
  return losses.QueueNegatives(a=jnp.asarray(a_entries), b=jnp.asarray(b_entries), ids=jnp.asarray(ids, jnp.int32),
                               usable=jnp.asarray(usable))


@pytest.mark.parametrize("kind", ["softmax", "sigmoid"])
def test_queued_negatives_join_every_anchor_except_its_own_examples(kind):
  a, b = _embeddings()
  unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)
  rng = np.random.default_rng(5)
  qa, qb = unit(rng.normal(size=(4, D))).astype(np.float32), unit(rng.normal(size=(4, D))).astype(np.float32)
  qa[3], qb[3] = unit(a)[0], unit(b)[0]  # entry 3 is example 0 again (an older view of it)
  ids = jnp.arange(N, dtype=jnp.int32)

  def per_example(queue):
    return np.asarray(losses.contrastive_loss(jnp.asarray(a), jnp.asarray(b), scale=10.0, bias=-2.0, kind=kind,
                                              valid=jnp.asarray(VALID), queue=queue, ids=ids)[1]["per_example"])

  with_own = per_example(_queue(qa, qb, [10, 11, 12, 0], [True, True, False, True]))
  without = per_example(_queue(qa, qb, [10, 11, 12, 0], [True, True, False, False]))
  as_stranger = per_example(_queue(qa, qb, [10, 11, 12, 13], [True, True, False, True]))
  np.testing.assert_allclose(with_own[0], without[0], rtol=1e-6)  # not a negative of its own example...
  assert with_own[0] != as_stranger[0]  # ...which it is under another id,
  assert np.all(with_own[VALID][1:] > without[VALID][1:])  # and it is one of every other anchor
  # Reference: the usable entries 0 and 1 as extra negatives of every valid anchor.
  s, idx = 10.0 * _cos(a, b), np.flatnonzero(VALID)
  sa, sb = 10.0 * unit(a) @ qb[:2].T, 10.0 * unit(b) @ qa[:2].T
  ref = []
  for i in idx:
    others = [j for j in idx if j != i]
    if kind == "softmax":
      row = np.log(np.exp(s[i, i]) + np.exp(s[i, others]).sum() + np.exp(sa[i]).sum()) - s[i, i]
      col = np.log(np.exp(s[i, i]) + np.exp(s[others, i]).sum() + np.exp(sb[i]).sum()) - s[i, i]
      ref.append(0.5 * (row + col))
    else:
      softplus = lambda x: np.log1p(np.exp(x))
      ref.append(softplus(-(s[i, i] - 2)) + softplus(s[i, others] - 2).sum() + softplus(sa[i] - 2).sum()
                 + softplus(sb[i] - 2).sum())
  np.testing.assert_allclose(without[VALID], ref, rtol=1e-5)


def test_the_ring_writes_a_batch_at_its_pointer_and_wraps():
  from cmccl_jax.memory_queue import MemoryQueue
  import ml_collections
  q = MemoryQueue.from_config(ml_collections.ConfigDict({"queue": {"size": 6, "warmup_steps": 2}}), 3)
  ring = q.init(2)
  for step in range(3):
    z = jnp.full((3, 2), float(step))
    ring = q.push(ring, z, -z, jnp.arange(3) + 10 * step, jnp.asarray([True, step != 1, True]))
  np.testing.assert_array_equal(ring["ids"], [20, 21, 22, 10, 11, 12])  # step 2 overwrote step 0
  np.testing.assert_array_equal(ring["filled"], [True, True, True, True, False, True])
  assert int(ring["ptr"]) == 3 and float(ring["b"][0, 0]) == -2.0
  assert not np.any(q.negatives(ring, 1).usable) and np.sum(q.negatives(ring, 2).usable) == 5
  from cmccl_jax.errors import UserError
  with pytest.raises(UserError, match="multiple of config.batch_size"):
    MemoryQueue.from_config(ml_collections.ConfigDict({"queue": {"size": 10}}), 4)
