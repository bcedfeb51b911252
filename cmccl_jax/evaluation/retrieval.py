"""Cross-modal retrieval metrics for image–text data with several captions per image.

Every metric here is a function of where a query's positives land in its ranking,
so the code computes those ranks once (one sort per chunk of queries) and derives
recall, precision, mAP, NDCG, R-precision and rank statistics from them. Host-side
numpy only: it runs once per evaluation on gathered embeddings, not in a jitted step.
"""

import functools
import operator
from typing import Iterable, Sequence

import numpy as np

_DIRECTIONS = ("i2t", "t2i")


def retrieval_metrics(
    similarity: np.ndarray,
    caption_to_image: np.ndarray,
    ks: Sequence[int] = (1, 5, 10),
    ndcg_k: int = 10,
    chunk_size: int = 1024,
    relevance: np.ndarray | None = None,
    per_query: dict | None = None,
) -> dict[str, float]:
  """Image→text and text→image retrieval metrics, in percent as papers report them.

  Args:
    similarity: float [num_images, num_captions], e.g. cosine similarities of image
      and caption embeddings.
    caption_to_image: int [num_captions], the image each caption describes. Every
      image needs at least one caption.
    ks: cut-offs for R@k and P@k.
    ndcg_k: cut-off for NDCG.
    chunk_size: queries ranked at once. Extra memory is O(chunk_size × num_items),
      so a 5k × 25k COCO matrix never needs a second full-size copy.
    relevance: optional bool [num_images, num_captions], True where caption j is
      true of image i (a dataset that knows its scenes supplies it). It must hold
      every paired (image, caption).
    per_query: optional dict, filled with each query's `<d>/first_rank` and `<d>/ap`
      (and `semantic/<d>/...`), int and float arrays in query order: what a paired
      bootstrap over queries resamples.

  Returns:
    For each direction d — 'i2t' (each image queries all captions; its positives
    are all of its captions) and 't2i' (each caption queries all images; one
    positive):
      d/R@k           100 × fraction of queries with ANY positive in the top k.
      d/P@k           100 × mean (positives in the top k) / k.
      d/mAP           100 × mean average precision.
      d/NDCG@ndcg_k   100 × mean NDCG, binary relevance; the ideal DCG puts
                      min(num_positives, ndcg_k) positives first.
      d/R-precision   100 × mean precision at R = the query's number of positives.
      d/median_rank, d/mean_rank   1-based rank of the query's first positive.
    and, to compare with: chance/t2i_R@1 = 100 / num_images; chance/i2t_R@1 =
    100 × mean over images of (its captions / num_captions), the R@1 a random
    ranking gets in expectation; mean_cos/positive and mean_cos/negative, the mean
    similarity of matching and of non-matching pairs (NaN with a single image).
    With `relevance`, also semantic/d/<metric>: the same metrics with every true
    item as a positive; and ceiling/d/<metric>: the expected paired metric of a
    perfect model that knows what is true and nothing more, so ranks every true
    item first in random order (`paired_ceiling`; no median rank, whose
    expectation has no closed form). A model that also guesses which true item
    was paired (an image's own captions tend to be its most specific) can beat it.

  Ties are broken pessimistically: among equal scores every negative ranks ahead of
  every positive. Any other rule lets a collapsed model that scores everything the
  same reach R@1 = 100 whenever the sort happens to keep the positive first (e.g.
  captions stored in image order); with this rule ties can only score at or below
  any order of the tied items, and a constant similarity scores at most chance.
  A k larger than the number of items sees the whole ranking; P@k still divides by k.

  Raises:
    ValueError: naming the offending value, for wrong shapes or dtypes, non-finite
      similarities, caption indices outside [0, num_images), an image without
      captions, a relevance of the wrong shape or missing a pair, or ks / ndcg_k /
      chunk_size below 1.
  """
  ks = tuple(_positive_int(k, "ks entry") for k in ks)
  ndcg_k = _positive_int(ndcg_k, "ndcg_k")
  chunk_size = _positive_int(chunk_size, "chunk_size")
  similarity, caption_to_image = _validated_inputs(similarity, caption_to_image, chunk_size)
  num_images, num_captions = similarity.shape

  if relevance is not None:
    relevance = _validated_relevance(relevance, caption_to_image, similarity.shape)
  captions_per_image = np.bincount(caption_to_image, minlength=num_images)
  metrics = {}
  for direction in _DIRECTIONS:
    paired_rows = functools.partial(_paired_rows, direction, caption_to_image, num_images)
    stats = _direction_stats(direction, similarity, paired_rows, ks, ndcg_k, chunk_size)
    metrics.update(_summarise(direction, stats, ks, ndcg_k))
    _keep(per_query, direction, stats)
    if relevance is None:
      continue
    true = relevance if direction == "i2t" else relevance.T
    stats = _direction_stats(direction, similarity, lambda start, stop: true[start:stop], ks, ndcg_k, chunk_size)
    metrics.update(_summarise(f"semantic/{direction}", stats, ks, ndcg_k))
    _keep(per_query, f"semantic/{direction}", stats)
    num_paired = captions_per_image if direction == "i2t" else np.ones(num_captions, int)
    ceiling = paired_ceiling(true.sum(axis=1), num_paired, ks, ndcg_k, true.shape[1])
    metrics.update({f"ceiling/{direction}/{name}": value for name, value in ceiling.items()})

  metrics["chance/t2i_R@1"] = 100.0 / num_images
  # Written as the expectation it is; the caption counts sum to num_captions, so it
  # always equals 100 / num_images.
  metrics["chance/i2t_R@1"] = float(100.0 * np.mean(captions_per_image / num_captions))

  positive_sum = np.sum(similarity[caption_to_image, np.arange(num_captions)], dtype=np.float64)
  negative_sum = np.sum(similarity, dtype=np.float64) - positive_sum
  num_negatives = num_images * num_captions - num_captions
  metrics["mean_cos/positive"] = float(positive_sum / num_captions)
  metrics["mean_cos/negative"] = float(negative_sum / num_negatives) if num_negatives else float("nan")
  return metrics


def _keep(per_query: dict | None, prefix: str, stats: dict[str, np.ndarray]) -> None:
  if per_query is not None:
    per_query[f"{prefix}/first_rank"] = stats["first_rank"].astype(np.int32)
    per_query[f"{prefix}/ap"] = stats["ap"].astype(np.float32)


def _positive_int(value, name: str) -> int:
  try:
    value = operator.index(value)
  except TypeError:
    raise ValueError(f"{name} must be an integer, got {value!r}") from None
  if value < 1:
    raise ValueError(f"{name} must be >= 1, got {value}")
  return value


def _validated_inputs(similarity, caption_to_image, chunk_size: int) -> tuple[np.ndarray, np.ndarray]:
  similarity = np.asarray(similarity)
  caption_to_image = np.asarray(caption_to_image)
  if similarity.ndim != 2:
    raise ValueError(f"similarity must be 2-D [num_images, num_captions], got shape {similarity.shape}")
  if not np.issubdtype(similarity.dtype, np.floating):
    raise ValueError(f"similarity must have a float dtype, got {similarity.dtype}")
  num_images, num_captions = similarity.shape
  if num_images == 0 or num_captions == 0:
    raise ValueError(f"similarity is empty: shape {similarity.shape}")
  if caption_to_image.shape != (num_captions,):
    raise ValueError(f"caption_to_image must have shape ({num_captions},) to match similarity "
                     f"{similarity.shape}, got {caption_to_image.shape}")
  if not np.issubdtype(caption_to_image.dtype, np.integer):
    raise ValueError(f"caption_to_image must have an integer dtype, got {caption_to_image.dtype}")
  out_of_range = np.flatnonzero((caption_to_image < 0) | (caption_to_image >= num_images))
  if out_of_range.size:
    i = out_of_range[0]
    raise ValueError(f"caption_to_image[{i}] = {caption_to_image[i]} is outside [0, {num_images}) "
                     f"for {num_images} images")
  without_captions = np.flatnonzero(np.bincount(caption_to_image, minlength=num_images) == 0)
  if without_captions.size:
    raise ValueError(f"image {without_captions[0]} has no caption in caption_to_image; "
                     "every image needs at least one positive")
  # A chunk at a time, so that validation keeps the memory promise too.
  for start in range(0, num_images, chunk_size):
    bad = np.argwhere(~np.isfinite(similarity[start:start + chunk_size]))
    if bad.size:
      i, j = start + bad[0][0], bad[0][1]
      raise ValueError(f"similarity[{i}, {j}] = {similarity[i, j]} is not finite")
  return similarity, caption_to_image


def _validated_relevance(relevance, caption_to_image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
  relevance = np.asarray(relevance)
  if relevance.shape != shape or relevance.dtype != bool:
    raise ValueError(f"relevance must be bool of shape {shape} like similarity, got {relevance.dtype} "
                     f"{relevance.shape}")
  missing = np.flatnonzero(~relevance[caption_to_image, np.arange(shape[1])])
  if missing.size:
    j = missing[0]
    raise ValueError(f"relevance[{caption_to_image[j]}, {j}] is False, but caption {j} is paired with image "
                     f"{caption_to_image[j]}: a caption must be true of its own image (corrupted pairs belong in "
                     "training data only)")
  return relevance


def _paired_rows(direction: str, caption_to_image: np.ndarray, num_images: int, start: int, stop: int) -> np.ndarray:
  """Which items are paired with the queries start..stop of `direction`, bool [stop - start, num_items]."""
  if direction == "i2t":
    return caption_to_image[None, :] == np.arange(start, stop)[:, None]
  return caption_to_image[start:stop, None] == np.arange(num_images)[None, :]


def _direction_stats(direction: str, similarity: np.ndarray, relevant_rows, ks, ndcg_k: int,
                     chunk_size: int) -> dict[str, np.ndarray]:
  """Per-query stats of `direction` (images query captions: i2t; captions query images: t2i), a chunk of
  queries at a time; `relevant_rows(start, stop)` gives the chunk's bool [stop - start, num_items]."""
  scores = similarity if direction == "i2t" else similarity.T  # a view: each chunk is copied once, by the sort
  return _concatenate(
      _query_stats(scores[start:start + chunk_size], relevant_rows(start, min(start + chunk_size, len(scores))),
                   ks, ndcg_k)
      for start in range(0, len(scores), chunk_size))


def paired_ceiling(num_true: np.ndarray, num_paired: np.ndarray, ks: Sequence[int], ndcg_k: int,
                   num_items: int) -> dict[str, float]:
  """The paired metrics a perfect model scores in expectation, in percent (mean rank in ranks).

  Per query with T true items of which P are its paired positives, a perfect
  model ranks the T true items first, in uniformly random order. With H_T the T-th
  harmonic number:
    R@k = 1 - C(T-P, k) / C(T, k)          (1 when k >= T)
    P@k = min(k, T) P / (T k)
    AP  = ((P-1)/(T-1) (T - H_T) + H_T) / T  (1 when T = 1; Bestgen 2015)
    NDCG@k = (P/T) sum_{r<=min(k,T)} 1/log2(r+1) / sum_{r<=min(P,k)} 1/log2(r+1)
    R-precision = P / T,   first rank = (T+1) / (P+1).
  """
  t = np.asarray(num_true, np.float64)
  p = np.asarray(num_paired, np.float64)
  out = {}
  for k in ks:
    miss = np.ones_like(t)
    for i in range(k):  # C(T-P, k) / C(T, k) as a product; k is small
      miss *= np.clip((t - p - i) / np.maximum(t - i, 1.0), 0.0, None)
    out[f"R@{k}"] = float(100.0 * np.mean(1.0 - miss))
    out[f"P@{k}"] = float(100.0 * np.mean(np.minimum(k, t) * p / (t * k)))
  harmonic = np.cumsum(1.0 / np.arange(1, num_items + 1))[t.astype(int) - 1]
  ap = np.where(t > 1, ((p - 1) / np.maximum(t - 1, 1) * (t - harmonic) + harmonic) / t, 1.0)
  out["mAP"] = float(100.0 * np.mean(ap))
  cut = min(ndcg_k, num_items)
  discounts = np.cumsum(1.0 / np.log2(np.arange(2, cut + 2)))
  dcg = p / t * discounts[np.minimum(t, cut).astype(int) - 1]
  out[f"NDCG@{ndcg_k}"] = float(100.0 * np.mean(dcg / discounts[np.minimum(p, cut).astype(int) - 1]))
  out["R-precision"] = float(100.0 * np.mean(p / t))
  out["mean_rank"] = float(np.mean((t + 1) / (p + 1)))
  return out


def _positive_ranks(scores: np.ndarray, relevant: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(query, 1-based rank) of every positive, pessimistic among ties; sorted by query, then rank."""
  # lexsort's last key is primary: descending score; inside a tie, negatives (False) first.
  order = np.lexsort((relevant, -scores), axis=-1)
  query, position = np.nonzero(np.take_along_axis(relevant, order, axis=-1))
  return query, position + 1


def _query_stats(scores: np.ndarray, relevant: np.ndarray, ks: tuple[int, ...],
                 ndcg_k: int) -> dict[str, np.ndarray]:
  """Per-query first rank, AP, R-precision, NDCG and hits@k for one chunk, each of length c.

  With the positives' ranks r_1 < … < r_n: AP = mean_j j / r_j, R-precision =
  #{r_j ≤ n} / n, DCG@k = Σ_{r_j ≤ k} 1 / log2(r_j + 1), hits@k = #{r_j ≤ k}.
  """
  num_queries, num_items = scores.shape
  num_positives = relevant.sum(axis=1)
  query, rank = _positive_ranks(scores, relevant)
  first = np.cumsum(num_positives) - num_positives  # index of each query's best positive
  ordinal = np.arange(query.size) - first[query] + 1  # j in r_j

  def per_query_sum(weights):
    return np.bincount(query, weights=weights, minlength=num_queries)

  ndcg_cut = min(ndcg_k, num_items)
  ideal_dcg = np.cumsum(1.0 / np.log2(np.arange(2, ndcg_cut + 2)))
  dcg = per_query_sum(np.where(rank <= ndcg_cut, 1.0 / np.log2(rank + 1.0), 0.0))
  stats = {
      "first_rank": rank[first],
      "ap": per_query_sum(ordinal / rank) / num_positives,
      "r_precision": per_query_sum(rank <= num_positives[query]) / num_positives,
      "ndcg": dcg / ideal_dcg[np.minimum(num_positives, ndcg_cut) - 1],
  }
  for k in ks:
    stats[f"hits@{k}"] = per_query_sum(rank <= k)
  return stats


def _concatenate(chunks: Iterable[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
  chunks = list(chunks)
  return {key: np.concatenate([chunk[key] for chunk in chunks]) for key in chunks[0]}


def _summarise(direction: str, stats: dict[str, np.ndarray], ks: tuple[int, ...],
               ndcg_k: int) -> dict[str, float]:
  out = {}
  for k in ks:
    out[f"{direction}/R@{k}"] = float(100.0 * np.mean(stats[f"hits@{k}"] > 0))
    out[f"{direction}/P@{k}"] = float(100.0 * np.mean(stats[f"hits@{k}"] / k))
  out[f"{direction}/mAP"] = float(100.0 * np.mean(stats["ap"]))
  out[f"{direction}/NDCG@{ndcg_k}"] = float(100.0 * np.mean(stats["ndcg"]))
  out[f"{direction}/R-precision"] = float(100.0 * np.mean(stats["r_precision"]))
  out[f"{direction}/median_rank"] = float(np.median(stats["first_rank"]))
  out[f"{direction}/mean_rank"] = float(np.mean(stats["first_rank"]))
  return out
