"""The suite runs offline: connections off this machine are refused (see conftest.no_network)."""

import socket

import pytest

from tests.conftest import NetworkAccessError


def test_connections_off_the_machine_are_refused():
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
    with pytest.raises(NetworkAccessError, match="8.8.8.8"):
      sock.connect(("8.8.8.8", 53))


def test_loopback_stays_usable():
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    with socket.create_connection(server.getsockname(), timeout=5):
      pass
