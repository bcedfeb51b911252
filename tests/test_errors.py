"""Bad input a user can type gets an error naming the value and the fix."""

import os
import subprocess
import sys

import pytest

from cmccl_jax.data import datasets
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
    datasets.get_builder(config.data, 4)


def test_missing_data_dir_names_path_and_fix(tmp_path):
  config = tiny.tiny_config(str(tmp_path / "no_such_dir"))
  config.data.auto_prepare = False
  with pytest.raises(UserError, match="no_such_dir.*python -m preprocess"):
    datasets.get_builder(config.data, 4)


def test_unbuilt_dataset_in_existing_dir_says_how_to_build(tmp_path):
  config = tiny.tiny_config(str(tmp_path))
  config.data.auto_prepare = False
  with pytest.raises(UserError, match="is not built in.*python -m preprocess --config="):
    datasets.get_builder(config.data, 4)


def test_scorer_not_in_shards_lists_available(tiny_data_dir):
  config = tiny.tiny_config(tiny_data_dir)
  builder = datasets.get_builder(config.data, 4)
  with pytest.raises(ValueError, match="'nouns'.*caption_length"):
    datasets.check_curriculum_fields(builder, "nouns", 4)


def test_evaluating_an_untrained_experiment_says_how_to_train(tmp_path):
  r = _main(f"--workdir={tmp_path / 'nothing'}", "--mode=evaluate")
  assert r.returncode != 0 and "bash train.sh nothing" in r.stderr, r.stderr[-2000:]
