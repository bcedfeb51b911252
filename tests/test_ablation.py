"""The ablation command: runs every (variant, seed), skips finished runs, writes table, plot and correlations."""

import json
import os
import subprocess
import sys

import ml_collections
import numpy as np
import pytest

from cmccl_jax.experiments import ablation

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_summary_takes_final_and_best_over_steps_then_mean_and_std_over_seeds():
  run = lambda a, b: {100: {m: a for m in ablation.METRICS}, 200: {m: b for m in ablation.METRICS}}
  # "best" is chosen on validation: the test value at the step whose validation value is highest.
  table = ablation.summarise({"root": [run(5.0, 3.0), run(1.0, 7.0)]},
                             {"root": [run(0.5, 0.9), run(0.8, 0.2)]})
  assert table["root"]["final t2i/R@1"] == (5.0, 2.0)  # finals 3, 7
  assert table["root"]["best t2i/R@1"] == (2.0, 1.0)   # validation picks step 200 (test 3), then step 100 (test 1)


def test_history_keeps_the_last_record_of_a_step_and_separates_evals_from_step_times():
  records = [{"step": 50, "step_time_ms": 10.0}, {"step": 100, "step_time_ms": 12.0},
             {"step": 100, "eval/t2i/R@1": 1.0}, {"step": 100, "step_time_ms": 11.0},  # resumed: re-logged
             {"step": 100, "eval/t2i/R@1": 2.0}, {"step": 100, "val/t2i/R@1": 4.0}]
  evals, vals, times = ablation.run_history(records)
  assert evals == {100: {"t2i/R@1": 2.0}} and vals == {100: {"t2i/R@1": 4.0}} and times == [10.0, 11.0]


def test_unknown_variant_names_the_known_ones():
  with pytest.raises(ValueError, match="'sorted'.*baseline"):
    ablation.variant_config(ml_collections.ConfigDict({"seed": 0, "curriculum": {}}), "sorted", 0)


def test_ablate_end_to_end_on_tiny_runs(tiny_data_dir, tmp_path):
  env = dict(os.environ, XLA_FLAGS="", TF_CPP_MIN_LOG_LEVEL="3")
  cmd = [sys.executable, "-m", "cmccl_jax.experiments.ablation", f"--config=tests/tiny_config.py:{tiny_data_dir}",
         f"--workdir={tmp_path}", "--variants=baseline,anti", "--seeds=0", "--config.eval_every_steps=6",
         "--config.eval_batch_size=8"]
  r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert r.returncode == 0, r.stderr[-3000:]
  text = open(tmp_path / "results.md").read()
  assert "| baseline |" in text and "| anti |" in text and "±" in text
  assert "| ground_truth | 1.000 |" in text  # the ground truth against itself
  assert os.path.getsize(tmp_path / "r1_vs_step.png") > 1000
  results = json.load(open(tmp_path / "results.json"))
  assert len(results["histories"]["anti"]) == 1 and sorted(results["histories"]["anti"][0]) == ["12", "6"]
  assert results["step_time_ms"]["anti"] > 0
  # A second call finds every run finished and trains nothing.
  r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert r.returncode == 0 and "==" not in r.stdout, r.stdout[-2000:]
