"""Device mesh, sharding rules and global arrays built from per-process batches.

The same code runs on 1 CPU, 8 simulated CPU devices, one GPU and a pod: the mesh
comes from the config, parameters are placed by (regex over parameter path ->
PartitionSpec) rules, and batches are sharded over the mesh's `data` axis.
"""

import re
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from cmccl_jax.errors import UserError

DATA_AXIS = "data"


def make_mesh(mesh_shape: dict[str, int] | Any, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """Builds a mesh with named axes; one axis may be -1 (all remaining devices).

  `jax.sharding.Mesh` (not `jax.make_mesh`) keeps the classic automatic sharding
  behaviour: new jax versions default `make_mesh` to Explicit axes.
  """
  devices = list(jax.devices() if devices is None else devices)
  names = tuple(mesh_shape.keys())
  sizes = [int(v) for v in mesh_shape.values()]
  if DATA_AXIS not in names:
    raise UserError(f"config.mesh must have a '{DATA_AXIS}' axis, got {dict(mesh_shape)}.")
  if sizes.count(-1) > 1:
    raise UserError(f"config.mesh may have at most one axis of size -1, got {dict(mesh_shape)}.")
  known = int(np.prod([s for s in sizes if s != -1]))
  if -1 in sizes:
    if len(devices) % known:
      raise UserError(f"config.mesh {dict(mesh_shape)} does not divide the {len(devices)} devices.")
    sizes[sizes.index(-1)] = len(devices) // known
  if int(np.prod(sizes)) != len(devices):
    raise UserError(
        f"config.mesh {dict(mesh_shape)} needs {int(np.prod(sizes))} devices but {len(devices)} are "
        "available; set one axis to -1 to use all of them.")
  return Mesh(np.asarray(devices).reshape(sizes), names)


def data_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) dimension split over the data axis, the rest replicated."""
  return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def _path_str(path) -> str:
  return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def tree_shardings(mesh: Mesh, tree: Any, rules: Sequence[tuple[str, Sequence[Any]]]) -> Any:
  """Sharding for every leaf of `tree` from the first rule whose regex matches its path.

  Rules are `(regex, partition_spec_tuple)` pairs, e.g. `(".*kernel", (None, "model"))`;
  a leaf no rule matches, or a scalar, is replicated.
  """
  compiled = [(re.compile(pattern), tuple(spec)) for pattern, spec in rules]

  def one(path, leaf):
    name = _path_str(path)
    for pattern, spec in compiled:
      if pattern.fullmatch(name) and len(spec) <= np.ndim(leaf):
        return NamedSharding(mesh, P(*spec))
    return replicated(mesh)

  return jax.tree_util.tree_map_with_path(one, tree)


def global_batch(mesh: Mesh, local_batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
  """Turns this process's slice of the batch into global arrays sharded over `data`."""
  sharding = data_sharding(mesh)
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local_batch)


def pad_rows(x: np.ndarray, rows: int) -> np.ndarray:
  """Pads the leading dimension with zeros up to `rows`."""
  if x.shape[0] == rows:
    return x
  return np.concatenate([x, np.zeros((rows - x.shape[0],) + x.shape[1:], x.dtype)], axis=0)


def to_host(x) -> np.ndarray:
  """A replicated (or fully addressable) global array as numpy, on every process."""
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    if not x.is_fully_replicated:
      raise ValueError(f"to_host needs a replicated array, got sharding {x.sharding}.")
    x = x.addressable_data(0)
  return np.asarray(x)


def batched_apply(fn, mesh: Mesh, batch_size: int, rows: Sequence[np.ndarray], *, args: Sequence[Any] = (),
                  field: str = "config.eval_batch_size"):
  """fn(*args, *row_batches) over `rows` in fixed global batches of `batch_size` (one compilation); the
  outputs as host numpy arrays of len(rows[0]) rows, on every process.

  `rows` are the same host arrays on every process (an evaluation split, captions to sample);
  each process feeds only its share of each batch, so this is safe on any number of processes.
  `fn` takes its row arguments sharded over `data` and returns replicated arrays.
  """
  local = local_batch_size(batch_size, mesh, field)
  n, p = rows[0].shape[0], jax.process_index()
  out = []
  for start in range(0, n, batch_size):
    batch = [pad_rows(np.asarray(r[start:start + batch_size]), batch_size)[p * local:(p + 1) * local] for r in rows]
    result = fn(*args, *global_batch(mesh, batch))
    out.append(jax.tree.map(lambda r: to_host(r)[:min(batch_size, n - start)], result))
  return jax.tree.map(lambda *xs: np.concatenate(xs), *out)


def local_batch_size(global_batch_size: int, mesh: Mesh, field: str = "config.batch_size") -> int:
  """Per-process batch size; the global batch must split evenly over data shards and processes."""
  data_size = mesh.shape[DATA_AXIS]
  if global_batch_size % data_size or global_batch_size % jax.process_count():
    raise UserError(
        f"{field}={global_batch_size} must be divisible by the data axis size {data_size} "
        f"and by the number of processes {jax.process_count()}; pick a multiple of {data_size}.")
  return global_batch_size // jax.process_count()
