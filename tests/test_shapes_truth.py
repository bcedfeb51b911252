"""Which scenes a synthetic_shapes caption is true of, and its one-word-off distractors."""

import hashlib

import numpy as np
import pytest

from cmccl_jax.data import shapes_scene as ss
from cmccl_jax.data import shapes_truth as st
from cmccl_jax.data import synthetic_shapes


def obj(colour, shape, size="small", x=0.5, y=0.5):
  return ss.SceneObject(shape, colour, size, x, y, ss.DIAMETERS[size][0])


# Hand-built scenes (positions only matter for relations: x grows to the right, y downwards).
SCENES = [
    ss.Scene((obj("red", "circle", "small", 0.2, 0.5), obj("blue", "square", "large", 0.8, 0.5))),   # 0
    ss.Scene((obj("blue", "circle", "small", 0.2, 0.5), obj("red", "square", "large", 0.8, 0.5))),   # 1: bindings swapped
    ss.Scene((obj("red", "circle", "large", 0.8, 0.5), obj("blue", "square", "small", 0.2, 0.5))),   # 2: mirrored, sizes swapped
    ss.Scene((obj("red", "circle", "small", 0.5, 0.2),)),                                            # 3
    ss.Scene((obj("red", "circle", "small", 0.2, 0.2), obj("red", "circle", "large", 0.8, 0.8),
              obj("green", "cross", "small", 0.2, 0.8))),                                            # 4
]

CASES = {
    "a red circle": [0, 2, 3, 4],
    "a small red circle": [0, 3, 4],
    "a large blue square": [0],
    "a red circle and a blue square": [0, 2],  # binding: scene 1 has the colours and shapes, not the pairs
    "a red circle and a red circle": [4],  # two different objects
    "a small red circle left of a blue square": [0],
    "a large red circle right of a blue square": [2],
    "a small red circle above a red circle": [],  # (0.2, 0.2) vs (0.8, 0.8): |dx| = |dy|, so x decides: left of
    "a small red circle left of a red circle": [4],
    "a small green cross left of a red circle": [4],  # vs (0.8, 0.8): dx = dy, x decides
    "two shapes: a red circle and a blue square": [0, 2],
    "one shape: a red circle": [3],
    "three shapes: a red circle, a red circle and a green cross": [4],
    "four shapes: a red circle, a red circle and a green cross": [],  # the count does not match the list
    "one red shape and one blue shape": [0, 1, 2],
    "two red shapes and one green shape": [4],
    "one red shape": [3],  # whole-scene counts: scenes 0-2 have a blue one as well
    "one circle and one square": [0, 1, 2],
    "two circles and one cross": [4],
}


@pytest.mark.parametrize("caption", list(CASES))
def test_a_caption_is_true_of_exactly_the_scenes_it_describes(caption):
  assert np.flatnonzero(st.relevance(SCENES, [caption])[:, 0]).tolist() == CASES[caption]


def test_every_generated_caption_is_true_of_its_own_scene_and_each_distractor_false():
  scenes, texts, owners = [], [], []
  for i in range(300):
    rng = np.random.default_rng([7, i])
    scene = ss.sample_scene(rng, max_objects=5)
    captions, _ = ss.captions(scene, rng)
    scenes.append(scene)
    texts += captions
    owners += [i] * len(captions)
  relevance = st.relevance(scenes, texts)
  assert relevance[owners, np.arange(len(texts))].all()
  rng = np.random.default_rng(0)
  for text, owner in zip(texts[:500], owners):
    false = st.distractor(text, scenes[owner], rng)
    words, false_words = text.split(" "), false.split(" ")
    assert len(words) == len(false_words) and sum(a != b for a, b in zip(words, false_words)) == 1, (text, false)
    assert not st.relevance([scenes[owner]], [false])[0, 0], (text, false)


def test_distractors_are_hard_negatives_a_word_apart():
  rng = np.random.default_rng(0)
  got = {st.distractor("a small red circle left of a blue square", SCENES[0], rng) for _ in range(40)}
  assert "a small red circle right of a blue square" in got  # the relation flipped
  assert "a large red circle left of a blue square" in got  # the size
  assert "a small blue circle left of a blue square" in got  # a colour
  assert all(not st.relevance([SCENES[0]], [g])[0, 0] for g in got)


@pytest.mark.parametrize("caption", ["", "a red", "a purple hexagon", "three shapes a red circle",
                                     "two red shapes and one circle", "the red circle"])
def test_text_outside_the_grammar_is_named(caption):
  with pytest.raises(ValueError, match="not a synthetic_shapes caption"):
    st.parse(caption)


def test_the_hard_variant_has_its_levels_objects_and_distractors(tmp_path):
  config = synthetic_shapes.synthetic_shapes_config(
      num_train=6, num_validation=2, num_test=4, min_objects=3, max_objects=5,
      caption_levels=("pair", "relation", "scene"), distractors=True)
  assert config.name.endswith("-min3-L234-d")
  builder = synthetic_shapes.SyntheticShapes(data_dir=str(tmp_path), config=config)
  builder.download_and_prepare()
  examples = list(builder.as_dataset(split="test").as_numpy_iterator())
  assert all(e["num_objects"] >= 3 for e in examples)
  assert all(set(e["caption_levels"].tolist()) == {2, 3, 4} for e in examples)  # 5 captions cycle the 3 levels
  ids = [e["id"] for e in examples]
  texts = [t.decode() for e in examples for t in e["captions"]]
  false = [t.decode() for e in examples for t in e["distractors"]]
  owners = np.repeat(np.arange(len(examples)), 5)
  assert builder.relevance("test", ids, texts)[owners, np.arange(len(texts))].all()
  assert not builder.relevance("test", ids, false)[owners, np.arange(len(false))].any()
  with pytest.raises(ValueError, match="is not of the test split"):
    builder.relevance("test", [0], texts[:1])


def test_the_default_build_is_unchanged_by_the_new_parameters():
  """Its name and examples: the digest was taken with the generator before min_objects and caption_levels."""
  assert synthetic_shapes.synthetic_shapes_config().name == "s32-tr8000-va500-te1000-o4-c5-p0.0-seed0"
  digest = hashlib.sha256()
  for split in ("train", "test"):
    for i in range(40):
      e = ss.make_example(0, split, i, corrupt_fraction=0.2, num_examples=100)
      digest.update(e["image"].tobytes())
      digest.update("|".join(e["captions"]).encode())
      digest.update(str(e["caption_levels"]).encode())
  assert digest.hexdigest() == "a713b93212ddfff4ee23a50a0d0e517df6dfa0e1eff37a50ed4288292cdb0d71"


@pytest.mark.parametrize("overrides,message", [
    (dict(caption_levels=("pair", "colour")), "caption_levels"),
    (dict(caption_levels=("pair", "relation")), "need two objects, but min_objects=1"),
    (dict(min_objects=5, max_objects=4), "min_objects must be in 1..max_objects=4"),
])
def test_bad_variant_parameters_are_named(overrides, message):
  with pytest.raises(Exception, match=message):
    synthetic_shapes.synthetic_shapes_config(**overrides)
