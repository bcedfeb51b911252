"""`--config=tests/tiny_config.py:DATA_DIR` (the tiny dual encoder) or `:DATA_DIR,STAGE1` (the tiny
XMC-GAN on the stage-1 experiment STAGE1): the tiny test configs for subprocess runs."""

from tests import tiny


def get_config(arg: str):
  data_dir, _, stage1 = arg.partition(",")
  return tiny.tiny_gan_config(data_dir, stage1) if stage1 else tiny.tiny_config(data_dir)
