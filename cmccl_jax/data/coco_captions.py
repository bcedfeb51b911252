"""TFDS builder of `coco_captions2014`: COCO-2014 images and captions from a local copy.

Nothing is downloaded. The builder reads, under `root`:
  train2014/*.jpg, val2014/*.jpg                      (cocodataset.org: 2014 Train/Val images)
  annotations/captions_{train,val}2014.json          (cocodataset.org: 2014 Train/Val annotations)
Without a Karpathy split file the splits are train = train2014 and validation =
val2014 (COCO-2014 has no captioned test set). With Karpathy's `dataset_coco.json`
(caption_datasets.zip) they are train = train + restval, validation = val and test =
test, the split the image-text retrieval literature reports on; the captions still
come from the official annotation files, matched by COCO id. The example `id` is the
COCO image id.

Usage:
  builder = CocoCaptions2014(data_dir=d, config=coco_captions_config(root="/data/coco"))
  builder.download_and_prepare()
"""

import collections
import dataclasses
import json
import os
from typing import Any, Callable

import tensorflow_datasets as tfds

from cmccl_jax.data import captioned_images as ci
from cmccl_jax.errors import UserError

SUBSETS = ("train2014", "val2014")
_SUBSET_SPLIT = {"train2014": "train", "val2014": "validation"}
_KARPATHY_SPLIT = {"train": "train", "restval": "train", "val": "validation", "test": "test"}
_COCO_URL = "https://cocodataset.org/#download"
_KARPATHY_URL = "https://cs.stanford.edu/people/karpathy/deepimagesent/caption_datasets.zip"


@dataclasses.dataclass(eq=False, kw_only=True)
class CocoCaptionsConfig(ci.CaptionedImagesConfig):
  """A COCO-2014 build: where the copy is, the split file, and the common parameters.

  `root` and `karpathy_split` are made absolute (a relative `karpathy_split` is taken
  from `root`), and the config name carries a hash of both, so builds from two copies
  never share a directory.
  """

  root: str = ""
  karpathy_split: str = ""

  def __post_init__(self):
    if not self.root:
      raise UserError(
          "coco_captions2014 is built from a local copy of COCO-2014, but no root was given; set "
          "--config.data.coco.root=/path/to/coco, the folder holding train2014/, val2014/ and "
          f"annotations/ (from {_COCO_URL}).")
    self.root = ci.resolve_path(self.root)
    if self.karpathy_split:
      self.karpathy_split = ci.resolve_path(self.karpathy_split, self.root)
    super().__post_init__()

  def source_tag(self) -> str:
    karpathy = f"karpathy{ci.stable_hash(self.karpathy_split)[:10]}" if self.karpathy_split else "official"
    return f"{ci.path_tag(self.root)}-{karpathy}"


def coco_captions_config(**params: Any) -> CocoCaptionsConfig:
  """The config of these parameters (root, karpathy_split, image_size)."""
  return CocoCaptionsConfig(**params)


def check_layout(root: str, karpathy_split: str = "") -> None:
  """Raises UserError listing every missing folder or file, and where to get it."""
  if not os.path.isdir(root):
    raise UserError(
        f"the COCO-2014 folder {root} (config.data.coco.root) does not exist. It must hold train2014/ "
        "and val2014/ (2014 Train and Val images) and annotations/captions_train2014.json and "
        f"annotations/captions_val2014.json (2014 Train/Val annotations), all from {_COCO_URL}.")
  missing = []
  for subset in SUBSETS:
    if not os.path.isdir(os.path.join(root, subset)):
      missing.append(f"{os.path.join(root, subset)}/ (the 2014 {subset[:-4].title()} images, {subset}.zip)")
  for subset in SUBSETS:
    path = _annotation_file(root, subset)
    if not os.path.isfile(path):
      missing.append(f"{path} (in the 2014 Train/Val annotations, annotations_trainval2014.zip)")
  if missing:
    raise UserError(
        f"the COCO-2014 folder {root} is missing: {'; '.join(missing)}. Download them from "
        f"{_COCO_URL} and unpack them into {root}.")
  if karpathy_split and not os.path.isfile(karpathy_split):
    raise UserError(
        f"the Karpathy split file {karpathy_split} (config.data.coco.karpathy_split) does not exist. "
        f"It is dataset_coco.json from {_KARPATHY_URL}; or set --config.data.coco.karpathy_split='' "
        "to use train2014 and val2014 as the train and validation splits.")


def _annotation_file(root: str, subset: str) -> str:
  return os.path.join(root, "annotations", f"captions_{subset}.json")


def _load_json(path: str, what: str) -> dict[str, Any]:
  try:
    data = json.loads(ci.read_text(path))
  except json.JSONDecodeError as e:
    raise UserError(f"{path} is not valid JSON ({e}); it should be {what}. Replace it with an "
                     "intact copy.") from e
  if not isinstance(data, dict) or not isinstance(data.get("images"), list):
    raise UserError(f"{path} has no list of 'images'; it should be {what}.")
  return data


def _is_id(value: Any) -> bool:
  return isinstance(value, int) and not isinstance(value, bool) and value >= 0


class _Official:
  """The images and raw captions of the official annotation files, by COCO id.

  `split_of(subset, image_id)` says under which split a malformed entry is counted
  (None: under UNASSIGNED).
  """

  def __init__(self, root: str, skipped: ci.SkipCounter, split_of: Callable[[str, Any], str | None]):
    self.file_of: dict[int, str] = {}  # id -> "train2014/COCO_train2014_....jpg"
    self.captions: dict[int, list[Any]] = collections.defaultdict(list)
    for subset in SUBSETS:
      path = _annotation_file(root, subset)
      data = _load_json(path, f"the COCO captions file captions_{subset}.json")
      if not isinstance(data.get("annotations"), list):
        raise UserError(f"{path} has no list of 'annotations'; it should be the COCO captions file "
                         f"captions_{subset}.json.")
      ids = set()
      for image in data["images"]:
        image_id = image.get("id") if isinstance(image, dict) else None
        image_id = image_id if _is_id(image_id) else None
        if image_id is None or image_id in self.file_of or not isinstance(image.get("file_name"), str):
          skipped.add(split_of(subset, image_id) or ci.UNASSIGNED, "malformed_record")
          continue
        ids.add(image_id)
        self.file_of[image_id] = f"{subset}/{image['file_name']}"
      for annotation in data["annotations"]:
        image_id = annotation.get("image_id") if isinstance(annotation, dict) else None
        image_id = image_id if _is_id(image_id) else None
        if image_id not in ids:
          skipped.add(split_of(subset, image_id) or ci.UNASSIGNED, "malformed_record")
          continue
        # A missing caption is kept as None, so that clean_caption counts it for its image's split.
        self.captions[image_id].append(annotation.get("caption"))


def _read_karpathy(path: str, skipped: ci.SkipCounter) -> list[tuple[int, str, str]]:
  """[(cocoid, split, "val2014/COCO_val2014_....jpg")] in file order."""
  data = _load_json(path, "Karpathy's dataset_coco.json")
  assignment, seen = [], set()
  for image in data["images"]:
    image = image if isinstance(image, dict) else {}
    cocoid, split, filepath, filename = (image.get(k) for k in ("cocoid", "split", "filepath", "filename"))
    split = _KARPATHY_SPLIT.get(split) if isinstance(split, str) else None
    if not (_is_id(cocoid) and split and filepath in SUBSETS and isinstance(filename, str)
            and cocoid not in seen):
      skipped.add(ci.UNASSIGNED, "malformed_record")
      continue
    seen.add(cocoid)
    assignment.append((cocoid, split, f"{filepath}/{filename}"))
  return assignment


class CocoCaptions2014(ci.CaptionedImagesBuilder):
  """COCO-2014 captioned images, keyed by id (difficulty scores: data/difficulty.py)."""

  name = "coco_captions2014"
  VERSION = tfds.core.Version("2.0.0")
  RELEASE_NOTES = {
      "2.0.0": "Images, captions and ids only: difficulty scores and blocks moved to their own builds.",
      "1.1.0": "Quantile blocks split ties at a block edge by rank, so no block is empty.",
      "1.0.0": "First release.",
  }

  def get_default_builder_config(self) -> CocoCaptionsConfig:
    # There is no sensible default: the source is the user's local copy.
    return coco_captions_config()

  def check_sources(self) -> None:
    check_layout(self.builder_config.root, self.builder_config.karpathy_split)

  def _read_records(self, skipped: ci.SkipCounter) -> dict[str, list[ci.Record]]:
    c = self.builder_config
    self.check_sources()
    if c.karpathy_split:
      assignment = _read_karpathy(c.karpathy_split, skipped)
      karpathy_split = {cocoid: split for cocoid, split, _ in assignment}
      official = _Official(c.root, skipped, lambda subset, image_id: karpathy_split.get(image_id))
      splits = ("train", "validation", "test")
    else:
      official = _Official(c.root, skipped, lambda subset, image_id: _SUBSET_SPLIT[subset])
      assignment = [(image_id, _SUBSET_SPLIT[file.split("/")[0]], file)
                    for image_id, file in official.file_of.items()]
      splits = ("train", "validation")
    records: dict[str, list[ci.Record]] = {split: [] for split in splits}
    for image_id, split, file in assignment:
      captions = ci.clean_captions(official.captions.get(image_id, ()), split, skipped)
      if not captions:
        skipped.add(split, "no_caption")
        continue
      records[split].append(ci.Record(image_id, os.path.join(c.root, file), captions))
    return records
