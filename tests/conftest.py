"""Test-wide guard: no test may reach beyond this machine (loopback only)."""

from __future__ import annotations

import ipaddress
import os
import socket

_original_connect = socket.socket.connect
_original_connect_ex = socket.socket.connect_ex


def _check(address: object) -> None:
    if not isinstance(address, tuple):  # AF_UNIX paths and the like
        return
    host = address[0]
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        raise ConnectionRefusedError(f"tests must not touch the network: connection to {address!r} blocked")


def _guarded_connect(self: socket.socket, address: object) -> None:
    _check(address)
    return _original_connect(self, address)


def _guarded_connect_ex(self: socket.socket, address: object) -> int:
    _check(address)
    return _original_connect_ex(self, address)


def pytest_configure(config: object) -> None:
    socket.socket.connect = _guarded_connect  # type: ignore[method-assign]
    socket.socket.connect_ex = _guarded_connect_ex  # type: ignore[method-assign]
    # Anything built from the environment (pages under AppTest, child processes that inherit it)
    # talks to dead loopback ports unless a test points it at a fake Binance.
    os.environ.setdefault("QUANT_WS_URL", "ws://127.0.0.1:9")
    os.environ.setdefault("QUANT_REST_URL", "http://127.0.0.1:9")
