"""The dual encoder a config describes: its towers, heads and pretrained weights (config → models)."""

from typing import Any

from cmccl_jax.errors import UserError
from cmccl_jax.models import hf_import
from cmccl_jax.models.dual_encoder import TEXT_TOWERS, DualEncoder
from cmccl_jax.tasks.dual_encoder import staging

# Fields of config.model.text that describe where the tower comes from, not its module.
_TEXT_SOURCE_FIELDS = ("kind", "checkpoint")


def text_tower_fields(config, vocab_size: int) -> tuple[str, dict[str, Any], str | None]:
  """(kind, module fields, checkpoint folder or None) of config.model.text.

  A "bert" tower with a `checkpoint` ("minilm" or a Hugging Face folder) takes its
  architecture from the checkpoint's config.json; `pool` and `dropout`, when set
  in the config, override the checkpoint's. Without a checkpoint every field
  comes from the config and the tower starts from random weights.
  """
  text = dict(config.model.text)
  kind = text.get("kind", "transformer")
  if kind not in TEXT_TOWERS:
    raise UserError(f"config.model.text.kind={kind!r} is not one of {', '.join(map(repr, TEXT_TOWERS))}.")
  checkpoint = text.get("checkpoint") or None
  fields = {k: v for k, v in text.items() if k not in _TEXT_SOURCE_FIELDS}
  max_len = int(config.tokenizer.max_len)
  if kind == "transformer":
    if checkpoint:
      raise UserError(f"config.model.text.checkpoint={checkpoint!r} needs config.model.text.kind='bert'; "
                       "a 'transformer' tower always starts from scratch.")
    return kind, {**fields, "vocab_size": vocab_size, "max_len": max_len}, None
  fields = {k: v for k, v in fields.items() if v is not None}  # None: the checkpoint's or BertEncoder's default
  if checkpoint:
    folder = hf_import.resolve_checkpoint(checkpoint)
    fields = {**hf_import.bert_config_from_hf(folder), **fields}
  else:
    folder = None
    fields = {**fields, "vocab_size": vocab_size}
  if fields.get("vocab_size") != vocab_size:
    raise UserError(
        f"the text checkpoint {checkpoint!r} has a vocabulary of {fields.get('vocab_size')} tokens but the "
        f"tokenizer (config.tokenizer.vocab={config.tokenizer.vocab!r}) has {vocab_size}; set "
        f"--config.tokenizer.vocab to the checkpoint's vocab.txt (or 'minilm' for the default checkpoint).")
  max_positions = int(fields.get("max_position_embeddings", 512))
  if max_len > max_positions:
    raise UserError(f"config.tokenizer.max_len={max_len} exceeds the BERT tower's max_position_embeddings="
                     f"{max_positions}; lower --config.tokenizer.max_len.")
  return kind, fields, folder


def dual_encoder_from_config(config, vocab_size: int, distill_widths: tuple[tuple[str, int], ...] = ()) -> DualEncoder:
  """The DualEncoder a config describes; the text tower's vocabulary comes from the tokenizer,
  I2MCL's projections to the teachers' widths (`distill_widths`) from the run's teacher features."""
  text_kind, text, _ = text_tower_fields(config, vocab_size)
  return DualEncoder(image=dict(config.model.image), text=text, text_kind=text_kind,
                     embed_dim=int(config.model.embed_dim),
                     scale_init=float(config.loss.scale_init), max_scale=float(config.loss.max_scale),
                     bias_init=float(config.loss.bias_init),
                     lock_image=staging.locked(config.staging, "image"),
                     lock_text=staging.locked(config.staging, "text"),
                     difficulty_hidden=difficulty_head_config(config)[0], distill_widths=tuple(distill_widths))


def difficulty_head_config(config) -> tuple[int, float]:
  """(hidden width, loss weight) of the difficulty evaluator; (0, 0) when off."""
  head = config.curriculum.get("difficulty_head")
  if not head or int(head.get("hidden", 0)) <= 0:
    return 0, 0.0
  return int(head["hidden"]), float(head.get("weight", 1.0))


def pretrained_params(config, vocab_size: int) -> dict[str, Any]:
  """{submodule name: params} to load over the fresh init: the text checkpoint's weights, if any."""
  _, _, folder = text_tower_fields(config, vocab_size)
  return {"text_tower": hf_import.load_bert_params(folder)} if folder else {}
