"""Retrieval evaluation of a dual encoder on a split: embed everything, rank, score.

Used periodically by the train loop and for every checkpoint by `test.sh`.
"""

import functools

import jax
import numpy as np

from cmccl_jax import parallel
from cmccl_jax.curriculum import analysis
from cmccl_jax.data import pipeline
from cmccl_jax.evaluation.retrieval import retrieval_metrics
from cmccl_jax.tasks.base import Evaluator
from cmccl_jax.tasks.dual_encoder import dashboard, step as dual_encoder_step


class RetrievalEvaluator(Evaluator):
  """Image→text and text→image retrieval; every caption of an image is a positive.

  A dataset that knows which images a caption is true of (a builder with
  `relevance(split, ids, captions)`, e.g. synthetic_shapes) adds the semantic
  metrics and the paired metrics' ceilings; one with distractor captions adds
  distractor/accuracy, the percentage of (image, caption) pairs whose caption
  scores above its one-word-off false twin (ties count as wrong).
  """

  def __init__(self, builder, split: str, tokenizer, mesh, model, param_shardings, batch_size: int,
               image_size: int, difficulty=None):
    self.mesh = mesh
    self.batch_size = batch_size
    self.tokenizer = tokenizer
    parallel.local_batch_size(batch_size, mesh, "config.eval_batch_size")  # fails before any work
    self._examples = functools.partial(pipeline.eval_examples, builder, split, tokenizer, batch_size, image_size,
                                      difficulty)
    self._relevance_of = functools.partial(builder.relevance, split) if hasattr(builder, "relevance") else None
    self._relevance = None  # computed at the first evaluation: the split does not change
    self._per_query: dict = {}
    data = parallel.data_sharding(mesh)
    out = parallel.replicated(mesh)
    self._embed_images = jax.jit(functools.partial(dual_encoder_step.embed_images, model=model),
                                 in_shardings=(param_shardings, data), out_shardings=out)
    self._embed_texts = jax.jit(functools.partial(dual_encoder_step.embed_texts, model=model),
                                in_shardings=(param_shardings, data), out_shardings=out)
    # The learnable difficulty evaluator, when the model has one: scored on host-side embeddings.
    self._predict = None
    self.last_difficulty: dict | None = None
    if getattr(model, "difficulty_hidden", 0) > 0:
      self._predict = jax.jit(lambda params, a, b: model.apply(params, a, b, method=model.predict_difficulty))

  def images(self, indices) -> np.ndarray:
    """The split's evaluation images at `indices` (positions in split order), for the dashboard."""
    wanted = {int(i): k for k, i in enumerate(indices)}
    out = [None] * len(wanted)
    for b, batch in enumerate(self._examples()):
      for j in range(batch["image"].shape[0]):
        k = wanted.get(b * self.batch_size + j)
        if k is not None:
          out[k] = batch["image"][j]
    return np.stack(out)

  def _embed(self, fn, params, rows: np.ndarray) -> np.ndarray:
    return parallel.batched_apply(fn, self.mesh, self.batch_size, [rows], args=(params,)).astype(np.float32)

  def __call__(self, state) -> dict[str, float]:
    params = state.params
    image_emb, tokens, owners, difficulty, ids, texts, distractors = [], [], [], [], [], [], []
    offset = 0
    for batch in self._examples():
      n = batch["image"].shape[0]
      image_emb.append(self._embed(self._embed_images, params, batch["image"]))
      caption_valid = batch["tokens"][..., 0] != 0
      tokens.append(batch["tokens"][caption_valid])
      owners.append(offset + np.nonzero(caption_valid)[0])
      difficulty.append(batch.get("difficulty", {}))
      ids.append(batch["id"])
      texts += [t.decode("utf-8") for t in batch["captions"][caption_valid]]
      if "distractor_tokens" in batch:
        distractors.append(batch["distractor_tokens"][caption_valid])
      offset += n
    image_emb = np.concatenate(image_emb)
    tokens, owners = np.concatenate(tokens), np.concatenate(owners)
    text_emb = self._embed(self._embed_texts, params, tokens)
    if self._predict is not None:
      self.last_difficulty = self._difficulty_report(params, image_emb, text_emb, tokens, owners, difficulty)
    if self._relevance_of is not None and self._relevance is None:
      self._relevance = self._relevance_of(np.concatenate(ids), texts)
    self._per_query = {}
    scores = retrieval_metrics(image_emb @ text_emb.T, owners, relevance=self._relevance, per_query=self._per_query)
    if distractors:
      false_emb = self._embed(self._embed_texts, params, np.concatenate(distractors))
      true_score = np.sum(image_emb[owners] * text_emb, axis=-1)
      correct = true_score > np.sum(image_emb[owners] * false_emb, axis=-1)
      scores["distractor/accuracy"] = float(100.0 * np.mean(correct))
      self._per_query["distractor/correct"] = correct
    return scores

  def per_query(self) -> dict:
    return self._per_query

  def _difficulty_report(self, params, image_emb, text_emb, tokens, owners, difficulty) -> dict:
    """The difficulty head's prediction for every image with its first caption, and its Spearman ρ with
    every offline scorer of the split (the dashboard's view of what the head ranks hard)."""
    first = np.unique(owners, return_index=True)[1]  # the first caption of each image, in image order
    predicted = np.asarray(self._predict(params, image_emb, text_emb[first]))
    offline = {name: np.concatenate([d[name] for d in difficulty]) for name in difficulty[0]}
    return {"predicted": predicted, "tokens": tokens[first],
            "spearman": {name: float(analysis.spearman(predicted, v)) for name, v in offline.items()
                         if np.ptp(v) > 0}}


  def summary(self, scores: dict[str, float]) -> str:
    line = (f"t2i R@1 {scores['t2i/R@1']:.2f} R@5 {scores['t2i/R@5']:.2f} | i2t R@1 {scores['i2t/R@1']:.2f} "
            f"R@5 {scores['i2t/R@5']:.2f} | chance t2i R@1 {scores['chance/t2i_R@1']:.2f}")
    if "semantic/t2i/R@1" in scores:
      line += (f" | semantic t2i R@1 {scores['semantic/t2i/R@1']:.2f} (perfect: 100) | paired t2i R@1 ceiling "
               f"{scores['ceiling/t2i/R@1']:.2f}")
    if "distractor/accuracy" in scores:
      line += f" | distractors {scores['distractor/accuracy']:.1f}%"
    return line

  def write_summaries(self, writer, step: int, state, *, first: bool) -> None:
    del state, first
    if self.last_difficulty is not None and jax.process_index() == 0:
      dashboard.write_difficulty_ranking(writer, step, self.last_difficulty, self.images, self.tokenizer)
