"""The curriculum ablation's base: the demo model on synthetic shapes with 20% corrupted pairs.

`bash ablate.sh` trains this config once per (variant, seed) at equal steps; each
variant changes only `config.curriculum` (cmccl_jax/experiments/ablation.py).
Sized so 5 variants × 3 seeds finish in about 40 minutes on 2 CPU cores.
"""

from configs import default


def get_config():
  c = default.get_config()
  c.data.synthetic.corrupt_fraction = 0.2
  c.num_steps = 1000
  c.optim.warmup_steps = 50
  c.curriculum.scorer = "ground_truth"
  c.curriculum.competence_steps = 300
  c.curriculum.phase_steps = (100, 100, 100)
  c.eval_every_steps = 250
  c.checkpoint_every_steps = 1000
  c.keep_checkpoints = 1
  c.log_every_steps = 50
  return c
