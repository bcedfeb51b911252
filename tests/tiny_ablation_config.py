"""`--config=tests/tiny_ablation_config.py:DATA_DIR`: the tiny config with a small ablation grid."""

from configs import ablation
from tests import tiny


def get_config(data_dir: str):
  c = tiny.tiny_config(data_dir)
  c.eval_every_steps = 6
  c.eval_batch_size = 8
  c.ablation = ablation.settings()
  c.ablation.update(dict(run=("baseline", "anti", "kd_intra_inter"), seeds=(0, 1), corrupt_fractions=(0.0, 0.25),
                         robustness_top=1, target_fraction=0.5))
  return c
