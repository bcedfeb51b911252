"""Text-to-image alignment metrics on embeddings (host-side numpy)."""

import numpy as np


def r_precision(image_emb: np.ndarray, text_emb: np.ndarray, candidates: np.ndarray) -> float:
  """Fraction of images whose own caption (column 0 of `candidates`) beats every other candidate's cosine.

  A tie counts against the model, as in retrieval: a generator that maps every caption to one
  image would otherwise score 100%.
  """
  sims = np.einsum("nd,ncd->nc", image_emb, text_emb[candidates])
  return float(np.mean(sims[:, 0] > np.max(sims[:, 1:], axis=1)))
