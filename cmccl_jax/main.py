"""Entry point: `python -m cmccl_jax.main --workdir=exp/NAME [--config=configs/X.py] [--config.a=b]`.

--mode=train       trains into the workdir, resuming from its latest checkpoint.
--mode=evaluate    scores every checkpoint of the workdir with the config saved there.
"""

import json
import os

from absl import app, flags, logging
import ml_collections
from ml_collections import config_flags

from cmccl_jax import cli

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (configs/X.py).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Experiment directory (exp/NAME).", required=True)
_MODE = flags.DEFINE_enum("mode", "train", ["train", "evaluate"], "What to do.")
_MULTIHOST = flags.DEFINE_bool("multihost", False, "Call jax.distributed.initialize() (pods, multi-GPU hosts).")


def _hide_gpus_from_tf() -> None:
  """TF only feeds data; leave every accelerator to JAX."""
  import tensorflow as tf
  tf.config.set_visible_devices([], "GPU")


def _load_saved_config(workdir: str) -> ml_collections.ConfigDict:
  path = os.path.join(workdir, "config.json")
  if not os.path.isfile(path):
    raise SystemExit(f"error: {path} not found: {workdir} holds no trained experiment. "
                     f"Train it first with `bash train.sh {os.path.basename(os.path.normpath(workdir))}`.")
  with open(path) as f:
    return ml_collections.ConfigDict(json.load(f))


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}; overrides look like --config.field=value.")
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.ERROR)  # TFDS/orbax/clu chatter drowns the progress line
  _hide_gpus_from_tf()
  import jax
  if _MULTIHOST.value:
    jax.distributed.initialize()
  from cmccl_jax import config_validation
  from cmccl_jax.train import loop

  workdir = _WORKDIR.value
  if _MODE.value == "train":
    config = _CONFIG.value
    if config is None:
      raise app.UsageError("--config is required for --mode=train (train.sh passes configs/default.py).")
    config_validation.validate(config)
    loop.train_and_evaluate(config, workdir)
  else:
    loop.evaluate_checkpoints(_load_saved_config(workdir), workdir)


if __name__ == "__main__":
  cli.run(main)
