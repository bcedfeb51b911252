"""Test set-up: 8 simulated CPU devices (before jax is imported) and shared fixtures."""

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

tf.config.set_visible_devices([], "GPU")

from tests import tiny  # noqa: E402


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory):
  """A tiny synthetic_shapes build shared by every test that needs real shards."""
  data_dir = str(tmp_path_factory.mktemp("tfds"))
  config = tiny.tiny_config(data_dir)
  from cmccl_jax.data import datasets
  datasets.get_builder(config.data, int(config.curriculum.num_blocks))
  return data_dir


@pytest.fixture
def tiny_config(tiny_data_dir):
  return tiny.tiny_config(tiny_data_dir)
