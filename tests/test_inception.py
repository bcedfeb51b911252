"""The FID InceptionV3: architecture (shapes, parameter count, pool branches), resize, and the torch-free weight import.

No real weights are needed: torch.save files are written here opcode by opcode (zip and
legacy formats), from random tensors in torch's layout, and read back with the loader.
Layouts are checked against numpy re-implementations of torch's conv, BatchNorm and Linear.
"""

import collections
import pickle
import struct
import zipfile

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from cmccl_jax.models import inception
from cmccl_jax.models.inception import BasicConv2d, InceptionA, InceptionC, InceptionE, InceptionV3
from cmccl_jax.errors import UserError

_STORAGE_TYPES = {np.dtype(np.float32): "FloatStorage", np.dtype(np.int64): "LongStorage"}
_LEAF = {"kernel": "weight", "scale": "weight", "bias": "bias", "mean": "running_mean", "var": "running_var"}


# ---------------------------------------------------------------------------- torch.save files, by hand

def _str(s: str) -> bytes:
  b = s.encode()
  return pickle.BINUNICODE + struct.pack("<I", len(b)) + b


def _int(i: int) -> bytes:
  return pickle.BININT + struct.pack("<i", i)


def _tuple(items) -> bytes:
  return pickle.MARK + b"".join(items) + pickle.TUPLE


def _global(module: str, name: str) -> bytes:
  return pickle.GLOBAL + f"{module}\n{name}\n".encode()


_ORDERED_DICT = _global("collections", "OrderedDict") + pickle.EMPTY_TUPLE + pickle.REDUCE


def _data_pkl(tensors: dict, legacy: bool) -> bytes:
  """torch.save's pickle of an OrderedDict; tensors: name -> (key, storage type, numel, offset, size, stride)."""
  items = []
  for name, (key, storage_type, numel, offset, size, stride) in tensors.items():
    pid = [_str("storage"), _global("torch", storage_type), _str(key), _str("cpu"), _int(numel)]
    storage = _tuple(pid + [pickle.NONE] if legacy else pid) + pickle.BINPERSID  # legacy adds view_metadata
    args = [storage, _int(offset), _tuple(map(_int, size)), _tuple(map(_int, stride)), pickle.NEWFALSE, _ORDERED_DICT]
    items.append(_str(name) + _global("torch._utils", "_rebuild_tensor_v2") + _tuple(args) + pickle.REDUCE)
  # state_dict() also carries a `_metadata` attribute, restored by BUILD.
  metadata = pickle.EMPTY_DICT + _str("_metadata") + _ORDERED_DICT + pickle.SETITEM + pickle.BUILD
  return (pickle.PROTO + b"\x02" + _ORDERED_DICT + pickle.MARK + b"".join(items) + pickle.SETITEMS + metadata
          + pickle.STOP)


def _write(path, pkl: bytes, storages: dict, legacy: bool):
  if legacy:
    with open(path, "wb") as f:
      for header in (0x1950a86a20f9469cfc6c, 1001, {"protocol_version": 1001, "little_endian": True}):
        f.write(pickle.dumps(header, protocol=2))
      f.write(pkl)
      f.write(pickle.dumps(list(storages), protocol=2))
      for array in storages.values():
        f.write(struct.pack("<q", array.size) + array.tobytes())
  else:
    with zipfile.ZipFile(path, "w") as archive:
      archive.writestr("archive/data.pkl", pkl)
      archive.writestr("archive/byteorder", "little")
      archive.writestr("archive/version", "3\n")
      for key, array in storages.items():
        archive.writestr(f"archive/data/{key}", array.tobytes())
  return path


def _write_state_dict(path, state: dict, legacy: bool = False):
  """torch.save(state) for a dict of C-contiguous float32/int64 arrays, one storage each."""
  tensors, storages = {}, {}
  for key, (name, array) in enumerate(state.items()):
    stride = tuple(s // array.itemsize for s in array.strides)
    tensors[name] = (str(key), _STORAGE_TYPES[array.dtype], array.size, 0, array.shape, stride)
    storages[str(key)] = array.ravel()
  return _write(path, _data_pkl(tensors, legacy), storages, legacy)


# ---------------------------------------------------------------------------- torch's layers in numpy

def _torch_basic_conv(x_nchw, state, prefix, stride, padding):
  """torch's BasicConv2d: cross-correlation with an OIHW weight, BatchNorm2d(eps=1e-3) in eval mode, ReLU."""
  w = state[f"{prefix}.conv.weight"].astype(np.float64)
  ph, pw = padding
  x = np.pad(x_nchw, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
  _, _, kh, kw = w.shape
  oh, ow = (x.shape[2] - kh) // stride + 1, (x.shape[3] - kw) // stride + 1
  out = np.zeros((x.shape[0], w.shape[0], oh, ow))
  for i in range(kh):
    for j in range(kw):
      patch = x[:, :, i:i + stride * (oh - 1) + 1:stride, j:j + stride * (ow - 1) + 1:stride]
      out += np.einsum("nchw,oc->nohw", patch, w[:, :, i, j])
  bn = {k: state[f"{prefix}.bn.{k}"][:, None, None] for k in ("weight", "bias", "running_mean", "running_var")}
  out = (out - bn["running_mean"]) / np.sqrt(bn["running_var"] + 1e-3) * bn["weight"] + bn["bias"]
  return np.maximum(out, 0.0)


def _torch_resize_matrix(n_in: int, n_out: int) -> np.ndarray:
  """F.interpolate(bilinear, align_corners=False) along one axis as an [n_out, n_in] matrix."""
  m = np.zeros((n_out, n_in))
  for i in range(n_out):
    src = max((i + 0.5) * n_in / n_out - 0.5, 0.0)
    i0 = int(np.floor(src))
    i1, frac = min(i0 + 1, n_in - 1), src - i0
    m[i, i0] += 1.0 - frac
    m[i, i1] += frac
  return m


# ---------------------------------------------------------------------------- architecture

@pytest.fixture(scope="module")
def shapes():
  return inception.inception_variable_shapes()


def test_parameter_count_and_layer_shapes(shapes):
  params = traverse_util.flatten_dict(shapes["params"])
  stats = traverse_util.flatten_dict(shapes["batch_stats"])
  # torchvision's inception_v3 (27,161,264 with the aux head and 1000 classes) minus AuxLogits
  # (3,326,696) plus 8 more classes (8 × 2049): conv kernels + BN scale/bias + fc.
  assert sum(int(np.prod(s.shape)) for s in params.values()) == 23_850_960
  # Running mean and var of the 94 BasicConv2d's 17,216 channels.
  assert sum(int(np.prod(s.shape)) for s in stats.values()) == 2 * 17_216
  assert sum(1 for p in params if p[-2] == "conv") == 94
  assert params[("Conv2d_1a_3x3", "conv", "kernel")].shape == (3, 3, 3, 32)
  assert params[("Mixed_6b", "branch7x7_2", "conv", "kernel")].shape == (1, 7, 128, 128)
  assert params[("Mixed_7c", "branch3x3dbl_3b", "conv", "kernel")].shape == (3, 1, 384, 384)
  assert params[("Mixed_7c", "branch_pool", "conv", "kernel")].shape == (1, 1, 2048, 192)
  assert params[("fc", "kernel")].shape == (2048, 1008)
  assert stats[("Mixed_5b", "branch_pool", "bn", "var")].shape == (32,)


def test_block_output_shapes(shapes):
  def apply(variables, images):
    return InceptionV3().apply(variables, images, capture_intermediates=True, mutable=["intermediates"])

  out, state = jax.eval_shape(apply, shapes, jax.ShapeDtypeStruct((2, 75, 75, 3), jnp.float32))
  assert out["pool"].shape == (2, 2048) and out["logits"].shape == (2, 1008)
  want = {"Conv2d_4a_3x3": (71, 71, 192), "Mixed_5b": (35, 35, 256), "Mixed_5d": (35, 35, 288),
          "Mixed_6a": (17, 17, 768), "Mixed_6e": (17, 17, 768), "Mixed_7a": (8, 8, 1280), "Mixed_7c": (8, 8, 2048)}
  for name, shape in want.items():
    assert state["intermediates"][name]["__call__"][0].shape == (2, *shape), name


def test_inputs_are_checked():
  with pytest.raises(TypeError, match="x / 127.5 - 1"):
    jax.eval_shape(lambda x: InceptionV3().init(jax.random.key(0), x), jax.ShapeDtypeStruct((1, 9, 9, 3), jnp.uint8))
  with pytest.raises(ValueError, match=r"\[N, H, W, 3\]; got shape \(1, 9, 9, 1\)"):
    jax.eval_shape(lambda x: InceptionV3().init(jax.random.key(0), x), jax.ShapeDtypeStruct((1, 9, 9, 1), jnp.float32))


@pytest.mark.parametrize("height,width", [(7, 11), (400, 350)])
def test_resize_matches_torch_bilinear(height, width):
  images = np.random.default_rng(0).uniform(-1, 1, size=(1, height, width, 3)).astype(np.float32)
  got = np.asarray(jax.jit(inception.resize_for_inception)(images))
  rows, cols = _torch_resize_matrix(height, 299), _torch_resize_matrix(width, 299)
  want = np.einsum("ih,nhwc,jw->nijc", rows, images.astype(np.float64), cols, optimize=True)
  # Both libraries place samples in float32: at 400 pixels that is ~3e-5 of a pixel.
  np.testing.assert_allclose(got, want, atol=1e-4)


def _pool_branch(block, x, width):
  """The block's pool branch with every conv kernel zero but branch_pool's, which sums the input channels.

  The batch norms are the identity but for their eps, which is undone here.
  """
  def value(path, spec):
    names = [k.key for k in path]
    if names[-1] == "kernel":
      return np.full(spec.shape, 1.0 if names[1] == "branch_pool" else 0.0, np.float32)
    return np.full(spec.shape, 1.0 if names[-1] in ("scale", "var") else 0.0, np.float32)

  variables = jax.tree_util.tree_map_with_path(value, jax.eval_shape(block.init, jax.random.key(0), x))
  return np.asarray(jax.jit(block.apply)(variables, x))[..., -width:] * np.sqrt(1.0 + 1e-3)


@pytest.mark.parametrize("block,width", [(InceptionA(8), 8), (InceptionC(8), 192), (InceptionE("avg"), 192)])
def test_average_pools_ignore_the_padding(block, width):
  # Ones in: with TF's pooling every window averages to 1, corners included (counting
  # the padding would give 4/9 there). Two channels of ones, summed by branch_pool: 2.
  out = _pool_branch(block, jnp.ones((1, 5, 5, 2)), width)
  np.testing.assert_allclose(out, 2.0, rtol=1e-6)


@pytest.mark.parametrize("pool,neighbour", [("avg", 3.0 / 9.0), ("max", 3.0)])
def test_mixed_7c_pools_by_max(pool, neighbour):
  x = jnp.zeros((1, 5, 5, 2)).at[0, 2, 2, 0].set(3.0)
  out = _pool_branch(InceptionE(pool), x, 192)
  np.testing.assert_allclose(out[0, 1, 1], neighbour, rtol=1e-6)
  np.testing.assert_allclose(out[0, 0, 0], 0.0, atol=1e-7)


def test_only_mixed_7c_pools_by_max(shapes):
  pools = {}

  def record(f, args, kwargs, context):
    if isinstance(context.module, InceptionE):
      pools[context.module.name] = context.module.pool
    return f(*args, **kwargs)

  with nn.intercept_methods(record):
    jax.eval_shape(InceptionV3().apply, shapes, jax.ShapeDtypeStruct((1, 75, 75, 3), jnp.float32))
  assert pools == {"Mixed_7b": "avg", "Mixed_7c": "max"}


# ---------------------------------------------------------------------------- torch files

@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_load_torch_file_rebuilds_strided_tensors(tmp_path, legacy):
  storage = np.arange(12, dtype=np.float32)
  tensors = {"transposed": ("s", "FloatStorage", 12, 0, (3, 2), (1, 3)),
             "offset": ("s", "FloatStorage", 12, 6, (2, 3), (3, 1)),
             "count": ("n", "LongStorage", 1, 0, (), ())}
  path = _write(tmp_path / "small.pth", _data_pkl(tensors, legacy), {"s": storage, "n": np.array([7], np.int64)},
                legacy)
  got = inception.load_torch_file(path)
  assert isinstance(got, collections.OrderedDict) and list(got) == ["transposed", "offset", "count"]
  np.testing.assert_array_equal(got["transposed"], storage[:6].reshape(2, 3).T)
  np.testing.assert_array_equal(got["offset"], storage[6:].reshape(2, 3))
  assert got["count"].dtype == np.int64 and got["count"].shape == () and got["count"] == 7


def test_load_torch_file_refuses_a_tensor_past_its_storage(tmp_path):
  tensors = {"w": ("0", "FloatStorage", 4, 2, (3,), (1,))}
  path = _write(tmp_path / "bad.pth", _data_pkl(tensors, False), {"0": np.zeros(4, np.float32)}, False)
  with pytest.raises(ValueError, match=r"reaches element 4 of a storage of 4"):
    inception.load_torch_file(path)


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_load_torch_file_runs_no_code(tmp_path, legacy):
  marker = tmp_path / "ran"
  pkl = pickle.PROTO + b"\x02" + _global("os", "system") + _tuple([_str(f"touch {marker}")]) + pickle.REDUCE
  path = _write(tmp_path / "evil.pth", pkl + pickle.STOP, {}, legacy)
  with pytest.raises(pickle.UnpicklingError, match=r"import os\.system; .* refused and nothing in it was run"):
    inception.load_torch_file(path)
  assert not marker.exists()


def test_load_torch_file_rejects_other_files(tmp_path):
  path = tmp_path / "notes.pth"
  path.write_bytes(b"not a checkpoint")
  with pytest.raises(ValueError, match="neither a zip archive nor a legacy torch.save file"):
    inception.load_torch_file(path)


# ---------------------------------------------------------------------------- pytorch-fid weights

def _torch_shape(flax_shape):
  return (flax_shape[3], flax_shape[2], flax_shape[0], flax_shape[1]) if len(flax_shape) == 4 else flax_shape[::-1]


@pytest.fixture(scope="module")
def pt_inception(shapes, tmp_path_factory):
  """A pytorch-fid-style state dict of random tensors, written as a zip torch.save file."""
  rng = np.random.default_rng(0)
  state = collections.OrderedDict()
  for (_, *modules, leaf), spec in traverse_util.flatten_dict(shapes).items():
    name, shape = ".".join(modules + [_LEAF[leaf]]), _torch_shape(spec.shape)
    if name.endswith("conv.weight"):  # He-scaled, so activations keep their size through 94 layers
      value = rng.standard_normal(shape, np.float32) * np.sqrt(2.0 / np.prod(shape[1:]))
    elif name.endswith(("bn.weight", "running_var")):
      value = rng.uniform(0.5, 1.5, shape)
    else:
      value = rng.standard_normal(shape, np.float32) * (0.01 if name == "fc.weight" else 0.1)
    state[name] = np.asarray(value, np.float32)
    if name.endswith("bn.running_var"):
      state[name.replace("running_var", "num_batches_tracked")] = np.array(1000, np.int64)
  assert len(state) == 94 * 6 + 2  # conv weight, 4 BN tensors and num_batches_tracked per BasicConv2d; fc
  path = _write_state_dict(tmp_path_factory.mktemp("weights") / inception.PT_INCEPTION_FILE, state)
  return state, inception.load_inception(path)


def test_loaded_variables_are_the_written_tensors(pt_inception, shapes):
  state, variables = pt_inception
  assert jax.tree.structure(variables) == jax.tree.structure(shapes)
  flat = traverse_util.flatten_dict(variables)
  np.testing.assert_array_equal(flat[("params", "Mixed_6e", "branch7x7dbl_3", "bn", "scale")],
                                state["Mixed_6e.branch7x7dbl_3.bn.weight"])
  np.testing.assert_array_equal(flat[("batch_stats", "Mixed_7b", "branch3x3_2a", "bn", "var")],
                                state["Mixed_7b.branch3x3_2a.bn.running_var"])
  np.testing.assert_array_equal(flat[("params", "fc", "kernel")], state["fc.weight"].T)
  expected = traverse_util.flatten_dict(shapes)
  for path, value in flat.items():
    assert value.dtype == np.float32 and value.shape == expected[path].shape, path


@pytest.mark.parametrize("module,stride,padding,size", [
    (("Conv2d_1a_3x3",), 2, (0, 0), 9),
    (("Mixed_6b", "branch7x7_2"), 1, (0, 3), 6),
    (("Mixed_7c", "branch3x3dbl_3b"), 1, (1, 0), 4),
])
def test_loaded_convs_compute_what_torch_computes(pt_inception, module, stride, padding, size):
  state, variables = pt_inception
  prefix = ".".join(module)
  weight = state[f"{prefix}.conv.weight"]
  x = np.random.default_rng(1).normal(size=(2, weight.shape[1], size, size + 1)).astype(np.float32)
  want = _torch_basic_conv(x.astype(np.float64), state, prefix, stride, padding)
  layer = BasicConv2d(weight.shape[0], weight.shape[2:], strides=stride, padding=padding)
  sub = {c: variables[c] for c in variables}
  for name in module:
    sub = {c: sub[c][name] for c in sub}
  got = layer.apply(sub, x.transpose(0, 2, 3, 1))
  np.testing.assert_allclose(np.asarray(got).transpose(0, 3, 1, 2), want, rtol=1e-4, atol=1e-4)


def test_loaded_network_matches_the_written_one(pt_inception):
  state, loaded = pt_inception
  # The written tensors in Flax's layout, converted here independently of the loader.
  written = {"params": {}, "batch_stats": {}}
  for name, value in state.items():
    *modules, leaf = name.split(".")
    if leaf == "num_batches_tracked":
      continue
    collection = "batch_stats" if leaf.startswith("running_") else "params"
    flax_leaf = {"running_mean": "mean", "running_var": "var", "bias": "bias"}.get(
        leaf, "scale" if modules[-1] == "bn" else "kernel")
    value = value.transpose(2, 3, 1, 0) if value.ndim == 4 else (value.T if value.ndim == 2 else value)
    written[collection][(*modules, flax_leaf)] = value
  written = {c: traverse_util.unflatten_dict(v) for c, v in written.items()}
  images = np.random.default_rng(2).uniform(-1, 1, size=(1, 75, 75, 3)).astype(np.float32)
  apply = jax.jit(InceptionV3().apply)
  got, want = apply(loaded, images), apply(written, images)
  np.testing.assert_array_equal(got["pool"], want["pool"])
  np.testing.assert_array_equal(got["logits"], want["logits"])
  pool = np.asarray(got["pool"], np.float64)
  assert got["pool"].shape == (1, 2048) and pool.min() >= 0.0 and pool.max() > 0.0
  # torch's Linear: logits = pool W^T + b with W of shape [1008, 2048].
  np.testing.assert_allclose(got["logits"], pool @ state["fc.weight"].T + state["fc.bias"], rtol=1e-4, atol=1e-5)


def test_load_pt_inception_names_the_tensors_that_do_not_fit(pt_inception, tmp_path, monkeypatch):
  state, _ = pt_inception
  bad = collections.OrderedDict(state)
  del bad["fc.bias"]
  bad["fc.weight"] = np.zeros((1000, 2048), np.float32)
  bad["AuxLogits.fc.weight"] = np.zeros((1000, 768), np.float32)
  monkeypatch.setattr(inception, "load_torch_file", lambda path: bad)
  path = tmp_path / "torchvision.pth"
  path.write_bytes(b"")
  with pytest.raises(ValueError) as error:
    inception.load_pt_inception(path)
  message = str(error.value)
  assert "missing: fc.bias" in message
  assert "fc.weight float32[1000, 2048] (needs float[1008, 2048])" in message
  assert "unexpected: AuxLogits.fc.weight" in message
  assert inception.PT_INCEPTION_FILE in message


def test_load_inception_errors(tmp_path):
  with pytest.raises(UserError, match=rf"{inception.PT_INCEPTION_FILE}.*Nothing is downloaded"):
    inception.load_inception(tmp_path / "missing.pth")
  graph = tmp_path / "classify_image_graph_def.pb"
  graph.write_bytes(b"")
  with pytest.raises(ValueError, match="TensorFlow graph"):
    inception.load_inception(graph)
  other = tmp_path / "weights.npz"
  other.write_bytes(b"")
  with pytest.raises(ValueError, match="suffix '.npz'"):
    inception.load_inception(other)
