"""Test-wide guard: no test may reach beyond this machine (loopback only); the PostgreSQL fixtures."""

from __future__ import annotations

import os

# One BLAS thread per process, set before anything imports numpy: on 2 cores the reference fits
# (statsmodels, numpy.linalg) run faster single-threaded than with OpenBLAS's threads fighting
# pytest and the servers the tests start; child processes inherit it. A value set outside wins.
for _variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

import ipaddress  # noqa: E402
import socket  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from typing import TYPE_CHECKING  # noqa: E402

import pytest  # noqa: E402

from testkit.postgres import PgCluster, missing_reason  # noqa: E402

if TYPE_CHECKING:
    from service import Service

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
    # method-assign: patched on the class, so that every socket of the test process (libraries' too) is guarded.
    socket.socket.connect = _guarded_connect  # type: ignore[method-assign]
    socket.socket.connect_ex = _guarded_connect_ex  # type: ignore[method-assign]
    # Anything built from the environment (pages under AppTest, child processes that inherit it)
    # talks to dead loopback ports unless a test points it at a fake Binance.
    os.environ.setdefault("QUANT_WS_URL", "ws://127.0.0.1:9")
    os.environ.setdefault("QUANT_REST_URL", "http://127.0.0.1:9")


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """A throwaway PostgreSQL cluster for the session (testkit/postgres.py), started on first use.

    Skips (with the reason) where the server binaries are missing; in CI (``CI`` set) that is a
    failure instead, so a missing install step cannot turn the PostgreSQL tests into skips.
    """
    reason = missing_reason()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the PostgreSQL tests: {reason}")
        pytest.skip(reason)
    cluster = PgCluster.find_and_start()
    yield cluster
    cluster.stop()


@pytest.fixture
def pg_url(pg_cluster: PgCluster) -> str:
    """The URL (password included, as a desk's would be) of a fresh, empty database."""
    return pg_cluster.create_database()


@pytest.fixture
def engines() -> Iterator[list[Service]]:
    """Services to stop at teardown, so a failed test leaves no threads behind to load the next one."""
    started: list[Service] = []
    yield started
    for engine in started:
        engine.stop(timeout=5)
