"""The dual-encoder config schema's checks (configs/default.py is its reference)."""

from cmccl_jax import config_validation as cv, parallel
from cmccl_jax.curriculum.curriculum import LEARNED
from cmccl_jax.curriculum.hardness import Hardness
from cmccl_jax.curriculum.i2mcl import I2MCL
from cmccl_jax.data.teacher_features import MODALITIES
from cmccl_jax.errors import UserError
from cmccl_jax.memory_queue import MemoryQueue
from cmccl_jax.tasks.dual_encoder import online_teachers, staging



def validate(config) -> None:
  cv.validate_common(config)
  hardness = Hardness.from_config(config.loss, int(config.num_steps))  # kind, hard negatives, margins, schedule
  queue = MemoryQueue.from_config(config.loss, int(config.batch_size))
  if queue.on and (hardness.kind not in ("softmax", "sigmoid") or hardness.hard_negatives != "none"):
    raise UserError(f"config.loss.queue.size={queue.size} adds negatives to the plain softmax and sigmoid losses "
                    f"(kind {hardness.kind!r}, hard_negatives {hardness.hard_negatives!r}); set "
                    "config.loss.queue.size=0 or use those.")
  chunk = int(config.loss.get("chunk_size", 0))
  if bool(config.loss.get("ring", False)):
    if hardness.kind != "sigmoid" or hardness.hard_negatives != "none" or queue.on:
      raise UserError(f"config.loss.ring=True is SigLIP's ring, for the plain sigmoid loss (kind {hardness.kind!r}, "
                      f"hard_negatives {hardness.hard_negatives!r}, queue.size {queue.size}); set "
                      "config.loss.ring=False, or config.loss.kind='sigmoid' without those.")
    mesh = parallel.make_mesh(config.mesh)
    parallel.local_batch_size(int(config.batch_size), mesh)  # it splits evenly over the data axis
    local = int(config.batch_size) // mesh.shape[parallel.DATA_AXIS]
    if chunk < 0 or (chunk and local % chunk):
      raise UserError(f"config.loss.chunk_size={chunk} must divide the per-device batch ({local}) with "
                      "config.loss.ring=True (or be 0: whole local blocks).")
  elif chunk:
    if chunk < 0 or int(config.batch_size) % chunk:
      raise UserError(f"config.loss.chunk_size={chunk} must divide config.batch_size={config.batch_size} "
                      "(or be 0: the dense loss).")
    if queue.on:
      raise UserError(f"config.loss.chunk_size={chunk} takes no queued negatives (config.loss.queue.size="
                      f"{queue.size}); set one of them to 0.")
    if hardness.kind not in ("softmax", "sigmoid") or hardness.hard_negatives != "none":
      raise UserError(f"config.loss.chunk_size={chunk} chunks the softmax and sigmoid losses without hard "
                      f"negatives (kind {hardness.kind!r}, hard_negatives {hardness.hard_negatives!r}); "
                      "set config.loss.chunk_size=0.")
  validate_towers(config)
  loss = config.loss
  cv.positive_float(loss.scale_init, "loss.scale_init", " (the initial 1/temperature: CLIP uses 1/0.07, SigLIP 10)")
  if float(loss.scale_init) > float(loss.max_scale):
    raise UserError(f"config.loss.scale_init={loss.scale_init} exceeds config.loss.max_scale={loss.max_scale}, "
                    "the clip on the learned scale; raise max_scale (CLIP uses 100) or lower scale_init.")
  if int(config.curriculum.difficulty_head.get("hidden", 0)) < 0:
    raise UserError(f"config.curriculum.difficulty_head.hidden={config.curriculum.difficulty_head.hidden} must "
                    "be >= 0 (0 turns the difficulty head off).")
  if config.curriculum.scorer == LEARNED and int(config.curriculum.difficulty_head.get("hidden", 0)) <= 0:
    raise UserError(f"config.curriculum.scorer={LEARNED!r} paces by the difficulty head, which "
                    "config.curriculum.difficulty_head.hidden=0 turns off; set it > 0 (e.g. 64).")
  I2MCL.from_config(config.curriculum.get("dynamic"), MODALITIES)  # its fields' checks
  if config.curriculum.get("dynamic") is not None:
    cv.choice(online_teachers.mode(config), "curriculum.dynamic.teacher_features", online_teachers.CHOICES)
  for tower in staging.TOWERS:
    staging.tower_train_from(config.staging, tower)
  optim = config.optim
  cv.positive_float(optim.learning_rate, "optim.learning_rate", "; the demo uses 1e-3")
  cv.positive_float(optim.grad_clip_norm, "optim.grad_clip_norm", " (the global-norm clip; the demo uses 1.0)")
  if not 0 <= int(optim.warmup_steps) < int(config.num_steps):
    raise UserError(f"config.optim.warmup_steps={optim.warmup_steps} must be in [0, config.num_steps="
                    f"{config.num_steps}).")
  if not 0.0 <= float(optim.end_lr_fraction) <= 1.0:
    raise UserError(f"config.optim.end_lr_fraction={optim.end_lr_fraction} must be in [0, 1]: the final learning "
                    "rate as a fraction of the peak (the demo uses 0.01).")
  if float(optim.weight_decay) < 0:
    raise UserError(f"config.optim.weight_decay={optim.weight_decay} must be >= 0.")
  for field in ("b1", "b2"):
    if not 0.0 <= float(optim[field]) < 1.0:
      raise UserError(f"config.optim.{field}={optim[field]} must be in [0, 1).")


def validate_towers(config) -> None:
  """Sizes of the image and text towers and the shared embedding; the patch size against a known image size."""
  cv.positive(config.model.embed_dim, "model.embed_dim")
  image = config.model.image
  cv.positive(image.patch_size, "model.image.patch_size")
  cv.validate_transformer(image, "model.image")
  size = config.data.get("image_size")
  if size is None and config.data.name == "synthetic_shapes":
    size = config.data.synthetic.image_size
  if size is not None:
    cv.patch_size_divides(image.patch_size, size)
  text = config.model.text
  if text.get("checkpoint"):  # the architecture is the checkpoint's; only dropout may be set here
    if text.get("dropout") is not None:
      cv.dropout_rate(text.dropout, "model.text.dropout")
  else:
    cv.validate_transformer(text, "model.text")
