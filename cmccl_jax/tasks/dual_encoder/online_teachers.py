"""Teachers run inside the step: I2MCL's distillation targets of the inputs the student sees.

With augmentation on, a precomputed teacher feature is of the un-augmented example
while the student sees a crop, a flip or a reworded caption. With
`config.curriculum.dynamic.teacher_features="online"` the frozen teacher towers
(dual encoders trained here) embed the step's own batch instead: their weights are
an argument of the jitted step (replicated, never in the train state or its
checkpoints) and their outputs carry no gradient. The teacher must read the
student's inputs as they are: an image teacher trained at the same image size, a
text teacher with the same tokenizer. A BERT text teacher (MiniLM) reads its own
WordPiece tokens, so it is precomputed only.
"""

import jax
import jax.numpy as jnp

from cmccl_jax import losses, parallel
from cmccl_jax.errors import UserError

ONLINE = "online"
PRECOMPUTED = "precomputed"
CHOICES = (PRECOMPUTED, ONLINE)


def mode(config) -> str:
  """The run's teacher_features setting ("precomputed" when the config predates it)."""
  dynamic = config.curriculum.get("dynamic")
  return str(dynamic.get("teacher_features", PRECOMPUTED)) if dynamic is not None else PRECOMPUTED


class OnlineTeachers:
  """The frozen teacher towers of {modality: "<experiment>@<step>"}, applied to a batch in the step."""

  def __init__(self, teachers: dict[str, str], config, image_size: int):
    from cmccl_jax.tasks.dual_encoder.trained import load_dual_encoder  # it imports this task
    self.teachers = dict(teachers)
    self.models, params, widths = {}, {}, {}
    for modality, teacher in self.teachers.items():
      if teacher.startswith("bert:"):
        raise UserError(f"config.curriculum.dynamic.{modality}_teacher is a BERT model, which reads its own "
                        "WordPiece tokens: it can only be precomputed. Set config.curriculum.dynamic."
                        "teacher_features='precomputed', or name an experiment trained here.")
      path, step = teacher.rsplit("@", 1)
      trained = load_dual_encoder(path, int(step))
      if modality == "image" and trained.image_size != image_size:
        raise UserError(f"the online image teacher {path} reads {trained.image_size}px images, the run "
                        f"{image_size}px; train the teacher at this size or set teacher_features='precomputed'.")
      if modality == "text" and trained.config.tokenizer.to_dict() != config.tokenizer.to_dict():
        raise UserError(f"the online text teacher {path} was trained with another tokenizer "
                        f"({trained.config.tokenizer.to_dict()}) than the run's ({config.tokenizer.to_dict()}); "
                        "use teacher_features='precomputed'.")
      self.models[modality] = trained.model
      params[modality] = trained.params
      widths[modality] = int(trained.config.model.embed_dim)
    self.params = params
    self.widths = widths

  def features(self, params, batch) -> dict:
    """{"teacher/<modality>": unit-norm teacher features of the batch}, without gradient."""
    out = {}
    for modality, model in self.models.items():
      method, inputs = ((model.encode_image, batch["image"]) if modality == "image"
                        else (model.encode_text, batch["tokens"]))
      z = model.apply(params[modality], inputs, method=method)
      out[f"teacher/{modality}"] = jax.lax.stop_gradient(losses.l2_normalize(z.astype(jnp.float32)))
    return out

  def device_params(self, mesh):
    """The teachers' weights, replicated on `mesh` (an argument of the jitted step)."""
    return jax.device_put(self.params, parallel.replicated(mesh))

  def describe(self) -> str:
    return "teachers: " + ", ".join(f"{m} {t} (width {self.widths[m]}, online: the augmented batch)"
                                    for m, t in self.teachers.items())
