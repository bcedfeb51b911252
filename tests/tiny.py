"""The tiny config every end-to-end test uses: seconds per run on 2 CPU cores."""

from configs import default


def tiny_config(data_dir: str):
  c = default.get_config()
  c.data.data_dir = data_dir
  c.data.shuffle_buffer = 64
  c.data.synthetic.update(num_train=96, num_validation=16, num_test=24)
  c.tokenizer.max_len = 12
  c.model.embed_dim = 16
  c.model.image.update(patch_size=8, width=16, depth=1, num_heads=2, mlp_dim=32)
  c.model.text.update(width=16, depth=1, num_heads=2, mlp_dim=32)
  c.batch_size = 16
  c.num_steps = 12
  c.optim.warmup_steps = 2
  c.curriculum.pacing = "phases"
  c.curriculum.phase_steps = (3, 3, 3)
  c.log_every_steps = 4
  c.checkpoint_every_steps = 4
  c.eval_every_steps = 0
  c.eval_batch_size = 16
  return c
