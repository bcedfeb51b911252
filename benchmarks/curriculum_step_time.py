"""Step time with a curriculum on vs off, measured in one run: the cost of pacing, or of I2MCL.

  python benchmarks/curriculum_step_time.py [--config=configs/ablation.py] [--rounds=6] [--steps=40]
  python benchmarks/curriculum_step_time.py --compare=i2mcl --teacher=exp/ablation/teacher
  python benchmarks/curriculum_step_time.py --compare=chunked [--chunk=32]
  XLA_FLAGS=--xla_force_host_platform_device_count=8 python benchmarks/curriculum_step_time.py --compare=ring

Trainers of the same config in one process take turns, `steps` train steps each per
round, so machine drift hits all alike. A step's time is host batch + device step
to completion, what the train loop pays. Prints the median ms/step of each and its
ratio to "off".
  --compare=pacing: "off" (pacing none, uniform batches) and "on" (root pacing, the
    host sampler drawing each batch from the visible blocks and the device mask); the
    goal is on / off <= 1.03.
  --compare=i2mcl: "off" and I2MCL with the towers of `teacher` as both teachers:
    "kd", "kd+intra" (self-paced weights), "full" (kd + intra + MGDA routing) with
    precomputed features, and "full online" (the teachers run in the step); the goal
    is full / off <= 1.10.
  --compare=chunked: the dense loss ("off") and the chunked one (loss.chunk_size =
    `chunk`); the goal is chunked / off <= 1.15.
  --compare=ring: the dense sigmoid loss ("off") and SigLIP's ring (loss.ring, whole
    local blocks), on every device there is (the ring needs more than one); the goal
    is ring / off <= 1.15.
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
  parser.add_argument("--compare", choices=("pacing", "i2mcl", "chunked", "ring"), default="pacing")
  parser.add_argument("--chunk", type=int, default=32, help="--compare=chunked: loss.chunk_size")
  parser.add_argument("--teacher", default="", help="--compare=i2mcl: exp/NAME of a dual encoder of this config")
  args = parser.parse_args()
  if args.compare == "i2mcl" and not args.teacher:
    parser.error("--compare=i2mcl needs --teacher=exp/NAME (e.g. exp/ablation/teacher, which bash ablate.sh trains)")
  import importlib.util
  import tensorflow as tf
  tf.config.set_visible_devices([], "GPU")
  spec = importlib.util.spec_from_file_location("bench_config", args.config)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  base = module.get_config()
  if args.compare == "pacing":
    contenders = {"off": dict(pacing="none"),
                  "on": dict(pacing="root", order="easy_first", host_sampler=bool(args.host_sampler))}
    goal = ("on", 1.03)
  elif args.compare == "chunked":
    contenders = {"off": dict(pacing="none"), "chunked": dict(pacing="none", loss=dict(chunk_size=args.chunk))}
    goal = ("chunked", 1.15)
  elif args.compare == "ring":
    if jax.device_count() < 2:
      parser.error("--compare=ring passes blocks between devices: run it with several (on CPU, "
                   "XLA_FLAGS=--xla_force_host_platform_device_count=8)")
    contenders = {"off": dict(pacing="none", loss=dict(kind="sigmoid")),
                  "ring": dict(pacing="none", loss=dict(kind="sigmoid", ring=True))}
    goal = ("ring", 1.15)
  else:
    kd = dict(distill=True, image_teacher=args.teacher, text_teacher=args.teacher)
    contenders = {"off": dict(pacing="none"),
                  "kd": dict(pacing="none", dynamic=kd),
                  "kd+intra": dict(pacing="none", dynamic=dict(kd, intra="spl_linear")),
                  "full": dict(pacing="none", dynamic=dict(kd, intra="spl_linear", inter=True)),
                  "full online": dict(pacing="none", dynamic=dict(kd, intra="spl_linear", inter=True,
                                                                  teacher_features="online"))}
    goal = ("full", 1.10)
  trainers = {}
  for name, fields in contenders.items():
    config = base.copy_and_resolve_references()
    dynamic = fields.pop("dynamic", None)
    config.loss.update(fields.pop("loss", {}))
    config.curriculum.update(fields)
    if dynamic:
      config.curriculum.dynamic.update(dynamic)
    trainers[name] = _trainer(config)
  times = {name: [] for name in trainers}
  names = list(trainers)
  for r in range(args.rounds):
    for name in names[r % len(names):] + names[:r % len(names)]:  # each round starts with the next one
      times[name].extend(_run(trainers[name], args.steps))
  medians = {name: statistics.median(t) for name, t in times.items()}
  print(f"{args.rounds} rounds x {args.steps} steps each, batch {base.batch_size}, config {args.config}, "
        f"host sampler {'on' if args.host_sampler else 'off'}, {jax.device_count()} {jax.devices()[0].platform} "
        "device(s)")
  for name in names:
    print(f"  {name:12s}: median {medians[name]:.1f} ms/step, {medians[name] / medians['off']:.3f} x off")
  print(f"ratio {goal[0]} / off: {medians[goal[0]] / medians['off']:.3f} (goal <= {goal[1]:.2f})")


if __name__ == "__main__":
  main()
