"""Bad input a user can type gets an error naming the value and the fix."""

import os
import subprocess
import sys

import pytest

from cmccl_jax.data import datasets, difficulty
from cmccl_jax.scoring import score_shards
from tests import tiny
from cmccl_jax.errors import UserError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _main(*args):
  env = dict(os.environ, XLA_FLAGS="", TF_CPP_MIN_LOG_LEVEL="3")
  return subprocess.run([sys.executable, "-m", "cmccl_jax.main", *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=300)


def test_unknown_config_field_is_named(tmp_path):
  r = _main(f"--workdir={tmp_path}", "--config=configs/default.py", "--config.curriculum.pacng=root")
  assert r.returncode != 0
  assert "pacng" in r.stderr and "pacing" in r.stderr, r.stderr[-2000:]


def test_bad_config_value_is_named(tmp_path):
  r = _main(f"--workdir={tmp_path}", "--config=configs/default.py", "--config.curriculum.pacing=fast")
  assert r.returncode == 2
  assert "'fast'" in r.stderr and "root" in r.stderr, r.stderr[-2000:]


def test_unknown_dataset_name_lists_known_ones(tmp_path):
  config = tiny.tiny_config(str(tmp_path))
  config.data.name = "synthetic_shape"
  with pytest.raises(ValueError, match="'synthetic_shape'.*synthetic_shapes"):
    datasets.get_builder(config.data)


def test_missing_data_dir_names_path_and_fix(tmp_path):
  config = tiny.tiny_config(str(tmp_path / "no_such_dir"))
  config.data.auto_prepare = False
  with pytest.raises(UserError, match="no_such_dir.*python -m preprocess"):
    datasets.get_builder(config.data)


def test_unbuilt_dataset_in_existing_dir_says_how_to_build(tmp_path):
  config = tiny.tiny_config(str(tmp_path))
  config.data.auto_prepare = False
  with pytest.raises(UserError, match="is not built in.*python -m preprocess --config="):
    datasets.get_builder(config.data)


def test_unknown_curriculum_scorer_lists_the_scorers(tiny_data_dir):
  config = tiny.tiny_config(tiny_data_dir)
  config.curriculum.scorer = "nouns"
  builder = datasets.get_builder(config.data)
  with pytest.raises(UserError, match="scorer='nouns'.*caption_length.*'learned'"):
    difficulty.run_scorers(config, builder)


def test_unbuilt_scores_say_how_to_build_them(tiny_data_dir):
  config = tiny.tiny_config(tiny_data_dir)
  config.data.auto_prepare = False
  config.curriculum.scorer = "combined"
  config.scoring.combined = ("caption_length",)
  builder = datasets.get_builder(config.data)
  with pytest.raises(UserError, match="combined scores of synthetic_shapes.*python -m preprocess"):
    score_shards.prepare_scores(config, builder)


def test_evaluating_an_untrained_experiment_says_how_to_train(tmp_path):
  r = _main(f"--workdir={tmp_path / 'nothing'}", "--mode=evaluate")
  assert r.returncode != 0 and "bash train.sh nothing" in r.stderr, r.stderr[-2000:]
