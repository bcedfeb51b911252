"""XMC-GAN text-to-image on the synthetic shapes (32 px), conditioned by a stage-1 dual encoder.

  bash train.sh demo                                          # stage 1 (exp/demo)
  bash train.sh gan_demo --config=configs/xmcgan_synthetic.py  # stage 2: 27 min on 2 CPU cores (measured)
  bash test.sh gan_demo [--inception=pt_inception-2015-12-05-6726825d.pth]
  bash sample.sh gan_demo "a red circle above a blue square"

Stage 1's text tower encodes the captions for G and D; its image tower is the
frozen encoder E of the real–fake term and the feature space of the offline
Fréchet distance. The formulas and reference defaults: cmccl_jax/tasks/xmcgan/step.py and gan_block() below.
"""

import ml_collections

from configs import common


def gan_block(stage1: str = "exp/demo") -> ml_collections.ConfigDict:
  """config.gan with XMC-GAN's reference losses and optimizers; sizes for 32 px."""
  g = ml_collections.ConfigDict()
  g.stage1 = stage1                # dual-encoder experiment: text encoder, encoder E, tokenizer
  g.z_dim = 128
  g.generator = ml_collections.ConfigDict(dict(channels=32, cond_dim=128, attention_dim=64, rho0=15.0))
  g.discriminator = ml_collections.ConfigDict(dict(channels=32, contrastive_dim=128))
  g.loss = ml_collections.ConfigDict()
  g.loss.temperature = 0.1          # τ of image–sentence and real–fake NCE
  g.loss.rho1 = 5.0                 # region attention sharpness of the region–word term
  g.loss.rho2 = 5.0                 # word aggregation of the region–word term
  g.loss.word_scale = 50.0          # logits = word_scale · S
  g.loss.weights = ml_collections.ConfigDict(dict(sentence=1.0, word=1.0, image_d=1.0, image_e=1.0))
  g.optim = ml_collections.ConfigDict(dict(g_learning_rate=1e-4, d_learning_rate=4e-4, b1=0.5, b2=0.999))
  g.d_steps = 2                     # D updates per G update
  g.ema_decay = 0.999
  g.eval = ml_collections.ConfigDict()
  g.eval.num_images = 1000          # generated per evaluation, one per image's first caption
  g.eval.candidates = 100           # R-precision: true caption + 99 others
  g.eval.inception = ""             # FID Inception weights (pt_inception-2015-12-05-*.pth); "" = offline metrics only
  g.eval.stats_dir = ""             # real Inception statistics cache; "" = the dataset's data_dir
  return g


def get_config():
  c = common.base()
  c.model_type = "xmcgan"
  c.evals = common.evals("generation", "test")
  c.gan = gan_block()
  # Sized for a 2-core CPU (about 1 s per step, measured). The reference widths, batch
  # and d_steps = 2 are for accelerators: --config.gan.generator.channels=32 etc.
  c.gan.generator.channels = 16
  c.gan.discriminator.channels = 16
  c.gan.discriminator.contrastive_dim = 64  # the region–word term costs N²·L·R·dim
  c.gan.d_steps = 1
  c.gan.ema_decay = 0.995           # a short run: the average must follow G within a few hundred steps
  c.batch_size = 32
  c.num_steps = 1500
  c.curriculum.competence_steps = 300
  c.log_every_steps = 50
  c.checkpoint_every_steps = 250
  c.eval_every_steps = 250
  c.eval_batch_size = 200
  return c
