"""What the real-data builders share: checked images, cleaned captions, counted skips, two passes.

Real images and captions are messy, and one bad file must not cost a build over
100k files, nor slip into the shards. So every image is fully decoded (a truncated
file only shows itself at the end of its data) and re-encoded as an RGB JPEG, every
caption is decoded and cleaned, and whatever fails is skipped and counted by reason
(`SKIP_REASONS`) per split in `builder.info.metadata["skipped"]`.

`CaptionedImagesBuilder` is the generic builder: a subclass only reads its sources
into `Record`s per split (`_read_records`). Like synthetic_shapes it makes two passes
so that only captions and scores are held in memory: pass 1 decodes and checks every
image, scores the kept examples and takes the block edges from the training scores;
pass 2 decodes the kept images again and writes them with their `difficulty/<scorer>`
and `block/<scorer>` features. Each image is therefore decoded twice (JPEGs at a
reduced DCT scale when they are shrunk, which makes that cheap).
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

from cmccl_jax.curriculum import blocks as blocks_lib
from cmccl_jax.data.features import curriculum_features
from cmccl_jax.data.local_builder import LocalBuilder
from cmccl_jax.scoring import scorers as scorers_lib
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
}
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

  def add(self, split: str, reason: str, count: int = 1) -> None:
    if reason not in SKIP_REASONS:
      raise ValueError(f"unknown skip reason {reason!r}; known reasons: {', '.join(SKIP_REASONS)}")
    self._counts[split][reason] += count

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


def _to_rgb(image: Image.Image) -> Image.Image:
  """RGB, with transparent pixels on white: dropping alpha shows whatever colour they hid."""
  if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
    rgba = image.convert("RGBA")
    return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
  return image if image.mode == "RGB" else image.convert("RGB")


def decode_image(path: str, image_size: int) -> Image.Image:
  """The fully decoded image as RGB, upright, shorter side `image_size` (0: as is).

  Raises BadImage with reason missing_image, corrupt_image or truncated_image.
  """
  if not os.path.isfile(path):
    raise BadImage("missing_image", path)
  try:
    with _strict_truncation(), Image.open(path) as image:
      target = _shorter_side_size(image.size, image_size)
      if target != image.size:
        image.draft(None, target)  # JPEG: decode at the smallest DCT scale still >= target
      image.load()  # decodes all the data: this is where a truncated file raises
      image = _to_rgb(ImageOps.exif_transpose(image))
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

DEFAULT_SCORERS = ("caption_length", "noun_count")


@dataclasses.dataclass(eq=False, kw_only=True)
class CaptionedImagesConfig(tfds.core.BuilderConfig):
  """Parameters every captioned-image build has; subclasses add their sources and `source_tag`."""

  name: str = ""
  image_size: int = 256
  num_blocks: int = 4
  scorers: tuple[str, ...] = DEFAULT_SCORERS
  # What the model-based scorers depend on, made concrete here (see SyntheticShapesConfig).
  scoring: scorers_lib.ScoringSettings = scorers_lib.ScoringSettings()

  def __post_init__(self):
    self.scorers = scorers_lib.check_scorer_names(scorers_lib.scorer_names(self.scorers))
    synthetic_only = [s for s in self.scorers if s in scorers_lib.SYNTHETIC_ONLY]
    if synthetic_only:
      raise UserError(f"the scorers {synthetic_only} read fields only synthetic_shapes has; drop them from "
                       f"config.scoring.scorers={self.scorers} for real images")
    self.scoring = self.scoring.resolved(self.scorers)
    if self.image_size < 0:
      raise UserError(f"image_size must be >= 0 (0 keeps the original size), got {self.image_size}")
    if self.num_blocks < 1:
      raise UserError(f"num_blocks must be >= 1, got {self.num_blocks}")
    expected = (f"{self.source_tag()}-s{self.image_size}-k{self.num_blocks}-{'.'.join(self.scorers)}"
                f"{self.scoring.tag(self.scorers)}")
    if self.name and self.name != expected:
      raise UserError(f"config name {self.name!r} does not match its parameters; leave it "
                       f"empty to get {expected!r}")
    self.name = expected

  def source_tag(self) -> str:
    """The part of the config name that identifies the source files and how they are split."""
    raise NotImplementedError(f"{type(self).__name__} must say which source files it reads (source_tag)")


class CaptionedImagesBuilder(LocalBuilder):
  """Images with a variable number of captions, per-scorer difficulty and quantile block."""

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
    c = self.builder_config
    return tfds.core.DatasetInfo(
        builder=self,
        description=(self.__doc__ or "").split("\n\n")[0],
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
            "captions": tfds.features.Sequence(tfds.features.Text()),
            "id": tfds.features.Scalar(dtype=np.int64),
            **curriculum_features(c.scorers),
        }),
        metadata=tfds.core.MetadataDict(),
    )

  def _checked_examples(self, records: Sequence[Record], split: str, skipped: SkipCounter,
                        kept: list[Record] | None = None) -> Iterator[dict[str, Any]]:
    """Scorer inputs of the records whose image decodes; the others are counted and dropped."""
    progress = tfds.core.utils.tqdm(records, desc=f"Checking and scoring {split}", unit=" images",
                                    leave=False)
    for record in progress:
      try:
        image = decode_image(record.path, self.builder_config.image_size)
      except BadImage as e:
        skipped.add(split, e.reason)
        continue
      if kept is not None:
        kept.append(record)
      yield {"image": np.asarray(image), "captions": list(record.captions), "id": record.id}

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # the sources are local files
    c = self.builder_config
    skipped = SkipCounter()
    records = self._read_records(skipped)
    splits = list(records)
    batch_size = int(c.scoring.batch_size)
    scorers = scorers_lib.fit_scorers(
        scorers_lib.make_scorers(c.scorers, c.scoring),
        lambda: scorers_lib.batched(self._checked_examples(records["train"], "train", SkipCounter()),
                                    batch_size))
    kept: dict[str, list[Record]] = {}
    scores: dict[str, dict[str, np.ndarray]] = {}
    for split in splits:
      kept[split] = []
      scores[split] = scorers_lib.score_split(
          self._checked_examples(records[split], split, skipped, kept[split]), scorers, batch_size)
    if not kept["train"]:
      raise UserError(
          f"{self.name} ({c.name}) has no usable training example: {len(records['train'])} training "
          f"images were read and skipped as {skipped.as_dict(['train'])['train']}. Check the source "
          "files and the split settings.")
    ids = {split: np.asarray([r.id for r in kept[split]], np.int64) for split in splits}
    blocks, edges = blocks_lib.blocks_by_scorer(scores, ids, c.num_blocks)
    self.info.metadata.update(
        num_blocks=c.num_blocks,
        block_edges={name: [float(e) for e in edge] for name, edge in edges.items()},
        block_sizes={name: {split: np.bincount(blocks[split][name], minlength=c.num_blocks).tolist()
                            for split in splits} for name in c.scorers},
        num_examples={split: len(kept[split]) for split in splits},
        skipped=skipped.as_dict(splits),
        scoring=c.scoring.describe(c.scorers),
    )
    # TFDS cannot write an empty split: one without examples (a held-out fraction of a
    # tiny folder) is left out, and num_examples above says so.
    return {split: self._generate_examples(kept[split], scores[split], blocks[split])
            for split in splits if kept[split]}

  def _generate_examples(self, records: Sequence[Record], scores: dict[str, np.ndarray],
                         blocks: dict[str, np.ndarray]):
    for index, record in enumerate(records):
      try:
        image = decode_image(record.path, self.builder_config.image_size)
      except BadImage as e:
        raise RuntimeError(f"{record.path} decoded in the first pass but not in the second ({e}); "
                           "did the files change during the build? Rebuild from a stable copy.") from e
      yield record.id, {
          "image": encode_jpeg(image),
          "captions": list(record.captions),
          "id": record.id,
          "difficulty": {name: s[index] for name, s in scores.items()},
          "block": {name: b[index] for name, b in blocks.items()},
      }
