"""XMC-GAN: its loss maths, its modules, the sharded step and the train → test → sample path."""

import csv
import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from cmccl_jax.curriculum.curriculum import Curriculum
from cmccl_jax import losses, parallel
from cmccl_jax.models import xmcgan
from cmccl_jax.run import loop
from cmccl_jax.tasks.dual_encoder.trained import load_dual_encoder
from cmccl_jax.tasks.xmcgan import step as gan_step
from cmccl_jax.tasks.xmcgan.task import XmcganModel, XmcganTask
from cmccl_jax.workdir import Workdir
from tests import tiny


def test_region_word_similarity_matches_a_loop_over_pairs():
  rng = np.random.default_rng(0)
  n, r, l, d = 3, 5, 4, 6
  regions = rng.normal(size=(n, r, d))
  words = rng.normal(size=(n, l, d))
  mask = np.array([[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 1, 1]], bool)
  unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)
  regions, words = unit(regions), unit(words)
  expected = np.zeros((n, n))
  for i in range(n):
    for j in range(n):
      total = 0.0
      for w in range(l):
        if not mask[j, w]:
          continue
        a = np.exp(5.0 * regions[i] @ words[j, w])
        context = (a / a.sum()) @ regions[i]
        total += np.exp(5.0 * (unit(context) @ words[j, w]))
      expected[i, j] = np.log(total) / 5.0
  got = losses.region_word_similarity(jnp.asarray(regions), jnp.asarray(words), jnp.asarray(mask))
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_contrastive_loss_takes_any_similarity():
  rng = np.random.default_rng(1)
  a, b = jnp.asarray(rng.normal(size=(5, 3))), jnp.asarray(rng.normal(size=(5, 3)))
  valid = jnp.asarray([True, True, False, True, True])
  dot, _ = losses.contrastive_loss(a, b, scale=10.0, valid=valid)
  custom, _ = losses.contrastive_loss(a, b, scale=10.0, valid=valid, similarity=lambda x, y: x @ y.T)
  assert float(custom) == pytest.approx(float(dot), rel=1e-6)
  doubled, _ = losses.contrastive_loss(a, b, scale=5.0, valid=valid, similarity=lambda x, y: 2 * x @ y.T)
  assert float(doubled) == pytest.approx(float(dot), rel=1e-6)


def test_r_precision_counts_ties_against_the_model():
  from cmccl_jax.evaluation.generation import r_precision
  text = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])  # captions 0 and 1 embed identically
  images = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
  candidates = np.array([[0, 1], [1, 2], [2, 0]])
  # Image 0 ties its caption with caption 1 (a loss); image 1 prefers caption 2 (a loss); image 2 wins.
  assert r_precision(images, text, candidates) == pytest.approx(1 / 3)


def test_hinge_losses_worked_by_hand():
  real = jnp.asarray([2.0, 0.5, -1.0, 9.0])
  fake = jnp.asarray([-2.0, 0.0, 1.0, 9.0])
  valid = jnp.asarray([True, True, True, False])
  # real: relu(1 - x) = 0, 0.5, 2 → 2.5 / 3; fake: relu(1 + x) = 0, 1, 2 → 3 / 3.
  assert float(losses.hinge_d_loss(real, fake, valid)) == pytest.approx(2.5 / 3 + 1.0)
  assert float(losses.hinge_g_loss(fake, valid)) == pytest.approx(-(-2.0 + 0.0 + 1.0) / 3)


def test_word_region_attention_ignores_padded_words():
  rng = np.random.default_rng(2)
  regions = jnp.asarray(rng.normal(size=(2, 4, 4, 3)))
  words = rng.normal(size=(2, 5, 3))
  mask = jnp.asarray([[1, 1, 0, 0, 0], [1, 1, 1, 1, 0]], bool)
  before = xmcgan.word_region_attention(regions, jnp.asarray(words), mask, 15.0)
  words[0, 2:] = 100.0
  words[1, 4] = -7.0
  after = xmcgan.word_region_attention(regions, jnp.asarray(words), mask, 15.0)
  np.testing.assert_allclose(before, after, atol=1e-6)
  # Each context is a convex combination of its caption's real words.
  assert np.all(np.abs(np.asarray(after[0])) <= np.abs(words[0, :2]).max(axis=0) + 1e-5)


def test_image_sizes_the_gan_cannot_attend_at_are_refused():
  with pytest.raises(ValueError, match="power-of-two image size of at least 32.*image_size"):
    xmcgan._levels(48)
  with pytest.raises(ValueError, match="at least 32"):
    xmcgan._levels(16)
  assert xmcgan._levels(32) == 3 and xmcgan._levels(128) == 5


def test_local_conditional_batch_norm_is_a_dense_over_condition_and_upsampled_context():
  """γ, β = Dense([cond, nearest-upsampled context]) at every pixel, computed in its cheaper factored form."""
  rng = np.random.default_rng(0)
  x, cond, context = (rng.normal(size=s).astype(np.float32) for s in ((2, 8, 8, 4), (2, 3), (2, 4, 4, 5)))
  mask = jnp.ones((2,), bool)
  cbn = xmcgan.ConditionalBatchNorm()
  variables = cbn.init(jax.random.key(0), x, cond, mask, train=True, context=context)
  params = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), variables["params"])
  out, _ = cbn.apply({"params": params, "batch_stats": variables["batch_stats"]}, x, cond, mask, train=True,
                     context=context, mutable=["batch_stats"])
  up = np.repeat(np.repeat(context, 2, axis=1), 2, axis=2)
  pixels = np.concatenate([np.broadcast_to(cond[:, None, None], (2, 8, 8, 3)), up], axis=-1)
  affine = {name: pixels @ np.concatenate([params[name]["kernel"], params[f"{name}_local"]["kernel"]])
            + params[name]["bias"] for name in ("gamma", "beta")}
  normed = (x - x.mean(axis=(0, 1, 2))) / np.sqrt(x.var(axis=(0, 1, 2)) + 1e-5)
  np.testing.assert_allclose(out, normed * (1 + affine["gamma"]) + affine["beta"], rtol=1e-4, atol=1e-4)


@pytest.fixture(scope="module")
def stage1(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("stage1") / "stage1")
  os.makedirs(workdir)
  tiny.save_random_experiment(workdir, [(5, 10.0)])
  return workdir


def _model(config, mesh, stage1) -> XmcganModel:
  return XmcganModel(config.gan, Curriculum.from_config(config.curriculum, int(config.num_steps)), mesh, config.param_sharding, (32, 32, 3), stage1)


def _batch(n: int, seed: int = 0):
  rng = np.random.default_rng(seed)
  tokens = np.zeros((n, 12), np.int32)
  for i in range(n):
    tokens[i, :3 + i % 6] = rng.integers(4, 30, 3 + i % 6)
  return {"image": rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), "tokens": tokens,
          "block": np.asarray([i % 4 for i in range(n)], np.int32), "difficulty": np.zeros(n, np.float32),
          "id": np.arange(n)}


def test_gan_step_on_8_devices_equals_one_device(stage1, tiny_data_dir):
  """Negatives are global: the sharded step's losses and gradient norms match the single-device ones.

  (Parameters are not compared: Adam's first step is ±lr wherever a gradient is ~0,
  so round-off flips signs there without any difference in the maths.)
  """
  config = tiny.tiny_gan_config(tiny_data_dir, stage1)
  config.curriculum.pacing = "phases"  # step 0 shows block 0 only: the mask must hold across devices
  config.gan.d_steps = 1  # one forward, two VJPs: the sharded maths, at half the compile time (CPU SPMD is slow)
  trained = load_dual_encoder(stage1)
  batch = _batch(16)
  results = []
  for devices in (jax.devices()[:1], jax.devices()[:8]):
    mesh = parallel.make_mesh({"data": -1}, devices)
    setup = _model(config, mesh, trained)
    state, metrics = setup.train_step()(setup.init_state(), parallel.global_batch(mesh, batch))
    results.append(jax.device_get(metrics))
  m1, m8 = results
  assert m1["visible_fraction"] == pytest.approx(4 / 16)
  for key in m1:
    np.testing.assert_allclose(m8[key], m1[key], rtol=2e-4, atol=1e-5, err_msg=key)
  assert set(gan_step.LOSS_TERMS) <= {k.split("/", 1)[1] for k in m1 if k.startswith("loss/")}


def test_a_bert_text_tower_conditions_the_gan(tiny_data_dir, tmp_path):
  """Stage 1 with a BERT text tower (as configs/minilm_synthetic.py's MiniLM): G and D read its word states.

  Also runs two D steps per G step (the unrolled D-only step).
  """
  from tests.test_text_tower import TINY_BERT
  workdir = str(tmp_path / "bert_stage1")
  os.makedirs(workdir)
  tiny.save_random_experiment(workdir, [(5, 10.0)], text_tower=TINY_BERT)
  config = tiny.tiny_gan_config(tiny_data_dir, workdir)
  config.gan.d_steps = 2
  trained = load_dual_encoder(workdir)
  assert trained.config.model.text.kind == "bert"
  mesh = parallel.make_mesh({"data": 1}, jax.devices()[:1])
  setup = _model(config, mesh, trained)
  state = setup.init_state()
  tokens = jnp.asarray(_batch(4)["tokens"])
  sentence, words, word_mask = gan_step.text_features(state.encoder, tokens, encoder=setup.encoder)
  assert words.shape == (4, 12, TINY_BERT["hidden_size"]) and sentence.shape == (4, 16)
  new_state, metrics = setup.train_step()(state, parallel.global_batch(mesh, _batch(8)))
  assert int(new_state.step) == 1
  assert all(np.isfinite(v) for v in jax.device_get(metrics).values())


def test_masked_examples_change_no_loss(stage1, tiny_data_dir):
  """The pacing mask drops an example from every term: its image and caption may be anything."""
  config = tiny.tiny_gan_config(tiny_data_dir, stage1)
  mesh = parallel.make_mesh({"data": 1}, jax.devices()[:1])
  setup = _model(config, mesh, load_dual_encoder(stage1))
  state = setup.init_state()
  valid = jnp.asarray([True, False, True, True, False, True])

  @jax.jit
  def terms(batch):
    text = gan_step.text_features(state.encoder, batch["tokens"], encoder=setup.encoder)
    z = jax.random.normal(jax.random.key(0), (6, int(config.gan.z_dim)))
    _, aux = gan_step.gan_losses(state.g_params, state.d_params, state.g_stats, state.d_stats,
                                 encoder_vars=state.encoder, real=gan_step.to_unit_range(batch["image"]), text=text,
                                 z=z, valid=valid, generator=setup.generator, discriminator=setup.discriminator,
                                 encoder=setup.encoder, encoder_size=setup.encoder_size, loss_config=config.gan.loss)
    return aux["terms"]

  batch = _batch(6, seed=3)
  other = _batch(6, seed=4)
  changed = {k: v.copy() for k, v in batch.items()}
  for k in ("image", "tokens"):
    changed[k][[1, 4]] = other[k][[1, 4]]
  before, after = terms(batch), terms(changed)
  for name in gan_step.LOSS_TERMS:
    assert float(after[name]) == pytest.approx(float(before[name]), rel=1e-5, abs=1e-6), name
  changed["image"][0] = other["image"][0]  # a visible example does change the losses
  assert float(terms(changed)["sentence_real"]) != pytest.approx(float(before["sentence_real"]), rel=1e-6)


def test_train_evaluate_and_sample_a_tiny_gan(stage1, tiny_data_dir, tmp_path, capsys):
  own_stage1 = str(tmp_path / "stage1")
  shutil.copytree(stage1, own_stage1)
  config = tiny.tiny_gan_config(tiny_data_dir, own_stage1)
  workdir = str(tmp_path / "gan")
  scores = loop.train(config, workdir)
  for prefix in ("g", "ema"):
    assert np.isfinite(scores[f"{prefix}/fd_stage1"]) and scores[f"{prefix}/fd_stage1"] >= 0
    assert 0 <= scores[f"{prefix}/alignment/r_precision"] <= 100
  assert scores["g/chance/r_precision"] == pytest.approx(100 / 8)
  records = Workdir(workdir).read_metrics()
  logged = [r for r in records if "loss/g_total" in r]
  assert [r["step"] for r in logged] == [2, 4] and all(np.isfinite(r["loss/d_total"]) for r in logged)
  assert loop.train(config, workdir) == {}  # already trained: resumes at the end, nothing to do
  shutil.rmtree(own_stage1)  # the GAN's checkpoints carry the stage-1 weights: test and sample need no stage 1

  with open(os.path.join(workdir, "config.json")) as f:
    saved = json.load(f)
  assert saved["model_type"] == "xmcgan"
  capsys.readouterr()
  rows = loop.evaluate_checkpoints(config, workdir)
  assert "No FID Inception weights given" in capsys.readouterr().out  # said plainly, offline metrics only
  assert [r["step"] for r in rows] == [1, 2, 4]  # orbax keeps the first step too
  assert not any(k.endswith(("/fid", "/is")) for k in rows[-1])
  assert rows[-1]["ema/fd_stage1"] == pytest.approx(scores["ema/fd_stage1"], rel=1e-4)
  with open(os.path.join(workdir, "scores.csv")) as f:
    assert [int(r["step"]) for r in csv.DictReader(f)] == [1, 2, 4]

  task = XmcganTask(config, Workdir(workdir), with_data=False)
  out = task.sample(Workdir(workdir), ["one red circle", "two blue squares"], num_per_caption=3,
                    out=str(tmp_path / "grid.png"))
  image = np.asarray(Image.open(out))
  zoom = 128 // 32
  assert image.shape == (2 * 34 * zoom, 3 * 34 * zoom, 3)
  with open(str(tmp_path / "grid.txt")) as f:
    assert f.read() == "row 0: one red circle\nrow 1: two blue squares\n"
  with pytest.raises(ValueError, match="no checkpoint at step 3"):
    task.sample(Workdir(workdir), ["x"], step=3)
