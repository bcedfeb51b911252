"""The XMC-GAN config schema's checks (configs/xmcgan_synthetic.py is its reference)."""

import os

from cmccl_jax import config_validation as cv
from cmccl_jax.curriculum.curriculum import LEARNED
from cmccl_jax.errors import UserError


def validate(config) -> None:
  """`config.gan` and the shared blocks: the stage-1 experiment exists, counts and rates are sane."""
  cv.validate_common(config)
  gan = config.gan
  if not gan.stage1 or not os.path.isfile(os.path.join(os.path.expanduser(gan.stage1), "config.json")):
    raise UserError(
        f"config.gan.stage1={gan.stage1!r} is not a trained dual-encoder experiment (no config.json there). "
        "Train stage 1 first, e.g. `bash train.sh demo`, and set --config.gan.stage1=exp/demo.")
  if config.curriculum.scorer == LEARNED:
    raise UserError(f"config.curriculum.scorer={LEARNED!r} needs the dual encoder's difficulty head; an XMC-GAN "
                    "experiment paces by an offline scorer, e.g. --config.curriculum.scorer=ground_truth.")
  for field in ("z_dim", "d_steps", "eval.num_images", "eval.candidates", "generator.channels",
                "generator.cond_dim", "generator.attention_dim", "discriminator.channels",
                "discriminator.contrastive_dim"):
    cv.positive(cv.field_value(gan, field), f"gan.{field}")
  if not 0.0 <= float(gan.ema_decay) < 1.0:
    raise UserError(f"config.gan.ema_decay={gan.ema_decay} must be in [0, 1); XMC-GAN uses 0.999.")
  cv.positive_float(gan.loss.temperature, "gan.loss.temperature", "; XMC-GAN uses 0.1")
  cv.positive_float(gan.optim.g_learning_rate, "gan.optim.g_learning_rate", "; XMC-GAN uses 1e-4")
  cv.positive_float(gan.optim.d_learning_rate, "gan.optim.d_learning_rate", "; XMC-GAN uses 4e-4")
