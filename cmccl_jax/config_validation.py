"""Checks a resolved config before anything expensive runs, with messages that say the fix."""

import os

from cmccl_jax.curriculum.pacing import COMPETENCE_PACINGS, LEARNED, ORDERS, PACINGS, PHASE_PACINGS
from cmccl_jax.train import staging

LOSS_KINDS = ("softmax", "sigmoid")
MODEL_TYPES = ("dual_encoder", "xmcgan")


def _choice(value, field: str, choices) -> None:
  if value not in choices:
    raise ValueError(f"config.{field}={value!r} is not one of {', '.join(map(repr, choices))}; "
                     f"set --config.{field}=<one of them>.")


def _positive(value, field: str) -> None:
  if int(value) <= 0:
    raise ValueError(f"config.{field}={value!r} must be a positive integer.")


def _probability(value, field: str) -> None:
  if not 0.0 <= float(value) <= 1.0:
    raise ValueError(f"config.{field}={value!r} is a probability and must be in [0, 1].")


def _ordered_range(value, field: str, low: float, high: float | None = None) -> None:
  """A (min, max) pair with low < min <= max (<= high)."""
  ok = isinstance(value, (tuple, list)) and len(value) == 2
  ok = ok and low < float(value[0]) <= float(value[1]) and (high is None or float(value[1]) <= high)
  if not ok:
    bound = f"{low} < min <= max" + (f" <= {high}" if high is not None else "")
    raise ValueError(f"config.{field}={value!r} must be a (min, max) pair with {bound}, "
                     f"e.g. --config.{field}='(0.5, 1.0)'.")


def validate_augment(config) -> None:
  """`config.augment` and `config.data.image_size`: ranges, probabilities, the synonym table's file."""
  size = config.data.get("image_size")
  if size is not None and int(size) <= 0:
    raise ValueError(f"config.data.image_size={size!r} must be a positive integer, or None for the dataset's "
                     "stored size.")
  image, text = config.augment.image, config.augment.text
  _ordered_range(image.crop_scale, "augment.image.crop_scale", 0.0, 1.0)
  _ordered_range(image.crop_ratio, "augment.image.crop_ratio", 0.0)
  _ordered_range(image.blur_sigma, "augment.image.blur_sigma", 0.0)
  if not 0.0 <= float(image.color_jitter) <= 2.5:
    raise ValueError(f"config.augment.image.color_jitter={image.color_jitter!r} must be in [0, 2.5] (0 = off; "
                     "the hue shift 0.2*strength must stay <= 0.5); SimCLR uses 1.0.")
  for field in ("color_jitter_prob", "blur_prob"):
    _probability(image[field], f"augment.image.{field}")
  for field in ("word_dropout", "word_reorder", "synonym_prob"):
    _probability(text[field], f"augment.text.{field}")
  if float(text.synonym_prob) > 0:
    if not text.synonyms:
      raise ValueError(
          f"config.augment.text.synonym_prob={text.synonym_prob} needs a synonym table but "
          "config.augment.text.synonyms is empty; set --config.augment.text.synonyms=default (derived from "
          "all-MiniLM-L6-v2 embeddings, cached) or the path of a word<TAB>syn1,syn2 file.")
    path = os.path.expanduser(text.synonyms)
    if text.synonyms != "default" and not os.path.isfile(path):
      raise FileNotFoundError(
          f"config.augment.text.synonyms={text.synonyms!r}: no such file ({os.path.abspath(path)}). Make one "
          f"with `python -m preprocess.synonyms --out={text.synonyms}` (neighbours in all-MiniLM-L6-v2's "
          "embeddings), use --config.augment.text.synonyms=default, or write word<TAB>syn1,syn2 lines.")


def validate_gan(config) -> None:
  """`config.gan` of an XMC-GAN experiment: the stage-1 experiment exists, counts and rates are sane."""
  gan = config.gan
  if not gan.stage1 or not os.path.isfile(os.path.join(os.path.expanduser(gan.stage1), "config.json")):
    raise FileNotFoundError(
        f"config.gan.stage1={gan.stage1!r} is not a trained dual-encoder experiment (no config.json there). "
        "Train stage 1 first, e.g. `bash train.sh demo`, and set --config.gan.stage1=exp/demo.")
  if config.curriculum.scorer == LEARNED:
    raise ValueError(f"config.curriculum.scorer={LEARNED!r} needs the dual encoder's difficulty head; an XMC-GAN "
                     "experiment paces by an offline scorer, e.g. --config.curriculum.scorer=ground_truth.")
  for field in ("z_dim", "d_steps", "eval.num_images", "eval.candidates"):
    value = gan
    for part in field.split("."):
      value = value[part]
    _positive(value, f"gan.{field}")
  if not 0.0 <= float(gan.ema_decay) < 1.0:
    raise ValueError(f"config.gan.ema_decay={gan.ema_decay} must be in [0, 1); XMC-GAN uses 0.999.")
  if float(gan.loss.temperature) <= 0:
    raise ValueError(f"config.gan.loss.temperature={gan.loss.temperature} must be positive; XMC-GAN uses 0.1.")


def validate(config) -> None:
  _choice(config.model_type, "model_type", MODEL_TYPES)
  if config.model_type == "xmcgan":
    validate_gan(config)
  _choice(config.loss.kind, "loss.kind", LOSS_KINDS)
  _choice(config.curriculum.pacing, "curriculum.pacing", PACINGS)
  _choice(config.curriculum.order, "curriculum.order", ORDERS)
  if config.curriculum.scorer == LEARNED and int(config.curriculum.difficulty_head.get("hidden", 0)) <= 0:
    raise ValueError(f"config.curriculum.scorer={LEARNED!r} paces by the difficulty head, which "
                     "config.curriculum.difficulty_head.hidden=0 turns off; set it > 0 (e.g. 64).")
  validate_augment(config)
  for field in ("num_steps", "batch_size", "eval_batch_size", "log_every_steps", "checkpoint_every_steps",
                "keep_checkpoints", "curriculum.num_blocks"):
    value = config
    for part in field.split("."):
      value = value[part]
    _positive(value, field)
  for tower in staging.TOWERS:
    staging.tower_train_from(config.staging, tower)
  k = int(config.curriculum.num_blocks)
  if config.curriculum.pacing in PHASE_PACINGS and len(config.curriculum.phase_steps) != k - 1:
    raise ValueError(
        f"config.curriculum.phase_steps={tuple(config.curriculum.phase_steps)} must list {k - 1} phase "
        f"lengths (num_blocks - 1 = {k - 1}); the last phase, all blocks visible, runs to the end.")
  if config.curriculum.pacing in COMPETENCE_PACINGS:
    _positive(config.curriculum.competence_steps, "curriculum.competence_steps")
    if not 0.0 < float(config.curriculum.competence_init) <= 1.0:
      raise ValueError(f"config.curriculum.competence_init={config.curriculum.competence_init} must be in (0, 1].")
