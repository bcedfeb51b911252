"""The curriculum of a run: one object that owns its blocks, its pacing and its online scorer.

Everything that decides which examples a step trains on reads this one object, so
the device mask, the host sampler and the dashboards can never disagree:

- `blocks(scores, ids)`: the K quantile blocks of the training split from the
  offline scores (`blocks.py`: ties split by rank, no block empty), computed when
  the run starts, and the other splits blocked by the training edges;
- `block_weights(step, xp)`: the pacing at a step, in `jnp` inside the jitted step
  or in `np` on the host (`pacing.py`);
- `example_weights(step, block)`: the device mask and loss weights of a batch;
- `batch_blocks(block, predicted)`: the batch's blocks, which for the online
  "learned" scorer are the difficulty head's ranking of the batch;
- `keep_table(sizes)`: the host sampler's chance to keep an example of each block
  at each step, from the same pacing.

Pure maths on arrays: it imports nothing above models/ and losses.py.
"""

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from cmccl_jax.curriculum import blocks as blocks_lib
from cmccl_jax.curriculum import difficulty_head, pacing
from cmccl_jax.errors import UserError

# The config.curriculum.scorer that paces by the learnable difficulty head's online blocks.
LEARNED = "learned"


@dataclasses.dataclass(frozen=True)
class Curriculum:
  """config.curriculum made concrete for a run of `num_steps` steps (field meanings: pacing.py)."""

  scorer: str
  num_blocks: int
  pacing: str = "none"
  phase_steps: tuple[int, ...] = ()
  competence_steps: int = 1
  competence_init: float = 1.0
  soft: bool = False
  order: str = "easy_first"
  order_seed: int = 0
  host_sampler: bool = False
  num_steps: int = 0

  @classmethod
  def from_config(cls, curriculum_config, num_steps: int) -> "Curriculum":
    c = curriculum_config
    return cls(scorer=str(c.scorer), num_blocks=int(c.num_blocks), pacing=str(c.pacing),
               phase_steps=tuple(int(s) for s in c.get("phase_steps", ())),
               competence_steps=int(c.get("competence_steps", 1)),
               competence_init=float(c.get("competence_init", 1.0)), soft=bool(c.get("soft", False)),
               order=str(c.get("order", "easy_first")), order_seed=int(c.get("order_seed", 0)),
               host_sampler=bool(c.get("host_sampler", False)), num_steps=int(num_steps))

  @property
  def learned(self) -> bool:
    """Paced by the difficulty head's online ranking of each batch, not by offline blocks."""
    return self.scorer == LEARNED

  @property
  def samples_on_host(self) -> bool:
    """The host sampler needs offline blocks and a pacing that hides some: not "none", not "learned"."""
    return self.host_sampler and self.pacing != "none" and not self.learned

  # ------------------------------------------------------------------ blocks

  def blocks(self, scores: dict[str, np.ndarray], ids: dict[str, np.ndarray]):
    """({split: int32 blocks}, edges [K-1]) from {split: offline scores} and {split: ids}; "train" decides."""
    if "train" not in scores or not len(scores["train"]):
      raise UserError("the curriculum's blocks come from the training split's scores, and it has none; "
                      "check config.data.train_split and the dataset's build.")
    return blocks_lib.split_blocks(scores, ids, self.num_blocks)

  def batch_blocks(self, block, predicted=None):
    """The blocks the step paces by: the batch's offline `block`, or the head's ranking of `predicted`."""
    if self.learned:
      return jax.lax.stop_gradient(difficulty_head.learned_blocks(predicted, self.num_blocks))
    return block

  # ------------------------------------------------------------------ pacing

  def block_weights(self, step, xp: Any = jnp):
    """float32 [K]: each block's weight at `step` (0 = hidden)."""
    return pacing.block_weights(step, self, xp)

  def example_weights(self, step, block):
    """(visible [B] bool, loss weights [B]) of the batch's blocks at `step`, on the device.

    With the host sampler the batch was already drawn in proportion to the block
    weights, so the weights only mask (weighting again would apply soft weights twice).
    """
    weights = self.block_weights(step)[jnp.clip(block, 0, self.num_blocks - 1)]
    visible = weights > 0
    if self.samples_on_host:
      weights = visible.astype(jnp.float32)
    return visible, weights

  def weight_table(self) -> np.ndarray:
    """float32 [num_steps + 1, K]: the block weights at every step 0..num_steps."""
    return np.stack([self.block_weights(s, np) for s in range(self.num_steps + 1)]).astype(np.float32)

  def keep_table(self, sizes) -> np.ndarray:
    """float32 [num_steps + 1, K]: the host sampler's chance to keep an example of block b at step t, w_b(t).

    `sizes`: examples per block in this process's slice. A step whose visible
    blocks are all empty there (possible only on tiny data or many hosts) keeps
    every example instead, so the stream never stalls; the device mask then drops
    them and `visible_fraction` shows it.
    """
    sizes = np.asarray(sizes, np.float64)
    if not np.any(sizes > 0):
      raise UserError("the training split has no examples in any difficulty block; check the dataset's build.")
    weights = self.weight_table()
    stalled = (weights * sizes[None, :]).sum(axis=1) <= 0
    return np.where(stalled[:, None], 1.0, weights).astype(np.float32)
