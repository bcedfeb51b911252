"""Tiny COCO-2014 copies and image-text folders in the real formats, with one of every bad input.

Each table maps an image to (kind of file, raw captions, ...); `expected_*` says what
a correct build keeps. UNDECODABLE in a caption is written as bytes that are not
UTF-8, so the file around it is still valid JSON/TSV.
"""

import io
import json
import os

import numpy as np
from PIL import Image

UNDECODABLE = "<undecodable>"
_BAD_BYTES = b"caf\xe9 \xff\xfe"
CORRUPT_BYTES = b"GIF89a? no, just text pretending to be an image"


def image_bytes(seed: int, size=(24, 32), mode: str = "RGB", fmt: str = "JPEG") -> bytes:
  """An encoded noise image of size (height, width)."""
  rng = np.random.default_rng(seed)
  pixels = rng.integers(0, 256, size=(*size, 4), dtype=np.uint8)
  image = Image.fromarray(pixels, "RGBA").convert(mode)
  buffer = io.BytesIO()
  image.save(buffer, format=fmt)
  return buffer.getvalue()


def truncated_jpeg(seed: int) -> bytes:
  """A JPEG whose header is intact and whose data stops two thirds of the way."""
  data = image_bytes(seed, size=(40, 48))
  return data[: len(data) * 2 // 3]


def write_file(path: str, kind: str, seed: int) -> None:
  """Writes the image of `kind` at path; "missing" writes nothing."""
  contents = {
      "rgb": lambda: image_bytes(seed, size=(24 + seed % 9, 32)),
      "gray": lambda: image_bytes(seed, size=(40, 20), mode="L"),
      "cmyk": lambda: image_bytes(seed, size=(20, 28), mode="CMYK"),
      "rgba_png": lambda: image_bytes(seed, size=(30, 30), mode="RGBA", fmt="PNG"),
      "corrupt": lambda: CORRUPT_BYTES,
      "truncated": lambda: truncated_jpeg(seed),
      "missing": lambda: None,
  }[kind]()
  if contents is not None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
      f.write(contents)


def write_text(path: str, text: str) -> None:
  """Writes UTF-8 text with every UNDECODABLE replaced by invalid bytes."""
  with open(path, "wb") as f:
    f.write(text.encode("utf-8").replace(UNDECODABLE.encode("utf-8"), _BAD_BYTES))


# ----------------------------------------------------------------------------- COCO

COCO_TRAIN = {  # id: (kind, raw captions)
    1: ("rgb", ["A dog runs on the grass.", "  a   dog\n running  "]),
    2: ("gray", ["a gray cat sits on a mat"]),
    3: ("cmyk", ["a red bus", ""]),                        # the empty caption is dropped
    4: ("corrupt", ["a corrupt file"]),
    5: ("truncated", ["a truncated file"]),
    6: ("missing", ["a missing file"]),
    7: ("rgb", []),                                        # no annotation at all
    8: ("rgb", [" \t  "]),                                 # only a whitespace caption
    9: ("rgb", [UNDECODABLE, "a bird on a wire"]),         # the undecodable caption is dropped
}
COCO_VAL = {
    101: ("rgb", ["two people ride bikes"]),
    102: ("rgb", ["a plate of food", "food on a plate"]),
    103: ("rgb", ["a clock tower at night"]),
}
KARPATHY = {1: "train", 2: "restval", 3: "restval", 4: "train", 9: "test", 101: "restval", 102: "val",
            103: "test"}


def coco_file_name(subset: str, image_id: int) -> str:
  return f"COCO_{subset}_{image_id:012d}.jpg"


def _clean(captions):
  return [" ".join(c.split()) for c in captions if c.strip() and UNDECODABLE not in c]


def _good(table):
  return {i: _clean(caps) for i, (kind, caps) in table.items()
          if kind in ("rgb", "gray", "cmyk") and _clean(caps)}


def expected_coco(karpathy: bool = False) -> dict[str, dict[int, list[str]]]:
  """{split: {id: cleaned captions}} of the examples a correct build keeps."""
  good = {**_good(COCO_TRAIN), **_good(COCO_VAL)}
  if not karpathy:
    return {"train": _good(COCO_TRAIN), "validation": _good(COCO_VAL)}
  split = {"train": "train", "restval": "train", "val": "validation", "test": "test"}
  out = {"train": {}, "validation": {}, "test": {}}
  for image_id, name in KARPATHY.items():
    if image_id in good:
      out[split[name]][image_id] = good[image_id]
  return out


def make_coco(root: str, karpathy_file: str = "") -> str:
  """Writes the COCO-2014 layout under root (and Karpathy's split file if named); returns root."""
  annotation_id = 0
  os.makedirs(os.path.join(root, "annotations"), exist_ok=True)
  for subset, table in (("train2014", COCO_TRAIN), ("val2014", COCO_VAL)):
    images, annotations = [], []
    for image_id, (kind, captions) in table.items():
      name = coco_file_name(subset, image_id)
      write_file(os.path.join(root, subset, name), kind, seed=image_id)
      images.append({"license": 1, "file_name": name, "coco_url": f"http://images.cocodataset.org/{name}",
                     "height": 24, "width": 32, "date_captured": "2013-11-14 16:28:13", "id": image_id})
      for caption in captions:
        annotation_id += 1
        annotations.append({"image_id": image_id, "id": annotation_id, "caption": caption})
    # An annotation of an image the file does not list: malformed, counted, not fatal.
    annotations.append({"image_id": 999_000 + len(images), "id": 999_000, "caption": "an orphan caption"})
    os.makedirs(os.path.join(root, subset), exist_ok=True)
    data = {"info": {"description": "tiny COCO 2014", "year": 2014}, "licenses": [{"id": 1, "name": "x"}],
            "images": images, "annotations": annotations}
    write_text(os.path.join(root, "annotations", f"captions_{subset}.json"), json.dumps(data, ensure_ascii=False))
  if karpathy_file:
    entries = []
    for image_id, split in KARPATHY.items():
      subset = "train2014" if image_id in COCO_TRAIN else "val2014"
      entries.append({"filepath": subset, "filename": coco_file_name(subset, image_id), "cocoid": image_id,
                      "imgid": len(entries), "split": split,
                      "sentences": [{"raw": "not the official caption", "tokens": ["not"], "sentid": 0}]})
    entries.append({"filepath": "val2014", "filename": "x.jpg", "cocoid": "not an id", "split": "train"})
    write_text(karpathy_file, json.dumps({"images": entries, "dataset": "coco"}))
  return root


# ----------------------------------------------------------------------------- folder

FOLDER = {  # relative path: (kind, raw captions, split or None)
    "animals/dog.jpg": ("rgb", ["a dog", "a brown dog", "dog on grass"], "train"),
    "animals/cat.png": ("rgba_png", ["a cat"], "train"),
    "more/one.jpg": ("rgb", ["one red square"], "train"),
    "more/two.jpg": ("cmyk", ["two blue circles"], "train"),
    "gray.jpg": ("gray", ["a gray square"], "validation"),
    "deep/er/bird.jpg": ("rgb", ["a bird   in \u00a0the sky"], "test"),
    "corrupt.jpg": ("corrupt", ["a corrupt file"], "train"),
    "truncated.jpg": ("truncated", ["a truncated file"], "train"),
    "missing.jpg": ("missing", ["a missing file"], "train"),
    "empty.jpg": ("rgb", [""], "train"),
    "blank.jpg": ("rgb", ["   "], "train"),
    "bad_bytes.jpg": ("rgb", [UNDECODABLE + " a caption"], "train"),
    "uncaptioned.jpg": ("rgb", [], "train"),
}
FOLDER_SKIPS = {  # what a correct build counts, per split
    "train": {"corrupt_image": 1, "truncated_image": 1, "missing_image": 1, "empty_caption": 2,
              "undecodable_caption": 1, "no_caption": 4},
    "unassigned": {"malformed_record": 1},
}


def expected_folder() -> dict[str, dict[str, list[str]]]:
  """{split: {relative path: cleaned captions}} of the examples a correct build keeps."""
  out = {"train": {}, "validation": {}, "test": {}}
  for path, (kind, captions, split) in FOLDER.items():
    if kind not in ("corrupt", "truncated", "missing") and _clean(captions):
      out[split][path] = _clean(captions)
  return out


def make_folder(root: str, fmt: str = "jsonl", table=None, with_split: bool = True) -> str:
  """Writes the images of `table` (default FOLDER) under root and captions.<fmt>; returns root.

  Several captions of one image go on several lines (jsonl also uses a "captions"
  list), and one line is malformed.
  """
  table = FOLDER if table is None else table
  lines = ["image\tcaption\tsplit" if with_split else "image\tcaption"] if fmt == "tsv" else []
  for seed, (path, (kind, captions, split)) in enumerate(table.items()):
    write_file(os.path.join(root, path), kind, seed)
    split_field = {"split": split} if with_split else {}
    if fmt == "jsonl" and len(captions) > 2:
      lines.append(json.dumps({"image": path, "caption": captions[0], **split_field}))
      lines.append(json.dumps({"image": path, "captions": captions[1:], **split_field}))
    elif fmt == "jsonl":
      lines += [json.dumps({"image": path, "caption": c, **split_field}, ensure_ascii=False) for c in captions]
    else:
      lines += ["\t".join([path, c] + ([split] if with_split else [])) for c in captions]
  lines.insert(len(lines) // 2, "this line is neither JSON nor image<TAB>caption")
  write_text(os.path.join(root, f"captions.{fmt}"), "\n".join(lines) + "\n")
  return root
