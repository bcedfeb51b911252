"""Teacher features beside the images: id-keyed TFDS shards, one build per (modality, teacher), joined by id.

I2MCL's distillation regresses each modality's representation onto a frozen
teacher's feature of the same input. Without augmentation the teacher's features
are a function of the example, so they are computed once (`scoring.score_shards.
prepare_teacher_features`, by `python -m preprocess` or a run's first use) into
`teacher_features/<modality>-<teacher hash>-<image build>`:

  image: one unit-norm float32 vector per example, `feature` [d];
  text:  one per caption, `feature` [number of captions, d] (row c is caption c),
         so the training stream takes the row of the caption it picked.

A run joins them into its examples by id as `id_lookup` joins the scores (graph
constants, so the input iterator stays checkpointable): that bounds them to
`MAX_CONSTANT_BYTES`; larger sets are refused with that number.

Like difficulty.py this module only names, writes and reads the shards: the data
layer runs no model.
"""

import dataclasses
import hashlib
import os
from typing import Callable, Mapping

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from cmccl_jax.data import difficulty
from cmccl_jax.data.local_builder import LocalBuilder, derived_name
from cmccl_jax.errors import UserError
from cmccl_jax.models import hf_import
from cmccl_jax.workdir import Workdir

MODALITIES = ("image", "text")
# The largest table of features a run holds as tf.data graph constants (protobufs stop at 2 GiB).
MAX_CONSTANT_BYTES = 1 << 30


@dataclasses.dataclass(eq=False, kw_only=True)
class TeacherFeaturesConfig(tfds.core.BuilderConfig):
  """One teacher's features of one modality of one image build; `teacher` names it (hashed into the name)."""

  name: str = ""
  dataset: str = ""
  modality: str = "image"
  teacher: str = ""

  def __post_init__(self):
    if self.modality not in MODALITIES:
      raise ValueError(f"modality {self.modality!r} is not one of {MODALITIES}")
    tag = hashlib.sha256(self.teacher.encode()).hexdigest()[:10]
    self.name = derived_name(self.name, f"{self.modality}-x{tag}", self.dataset)


# What a computed build holds: {split: (ids int64 [n], features float32 [n, d] or [n, C, d])}.
SplitFeatures = Mapping[str, tuple[np.ndarray, np.ndarray]]


class TeacherFeatures(LocalBuilder):
  """A frozen teacher's feature of each example (image) or each of its captions (text), keyed by id."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Teacher features in their own id-keyed shards, beside the image shards."}

  def __init__(self, *, features: SplitFeatures | None = None, width: int = 0, **kwargs):
    self._features = features
    self._width = width
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    # Widths are the teacher's, so unknown to the reader: text's [captions, width] is stored zlib-encoded
    # (TFDS parses at most one unknown dimension otherwise).
    image = self.builder_config.modality == "image"
    feature = (tfds.features.Tensor(shape=(None,), dtype=np.float32) if image
               else tfds.features.Tensor(shape=(None, None), dtype=np.float32, encoding="zlib"))
    return tfds.core.DatasetInfo(
        builder=self,
        description="A frozen teacher's features by example id (I2MCL's distillation targets).",
        features=tfds.features.FeaturesDict({
            "id": tfds.features.Scalar(dtype=np.int64),
            "feature": feature,
        }),
        metadata=tfds.core.MetadataDict(),
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # features are computed, not downloaded
    if self._features is None:
      raise RuntimeError(f"{self.builder_config.name} is built from computed features; "
                         "build it with cmccl_jax.scoring.score_shards.prepare_teacher_features")
    c = self.builder_config
    self.info.metadata.update(dataset=c.dataset, modality=c.modality, teacher=c.teacher, width=self._width)
    return {split: self._generate_examples(ids, values) for split, (ids, values) in self._features.items()
            if len(ids)}

  def _generate_examples(self, ids: np.ndarray, values):
    for example_id, value in zip(np.asarray(ids).tolist(), values):
      yield example_id, {"id": example_id, "feature": np.asarray(value, np.float32)}


def feature_builder(image_builder: tfds.core.DatasetBuilder, modality: str, teacher: str, *,
                    features: SplitFeatures | None = None, width: int = 0) -> TeacherFeatures:
  """The build of `teacher`'s `modality` features of `image_builder`'s shards, in the same data_dir.

  `teacher`: a resolved description ("bert:<folder>" or "<experiment>@<step>"), so a new checkpoint is a new build.
  """
  config = TeacherFeaturesConfig(dataset=difficulty.dataset_ref(image_builder), modality=modality,
                                 teacher=teacher)
  return TeacherFeatures(data_dir=difficulty._data_dir(image_builder), config=config, features=features,
                         width=width)


def read_features(builder: tfds.core.DatasetBuilder) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """{split: (ids sorted, features [n, d] or, for text, [n, C, d] zero-padded to the most captions)}."""
  out = {}
  for split in builder.info.splits:
    ids, rows = [], []
    for example in tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False)):
      ids.append(int(example["id"]))
      rows.append(example["feature"])
    order = np.argsort(np.asarray(ids, np.int64), kind="stable")
    if rows and rows[0].ndim == 2:
      most = max(r.shape[0] for r in rows)
      padded = np.zeros((len(rows), most, rows[0].shape[1]), np.float32)
      for i, r in enumerate(rows):
        padded[i, :r.shape[0]] = r
      values = padded
    else:
      values = np.stack(rows).astype(np.float32) if rows else np.zeros((0, 0), np.float32)
    out[split] = (np.asarray(ids, np.int64)[order], values[order])
  return out


def missing_features(image_builder: tfds.core.DatasetBuilder, modality: str, teacher: str) -> UserError:
  return UserError(
      f"the {modality} teacher features of {image_builder.name} by {teacher} are not built in "
      f"{difficulty._data_dir(image_builder)}. Build them with `python -m preprocess --config=<your config and "
      "overrides>`, or train with --config.data.auto_prepare=True (the default) to build them first.")


@dataclasses.dataclass
class RunTeachers:
  """The teacher features a run joins into its training examples: {modality: {split: (ids, features)}}."""

  features: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]
  teachers: dict[str, str]

  @property
  def widths(self) -> dict[str, int]:
    return {m: int(next(iter(per_split.values()))[1].shape[-1]) for m, per_split in self.features.items()}

  def train_lookup(self, split: str) -> Callable[[tf.Tensor], dict[str, tf.Tensor]]:
    """ids -> {"teacher/<modality>": its features} ([d], or [C, d] for text: the stream picks the caption)."""
    columns, ids = {}, None
    for modality, per_split in self.features.items():
      if split not in per_split:
        raise UserError(f"no {modality} teacher features for the split {split!r}; rebuild them with "
                        "`python -m preprocess`.")
      split_ids, values = per_split[split]
      if ids is not None and not np.array_equal(ids, split_ids):
        raise ValueError(f"the teacher features of {split} cover other examples per modality")
      ids = split_ids
      columns[f"teacher/{modality}"] = values
    size = sum(v.nbytes for v in columns.values())
    if size > MAX_CONSTANT_BYTES:
      raise UserError(f"the teacher features of {split} take {size / 2**30:.1f} GiB, more than the "
                      f"{MAX_CONSTANT_BYTES / 2**30:.0f} GiB a run joins in memory; use a teacher of smaller width.")
    return difficulty.id_lookup(ids, columns)

  def describe(self) -> str:
    return "teachers: " + ", ".join(f"{m} {t} (width {self.widths[m]}, precomputed)" for m, t in self.teachers.items())


def load_run_teachers(image_builder: tfds.core.DatasetBuilder, teachers: dict[str, str]) -> RunTeachers | None:
  """The prepared features of {modality: resolved teacher}; None when there are none to read."""
  if not teachers:
    return None
  features = {}
  for modality, teacher in teachers.items():
    builder = feature_builder(image_builder, modality, teacher)
    if not builder.is_prepared():
      raise missing_features(image_builder, modality, teacher)
    features[modality] = read_features(builder)
  return RunTeachers(features=features, teachers=dict(teachers))


def resolve_teachers(dynamic) -> dict[str, str]:
  """{modality: resolved teacher} of config.curriculum.dynamic (its image_teacher, text_teacher, teacher_step).

  A teacher is an experiment trained here (exp/NAME: its towers at teacher_step, -1 the latest) or, for
  text, a pretrained BERT ("minilm", the packaged all-MiniLM-L6-v2, or a Hugging Face folder). The resolved
  form ("<experiment>@<step>" or "bert:<folder>") is what names the build, so a new checkpoint is a new build.
  """
  if dynamic is None or not bool(dynamic.get("distill", False)):
    return {}
  out = {}
  step = int(dynamic.get("teacher_step", -1))
  for modality in MODALITIES:
    source = str(dynamic.get(f"{modality}_teacher", "") or "")
    if not source:
      continue
    if modality == "text" and (source == "minilm" or os.path.isfile(os.path.join(source, "vocab.txt"))):
      out[modality] = f"bert:{os.path.abspath(hf_import.resolve_checkpoint(source))}"
      continue
    path = os.path.abspath(os.path.expanduser(source))
    resolved = Workdir(path).resolve_step(step, "config.curriculum.dynamic.teacher_step")
    out[modality] = f"{path}@{resolved}"
  if not out:
    raise UserError("config.curriculum.dynamic.distill=True but neither config.curriculum.dynamic.image_teacher "
                    "nor .text_teacher is set; set one (exp/NAME of a dual encoder trained here, or "
                    "text_teacher='minilm').")
  return out
