"""Staged training: frozen towers never move, scheduled towers start on time, locked towers pass no gradient."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cmccl_jax import parallel, tasks
from cmccl_jax.data.tokenizer import load_vocab
from cmccl_jax.tasks.dual_encoder import step as dual_encoder_step
from cmccl_jax.tasks.dual_encoder.task import DualEncoderModel
from tests import tiny
from tests.test_train_step import IMAGE_SHAPE, _batch


def _run(steps=5, **staging):
  config = tiny.tiny_config("unused")
  config.curriculum.pacing = "none"
  config.optim.weight_decay = 0.5  # large, so a decayed frozen tower would visibly shrink
  config.staging.update(staging)
  mesh = parallel.make_mesh({"data": 1}, jax.devices()[:1])
  setup = DualEncoderModel(config, mesh, IMAGE_SHAPE, len(load_vocab("synthetic")))
  state = setup.init_state()
  history, flags = [jax.device_get(state.params["params"])], []
  step_fn = setup.train_step()
  for step in range(steps):
    state, metrics = step_fn(state, parallel.global_batch(mesh, _batch(config, seed=step)))
    history.append(jax.device_get(state.params["params"]))
    flags.append((float(metrics["trainable/image"]), float(metrics["trainable/text"])))
  return setup, history, flags


def _moved(before, after, module):
  return any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(before[module]), jax.tree.leaves(after[module])))


def test_frozen_tower_never_moves_and_is_not_decayed():
  _, history, flags = _run(image="freeze")
  assert not _moved(history[0], history[-1], "image_tower")
  assert _moved(history[0], history[-1], "text_tower")
  assert _moved(history[0], history[-1], "image_proj")  # heads keep training
  assert flags == [(0.0, 1.0)] * 5


def test_tower_unfreezes_at_its_step():
  _, history, flags = _run(text="train", text_train_from_step=3)
  moved = [_moved(history[i], history[i + 1], "text_tower") for i in range(5)]
  assert moved == [False, False, False, True, True]
  assert [f[1] for f in flags] == [0.0, 0.0, 0.0, 1.0, 1.0]
  # The image tower trains throughout (step 0 has learning rate 0: warmup starts there).
  assert [_moved(history[i], history[i + 1], "image_tower") for i in range(5)] == [False] + [True] * 4


def test_locked_tower_gets_no_gradient_and_no_dropout():
  setup, history, _ = _run(steps=2, image="lock")
  assert not _moved(history[0], history[-1], "image_tower")
  config = setup.config
  grad_fn = jax.grad(lambda p, b: dual_encoder_step.dual_encoder_loss(
      p, b, jnp.int32(0), jax.random.key(0), model=setup.model, loss_config=config.loss,
      curriculum=setup.curriculum)[0])
  grads = grad_fn(setup.init_state().params, parallel.global_batch(setup.mesh, _batch(config)))
  assert all(np.all(np.asarray(g) == 0) for g in jax.tree.leaves(grads["params"]["image_tower"]))
  assert any(np.any(np.asarray(g) != 0) for g in jax.tree.leaves(grads["params"]["text_tower"]))
  assert setup.model.lock_image and not setup.model.lock_text


def test_bad_staging_mode_names_the_value():
  config = tiny.tiny_config("unused")
  config.staging.text = "frozen"
  with pytest.raises(ValueError, match="staging.text='frozen'.*'lock'"):
    tasks.validate(config)
