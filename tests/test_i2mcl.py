"""I2MCL inside the dual-encoder step: stop-gradient routing leaf by leaf, and 8 devices against 1."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cmccl_jax import losses, parallel
from cmccl_jax.data.tokenizer import load_vocab
from cmccl_jax.errors import UserError
from cmccl_jax.tasks.dual_encoder import step as dual_encoder_step
from cmccl_jax.tasks.dual_encoder.task import DualEncoderModel
from tests import tiny

IMAGE_SHAPE = (32, 32, 3)
IMAGE_TEACHER_WIDTH = 24  # != embed_dim: a projection; the text teacher is embed_dim wide: the identity


def _config(intra="none", inter=True):
  config = tiny.tiny_config("unused")
  config.curriculum.pacing = "phases"
  config.curriculum.dynamic.update(dict(distill=True, intra=intra, inter=inter, image_teacher="exp/t",
                                        text_teacher="exp/t", distill_weight=0.7))
  return config


def _setup(config, devices):
  mesh = parallel.make_mesh({"data": len(devices)}, devices)
  widths = {"image": IMAGE_TEACHER_WIDTH, "text": int(config.model.embed_dim)}
  return DualEncoderModel(config, mesh, IMAGE_SHAPE, len(load_vocab(config.tokenizer.vocab)),
                          teacher_widths=widths)


def _batch(config, seed=0, n=16):
  rng = np.random.default_rng(seed)
  tokens = rng.integers(5, 40, size=(n, config.tokenizer.max_len)).astype(np.int32)
  tokens[:, 0] = 2
  tokens[:, 9:] = 0
  unit = lambda d: (lambda x: x / np.linalg.norm(x, axis=1, keepdims=True))(rng.normal(size=(n, d))).astype(np.float32)
  return {"image": rng.integers(0, 256, size=(n,) + IMAGE_SHAPE, dtype=np.uint8), "tokens": tokens,
          "block": (np.arange(n) % 4).astype(np.int32), "difficulty": rng.random(n).astype(np.float32),
          "id": np.arange(n, dtype=np.int64) + n * seed, "teacher/image": unit(IMAGE_TEACHER_WIDTH),
          "teacher/text": unit(int(config.model.embed_dim))}


def _loss(setup, params, batch, step, dynamic_state):
  return dual_encoder_step.dual_encoder_loss(
      params, batch, jnp.int32(step), jax.random.key(1), dynamic_state, model=setup.model,
      loss_config=setup.config.loss, curriculum=setup.curriculum, dynamic=setup.dynamic)


def test_a_teacher_routed_encoder_learns_only_from_its_distillation():
  config = _config()
  setup = _setup(config, jax.devices()[:1])
  state = setup.init_state()
  batch = parallel.global_batch(setup.mesh, _batch(config))
  step = 4  # two visible blocks: the pacing weights mask half the batch
  (_, (metrics, _)), grads = jax.value_and_grad(
      lambda p: _loss(setup, p, batch, step, state.curriculum), has_aux=True)(state.params)
  learner = [m for m in ("image", "text") if float(metrics[f"i2mcl/learns_from_task/{m}"]) == 1.0]
  assert len(learner) == 1
  learner = learner[0]
  teacher_routed = "text" if learner == "image" else "image"
  model = setup.model
  valid, pacing = setup.curriculum.example_weights(jnp.int32(step), batch["block"])

  def task_only(p):  # the plain contrastive loss: intra is off, so the weights are the pacing's
    z_img, z_txt, out = model.apply(p, batch["image"], batch["tokens"], train=True, rngs={"dropout": jax.random.key(1)})
    return losses.contrastive_loss(z_img, z_txt, scale=out["scale"], bias=out["bias"], valid=valid,
                                   weights=pacing)[0]

  def distill_only(p, modality):
    z_img, z_txt, _ = model.apply(p, batch["image"], batch["tokens"], train=True, rngs={"dropout": jax.random.key(1)})
    z = losses.l2_normalize(z_img if modality == "image" else z_txt)
    projected = model.apply(p, z, modality, method=model.distill_project)
    per = jnp.sum(jnp.square(projected - batch[f"teacher/{modality}"]), axis=-1)
    return 0.7 * jnp.sum(jnp.where(valid, pacing * per, 0.0)) / jnp.sum(valid)

  tower = {"image": ("image_tower", "image_proj"), "text": ("text_tower", "text_proj")}
  g_task = jax.grad(task_only)(state.params)["params"]
  g_distill = jax.grad(distill_only)(state.params, teacher_routed)["params"]
  g = grads["params"]
  checked = 0
  for name in tower[teacher_routed]:
    for a, b in zip(jax.tree.leaves(g[name]), jax.tree.leaves(g_distill[name]), strict=True):
      np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-7)
      checked += 1
  for name in tower[learner]:
    for a, b in zip(jax.tree.leaves(g[name]), jax.tree.leaves(g_task[name]), strict=True):
      np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-7)
      checked += 1
  # The alignment head learns from the task alone; the image projection from its distillation.
  for name in ("log_scale", "bias"):
    np.testing.assert_allclose(g[name], g_task[name], rtol=1e-5, atol=1e-8)
  g_image = jax.grad(distill_only)(state.params, "image")["params"]
  np.testing.assert_allclose(g["distill_image"]["kernel"], g_image["distill_image"]["kernel"], rtol=2e-5, atol=1e-8)
  assert checked > 10
  assert all(np.any(np.asarray(x) != 0) for x in jax.tree.leaves(g[tower[teacher_routed][0]]))


@pytest.mark.parametrize("intra", ["superloss", "spl_linear"])
def test_sharded_i2mcl_step_matches_single_device(intra):
  assert jax.device_count() == 8, "conftest sets 8 simulated CPU devices"
  config = _config(intra)
  config.loss.queue.size = 32  # the ring is sharded over the devices too; from step 1 its entries are negatives
  one, eight = _setup(config, jax.devices()[:1]), _setup(config, jax.devices())
  state1, state8 = one.init_state(), eight.init_state()
  batch = _batch(config)
  for step in (0, 4):  # one and two visible blocks; loss and gradients at the same state
    grad = lambda s, st: jax.value_and_grad(lambda p: _loss(s, p, parallel.global_batch(s.mesh, batch), step,
                                                              st.curriculum)[0])(st.params)
    (l1, g1), (l8, g8) = grad(one, state1), grad(eight, state8)
    np.testing.assert_allclose(float(l8), float(l1), rtol=1e-5)
    g1, g8 = jax.tree.leaves(jax.device_get(g1)), jax.tree.leaves(jax.device_get(g8))
    total = float(np.sqrt(sum(np.sum(np.square(a)) for a in g1)))
    assert float(np.sqrt(sum(np.sum(np.square(a - b)) for a, b in zip(g1, g8)))) <= 1e-5 * total
    for a, b in zip(g1, g8):
      assert np.linalg.norm(a - b) <= 1e-5 * max(np.linalg.norm(a), 1e-3 * total)
  # Three steps of the jitted step: τ from the first batch, then moving; routing and α agree.
  step1, step8 = one.train_step(), eight.train_step()
  for step in range(3):
    batch = _batch(config, seed=step)
    state1, m1 = step1(state1, parallel.global_batch(one.mesh, batch))
    state8, m8 = step8(state8, parallel.global_batch(eight.mesh, batch))
    for key in ("total_loss", "i2mcl/tau/task", "i2mcl/tau/distill/image", "i2mcl/alpha/image", "i2mcl/alpha/text"):
      np.testing.assert_allclose(float(m8[key]), float(m1[key]), rtol=1e-4, err_msg=key)
    assert float(m8["i2mcl/learns_from_task/image"]) == float(m1["i2mcl/learns_from_task/image"])
  assert int(state8.curriculum["steps"]) == 3
  np.testing.assert_allclose(np.asarray(state8.queue["a"]), np.asarray(state1.queue["a"]), rtol=1e-4, atol=1e-6)
  # Only the visible (unmasked) examples of the batches written became usable negatives.
  assert 0 < float(m8["queue/usable_fraction"]) == float(m1["queue/usable_fraction"]) < 1
  assert int(np.sum(state8.curriculum["task_steps"])) == 3


def test_bad_dynamic_configs_are_refused():
  config = _config()
  config.curriculum.dynamic.intra = "focal"
  with pytest.raises(UserError, match="dynamic.intra='focal'"):
    _setup(config, jax.devices()[:1])
  config = _config()
  config.curriculum.dynamic.distill = False
  with pytest.raises(UserError, match="needs config.curriculum.dynamic.distill=True"):
    _setup(config, jax.devices()[:1])
  config = _config()
  mesh = parallel.make_mesh({"data": 1}, jax.devices()[:1])
  with pytest.raises(UserError, match="only \\('text',\\) has one"):
    DualEncoderModel(config, mesh, IMAGE_SHAPE, len(load_vocab(config.tokenizer.vocab)), teacher_widths={"text": 8})


def test_online_teachers_give_the_precomputed_features_when_nothing_augments(tiny_data_dir, tmp_path):
  """The build, the id join and the caption pick (text row = the caption trained on) against the teacher
  itself run in the step on the same batch: without augmentation both must be the same features."""
  from cmccl_jax.data import pipeline, teacher_features
  from cmccl_jax.data.tokenizer import build_tokenizer
  from cmccl_jax.scoring import score_shards
  from cmccl_jax.tasks.dual_encoder.online_teachers import OnlineTeachers

  teacher = str(tmp_path / "teacher")
  tiny.save_random_experiment(teacher, [(12, 10.0)])
  config = tiny.tiny_config(tiny_data_dir)
  config.curriculum.dynamic.update(dict(distill=True, image_teacher=teacher, text_teacher=teacher))
  builder = score_shards.prepare_data(config)
  resolved = teacher_features.resolve_teachers(config.curriculum.dynamic)
  precomputed = teacher_features.load_run_teachers(builder, resolved)
  assert precomputed.widths == {"image": 16, "text": 16}
  _, run_difficulty = tiny.tiny_difficulty(config)
  stream = pipeline.train_dataset(builder, config, build_tokenizer(config.tokenizer), 16, run_difficulty,
                                  precomputed)
  online = OnlineTeachers(resolved, config, IMAGE_SHAPE[0])
  features = jax.jit(online.features)
  for batch in stream.take(2).as_numpy_iterator():
    got = features(online.params, {"image": batch["image"], "tokens": batch["tokens"]})
    for modality in ("image", "text"):
      np.testing.assert_allclose(got[f"teacher/{modality}"], batch[f"teacher/{modality}"], atol=2e-5,
                                 err_msg=modality)
