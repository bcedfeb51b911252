"""The model-based scorers: kNN density, misalignment, distillation and their teachers.

The maths runs on hand-made embeddings from fake teachers; the real teachers are
checked once each: MiniLM against Hugging Face's sentence embeddings, a dual
encoder restored from an experiment directory against the model that saved it.
"""

import dataclasses
import math
import os
import shutil

import numpy as np
import pytest

from cmccl_jax.data import difficulty, shapes_scene
from cmccl_jax.data.difficulty import ScoringSettings
from cmccl_jax.scoring import embedding_scorers as es
from cmccl_jax.scoring import score_shards, scorers, teachers
from cmccl_jax.tasks.dual_encoder.trained import load_dual_encoder
from cmccl_jax.workdir import Workdir
from tests import tiny
from cmccl_jax.errors import UserError

REFERENCE = os.path.join(os.path.dirname(__file__), "data", "minilm_reference.npz")


def _fake_teacher(texts=None, images=None, scale=None, name="fake"):
  """Embeddings looked up by caption text and by the image's first pixel value."""
  embed_texts = (lambda captions: np.asarray([texts[c] for c in captions], np.float32)) if texts else None
  embed_images = (lambda ims: np.asarray([images[int(im[0, 0, 0])] for im in ims], np.float32)) if images else None
  return teachers.Teacher(name=name, embed_texts=embed_texts, embed_images=embed_images, logit_scale=scale)


def _image(key: int) -> np.ndarray:
  return np.full((2, 2, 3), key, np.uint8)


def _embedded(ids, vectors):
  """Examples that `_embed` embeds as `vectors[i]` (their caption only names them)."""
  return [{"id": i, "captions": [f"c{i}"], "vector": v} for i, v in zip(ids, vectors)]


def _embed(examples):
  return np.asarray([ex["vector"] for ex in examples], np.float32)


# ----------------------------------------------------------------------------- kNN density


def test_knn_density_worked_by_hand():
  train = _embedded(range(5), [(2, 0), (0, 1), (-1, 0), (0.6, 0.8), (0.8, 0.6)])  # (2, 0): cosine normalises
  fitted = es.KnnDensity("knn", _embed, k=2, block_rows=2).fit(scorers.batched(train, 2))
  queries = [train[0], train[3], *_embedded([9], [(3, 0)])]
  # id 0 = (1, 0): cos to the others 0, -1, 0.6, 0.8 -> top 2 mean (0.8 + 0.6) / 2 = 0.7
  # id 3 = (0.6, 0.8): cos 0.6, 0.8, -0.6, 0.96 -> (0.96 + 0.8) / 2 = 0.88
  # id 9 = (1, 0), not a training example: its twin id 0 counts: (1 + 0.8) / 2 = 0.9
  np.testing.assert_allclose(fitted.score(queries), [0.7, 0.88, 0.9], rtol=1e-6)


def test_knn_density_matches_brute_force_for_any_block_size():
  rng = np.random.default_rng(0)
  keys = rng.normal(size=(103, 7))
  key_ids = rng.permutation(1000)[:103]
  queries = rng.normal(size=(37, 7))
  query_ids = np.concatenate([key_ids[:20], 5000 + np.arange(17)])  # 20 are training examples
  k = 5
  unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)
  sims = unit(queries) @ unit(keys).T
  sims[query_ids[:, None] == key_ids[None, :]] = -np.inf
  expected = np.sort(sims, axis=1)[:, -k:].mean(axis=1)
  for block_rows in (1, 10, 17, 102, 103, 500):
    got = es.knn_density(queries, query_ids, keys, key_ids, k, block_rows=block_rows)
    np.testing.assert_allclose(got, expected, atol=1e-6, err_msg=f"block_rows={block_rows}")


def test_fitted_knn_reuses_training_embeddings_and_embeds_only_new_examples():
  calls = []

  def counting_embed(examples):
    calls.append([ex["id"] for ex in examples])
    return _embed(examples)

  train = _embedded(range(4), [(1, 0), (0, 1), (1, 1), (1, -1)])
  fitted = es.KnnDensity("knn", counting_embed, k=1).fit([train])
  assert calls == [[0, 1, 2, 3]]
  fitted.score([train[2], *_embedded([7], [(0, 1)])])
  assert calls[1:] == [[7]]


def test_knn_needs_k_other_training_examples():
  train = _embedded(range(3), [(1, 0), (0, 1), (1, 1)])
  fitted = es.KnnDensity("knn", _embed, k=3).fit([train])
  with pytest.raises(ValueError, match="lower config.scoring.knn_k"):
    fitted.score(train[:1])  # only 2 others


def test_text_embedding_is_the_normalised_mean_of_unit_caption_embeddings():
  teacher = _fake_teacher(texts={"a": (1, 0), "b": (0, 2), "c": (3, 4)})
  emb = es.text_embeddings([{"captions": ["a", "b"]}, {"captions": ["c"]}], teacher.embed_texts)
  np.testing.assert_allclose(emb, [[math.sqrt(0.5), math.sqrt(0.5)], [0.6, 0.8]], rtol=1e-6)


# ----------------------------------------------------------------------------- misalignment


def test_misalignment_worked_by_hand():
  teacher = _fake_teacher(texts={"on": (1, 0), "across": (0, 1), "opposite": (0, -2)},
                          images={1: (2, 0), 2: (0, 1)})
  examples = [{"id": 0, "image": _image(1), "captions": ["on", "across"]},  # 1 - (1 + 0) / 2
              {"id": 1, "image": _image(2), "captions": ["opposite"]},  # 1 - (-1)
              {"id": 2, "image": _image(1), "captions": ["on"]}]  # 1 - 1
  np.testing.assert_allclose(es.Misalignment(teacher).score(examples), [0.5, 2.0, 0.0], atol=1e-7)


def test_misalignment_needs_both_towers():
  with pytest.raises(ValueError, match="dual-encoder teacher"):
    es.Misalignment(_fake_teacher(texts={"a": (1, 0)}))


# ----------------------------------------------------------------------------- distillation


def test_relational_kl_worked_by_hand():
  ln3 = math.log(3)
  # p_T = softmax(ln 3, 0) = (3/4, 1/4), p_S = (1/2, 1/2): KL = 3/4 ln(3/2) + 1/4 ln(1/2) = 3/4 ln 3 - ln 2.
  expected = 0.75 * ln3 - math.log(2)
  kl = es.relational_kl([[ln3, 0.0], [ln3, 0.0]], [[0.0, 0.0], [ln3, 0.0]], np.ones((2, 2), bool))
  np.testing.assert_allclose(kl, [expected, 0.0], atol=1e-12)
  # An invalid entry has probability 0 under both models, whatever its logits.
  masked = es.relational_kl([[ln3, 0.0, 50.0]], [[0.0, 0.0, -50.0]], [[True, True, False]])
  np.testing.assert_allclose(masked, [expected], atol=1e-12)


def test_distillation_worked_by_hand():
  ln3 = math.log(3)
  teacher = _fake_teacher(texts={"x": (1, 0), "z": (0, 1)}, images={7: (1, 0), 1: (0, 1), 8: (1, 0)},
                          scale=ln3, name="teacher")
  # The student's images all lie on one line and its captions at right angles or on it: every
  # caption sees all candidate images alike, a uniform p_S.
  student = _fake_teacher(texts={"x": (0, 1), "z": (1, 0)}, images={7: (1, 0), 1: (1, 0), 8: (1, 0)},
                          scale=ln3, name="student")
  train = [{"id": 1, "image": _image(1), "captions": ["x"]}, {"id": 7, "image": _image(7), "captions": ["x"]}]
  fitted = es.Distillation(teacher, student, num_references=2).fit([train])  # references: images 1 and 7
  # Example 7 is reference 7 too, so that copy is masked; candidates (own image 7, reference 1):
  #   teacher logits ln3 * (1, 0) -> p_T = (3/4, 1/4); p_S = (1/2, 1/2); KL = 3/4 ln 3 - ln 2.
  kl_7 = 0.75 * ln3 - math.log(2)
  # Example 8, candidates (own image 8, reference 1, reference 7), p_S = 1/3 each:
  #   "x": teacher logits ln3 * (1, 0, 1) -> (3/7, 1/7, 3/7): KL = 6/7 ln(9/7) + 1/7 ln(3/7)
  #   "z": teacher logits ln3 * (0, 1, 0) -> (1/5, 3/5, 1/5): KL = 2/5 ln(3/5) + 3/5 ln(9/5)
  kl_8x = 6 / 7 * math.log(9 / 7) + 1 / 7 * math.log(3 / 7)
  kl_8z = 2 / 5 * math.log(3 / 5) + 3 / 5 * math.log(9 / 5)
  examples = [train[1], {"id": 8, "image": _image(8), "captions": ["x", "z"]}]
  np.testing.assert_allclose(fitted.score(examples), [kl_7, (kl_8x + kl_8z) / 2], rtol=1e-5)
  # A student that is the teacher has nothing left to learn.
  np.testing.assert_allclose(es.Distillation(teacher, teacher, 2).fit([train]).score(examples), [0, 0], atol=1e-7)


def test_distillation_reference_set_is_a_seeded_uniform_sample():
  teacher = _fake_teacher(texts={"a": (1, 0)}, images={i: (1, 0) for i in range(256)}, scale=1.0)
  train = [{"id": i, "image": _image(i), "captions": ["a"]} for i in range(200)]
  draws = [es.Distillation(teacher, teacher, num_references=50, seed=s).fit(scorers.batched(train, 7))
           for s in (0, 0, 1)]
  ids = [set(d._reference_ids.tolist()) for d in draws]
  assert len(ids[0]) == 50 and ids[0] == ids[1] and ids[0] != ids[2]
  assert max(ids[0]) >= 150  # the reservoir reaches the end of the stream


# ----------------------------------------------------------------------------- missing teachers


def test_teacher_scorers_without_a_teacher_name_the_field(tmp_path):
  for name in ("knn_image", "misalignment", "distillation"):
    with pytest.raises(ValueError, match=r"config.scoring.teacher is empty; set --config.scoring.teacher=exp/NAME"):
      ScoringSettings().resolved(["noun_count", name])
    with pytest.raises(ValueError, match="config.scoring.teacher is empty"):
      scorers.get_scorer(name)
  with pytest.raises(ValueError, match="config.scoring.teacher is empty"):
    ScoringSettings(text_teacher="teacher").resolved(["knn_text"])
  missing = str(tmp_path / "never_trained")
  with pytest.raises(UserError, match=f"{missing} is not a trained experiment.*bash train.sh never_trained"):
    ScoringSettings(teacher=missing).resolved(["misalignment"])


# ----------------------------------------------------------------------------- real teachers


def test_minilm_teacher_gives_sentence_transformers_embeddings():
  with np.load(REFERENCE) as f:
    sentences, pooled = [str(s) for s in f["sentences"]], f["pooled"]
  teacher = teachers.bert_teacher("minilm", batch_size=4)
  emb = teacher.embed_texts(sentences + sentences[:1])  # a repeated caption comes from the cache
  expected = pooled / np.linalg.norm(pooled, axis=1, keepdims=True)
  np.testing.assert_allclose(emb[:4], expected, atol=2e-5)
  np.testing.assert_array_equal(emb[4], emb[0])
  # knn_text on it: two paraphrases are each other's close neighbour, an unrelated caption has none.
  knn = es.knn_text_scorer(teacher, k=1)
  assert isinstance(knn, scorers.FitScorer) and knn.name == "knn_text"
  train = [{"id": 0, "captions": ["a red circle", "one red circle"]},
           {"id": 1, "captions": ["a red circle next to nothing"]},
           {"id": 2, "captions": ["the stock market fell sharply on tuesday"]}]
  density = knn.fit([train]).score(train)
  assert density[0] > 0.7 and density[1] > 0.7 and density[2] < density[0] - 0.4, density


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("exp") / "teacher_run")
  os.makedirs(workdir)
  tiny.save_random_experiment(workdir, [(3, 5.0), (9, 20.0)])
  return workdir


def test_load_dual_encoder_restores_the_saved_step(experiment):
  assert Workdir(experiment).checkpoint_steps() == [3, 9]
  assert Workdir(experiment).resolve_step(-1) == 9 and Workdir(experiment).resolve_step(0) == 3
  with pytest.raises(ValueError, match=r"no checkpoint at step 5; it has steps \[3, 9\]"):
    load_dual_encoder(experiment, 5)
  latest = load_dual_encoder(experiment)
  assert latest.step == 9 and latest.image_size == 32 and latest.tokenizer.max_len == 12
  images = np.stack([shapes_scene.make_example(0, "test", i, 32, 4, 5, 0.0, 8)["image"] for i in range(3)])
  direct = latest.model.apply(latest.params, images, method=latest.model.encode_image)
  teacher = teachers.dual_encoder_teacher(latest, batch_size=2)
  np.testing.assert_allclose(teacher.embed_images(list(images)),
                             direct / np.linalg.norm(direct, axis=1, keepdims=True), atol=1e-5)
  assert teacher.logit_scale == pytest.approx(20.0, rel=1e-5)  # step 9's, not step 3's
  assert load_dual_encoder(experiment, 3).step == 3


def test_scoring_a_synthetic_build_with_teacher_scorers(experiment, tmp_path):
  names = ("noun_count", "knn_text", "knn_image", "misalignment", "distillation", "combined")
  config = tiny.tiny_config(str(tmp_path))
  config.data.synthetic.update(num_train=24, num_validation=4, num_test=4)
  config.curriculum.update(scorer="misalignment", num_blocks=2)
  config.scoring.update(scorers=names, teacher=experiment, text_teacher="teacher", knn_k=2, distill_references=8,
                        combined=("knn_image", "misalignment"), batch_size=16)
  builder = score_shards.prepare_data(config)
  settings = ScoringSettings.from_config(config.scoring).resolved(names)
  assert settings.teacher_step == 9 and settings.student_step == 3  # made concrete
  built = {name: difficulty.score_builder(builder, name, settings) for name in names}
  assert all(b.is_prepared() for b in built.values())
  assert built["misalignment"].info.metadata["settings"] == {"teacher": f"{experiment}@9"}
  assert built["distillation"].info.metadata["settings"]["student"] == f"{experiment}@3"
  assert built["noun_count"].builder_config.name.startswith("noun_count-synthetic_shapes-")  # no teacher in it
  # Another teacher checkpoint is another score build of the teacher scorers only.
  moved = dataclasses.replace(settings, teacher_step=3, student_step=9)
  assert difficulty.score_builder(builder, "noun_count", moved).builder_config.name == \
      built["noun_count"].builder_config.name
  assert difficulty.score_builder(builder, "knn_image", moved).builder_config.name != \
      built["knn_image"].builder_config.name
  run = tiny.tiny_difficulty(config)[1]
  ids, columns = run.table.split("validation")
  examples = [shapes_scene.make_example(0, "validation", i, 32, 4, 5, 0.0, 24) for i in range(4)]
  assert ids.tolist() == [int(ex["id"]) for ex in examples]
  teacher = teachers.dual_encoder_teacher(load_dual_encoder(experiment, 9))
  np.testing.assert_allclose(columns["misalignment"], es.Misalignment(teacher).score(examples), atol=1e-5)
  assert set(columns) == set(names)
  assert np.all((0.0 <= columns["combined"]) & (columns["combined"] <= 1.0)) and np.all(columns["distillation"] >= 0)
  assert np.all(np.abs(columns["knn_image"]) <= 1.0)


def test_experiment_without_checkpoints_or_config_is_named(experiment, tmp_path):
  config_only = tmp_path / "config_only"
  os.makedirs(config_only)
  shutil.copy(os.path.join(experiment, "config.json"), config_only)
  with pytest.raises(UserError, match="holds no checkpoints yet"):
    ScoringSettings(teacher=str(config_only)).resolved(["knn_image"])
  checkpoints_only = tmp_path / "checkpoints_only"
  shutil.copytree(os.path.join(experiment, "checkpoints"), checkpoints_only / "checkpoints")
  with pytest.raises(UserError, match="no config.json"):
    load_dual_encoder(str(checkpoints_only))


def test_distillation_student_may_not_be_the_teacher(experiment):
  with pytest.raises(ValueError, match="student is its teacher.*config.scoring.student_step=0"):
    ScoringSettings(teacher=experiment, student_step=-1).resolved(["distillation"])
