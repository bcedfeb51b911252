"""Checks of the config blocks every task shares, run before anything expensive, with messages that say the fix.

Each task adds the checks of its own fields (`tasks/<task>/config.py`).
"""

import os

from cmccl_jax.curriculum.pacing import COMPETENCE_PACINGS, ORDERS, PACINGS, PHASE_PACINGS
from cmccl_jax.errors import UserError

def choice(value, field: str, choices) -> None:
  if value not in choices:
    raise UserError(f"config.{field}={value!r} is not one of {', '.join(map(repr, choices))}; "
                     f"set --config.{field}=<one of them>.")


def positive(value, field: str) -> None:
  if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
    raise UserError(f"config.{field}={value!r} must be a positive integer.")


def probability(value, field: str) -> None:
  if not 0.0 <= float(value) <= 1.0:
    raise UserError(f"config.{field}={value!r} is a probability and must be in [0, 1].")


def _ordered_range(value, field: str, low: float, high: float | None = None) -> None:
  """A (min, max) pair with low < min <= max (<= high)."""
  ok = isinstance(value, (tuple, list)) and len(value) == 2
  ok = ok and low < float(value[0]) <= float(value[1]) and (high is None or float(value[1]) <= high)
  if not ok:
    bound = f"{low} < min <= max" + (f" <= {high}" if high is not None else "")
    raise UserError(f"config.{field}={value!r} must be a (min, max) pair with {bound}, "
                     f"e.g. --config.{field}='(0.5, 1.0)'.")


def validate_augment(config) -> None:
  """`config.augment` and `config.data.image_size`: ranges, probabilities, the synonym table's file."""
  size = config.data.get("image_size")
  if size is not None and int(size) <= 0:
    raise UserError(f"config.data.image_size={size!r} must be a positive integer, or None for the dataset's "
                     "stored size.")
  image, text = config.augment.image, config.augment.text
  _ordered_range(image.crop_scale, "augment.image.crop_scale", 0.0, 1.0)
  _ordered_range(image.crop_ratio, "augment.image.crop_ratio", 0.0)
  _ordered_range(image.blur_sigma, "augment.image.blur_sigma", 0.0)
  if not 0.0 <= float(image.color_jitter) <= 2.5:
    raise UserError(f"config.augment.image.color_jitter={image.color_jitter!r} must be in [0, 2.5] (0 = off; "
                     "the hue shift 0.2*strength must stay <= 0.5); SimCLR uses 1.0.")
  for field in ("color_jitter_prob", "blur_prob"):
    probability(image[field], f"augment.image.{field}")
  for field in ("word_dropout", "word_reorder", "synonym_prob"):
    probability(text[field], f"augment.text.{field}")
  if float(text.synonym_prob) > 0:
    if not text.synonyms:
      raise UserError(
          f"config.augment.text.synonym_prob={text.synonym_prob} needs a synonym table but "
          "config.augment.text.synonyms is empty; set --config.augment.text.synonyms=default (derived from "
          "all-MiniLM-L6-v2 embeddings, cached) or the path of a word<TAB>syn1,syn2 file.")
    path = os.path.expanduser(text.synonyms)
    if text.synonyms != "default" and not os.path.isfile(path):
      raise UserError(
          f"config.augment.text.synonyms={text.synonyms!r}: no such file ({os.path.abspath(path)}). Make one "
          f"with `python -m preprocess.synonyms --out={text.synonyms}` (neighbours in all-MiniLM-L6-v2's "
          "embeddings), use --config.augment.text.synonyms=default, or write word<TAB>syn1,syn2 lines.")


def positive_float(value, field: str, hint: str = "") -> None:
  if not float(value) > 0:
    raise UserError(f"config.{field}={value!r} must be positive{hint}.")


def field_value(config, field: str):
  value = config
  for part in field.split("."):
    value = value[part]
  return value


def validate_curriculum(config) -> None:
  """config.curriculum: pacing, order, blocks and the pacing's schedule."""
  choice(config.curriculum.pacing, "curriculum.pacing", PACINGS)
  choice(config.curriculum.order, "curriculum.order", ORDERS)
  positive(config.curriculum.num_blocks, "curriculum.num_blocks")
  k = int(config.curriculum.num_blocks)
  if config.curriculum.pacing in PHASE_PACINGS and len(config.curriculum.phase_steps) != k - 1:
    raise UserError(
        f"config.curriculum.phase_steps={tuple(config.curriculum.phase_steps)} must list {k - 1} phase "
        f"lengths (num_blocks - 1 = {k - 1}); the last phase, all blocks visible, runs to the end.")
  if config.curriculum.pacing in COMPETENCE_PACINGS:
    positive(config.curriculum.competence_steps, "curriculum.competence_steps")
    if not 0.0 < float(config.curriculum.competence_init) <= 1.0:
      raise UserError(f"config.curriculum.competence_init={config.curriculum.competence_init} must be in (0, 1].")


def dropout_rate(value, field: str) -> None:
  if not 0.0 <= float(value) < 1.0:
    raise UserError(f"config.{field}={value!r} is a dropout rate and must be in [0, 1); 0 turns it off.")


def validate_transformer(tower, field: str) -> None:
  """A transformer tower's sizes: positive, the width split evenly over the heads, dropout a rate."""
  for name in ("width", "depth", "num_heads", "mlp_dim"):
    if tower.get(name) is not None:
      positive(tower[name], f"{field}.{name}")
  width, heads = tower.get("width"), tower.get("num_heads")
  if width is not None and heads is not None and int(width) % int(heads):
    divisors = [h for h in range(1, int(width) + 1) if int(width) % h == 0 and h <= 16]
    raise UserError(f"config.{field}.num_heads={heads} does not divide config.{field}.width={width}; each head "
                    f"gets width/num_heads features. Use one of {divisors}, or change the width.")
  if tower.get("dropout") is not None:
    dropout_rate(tower["dropout"], f"{field}.dropout")


def patch_size_divides(patch_size: int, image_size: int, field: str = "model.image.patch_size") -> None:
  """The ViT's patches must tile the image exactly (a VALID convolution would drop the last pixels)."""
  if int(image_size) % int(patch_size):
    fits = [p for p in range(2, int(image_size) + 1) if int(image_size) % p == 0 and p <= 32]
    raise UserError(f"config.{field}={patch_size} does not divide the {image_size}-pixel input images (the "
                    f"last {int(image_size) % int(patch_size)} pixels would be dropped); use one of {fits}, or "
                    "set config.data.image_size to a multiple of it.")


def validate_common(config) -> None:
  """The fields every task reads: schedule, batch sizes, the curriculum and the augmentation."""
  for field in ("num_steps", "batch_size", "eval_batch_size", "log_every_steps", "checkpoint_every_steps",
                "keep_checkpoints"):
    positive(field_value(config, field), field)
  if int(config.data.shuffle_buffer) <= 0:
    raise UserError(f"config.data.shuffle_buffer={config.data.shuffle_buffer} must be a positive number of "
                    "examples (1 keeps the stored order; the demo uses 2048).")
  validate_curriculum(config)
  validate_augment(config)
