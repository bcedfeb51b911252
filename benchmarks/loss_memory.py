"""Memory per device of the contrastive loss + gradient, dense vs chunked vs ring, on 8 (simulated) devices.

  python benchmarks/loss_memory.py [--batches=1024,4096,16384] [--dim=128] [--chunk=512]

Compiles loss and gradient for each global batch with the batch sharded over 8 CPU
devices and prints XLA's temp allocation per device (`memory_analysis()`): what the
[local × global] logits cost in the dense form, the [local × chunk] blocks in the
chunked one and the [local × local] blocks of sigmoid's ring (text shards passed
between devices instead of gathered). Compiling only, nothing runs, so it takes seconds even at 16k.
"""

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()

import argparse  # noqa: E402

import jax  # noqa: E402

from cmccl_jax import chunked_losses, parallel  # noqa: E402


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--batches", default="1024,4096,16384")
  parser.add_argument("--dim", type=int, default=128)
  parser.add_argument("--chunk", type=int, default=512)
  args = parser.parse_args()
  mesh = parallel.make_mesh({"data": 8}, jax.devices()[:8])
  print(f"{jax.device_count()} {jax.devices()[0].platform} devices, embedding width {args.dim}, "
        f"chunk {args.chunk}; temp MiB per device of loss + gradient")
  print("| kind | global batch | dense | chunked | dense / chunked | ring | ring, chunked | dense / ring, chunked |")
  print("|---|---|---|---|---|---|---|---|")
  for kind in ("softmax", "sigmoid"):
    for n in (int(b) for b in args.batches.split(",")):
      dense = chunked_losses.loss_memory(mesh, n, args.dim, 0, kind) / 2**20
      chunked = chunked_losses.loss_memory(mesh, n, args.dim, args.chunk, kind) / 2**20
      ring = "| – | – | – |"
      if kind == "sigmoid":
        whole = chunked_losses.loss_memory(mesh, n, args.dim, 0, kind, ring=True) / 2**20
        pieces = chunked_losses.loss_memory(mesh, n, args.dim, min(args.chunk, n // 8), kind, ring=True) / 2**20
        ring = f"| {whole:.1f} | {pieces:.1f} | {dense / pieces:.1f}x |"
      print(f"| {kind} | {n} | {dense:.1f} | {chunked:.1f} | {dense / chunked:.1f}x {ring}", flush=True)


if __name__ == "__main__":
  main()
