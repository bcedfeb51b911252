"""The config blocks every task shares: data, augmentation, curriculum, difficulty scoring, mesh, schedule.

A task's config file starts from `base()` and adds its own blocks (configs/default.py:
the dual encoder; configs/xmcgan_synthetic.py: XMC-GAN), so it carries only fields its
task reads.
"""

import ml_collections
from ml_collections import config_dict


def evals(kind: str, split: str = "test", **more: dict) -> ml_collections.ConfigDict:
  """config.evals: the main evaluator "eval" (`kind` on `split`) plus `more` {name: {kind, split, every_steps}}.

  every_steps 0 = config.eval_every_steps (and always the last step).
  """
  specs = {"eval": dict(kind=kind, split=split, every_steps=0)}
  specs.update({name: {"every_steps": 0, **spec} for name, spec in more.items()})
  return ml_collections.ConfigDict(specs)


def base() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0

  c.data = ml_collections.ConfigDict()
  c.data.name = "synthetic_shapes"
  c.data.data_dir = "data"          # TFDS data_dir; relative paths are from the repo root
  c.data.auto_prepare = True        # build a built-in dataset on first use
  c.data.train_split = "train"
  c.data.shuffle_buffer = 2048
  # Model input resolution: shorter side resized to it, then a centre crop. None
  # keeps the dataset's fixed stored size (synthetic_shapes: synthetic.image_size);
  # datasets of varying image size (COCO, folders) need a value, e.g. 224.
  c.data.image_size = config_dict.placeholder(int)
  # Builder parameters of synthetic_shapes (ignored by other datasets); configs/shapes_hard.py
  # is the harder variant (more objects, binding and relation captions, distractors).
  c.data.synthetic = ml_collections.ConfigDict(dict(
      image_size=32, num_train=8000, num_validation=500, num_test=1000,
      max_objects=4, num_captions=5, corrupt_fraction=0.0, seed=0,
      min_objects=1, caption_levels=("object", "sized_object", "pair", "relation", "scene"), distractors=False))
  # Builder parameters of coco_captions2014, read from a local COCO-2014 copy: root holds
  # train2014/, val2014/ and annotations/; karpathy_split is Karpathy's dataset_coco.json
  # ("" = train2014/val2014 as train/validation; relative paths are from root). Images
  # are stored with their shorter side image_size (0 = original). Its scorer is caption_length.
  c.data.coco = ml_collections.ConfigDict(dict(root="", karpathy_split="", image_size=256))
  # Builder parameters of image_text_folder: images under root plus captions.jsonl or
  # captions.tsv (captions_file "" = whichever is in root); images whose captions name no
  # split are held out by a stable hash of their path.
  c.data.folder = ml_collections.ConfigDict(dict(
      root="", captions_file="", image_size=256, validation_fraction=0.05, test_fraction=0.05))

  # Training-only augmentation (evaluation never augments), all off here: the
  # synthetic captions state spatial relations ("left of") and colours, so flips,
  # colour jitter, word swaps or synonyms (above↔below) would make captions false.
  # Natural-image sets usually want random_resized_crop=True (and flip=True if
  # captions avoid left/right). Randomness is stateless in (seed, example index),
  # so resumed runs see the same augmented stream. See cmccl_jax/data/augment.py.
  c.augment = ml_collections.ConfigDict()
  c.augment.image = ml_collections.ConfigDict(dict(
      random_resized_crop=False,    # Inception crop instead of resize + centre crop
      crop_scale=(0.5, 1.0),        # area fraction of the crop
      crop_ratio=(3 / 4, 4 / 3),    # aspect ratio (width / height) of the crop
      flip=False,                   # horizontal flip with probability 1/2
      color_jitter=0.0,             # SimCLR strength in [0, 2.5]; 0 = off (ImageNet: 1.0)
      color_jitter_prob=0.8,
      blur_prob=0.0,                # Gaussian blur probability; 0 = off (SimCLR: 0.5)
      blur_sigma=(0.1, 2.0)))       # sigma range in pixels
  c.augment.text = ml_collections.ConfigDict(dict(
      word_dropout=0.0,             # drop each word with this probability (never all of them)
      word_reorder=0.0,             # swap each pair of adjacent words with this probability
      synonym_prob=0.0,             # replace each word that has synonyms with this probability
      synonyms=""))                 # "default" (from MiniLM embeddings, cached) or a word<TAB>syn1,syn2 file

  c.curriculum = ml_collections.ConfigDict()
  c.curriculum.scorer = "ground_truth"   # the offline scorer whose quantile blocks pace, or "learned"
  c.curriculum.num_blocks = 4       # K quantile blocks of the training scores, computed at the run's start
  # Pacing (cmccl_jax/curriculum/pacing.py): none | phases (cumulative) | disjoint_phases |
  # linear | root | geometric (competence reaching all data at competence_steps).
  c.curriculum.pacing = "root"
  c.curriculum.phase_steps = (100, 100, 100)
  c.curriculum.competence_steps = 300
  c.curriculum.competence_init = 0.25
  c.curriculum.soft = False         # competence pacings: blocks fade in by the covered fraction
  c.curriculum.order = "easy_first"  # easy_first | hard_first (anti-curriculum) | random (control)
  c.curriculum.order_seed = 0
  # The host sampler draws each batch from the blocks visible at its step, so the
  # device mask (the same pacing function) drops (almost) nothing; without it the
  # pacing only masks, and up to 1 - c0 of every early batch is wasted.
  c.curriculum.host_sampler = True

  # Offline difficulty scorers (cmccl_jax/scoring/scorers.py): caption_length,
  # ground_truth (synthetic only), noun_count, knn_text, knn_image, misalignment,
  # distillation, combined. Each is computed once per image build, by `python -m
  # preprocess` or a run's first use, into its own id-keyed build beside the images
  # (cmccl_jax/data/difficulty.py); the settings that change a scorer's scores are
  # hashed into its build's name, so a changed teacher or k scores anew and no image
  # is re-encoded. A run reads these and config.curriculum.scorer.
  c.scoring = ml_collections.ConfigDict()
  # () = the dataset's default: synthetic_shapes caption_length, ground_truth, noun_count;
  # COCO and image folders caption_length, noun_count. On the command line:
  # --config.scoring.scorers=caption_length,noun_count,knn_text
  c.scoring.scorers = ()
  c.scoring.teacher = ""            # dual-encoder experiment dir (exp/NAME) for knn_image, misalignment,
                                    # distillation (and knn_text with text_teacher="teacher"); "" = none
  c.scoring.teacher_step = -1       # its checkpoint: -1 latest, 0 earliest, else that step (pin one
                                    # while the teacher still trains: a new latest means a new build)
  c.scoring.student = ""            # distillation's student experiment; "" = the teacher's
  c.scoring.student_step = 0        # -1 latest, 0 earliest (an early, weak student), else that step
  c.scoring.text_teacher = "minilm"  # knn_text's encoder: "minilm", a Hugging Face BERT folder, or "teacher"
  c.scoring.knn_k = 10              # neighbours averaged by knn_text / knn_image
  c.scoring.combined = ("caption_length", "noun_count")  # members of `combined` (rank average)
  c.scoring.distill_references = 1024  # training images distillation's distributions range over
  c.scoring.batch_size = 256        # examples per scoring batch (changes no score)

  c.mesh = ml_collections.ConfigDict(dict(data=-1))
  c.param_sharding = ()             # ((regex, partition spec tuple), ...); default replicated

  c.log_every_steps = 50
  c.checkpoint_every_steps = 250
  c.keep_checkpoints = 10
  c.eval_every_steps = 500
  c.eval_batch_size = 256
  return c
