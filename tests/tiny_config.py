"""`--config=tests/tiny_config.py:DATA_DIR`: the tiny test config for subprocess runs."""

from tests import tiny


def get_config(data_dir: str):
  return tiny.tiny_config(data_dir)
