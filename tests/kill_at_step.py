"""Runs cmccl_jax.main but SIGKILLs its own process right after step N's update.

Fault injection for the resume test: the kill lands between a step and the save
call, with an asynchronous checkpoint write possibly still in flight.
  python -m tests.kill_at_step N <the usual cmccl_jax.main flags>
"""

import os
import signal
import sys

from cmccl_jax import main as entry
from cmccl_jax import checkpoints

kill_step = int(sys.argv.pop(1))
_save = checkpoints.save


def save_then_maybe_die(manager, step, *args, **kwargs):
  if step == kill_step:
    os.kill(os.getpid(), signal.SIGKILL)
  return _save(manager, step, *args, **kwargs)


checkpoints.save = save_then_maybe_die
entry.cli.run(entry.main)
