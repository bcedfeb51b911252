"""Difficulty scores beside the images: id-keyed TFDS shards, one build per scorer, joined by id in tf.data.

The image/caption shards of a dataset depend only on its source and image size.
Each offline scorer's scores live in their own build, `difficulty_scores/<name>`,
whose name says which image build was scored, by which scorer, under which
settings (`ScoringSettings`, hashed; the settings themselves are in the build's
metadata). So changing the scorer, a teacher or K re-encodes no image: a new
scorer or teacher is a new score build, and K only changes the blocks, which a run
computes from the training scores when it starts (`curriculum.Curriculum.blocks`).

Computing scores (teachers, taggers) is `cmccl_jax.scoring.score_shards`; this
module only names, writes and reads the shards, so the data layer runs no model.

A run reads every scorer it names (`run_scorers`) into a `ScoreTable` and joins
the columns into its examples by id (`id_lookup`: a binary search over sorted
constant ids inside the tf.data graph; no lookup-table resource, so the input
iterator stays checkpointable).
"""

import dataclasses
import hashlib
import json
import os
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from cmccl_jax.curriculum.curriculum import LEARNED, Curriculum
from cmccl_jax.data.local_builder import LocalBuilder, derived_name
from cmccl_jax.errors import UserError
from cmccl_jax.workdir import Workdir

# The offline scorers (computed by cmccl_jax.scoring.scorers, which registers one per name).
SCORERS = ("caption_length", "ground_truth", "noun_count", "knn_text", "knn_image", "misalignment",
           "distillation", "combined")
TEACHER_SCORERS = ("knn_image", "misalignment", "distillation")


def scorer_names(names: Iterable[str] | str) -> list[str]:
  """Scorer names from a tuple, where an item may also list several separated by commas.

  `--config.scoring.scorers=a,b` arrives as the one-item tuple ("a,b",).
  """
  if isinstance(names, str):
    names = [names]
  return [part.strip() for name in names for part in str(name).split(",") if part.strip()]


def check_scorer_names(names: Sequence[str]) -> tuple[str, ...]:
  """`names` as a tuple, after checking each is a known scorer and none repeats."""
  names = tuple(names)
  unknown = [n for n in names if n not in SCORERS]
  if unknown:
    raise UserError(f"unknown scorer {unknown[0]!r}; known scorers: {', '.join(sorted(SCORERS))}")
  if len(set(names)) != len(names) or not names:
    raise UserError(f"scorers must be non-empty and unique, got {names}")
  return names


# ----------------------------------------------------------------------------- settings

@dataclasses.dataclass(frozen=True)
class ScoringSettings:
  """What the model-based scorers depend on: config.scoring without its list of scorers.

  teacher / teacher_step: dual-encoder experiment directory (exp/NAME) and checkpoint
    (-1 latest, 0 earliest) for knn_image, misalignment, distillation and, with
    text_teacher="teacher", knn_text.
  student / student_step: distillation's student ("" = the teacher's experiment).
  text_teacher: knn_text's encoder: "minilm", a Hugging Face BERT folder, or "teacher".
  knn_k: neighbours of the kNN densities. combined: members of `combined`.
  distill_references: size of distillation's reference image set.
  batch_size: examples per scoring batch (changes no score).
  """

  teacher: str = ""
  teacher_step: int = -1
  student: str = ""
  student_step: int = 0
  text_teacher: str = "minilm"
  knn_k: int = 10
  combined: tuple[str, ...] = ("caption_length", "noun_count")
  distill_references: int = 1024
  batch_size: int = 256

  def __post_init__(self):
    object.__setattr__(self, "combined", tuple(scorer_names(self.combined)))
    for field in ("knn_k", "distill_references", "batch_size"):
      if int(getattr(self, field)) < 1:
        raise UserError(f"config.scoring.{field} must be >= 1, got {getattr(self, field)}")

  @classmethod
  def from_config(cls, scoring_config) -> "ScoringSettings":
    """From `config.scoring` (None: the defaults); its `scorers` list is not a setting and is skipped."""
    if scoring_config is None:
      return cls()
    fields = {k: v for k, v in dict(scoring_config).items() if k != "scorers"}
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(fields) - known)
    if unknown:
      raise UserError(f"config.scoring has unknown fields {unknown}; its fields are scorers and "
                      f"{', '.join(sorted(known))} (see configs/common.py).")
    return cls(**fields)

  def needs_teacher(self, names: Sequence[str]) -> list[str]:
    """The scorers among `names` that read the dual-encoder teacher."""
    return [n for n in names if n in TEACHER_SCORERS or (n == "knn_text" and self.text_teacher == "teacher")]

  def inputs(self, names: Sequence[str]) -> list[str]:
    """`names` and, for `combined`, its members: every scorer whose scores `names` depend on."""
    out = list(names)
    if "combined" in out:
      out += [m for m in self.combined if m not in out]
    return out

  def resolved(self, names: Sequence[str]) -> "ScoringSettings":
    """Checked for the scorers `names`, with paths made absolute and checkpoint steps made concrete.

    Raises UserError naming the config.scoring field to fix.
    """
    names = list(names)
    if "combined" in names:
      bad = [m for m in self.combined if m == "combined" or m not in SCORERS]
      if bad or not self.combined:
        raise UserError(f"config.scoring.combined={self.combined} must name one or more scorers other than "
                        f"'combined' (known: {', '.join(s for s in SCORERS if s != 'combined')}); bad: {bad}")
      names = self.inputs(names)
    changes: dict[str, Any] = {}
    users = self.needs_teacher(names)
    if users:
      if not self.teacher:
        raise UserError(f"the scorers {users} need a dual-encoder teacher but config.scoring.teacher is empty; "
                        "set --config.scoring.teacher=exp/NAME, an experiment trained with `bash train.sh NAME`")
      changes["teacher"] = _absolute(self.teacher)
      changes["teacher_step"] = Workdir(changes["teacher"]).resolve_step(self.teacher_step,
                                                                         "config.scoring.teacher_step")
    if "distillation" in names:
      changes["student"] = _absolute(self.student or self.teacher)
      changes["student_step"] = Workdir(changes["student"]).resolve_step(self.student_step,
                                                                         "config.scoring.student_step")
      if (changes["student"], changes["student_step"]) == (changes["teacher"], changes["teacher_step"]):
        raise UserError(
            f"distillation's student is its teacher ({changes['teacher']} at step {changes['teacher_step']}), "
            "so every score would be 0; set --config.scoring.student_step=0 (the earliest checkpoint) or "
            "--config.scoring.student to another experiment")
    if "knn_text" in names and self.text_teacher not in ("minilm", "teacher"):
      folder = _absolute(self.text_teacher)
      if not os.path.isdir(folder):
        raise UserError(f"config.scoring.text_teacher={self.text_teacher!r} is neither 'minilm', "
                        f"'teacher' nor an existing Hugging Face BERT folder ({folder})")
      changes["text_teacher"] = folder
    return dataclasses.replace(self, **changes)

  def describe(self, names: Sequence[str]) -> dict[str, Any]:
    """The settings that change the scores of `names` (a resolved instance gives concrete steps)."""
    names = self.inputs(names)
    out: dict[str, Any] = {}
    if self.needs_teacher(names):
      out["teacher"] = f"{self.teacher}@{self.teacher_step}"
    if "knn_text" in names:
      out["text_teacher"] = out["teacher"] if self.text_teacher == "teacher" else self.text_teacher
    if "knn_text" in names or "knn_image" in names:
      out["knn_k"] = int(self.knn_k)
    if "distillation" in names:
      out["student"] = f"{self.student or self.teacher}@{self.student_step}"
      out["distill_references"] = int(self.distill_references)
    if "combined" in names:
      out["combined"] = list(self.combined)
    return out

  def tag(self, names: Sequence[str]) -> str:
    """"" or "-x" + a hash of `describe(names)`: the part of a score build's name these settings decide."""
    return _settings_tag(self.describe(names))


def _settings_tag(described: Mapping[str, Any]) -> str:
  if not described:
    return ""
  return "-x" + hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:10]


def _absolute(path: str) -> str:
  return os.path.abspath(os.path.expanduser(str(path)))


def run_scorers(config, image_builder: tfds.core.DatasetBuilder) -> tuple[str, ...]:
  """The offline scorers a run reads: config.scoring.scorers (() = the dataset's default) and the
  curriculum's scorer (unless it is the online "learned"), checked against what the dataset carries."""
  names = scorer_names(config.scoring.scorers) if "scoring" in config else []
  if not names:
    names = list(getattr(type(image_builder), "DEFAULT_SCORERS", ("caption_length",)))
  scorer = config.curriculum.scorer
  if scorer != LEARNED and scorer not in names:
    if scorer not in SCORERS:
      raise UserError(f"config.curriculum.scorer={scorer!r} is not a scorer; known: "
                      f"{', '.join(SCORERS)} or {LEARNED!r} (the online difficulty head).")
    names.append(scorer)
  names = check_scorer_names(names)
  settings = ScoringSettings.from_config(config.get("scoring"))
  if "ground_truth" in settings.inputs(names) and "complexity" not in image_builder.info.features:
    raise UserError(f"the scorer ground_truth reads the generator's `complexity`, which only synthetic_shapes "
                    f"has; {image_builder.name} has none. Drop it from config.scoring.scorers / "
                    "config.scoring.combined and pick another config.curriculum.scorer.")
  return names


# ----------------------------------------------------------------------------- the score builds

def dataset_ref(image_builder: tfds.core.DatasetBuilder) -> str:
  """"name/config/version": the image build a score build scored."""
  return f"{image_builder.name}/{image_builder.builder_config.name}/{image_builder.version}"


@dataclasses.dataclass(eq=False, kw_only=True)
class DifficultyScoresConfig(tfds.core.BuilderConfig):
  """One scorer's scores of one image build, under the settings that change them.

  `dataset`: the image build's `dataset_ref`; `settings`: `ScoringSettings.describe([scorer])`
  of a resolved instance, as JSON (it is hashed into the name).
  """

  name: str = ""
  dataset: str = ""
  scorer: str = ""
  settings: str = "{}"

  def __post_init__(self):
    check_scorer_names([self.scorer])
    tag = _settings_tag(json.loads(self.settings))
    # Scorer names hold no "-", builder names none either: the parts cannot run into each other.
    self.name = derived_name(self.name, f"{self.scorer}{tag}", self.dataset)


# What a computed score build holds: {split: (ids int64 [n], scores float32 [n])}.
SplitScores = Mapping[str, tuple[np.ndarray, np.ndarray]]


class DifficultyScores(LocalBuilder):
  """One float per example, `difficulty/<scorer>`, keyed by the example's id.

  Built from scores computed elsewhere (`scores`, given only to build; reading needs none).
  """

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Scores in their own id-keyed shards, beside the image shards."}

  def __init__(self, *, scores: SplitScores | None = None, **kwargs):
    self._scores = scores
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description="Offline difficulty scores by example id.",
        features=tfds.features.FeaturesDict({
            "id": tfds.features.Scalar(dtype=np.int64),
            "difficulty": tfds.features.FeaturesDict(
                {self.builder_config.scorer: tfds.features.Scalar(dtype=np.float32)}),
        }),
        metadata=tfds.core.MetadataDict(),
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # scores are computed, not downloaded
    if self._scores is None:
      raise RuntimeError(f"{self.builder_config.name} is built from computed scores; "
                         "build it with cmccl_jax.scoring.score_shards.prepare_scores")
    c = self.builder_config
    self.info.metadata.update(dataset=c.dataset, scorer=c.scorer, settings=json.loads(c.settings),
                              num_examples={split: len(ids) for split, (ids, _) in self._scores.items()})
    # TFDS cannot write an empty split (the image build has none either).
    return {split: self._generate_examples(ids, values) for split, (ids, values) in self._scores.items()
            if len(ids)}

  def _generate_examples(self, ids: np.ndarray, values: np.ndarray):
    for example_id, value in zip(ids.tolist(), np.asarray(values, np.float32).tolist()):
      yield example_id, {"id": example_id, "difficulty": {self.builder_config.scorer: value}}


def score_builder(image_builder: tfds.core.DatasetBuilder, scorer: str, settings: ScoringSettings, *,
                  scores: SplitScores | None = None) -> DifficultyScores:
  """The score build of `scorer` on `image_builder`'s shards, in the same data_dir; `settings` resolved."""
  config = DifficultyScoresConfig(dataset=dataset_ref(image_builder), scorer=scorer,
                                  settings=json.dumps(settings.describe([scorer]), sort_keys=True))
  return DifficultyScores(data_dir=_data_dir(image_builder), config=config, scores=scores)


def _data_dir(image_builder: tfds.core.DatasetBuilder) -> str:
  """The data_dir the image build lives in: <data_dir>/<name>/<config>/<version>."""
  return os.path.dirname(os.path.dirname(os.path.dirname(os.fspath(image_builder.data_dir))))


def read_scores(builder: tfds.core.DatasetBuilder) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """{split: (ids, scores)} of a prepared score build, sorted by id."""
  scorer = builder.builder_config.scorer
  out = {}
  for split in builder.info.splits:
    ids, values = [], []
    ds = builder.as_dataset(split=split, shuffle_files=False).batch(65536)
    for batch in ds.as_numpy_iterator():
      ids.append(batch["id"])
      values.append(batch["difficulty"][scorer])
    ids, values = np.concatenate(ids), np.concatenate(values)
    order = np.argsort(ids, kind="stable")
    out[split] = (ids[order], values[order].astype(np.float32))
  return out


# ----------------------------------------------------------------------------- a run's scores

class ScoreTable:
  """Every offline score a run reads, per split: the sorted ids and one float32 column per scorer."""

  def __init__(self, scores: Mapping[str, Mapping[str, tuple[np.ndarray, np.ndarray]]]):
    """`scores`: {scorer: {split: (ids, values)}}; every scorer must cover the same ids of a split."""
    self.scorers = tuple(scores)
    self.ids: dict[str, np.ndarray] = {}
    self.columns: dict[str, dict[str, np.ndarray]] = {}
    for name, per_split in scores.items():
      for split, (ids, values) in per_split.items():
        order = np.argsort(ids, kind="stable")
        ids, values = np.asarray(ids, np.int64)[order], np.asarray(values, np.float32)[order]
        if split not in self.ids:
          if np.any(ids[1:] == ids[:-1]):
            raise ValueError(f"the {name} scores of {split} repeat ids")
          self.ids[split] = ids
        elif not np.array_equal(self.ids[split], ids):
          raise ValueError(f"the {name} scores of {split} cover other examples than {self.scorers[0]}'s")
        self.columns.setdefault(split, {})[name] = values

  def split(self, split: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(ids, {scorer: scores}) of `split`."""
    if split not in self.ids:
      raise UserError(f"no difficulty scores for the split {split!r}; scored splits: {', '.join(self.ids)}")
    return self.ids[split], self.columns[split]


def check_covers(table: ScoreTable, image_builder: tfds.core.DatasetBuilder) -> None:
  """Every split of the image build is scored, example for example (counts compared)."""
  for split, info in image_builder.info.splits.items():
    scored = len(table.ids.get(split, ()))
    if scored != info.num_examples:
      raise UserError(f"the difficulty scores of {image_builder.name} {split} cover {scored} examples, the image "
                      f"shards hold {info.num_examples}; rebuild the scores with `python -m preprocess`.")


def id_lookup(ids: np.ndarray, columns: Mapping[str, np.ndarray]) -> Callable[[tf.Tensor], dict[str, tf.Tensor]]:
  """A tf function from a tensor of example ids (any shape) to {column: values of those examples}.

  Binary search over the sorted ids, held as graph constants. An id that is not
  there fails the input pipeline: the shards were joined with scores of another build.
  """
  order = np.argsort(ids, kind="stable")
  sorted_ids = tf.constant(np.asarray(ids, np.int64)[order])
  constants = {name: tf.constant(np.asarray(v)[order]) for name, v in columns.items()}
  last = max(len(ids) - 1, 0)

  def lookup(query: tf.Tensor) -> dict[str, tf.Tensor]:
    flat = tf.reshape(tf.cast(query, tf.int64), [-1])
    position = tf.minimum(tf.searchsorted(sorted_ids, flat), last)
    found = tf.gather(sorted_ids, position) == flat
    check = tf.debugging.Assert(tf.reduce_all(found), ["example ids without difficulty scores:",
                                                       tf.boolean_mask(flat, ~found)], summarize=5)
    with tf.control_dependencies([check]):
      # A column may hold a vector per id (teacher features): its trailing dimensions follow the query's shape.
      return {name: tf.reshape(tf.gather(c, position), tf.concat([tf.shape(query), tf.shape(c)[1:]], 0))
              for name, c in constants.items()}

  return lookup


@dataclasses.dataclass
class RunDifficulty:
  """What a run joins into its examples by id: every offline score it reads and the curriculum's blocks.

  `blocks` ({split: int32, aligned with table.ids[split]}) and `edges` come from the
  curriculum's scorer; with the online "learned" scorer there are none (block 0).
  """

  table: ScoreTable
  curriculum: Curriculum
  blocks: dict[str, np.ndarray]
  edges: np.ndarray

  def block_sizes(self, split: str) -> list[int]:
    return np.bincount(self.blocks[split], minlength=self.curriculum.num_blocks).tolist()

  def train_lookup(self, split: str) -> Callable[[tf.Tensor], dict[str, tf.Tensor]]:
    """ids -> {"block": int32, "difficulty": float32 of the curriculum's scorer (0 for "learned")}."""
    ids, columns = self.table.split(split)
    scores = (np.zeros(len(ids), np.float32) if self.curriculum.learned
              else columns[self.curriculum.scorer])
    return id_lookup(ids, {"block": self.blocks[split].astype(np.int32), "difficulty": scores})

  def scores_lookup(self, split: str) -> Callable[[tf.Tensor], dict[str, tf.Tensor]]:
    """ids -> {scorer: float32} for every scorer the run reads (the eval dashboards)."""
    ids, columns = self.table.split(split)
    return id_lookup(ids, columns)

  def describe(self) -> str:
    """One line for the run's log: the scorer, the training edges and block sizes."""
    c = self.curriculum
    if c.learned:
      return f"curriculum: {c.num_blocks} online blocks of the difficulty head ({LEARNED}), pacing {c.pacing}"
    return (f"curriculum: {c.num_blocks} blocks of {c.scorer}, edges {[round(float(e), 3) for e in self.edges]}, "
            f"train sizes {self.block_sizes('train')}, pacing {c.pacing}")


def missing_scores(image_builder: tfds.core.DatasetBuilder, scorer: str) -> UserError:
  """The error for a score build a run needs and nobody built."""
  return UserError(
      f"the {scorer} scores of {image_builder.name} ({image_builder.builder_config.name}) are not built in "
      f"{_data_dir(image_builder)}. Build them with `python -m preprocess --config=<your config and "
      "overrides>`, or train with --config.data.auto_prepare=True (the default) to build them first.")


def load_run_difficulty(config, image_builder: tfds.core.DatasetBuilder, curriculum: Curriculum) -> RunDifficulty:
  """Reads the score builds of `run_scorers(config)` and computes the curriculum's blocks.

  Raises UserError when a score build is missing: `python -m preprocess` (or a
  training run with config.data.auto_prepare) builds it.
  """
  names = run_scorers(config, image_builder)
  settings = ScoringSettings.from_config(config.get("scoring")).resolved(names)
  scores = {}
  for name in names:
    builder = score_builder(image_builder, name, settings)
    if not builder.is_prepared():
      raise missing_scores(image_builder, name)
    scores[name] = read_scores(builder)
  table = ScoreTable(scores)
  check_covers(table, image_builder)
  if curriculum.learned:
    blocks = {split: np.zeros(len(ids), np.int32) for split, ids in table.ids.items()}
    edges = np.zeros([0], np.float32)
  else:
    blocks, edges = curriculum.blocks({split: columns[curriculum.scorer] for split, columns in table.columns.items()},
                                      table.ids)
  return RunDifficulty(table=table, curriculum=curriculum, blocks=blocks, edges=edges)
