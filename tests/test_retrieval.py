import itertools
import math
import statistics

import numpy as np
import pytest

from cmccl_jax.evaluation.retrieval import paired_ceiling, retrieval_metrics

log2 = math.log2


def ranked_metrics(ranked, ks, ndcg_k):
  """Every per-query metric of one ranking, given as its items' relevance in rank order."""
  num_pos = sum(ranked)
  hits, precisions = 0, []
  for position, rel in enumerate(ranked, start=1):
    if rel:
      hits += 1
      precisions.append(hits / position)
  dcg = sum(1 / log2(i + 2) for i in range(min(ndcg_k, len(ranked))) if ranked[i])
  ideal = sum(1 / log2(i + 2) for i in range(min(num_pos, ndcg_k)))
  row = {
      "first": ranked.index(True) + 1,
      "ap": sum(precisions) / num_pos,
      "ndcg": dcg / ideal,
      "rprec": sum(ranked[:num_pos]) / num_pos,
  }
  for k in ks:
    row[f"hit{k}"] = any(ranked[:k])
    row[f"prec{k}"] = sum(ranked[:k]) / k
  return row


def reference_metrics(similarity, caption_to_image, ks, ndcg_k, relevance=None):
  """Brute force, one query at a time: Python sort, then every metric by loops.

  The positives are the paired items, or with `relevance` the True entries of it
  (then only the per-direction metrics are returned)."""
  similarity = np.asarray(similarity, dtype=np.float64).tolist()
  caption_to_image = list(caption_to_image)
  num_images, num_captions = len(similarity), len(caption_to_image)
  if relevance is None:
    positive = lambda i, j: caption_to_image[j] == i
  else:
    positive = lambda i, j: bool(relevance[i][j])
  queries = {
      "i2t": [([similarity[i][j] for j in range(num_captions)], [positive(i, j) for j in range(num_captions)])
              for i in range(num_images)],
      "t2i": [([similarity[i][j] for i in range(num_images)], [positive(i, j) for i in range(num_images)])
              for j in range(num_captions)],
  }
  out = {}
  for direction, direction_queries in queries.items():
    rows = []
    for scores, relevant in direction_queries:
      # Higher score first; among equal scores False (negative) sorts before True.
      ranked = [rel for _, rel in sorted(zip(scores, relevant), key=lambda pair: (-pair[0], pair[1]))]
      rows.append(ranked_metrics(ranked, ks, ndcg_k))

    def mean(key):
      return sum(r[key] for r in rows) / len(rows)

    for k in ks:
      out[f"{direction}/R@{k}"] = 100 * mean(f"hit{k}")
      out[f"{direction}/P@{k}"] = 100 * mean(f"prec{k}")
    out[f"{direction}/mAP"] = 100 * mean("ap")
    out[f"{direction}/NDCG@{ndcg_k}"] = 100 * mean("ndcg")
    out[f"{direction}/R-precision"] = 100 * mean("rprec")
    out[f"{direction}/median_rank"] = statistics.median(r["first"] for r in rows)
    out[f"{direction}/mean_rank"] = mean("first")

  if relevance is not None:
    return out
  out["chance/t2i_R@1"] = 100 / num_images
  out["chance/i2t_R@1"] = 100 * sum(caption_to_image.count(i) / num_captions for i in range(num_images)) / num_images
  positives, negatives = [], []
  for i in range(num_images):
    for j in range(num_captions):
      (positives if caption_to_image[j] == i else negatives).append(similarity[i][j])
  out["mean_cos/positive"] = sum(positives) / len(positives)
  out["mean_cos/negative"] = sum(negatives) / len(negatives)
  return out


def random_problem(seed, num_images=7, max_captions=5, tie_levels=None):
  """Unequal caption counts in shuffled order; with tie_levels, scores rounded so many tie."""
  rng = np.random.default_rng(seed)
  counts = rng.integers(1, max_captions + 1, size=num_images)
  caption_to_image = rng.permutation(np.repeat(np.arange(num_images), counts))
  similarity = rng.uniform(-1, 1, size=(num_images, caption_to_image.size))
  if tie_levels is not None:
    similarity = np.round(similarity * tie_levels) / tie_levels
  return similarity, caption_to_image


# 3 images × 6 captions: captions 0-2 show image 0, 3-4 image 1, 5 image 2. No ties.
HAND_CAPTION_TO_IMAGE = np.array([0, 0, 0, 1, 1, 2])
HAND_SIMILARITY = np.array([
    [0.9, 0.1, 0.5, 0.8, 0.2, 0.3],
    [0.4, 0.6, 0.7, 0.3, 0.5, 0.0],
    [0.2, 0.3, 0.1, 0.4, 0.6, 0.7],
])


def test_hand_worked_image_to_text():
  m = retrieval_metrics(HAND_SIMILARITY, HAND_CAPTION_TO_IMAGE)
  # Image 0 ranks c0 c3 c2 c5 c4 c1 -> relevance 1 0 1 0 0 1 (3 positives).
  # Image 1 ranks c2 c1 c4 c0 c3 c5 -> relevance 0 0 1 0 1 0 (2 positives).
  # Image 2 ranks c5 c4 c3 c1 c0 c2 -> relevance 1 0 0 0 0 0 (1 positive).
  # First-positive ranks 1, 3, 1.
  assert m["i2t/R@1"] == pytest.approx(100 * 2 / 3)
  assert m["i2t/R@5"] == pytest.approx(100)
  assert m["i2t/R@10"] == pytest.approx(100)
  assert m["i2t/median_rank"] == 1
  assert m["i2t/mean_rank"] == pytest.approx(5 / 3)
  # P@1 = (1 + 0 + 1) / 3; P@5 = (2/5 + 2/5 + 1/5) / 3; P@10 = (3 + 2 + 1) / 10 / 3.
  assert m["i2t/P@1"] == pytest.approx(100 * 2 / 3)
  assert m["i2t/P@5"] == pytest.approx(100 / 3)
  assert m["i2t/P@10"] == pytest.approx(20)
  # AP per image: (1/1 + 2/3 + 3/6) / 3, (1/3 + 2/5) / 2, 1/1.
  ap = [(1 + 2 / 3 + 3 / 6) / 3, (1 / 3 + 2 / 5) / 2, 1.0]
  assert m["i2t/mAP"] == pytest.approx(100 * sum(ap) / 3)
  # R-precision: the top 3 of image 0 hold 2 positives, the top 2 of image 1 none.
  assert m["i2t/R-precision"] == pytest.approx(100 * (2 / 3 + 0 + 1) / 3)
  # NDCG: positives at ranks (1, 3, 6), (3, 5), (1); ideal puts 3, 2, 1 of them first.
  ndcg = [
      (1 + 1 / log2(4) + 1 / log2(7)) / (1 + 1 / log2(3) + 1 / log2(4)),
      (1 / log2(4) + 1 / log2(6)) / (1 + 1 / log2(3)),
      1.0,
  ]
  assert m["i2t/NDCG@10"] == pytest.approx(100 * sum(ndcg) / 3)


def test_hand_worked_text_to_image():
  m = retrieval_metrics(HAND_SIMILARITY, HAND_CAPTION_TO_IMAGE)
  # Columns: c0 [.9 .4 .2] -> rank 1;  c1 [.1 .6 .3] -> rank 3;  c2 [.5 .7 .1] -> rank 2;
  #          c3 [.8 .3 .4] -> rank 3;  c4 [.2 .5 .6] -> rank 2;  c5 [.3 .0 .7] -> rank 1.
  ranks = [1, 3, 2, 3, 2, 1]
  assert m["t2i/R@1"] == pytest.approx(100 * 2 / 6)
  assert m["t2i/R@5"] == pytest.approx(100)  # only 3 images to rank
  assert m["t2i/P@1"] == pytest.approx(100 * 2 / 6)
  assert m["t2i/P@5"] == pytest.approx(100 / 5)  # one positive in the top 5, divided by 5
  assert m["t2i/P@10"] == pytest.approx(100 / 10)
  assert m["t2i/median_rank"] == 2
  assert m["t2i/mean_rank"] == pytest.approx(2)
  # One positive: AP = 1 / rank, R-precision = R@1, NDCG = 1 / log2(rank + 1).
  assert m["t2i/mAP"] == pytest.approx(100 * sum(1 / r for r in ranks) / 6)
  assert m["t2i/R-precision"] == pytest.approx(100 * 2 / 6)
  assert m["t2i/NDCG@10"] == pytest.approx(100 * sum(1 / log2(r + 1) for r in ranks) / 6)


def test_hand_worked_chance_and_mean_cosine():
  m = retrieval_metrics(HAND_SIMILARITY, HAND_CAPTION_TO_IMAGE)
  assert m["chance/t2i_R@1"] == pytest.approx(100 / 3)
  assert m["chance/i2t_R@1"] == pytest.approx(100 * (3 + 2 + 1) / 6 / 3)
  # Positives .9 .1 .5 | .3 .5 | .7 sum to 3.0; all 18 entries sum to 7.6.
  assert m["mean_cos/positive"] == pytest.approx(3.0 / 6)
  assert m["mean_cos/negative"] == pytest.approx(4.6 / 12)


def test_returns_exactly_the_documented_keys():
  m = retrieval_metrics(HAND_SIMILARITY, HAND_CAPTION_TO_IMAGE, ks=(1, 2), ndcg_k=3)
  per_direction = ["R@1", "R@2", "P@1", "P@2", "mAP", "NDCG@3", "R-precision", "median_rank", "mean_rank"]
  expected = {f"{d}/{name}" for d in ("i2t", "t2i") for name in per_direction}
  expected |= {"chance/t2i_R@1", "chance/i2t_R@1", "mean_cos/positive", "mean_cos/negative"}
  assert set(m) == expected
  assert all(type(v) is float for v in m.values())


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("tie_levels", [None, 3])
def test_matches_brute_force_reference(seed, tie_levels):
  similarity, caption_to_image = random_problem(seed, tie_levels=tie_levels)
  ks, ndcg_k = (1, 3, 5, 10), 4 + seed
  got = retrieval_metrics(similarity, caption_to_image, ks=ks, ndcg_k=ndcg_k, chunk_size=3)
  want = reference_metrics(similarity, caption_to_image, ks, ndcg_k)
  assert set(got) == set(want)
  for key in want:
    assert got[key] == pytest.approx(want[key], rel=1e-9, abs=1e-9), key


def test_perfect_similarity_scores_maximum():
  _, caption_to_image = random_problem(0)
  num_images = caption_to_image.max() + 1
  similarity = (np.arange(num_images)[:, None] == caption_to_image[None, :]).astype(np.float32)
  m = retrieval_metrics(similarity, caption_to_image)
  for d in ("i2t", "t2i"):
    for key in ("R@1", "R@5", "mAP", "NDCG@10", "R-precision"):
      assert m[f"{d}/{key}"] == pytest.approx(100), (d, key)
    assert m[f"{d}/median_rank"] == 1
    assert m[f"{d}/mean_rank"] == 1
  assert m["t2i/P@1"] == pytest.approx(100)
  assert m["mean_cos/positive"] == 1 and m["mean_cos/negative"] == 0


def test_constant_similarity_ranks_every_negative_first():
  # Captions stored in image order: a stable sort would rank image 0's captions first
  # and give image 0, and every caption of image 0, a hit at rank 1.
  caption_to_image = np.array([0, 0, 1, 2, 2, 2])
  m = retrieval_metrics(np.full((3, 6), 0.5), caption_to_image)
  # i2t: an image with n of the 6 captions first hits at 6 - n + 1: ranks 5, 6, 4.
  assert m["i2t/median_rank"] == 5
  assert m["i2t/mean_rank"] == pytest.approx(5)
  # t2i: the one positive image comes after both negatives.
  assert m["t2i/median_rank"] == 3 and m["t2i/mean_rank"] == 3
  for d in ("i2t", "t2i"):
    assert m[f"{d}/R@1"] == 0
    assert m[f"{d}/R@1"] <= m[f"chance/{d}_R@1"]
  # i2t relevance: image 0 -> 0 0 0 0 1 1, image 1 -> 0 0 0 0 0 1, image 2 -> 0 0 0 1 1 1.
  ap = [(1 / 5 + 2 / 6) / 2, 1 / 6, (1 / 4 + 2 / 5 + 3 / 6) / 3]
  assert m["i2t/mAP"] == pytest.approx(100 * sum(ap) / 3)


def test_positive_tied_with_a_negative_is_not_a_hit():
  # Image 0's caption c0 ties with c1 at the top; pessimism ranks c1 first.
  similarity = np.array([[0.8, 0.8, 0.1],
                         [0.0, 0.9, 0.2]])
  m = retrieval_metrics(similarity, np.array([0, 1, 1]), ks=(1, 2))
  assert m["i2t/R@1"] == pytest.approx(50)  # image 1 hits, image 0 does not
  assert m["i2t/R@2"] == pytest.approx(100)
  # t2i: c0 [.8 .0], c1 [.8 .9], c2 [.1 .2] all rank their image first.
  assert m["t2i/R@1"] == pytest.approx(100)


@pytest.mark.parametrize("seed", range(3))
def test_ties_never_beat_any_tie_order(seed):
  similarity, caption_to_image = random_problem(seed, tie_levels=2)
  tied = retrieval_metrics(similarity, caption_to_image)
  rng = np.random.default_rng(100 + seed)
  for _ in range(5):
    # Jitter well below the 0.5 gap between levels only reorders tied items.
    broken = retrieval_metrics(similarity + rng.uniform(-0.1, 0.1, size=similarity.shape), caption_to_image)
    for key, value in tied.items():
      if key.startswith(("chance/", "mean_cos/")):
        continue
      if key.endswith("_rank"):
        assert value >= broken[key], key
      else:
        assert value <= broken[key] + 1e-9, key


def test_chunk_size_does_not_change_results():
  similarity, caption_to_image = random_problem(7, num_images=13, tie_levels=4)
  similarity = similarity.astype(np.float32)
  results = [retrieval_metrics(similarity, caption_to_image, chunk_size=c) for c in (1, 7, 1024)]
  assert results[0] == results[1] == results[2]


def test_chance_keys_for_unequal_caption_counts():
  caption_to_image = np.array([0, 1, 1, 1, 2, 2, 2, 2, 3, 3])  # 1, 3, 4, 2 captions
  m = retrieval_metrics(np.zeros((4, 10)), caption_to_image)
  assert m["chance/t2i_R@1"] == pytest.approx(25)
  # Mean over images of P(a random top caption is theirs) = (1 + 3 + 4 + 2) / 10 / 4.
  assert m["chance/i2t_R@1"] == pytest.approx(100 * (1 + 3 + 4 + 2) / 10 / 4)


def test_single_image_has_no_negative_pairs():
  m = retrieval_metrics(np.array([[0.3, 0.5]]), np.array([0, 0]))
  assert math.isnan(m["mean_cos/negative"])
  assert m["t2i/R@1"] == 100 and m["i2t/R@1"] == 100


def _with_value_at(array, index, value):
  array = array.copy()
  array[index] = value
  return array


@pytest.mark.parametrize("similarity, caption_to_image, kwargs, message", [
    (np.zeros(6), HAND_CAPTION_TO_IMAGE, {}, r"2-D.*\(6,\)"),
    (np.zeros((3, 6), dtype=np.int32), HAND_CAPTION_TO_IMAGE, {}, "float dtype, got int32"),
    (np.zeros((0, 0)), np.zeros(0, dtype=int), {}, "empty"),
    (np.zeros((3, 6)), np.array([0, 1, 2]), {}, r"shape \(6,\).*got \(3,\)"),
    (np.zeros((3, 6)), HAND_CAPTION_TO_IMAGE[None], {}, r"got \(1, 6\)"),
    (np.zeros((3, 6)), HAND_CAPTION_TO_IMAGE.astype(float), {}, "integer dtype, got float64"),
    (np.zeros((3, 6)), np.array([0, 0, 0, 1, 3, 2]), {}, r"caption_to_image\[4\] = 3 is outside \[0, 3\)"),
    (np.zeros((3, 6)), np.array([0, -1, 0, 1, 1, 2]), {}, r"caption_to_image\[1\] = -1"),
    (np.zeros((3, 6)), np.array([0, 0, 0, 2, 2, 2]), {}, "image 1 has no caption"),
    (_with_value_at(HAND_SIMILARITY, (2, 4), np.inf), HAND_CAPTION_TO_IMAGE, {"chunk_size": 2},
     r"similarity\[2, 4\] = inf is not finite"),
    (_with_value_at(HAND_SIMILARITY, (1, 0), np.nan), HAND_CAPTION_TO_IMAGE, {}, r"similarity\[1, 0\] = nan"),
    (HAND_SIMILARITY, HAND_CAPTION_TO_IMAGE, {"ks": (1, 0)}, "ks entry must be >= 1, got 0"),
    (HAND_SIMILARITY, HAND_CAPTION_TO_IMAGE, {"ks": (1.5,)}, "ks entry must be an integer"),
    (HAND_SIMILARITY, HAND_CAPTION_TO_IMAGE, {"ndcg_k": 0}, "ndcg_k must be >= 1"),
    (HAND_SIMILARITY, HAND_CAPTION_TO_IMAGE, {"chunk_size": -2}, "chunk_size must be >= 1, got -2"),
])
def test_invalid_inputs_raise(similarity, caption_to_image, kwargs, message):
  with pytest.raises(ValueError, match=message):
    retrieval_metrics(similarity, caption_to_image, **kwargs)


def random_relevance(seed, caption_to_image, p=0.3):
  """Each caption also true of other images with probability p, and always of its own."""
  rng = np.random.default_rng(seed)
  num_images = caption_to_image.max() + 1
  relevance = rng.random((num_images, caption_to_image.size)) < p
  relevance[caption_to_image, np.arange(caption_to_image.size)] = True
  return relevance


@pytest.mark.parametrize("seed", range(4))
def test_semantic_metrics_count_every_true_item_as_a_positive(seed):
  similarity, caption_to_image = random_problem(seed, tie_levels=3 if seed % 2 else None)
  relevance = random_relevance(seed, caption_to_image)
  got = retrieval_metrics(similarity, caption_to_image, ks=(1, 5), ndcg_k=4, chunk_size=2, relevance=relevance)
  want = reference_metrics(similarity, caption_to_image, (1, 5), 4, relevance=relevance)
  for key, value in want.items():
    assert got[f"semantic/{key}"] == pytest.approx(value, rel=1e-9, abs=1e-9), key
  paired = retrieval_metrics(similarity, caption_to_image, ks=(1, 5), ndcg_k=4)
  assert {k: v for k, v in got.items() if not k.startswith(("semantic/", "ceiling/"))} == paired


def expected_paired_by_enumeration(true, paired, ks, ndcg_k):
  """The mean paired metrics over every order of a query's true items ranked first: all permutations."""
  true_items = [i for i, t in enumerate(true) if t]
  rest = [bool(paired[i]) for i, t in enumerate(true) if not t]  # never paired: their order does not matter
  rows = [ranked_metrics([bool(paired[i]) for i in order] + rest, ks, ndcg_k)
          for order in itertools.permutations(true_items)]
  return {key: sum(r[key] for r in rows) / len(rows) for key in rows[0]}


def test_paired_ceiling_is_the_mean_over_every_order_of_the_true_items():
  ks, ndcg_k = (1, 2, 3, 5, 10), 3
  rng = np.random.default_rng(0)
  for _ in range(25):
    num_items = int(rng.integers(2, 8))
    true = rng.random(num_items) < 0.6
    true[rng.integers(num_items)] = True
    paired = true & (rng.random(num_items) < 0.5)
    paired[rng.choice(np.flatnonzero(true))] = True
    want = expected_paired_by_enumeration(true, paired, ks, ndcg_k)
    got = paired_ceiling(np.array([true.sum()]), np.array([paired.sum()]), ks, ndcg_k, num_items)
    for k in ks:
      assert got[f"R@{k}"] == pytest.approx(100 * want[f"hit{k}"]), (true, paired, k)
      assert got[f"P@{k}"] == pytest.approx(100 * want[f"prec{k}"])
    assert got["mAP"] == pytest.approx(100 * want["ap"])
    assert got[f"NDCG@{ndcg_k}"] == pytest.approx(100 * want["ndcg"])
    assert got["R-precision"] == pytest.approx(100 * want["rprec"])
    assert got["mean_rank"] == pytest.approx(want["first"])


def test_an_oracle_scores_100_semantically_and_the_ceiling_on_the_paired_metrics():
  """Oracle similarity: 1 on every true pair plus noise that orders the true items at random."""
  _, caption_to_image = random_problem(3, num_images=12)
  relevance = random_relevance(3, caption_to_image, p=0.25)
  rng = np.random.default_rng(1)
  draws = [retrieval_metrics(relevance + 0.5 * rng.random(relevance.shape), caption_to_image,
                             relevance=relevance) for _ in range(400)]
  for key in ("R@1", "R@5", "mAP", "NDCG@10", "R-precision"):
    for d in ("i2t", "t2i"):
      assert all(m[f"semantic/{d}/{key}"] == pytest.approx(100) for m in draws), (d, key)
      mean = np.mean([m[f"{d}/{key}"] for m in draws])
      sem = np.std([m[f"{d}/{key}"] for m in draws]) / np.sqrt(len(draws))
      assert abs(mean - draws[0][f"ceiling/{d}/{key}"]) < 4 * sem + 1e-9, (d, key, mean)
  assert draws[0]["ceiling/t2i/R@1"] < 60  # the problem has headroom: many captions fit several images


@pytest.mark.parametrize("relevance,message", [
    (np.ones((3, 5), bool), "relevance must be bool of shape"),
    (np.ones((3, 6), np.int32), "relevance must be bool of shape"),
    (np.zeros((3, 6), bool), r"relevance\[0, 0\] is False, but caption 0 is paired with image 0"),
])
def test_bad_relevance_is_named(relevance, message):
  with pytest.raises(ValueError, match=message):
    retrieval_metrics(HAND_SIMILARITY, HAND_CAPTION_TO_IMAGE, relevance=relevance)


def test_per_query_results_give_back_the_metrics():
  similarity, caption_to_image = random_problem(5)
  relevance = random_relevance(5, caption_to_image)
  per_query = {}
  m = retrieval_metrics(similarity, caption_to_image, relevance=relevance, per_query=per_query)
  for prefix in ("i2t", "t2i", "semantic/i2t", "semantic/t2i"):
    ranks, ap = per_query[f"{prefix}/first_rank"], per_query[f"{prefix}/ap"]
    assert len(ranks) == (similarity.shape[0] if prefix.endswith("i2t") else similarity.shape[1])
    assert 100 * np.mean(ranks <= 5) == pytest.approx(m[f"{prefix}/R@5"])
    assert 100 * np.mean(ap) == pytest.approx(m[f"{prefix}/mAP"], rel=1e-6)
