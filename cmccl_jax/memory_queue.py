"""Memory-queue negatives: rings of past embeddings in the train state, extra negatives for the next steps.

As XBM (Wang et al. 2020) and ALBEF's queues (Li et al. 2021): after each step the
global batch's detached, unit-norm embeddings of both modalities are written into a
FIFO ring of `size` entries with their example ids; once the run is past
`warmup_steps` the written entries are extra negatives of every anchor in the
contrastive function (losses.QueueNegatives), except entries of the anchor's own
example (ALBEF would count them positive; here they are simply left out). A masked
example is written as unusable, so it never becomes a negative later either.

The ring lives in the train state (`TrainState.queue`: a, b [size, D], ids [size],
filled [size], ptr), so it is checkpointed and a resumed run continues with exactly
the ring it had; its arrays are sharded over the data axis like the batch
(`SHARDING_RULES`). `size` must be a multiple of the global batch (each step writes a
whole batch into consecutive slots). The entries come from the online model (XBM);
ALBEF's momentum encoder is not built yet.

Config (config.loss.queue): size (0: off), warmup_steps.
"""

import dataclasses

import jax
import jax.numpy as jnp

from cmccl_jax import losses
from cmccl_jax.errors import UserError

# The ring's arrays are sharded over the data axis on their first (entry) dimension.
SHARDING_RULES = ((r"queue/(a|b|ids|filled)", ("data",)),)


@dataclasses.dataclass(frozen=True)
class MemoryQueue:
  size: int = 0
  warmup_steps: int = 0

  @classmethod
  def from_config(cls, loss_config, batch_size: int) -> "MemoryQueue":
    queue = loss_config.get("queue", {})
    q = cls(size=int(queue.get("size", 0)), warmup_steps=int(queue.get("warmup_steps", 0)))
    if q.size < 0 or (q.size and q.size % int(batch_size)):
      raise UserError(f"config.loss.queue.size={q.size} must be 0 (off) or a multiple of config.batch_size="
                      f"{batch_size} (each step writes one batch), e.g. {4 * int(batch_size)}.")
    if q.warmup_steps < 0:
      raise UserError(f"config.loss.queue.warmup_steps={q.warmup_steps} must be >= 0.")
    return q

  @property
  def on(self) -> bool:
    return self.size > 0

  def init(self, dim: int) -> dict:
    """An empty ring ({} when off, so runs without a queue keep their checkpoints' layout)."""
    if not self.on:
      return {}
    return {"a": jnp.zeros((self.size, dim), jnp.float32), "b": jnp.zeros((self.size, dim), jnp.float32),
            "ids": jnp.full((self.size,), -1, jnp.int32), "filled": jnp.zeros((self.size,), bool),
            "ptr": jnp.zeros((), jnp.int32)}

  def negatives(self, ring: dict, step) -> losses.QueueNegatives:
    return losses.QueueNegatives(a=ring["a"], b=ring["b"], ids=ring["ids"],
                                 usable=ring["filled"] & (step >= self.warmup_steps))

  def push(self, ring: dict, a, b, ids, valid) -> dict:
    """The ring with this batch written at its pointer (oldest entries first out)."""
    n = a.shape[0]
    slots = (ring["ptr"] + jnp.arange(n)) % self.size
    detach = jax.lax.stop_gradient
    return {"a": ring["a"].at[slots].set(detach(a).astype(jnp.float32)),
            "b": ring["b"].at[slots].set(detach(b).astype(jnp.float32)),
            "ids": ring["ids"].at[slots].set(ids.astype(jnp.int32)),
            "filled": ring["filled"].at[slots].set(valid),
            "ptr": (ring["ptr"] + n) % self.size}
