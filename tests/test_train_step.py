"""The jitted dual-encoder step: sharding invariance, one compilation, exact masking."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cmccl_jax import parallel
from cmccl_jax.data.tokenizer import load_vocab
from cmccl_jax.tasks.dual_encoder import step as dual_encoder_step
from cmccl_jax.tasks.dual_encoder.task import DualEncoderModel
from tests import tiny

IMAGE_SHAPE = (32, 32, 3)


def _setup(config, devices):
  mesh = parallel.make_mesh({"data": len(devices)}, devices)
  return DualEncoderModel(config, mesh, IMAGE_SHAPE, len(load_vocab(config.tokenizer.vocab)))


def _batch(config, seed=0, n=16):
  rng = np.random.default_rng(seed)
  tokens = rng.integers(5, 40, size=(n, config.tokenizer.max_len)).astype(np.int32)
  tokens[:, 0] = 2
  tokens[:, 9:] = 0  # padding
  return {"image": rng.integers(0, 256, size=(n,) + IMAGE_SHAPE, dtype=np.uint8),
          "tokens": tokens,
          "block": (np.arange(n) % 4).astype(np.int32),
          "difficulty": rng.random(n).astype(np.float32),
          "id": np.arange(n, dtype=np.int64)}


@functools.cache
def _grad_fn(setup):
  return jax.jit(jax.value_and_grad(functools.partial(
      dual_encoder_step.dual_encoder_loss, model=setup.model, loss_config=setup.config.loss,
      curriculum=setup.curriculum), has_aux=True))


def _loss_and_grads(setup, state, batch, step):
  (loss, _), grads = _grad_fn(setup)(state.params, parallel.global_batch(setup.mesh, batch), jnp.int32(step),
                                     jax.random.key(1))
  return float(loss), jax.device_get(grads)


@pytest.mark.parametrize("kind", ["softmax", "sigmoid"])
def test_sharded_step_matches_single_device(kind):
  assert jax.device_count() == 8, "conftest sets 8 simulated CPU devices"
  config = tiny.tiny_config("unused")
  config.loss.kind = kind
  config.curriculum.pacing = "phases"
  batch = _batch(config)
  one = _setup(config, jax.devices()[:1])
  eight = _setup(config, jax.devices())
  state1, state8 = one.init_state(), eight.init_state()
  assert len(state8.params["params"]["log_scale"].sharding.device_set) == 8
  for step in (0, 4):  # one and two visible blocks
    loss1, g1 = _loss_and_grads(one, state1, batch, step)
    loss8, g8 = _loss_and_grads(eight, state8, batch, step)
    np.testing.assert_allclose(loss8, loss1, rtol=1e-5)
    total = float(np.sqrt(sum(np.sum(np.square(a)) for a in jax.tree.leaves(g1))))
    diff = float(np.sqrt(sum(np.sum(np.square(a - b)) for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g8)))))
    assert diff <= 1e-5 * total
    # Per leaf too, with a floor for leaves whose true gradient is ~0 (float noise only).
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g8)):
      assert np.linalg.norm(a - b) <= 1e-5 * max(np.linalg.norm(a), 1e-3 * total)


def test_step_compiles_once_across_pacing_phases():
  config = tiny.tiny_config("unused")  # phases of 3 steps: 1, 2, 3, then 4 visible blocks
  # The hardness curriculum's beta(t) and margin(t) are traced too.
  config.loss.update(dict(hard_negatives="hn_nce", beta=0.5, margin=0.1, margin_by_difficulty=True))
  config.loss.hardness.update(dict(pacing="linear", steps=10, init=0.5))
  setup = _setup(config, jax.devices())
  step_fn = setup.train_step()
  state = setup.init_state()
  visible, betas = [], []
  for step in range(12):
    state, metrics = step_fn(state, parallel.global_batch(setup.mesh, _batch(config, seed=step)))
    visible.append(int(metrics["visible_blocks"]))
    betas.append(float(metrics["negatives/beta"]))
  assert visible == [1] * 3 + [2] * 3 + [3] * 3 + [4] * 3
  np.testing.assert_allclose(betas, [0.5 * min(t / 10, 1) for t in range(12)], rtol=1e-5, atol=1e-7)
  assert int(state.step) == 12
  assert step_fn._cache_size() == 1


def test_masked_example_cannot_influence_loss_or_gradients():
  config = tiny.tiny_config("unused")
  setup = _setup(config, jax.devices())
  state = setup.init_state()
  batch = _batch(config)
  # At step 4 blocks 0 and 1 are visible; example 3 is in block 3, hence masked.
  assert batch["block"][3] == 3
  changed = {k: v.copy() for k, v in batch.items()}
  changed["image"][3] = 255 - changed["image"][3]
  changed["tokens"][3, 1:8] = 7
  loss_a, grads_a = _loss_and_grads(setup, state, batch, 4)
  loss_b, grads_b = _loss_and_grads(setup, state, changed, 4)
  assert loss_a == loss_b
  for a, b in zip(jax.tree.leaves(grads_a), jax.tree.leaves(grads_b)):
    np.testing.assert_array_equal(a, b)
  # ... while a visible example does influence them (the test can fail).
  changed["image"][0] = 255 - changed["image"][0]
  loss_c, _ = _loss_and_grads(setup, state, changed, 4)
  assert loss_c != loss_a


@pytest.mark.parametrize("kind,chunk,ring", [("softmax", 4, False), ("sigmoid", 0, True), ("sigmoid", 1, True)])
def test_chunked_and_ring_steps_train_as_the_dense_one(kind, chunk, ring):
  """loss.chunk_size and loss.ring reach the jitted step on 8 devices and change nothing but memory."""
  config = tiny.tiny_config("unused")
  config.loss.kind = kind
  dense = _setup(config, jax.devices())
  config = tiny.tiny_config("unused")
  config.loss.update(dict(kind=kind, chunk_size=chunk, ring=ring))
  chunked = _setup(config, jax.devices())
  states = [dense.init_state(), chunked.init_state()]
  steps = [dense.train_step(), chunked.train_step()]
  for step in range(3):
    batch = _batch(config, seed=step)
    (states[0], m0), (states[1], m1) = (fn(s, parallel.global_batch(dense.mesh, batch)) for fn, s in zip(steps, states))
    for key in ("loss", "accuracy", "positive_logit", "negative_logit", f"negatives/top{5}_mass", "grad_norm"):
      np.testing.assert_allclose(float(m1[key]), float(m0[key]), rtol=1e-4, atol=1e-6, err_msg=key)
  # (Parameters are compared through the later steps' metrics: Adam's first steps turn float noise in
  # near-zero gradients into whole ±lr updates.) The ring is what ran: blocks passed between devices.
  text = steps[1].lower(states[1], parallel.global_batch(chunked.mesh, _batch(config))).as_text()
  assert ("collective_permute" in text) == ring
