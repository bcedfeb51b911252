"""The ablation command: runs every (variant, seed), skips finished runs, writes table, plot and correlations."""

import json
import os
import shutil
import subprocess
import sys

import ml_collections
import numpy as np
import pytest

from cmccl_jax.experiments import ablation
from configs.ablation import settings as ablation_settings

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_history_keeps_the_last_record_of_a_step_and_separates_evals_from_step_times():
  records = [{"step": 50, "step_time_ms": 10.0}, {"step": 100, "step_time_ms": 12.0},
             {"step": 100, "eval/t2i/R@1": 1.0}, {"step": 100, "step_time_ms": 11.0},  # resumed: re-logged
             {"step": 100, "eval/t2i/R@1": 2.0}, {"step": 100, "val/t2i/R@1": 4.0}]
  evals, vals, times = ablation.run_history(records)
  assert evals == {100: {"t2i/R@1": 2.0}} and vals == {100: {"t2i/R@1": 4.0}} and times == [10.0, 11.0]


def test_unknown_variant_names_the_known_ones():
  base = ml_collections.ConfigDict({"seed": 0, "curriculum": {}, "ablation": ablation_settings()})
  with pytest.raises(ValueError, match="'sorted'.*baseline"):
    ablation.variant_config(base, "sorted", 0)


def test_a_variant_merges_its_blocks_into_the_config():
  base = ml_collections.ConfigDict({"seed": 0, "curriculum": {"pacing": "root", "order": "easy_first", "soft": False},
                                    "data": {"synthetic": {"corrupt_fraction": 0.2}}, "evals": {},
                                    "ablation": ablation_settings()})
  config = ablation.variant_config(base, "anti", 3, corrupt_fraction=0.4)
  assert (config.seed, config.curriculum.order, config.curriculum.soft) == (3, "hard_first", False)
  assert config.data.synthetic.corrupt_fraction == 0.4 and config.evals.val.split == "validation"
  assert base.curriculum.order == "easy_first"  # the base is left as it was


def test_teacher_placeholders_become_the_teacher_runs_workdir():
  base = ml_collections.ConfigDict({"seed": 0, "evals": {}, "ablation": ablation_settings(),
                                    "curriculum": {"pacing": "root", "dynamic": {
                                        "distill": False, "inter": False, "intra": "none",
                                        "image_teacher": "", "text_teacher": ""}}})
  assert ablation.needs_teacher(base, "kd_intra_inter") and not ablation.needs_teacher(base, "root")
  config = ablation.variant_config(base, "kd_intra_inter", 1, teacher="exp/a/teacher")
  dynamic = config.curriculum.dynamic
  assert (dynamic.image_teacher, dynamic.text_teacher, dynamic.inter, config.curriculum.pacing) == (
      "exp/a/teacher", "exp/a/teacher", True, "none")
  with pytest.raises(ValueError, match="teacher"):
    ablation.variant_config(base, "kd", 1)


def test_per_query_values_average_to_the_metric():
  arrays = {"semantic/t2i/first_rank": np.array([1, 3, 1, 7]), "semantic/t2i/ap": np.array([1.0, 0.5, 1.0, 0.25])}
  assert ablation.per_query_values(arrays, "semantic/t2i/R@1").mean() == 50.0
  assert ablation.per_query_values(arrays, "semantic/t2i/R@5").mean() == 75.0
  assert ablation.per_query_values(arrays, "semantic/t2i/mAP").mean() == pytest.approx(68.75)
  assert ablation.per_query_values(arrays, "t2i/R@1") is None


@pytest.mark.timeout(1200)
def test_ablate_end_to_end_on_tiny_runs(tiny_data_dir, tmp_path):
  env = dict(os.environ, XLA_FLAGS="", TF_CPP_MIN_LOG_LEVEL="3")
  cmd = [sys.executable, "-m", "cmccl_jax.experiments.ablation",
         f"--config=tests/tiny_ablation_config.py:{tiny_data_dir}", f"--workdir={tmp_path}"]
  r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=1100)
  assert r.returncode == 0, r.stderr[-3000:]
  text = open(tmp_path / "results.md").read()
  for row in ("| baseline |", "| anti |", "| kd_intra_inter |", "corrupt 0.25", "| ground_truth | 1.000 |"):
    assert row in text, row
  results = json.load(open(tmp_path / "results.json"))
  anti = results["table"]["anti"]
  assert anti["final"]["n"] == 2 and anti["final"]["low"] <= anti["final"]["mean"] <= anti["final"]["high"]
  low, high = anti["vs_baseline"]["bootstrap"]
  assert low <= high and 0 <= anti["vs_baseline"]["p"] <= 1
  # The robustness sweep: the baseline and the one best variant on validation, at both corrupt fractions.
  assert len(results["robustness"]) == 2 and all(sorted(c) == ["0.0", "0.25"] for c in results["robustness"].values())
  for name in ("curves", "paired", "convergence", "robustness"):
    assert os.path.getsize(tmp_path / f"{name}.png") > 1000, name
  assert os.path.isfile(tmp_path / "corrupt0.25" / "baseline" / "seed1" / "per_query" / "eval-12.npz")
  # The I2MCL variant distilled from the teacher run, trained once per corrupt fraction.
  kd = json.load(open(tmp_path / "kd_intra_inter" / "seed0" / "config.json"))["curriculum"]["dynamic"]
  assert kd["image_teacher"] == kd["text_teacher"] == str(tmp_path / "teacher")
  assert os.path.isdir(tmp_path / "teacher" / "checkpoints")
  # A second call finds every run finished and trains nothing; so does a third from the records alone.
  r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert r.returncode == 0 and "==" not in r.stdout, r.stdout[-2000:]
  for name in os.listdir(tmp_path):
    if name not in ("records", "cost.json") and os.path.isdir(tmp_path / name):
      shutil.rmtree(tmp_path / name)
  r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert r.returncode == 0 and "==" not in r.stdout, r.stdout[-2000:]
  again = json.load(open(tmp_path / "results.json"))
  assert again["table"] == results["table"] and again["robustness"] == results["robustness"]
  assert again["cost_s"] == results["cost_s"] > 0  # summed from the records' train times
  # --partial trains nothing and reports the seeds every variant has finished.
  r = subprocess.run(cmd + ["--partial", "--seeds=0,1,2"], cwd=REPO, env=env, capture_output=True, text=True,
                     timeout=600)
  assert r.returncode == 0 and "==" not in r.stdout, r.stderr[-2000:]
  assert "**Partial**: 2 of 3 seeds" in open(tmp_path / "results.md").read()
  # A finished run of another config is not taken for this one.
  r = subprocess.run(cmd + ["--config.optim.learning_rate=0.002"], cwd=REPO, env=env, capture_output=True, text=True,
                     timeout=600)
  assert r.returncode != 0 and "holds a finished run of another config" in r.stderr, r.stderr[-2000:]
  assert "config.optim.learning_rate: 0.001 -> 0.002" in r.stderr
