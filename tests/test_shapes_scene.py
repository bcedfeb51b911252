import collections
import itertools
import re

import numpy as np
import pytest

from cmccl_jax.data import shapes_scene as ss


def _obj(shape="circle", colour="red", size="small", x=0.5, y=0.5, diameter=None):
  diameter = ss.DIAMETERS[size][0] if diameter is None else diameter
  return ss.SceneObject(shape, colour, size, x, y, diameter)


def _scenes(count, max_objects=4, seed=0):
  rng = np.random.default_rng(seed)
  return [ss.sample_scene(rng, max_objects) for _ in range(count)]


def _tokens(caption):
  """BERT basic tokenization: words, and punctuation marks as tokens of their own."""
  return re.findall(r"\w+|[^\w\s]", caption)


# ---------------------------------------------------------------- an independent caption checker
_WORD_NUMBER = {w: k + 1 for k, w in enumerate(ss.NUMBER_WORDS)}
_SINGULAR = {**{s: s for s in ss.SHAPES}, **{ss.PLURALS[s]: s for s in ss.SHAPES}}


def _matches(obj, words):
  """words = [size?, colour, shape] of an "a ..." phrase."""
  *size, colour, shape = words
  return obj.colour == colour and obj.shape == shape and (not size or obj.size == size[0])


def _phrase_words(phrase):
  words = phrase.split()
  assert words[0] == "a", phrase
  return words[1:]


def _box_side(a, b, relation):
  """Whether a's whole box is on the named side of b's box (y grows downwards)."""
  ra, rb = a.diameter / 2, b.diameter / 2
  return {
      "left of": a.x + ra < b.x - rb,
      "right of": a.x - ra > b.x + rb,
      "above": a.y + ra < b.y - rb,
      "below": a.y - ra > b.y + rb,
  }[relation]


def _check_caption(scene, caption, level):
  objects = scene.objects
  if level in (0, 1):
    words = _phrase_words(caption)
    assert len(words) == 2 + level, caption
    assert any(_matches(o, words) for o in objects), caption
  elif level == 2:
    first, second = caption.split(" and ")
    pairs = itertools.permutations(objects, 2)
    assert any(_matches(a, _phrase_words(first)) and _matches(b, _phrase_words(second)) for a, b in pairs)
  elif level == 3:
    m = re.fullmatch(r"(a \w+ \w+ \w+) (left of|right of|above|below) (a \w+ \w+)", caption)
    assert m, caption
    first, rel, second = m.groups()
    pairs = itertools.permutations(objects, 2)
    assert any(_matches(a, _phrase_words(first)) and _matches(b, _phrase_words(second))
               and _box_side(a, b, rel) for a, b in pairs), caption
  elif level == 4:
    if ":" in caption:
      head, listed = caption.split(": ")
      number, noun = head.split()
      assert _WORD_NUMBER[number] == len(objects) and noun == ("shape" if len(objects) == 1 else "shapes")
      phrases = re.split(r", | and ", listed)
      named = collections.Counter(tuple(_phrase_words(p)) for p in phrases)
      assert named == collections.Counter((o.colour, o.shape) for o in objects), caption
    else:
      groups = [g.split() for g in re.split(r", | and ", caption)]
      if len(groups[0]) == 3:  # "two red shapes"
        counted = {colour: _WORD_NUMBER[n] for n, colour, _ in groups}
        assert counted == collections.Counter(o.colour for o in objects), caption
      else:  # "two circles"
        counted = {_SINGULAR[noun]: _WORD_NUMBER[n] for n, noun in groups}
        assert counted == collections.Counter(o.shape for o in objects), caption
  else:
    raise AssertionError(level)


# ---------------------------------------------------------------- scenes


def test_sample_scene_objects_are_inside_and_apart():
  counts = collections.Counter()
  for scene in _scenes(300, max_objects=ss.MAX_OBJECTS):
    counts[len(scene.objects)] += 1
    for o in scene.objects:
      r = o.diameter / 2
      assert 0 < o.x - r and o.x + r < 1 and 0 < o.y - r and o.y + r < 1
      assert ss.DIAMETERS[o.size][0] <= o.diameter <= ss.DIAMETERS[o.size][1]
    for a, b in itertools.combinations(scene.objects, 2):
      assert any(_box_side(a, b, rel) for rel in ss.RELATIONS)
  assert sorted(counts) == list(range(1, ss.MAX_OBJECTS + 1))


def test_sample_scene_rejects_too_many_objects():
  with pytest.raises(ValueError, match="max_objects"):
    ss.sample_scene(np.random.default_rng(0), ss.MAX_OBJECTS + 1)


def test_colours_are_well_separated():
  rgb = {name: np.asarray(v, float) for name, v in ss.COLOURS.items()}
  for a, b in itertools.combinations(rgb, 2):
    assert np.linalg.norm(rgb[a] - rgb[b]) >= 140, (a, b)
  for v in rgb.values():
    assert np.linalg.norm(v - np.asarray(ss.BACKGROUND)) >= 180


# ---------------------------------------------------------------- rendering


@pytest.mark.parametrize("image_size", [32, 64, 128])
def test_render_puts_the_object_colour_at_its_centre(image_size):
  palette = np.asarray(list(ss.COLOURS.values()), float)
  colours = list(ss.COLOURS)
  for k, shape in enumerate(ss.SHAPES):
    colour = colours[k % len(colours)]
    other = colours[(k + 3) % len(colours)]
    scene = ss.Scene((_obj(shape, colour, "small", 0.25, 0.3), _obj("square", other, "large", 0.7, 0.7)),
                     noise_seed=k)
    image = ss.render(scene, image_size)
    assert image.shape == (image_size, image_size, 3) and image.dtype == np.uint8
    for o in scene.objects:
      pixel = image[int(o.y * image_size), int(o.x * image_size)].astype(float)
      assert np.abs(pixel - ss.COLOURS[o.colour]).max() <= 5 * ss.NOISE_STD
      assert colours[np.argmin(np.linalg.norm(palette - pixel, axis=1))] == o.colour
    corner = image[:2, -2:].reshape(-1, 3).astype(float)
    assert np.abs(corner - ss.BACKGROUND).max() <= 5 * ss.NOISE_STD


def test_small_shapes_are_at_least_7_pixels_across_at_32():
  for shape in ss.SHAPES:
    image = ss.render(ss.Scene((_obj(shape, "white", "small"),)), 32).astype(float)
    painted = np.abs(image - ss.BACKGROUND).max(axis=-1) > 10 * ss.NOISE_STD
    rows, cols = np.nonzero(painted)
    assert cols.max() - cols.min() + 1 >= 7, shape
    assert rows.max() - rows.min() + 1 >= 7, shape


def test_shapes_differ_from_each_other():
  masks = {s: ss.render(ss.Scene((_obj(s, "white", "large"),)), 32).max(-1) > 128 for s in ss.SHAPES}
  for a, b in itertools.combinations(ss.SHAPES, 2):
    assert np.sum(masks[a] != masks[b]) >= 10, (a, b)


# ---------------------------------------------------------------- captions


@pytest.mark.parametrize("a_xy, b_xy, expected", [
    ((0.2, 0.5), (0.8, 0.5), "left of"),
    ((0.8, 0.4), (0.2, 0.6), "right of"),
    ((0.5, 0.2), (0.45, 0.8), "above"),
    ((0.3, 0.9), (0.4, 0.3), "below"),
])
def test_relation_follows_positions(a_xy, b_xy, expected):
  a = _obj("circle", "red", "small", *a_xy)
  b = _obj("square", "blue", "small", *b_xy)
  assert ss.relation(a, b) == expected
  captions = {ss.caption(ss.Scene((a, b)), 3, np.random.default_rng(k)) for k in range(20)}
  inverse = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
  assert captions == {f"a small red circle {expected} a blue square",
                      f"a small blue square {inverse[expected]} a red circle"}


def test_captions_are_true_descriptions():
  rng = np.random.default_rng(1)
  seen_levels = collections.Counter()
  for scene in _scenes(400, max_objects=ss.MAX_OBJECTS):
    texts, levels = ss.captions(scene, rng, num_captions=5)
    for text, level in zip(texts, levels):
      _check_caption(scene, text, level)
      seen_levels[level] += 1
  assert sorted(seen_levels) == list(range(len(ss.CAPTION_LEVELS)))


def test_caption_levels_vary_and_relations_need_two_objects():
  rng = np.random.default_rng(2)
  for scene in _scenes(200):
    _, levels = ss.captions(scene, rng, num_captions=5)
    if len(scene.objects) == 1:
      assert set(levels) == {0, 1, 4}
    else:
      assert sorted(levels) == list(range(5))
  single = ss.Scene((_obj(),))
  with pytest.raises(ValueError, match="two objects"):
    ss.caption(single, 3, rng)


def test_captions_use_exactly_the_vocab():
  rng = np.random.default_rng(3)
  used = set()
  for scene in _scenes(500, max_objects=ss.MAX_OBJECTS):
    for text in ss.captions(scene, rng, num_captions=5)[0]:
      assert re.fullmatch(r"[a-z ,:]+", text), text
      used.update(_tokens(text))
  assert used <= set(ss.VOCAB)
  assert used == set(ss.VOCAB), f"VOCAB words never used: {set(ss.VOCAB) - used}"
  assert list(ss.VOCAB) == sorted(set(ss.VOCAB))


# ---------------------------------------------------------------- complexity


def test_complexity_hand_worked():
  big = _obj("circle", "red", "large", 0.25, 0.5, diameter=ss.DIAMETERS["large"][1])
  small = _obj("square", "red", "small", 0.75, 0.5, diameter=ss.DIAMETERS["small"][0])
  # A = (shared colour 1 + shared shape 0) / 2 = 0.5; S = mean(0, 1) = 0.5.
  assert ss.complexity(ss.Scene((big, small))) == pytest.approx(2 + (0.5 + 0.5) / 3)
  assert ss.complexity(ss.Scene((big,))) == pytest.approx(1.0)


def test_complexity_grows_with_objects_confusability_and_smallness():
  a = _obj("circle", "red", "large", 0.25, 0.25, diameter=0.4)
  b = _obj("square", "blue", "large", 0.75, 0.25, diameter=0.4)
  c = _obj("cross", "green", "large", 0.25, 0.75, diameter=0.4)
  base = ss.complexity(ss.Scene((a, b)))
  assert ss.complexity(ss.Scene((a, b, c))) > base
  assert ss.complexity(ss.Scene((a, _obj("square", "red", "large", 0.75, 0.25, 0.4)))) > base
  assert ss.complexity(ss.Scene((a, _obj("circle", "blue", "large", 0.75, 0.25, 0.4)))) > base
  assert ss.complexity(ss.Scene((a, _obj("square", "blue", "small", 0.75, 0.25, 0.25)))) > base
  for scene in _scenes(300):
    n = len(scene.objects)
    assert n <= ss.complexity(scene) <= n + 2 / 3


def test_complexity_has_few_ties():
  values = [ss.complexity(s) for s in _scenes(500)]
  assert len(set(values)) == len(values)


# ---------------------------------------------------------------- examples


def _assert_same(a, b):
  assert a.keys() == b.keys()
  for key in a:
    np.testing.assert_array_equal(a[key], b[key])


def test_make_example_is_deterministic_in_seed_split_index():
  first = ss.make_example(0, "train", 7)
  _assert_same(first, ss.make_example(0, "train", 7))
  for other in (ss.make_example(0, "train", 8), ss.make_example(0, "test", 7), ss.make_example(1, "train", 7)):
    assert not np.array_equal(first["image"], other["image"])
  assert first["image"].shape == (32, 32, 3)
  assert len(first["captions"]) == len(first["caption_levels"]) == 5
  assert ss.make_example(0, "train", 7)["id"] != ss.make_example(0, "validation", 7)["id"]
  with pytest.raises(ValueError, match="unknown split 'dev'; known splits: train, validation, test"):
    ss.make_example(0, "dev", 7)


def test_corruption_partner_rate_and_range():
  partners = [ss.corruption_partner(0, i, 0.3, 1000) for i in range(4000)]
  corrupted = [(i, p) for i, p in enumerate(partners) if p is not None]
  assert abs(len(corrupted) / 4000 - 0.3) < 0.03
  assert all(p != i and 0 <= p < 1000 for i, p in corrupted)
  assert all(ss.corruption_partner(0, i, 0.0, 1000) is None for i in range(100))


def test_corrupted_examples_carry_another_examples_captions():
  kwargs = dict(corrupt_fraction=0.5, num_examples=50)
  examples = [ss.make_example(0, "train", i, **kwargs) for i in range(50)]
  corrupted = [i for i, e in enumerate(examples) if e["corrupted"]]
  assert 10 <= len(corrupted) <= 40
  for i in corrupted:
    clean = ss.make_example(0, "train", i)
    partner = ss.make_example(0, "train", ss.corruption_partner(0, i, 0.5, 50))
    np.testing.assert_array_equal(examples[i]["image"], clean["image"])
    assert examples[i]["complexity"] == clean["complexity"]
    assert examples[i]["captions"] == partner["captions"] != clean["captions"]
    assert examples[i]["caption_levels"] == partner["caption_levels"]
  for split in ("validation", "test"):
    assert not any(ss.make_example(0, split, i, **kwargs)["corrupted"] for i in range(50))
