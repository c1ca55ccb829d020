"""Test-only: put this folder first on PYTHONPATH and any network connection the process attempts
(IPv4 or IPv6; SSH, HTTP, anything built on socket.connect) is recorded in $NO_NETWORK_LOG and refused."""

import os
import socket

_connect = socket.socket.connect
_connect_ex = socket.socket.connect_ex


def _refuse(self: socket.socket, address: object) -> None:
    if self.family in (socket.AF_INET, socket.AF_INET6):
        with open(os.environ["NO_NETWORK_LOG"], "a") as log:
            log.write(f"{address!r}\n")
        raise ConnectionRefusedError(f"test: no network connection allowed ({address!r})")


def connect(self: socket.socket, address: object) -> None:
    _refuse(self, address)
    _connect(self, address)


def connect_ex(self: socket.socket, address: object) -> int:
    _refuse(self, address)
    return _connect_ex(self, address)


socket.socket.connect = connect  # type: ignore[method-assign]
socket.socket.connect_ex = connect_ex  # type: ignore[method-assign]
