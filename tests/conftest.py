"""Test set-up: 8 simulated CPU devices (before jax is imported) and shared fixtures."""

import ipaddress
import os
import socket

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tempfile  # noqa: E402

import jax  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

# Tests build the same tiny models in many places, each through a new jit: a
# persistent compilation cache (this session's only) turns every repeat compile
# into a lookup. XLA on CPU compiles for seconds what runs in milliseconds.
jax.config.update("jax_compilation_cache_dir", tempfile.mkdtemp(prefix="cmccl_jax_xla_cache_"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)

tf.config.set_visible_devices([], "GPU")

from tests import tiny  # noqa: E402


class NetworkAccessError(RuntimeError):
  """A test tried to open a connection off this machine."""


def _loopback(address) -> bool:
  host = address[0] if isinstance(address, tuple) else address
  if host == "localhost":
    return True
  try:
    return ipaddress.ip_address(host).is_loopback
  except ValueError:
    return False


@pytest.fixture(autouse=True, scope="session")
def no_network():
  """Nothing may download at run time: any connection off this machine fails the test that makes it."""
  connect, connect_ex = socket.socket.connect, socket.socket.connect_ex

  def guarded(method):
    def call(sock, address):
      if sock.family in (socket.AF_INET, socket.AF_INET6) and not _loopback(address):
        raise NetworkAccessError(f"a test tried to reach {address!r}; nothing may touch the network.")
      return method(sock, address)
    return call

  socket.socket.connect, socket.socket.connect_ex = guarded(connect), guarded(connect_ex)
  yield
  socket.socket.connect, socket.socket.connect_ex = connect, connect_ex


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory):
  """A tiny synthetic_shapes build and its difficulty scores, shared by every test that needs real shards."""
  data_dir = str(tmp_path_factory.mktemp("tfds"))
  from cmccl_jax.scoring import score_shards
  score_shards.prepare_data(tiny.tiny_config(data_dir))
  return data_dir


@pytest.fixture
def tiny_config(tiny_data_dir):
  return tiny.tiny_config(tiny_data_dir)
