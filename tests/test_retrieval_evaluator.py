"""The dual encoder's retrieval evaluator on real shards: semantic metrics, ceilings and distractors."""

import numpy as np
import pytest

from cmccl_jax.experiments import oracle
from cmccl_jax.scoring import score_shards
from cmccl_jax.tasks.dual_encoder.task import DualEncoderTask
from cmccl_jax.workdir import Workdir
from tests import tiny


@pytest.fixture(scope="module")
def hard_task(tmp_path_factory):
  config = tiny.tiny_config(str(tmp_path_factory.mktemp("hard")))
  config.data.synthetic.update(dict(min_objects=2, max_objects=5, caption_levels=("pair", "relation", "scene"),
                                    distractors=True))
  score_shards.prepare_data(config)
  return DualEncoderTask(config)


def test_the_evaluator_reports_semantic_metrics_ceilings_and_distractor_accuracy(hard_task, tmp_path):
  evaluator = hard_task.make_evaluator("retrieval", "test")
  scores = evaluator(hard_task.init_state())
  for d in ("i2t", "t2i"):
    for k in (1, 5, 10):
      # Every paired item is a true one, so the semantic recall can only be higher.
      assert scores[f"semantic/{d}/R@{k}"] >= scores[f"{d}/R@{k}"]
      assert 0 < scores[f"ceiling/{d}/R@{k}"] <= 100
  assert scores["ceiling/t2i/R@1"] < 100  # some caption is true of two test images
  assert 0 <= scores["distractor/accuracy"] <= 100
  assert "semantic t2i R@1" in evaluator.summary(scores) and "distractors" in evaluator.summary(scores)
  # The relevance it used is the builder's, in the evaluator's order: images by id, their captions in order.
  examples = list(hard_task.builder.as_dataset(split="test").as_numpy_iterator())
  texts = [t.decode() for e in examples for t in e["captions"]]
  relevance = hard_task.builder.relevance("test", [e["id"] for e in examples], texts)
  assert np.array_equal(evaluator._relevance, relevance)
  per_query = evaluator.per_query()
  assert 100 * np.mean(per_query["semantic/t2i/first_rank"] == 1) == pytest.approx(scores["semantic/t2i/R@1"])
  assert 100 * np.mean(per_query["distractor/correct"]) == pytest.approx(scores["distractor/accuracy"])
  wd = Workdir(str(tmp_path))
  wd.save_per_query("eval", 7, per_query)
  assert {k: v.tolist() for k, v in wd.load_per_query("eval", 7).items()} == {k: v.tolist() for k, v in
                                                                              per_query.items()}
  assert wd.load_per_query("eval", 8) == {}


def test_the_oracle_script_scores_100_semantically_on_the_split(hard_task):
  ids, texts, owners = oracle.split_captions(hard_task.builder, "test")
  runs = oracle.oracle_scores(hard_task.builder.relevance("test", ids, texts), owners, draws=3)
  table = oracle.markdown(runs, "tiny", "test")
  assert all(r["semantic/t2i/R@1"] == 100 and r["semantic/i2t/mAP"] == pytest.approx(100) for r in runs)
  assert "| t2i R@1 | 100.00 |" in table
