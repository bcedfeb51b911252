"""What the real-data builders share: checked images, cleaned captions, counted skips, two passes.

Real images and captions are messy, and one bad file must not cost a build over
100k files, nor slip into the shards. So every image is fully decoded (a truncated
file only shows itself at the end of its data) and re-encoded as an RGB JPEG, every
caption is decoded and cleaned, and whatever fails is skipped and counted by reason
(`SKIP_REASONS`) per split in `builder.info.metadata["skipped"]`.

`CaptionedImagesBuilder` is the generic builder: a subclass only reads its sources
into `Record`s per split (`_read_records`). It makes two passes so that only the
records are held in memory: pass 1 decodes and checks every image, so that the
skip counts and an empty training split are known before anything is written;
pass 2 decodes the kept images again and writes them. Each image is therefore
decoded twice (JPEGs at a reduced DCT scale when they are shrunk, which makes that
cheap). The shards hold images, captions and ids only: difficulty scores are their
own builds (`data/difficulty.py`), so the image shards depend only on the source
and the image size.
"""

import abc
import collections
import contextlib
import dataclasses
import hashlib
import io
import os
import re
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image, ImageFile, ImageOps

from cmccl_jax.data.local_builder import LocalBuilder
from cmccl_jax.errors import UserError

_JPEG_QUALITY = 95

# What is skipped, and the unit counted: an image, a caption, or an annotation record.
SKIP_REASONS = {
    "missing_image": "images named by the annotations but not found on disk",
    "corrupt_image": "files that are not a decodable image",
    "truncated_image": "images with a valid header whose data is cut off",
    "no_caption": "images without any valid caption",
    "empty_caption": "captions that are empty or only whitespace",
    "undecodable_caption": "captions whose bytes are not valid UTF-8",
    "malformed_record": "annotation lines or entries not in the expected format",
    "outside_root": "images whose path, symlinks followed, leads outside the source folder (never opened)",
    "extreme_aspect": "images whose longer side is over 20 times the shorter (a strip, not a picture)",
}
# Beyond this ratio of the sides an image is skipped: resized to a training size, a 4000x10 strip would be
# 102400 pixels long (past JPEG's 65500 limit), and nothing of it survives a centre crop anyway.
MAX_ASPECT = 20
# How many paths per split and reason the build's metadata keeps, to show the user what was skipped.
EXAMPLES_KEPT = 5
# The split under which records that belong to no split (an unparseable line) are counted.
UNASSIGNED = "unassigned"


@dataclasses.dataclass(frozen=True)
class Record:
  """One image of a split and its cleaned captions, as read from the annotations."""

  id: int
  path: str
  captions: tuple[str, ...]


class SkipCounter:
  """Counts skipped items per split and reason."""

  def __init__(self):
    self._counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    self._examples: dict[str, list[str]] = collections.defaultdict(list)

  def add(self, split: str, reason: str, count: int = 1, path: str = "") -> None:
    """Counts `count` skips; `path` (the file skipped) is kept among the first EXAMPLES_KEPT of the reason."""
    if reason not in SKIP_REASONS:
      raise ValueError(f"unknown skip reason {reason!r}; known reasons: {', '.join(SKIP_REASONS)}")
    self._counts[split][reason] += count
    if path and len(self._examples[reason]) < EXAMPLES_KEPT:
      self._examples[reason].append(path)

  def examples(self) -> dict[str, list[str]]:
    """{reason: the first paths skipped for it}."""
    return {r: list(paths) for r, paths in sorted(self._examples.items())}

  def as_dict(self, splits: Sequence[str]) -> dict[str, dict[str, int]]:
    """{split: {reason: count}} with every split listed, UNASSIGNED only when it counted anything."""
    names = list(splits) + [s for s in self._counts if s not in splits]
    return {s: {r: int(n) for r, n in sorted(self._counts[s].items())} for s in names}


class BadImage(Exception):
  """An image that cannot be used; `reason` is one of SKIP_REASONS."""

  def __init__(self, reason: str, path: str, detail: str = ""):
    super().__init__(f"{reason}: {path} {detail}".strip())
    self.reason = reason


# ----------------------------------------------------------------------------- text

def read_text(path: str) -> str:
  """The file's text, where bytes that are not UTF-8 become lone surrogates.

  Decoding with surrogateescape confines a bad byte to the one string it sits in:
  the JSON or TSV around it still parses, and `clean_caption` rejects that caption
  alone (a surrogate cannot be encoded back to UTF-8).
  """
  with open(path, "rb") as f:
    text = f.read().decode("utf-8", "surrogateescape")
  return text.removeprefix("\ufeff")


def text_lines(text: str) -> list[str]:
  """Lines split at "\\n" only: str.splitlines would also split at separators inside captions."""
  return [line.rstrip("\r") for line in text.split("\n")]


def is_utf8(text: str) -> bool:
  try:
    text.encode("utf-8")
  except UnicodeEncodeError:
    return False
  return True


def clean_caption(caption: Any, split: str, skipped: SkipCounter) -> str | None:
  """The caption with whitespace runs collapsed to one space, or None (counted) if unusable."""
  if not isinstance(caption, str):
    skipped.add(split, "malformed_record")
    return None
  if not is_utf8(caption):
    skipped.add(split, "undecodable_caption")
    return None
  text = " ".join(caption.split())
  if not text:
    skipped.add(split, "empty_caption")
    return None
  return text


def clean_captions(captions: Iterable[Any], split: str, skipped: SkipCounter) -> tuple[str, ...]:
  return tuple(c for c in (clean_caption(raw, split, skipped) for raw in captions) if c is not None)


# ----------------------------------------------------------------------------- images

@contextlib.contextmanager
def _strict_truncation():
  """Truncated images raise while decoding, even if another library told PIL to accept them."""
  previous = ImageFile.LOAD_TRUNCATED_IMAGES
  ImageFile.LOAD_TRUNCATED_IMAGES = False
  try:
    yield
  finally:
    ImageFile.LOAD_TRUNCATED_IMAGES = previous


def _shorter_side_size(size: tuple[int, int], image_size: int) -> tuple[int, int]:
  if image_size == 0:
    return size
  width, height = size
  scale = image_size / min(width, height)
  return max(1, round(width * scale)), max(1, round(height * scale))


def _to_8_bit(image: Image.Image) -> Image.Image:
  """A 16-bit, 32-bit or float grey image as 8-bit "L" (PIL's convert clips it: a 16-bit PNG came out white).

  16-bit modes map 0..65535 onto 0..255; "I" and "F" are read as 8-bit when they fit,
  as 16-bit when they fit that, else stretched from their minimum to their maximum.
  """
  values = np.asarray(image, np.float64)
  if image.mode.startswith("I;16") or (255 < values.max() <= 65535 and values.min() >= 0):
    values = values / 257.0
  elif values.min() < 0 or values.max() > 255:
    values = (values - values.min()) / max(values.max() - values.min(), 1e-12) * 255.0
  return Image.fromarray(np.clip(np.round(values), 0, 255).astype(np.uint8), "L")


def _to_rgb(image: Image.Image) -> Image.Image:
  """RGB, with transparent pixels on white: dropping alpha shows whatever colour they hid."""
  if image.mode.startswith("I") or image.mode == "F":
    image = _to_8_bit(image)
  if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
    rgba = image.convert("RGBA")
    return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
  return image if image.mode == "RGB" else image.convert("RGB")


def inside(path: str, root: str) -> str | None:
  """`path` with every symlink resolved, if that is still under `root` (resolved too); else None."""
  real, real_root = os.path.realpath(path), os.path.realpath(root)
  return real if os.path.commonpath([real, real_root]) == real_root else None


def decode_image(path: str, image_size: int, root: str | None = None) -> Image.Image:
  """The fully decoded image as RGB, upright, shorter side `image_size` (0: as is).

  With `root`, a path that leads outside it (through a symlinked file or folder) is
  never opened. Raises BadImage with reason missing_image, outside_root,
  extreme_aspect, corrupt_image or truncated_image.
  """
  if root is not None:
    real = inside(path, root)
    if real is None:
      raise BadImage("outside_root", path, f"(leads to {os.path.realpath(path)})")
    path = real  # opened by its resolved name: no link is followed after the check
  if not os.path.isfile(path):
    raise BadImage("missing_image", path)
  try:
    with _strict_truncation(), Image.open(path) as image:
      if max(image.size) > MAX_ASPECT * min(image.size):
        raise BadImage("extreme_aspect", path, f"({image.size[0]}x{image.size[1]})")
      target = _shorter_side_size(image.size, image_size)
      if target != image.size:
        image.draft(None, target)  # JPEG: decode at the smallest DCT scale still >= target
      image.load()  # decodes all the data: this is where a truncated file raises
      image = _to_rgb(ImageOps.exif_transpose(image))
  except BadImage:
    raise
  except OSError as e:
    reason = "truncated_image" if "truncat" in str(e).lower() else "corrupt_image"
    raise BadImage(reason, path, str(e)) from e
  except Exception as e:  # PIL raises ValueError, SyntaxError, ... on malformed files
    raise BadImage("corrupt_image", path, f"{type(e).__name__}: {e}") from e
  # exif_transpose may have swapped the sides; the shorter one is what gets image_size.
  target = _shorter_side_size(image.size, image_size)
  if target != image.size:
    image = image.resize(target, Image.Resampling.BICUBIC)
  return image


def encode_jpeg(image: Image.Image) -> bytes:
  buffer = io.BytesIO()
  image.save(buffer, format="JPEG", quality=_JPEG_QUALITY)
  return buffer.getvalue()


# ----------------------------------------------------------------------------- names

def path_tag(path: str) -> str:
  """A config-name tag for a source path: its folder name (readability) and a hash of the full path.

  TFDS config names allow only [\\w.-], and two sources with the same folder name
  must never share a build directory, hence the hash.
  """
  name = re.sub(r"[^\w.-]", "_", os.path.basename(os.path.normpath(path)))[:32] or "root"
  return f"{name}-{stable_hash(path)[:10]}"


def stable_hash(text: str) -> str:
  """sha256 hex digest: unlike hash(), the same in every process and on every machine."""
  return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()


def resolve_path(path: str, base: str = "") -> str:
  """Absolute path: `~` expanded, relative paths taken from `base` (or the working directory)."""
  path = os.path.expanduser(path)
  if base and not os.path.isabs(path):
    path = os.path.join(base, path)
  return os.path.abspath(path)


# ----------------------------------------------------------------------------- builder

@dataclasses.dataclass(eq=False, kw_only=True)
class CaptionedImagesConfig(tfds.core.BuilderConfig):
  """Parameters every captioned-image build has; subclasses add their sources and `source_tag`."""

  name: str = ""
  image_size: int = 256

  def __post_init__(self):
    if self.image_size < 0:
      raise UserError(f"image_size must be >= 0 (0 keeps the original size), got {self.image_size}")
    expected = f"{self.source_tag()}-s{self.image_size}"
    if self.name and self.name != expected:
      raise UserError(f"config name {self.name!r} does not match its parameters; leave it "
                       f"empty to get {expected!r}")
    self.name = expected

  def source_tag(self) -> str:
    """The part of the config name that identifies the source files and how they are split."""
    raise NotImplementedError(f"{type(self).__name__} must say which source files it reads (source_tag)")


class CaptionedImagesBuilder(LocalBuilder):
  """Images with a variable number of captions and an id (the key difficulty scores are joined by).

  Its config has a `root`, the source folder: no image is read from outside it.
  """

  # The offline scorers a run reads when config.scoring.scorers is () (data/difficulty.py).
  DEFAULT_SCORERS = ("caption_length", "noun_count")

  @abc.abstractmethod
  def check_sources(self) -> None:
    """Raises UserError naming whatever source is missing and where to get it.

    Called before a build starts, so a wrong path fails at once, not after TFDS set up.
    """

  @abc.abstractmethod
  def _read_records(self, skipped: SkipCounter) -> dict[str, list[Record]]:
    """{split: records} read from the sources, "train" first; caption problems counted in `skipped`.

    Raises UserError naming whatever source is missing and where to get it.
    """

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=(self.__doc__ or "").split("\n\n")[0],
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
            "captions": tfds.features.Sequence(tfds.features.Text()),
            "id": tfds.features.Scalar(dtype=np.int64),
        }),
        metadata=tfds.core.MetadataDict(),
    )

  def _checked_records(self, records: Sequence[Record], split: str, skipped: SkipCounter) -> list[Record]:
    """The records whose image decodes; the others are counted and dropped."""
    progress = tfds.core.utils.tqdm(records, desc=f"Checking {split}", unit=" images", leave=False)
    kept = []
    for record in progress:
      try:
        decode_image(record.path, self.builder_config.image_size, self.builder_config.root)
      except BadImage as e:
        skipped.add(split, e.reason, path=os.path.relpath(record.path, self.builder_config.root))
        continue
      kept.append(record)
    return kept

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # the sources are local files
    c = self.builder_config
    skipped = SkipCounter()
    records = self._read_records(skipped)
    splits = list(records)
    kept = {split: self._checked_records(records[split], split, skipped) for split in splits}
    if not kept["train"]:
      raise UserError(
          f"{self.name} ({c.name}) has no usable training example: {len(records['train'])} training "
          f"images were read and skipped as {skipped.as_dict(['train'])['train']}. Check the source "
          "files and the split settings.")
    self.info.metadata.update(num_examples={split: len(kept[split]) for split in splits},
                              skipped=skipped.as_dict(splits), skipped_examples=skipped.examples())
    # TFDS cannot write an empty split: one without examples (a held-out fraction of a
    # tiny folder) is left out, and num_examples above says so.
    return {split: self._generate_examples(kept[split]) for split in splits if kept[split]}

  def _generate_examples(self, records: Sequence[Record]):
    for record in records:
      try:
        image = decode_image(record.path, self.builder_config.image_size, self.builder_config.root)
      except BadImage as e:
        raise RuntimeError(f"{record.path} decoded in the first pass but not in the second ({e}); "
                           "did the files change during the build? Rebuild from a stable copy.") from e
      yield record.id, {"image": encode_jpeg(image), "captions": list(record.captions), "id": record.id}
