"""Retrieval evaluation of a dual encoder on a split: embed everything, rank, score.

Used periodically by the train loop and for every checkpoint by `test.sh`.
"""

import functools

import jax
import numpy as np

from cmccl_jax import parallel
from cmccl_jax.data import pipeline
from cmccl_jax.evaluation.retrieval import retrieval_metrics
from cmccl_jax.train import dual_encoder_step


class RetrievalEvaluator:
  """Image→text and text→image retrieval; every caption of an image is a positive."""

  def __init__(self, builder, split: str, tokenizer, mesh, model, param_shardings, batch_size: int,
               image_size: int):
    self.mesh = mesh
    self.batch_size = batch_size
    parallel.local_batch_size(batch_size, mesh)  # validates divisibility
    self._examples = functools.partial(pipeline.eval_examples, builder, split, tokenizer, batch_size, image_size)
    data = parallel.data_sharding(mesh)
    out = parallel.replicated(mesh)
    self._embed_images = jax.jit(functools.partial(dual_encoder_step.embed_images, model=model),
                                 in_shardings=(param_shardings, data), out_shardings=out)
    self._embed_texts = jax.jit(functools.partial(dual_encoder_step.embed_texts, model=model),
                                in_shardings=(param_shardings, data), out_shardings=out)

  def _embed(self, fn, params, rows: np.ndarray) -> np.ndarray:
    """Embeds `rows` in fixed-size global batches; this process feeds its share of each."""
    n_proc, p = jax.process_count(), jax.process_index()
    local = self.batch_size // n_proc
    chunks = []
    for start in range(0, rows.shape[0], self.batch_size):
      batch = pipeline.pad_rows(rows[start:start + self.batch_size], self.batch_size)
      emb = fn(params, parallel.global_batch(self.mesh, batch[p * local:(p + 1) * local]))
      chunks.append(np.asarray(emb, np.float32)[: min(self.batch_size, rows.shape[0] - start)])
    return np.concatenate(chunks, axis=0)

  def __call__(self, params) -> dict[str, float]:
    image_emb, tokens, owners = [], [], []
    offset = 0
    for batch in self._examples():
      n = batch["image"].shape[0]
      image_emb.append(self._embed(self._embed_images, params, batch["image"]))
      caption_valid = batch["tokens"][..., 0] != 0
      tokens.append(batch["tokens"][caption_valid])
      owners.append(offset + np.nonzero(caption_valid)[0])
      offset += n
    image_emb = np.concatenate(image_emb)
    text_emb = self._embed(self._embed_texts, params, np.concatenate(tokens))
    similarity = image_emb @ text_emb.T
    return retrieval_metrics(similarity, np.concatenate(owners))
