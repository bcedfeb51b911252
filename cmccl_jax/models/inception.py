"""The FID Inception-v3 in Flax (TF's 2015-12-05 graph as ported by pytorch-fid), and its weight import.

FID and IS are comparable across papers only when computed with this exact network:
torchvision's Inception3 with 1008 classes and no aux head, patched as pytorch-fid
does (average pools that ignore the padding, a max pool in Mixed_7c's pool branch).
Module and parameter names follow torchvision, so pytorch-fid's state dict maps onto
the Flax tree by name. Its weight file, `pt_inception-2015-12-05-6726825d.pth`, is
read without torch: a restricted unpickler rebuilds tensors in dicts and refuses
anything else, so no code from the file runs. Nothing is downloaded.
"""

import collections
import dataclasses
import io
import os
import pickle
import struct
import zipfile

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from cmccl_jax.errors import UserError

PT_INCEPTION_FILE = "pt_inception-2015-12-05-6726825d.pth"
PT_INCEPTION_URL = f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{PT_INCEPTION_FILE}"
INPUT_SIZE = 299
NUM_CLASSES = 1008


def resize_for_inception(images):
  """Bilinear resize of [N, H, W, C] to 299×299, sampling input pixel (i + 1/2) H/299 - 1/2 for output pixel i.

  This is torch's F.interpolate(mode="bilinear", align_corners=False), which
  pytorch-fid uses: no antialiasing (a downscale reads the two nearest pixels), and
  samples beyond the first or last pixel centre take the border pixel.
  """
  n, _, _, c = images.shape
  return jax.image.resize(images, (n, INPUT_SIZE, INPUT_SIZE, c), "bilinear", antialias=False)


def _pair(value) -> tuple[int, int]:
  return (value, value) if isinstance(value, int) else tuple(value)


class BasicConv2d(nn.Module):
  """Conv without bias → BatchNorm (eps 1e-3, running statistics) → ReLU, torchvision's BasicConv2d."""
  features: int
  kernel_size: int | tuple[int, int]
  strides: int = 1
  padding: int | tuple[int, int] = 0  # torch's: rows and columns added on each side

  @nn.compact
  def __call__(self, x):
    ph, pw = _pair(self.padding)
    x = nn.Conv(self.features, _pair(self.kernel_size), strides=(self.strides,) * 2, padding=((ph, ph), (pw, pw)),
                use_bias=False, name="conv")(x)
    x = nn.BatchNorm(use_running_average=True, epsilon=1e-3, name="bn")(x)
    return nn.relu(x)


def _avg_pool(x):
  # TF's average pool divides by the pixels inside the image, not by 9, at the borders:
  # pytorch-fid's count_include_pad=False, where torchvision's Inception counts the padding.
  return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)), count_include_pad=False)


def _max_pool(x, strides: int, padding: int):
  return nn.max_pool(x, (3, 3), strides=(strides,) * 2, padding=((padding, padding),) * 2)


class InceptionA(nn.Module):
  """Mixed_5b-d at 35×35: 1×1, 5×5, double 3×3 and average-pool branches (pytorch-fid's FIDInceptionA)."""
  pool_features: int

  @nn.compact
  def __call__(self, x):
    branch1x1 = BasicConv2d(64, 1, name="branch1x1")(x)
    branch5x5 = BasicConv2d(48, 1, name="branch5x5_1")(x)
    branch5x5 = BasicConv2d(64, 5, padding=2, name="branch5x5_2")(branch5x5)
    branch3x3dbl = BasicConv2d(64, 1, name="branch3x3dbl_1")(x)
    branch3x3dbl = BasicConv2d(96, 3, padding=1, name="branch3x3dbl_2")(branch3x3dbl)
    branch3x3dbl = BasicConv2d(96, 3, padding=1, name="branch3x3dbl_3")(branch3x3dbl)
    branch_pool = BasicConv2d(self.pool_features, 1, name="branch_pool")(_avg_pool(x))
    return jnp.concatenate([branch1x1, branch5x5, branch3x3dbl, branch_pool], axis=-1)


class InceptionB(nn.Module):
  """Mixed_6a, 35×35 → 17×17: a strided 3×3, a strided double 3×3 and a max pool."""

  @nn.compact
  def __call__(self, x):
    branch3x3 = BasicConv2d(384, 3, strides=2, name="branch3x3")(x)
    branch3x3dbl = BasicConv2d(64, 1, name="branch3x3dbl_1")(x)
    branch3x3dbl = BasicConv2d(96, 3, padding=1, name="branch3x3dbl_2")(branch3x3dbl)
    branch3x3dbl = BasicConv2d(96, 3, strides=2, name="branch3x3dbl_3")(branch3x3dbl)
    return jnp.concatenate([branch3x3, branch3x3dbl, _max_pool(x, 2, 0)], axis=-1)


class InceptionC(nn.Module):
  """Mixed_6b-e at 17×17: factorised 7×7 branches of width channels_7x7 (pytorch-fid's FIDInceptionC)."""
  channels_7x7: int

  @nn.compact
  def __call__(self, x):
    c7 = self.channels_7x7
    branch1x1 = BasicConv2d(192, 1, name="branch1x1")(x)
    branch7x7 = BasicConv2d(c7, 1, name="branch7x7_1")(x)
    branch7x7 = BasicConv2d(c7, (1, 7), padding=(0, 3), name="branch7x7_2")(branch7x7)
    branch7x7 = BasicConv2d(192, (7, 1), padding=(3, 0), name="branch7x7_3")(branch7x7)
    branch7x7dbl = BasicConv2d(c7, 1, name="branch7x7dbl_1")(x)
    branch7x7dbl = BasicConv2d(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_2")(branch7x7dbl)
    branch7x7dbl = BasicConv2d(c7, (1, 7), padding=(0, 3), name="branch7x7dbl_3")(branch7x7dbl)
    branch7x7dbl = BasicConv2d(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_4")(branch7x7dbl)
    branch7x7dbl = BasicConv2d(192, (1, 7), padding=(0, 3), name="branch7x7dbl_5")(branch7x7dbl)
    branch_pool = BasicConv2d(192, 1, name="branch_pool")(_avg_pool(x))
    return jnp.concatenate([branch1x1, branch7x7, branch7x7dbl, branch_pool], axis=-1)


class InceptionD(nn.Module):
  """Mixed_7a, 17×17 → 8×8: a strided 3×3, a 7×7-then-strided-3×3 and a max pool."""

  @nn.compact
  def __call__(self, x):
    branch3x3 = BasicConv2d(192, 1, name="branch3x3_1")(x)
    branch3x3 = BasicConv2d(320, 3, strides=2, name="branch3x3_2")(branch3x3)
    branch7x7x3 = BasicConv2d(192, 1, name="branch7x7x3_1")(x)
    branch7x7x3 = BasicConv2d(192, (1, 7), padding=(0, 3), name="branch7x7x3_2")(branch7x7x3)
    branch7x7x3 = BasicConv2d(192, (7, 1), padding=(3, 0), name="branch7x7x3_3")(branch7x7x3)
    branch7x7x3 = BasicConv2d(192, 3, strides=2, name="branch7x7x3_4")(branch7x7x3)
    return jnp.concatenate([branch3x3, branch7x7x3, _max_pool(x, 2, 0)], axis=-1)


class InceptionE(nn.Module):
  """Mixed_7b/7c at 8×8: split 1×3 / 3×1 branches; pool "avg" (FIDInceptionE_1) or "max" (FIDInceptionE_2).

  The TF graph has a max pool in Mixed_7c's pool branch where the paper has an
  average pool; the FID network keeps it, so "max" is not a choice but a fact.
  """
  pool: str

  @nn.compact
  def __call__(self, x):
    branch1x1 = BasicConv2d(320, 1, name="branch1x1")(x)
    branch3x3 = BasicConv2d(384, 1, name="branch3x3_1")(x)
    branch3x3 = [BasicConv2d(384, (1, 3), padding=(0, 1), name="branch3x3_2a")(branch3x3),
                 BasicConv2d(384, (3, 1), padding=(1, 0), name="branch3x3_2b")(branch3x3)]
    branch3x3dbl = BasicConv2d(448, 1, name="branch3x3dbl_1")(x)
    branch3x3dbl = BasicConv2d(384, 3, padding=1, name="branch3x3dbl_2")(branch3x3dbl)
    branch3x3dbl = [BasicConv2d(384, (1, 3), padding=(0, 1), name="branch3x3dbl_3a")(branch3x3dbl),
                    BasicConv2d(384, (3, 1), padding=(1, 0), name="branch3x3dbl_3b")(branch3x3dbl)]
    if self.pool == "avg":
      pooled = _avg_pool(x)
    elif self.pool == "max":
      pooled = _max_pool(x, 1, 1)
    else:
      raise UserError(f"InceptionE pool={self.pool!r}; use 'avg' (Mixed_7b) or 'max' (Mixed_7c).")
    branch_pool = BasicConv2d(192, 1, name="branch_pool")(pooled)
    return jnp.concatenate([branch1x1, *branch3x3, *branch3x3dbl, branch_pool], axis=-1)


class InceptionV3(nn.Module):
  """The FID Inception: float images in [-1, 1] of any size → {"pool": [N, 2048], "logits": [N, 1008]}.

  "pool" is pool_3, the 2048 averaged Mixed_7c features FID is computed on; "logits"
  are the 1008-way classifier's (IS takes their softmax). Inference only: the batch
  norms use their running statistics and the dropout before fc is the identity.
  """

  @nn.compact
  def __call__(self, images):
    if not jnp.issubdtype(images.dtype, jnp.floating):
      raise TypeError(f"InceptionV3 takes float images in [-1, 1]; got dtype {images.dtype}. "
                      "Scale uint8 images with x / 127.5 - 1.")
    if images.ndim != 4 or images.shape[-1] != 3:
      raise ValueError(f"InceptionV3 takes RGB images [N, H, W, 3]; got shape {images.shape}.")
    x = resize_for_inception(images.astype(jnp.float32))
    x = BasicConv2d(32, 3, strides=2, name="Conv2d_1a_3x3")(x)
    x = BasicConv2d(32, 3, name="Conv2d_2a_3x3")(x)
    x = BasicConv2d(64, 3, padding=1, name="Conv2d_2b_3x3")(x)
    x = _max_pool(x, 2, 0)
    x = BasicConv2d(80, 1, name="Conv2d_3b_1x1")(x)
    x = BasicConv2d(192, 3, name="Conv2d_4a_3x3")(x)
    x = _max_pool(x, 2, 0)
    x = InceptionA(32, name="Mixed_5b")(x)
    x = InceptionA(64, name="Mixed_5c")(x)
    x = InceptionA(64, name="Mixed_5d")(x)
    x = InceptionB(name="Mixed_6a")(x)
    x = InceptionC(128, name="Mixed_6b")(x)
    x = InceptionC(160, name="Mixed_6c")(x)
    x = InceptionC(160, name="Mixed_6d")(x)
    x = InceptionC(192, name="Mixed_6e")(x)
    x = InceptionD(name="Mixed_7a")(x)
    x = InceptionE("avg", name="Mixed_7b")(x)
    x = InceptionE("max", name="Mixed_7c")(x)
    pool = jnp.mean(x, axis=(1, 2))
    return {"pool": pool, "logits": nn.Dense(NUM_CLASSES, name="fc")(pool)}


def inception_variable_shapes() -> dict:
  """InceptionV3's {"params": ..., "batch_stats": ...} as ShapeDtypeStructs, traced without computing anything."""
  return jax.eval_shape(lambda: InceptionV3().init(jax.random.key(0), jnp.zeros((1, INPUT_SIZE, INPUT_SIZE, 3))))


# ---------------------------------------------------------------------------- torch files, read without torch

# Legacy (pre-1.6, non-zip) torch.save files open with this number, pickled at protocol 2.
_LEGACY_HEADER = pickle.dumps(0x1950a86a20f9469cfc6c, protocol=2)
_LEGACY_PROTOCOL = 1001
_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "BFloat16Storage": jnp.bfloat16, "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
    "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}


@dataclasses.dataclass(frozen=True)
class _StorageType:
  """What a `torch.<Type>Storage` global unpickles to: only its element type."""
  dtype: np.dtype


@dataclasses.dataclass(frozen=True)
class _StorageView:
  """Elements [start, start + numel) of the storage `key`, whose bytes are read after the pickle."""
  key: str
  start: int
  numel: int


@dataclasses.dataclass(frozen=True)
class _TensorRecord:
  """torch._utils._rebuild_tensor_v2's arguments, made into an array once the storages are read."""
  storage: _StorageView
  offset: int
  size: tuple
  stride: tuple


def _rebuild_tensor_v2(storage, storage_offset, size, stride, *_):
  if not isinstance(storage, _StorageView):
    raise pickle.UnpicklingError(f"a tensor's storage is {type(storage).__name__}, not a torch storage reference.")
  return _TensorRecord(storage, int(storage_offset), tuple(int(n) for n in size), tuple(int(s) for s in stride))


def _rebuild_parameter(data, *_):
  return data


class _RestrictedUnpickler(pickle.Unpickler):
  """Unpickles dicts of tensors and nothing else: every other global is refused, so no code from the file runs."""

  def __init__(self, file, path: str):
    super().__init__(file)
    self.path = path
    self.storages = {}  # key -> (dtype, numel) of every storage the pickle refers to

  def find_class(self, module, name):
    if (module, name) == ("collections", "OrderedDict"):
      return collections.OrderedDict
    if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
      return _rebuild_tensor_v2
    if (module, name) == ("torch._utils", "_rebuild_parameter"):
      return _rebuild_parameter
    if module == "torch" and name in _STORAGE_DTYPES:
      return _StorageType(np.dtype(_STORAGE_DTYPES[name]))
    raise pickle.UnpicklingError(
        f"{self.path} asks to import {module}.{name}; a weight file needs only tensors in dicts, so the file is "
        "refused and nothing in it was run. Use a state dict saved with torch.save, e.g. pytorch-fid's release file.")

  def persistent_load(self, pid):
    # zip format: ("storage", type, key, location, numel); legacy format adds view_metadata,
    # None or (view_key, start, numel) for a slice of the storage `key`.
    if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"
            and isinstance(pid[1], _StorageType)):
      raise pickle.UnpicklingError(f"{self.path} holds a persistent id {pid!r} that is not a torch storage.")
    storage_type, key, numel = pid[1], str(pid[2]), int(pid[4])
    if self.storages.setdefault(key, (storage_type.dtype, numel)) != (storage_type.dtype, numel):
      raise pickle.UnpicklingError(f"{self.path} describes storage {key} twice, differently.")
    view = pid[5] if len(pid) == 6 else None
    if view is None:
      return _StorageView(key, 0, numel)
    _, start, view_numel = view
    return _StorageView(key, int(start), int(view_numel))


def _array(raw: bytes, dtype: np.dtype, numel: int, where: str) -> np.ndarray:
  if len(raw) != numel * dtype.itemsize:
    raise UserError(f"{where} holds {len(raw)} bytes where {numel} elements of {dtype} need {numel * dtype.itemsize}; "
                     "the file is truncated or corrupt.")
  return np.frombuffer(raw, dtype)


def _read_zip(path: str):
  with zipfile.ZipFile(path) as archive:
    names = archive.namelist()
    pickles = [n for n in names if n == "data.pkl" or n.endswith("/data.pkl")]
    if len(pickles) != 1:
      raise UserError(f"{path} is a zip archive with {len(pickles)} data.pkl records; a torch.save file has one.")
    prefix = pickles[0][:-len("data.pkl")]
    if prefix + "byteorder" in names and archive.read(prefix + "byteorder").decode().strip() != "little":
      raise UserError(f"{path} was saved on a big-endian machine; re-save it on a little-endian one.")
    unpickler = _RestrictedUnpickler(io.BytesIO(archive.read(pickles[0])), path)
    obj = unpickler.load()
    storages = {}
    for key, (dtype, numel) in unpickler.storages.items():
      record = f"{prefix}data/{key}"
      if record not in names:
        raise UserError(f"{path} has no record {record} for the storage {key} its pickle refers to.")
      storages[key] = _array(archive.read(record), dtype, numel, f"{path}:{record}")
  return obj, storages


def _read_legacy(path: str):
  with open(path, "rb") as f:
    if f.read(len(_LEGACY_HEADER)) != _LEGACY_HEADER:
      raise UserError(f"{path} is neither a zip archive nor a legacy torch.save file; is it a torch checkpoint?")
    if _RestrictedUnpickler(f, path).load() != _LEGACY_PROTOCOL:
      raise UserError(f"{path} is a legacy torch.save file of an unknown protocol version.")
    if not _RestrictedUnpickler(f, path).load().get("little_endian", True):
      raise UserError(f"{path} was saved on a big-endian machine; re-save it on a little-endian one.")
    unpickler = _RestrictedUnpickler(f, path)
    obj = unpickler.load()
    # The storages follow the pickles in this order, each as an int64 element count and the raw elements.
    keys = [str(k) for k in _RestrictedUnpickler(f, path).load()]
    if sorted(keys) != sorted(unpickler.storages):
      raise UserError(f"{path} lists storages {sorted(keys)} but its pickle refers to {sorted(unpickler.storages)}.")
    storages = {}
    for key in keys:
      dtype, numel = unpickler.storages[key]
      header = f.read(8)
      count = struct.unpack("<q", header)[0] if len(header) == 8 else None
      if count != numel:
        raise UserError(f"{path}: storage {key} starts with element count {count}, its pickle says {numel}; the "
                         "file is truncated or corrupt.")
      storages[key] = _array(f.read(numel * dtype.itemsize), dtype, numel, f"{path} storage {key}")
  return obj, storages


def _tensor(record: _TensorRecord, storages: dict, path: str) -> np.ndarray:
  view = record.storage
  base = storages[view.key][view.start:view.start + view.numel]
  size, stride, offset = record.size, record.stride, record.offset
  if len(base) != view.numel or len(size) != len(stride) or min(size + stride, default=0) < 0 or offset < 0:
    raise UserError(f"{path}: a tensor of size {size}, stride {stride}, offset {offset} on a storage view of "
                     f"{view.numel} elements from {view.start} is malformed; the file is corrupt.")
  if 0 in size:
    return np.zeros(size, base.dtype)
  last = offset + sum((n - 1) * s for n, s in zip(size, stride))
  # as_strided does no bounds checks: without this a corrupt file would read arbitrary memory.
  if last >= len(base):
    raise UserError(f"{path}: a tensor of size {size}, stride {stride}, offset {offset} reaches element {last} of "
                     f"a storage of {len(base)}; the file is corrupt.")
  strides = tuple(s * base.itemsize for s in stride)
  return np.lib.stride_tricks.as_strided(base[offset:], size, strides).copy()


def _materialise(obj, storages: dict, path: str):
  if isinstance(obj, _TensorRecord):
    return _tensor(obj, storages, path)
  if isinstance(obj, dict):
    return type(obj)((k, _materialise(v, storages, path)) for k, v in obj.items())
  if isinstance(obj, (list, tuple)):
    return type(obj)(_materialise(v, storages, path) for v in obj)
  return obj


def load_torch_file(path):
  """The object a torch.save file holds (zip or legacy format), tensors as numpy arrays; torch is not needed.

  Only dicts, lists and tensors are rebuilt; a file whose pickle imports anything
  else raises pickle.UnpicklingError before any of it runs.
  """
  path = os.path.expanduser(str(path))
  if not os.path.isfile(path):
    raise UserError(f"torch file {path!r} does not exist.")
  obj, storages = _read_zip(path) if zipfile.is_zipfile(path) else _read_legacy(path)
  return _materialise(obj, storages, path)


# ---------------------------------------------------------------------------- pytorch-fid weights → Flax

_TORCH_LEAF = {"kernel": "weight", "scale": "weight", "bias": "bias", "mean": "running_mean", "var": "running_var"}


def torch_name(path: tuple[str, ...]) -> str:
  """pytorch-fid's state-dict key of a Flax variable path: (Mixed_5b, bn, mean) → Mixed_5b.bn.running_mean."""
  return ".".join(path[:-1] + (_TORCH_LEAF[path[-1]],))


def _torch_shape(shape: tuple) -> tuple:
  """The torch shape of a Flax variable: conv HWIO kernel → OIHW weight, Dense [in, out] → Linear [out, in]."""
  if len(shape) == 4:
    return (shape[3], shape[2], shape[0], shape[1])
  return tuple(reversed(shape))


def _from_torch(value: np.ndarray) -> np.ndarray:
  if value.ndim == 4:
    return value.transpose(2, 3, 1, 0)
  return value.T if value.ndim == 2 else value


def _listing(names: list, limit: int = 8) -> str:
  more = f" and {len(names) - limit} more" if len(names) > limit else ""
  return ", ".join(names[:limit]) + more


def _inception_file(path) -> str:
  path = os.path.expanduser(str(path))
  if not os.path.isfile(path):
    raise UserError(
        f"Inception weight file {path!r} does not exist. FID and IS need pytorch-fid's {PT_INCEPTION_FILE} "
        f"({PT_INCEPTION_URL}); fetch it once on a machine with internet and pass its path. "
        "Nothing is downloaded at run time.")
  return path


def load_pt_inception(path) -> dict:
  """InceptionV3's {"params", "batch_stats"} (float32 numpy) from pytorch-fid's state dict, ready for model.apply.

  Every Flax variable must find its tensor, by torchvision's name and of its shape,
  and every tensor but the batch norms' num_batches_tracked must be used.
  """
  path = _inception_file(path)
  tensors = load_torch_file(path)
  if not isinstance(tensors, dict) or not all(isinstance(v, np.ndarray) for v in tensors.values()):
    raise UserError(f"{path} does not hold a state dict (tensor names → tensors); pytorch-fid's "
                     f"{PT_INCEPTION_FILE} does.")
  flat, missing, wrong = {}, [], []
  expected = traverse_util.flatten_dict(inception_variable_shapes())
  for var_path, spec in expected.items():
    name, want = torch_name(var_path[1:]), _torch_shape(spec.shape)
    if name not in tensors:
      missing.append(name)
    elif tensors[name].shape != want or not np.issubdtype(tensors[name].dtype, np.floating):
      wrong.append(f"{name} {tensors[name].dtype}{list(tensors[name].shape)} (needs float{list(want)})")
    else:
      flat[var_path] = np.ascontiguousarray(_from_torch(tensors[name].astype(np.float32)))
  used = {torch_name(p[1:]) for p in expected}
  unexpected = sorted(n for n in tensors if n not in used and not n.endswith(".num_batches_tracked"))
  problems = [f"{label}: {_listing(names)}" for label, names in
              (("missing", missing), ("wrong shape or dtype", wrong), ("unexpected", unexpected)) if names]
  if problems:
    raise UserError(f"{path} is not pytorch-fid's FID Inception ({PT_INCEPTION_FILE}); " + "; ".join(problems)
                     + ". (torchvision's ImageNet Inception, with 1000 classes and AuxLogits, is a different network.)")
  return traverse_util.unflatten_dict(flat)


def load_inception(path) -> dict:
  """The FID Inception's {"params", "batch_stats"} from a weight file; .pth/.pt: pytorch-fid's state dict."""
  path = _inception_file(path)
  suffix = os.path.splitext(path)[1].lower()
  if suffix in (".pth", ".pt"):
    return load_pt_inception(path)
  if suffix == ".pb":
    raise UserError(f"{path} is a TensorFlow graph, which cannot be read here; use pytorch-fid's {PT_INCEPTION_FILE}, "
                     "the same 2015-12-05 weights as a state dict.")
  raise UserError(f"{path} has suffix {suffix!r}; the FID Inception's weights are read from pytorch-fid's "
                   f"{PT_INCEPTION_FILE} (.pth).")
