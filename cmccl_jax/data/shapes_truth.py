"""What a `synthetic_shapes` caption means: the scenes it is true of, and false captions one word away.

A caption is parsed back from its words (the grammar of `shapes_scene.caption`)
into a `Claim`, which is then checked against many scenes at once, held as arrays
(`SceneTable`). The meaning follows the words, not the generator's intent:
  "a red circle", "a small red circle"   some object has those attributes;
  "a red circle and a blue square"        two different objects, one each;
  "a small red circle left of a blue square"  two different objects in that relation
                                           (`shapes_scene.relation`);
  "three shapes: a red circle, ..."       exactly these objects, nothing else;
  "two red shapes and one blue shape"     exactly these counts of colour (or of shape,
                                           "two circles and one square") over all objects.
So a caption of one scene is true of every other scene it describes: the set of
images retrieval should count as positives (`relevance`).
"""

import collections
import dataclasses
from typing import Sequence

import numpy as np

from cmccl_jax.data import shapes_scene as ss

_PLURAL_TO_SHAPE = {plural: shape for shape, plural in ss.PLURALS.items()}
_RELATION_WORDS = {r.split()[0]: r for r in ss.RELATIONS}  # "left" -> "left of"
# One-word swaps that keep a caption grammatical (`distractor`).
_SWAPS = {
    **{c: [o for o in ss.COLOURS if o != c] for c in ss.COLOURS},
    **{s: [o for o in ss.SHAPES if o != s] for s in ss.SHAPES},
    **{p: [o for o in ss.PLURALS.values() if o != p] for p in ss.PLURALS.values()},
    **{z: [o for o in ss.SIZES if o != z] for z in ss.SIZES},
    **{n: [o for o in ss.NUMBER_WORDS[1:] if o != n] for n in ss.NUMBER_WORDS[1:]},  # plurals stay plural
    "left": ["right"], "right": ["left"], "above": ["below"], "below": ["above"],
}


@dataclasses.dataclass(frozen=True)
class Spec:
  """An object phrase: "a [size] colour shape"."""

  colour: str
  shape: str
  size: str | None = None


@dataclasses.dataclass(frozen=True)
class Claim:
  """kind "exists" (specs: one or two different objects), "relation" (specs[0] `relation` specs[1]),
  "objects" (counts: the exact multiset of (colour, shape)), "colours" or "shapes" (counts: exact counts)."""

  kind: str
  specs: tuple[Spec, ...] = ()
  relation: str = ""
  counts: tuple = ()
  total: int = 0  # "objects": the number said before the list


def _key(items) -> tuple:
  """A multiset as a sorted tuple of (item, count): equal for equal multisets."""
  return tuple(sorted(collections.Counter(items).items()))


def _words(caption: str) -> list[str]:
  return caption.replace(",", " , ").replace(":", " : ").split()


def _spec(words: Sequence[str], caption: str) -> Spec:
  if len(words) == 3 and words[0] == "a" and words[1] in ss.COLOURS and words[2] in ss.SHAPES:
    return Spec(words[1], words[2])
  if len(words) == 4 and words[0] == "a" and words[1] in ss.SIZES and words[2] in ss.COLOURS and words[3] in ss.SHAPES:
    return Spec(words[2], words[3], words[1])
  raise ValueError(f"not a synthetic_shapes caption: {caption!r} (cannot read {' '.join(words)!r})")


def _items(words: Sequence[str]) -> list[list[str]]:
  """Words split at "," and "and"."""
  items, current = [], []
  for w in words:
    if w in (",", "and"):
      items.append(current)
      current = []
    else:
      current.append(w)
  return items + [current]


def _number(word: str, caption: str) -> int:
  if word not in ss.NUMBER_WORDS:
    raise ValueError(f"not a synthetic_shapes caption: {caption!r} ({word!r} is not a number word)")
  return ss.NUMBER_WORDS.index(word) + 1


def _counted(items: list[list[str]], caption: str) -> Claim:
  """ "two red shapes and one blue shape" or "two circles and one square"."""
  colours, shapes = collections.Counter(), collections.Counter()
  for item in items:
    if len(item) == 3 and item[1] in ss.COLOURS and item[2] in ("shape", "shapes"):
      colours[item[1]] += _number(item[0], caption)
    elif len(item) == 2 and (item[1] in ss.SHAPES or item[1] in _PLURAL_TO_SHAPE):
      shapes[_PLURAL_TO_SHAPE.get(item[1], item[1])] += _number(item[0], caption)
    else:
      raise ValueError(f"not a synthetic_shapes caption: {caption!r} (cannot read {' '.join(item)!r})")
  if colours and shapes:
    raise ValueError(f"not a synthetic_shapes caption: {caption!r} (counts of colours and of shapes mixed)")
  return Claim("colours", counts=_key(colours.elements())) if colours else Claim(
      "shapes", counts=_key(shapes.elements()))


def parse(caption: str) -> Claim:
  """The claim a caption makes; ValueError naming the caption if it is not of the grammar."""
  words = _words(caption)
  if not words:
    raise ValueError("not a synthetic_shapes caption: an empty caption")
  if ":" in words:
    colon = words.index(":")
    specs = [_spec(item, caption) for item in _items(words[colon + 1:])]
    if colon != 2 or words[1] not in ("shape", "shapes"):
      raise ValueError(f"not a synthetic_shapes caption: {caption!r} (expected 'N shapes: ...')")
    return Claim("objects", counts=_key((s.colour, s.shape) for s in specs), total=_number(words[0], caption))
  if words[0] != "a":
    return _counted(_items(words), caption)
  for k, w in enumerate(words):
    relation = _RELATION_WORDS.get(w)
    if relation is not None and words[k:k + len(relation.split())] == relation.split():
      return Claim("relation", (_spec(words[:k], caption), _spec(words[k + len(relation.split()):], caption)),
                   relation)
  return Claim("exists", tuple(_spec(item, caption) for item in _items(words)))


_CODES = {**{c: k for k, c in enumerate(ss.COLOURS)}, **{s: k for k, s in enumerate(ss.SHAPES)},
          **{z: k for k, z in enumerate(ss.SIZES)}, **{r: k for k, r in enumerate(ss.RELATIONS)}}


class SceneTable:
  """Scenes as int arrays [num_scenes, max_objects] (-1: no object), so a claim is checked against all at once."""

  def __init__(self, scenes: Sequence[ss.Scene]):
    width = max(len(s.objects) for s in scenes)
    self.colour, self.shape, self.size = (np.full((len(scenes), width), -1, np.int8) for _ in range(3))
    x, y = np.zeros((len(scenes), width)), np.zeros((len(scenes), width))
    for n, scene in enumerate(scenes):
      for k, o in enumerate(scene.objects):
        self.colour[n, k], self.shape[n, k], self.size[n, k] = _CODES[o.colour], _CODES[o.shape], _CODES[o.size]
        x[n, k], y[n, k] = o.x, o.y
    # relation(a = object i, b = object j), by shapes_scene's own rule on the same float64s.
    self.relation = ss.relation_index(x[:, None, :] - x[:, :, None], y[:, None, :] - y[:, :, None])
    valid = self.colour >= 0
    self.different = valid[:, :, None] & valid[:, None, :] & ~np.eye(width, dtype=bool)
    self.keys = {
        "objects": [_key((o.colour, o.shape) for o in s.objects) for s in scenes],
        "colours": [_key(o.colour for o in s.objects) for s in scenes],
        "shapes": [_key(o.shape for o in s.objects) for s in scenes],
    }

  def _matches(self, spec: Spec) -> np.ndarray:
    m = (self.colour == _CODES[spec.colour]) & (self.shape == _CODES[spec.shape])
    return m & (self.size == _CODES[spec.size]) if spec.size else m

  def holds(self, claim: Claim) -> np.ndarray:
    """bool [num_scenes]: which scenes the claim is true of."""
    if claim.kind in self.keys:
      if claim.total and claim.total != sum(n for _, n in claim.counts):
        return np.zeros(len(self.keys[claim.kind]), bool)  # "four shapes:" listing three: true of nothing
      return np.array([k == claim.counts for k in self.keys[claim.kind]], bool)
    first = self._matches(claim.specs[0])
    if len(claim.specs) == 1:
      return first.any(axis=1)
    pairs = first[:, :, None] & self._matches(claim.specs[1])[:, None, :] & self.different
    if claim.kind == "relation":
      pairs &= self.relation == _CODES[claim.relation]
    return pairs.any(axis=(1, 2))


def relevance(scenes: Sequence[ss.Scene], captions: Sequence[str]) -> np.ndarray:
  """bool [num_scenes, num_captions]: caption j is true of scene i. Each distinct caption is parsed once."""
  table = SceneTable(scenes)
  columns = {}
  for text in dict.fromkeys(captions):
    columns[text] = table.holds(parse(text))
  return np.stack([columns[text] for text in captions], axis=1)


def distractor(caption: str, scene: ss.Scene, rng: np.random.Generator) -> str:
  """A caption one word away from `caption` that is false of `scene`: a hard negative by construction.

  The word (a colour, shape, size, count or relation) and its replacement are
  drawn by `rng` among the swaps that keep the caption grammatical; the first
  that makes the caption false of the scene is taken.
  """
  tokens = caption.split(" ")
  table = SceneTable([scene])
  options = []
  for position, token in enumerate(tokens):
    word = token.rstrip(",:")
    options += [(position, token.replace(word, swap, 1)) for swap in _SWAPS.get(word, ())]
  for k in rng.permutation(len(options)):
    position, token = options[k]
    text = " ".join(tokens[:position] + [token] + tokens[position + 1:])
    if not table.holds(parse(text))[0]:
      return text
  raise ValueError(f"no one-word change of {caption!r} is false of its scene")
