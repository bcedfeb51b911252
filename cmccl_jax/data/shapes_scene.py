"""Procedural captioned scenes: the built-in `synthetic_shapes` data.

A scene is a few coloured shapes on a dark background. Its captions are true
descriptions at graded compositional complexity, so a curriculum has a known
ground truth to be checked against: one object, one sized object, two objects,
a spatial relation, a whole-scene count. Everything here is pure numpy and
deterministic in the `np.random.Generator` it is given, so an example can be
regenerated from (seed, split, index) alone instead of being stored.

Positions and sizes live in normalised [0, 1] image coordinates (x to the right,
y downwards), so one scene renders at any resolution.
"""

import collections
import dataclasses
import itertools
import math
import types
from typing import Any, Mapping, Sequence

import numpy as np

SHAPES = ("circle", "cross", "diamond", "square", "triangle")
PLURALS = types.MappingProxyType({s: s + ("es" if s.endswith("s") else "s") for s in SHAPES})

# Pairwise RGB distances are >= 140 and >= 180 from the background, so a colour
# stays nameable after the background noise; no name starts with a vowel, so
# "a" is always the right article.
COLOURS = types.MappingProxyType({
    "red": (230, 40, 40),
    "green": (40, 200, 60),
    "blue": (30, 70, 240),
    "yellow": (240, 220, 40),
    "purple": (170, 40, 200),
    "cyan": (40, 210, 220),
    "white": (240, 240, 240),
})
_RGB = types.MappingProxyType({name: np.asarray(rgb, np.float32) for name, rgb in COLOURS.items()})
SIZES = ("small", "large")
# Diameter ranges (normalised). A small object is >= 7.6 px at 32 px (its square
# >= 6.9 px); large is >= 1.28x the largest small one, so the size word is visible.
DIAMETERS = types.MappingProxyType({"small": (0.24, 0.28), "large": (0.36, 0.42)})
_D_MIN = DIAMETERS["small"][0]
_D_MAX = DIAMETERS["large"][1]

# Rejection sampling needs ~40 layout tries on average for 5 objects and
# hundreds for 6, so 6 would need a packing sampler.
MAX_OBJECTS = 5
NUMBER_WORDS = ("one", "two", "three", "four", "five")
RELATIONS = ("left of", "right of", "above", "below")
# Caption level k describes the scene with the k-th construction below.
CAPTION_LEVELS = ("object", "sized_object", "pair", "relation", "scene")
SPLITS = ("train", "validation", "test")
# `id` = split index * ID_STRIDE + example index: unique across the splits.
ID_STRIDE = 10**9

BACKGROUND = (18, 20, 30)
NOISE_STD = 3.0
_BORDER = 0.02  # free margin between an object's box and the image border
_GAP = 0.04  # free margin between two objects' boxes (>= 1 px at 32 px)
_SUPERSAMPLE = 4  # sub-pixels per pixel side: smooth edges on 7 px shapes
_PLACEMENT_TRIES = 50
_LAYOUT_TRIES = 1000
_CORRUPTION_STREAM = 1  # a seed word apart from the scene's own stream


@dataclasses.dataclass(frozen=True)
class SceneObject:
  """One shape. (x, y) is the centre; the shape fits in the box of side `diameter`."""

  shape: str
  colour: str
  size: str
  x: float
  y: float
  diameter: float


@dataclasses.dataclass(frozen=True)
class Scene:
  """Objects whose boxes do not overlap, plus the seed of the render noise."""

  objects: tuple[SceneObject, ...]
  noise_seed: int = 0


# Every token a caption can contain. A BERT basic tokenizer splits punctuation off
# as tokens of their own, so ":" and "," are entries too.
VOCAB = tuple(sorted(set(
    [",", ":", "a", "and", "shape", "shapes", "small", "large"]
    + [w for r in RELATIONS for w in r.split()]
    + list(SHAPES) + list(PLURALS.values()) + list(COLOURS) + list(NUMBER_WORDS))))


def _try_layout(rng: np.random.Generator, num_objects: int) -> tuple[SceneObject, ...] | None:
  """Objects placed one by one at the first of _PLACEMENT_TRIES candidate centres
  whose box keeps a _GAP to every earlier box along x or y; None if one finds none."""
  shapes = rng.integers(len(SHAPES), size=num_objects)
  colours = rng.integers(len(COLOURS), size=num_objects)
  sizes = rng.integers(len(SIZES), size=num_objects)
  unit = rng.random(size=(num_objects, 1 + 2 * _PLACEMENT_TRIES))
  objects = []
  for k in range(num_objects):
    size = SIZES[sizes[k]]
    d_low, d_high = DIAMETERS[size]
    diameter = d_low + (d_high - d_low) * float(unit[k, 0])
    low, high = _BORDER + diameter / 2, 1 - _BORDER - diameter / 2
    centres = low + (high - low) * unit[k, 1:].reshape(_PLACEMENT_TRIES, 2)
    free = np.ones(_PLACEMENT_TRIES, bool)
    for o in objects:
      reach = (diameter + o.diameter) / 2 + _GAP
      free &= (np.abs(centres[:, 0] - o.x) >= reach) | (np.abs(centres[:, 1] - o.y) >= reach)
    if not free.any():
      return None
    x, y = centres[np.argmax(free)]
    colour = tuple(COLOURS)[colours[k]]
    objects.append(SceneObject(SHAPES[shapes[k]], colour, size, float(x), float(y), diameter))
  return tuple(objects)


def sample_scene(rng: np.random.Generator, max_objects: int = 4, min_objects: int = 1) -> Scene:
  """A scene of min_objects..max_objects objects, uniform in number, shape, colour and size.

  Positions are rejection-sampled so that the objects' boxes keep a gap; a layout
  that gets stuck is restarted with fresh attributes, which biases 5-object scenes
  towards small objects: four large boxes already fill the image.
  """
  if not 1 <= min_objects <= max_objects <= MAX_OBJECTS:
    raise ValueError(f"need 1 <= min_objects <= max_objects <= {MAX_OBJECTS}, got {min_objects} and {max_objects}")
  num_objects = int(rng.integers(min_objects, max_objects + 1))
  for _ in range(_LAYOUT_TRIES):
    objects = _try_layout(rng, num_objects)
    if objects is not None:
      return Scene(objects, noise_seed=int(rng.integers(2**31)))
  raise RuntimeError(f"no layout of {num_objects} objects found in {_LAYOUT_TRIES} tries")


def _shape_mask(shape: str, dx: np.ndarray, dy: np.ndarray, r: float) -> np.ndarray:
  """Inside-test of a shape centred at the origin, fitting in the box [-r, r]^2."""
  ax, ay = np.abs(dx), np.abs(dy)
  if shape == "circle":
    return dx**2 + dy**2 <= r**2
  if shape == "square":
    # Side 0.9 d: about the circle's area (0.886 d), so the size word reads the same.
    return np.maximum(ax, ay) <= 0.9 * r
  if shape == "diamond":
    return ax + ay <= r
  if shape == "triangle":  # apex up at (0, -r), base from (-r, r) to (r, r)
    return (dy <= r) & (ax <= (dy + r) / 2)
  if shape == "cross":
    arm = r / 3
    return ((ax <= arm) & (ay <= r)) | ((ay <= arm) & (ax <= r))
  raise ValueError(f"unknown shape {shape!r}; known shapes: {', '.join(SHAPES)}")


def _pixel_span(centre: float, r: float, image_size: int) -> tuple[int, int]:
  return max(0, math.floor((centre - r) * image_size)), min(image_size, math.ceil((centre + r) * image_size))


def render(scene: Scene, image_size: int) -> np.ndarray:
  """The scene as uint8 [S, S, 3]: objects painted in order over a dark background.

  Each pixel takes the fraction of its 4x4 sub-pixels inside the shape (a box
  filter), computed only over the pixels of the object's box, so 7 px shapes keep
  their outline. Gaussian noise (std NOISE_STD, seeded by the scene) keeps the
  background from being a constant a model could key on.
  """
  ss = _SUPERSAMPLE
  step = 1.0 / (image_size * ss)
  image = np.empty((image_size, image_size, 3), np.float32)
  image[...] = BACKGROUND
  for obj in scene.objects:
    r = obj.diameter / 2
    x0, x1 = _pixel_span(obj.x, r, image_size)
    y0, y1 = _pixel_span(obj.y, r, image_size)
    dx = np.arange(x0 * ss + 0.5, x1 * ss) * step - obj.x  # sub-pixel centres
    dy = np.arange(y0 * ss + 0.5, y1 * ss) * step - obj.y
    inside = _shape_mask(obj.shape, dx[None, :], dy[:, None], r)
    # Sub-pixels per pixel, summed one axis at a time (2x faster than axis=(1, 3)).
    rows = inside.reshape(y1 - y0, ss, (x1 - x0) * ss).sum(axis=1)
    hits = rows.reshape(y1 - y0, x1 - x0, ss).sum(axis=2)
    window = image[y0:y1, x0:x1]
    window += (hits[..., None] / ss**2) * (_RGB[obj.colour] - window)
  image += np.random.default_rng(scene.noise_seed).normal(0.0, NOISE_STD, image.shape)
  return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def relation(a: SceneObject, b: SceneObject) -> str:
  """Where a is relative to b, along the axis of larger centre offset.

  For non-overlapping boxes the larger offset is the axis along which the boxes
  are separated (|dx| - |dy| equals the difference of the two box gaps), so
  "a left of b" means a's whole box is left of b's.
  """
  return RELATIONS[int(relation_index(b.x - a.x, b.y - a.y))]


def relation_index(dx, dy):
  """`relation` as an index into RELATIONS, from dx = b.x - a.x and dy = b.y - a.y: floats or arrays
  (shapes_truth checks captions against many scenes at once with the same rule)."""
  return np.where(np.abs(dx) >= np.abs(dy), np.where(dx > 0, 0, 1), np.where(dy > 0, 2, 3))


def _phrase(obj: SceneObject, with_size: bool = False) -> str:
  return " ".join(["a"] + ([obj.size] if with_size else []) + [obj.colour, obj.shape])


def _join(items: Sequence[str]) -> str:
  return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _counted(count: int, singular: str, plural: str) -> str:
  return f"{NUMBER_WORDS[count - 1]} {singular if count == 1 else plural}"


def _scene_caption(scene: Scene, rng: np.random.Generator) -> str:
  """A whole-scene caption with counts: all objects, or counts by colour or shape."""
  objects = scene.objects
  variant = int(rng.integers(3))
  if variant == 0:
    listed = _join([_phrase(o) for o in objects])
    return f"{_counted(len(objects), 'shape', 'shapes')}: {listed}"
  if variant == 1:
    counts = collections.Counter(o.colour for o in objects)
    groups = [_counted(k, f"{c} shape", f"{c} shapes") for c, k in _by_count(counts)]
  else:
    counts = collections.Counter(o.shape for o in objects)
    groups = [_counted(k, s, PLURALS[s]) for s, k in _by_count(counts)]
  return _join(groups)


def _by_count(counts: Mapping[str, int]) -> list[tuple[str, int]]:
  return sorted(counts.items(), key=lambda item: (-item[1], item[0]))


def caption(scene: Scene, level: int, rng: np.random.Generator) -> str:
  """One true caption of the scene at CAPTION_LEVELS[level]; objects picked by rng."""
  objects = scene.objects
  if level in (2, 3) and len(objects) < 2:
    raise ValueError(f"caption level {CAPTION_LEVELS[level]!r} needs two objects")
  if level in (0, 1):
    return _phrase(objects[rng.integers(len(objects))], with_size=level == 1)
  if level in (2, 3):
    i, j = rng.choice(len(objects), size=2, replace=False)
    a, b = objects[i], objects[j]
    if level == 2:
      return f"{_phrase(a)} and {_phrase(b)}"
    return f"{_phrase(a, with_size=True)} {relation(a, b)} {_phrase(b)}"
  if level == 4:
    return _scene_caption(scene, rng)
  raise ValueError(f"caption level must be in 0..{len(CAPTION_LEVELS) - 1}, got {level}")


def captions(scene: Scene, rng: np.random.Generator, num_captions: int = 5,
             levels: Sequence[str] = CAPTION_LEVELS) -> tuple[list[str], list[int]]:
  """num_captions true captions and their levels (indices into CAPTION_LEVELS).

  Levels cycle through a random permutation of those of `levels` the scene allows
  (pairs and relations need two objects), so every allowed level appears once
  before any repeats: with 5 captions a multi-object scene gets one of each.
  """
  wanted = [CAPTION_LEVELS.index(name) for name in levels]
  allowed = [k for k in wanted if len(scene.objects) > 1 or k not in (2, 3)]
  if not allowed:
    raise ValueError(f"a one-object scene has no caption of the levels {tuple(levels)}")
  order = [allowed[k] for k in rng.permutation(len(allowed))]
  drawn = [order[k % len(order)] for k in range(num_captions)]
  return [caption(scene, level, rng) for level in drawn], drawn


def complexity(scene: Scene) -> float:
  """Ground-truth difficulty: n + (A + S) / 3, in [n, n + 2/3].

  n: the number of objects (each one more to bind attributes to and relate).
  A: confusability, the mean over object pairs of the fraction of {colour, shape}
     the two share (0 for a single object); "the red one" no longer picks out one.
  S: smallness, the mean over objects of (D_max - d) / (D_max - D_min) in [0, 1]
     with d the diameter and D_min, D_max the smallest small and largest large
     diameters: small objects cover fewer pixels.
  The fraction stays below 1, so more objects is always harder; S is continuous,
  so sampled scenes almost never tie and training-split quantiles are well defined.
  """
  objects = scene.objects
  pairs = list(itertools.combinations(objects, 2))
  shared = [((a.colour == b.colour) + (a.shape == b.shape)) / 2 for a, b in pairs]
  confusability = float(np.mean(shared)) if pairs else 0.0
  smallness = float(np.mean([(_D_MAX - o.diameter) / (_D_MAX - _D_MIN) for o in objects]))
  return len(objects) + (confusability + smallness) / 3


def corruption_partner(seed: int, index: int, corrupt_fraction: float, num_examples: int) -> int | None:
  """The train example whose captions example `index` gets, or None if it keeps its own.

  Each index is corrupted independently with probability corrupt_fraction, from
  its own random stream, so the choice does not depend on which other examples
  were generated; the partner is uniform over the other num_examples - 1.
  """
  if corrupt_fraction == 0.0:
    return None
  if num_examples < 2:
    raise ValueError(f"corrupting captions needs num_examples >= 2, got {num_examples}")
  rng = np.random.default_rng([seed, SPLITS.index("train"), index, _CORRUPTION_STREAM])
  if rng.random() >= corrupt_fraction:
    return None
  return (index + 1 + int(rng.integers(num_examples - 1))) % num_examples


def _scene_rng(seed: int, split: str, index: int) -> np.random.Generator:
  if split not in SPLITS:
    raise ValueError(f"unknown split {split!r}; known splits: {', '.join(SPLITS)}")
  if not 0 <= index < ID_STRIDE:
    raise ValueError(f"index must be in [0, {ID_STRIDE}), got {index}")
  return np.random.default_rng([seed, SPLITS.index(split), index])


def scene(seed: int, split: str, index: int, max_objects: int = 4, min_objects: int = 1) -> Scene:
  """The scene of example `index` of `split` (its image; its captions unless corrupted)."""
  return sample_scene(_scene_rng(seed, split, index), max_objects, min_objects)


def _scene_and_captions(seed: int, split: str, index: int, max_objects: int, min_objects: int,
                        num_captions: int, levels: Sequence[str]) -> tuple[Scene, list[str], list[int]]:
  rng = _scene_rng(seed, split, index)
  sampled = sample_scene(rng, max_objects, min_objects)
  texts, drawn = captions(sampled, rng, num_captions, levels)
  return sampled, texts, drawn


def make_example(seed: int, split: str, index: int, image_size: int = 32, max_objects: int = 4,
                 num_captions: int = 5, corrupt_fraction: float = 0.0,
                 num_examples: int = 0, min_objects: int = 1,
                 caption_levels: Sequence[str] = CAPTION_LEVELS) -> dict[str, Any]:
  """Example `index` of `split`, a function of (seed, split, index) and the sizes.

  A corrupt_fraction of train examples carry the captions (and levels) of another
  train example (num_examples is the train split size), as noisy web pairs do;
  validation and test are never corrupted. `complexity` and `num_objects` stay
  those of the example's own image.
  """
  sizes = (max_objects, min_objects, num_captions, caption_levels)
  own, texts, levels = _scene_and_captions(seed, split, index, *sizes)
  partner = None
  if split == "train":
    partner = corruption_partner(seed, index, corrupt_fraction, num_examples)
  if partner is not None:
    _, texts, levels = _scene_and_captions(seed, split, partner, *sizes)
  return {
      "image": render(own, image_size),
      "captions": texts,
      "caption_levels": levels,
      "complexity": complexity(own),
      "num_objects": len(own.objects),
      "corrupted": partner is not None,
      "id": SPLITS.index(split) * ID_STRIDE + index,
  }
