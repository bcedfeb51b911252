"""A trained dual encoder read back from its experiment directory: model, weights, tokenizer.

The one loader of a trained model for everything that reuses one (teacher scorers,
XMC-GAN's stage 1). It restores the parameters only (no optimizer moments) onto one
device, whatever mesh the model was trained on, and never changes the config it reads.
"""

import dataclasses
from typing import Any

import jax
import ml_collections

from cmccl_jax import parallel
from cmccl_jax.data.tokenizer import build_tokenizer
from cmccl_jax.errors import UserError
from cmccl_jax.tasks.dual_encoder.task import DualEncoderModel
from cmccl_jax.workdir import Workdir


@dataclasses.dataclass(frozen=True)
class TrainedDualEncoder:
  """A dual encoder restored from exp/NAME: what embedding with it needs."""

  workdir: str
  step: int
  config: ml_collections.ConfigDict   # the config it was trained with (exp/NAME/config.json)
  model: Any                          # the DualEncoder module
  params: Any                         # the variables model.apply takes
  tokenizer: Any                      # cmccl_jax.data.tokenizer.Tokenizer of its training
  image_size: int                     # its input resolution (square)


def image_size_of(config: ml_collections.ConfigDict, source: str) -> int:
  """The model's square input size, decided as pipeline.image_shape decides it for the dataset it trained on."""
  size = config.data.get("image_size")
  if size is None and config.data.get("name") == "synthetic_shapes":
    size = config.data.synthetic.image_size
  if size is None:
    raise UserError(f"{source} has data.image_size None for dataset {config.data.get('name')!r}; "
                    "cannot tell the image tower's input size.")
  return int(size)


def dual_encoder_architecture(config: ml_collections.ConfigDict, source: str) -> TrainedDualEncoder:
  """A dual encoder of `config` with shapes (jax.ShapeDtypeStruct on one device) for weights, and step -1.

  For models that carry the encoder's weights in their own checkpoints (XMC-GAN's
  stage 1): restoring them needs only the architecture. `source` names the config in errors.
  """
  kind = config.get("model_type", "dual_encoder")
  if kind != "dual_encoder":
    raise UserError(f"{source} holds a {kind!r} model; only a dual encoder's towers can embed images and text.")
  config = ml_collections.ConfigDict(config.to_dict())  # a copy: the single-device layout is ours alone
  config.param_sharding = ()
  image_size = image_size_of(config, source)
  tokenizer = build_tokenizer(config.tokenizer)
  mesh = parallel.make_mesh({parallel.DATA_AXIS: 1}, jax.devices()[:1])
  model = DualEncoderModel(config, mesh, (image_size, image_size, 3), tokenizer.vocab_size)
  return TrainedDualEncoder(workdir=source, step=-1, config=config, model=model.model,
                            params=model.abstract_state.params, tokenizer=tokenizer, image_size=image_size)


def load_dual_encoder(workdir: str, step: int = -1) -> TrainedDualEncoder:
  """The dual encoder of experiment `workdir` at checkpoint `step` (-1 the latest, 0 the earliest)."""
  wd = Workdir(workdir)
  step = wd.resolve_step(step)
  shapes = dual_encoder_architecture(wd.load_config(), wd.file("config.json"))
  params = wd.restore_params(step, shapes.params)
  return dataclasses.replace(shapes, workdir=wd.path, step=step, params=params)
