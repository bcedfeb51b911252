"""A curriculum over negative hardness: HN-NCE/HCL's β and the positive margin as functions of the step.

Easy negatives first: at step 0 the loss uses `hardness.beta_start` (0: every negative
weighs the same) and `hardness.margin_start`, and it reaches config.loss.beta and
config.loss.margin at `hardness.steps`, along the shape of one of the project's competence
functions (curriculum/pacing.py): value(t) = start + (end − start) · (c(t) − c0) / (1 − c0),
c0 = `hardness.init`. `hardness.pacing="none"` holds the end values from step 0.
With `loss.margin_by_difficulty`, example i's margin is m(t) · (1 − b_i / (K − 1)), b_i its
difficulty block (0 easiest): the easiest are asked for the whole gap, the hardest (often
the mislabelled) for none.

Plain jnp of the step, evaluated inside the jitted step like the pacing mask.

Config (config.loss):
  kind:                 softmax | sigmoid | max_violation (VSE++; `hinge`, VSE++'s 0.2)
  hard_negatives:       none | hn_nce (alpha = hn_alpha, beta) | hcl (tau_plus, beta; softmax only)
  beta, margin:         the end values of the schedule
  margin_by_difficulty: scale each example's margin by its block, as above
  hardness:             pacing (none | linear | root | geometric), steps, init, beta_start, margin_start
"""

import dataclasses

import jax.numpy as jnp

from cmccl_jax import losses
from cmccl_jax.curriculum import pacing
from cmccl_jax.errors import UserError

SCHEDULES = ("none",) + tuple(pacing.COMPETENCES)


@dataclasses.dataclass(frozen=True)
class Hardness:
  kind: str = "softmax"
  hard_negatives: str = "none"
  alpha: float = 1.0
  beta: float = 0.0
  tau_plus: float = 0.1
  hinge: float = 0.2
  margin: float = 0.0
  margin_by_difficulty: bool = False
  schedule: str = "none"
  steps: int = 0
  init: float = 0.1
  beta_start: float = 0.0
  margin_start: float = 0.0

  @classmethod
  def from_config(cls, loss, num_steps: int) -> "Hardness":
    """From config.loss (fields it lacks keep these defaults: configs from before them); UserError on bad values."""
    schedule = loss.get("hardness", {})
    h = cls(kind=str(loss.get("kind", "softmax")), hard_negatives=str(loss.get("hard_negatives", "none")),
            alpha=float(loss.get("hn_alpha", 1.0)), beta=float(loss.get("beta", 0.0)),
            tau_plus=float(loss.get("tau_plus", 0.1)), hinge=float(loss.get("hinge", 0.2)),
            margin=float(loss.get("margin", 0.0)), margin_by_difficulty=bool(loss.get("margin_by_difficulty", False)),
            schedule=str(schedule.get("pacing", "none")), steps=int(schedule.get("steps", 0) or num_steps),
            init=float(schedule.get("init", 0.1)), beta_start=float(schedule.get("beta_start", 0.0)),
            margin_start=float(schedule.get("margin_start", 0.0)))
    h.check()
    return h

  def check(self) -> None:
    if self.kind not in losses.KINDS:
      raise UserError(f"config.loss.kind={self.kind!r} is not one of {losses.KINDS}.")
    if self.hard_negatives not in losses.HARD_NEGATIVES:
      raise UserError(f"config.loss.hard_negatives={self.hard_negatives!r} is not one of {losses.HARD_NEGATIVES}.")
    if self.hard_negatives == "hcl" and self.kind != "softmax":
      raise UserError(f"config.loss.hard_negatives='hcl' is a softmax loss; set config.loss.kind='softmax' "
                      f"(it is {self.kind!r}) or use hard_negatives='hn_nce'.")
    if self.hard_negatives != "none" and self.kind == "max_violation":
      raise UserError("config.loss.kind='max_violation' already takes each anchor's hardest negative; set "
                      "config.loss.hard_negatives='none'.")
    if self.schedule not in SCHEDULES:
      raise UserError(f"config.loss.hardness.pacing={self.schedule!r} is not one of {SCHEDULES}.")
    if not 0.0 < self.init < 1.0 and self.schedule != "none":
      raise UserError(f"config.loss.hardness.init={self.init} must be in (0, 1) (the competence at step 0).")
    if not 0.0 <= self.tau_plus < 1.0:
      raise UserError(f"config.loss.tau_plus={self.tau_plus} must be in [0, 1) (HCL's class prior; 0.1).")
    if self.alpha < 0:
      raise UserError(f"config.loss.hn_alpha={self.alpha} must be >= 0 (HN-NCE's positive weight; 1 = InfoNCE).")

  @property
  def on(self) -> bool:
    return self.hard_negatives != "none" or self.margin != 0.0 or self.margin_start != 0.0

  def progress(self, step) -> jnp.ndarray:
    """0 at step 0 → 1 at `steps`, along the competence shape; 1 throughout without a schedule."""
    if self.schedule == "none":
      return jnp.ones((), jnp.float32)
    c = pacing.COMPETENCES[self.schedule](step, self.steps, self.init)
    return (c - self.init) / (1.0 - self.init)

  def beta_at(self, step):
    return self.beta_start + (self.beta - self.beta_start) * self.progress(step)

  def margin_at(self, step):
    return self.margin_start + (self.margin - self.margin_start) * self.progress(step)

  def negatives(self, step) -> losses.HardNegatives:
    return losses.HardNegatives(self.hard_negatives, alpha=self.alpha, beta=self.beta_at(step),
                                tau_plus=self.tau_plus)

  def margins(self, step, block, num_blocks: int):
    """Each example's margin at `step`: m(t), or m(t) · (1 − block / (K − 1)) by difficulty."""
    m = self.margin_at(step)
    if not self.margin_by_difficulty:
      return m
    return m * (1.0 - jnp.asarray(block, jnp.float32) / max(num_blocks - 1, 1))
