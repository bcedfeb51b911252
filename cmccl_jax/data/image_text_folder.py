"""TFDS builder of `image_text_folder`: any folder of images with a captions file.

The folder (`root`) holds images in any subfolders and a captions file, by default
`captions.jsonl` or `captions.tsv` in `root`:

  captions.jsonl   one JSON object per line:
                     {"image": "dogs/1.jpg", "caption": "a dog"}
                     {"image": "dogs/1.jpg", "captions": ["a brown dog", "a dog on grass"]}
                     {"image": "cats/2.png", "caption": "a cat", "split": "test"}
  captions.tsv     image<TAB>caption[<TAB>split] per line, optionally under the header
                   line image<TAB>caption[<TAB>split]

Image paths are relative to `root`; an image may have any number of lines, whose
captions are grouped. An image's split is the first one its lines give (train,
validation or test); an image without one goes to test or validation by a stable
hash of its path (`test_fraction`, `validation_fraction`), so the held-out images
stay the same across rebuilds and machines. Images under `root` that no line names
are counted as `no_caption`. Nothing outside `root` is read: an image whose path leads
out of it through a symlink (to a file or a folder) is skipped as `outside_root`
(an explicitly named `captions_file` may live anywhere). The example `id` is a stable 63-bit hash of the path.

Usage:
  builder = ImageTextFolder(data_dir=d, config=image_text_folder_config(root="/data/mine"))
  builder.download_and_prepare()
"""

import dataclasses
import json
import os
import posixpath
from typing import Any, Iterator

import tensorflow_datasets as tfds

from cmccl_jax.data import captioned_images as ci
from cmccl_jax.errors import UserError

SPLITS = ("train", "validation", "test")
CAPTIONS_FILES = ("captions.jsonl", "captions.tsv")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
_SPLIT_ALIASES = {"train": "train", "validation": "validation", "val": "validation", "test": "test"}


@dataclasses.dataclass(eq=False, kw_only=True)
class ImageTextFolderConfig(ci.CaptionedImagesConfig):
  """A folder build: where the images and captions are, the held-out fractions, the common parameters.

  `root` is made absolute and `captions_file` too (relative to `root`; empty: the one
  of CAPTIONS_FILES that exists). The config name carries a hash of both.
  """

  root: str = ""
  captions_file: str = ""
  validation_fraction: float = 0.05
  test_fraction: float = 0.05

  def __post_init__(self):
    if not self.root:
      raise UserError(
          "image_text_folder is built from a local folder of images, but no root was given; set "
          "--config.data.folder.root=/path/to/folder (the folder holding the images and captions.jsonl "
          "or captions.tsv).")
    self.root = ci.resolve_path(self.root)
    if self.captions_file:
      self.captions_file = ci.resolve_path(self.captions_file, self.root)
    self.validation_fraction = float(self.validation_fraction)
    self.test_fraction = float(self.test_fraction)
    for field in ("validation_fraction", "test_fraction"):
      if not 0.0 <= getattr(self, field) < 1.0:
        raise UserError(f"{field} must be in [0, 1), got {getattr(self, field)}")
    if self.validation_fraction + self.test_fraction >= 1.0:
      raise UserError(f"validation_fraction + test_fraction must be < 1 to leave a training split, got "
                       f"{self.validation_fraction} + {self.test_fraction}")
    super().__post_init__()

  def source_tag(self) -> str:
    # repr of a float is exact, so distinct fractions never share a name.
    captions = ci.stable_hash(self.captions_file)[:6] if self.captions_file else "auto"
    return (f"{ci.path_tag(self.root)}-cap{captions}"
            f"-va{self.validation_fraction!r}-te{self.test_fraction!r}")


def image_text_folder_config(**params: Any) -> ImageTextFolderConfig:
  """The config of these parameters (root, captions_file, image_size, fractions)."""
  return ImageTextFolderConfig(**params)


def find_captions_file(root: str, captions_file: str = "") -> str:
  """The captions file to read; UserError naming what was looked for, and where."""
  if not os.path.isdir(root):
    raise UserError(
        f"the image folder {root} (config.data.folder.root) does not exist; point "
        "--config.data.folder.root at the folder holding the images and captions.jsonl or captions.tsv.")
  if captions_file:
    if not os.path.isfile(captions_file):
      raise UserError(
          f"the captions file {captions_file} (config.data.folder.captions_file) does not exist; give "
          "an existing .jsonl or .tsv file (relative paths are taken from the image folder).")
    return captions_file
  found = [os.path.join(root, name) for name in CAPTIONS_FILES if os.path.isfile(os.path.join(root, name))]
  if not found:
    raise UserError(
        f"no captions file in the image folder {root}: looked for {' and '.join(CAPTIONS_FILES)}. Write one "
        "({\"image\": \"relative/path.jpg\", \"caption\": \"...\"} per line, or image<TAB>caption per line), "
        "or name yours with --config.data.folder.captions_file=FILE.")
  if len(found) > 1:
    raise UserError(f"the image folder {root} holds both {' and '.join(found)}; name the one to use with "
                     "--config.data.folder.captions_file=FILE.")
  if ci.inside(found[0], root) is None:
    raise UserError(f"{found[0]} is a symlink to {os.path.realpath(found[0])}, outside the image folder; "
                    "nothing outside it is read unless named: pass --config.data.folder.captions_file=FILE.")
  return found[0]


def _image_path(value: Any) -> str | None:
  """The normalized relative image path, or None if it is not a path inside the folder."""
  if not isinstance(value, str):
    return None
  path = posixpath.normpath(value.strip().replace("\\", "/"))
  if not value.strip() or path.startswith(("/", "../")) or path in ("..", "."):
    return None
  return path


def _split_name(value: Any) -> str | None:
  return _SPLIT_ALIASES.get(value.strip().lower()) if isinstance(value, str) else None


def _jsonl_lines(text: str) -> Iterator[tuple[str, list[Any], str | None] | None]:
  """(image path, raw captions, split or None) per non-blank line; None for a malformed line."""
  for line in ci.text_lines(text):
    if not line.strip():
      continue
    try:
      entry = json.loads(line)
    except json.JSONDecodeError:
      yield None
      continue
    if not isinstance(entry, dict) or ("caption" not in entry and "captions" not in entry):
      yield None
      continue
    captions = [entry["caption"]] if "caption" in entry else []
    if "captions" in entry:
      if not isinstance(entry["captions"], list):
        yield None
        continue
      captions += entry["captions"]
    split = entry.get("split")
    if split is not None and _split_name(split) is None:
      yield None
      continue
    path = _image_path(entry.get("image"))
    yield (path, captions, _split_name(split)) if path else None


def _tsv_lines(text: str) -> Iterator[tuple[str, list[Any], str | None] | None]:
  lines = [line for line in ci.text_lines(text) if line.strip()]
  if lines and [f.strip().lower() for f in lines[0].split("\t")][:2] == ["image", "caption"]:
    lines = lines[1:]
  for line in lines:
    fields = line.split("\t")
    path = _image_path(fields[0])
    split = _split_name(fields[2]) if len(fields) == 3 else None
    if path is None or len(fields) not in (2, 3) or (len(fields) == 3 and split is None):
      yield None
      continue
    yield path, [fields[1]], split


def _hash_split(path: str, validation_fraction: float, test_fraction: float) -> str:
  u = int(ci.stable_hash(path)[:16], 16) / 2**64
  if u < test_fraction:
    return "test"
  return "validation" if u < test_fraction + validation_fraction else "train"


def _stable_id(path: str) -> int:
  # A different slice of the digest than _hash_split's, so ids do not track splits.
  return int(ci.stable_hash(path)[16:32], 16) >> 1


def _images_under(root: str, skip: str) -> Iterator[str]:
  """Relative paths of the image files under root, in a stable order."""
  for folder, dirs, files in os.walk(root):
    dirs.sort()
    for name in sorted(files):
      path = os.path.join(folder, name)
      if name.lower().endswith(IMAGE_EXTENSIONS) and path != skip:
        yield os.path.relpath(path, root).replace(os.sep, "/")


class ImageTextFolder(ci.CaptionedImagesBuilder):
  """A local folder of captioned images, keyed by id (difficulty scores: data/difficulty.py)."""

  name = "image_text_folder"
  VERSION = tfds.core.Version("2.0.0")
  RELEASE_NOTES = {
      "2.0.0": "Images, captions and ids only: difficulty scores and blocks moved to their own builds.",
      "1.1.0": "Quantile blocks split ties at a block edge by rank, so no block is empty.",
      "1.0.0": "First release.",
  }

  def get_default_builder_config(self) -> ImageTextFolderConfig:
    # There is no sensible default: the source is the user's own folder.
    return image_text_folder_config()

  def check_sources(self) -> None:
    find_captions_file(self.builder_config.root, self.builder_config.captions_file)

  def _read_records(self, skipped: ci.SkipCounter) -> dict[str, list[ci.Record]]:
    c = self.builder_config
    path = find_captions_file(c.root, c.captions_file)
    parse = _tsv_lines if path.lower().endswith((".tsv", ".txt")) else _jsonl_lines
    captions: dict[str, list[Any]] = {}
    split_of: dict[str, str] = {}
    for line in parse(ci.read_text(path)):
      if line is None:
        skipped.add(ci.UNASSIGNED, "malformed_record")
        continue
      image, raw, split = line
      if split is not None and split_of.setdefault(image, split) != split:
        skipped.add(split_of[image], "malformed_record")  # a second, conflicting split
        continue
      captions.setdefault(image, []).extend(raw)
    for image in captions:
      split_of.setdefault(image, _hash_split(image, c.validation_fraction, c.test_fraction))
    records: dict[str, list[ci.Record]] = {split: [] for split in SPLITS}
    for image, raw in captions.items():
      cleaned = ci.clean_captions(raw, split_of[image], skipped)
      if not cleaned:
        skipped.add(split_of[image], "no_caption")
        continue
      records[split_of[image]].append(ci.Record(_stable_id(image), os.path.join(c.root, image), cleaned))
    for image in _images_under(c.root, skip=path):
      if image not in captions:
        skipped.add(_hash_split(image, c.validation_fraction, c.test_fraction), "no_caption")
    return records
