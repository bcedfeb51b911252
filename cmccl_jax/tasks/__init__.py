"""The registry of tasks: `config.model_type` names the task that trains, evaluates and samples it."""

from cmccl_jax.config_validation import choice
from cmccl_jax.tasks.base import Task
from cmccl_jax.tasks.dual_encoder import config as dual_encoder_config
from cmccl_jax.tasks.dual_encoder.task import DualEncoderTask
from cmccl_jax.tasks.xmcgan import config as xmcgan_config
from cmccl_jax.tasks.xmcgan.task import XmcganTask
from cmccl_jax.workdir import Workdir

# model_type -> (the task's class, the check of its config schema)
TASKS = {
    "dual_encoder": (DualEncoderTask, dual_encoder_config.validate),
    "xmcgan": (XmcganTask, xmcgan_config.validate),
}


def validate(config) -> None:
  """The config's own task checks it (its schema), after model_type names a known task."""
  choice(config.get("model_type"), "model_type", tuple(TASKS))
  TASKS[config.model_type][1](config)


def make_task(config, workdir: Workdir) -> Task:
  """The task of `config.model_type`, built for `workdir` (XMC-GAN keeps its stage-1 config there)."""
  return TASKS[config.model_type][0](config, workdir)


def safe_on_resume(config) -> tuple[str, ...]:
  """The fields a resume of `config`'s task may change (the task's SAFE_ON_RESUME)."""
  return TASKS[config.model_type][0].SAFE_ON_RESUME


def added_fields(config) -> dict:
  """The fields newer than some saved experiments, with the values that mean the old behaviour."""
  return TASKS[config.model_type][0].ADDED_FIELDS
