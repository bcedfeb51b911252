"""The chunked and ring losses equal the dense one on 8 devices (value and gradients), and need less memory."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cmccl_jax import chunked_losses, losses, parallel

N, D, CHUNK = 64, 16, 16


def _inputs(masked: bool):
  rng = np.random.default_rng(1)
  a = rng.normal(size=(N, D)).astype(np.float32)
  b = (a + rng.normal(size=(N, D))).astype(np.float32)
  valid = rng.random(N) > 0.25 if masked else np.ones(N, bool)
  margin = np.linspace(0.0, 0.2, N).astype(np.float32)
  return a, b, valid, margin


def _sharded_value_and_grad(kind: str, chunk: int, mesh, inputs, ring: bool = False):
  a, b, valid, margin = inputs

  def f(x, y, scale, bias):
    return losses.contrastive_loss(x, y, scale=scale, bias=bias, kind=kind, valid=valid_s, margin=margin_s,
                                   chunk_size=chunk, ring=mesh if ring else None)

  data = parallel.data_sharding(mesh)
  put = lambda x: jax.device_put(x, data)
  valid_s, margin_s = put(valid), put(margin)
  fn = jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2, 3), has_aux=True))
  return fn(put(a), put(b), jnp.float32(10.0), jnp.float32(-3.0))


@pytest.mark.parametrize("kind,chunk,ring", [("softmax", CHUNK, False), ("sigmoid", CHUNK, False),
                                             ("sigmoid", 0, True), ("sigmoid", 4, True)])
@pytest.mark.parametrize("masked", [False, True])
def test_chunked_equals_dense_on_8_devices(kind, chunk, ring, masked):
  mesh = parallel.make_mesh({"data": 8}, jax.devices())
  inputs = _inputs(masked)
  (dense, dense_parts), dense_grads = _sharded_value_and_grad(kind, 0, mesh, inputs)
  (chunked, chunked_parts), chunked_grads = _sharded_value_and_grad(kind, chunk, mesh, inputs, ring)
  np.testing.assert_allclose(chunked, dense, rtol=1e-5)
  for name in ("per_example", "accuracy", "positive_logit", "negative_logit", "top_negative_mass"):
    np.testing.assert_allclose(chunked_parts[name], dense_parts[name], rtol=1e-5, atol=1e-6, err_msg=name)
  for g_chunked, g_dense in zip(chunked_grads, dense_grads):  # embeddings, scale and bias
    scale = np.max(np.abs(g_dense)) + 1e-12
    np.testing.assert_array_less(np.abs(np.asarray(g_chunked) - np.asarray(g_dense)) / scale, 1e-5)


def test_chunked_memory_grows_linearly_while_dense_grows_quadratically():
  """Compiled temp memory per device of loss + gradient, 8 devices, at two batch sizes."""
  mesh = parallel.make_mesh({"data": 8}, jax.devices())
  temp = {}
  for n in (512, 2048):
    for chunk in (0, 128):
      temp[n, chunk] = chunked_losses.loss_memory(mesh, n, 32, chunk)
  assert temp[2048, 0] > 10 * temp[512, 0]  # ~16x: B²
  assert temp[2048, 128] < 6 * temp[512, 128]  # ~4x: B × chunk
  assert temp[2048, 128] < temp[2048, 0] / 4


def test_the_ring_rotates_shards_instead_of_gathering_them():
  """The compiled ring step passes blocks between devices (collective-permute) and gathers no embeddings;
  its memory per device is local × local, below the dense form's local × global."""
  mesh = parallel.make_mesh({"data": 8}, jax.devices())
  data = parallel.data_sharding(mesh)
  emb = jax.ShapeDtypeStruct((2048, 32), jnp.float32, sharding=data)

  def hlo(ring):
    f = lambda x, y: losses.contrastive_loss(x, y, scale=10.0, bias=-3.0, kind="sigmoid",
                                             ring=mesh if ring else None)[0]
    return jax.jit(jax.grad(f, argnums=(0, 1))).lower(emb, emb).compile().as_text()

  ring, dense = hlo(True), hlo(False)
  assert "collective-permute" in ring and "all-gather" not in ring
  assert "all-gather" in dense
  assert chunked_losses.loss_memory(mesh, 2048, 32, 0, "sigmoid", ring=True) < (
      chunked_losses.loss_memory(mesh, 2048, 32, 0, "sigmoid") / 4)


@pytest.mark.parametrize("fields,message", [
    (dict(kind="softmax", ring=True), r"config.loss.ring=True is SigLIP's ring.*kind 'softmax'"),
    (dict(kind="sigmoid", ring=True, chunk_size=3), r"config.loss.chunk_size=3 must divide the per-device batch \(2\)"),
    (dict(kind="sigmoid", chunk_size=5), r"config.loss.chunk_size=5 must divide config.batch_size=16"),
])
def test_bad_chunking_configs_are_refused(fields, message):
  from cmccl_jax import tasks
  from cmccl_jax.errors import UserError
  from tests import tiny
  config = tiny.tiny_config("unused")
  config.loss.update(fields)
  with pytest.raises(UserError, match=message):
    tasks.validate(config)
