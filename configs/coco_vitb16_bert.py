"""COCO-2014 captions: ViT-B/16 image tower + BERT-base text tower, at LiT/SigLIP's COCO scale.

  python -m preprocess --config=configs/coco_vitb16_bert.py --config.data.coco.root=/path/to/coco2014
  bash train.sh coco_b16 --config=configs/coco_vitb16_bert.py --config.data.coco.root=/path/to/coco2014

Batch, schedule and optimizer follow big_vision's LiT COCO config
(configs/proj/image_text/lit_coco.py): 224 px, 16 text tokens, batch 4096 with
the loss over the global batch, 5000 steps, Adam at lr 1e-3 with cosine decay
after max(3%, 100) warmup steps, weight decay 0.01, grad-norm clip 1, logit scale
initialised at 10, 768-d shared space, CLS pooling in the image tower, horizontal flips.

What differs, and why: no pretrained ViT-B/16 ships offline, so the image tower
trains from scratch (LiT locks a pretrained one: set --config.staging.image=lock
once you load one). The text tower is BERT-base-sized; by default it starts from
random weights with BERT-base-uncased's vocabulary (the vocabulary all-MiniLM-L6-v2
ships). Point it at a local Hugging Face checkpoint to start from pretrained BERT:
  --config.model.text.checkpoint=/path/to/bert-base-uncased --config.tokenizer.vocab=/path/to/bert-base-uncased
(a folder with config.json, model.safetensors and vocab.txt, e.g. written by
save_pretrained). Retrieval is evaluated on Karpathy's 5k test split, so the
config expects his dataset_coco.json; without it use
--config.data.coco.karpathy_split='' --config.evals.eval.split=validation.
"""

from configs import default


def get_config():
  c = default.get_config()
  c.data.name = "coco_captions2014"
  c.data.coco.root = "~/data/coco2014"
  c.data.coco.karpathy_split = "dataset_coco.json"  # relative to root
  c.data.coco.image_size = 256                      # stored shorter side
  c.data.image_size = 224                           # model input
  c.evals.eval.split = "test"
  c.data.shuffle_buffer = 50_000
  c.augment.image.update(random_resized_crop=True, crop_scale=(0.5, 1.0), flip=True)

  c.tokenizer.vocab = "minilm"                      # BERT-base-uncased's 30522 word pieces
  c.tokenizer.max_len = 16

  c.model.embed_dim = 768
  c.model.image = dict(patch_size=16, width=768, depth=12, num_heads=12, mlp_dim=3072, dropout=0.0,
                       pool="cls")
  c.model.text = dict(kind="bert", checkpoint="", hidden_size=768, num_layers=12, num_heads=12,
                      intermediate_size=3072, max_position_embeddings=512, dropout=0.1, pool="cls")

  c.loss.kind = "softmax"
  c.loss.scale_init = 10.0

  c.curriculum.scorer = "caption_length"            # scored on first use beside COCO's shards

  c.batch_size = 4096
  c.num_steps = 5000
  c.optim.learning_rate = 1e-3
  c.optim.warmup_steps = 150
  c.optim.weight_decay = 0.01
  c.optim.b2 = 0.999
  c.optim.grad_clip_norm = 1.0

  c.log_every_steps = 50
  c.checkpoint_every_steps = 1000
  c.eval_every_steps = 500
  c.eval_batch_size = 1024
  return c
