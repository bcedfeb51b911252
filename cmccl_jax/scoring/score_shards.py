"""Scores a dataset's image shards into id-keyed difficulty builds: the one place offline scorers run.

`prepare_scores` is what `python -m preprocess` and a training run's first use
call: every scorer the run reads (`difficulty.run_scorers`) whose build is missing
is computed in one pass per split over the image shards (images decoded only if a
scorer looks at them) and written as its own build (`difficulty.DifficultyScores`).
`combined` reuses its members' builds where they exist.

Scores are computed on process 0 while the others wait (`build_on_first_process`);
teachers then run on that process's devices only.
"""

import os
from typing import Iterator, Sequence

import numpy as np
import tensorflow_datasets as tfds

from cmccl_jax.data import datasets, difficulty, teacher_features
from cmccl_jax.data.difficulty import ScoringSettings
from cmccl_jax.scoring import scorers as scorers_lib
from cmccl_jax.scoring import teachers
from cmccl_jax.tasks.dual_encoder.trained import load_dual_encoder

SplitScores = dict[str, tuple[np.ndarray, np.ndarray]]


def examples(image_builder: tfds.core.DatasetBuilder, split: str, *, images: bool) -> Iterator[dict]:
  """The split's examples as scorers read them: numpy fields, captions as str, the image only if `images`."""
  decoders = None if images else {"image": tfds.decode.SkipDecoding()}
  ds = image_builder.as_dataset(split=split, shuffle_files=False, decoders=decoders)
  for example in tfds.as_numpy(ds):
    example = dict(example)
    example["captions"] = [c.decode("utf-8") for c in example["captions"]]
    if not images:
      del example["image"]
    yield example


def compute_scores(image_builder: tfds.core.DatasetBuilder, names: Sequence[str], settings: ScoringSettings,
                   known: dict[str, SplitScores] | None = None) -> dict[str, SplitScores]:
  """{scorer: {split: (ids, scores)}} of `names` over every split of the image build, sorted by id.

  `known`: scores already built ({scorer: {split: (ids, scores)}}, sorted by id), which
  `combined` may take its members from instead of computing them again.
  """
  known = dict(known or {})
  names = list(names)
  combine = [n for n in names if n == scorers_lib.RankAverage.name]
  per_example = [n for n in settings.inputs(names) if n not in combine and n not in known]
  splits = list(image_builder.info.splits)
  out: dict[str, SplitScores] = {name: {} for name in per_example}
  if per_example:
    scorers = scorers_lib.make_scorers(per_example, settings)
    images = any(n not in scorers_lib.TEXT_ONLY for n in per_example)
    batch_size = int(settings.batch_size)
    scorers = scorers_lib.fit_scorers(
        scorers, lambda: scorers_lib.batched(examples(image_builder, "train", images=images), batch_size))
    for split in splits:
      ids: list[int] = []

      def with_ids(stream):
        for example in stream:
          ids.append(int(example["id"]))
          yield example

      scores = scorers_lib.score_split(with_ids(examples(image_builder, split, images=images)), scorers, batch_size)
      order = np.argsort(np.asarray(ids, np.int64), kind="stable")
      for name, values in scores.items():
        out[name][split] = (np.asarray(ids, np.int64)[order], values[order])
  for name in combine:
    scorer = scorers_lib.get_scorer(name, settings)
    members = {m: out.get(m) or known[m] for m in scorer.members}
    out[name] = {}
    for split in splits:
      ids = members[scorer.members[0]][split][0]
      for m, per_split in members.items():
        if not np.array_equal(per_split[split][0], ids):
          raise ValueError(f"combined: the {m} scores of {split} cover other examples than "
                           f"{scorer.members[0]}'s")
      out[name][split] = (ids, scorer.combine({m: per_split[split][1] for m, per_split in members.items()}))
  return out


def prepare_scores(config, image_builder: tfds.core.DatasetBuilder, *, progress: bool = False) -> list[str]:
  """Builds every missing score build a run of `config` reads; returns the names of those it built.

  Missing builds with config.data.auto_prepare False raise UserError naming the command that builds them.
  """
  names = difficulty.run_scorers(config, image_builder)
  settings = ScoringSettings.from_config(config.get("scoring")).resolved(names)
  missing = [n for n in names if not difficulty.score_builder(image_builder, n, settings).is_prepared()]
  if not missing:
    return []
  if not bool(config.data.auto_prepare):
    raise difficulty.missing_scores(image_builder, missing[0])
  # `combined` takes its members' scores from their builds when they exist.
  members = [difficulty.score_builder(image_builder, m, settings) for m in settings.inputs(missing)
             if m not in missing]
  known = {b.builder_config.scorer: difficulty.read_scores(b) for b in members if b.is_prepared()}

  def build():
    computed = compute_scores(image_builder, missing, settings, known)
    for name, scores in computed.items():  # members computed only for `combined` are kept too
      difficulty.score_builder(image_builder, name, settings, scores=scores).download_and_prepare()

  datasets.build_on_first_process(
      build, lambda: None,
      f"Scoring {image_builder.name} with {', '.join(missing)} (first use of these scores) ...", progress,
      data_dir=os.path.abspath(os.path.expanduser(config.data.data_dir)))
  return missing


def teacher_encoder(teacher: str, modality: str, batch_size: int):
  """The embedding function of a resolved teacher ("bert:<folder>" or "<experiment>@<step>") for `modality`."""
  if teacher.startswith("bert:"):
    return teachers.bert_teacher(teacher[len("bert:"):], batch_size).embed_texts
  path, step = teacher.rsplit("@", 1)
  dual = teachers.dual_encoder_teacher(load_dual_encoder(path, int(step)), batch_size)
  return dual.embed_images if modality == "image" else dual.embed_texts


def compute_teacher_features(image_builder: tfds.core.DatasetBuilder, modality: str, encode,
                             batch_size: int) -> dict[str, tuple[np.ndarray, list[np.ndarray]]]:
  """{split: (ids sorted, features)} of every split: one row per image, or [captions, d] per example for text."""
  out = {}
  for split in image_builder.info.splits:
    ids, rows = [], []
    for batch in scorers_lib.batched(examples(image_builder, split, images=modality == "image"), batch_size):
      ids.extend(int(e["id"]) for e in batch)
      if modality == "image":
        rows.extend(encode([e["image"] for e in batch]))
      else:
        flat = encode([c for e in batch for c in e["captions"]])
        start = 0
        for e in batch:
          rows.append(flat[start:start + len(e["captions"])])
          start += len(e["captions"])
    order = np.argsort(np.asarray(ids, np.int64), kind="stable")
    out[split] = (np.asarray(ids, np.int64)[order], [rows[i] for i in order])
  return out


def prepare_teacher_features(config, image_builder: tfds.core.DatasetBuilder, *,
                             progress: bool = False) -> list[str]:
  """Builds the teacher features of config.curriculum.dynamic that are missing; returns their modalities."""
  dynamic = config.curriculum.get("dynamic")
  if dynamic is not None and dynamic.get("teacher_features", "precomputed") == "online":
    return []  # the step runs the teachers
  wanted = teacher_features.resolve_teachers(dynamic)
  missing = {m: t for m, t in wanted.items()
             if not teacher_features.feature_builder(image_builder, m, t).is_prepared()}
  if not missing:
    return []
  if not bool(config.data.auto_prepare):
    modality, teacher = next(iter(missing.items()))
    raise teacher_features.missing_features(image_builder, modality, teacher)
  batch_size = int(config.scoring.batch_size) if "scoring" in config else 256

  def build():
    for modality, teacher in missing.items():
      computed = compute_teacher_features(image_builder, modality, teacher_encoder(teacher, modality, batch_size),
                                          batch_size)
      width = int(next(iter(computed.values()))[1][0].shape[-1])
      teacher_features.feature_builder(image_builder, modality, teacher, features=computed,
                                       width=width).download_and_prepare()

  datasets.build_on_first_process(
      build, lambda: None,
      f"Computing the {', '.join(missing)} teacher features of {image_builder.name} (first use) ...", progress,
      data_dir=os.path.abspath(os.path.expanduser(config.data.data_dir)))
  return list(missing)


def prepare_data(config, *, progress: bool = False) -> tfds.core.DatasetBuilder:
  """The image build of config.data and every score and teacher-feature build a run of `config` reads, built
  where missing."""
  image_builder = datasets.get_builder(config.data, progress=progress)
  prepare_scores(config, image_builder, progress=progress)
  prepare_teacher_features(config, image_builder, progress=progress)
  return image_builder
