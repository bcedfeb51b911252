"""Step time with the curriculum on vs off, measured in one run: the cost of pacing.

  python benchmarks/curriculum_step_time.py [--config=configs/ablation.py] [--rounds=6] [--steps=40]

Two trainers of the same config in one process: "off" (pacing none, uniform
batches) and "on" (root pacing, the host sampler drawing each batch from the
visible blocks and the device mask). They take turns, `steps` train steps each per
round, so machine drift hits both alike. A step's time is host batch + device step
to completion, what the train loop pays. Prints the median ms/step of each and the
ratio on / off (the goal is <= 1.03).
"""

import argparse
import statistics
import time

import jax

from cmccl_jax import parallel
from cmccl_jax.scoring.score_shards import prepare_data
from cmccl_jax.tasks.dual_encoder.task import DualEncoderTask


def _trainer(config):
  prepare_data(config)
  exp = DualEncoderTask(config)
  local_bs = parallel.local_batch_size(int(config.batch_size), exp.mesh)
  batches = exp.train_batches(local_bs)
  step_fn = exp.train_step()
  state = exp.init_state()
  state, _ = step_fn(state, parallel.global_batch(exp.mesh, next(batches)))  # compile
  jax.block_until_ready(state)
  return {"exp": exp, "batches": batches, "step": step_fn, "state": state}


def _run(trainer, steps: int) -> list[float]:
  times = []
  for _ in range(steps):
    t0 = time.perf_counter()
    batch = parallel.global_batch(trainer["exp"].mesh, next(trainer["batches"]))
    trainer["state"], metrics = trainer["step"](trainer["state"], batch)
    jax.block_until_ready(metrics)
    times.append(1000 * (time.perf_counter() - t0))
  return times


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--config", default="configs/ablation.py", help="a config file with get_config()")
  parser.add_argument("--rounds", type=int, default=6)
  parser.add_argument("--steps", type=int, default=40, help="steps per trainer per round")
  parser.add_argument("--host_sampler", type=int, default=1,
                      help="1: 'on' also samples batches by block on the host; 0: the device mask alone")
  args = parser.parse_args()
  import importlib.util
  import tensorflow as tf
  tf.config.set_visible_devices([], "GPU")
  spec = importlib.util.spec_from_file_location("bench_config", args.config)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  base = module.get_config()
  trainers = {}
  on = dict(pacing="root", order="easy_first", host_sampler=bool(args.host_sampler))
  for name, fields in (("off", dict(pacing="none")), ("on", on)):
    config = base.copy_and_resolve_references()
    config.curriculum.update(fields)
    trainers[name] = _trainer(config)
  times = {name: [] for name in trainers}
  for r in range(args.rounds):
    for name in (("off", "on") if r % 2 == 0 else ("on", "off")):
      times[name].extend(_run(trainers[name], args.steps))
  medians = {name: statistics.median(t) for name, t in times.items()}
  print(f"{args.rounds} rounds x {args.steps} steps each, batch {base.batch_size}, config {args.config}, "
        f"host sampler {'on' if args.host_sampler else 'off'}")
  for name in ("off", "on"):
    print(f"  curriculum {name:3s}: median {medians[name]:.1f} ms/step")
  print(f"ratio on / off: {medians['on'] / medians['off']:.3f} (goal <= 1.03)")


if __name__ == "__main__":
  main()
