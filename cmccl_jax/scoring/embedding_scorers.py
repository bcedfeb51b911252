"""Difficulty scorers over teacher embeddings: kNN density, misalignment, relational distillation.

All three read a frozen teacher (`teachers.Teacher`: unit-norm embedding
functions), so their maths is tested here with hand-made embeddings.

- kNN density (`knn_text`, `knn_image`): how crowded an example's neighbourhood
  is among the training examples. An example with many close neighbours has many
  confusable negatives in a contrastive batch, so it is harder.
- Misalignment (`misalignment`): how far the teacher puts an image from its own
  captions; a poorly matching pair is hard (or noisy).
- Distillation (`distillation`): I2MCL's difficulty measurer, the distillation
  loss between a teacher and a student, made dimension-free by comparing the two
  models' caption-to-image similarity distributions over a fixed reference set.
"""

from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from cmccl_jax.errors import UserError
from cmccl_jax.scoring.teachers import Teacher

# A raw example as the builders read it: image, captions, id, ...
Example = Mapping[str, Any]

# Training rows per matrix product in the kNN search: 256 queries x 4096 keys of float32 is 4 MiB.
KNN_BLOCK_ROWS = 4096


def _normalized(x: np.ndarray) -> np.ndarray:
  x = np.asarray(x, np.float32)
  return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _ids(examples: Sequence[Example]) -> np.ndarray:
  return np.asarray([int(ex["id"]) for ex in examples], np.int64)


def caption_embeddings(examples: Sequence[Example], embed_texts) -> tuple[np.ndarray, np.ndarray]:
  """(unit embeddings of every caption [C, d], index of its example [C]), captions in example order."""
  captions, owners = [], []
  for i, ex in enumerate(examples):
    if not len(ex["captions"]):
      raise ValueError(f"example {ex.get('id', i)!r} has no caption to embed")
    captions.extend(ex["captions"])
    owners.extend([i] * len(ex["captions"]))
  return _normalized(embed_texts(captions)), np.asarray(owners, np.int64)


def text_embeddings(examples: Sequence[Example], embed_texts) -> np.ndarray:
  """An image's text embedding: e_i = normalise((1/C_i) sum_j t_ij), t_ij its unit caption embeddings."""
  emb, owners = caption_embeddings(examples, embed_texts)
  sums = np.zeros((len(examples), emb.shape[1]), np.float64)
  np.add.at(sums, owners, emb)
  return _normalized(sums)


def image_embeddings(examples: Sequence[Example], embed_images) -> np.ndarray:
  return _normalized(embed_images([ex["image"] for ex in examples]))


# ----------------------------------------------------------------------------- kNN density

def knn_density(queries: np.ndarray, query_ids: np.ndarray, keys: np.ndarray, key_ids: np.ndarray, k: int,
                block_rows: int = KNN_BLOCK_ROWS) -> np.ndarray:
  """density_i = (1/k) sum over the k keys j most similar to query i, id_j != id_i, of cos(q_i, key_j).

  The keys are visited in blocks of block_rows rows with a running top-k per
  query, so memory stays O(queries x (block_rows + k)) and no queries x keys
  matrix is ever formed. A key with the query's own id is the query itself (or
  its copy in the training split) and never counts as its neighbour.
  """
  if k < 1:
    raise ValueError(f"k must be >= 1 (config.scoring.knn_k), got {k}")
  if block_rows < 1:
    raise ValueError(f"block_rows must be >= 1, got {block_rows}")
  q, keys = _normalized(queries), _normalized(keys)
  query_ids, key_ids = np.asarray(query_ids), np.asarray(key_ids)
  best = np.full((q.shape[0], k), -np.inf, np.float32)
  for start in range(0, keys.shape[0], block_rows):
    sims = q @ keys[start:start + block_rows].T
    sims[query_ids[:, None] == key_ids[None, start:start + block_rows]] = -np.inf
    both = np.concatenate([best, sims], axis=1)
    best = np.take_along_axis(both, np.argpartition(both, -k, axis=1)[:, -k:], axis=1)
  if np.any(np.isneginf(best)):
    raise UserError(f"kNN density needs k={k} neighbours per example but only {keys.shape[0]} training "
                     "examples (minus the example itself) exist; lower config.scoring.knn_k.")
  return np.mean(best, axis=1, dtype=np.float64).astype(np.float32)


class KnnDensity:
  """A FitScorer: kNN density of an example's embedding among the training split's.

  `embed` maps examples to one embedding each (`text_embeddings` or
  `image_embeddings` of a teacher). fit embeds the training split once.
  """

  def __init__(self, name: str, embed: Callable[[Sequence[Example]], np.ndarray], k: int,
               block_rows: int = KNN_BLOCK_ROWS):
    if k < 1:
      raise UserError(f"config.scoring.knn_k must be >= 1, got {k}")
    self.name = name
    self.embed = embed
    self.k = k
    self.block_rows = block_rows

  def fit(self, train_batches: Iterable[Sequence[Example]]) -> "FittedKnnDensity":
    embeddings, ids = [], []
    for batch in train_batches:
      embeddings.append(_normalized(self.embed(batch)))
      ids.append(_ids(batch))
    if not embeddings:
      raise UserError(f"{self.name} needs training examples to find neighbours among; the training split is empty")
    return FittedKnnDensity(self, np.concatenate(embeddings), np.concatenate(ids))

  def score(self, examples: Sequence[Example]) -> np.ndarray:
    raise RuntimeError(f"{self.name} must be fitted on the training split first (scorers.fit_scorers)")


class FittedKnnDensity:
  """kNN density against the training embeddings; a training example reuses its stored embedding."""

  def __init__(self, spec: KnnDensity, train_embeddings: np.ndarray, train_ids: np.ndarray):
    if len(np.unique(train_ids)) != len(train_ids):
      raise UserError(f"{spec.name}: the training split repeats example ids; the kNN search excludes an "
                       "example's own id, so ids must be unique")
    self.name = spec.name
    self._spec = spec
    self._keys = train_embeddings
    self._key_ids = train_ids
    self._row = {int(i): r for r, i in enumerate(train_ids)}

  def score(self, examples: Sequence[Example]) -> np.ndarray:
    ids = _ids(examples)
    rows = np.asarray([self._row.get(int(i), -1) for i in ids])
    queries = np.empty((len(examples), self._keys.shape[1]), np.float32)
    queries[rows >= 0] = self._keys[rows[rows >= 0]]
    new = np.flatnonzero(rows < 0)
    if new.size:
      queries[new] = _normalized(self._spec.embed([examples[i] for i in new]))
    return knn_density(queries, ids, self._keys, self._key_ids, self._spec.k, self._spec.block_rows)


def knn_text_scorer(teacher: Teacher, k: int) -> KnnDensity:
  """`knn_text`: kNN density of the image's text embedding (mean of its unit caption embeddings)."""
  return KnnDensity("knn_text", lambda examples: text_embeddings(examples, teacher.embed_texts), k)


def knn_image_scorer(teacher: Teacher, k: int) -> KnnDensity:
  """`knn_image`: kNN density of the teacher's image embedding."""
  if teacher.embed_images is None:
    raise UserError(f"knn_image needs a teacher with an image tower; {teacher.name} has none")
  return KnnDensity("knn_image", lambda examples: image_embeddings(examples, teacher.embed_images), k)


# ----------------------------------------------------------------------------- misalignment

class Misalignment:
  """`misalignment`: m_i = 1 - (1/C_i) sum_j cos(v_i, t_ij), v_i the teacher's image embedding, t_ij its captions'.

  In [0, 2]; 0 when the teacher puts every caption exactly on its image.
  """

  name = "misalignment"

  def __init__(self, teacher: Teacher):
    if teacher.embed_images is None or teacher.embed_texts is None:
      raise UserError(f"misalignment needs a dual-encoder teacher (both towers); {teacher.name} is not one")
    self.teacher = teacher

  def score(self, examples: Sequence[Example]) -> np.ndarray:
    images = image_embeddings(examples, self.teacher.embed_images)
    texts, owners = caption_embeddings(examples, self.teacher.embed_texts)
    cos = np.sum(images[owners] * texts, axis=1, dtype=np.float64)
    mean_cos = np.bincount(owners, cos, len(examples)) / np.bincount(owners, minlength=len(examples))
    return (1.0 - mean_cos).astype(np.float32)


# ----------------------------------------------------------------------------- distillation

def relational_kl(teacher_logits: np.ndarray, student_logits: np.ndarray, valid: np.ndarray) -> np.ndarray:
  """KL(p_T || p_S) per row, p = softmax over the row's valid entries: sum_r p_T(r) (log p_T(r) - log p_S(r)).

  Invalid entries have probability 0 under both models and contribute nothing.
  """
  valid = np.asarray(valid, bool)
  if not np.all(valid.any(axis=1)):
    raise ValueError("every row needs at least one valid entry to form a distribution over")

  def log_softmax(logits):
    x = np.where(valid, np.asarray(logits, np.float64), -np.inf)
    x = x - np.max(x, axis=1, keepdims=True)
    return x - np.log(np.sum(np.exp(x), axis=1, keepdims=True))

  log_t, log_s = log_softmax(teacher_logits), log_softmax(student_logits)
  log_t, log_s = np.where(valid, log_t, 0.0), np.where(valid, log_s, 0.0)
  p_t = np.where(valid, np.exp(log_t), 0.0)
  return np.maximum(np.sum(p_t * (log_t - log_s), axis=1), 0.0)


class Distillation:
  """`distillation`: I2MCL's difficulty measurer as a relational distillation loss.

  I2MCL measures difficulty by the loss of distilling a teacher into the student
  (squared L2 between their features). Towers of different widths have no common
  feature space, so this compares what the two models *say* instead: for a
  caption c of example i, each model M in {teacher T, student S} spreads c over
  the candidate images R_i = {x_i} ∪ (R \\ {x_i}) (its own image plus a fixed
  reference set R of training images, R sampled once from the training split):

    p_M(r | c) = softmax_{r in R_i}(s_M cos_M(c, r)),  s_M the model's learned logit scale,
    d_i = (1/C_i) sum_j KL(p_T(. | c_ij) || p_S(. | c_ij)).

  d_i = 0 when the student already ranks and weights the candidate images as the
  teacher does; it grows where the student still has to learn from the teacher.
  A reference with the example's own id is its image already counted as x_i.
  """

  name = "distillation"

  def __init__(self, teacher: Teacher, student: Teacher, num_references: int, seed: int = 0):
    for role, model in (("teacher", teacher), ("student", student)):
      if model.embed_images is None or model.embed_texts is None or model.logit_scale is None:
        raise UserError(f"distillation needs a dual-encoder {role} (both towers and a logit scale); "
                         f"{model.name} is not one")
    if num_references < 1:
      raise UserError(f"config.scoring.distill_references must be >= 1, got {num_references}")
    self.teacher, self.student = teacher, student
    self.num_references = num_references
    self.seed = seed

  def fit(self, train_batches: Iterable[Sequence[Example]]) -> "FittedDistillation":
    """Draws R uniformly from the training split (reservoir sampling, seeded) and embeds it with both models.

    Holds the |R| sampled images in memory until they are embedded.
    """
    rng = np.random.default_rng(self.seed)
    reservoir: list[Example] = []
    seen = 0
    for batch in train_batches:
      for ex in batch:
        kept = {"id": ex["id"], "image": ex["image"]}
        if len(reservoir) < self.num_references:
          reservoir.append(kept)
        else:
          slot = int(rng.integers(0, seen + 1))
          if slot < self.num_references:
            reservoir[slot] = kept
        seen += 1
    if not reservoir:
      raise UserError("distillation needs reference images from the training split, which is empty")
    return FittedDistillation(self, reservoir)

  def score(self, examples: Sequence[Example]) -> np.ndarray:
    raise RuntimeError("distillation must be fitted on the training split first (scorers.fit_scorers)")


class FittedDistillation:
  """Distillation against the reference images drawn by `Distillation.fit`, embedded once per model."""

  def __init__(self, spec: Distillation, references: Sequence[Example]):
    self.name = spec.name
    self._spec = spec
    self._reference_ids = _ids(references)
    self._teacher_references = image_embeddings(references, spec.teacher.embed_images)
    self._student_references = image_embeddings(references, spec.student.embed_images)

  @staticmethod
  def _logits(model: Teacher, references: np.ndarray, examples: Sequence[Example]):
    """s_M cos_M of every caption [C] with (its own image, each reference) -> [C, 1 + |R|], and its owner [C]."""
    texts, owners = caption_embeddings(examples, model.embed_texts)
    own = image_embeddings(examples, model.embed_images)[owners]
    cos = np.concatenate([np.sum(texts * own, axis=1, keepdims=True), texts @ references.T], axis=1)
    return model.logit_scale * cos, owners

  def score(self, examples: Sequence[Example]) -> np.ndarray:
    teacher_logits, owners = self._logits(self._spec.teacher, self._teacher_references, examples)
    student_logits, _ = self._logits(self._spec.student, self._student_references, examples)
    ids = _ids(examples)[owners]
    valid = np.concatenate([np.ones((len(owners), 1), bool), ids[:, None] != self._reference_ids[None, :]], 1)
    kl = relational_kl(teacher_logits, student_logits, valid)
    return (np.bincount(owners, kl, len(examples)) / np.bincount(owners, minlength=len(examples))).astype(np.float32)
