"""The curriculum ablation: the demo model on the harder shapes testbed with 20% corrupted pairs, judged
semantically (configs/shapes_hard.py: room above the baseline, distractors as hard negatives).

  bash ablate.sh [NAME] [--variants=...] [--seeds=...] [--config.x=y ...]

Every (variant, seed) trains this config with the variant's overrides at equal
steps (cmccl_jax/experiments/ablation.py). The variant families are data here, so
a new curriculum (the dynamic ones, say) joins the table by adding an entry to
`settings().variants`: {name: {config block: {field: value}}}, merged into the config.
The I2MCL variants distil from a teacher run the ablation trains first
(`teacher`). The default grid is 10 variants × 5 seeds, plus the robustness sweep of
the baseline and the two best variants at corrupt fractions 0 and 0.4 (about 6 hours
on 2 CPU cores; finished runs keep a small record, so it runs in parts).
"""

import ml_collections

from configs import shapes_hard


def settings() -> ml_collections.ConfigDict:
  """config.ablation: the variants, seeds, metric and sweeps (also read by the tiny test config)."""
  def curriculum(**fields):
    return {"curriculum": fields}

  def loss(**fields):
    return {"loss": fields}

  def i2mcl(**fields):  # I2MCL with both towers of the teacher run as teachers, no static pacing
    return {"curriculum": {"pacing": "none", "dynamic": {
        "distill": True, "image_teacher": "{teacher}", "text_teacher": "{teacher}", **fields}}}

  return ml_collections.ConfigDict(dict(
      variants=dict(
          baseline=curriculum(pacing="none"),
          root=curriculum(pacing="root", order="easy_first"),
          linear=curriculum(pacing="linear", order="easy_first"),
          geometric=curriculum(pacing="geometric", order="easy_first"),
          soft_root=curriculum(pacing="root", order="easy_first", soft=True),
          phases=curriculum(pacing="phases", order="easy_first"),
          disjoint_phases=curriculum(pacing="disjoint_phases", order="easy_first"),
          anti=curriculum(pacing="root", order="hard_first"),
          random=curriculum(pacing="root", order="random"),
          kd=i2mcl(),
          kd_intra=i2mcl(intra="spl_linear"),
          kd_intra_inter=i2mcl(intra="spl_linear", inter=True),
          kd_superloss_inter=i2mcl(intra="superloss", inter=True),
          # Negatives (cmccl_jax/losses.py, curriculum/hardness.py, memory_queue.py), no static pacing:
          # HN-NCE's beta 0 -> 0.5 and a positive margin 0 -> 0.1 along root competence over 600 steps
          # (easy negatives first), and a queue of 8 past batches after 100 steps.
          hardness=loss(hard_negatives="hn_nce", beta=0.5, margin=0.1,
                        hardness={"pacing": "root", "steps": 600}),
          hn_nce=loss(hard_negatives="hn_nce", beta=0.5),
          queue=loss(queue={"size": 1024, "warmup_steps": 100}),
      ),
      run=("baseline", "root", "phases", "anti", "random", "kd", "kd_intra", "kd_intra_inter", "hardness",
           "queue"),
      # The run whose towers teach the I2MCL variants ("{teacher}" above): the baseline with another
      # seed, trained on the same (noisy) data at each corrupt fraction, so distillation brings no
      # knowledge the baseline could not have had (self-distillation, as a born-again network).
      teacher=dict(variant="baseline", seed=100),
      seeds=(0, 1, 2, 3, 4),
      # Selection, comparison and convergence are judged on this main-evaluator metric; the
      # validation evaluator's value of it picks each run's step and the variants to sweep.
      metric="semantic/t2i/R@1",
      # Convergence speed: steps (and train time) until a run reaches this fraction of the
      # baseline's mean final metric.
      target_fraction=0.9,
      # Robustness: the baseline and the `robustness_top` best variants (on validation) are
      # also trained at these corrupt fractions (the config's own is in the main grid).
      corrupt_fractions=(0.0, 0.2, 0.4),
      robustness_top=2,
  ))


def get_config():
  c = shapes_hard.get_config()
  c.data.synthetic.corrupt_fraction = 0.2
  c.num_steps = 1000
  c.optim.warmup_steps = 50
  c.curriculum.scorer = "ground_truth"
  c.curriculum.competence_steps = 300
  c.curriculum.phase_steps = (100, 100, 100)
  c.eval_every_steps = 200
  c.checkpoint_every_steps = 200  # a killed ablation loses at most 200 steps of one run
  c.keep_checkpoints = 1
  c.log_every_steps = 50
  c.ablation = settings()
  return c
