"""Checks a resolved config before anything expensive runs, with messages that say the fix."""

from cmccl_jax.curriculum.pacing import PACINGS
from cmccl_jax.train import staging

LOSS_KINDS = ("softmax", "sigmoid")
MODEL_TYPES = ("dual_encoder",)


def _choice(value, field: str, choices) -> None:
  if value not in choices:
    raise ValueError(f"config.{field}={value!r} is not one of {', '.join(map(repr, choices))}; "
                     f"set --config.{field}=<one of them>.")


def _positive(value, field: str) -> None:
  if int(value) <= 0:
    raise ValueError(f"config.{field}={value!r} must be a positive integer.")


def validate(config) -> None:
  _choice(config.model_type, "model_type", MODEL_TYPES)
  _choice(config.loss.kind, "loss.kind", LOSS_KINDS)
  _choice(config.curriculum.pacing, "curriculum.pacing", PACINGS)
  for field in ("num_steps", "batch_size", "eval_batch_size", "log_every_steps", "checkpoint_every_steps",
                "keep_checkpoints", "curriculum.num_blocks"):
    value = config
    for part in field.split("."):
      value = value[part]
    _positive(value, field)
  for tower in staging.TOWERS:
    staging.tower_train_from(config.staging, tower)
  k = int(config.curriculum.num_blocks)
  if config.curriculum.pacing == "phases" and len(config.curriculum.phase_steps) != k - 1:
    raise ValueError(
        f"config.curriculum.phase_steps={tuple(config.curriculum.phase_steps)} must list {k - 1} phase "
        f"lengths (num_blocks - 1 = {k - 1}); the last phase, all blocks visible, runs to the end.")
  if config.curriculum.pacing in ("linear", "root"):
    _positive(config.curriculum.competence_steps, "curriculum.competence_steps")
    if not 0.0 < float(config.curriculum.competence_init) <= 1.0:
      raise ValueError(f"config.curriculum.competence_init={config.curriculum.competence_init} must be in (0, 1].")
