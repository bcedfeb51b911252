"""The embedded default: a small dual encoder on the built-in synthetic shapes set.

Finishes on a 2-core laptop CPU in minutes (`bash train.sh demo`). Every field can
be overridden on the command line, e.g. `--config.num_steps=200`. The blocks every
task shares (data, augment, curriculum, scoring, mesh, schedule) are in configs/common.py.
"""

import ml_collections

from configs import common


def get_config() -> ml_collections.ConfigDict:
  c = common.base()
  c.model_type = "dual_encoder"
  # Retrieval on the test split at every eval_every_steps; add e.g. a validation
  # evaluator with --config.evals.val=... or in a config file (configs/ablation.py).
  c.evals = common.evals("retrieval", "test")

  c.tokenizer = ml_collections.ConfigDict()
  c.tokenizer.vocab = "synthetic"   # "synthetic" or a path to a BERT vocab.txt
  c.tokenizer.max_len = 24         # the longest synthetic caption is 22 word pieces
  c.tokenizer.lower_case = True

  c.model = ml_collections.ConfigDict()
  c.model.embed_dim = 128
  c.model.image = ml_collections.ConfigDict(dict(
      patch_size=8, width=128, depth=2, num_heads=4, mlp_dim=256, dropout=0.0, pool="gap"))
  # kind "transformer" (from scratch) or "bert" (checkpoint "minilm", a Hugging Face
  # folder, or "" for random init): see configs/minilm_synthetic.py.
  c.model.text = ml_collections.ConfigDict(dict(
      kind="transformer", checkpoint="", width=128, depth=2, num_heads=4, mlp_dim=256, dropout=0.0,
      pool="mean"))

  c.loss = ml_collections.ConfigDict()
  c.loss.kind = "softmax"           # "softmax" (CLIP), "sigmoid" (SigLIP) or "max_violation" (VSE++)
  c.loss.scale_init = 1 / 0.07      # CLIP; SigLIP uses 10
  c.loss.max_scale = 100.0
  c.loss.bias_init = -10.0          # sigmoid only
  # Hard negatives and margins (cmccl_jax/losses.py, curriculum/hardness.py), off here:
  # hard_negatives none | hn_nce (hn_alpha, beta; softmax or sigmoid) | hcl (tau_plus, beta; softmax);
  # margin: subtracted from the positive cosine (margin_by_difficulty: scaled down for harder blocks);
  # hinge: max_violation's margin. hardness: beta and margin grow from *_start to their values over
  # `steps` (0: num_steps) along a competence shape (none | linear | root | geometric, from `init`).
  c.loss.hard_negatives = "none"
  c.loss.hn_alpha = 1.0
  c.loss.beta = 0.0
  c.loss.tau_plus = 0.1
  c.loss.hinge = 0.2
  c.loss.margin = 0.0
  c.loss.margin_by_difficulty = False
  c.loss.hardness = ml_collections.ConfigDict(dict(
      pacing="none", steps=0, init=0.1, beta_start=0.0, margin_start=0.0))
  # > 0: the softmax/sigmoid loss in blocks of this many columns (cmccl_jax/chunked_losses.py):
  # memory per device O(local batch × chunk) instead of O(local × global batch); same value and
  # gradient. For pod-scale batches (e.g. 1024 at a 32k batch); 0: the dense logits.
  c.loss.chunk_size = 0
  # SigLIP's ring (kind "sigmoid"): the text shards travel around the data axis (ppermute) instead
  # of being gathered; blocks of local × local, or local × chunk_size when that is > 0 (it must
  # then divide the per-device batch).
  c.loss.ring = False
  # Memory-queue negatives (cmccl_jax/memory_queue.py): a ring of `size` past embeddings per modality
  # (a multiple of batch_size; 0: off) in the train state, extra negatives after `warmup_steps`.
  c.loss.queue = ml_collections.ConfigDict(dict(size=0, warmup_steps=0))

  # The learnable difficulty evaluator (cmccl_jax/curriculum/difficulty_head.py): an MLP
  # on the pair's stop-gradient embeddings regressing its loss; hidden=0 turns it off.
  c.curriculum.difficulty_head = ml_collections.ConfigDict(dict(hidden=64, weight=1.0))
  # The dynamic curriculum, I2MCL (cmccl_jax/curriculum/i2mcl.py), all off here:
  #   distill: each modality with a teacher also regresses its teacher's features (KD);
  #   intra: per-example weights per loss from a running threshold: none | spl_linear | spl_hard |
  #     superloss (SuperLoss has a pending patent, so it is an option, not the default; README);
  #   inter: MGDA routing, the modality with the largest alpha learns from the task, the others from
  #     their teachers (needs distill and two teachers).
  # Teachers: exp/NAME of a dual encoder trained here (its towers at teacher_step, -1 the latest) or, for
  # text, "minilm" / a Hugging Face BERT folder. teacher_features: "precomputed" into id-keyed shards
  # (of the un-augmented inputs), or "online": the frozen teacher embeds each step's augmented batch
  # (experiments trained here at the run's image size and tokenizer; about one more forward pass).
  c.curriculum.dynamic = ml_collections.ConfigDict(dict(
      distill=False, intra="none", inter=False, image_teacher="", text_teacher="", teacher_step=-1,
      distill_weight=1.0, momentum=0.9, spl_scale=2.0, superloss_beta=1.0, teacher_features="precomputed"))

  # Staged training per tower: "train" | "freeze" | "lock" (LiT); a "train" tower
  # stays frozen before <tower>_train_from_step.
  c.staging = ml_collections.ConfigDict(dict(
      image="train", image_train_from_step=0, text="train", text_train_from_step=0))

  c.batch_size = 128
  c.num_steps = 2000
  c.optim = ml_collections.ConfigDict()
  c.optim.learning_rate = 1e-3
  c.optim.warmup_steps = 100
  c.optim.end_lr_fraction = 0.01
  c.optim.weight_decay = 0.05
  c.optim.b1 = 0.9
  c.optim.b2 = 0.98
  c.optim.grad_clip_norm = 1.0
  return c
