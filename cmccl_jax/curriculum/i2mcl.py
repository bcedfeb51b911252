"""I2MCL (Zhou et al., ACM MM 2023) for any number of modalities, inside the one jitted step.

Three parts, each switchable (config.curriculum.dynamic):

- **distill** (KD): every modality m also regresses its teacher's feature t_i,m,
  d_i,m = ‖P_m(z_i,m) − t_i,m‖² (summed over features), with P_m a linear projection
  when the widths differ (the identity otherwise);
- **intra**: one self-paced threshold per loss (the task, each distillation) turns
  per-example losses into weights (`self_paced.py`: self-paced linear by default,
  SuperLoss an option);
- **inter**: per step, α_m from the task and distillation gradients with respect
  to each modality's representation (`mgda.py`); the modality with the largest α
  learns from the task and every other one from its teacher, by stop-gradient
  routing on the representations. The alignment head (logit scale, bias) always
  learns from the task; a projection P_m always learns its distillation.

`I2MCL.objective` takes the representations and two loss functions of them, so
the encoders run forward once and backward once: α needs only gradients with
respect to the representations (the loss heads, a second cheap pass), and the
routing is a `where` between a representation and its stop-gradient.

Thresholds: the task's updates every step; a modality's distillation threshold
only on steps where that modality learns from its teacher (with inter off: every
step). The weights of a step use the threshold after this step's update (I2MCL
eq. 8 before eq. 12). The running state — thresholds, their update counts, how
often each modality learned from the task — is a pytree in the train state.

Pure maths on arrays: it imports nothing above models/ and losses.py.
"""

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp

from cmccl_jax.curriculum import mgda
from cmccl_jax.curriculum.self_paced import WEIGHTINGS, SelfPaced
from cmccl_jax.errors import UserError

TASK = "task"


def distill_name(modality: str) -> str:
  return f"distill/{modality}"


@dataclasses.dataclass(frozen=True)
class I2MCL:
  """config.curriculum.dynamic made concrete for a model's modalities (in their tie-break order)."""

  modalities: tuple[str, ...] = ("image", "text")
  distill: bool = False
  inter: bool = False
  distill_weight: float = 1.0
  intra: SelfPaced = SelfPaced("none")

  @classmethod
  def from_config(cls, dynamic, modalities: tuple[str, ...]) -> "I2MCL":
    """From config.curriculum.dynamic (None or missing: off); raises UserError on a bad value."""
    if dynamic is None:
      return cls(modalities=tuple(modalities))
    d = dict(dynamic)
    intra = str(d.get("intra", "none"))
    if intra not in WEIGHTINGS:
      raise UserError(f"config.curriculum.dynamic.intra={intra!r} is not one of {', '.join(WEIGHTINGS)}.")
    distill, inter = bool(d.get("distill", False)), bool(d.get("inter", False))
    if inter and not distill:
      raise UserError("config.curriculum.dynamic.inter=True routes modalities between the task and their "
                      "teachers, which needs config.curriculum.dynamic.distill=True.")
    momentum = float(d.get("momentum", 0.9))
    if not 0.0 <= momentum < 1.0:
      raise UserError(f"config.curriculum.dynamic.momentum={momentum} must be in [0, 1) (I2MCL uses 0.9).")
    for field, default in (("spl_scale", 2.0), ("superloss_beta", 1.0), ("distill_weight", 1.0)):
      if float(d.get(field, default)) <= 0:
        raise UserError(f"config.curriculum.dynamic.{field}={d.get(field)} must be > 0 (default {default}).")
    return cls(modalities=tuple(modalities), distill=distill, inter=inter,
               distill_weight=float(d.get("distill_weight", 1.0)),
               intra=SelfPaced(intra, momentum, float(d.get("spl_scale", 2.0)),
                               float(d.get("superloss_beta", 1.0))))

  @property
  def on(self) -> bool:
    return self.distill or self.intra.weighting != "none"

  @property
  def loss_names(self) -> tuple[str, ...]:
    return (TASK,) + (tuple(distill_name(m) for m in self.modalities) if self.distill else ())

  def describe(self) -> str:
    if not self.on:
      return "off"
    parts = ["kd"] if self.distill else []
    if self.intra.weighting != "none":
      parts.append(f"intra ({self.intra.weighting})")
    if self.inter:
      parts.append("inter (MGDA routing)")
    return " + ".join(parts)

  def init_state(self) -> dict:
    """The running state in the train state; {} when off, so static runs keep their checkpoints' layout."""
    if not self.on:
      return {}
    return {"thresholds": {name: SelfPaced.init() for name in self.loss_names},
            "task_steps": jnp.zeros((len(self.modalities),), jnp.int32),
            "steps": jnp.zeros((), jnp.int32)}

  # ------------------------------------------------------------------ the objective

  def _weighted(self, per_example, valid, pacing, threshold, active=True):
    """(mean of the weighted objective over visible examples, updated threshold, weights)."""
    threshold = self.intra.update(threshold, per_example, valid, active)
    tau = threshold["tau"]
    weights = self.intra.weights(per_example, tau) if self.intra.weighting != "none" else jnp.ones_like(per_example)
    objective = self.intra.objective(per_example, tau, weights) * pacing
    loss = jnp.sum(jnp.where(valid, objective, 0.0)) / jnp.maximum(jnp.sum(valid), 1)
    return loss, threshold, jnp.where(valid, weights, 0.0)

  def _route(self, state, z, task_fn, distill_fn, valid, pacing):
    """(α [M], index of the modality that learns from the task), from gradients at the representations."""
    frozen = jax.lax.stop_gradient(z)
    thresholds = jax.lax.stop_gradient(state["thresholds"])

    def task_loss(zz):
      return self._weighted(task_fn(zz)[0], valid, pacing, thresholds[TASK])[0]

    g_task = jax.grad(task_loss)(frozen)
    alphas = []
    for m in self.modalities:
      def distill_loss(zm, m=m):
        return self.distill_weight * self._weighted(distill_fn(m, zm), valid, pacing,
                                                    thresholds[distill_name(m)])[0]
      alphas.append(mgda.min_norm_alpha(g_task[m], jax.grad(distill_loss)(frozen[m])))
    alphas = jax.lax.stop_gradient(jnp.stack(alphas))
    return alphas, mgda.task_learner(alphas)

  def objective(self, state: dict, z: dict, task_fn: Callable, distill_fn: Callable, valid, pacing):
    """(loss, new state, aux) of a batch.

    z: {modality: [B, d]} representations (differentiable in the encoders' params).
    task_fn(z) -> (per-example task loss [B], parts): the task head's loss of every
      example (0 where not valid), its parameters closed over.
    distill_fn(modality, z_m) -> per-example distillation loss [B].
    valid [B]: examples that count; pacing [B]: the static curriculum's loss weights.
    """
    modalities = self.modalities
    if self.inter:
      alphas, learner = self._route(state, z, task_fn, distill_fn, valid, pacing)
      from_task = {m: learner == i for i, m in enumerate(modalities)}
    else:
      alphas, learner = None, None
      from_task = {m: True for m in modalities}
    # Stop-gradient routing: each representation passes gradient to its encoder from one of the two losses.
    z_task = {m: jnp.where(from_task[m], z[m], jax.lax.stop_gradient(z[m])) for m in modalities}
    per_task, parts = task_fn(z_task)
    thresholds = dict(state["thresholds"])
    task_loss, thresholds[TASK], task_weights = self._weighted(per_task, valid, pacing, thresholds[TASK])
    loss = task_loss
    aux = {"loss/task": task_loss, "weights/task": task_weights, "tau/task": thresholds[TASK]["tau"],
           "per_example/task": per_task, "task_parts": parts}
    if self.distill:
      for m in modalities:
        name = distill_name(m)
        from_teacher = jnp.logical_not(from_task[m]) if self.inter else True
        z_m = jnp.where(from_teacher, z[m], jax.lax.stop_gradient(z[m]))
        per = distill_fn(m, z_m)
        d_loss, thresholds[name], weights = self._weighted(per, valid, pacing, thresholds[name], from_teacher)
        loss = loss + self.distill_weight * d_loss
        aux.update({f"loss/{name}": d_loss, f"weights/{name}": weights, f"tau/{name}": thresholds[name]["tau"],
                    f"per_example/{name}": jnp.where(valid, per, 0.0)})
    new_state = {"thresholds": thresholds, "task_steps": state["task_steps"], "steps": state["steps"] + 1}
    if self.inter:
      new_state["task_steps"] = state["task_steps"] + jax.nn.one_hot(learner, len(modalities), dtype=jnp.int32)
      aux["alpha"] = alphas
      aux["task_learner"] = learner
    aux["task_share"] = new_state["task_steps"].astype(jnp.float32) / jnp.maximum(new_state["steps"], 1)
    return loss, new_state, aux
