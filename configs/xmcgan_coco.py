"""XMC-GAN text-to-image on COCO-2014 at 128 px, conditioned by a stage-1 COCO dual encoder.

  bash train.sh coco_b16 --config=configs/coco_vitb16_bert.py --config.data.coco.root=/path/to/coco2014
  bash train.sh coco_gan --config=configs/xmcgan_coco.py --config.data.coco.root=/path/to/coco2014
  bash test.sh coco_gan --inception=/path/to/pt_inception-2015-12-05-6726825d.pth

As XMC-GAN's 128 px COCO setting: batch 56 (its reference ran 7 GPUs × 8), 2 D steps
per G step, Adam G 1e-4 / D 4e-4 with β = (0.5, 0.999), EMA 0.999, all loss weights
1, τ = 0.1. FID/IS follow the field's protocol: 30,000 images generated from
val2014 captions (one per image) against the real val2014 statistics, hence the
train2014 / val2014 split (no Karpathy file) here. Stage 1's text tower (BERT-base
sized; pretrained BERT via its config) encodes the captions, its ViT-B/16 is E.
"""

from configs import coco_vitb16_bert
from configs import common
from configs import xmcgan_synthetic


def get_config():
  stage1 = coco_vitb16_bert.get_config()
  c = common.base()
  c.data, c.augment, c.scoring = stage1.data, stage1.augment, stage1.scoring  # stage 1's COCO data
  c.curriculum.scorer = stage1.curriculum.scorer
  c.model_type = "xmcgan"
  c.evals = common.evals("generation", "validation")
  c.gan = xmcgan_synthetic.gan_block(stage1="exp/coco_b16")
  c.gan.generator.update(channels=64, cond_dim=256, attention_dim=256)
  c.gan.discriminator.update(channels=64, contrastive_dim=512)
  c.gan.eval.num_images = 30_000
  c.data.coco.karpathy_split = ""
  c.data.image_size = 128
  c.augment.image.update(random_resized_crop=False, flip=False)  # captions say left/right; G learns the data as is
  c.batch_size = 56
  c.num_steps = 500_000
  c.curriculum.pacing = "none"      # turn a curriculum on with e.g. --config.curriculum.pacing=root
  c.log_every_steps = 100
  c.checkpoint_every_steps = 10_000
  c.keep_checkpoints = 5
  c.eval_every_steps = 10_000
  c.eval_batch_size = 250
  return c
