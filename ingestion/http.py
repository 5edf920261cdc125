"""HTTP/1.1 exchanges bounded by one overall deadline, for every client this project writes.

``http.client``'s per-socket timeout alone never fires on a peer that sends one byte a second, so
a REST reply (:mod:`ingestion.binance.rest`) or a webhook answer (:mod:`alerts.webhook`) could hold
its thread for ever. :func:`connect` opens a connection whose name lookup, connect, TLS handshake,
send, status line, headers and body all end by one ``time.monotonic()`` deadline (or one on the
``clock`` a caller passes, e.g. a test's). :func:`open_socket` and :class:`DeadlineSocket` do the same
for the opening handshake of a WebSocket (:mod:`ingestion.binance.stream`).
"""

from __future__ import annotations

import functools
import http.client
import io
import math
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import SplitResult

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer


def left(deadline: float, clock: Callable[[], float] = time.monotonic) -> float:
    """Seconds until ``deadline`` (seconds on ``clock``); TimeoutError once it has passed."""
    remaining = deadline - clock()
    if remaining <= 0:
        raise TimeoutError("deadline passed")
    return remaining


def connect(parts: SplitResult, timeout_s: float, deadline: float, *,
            clock: Callable[[], float] = time.monotonic) -> http.client.HTTPConnection:
    """A connected HTTP(S) connection to ``parts``' host whose every wait ends by ``deadline``.

    Each socket wait lasts at most ``timeout_s`` seconds; the name lookup, connect and the TLS
    handshake each take at most half of what is left, so together they fit. No proxy is used and
    nothing is redirected: the caller sends one request and reads its answer. The caller closes
    the connection. TLS still verifies the certificate against the host name. ``deadline`` is in
    seconds on ``clock``.
    """
    https = parts.scheme.lower() == "https"
    port = parts.port or (443 if https else 80)
    host = parts.hostname or ""  # no host: the lookup fails, naming it
    addresses = resolve(host, port, min(timeout_s, left(deadline, clock) / 2))
    connection_class = http.client.HTTPSConnection if https else http.client.HTTPConnection
    conn = connection_class(host, port, timeout=min(timeout_s, left(deadline, clock) / 2))
    # http.client only calls response_class(sock, ...); typeshed types the attribute as a class, not a callable.
    conn.response_class = functools.partial(  # type: ignore[assignment]
        _DeadlineResponse, deadline=deadline, timeout_s=timeout_s, clock=clock)
    # Connect to the addresses looked up above instead of letting http.client look the name up again
    # without any time limit.
    # A private hook of http.client (HTTPConnection.connect calls it), absent from typeshed.
    conn._create_connection = functools.partial(_connect_any, addresses)  # type: ignore[attr-defined]
    try:
        conn.connect()
        conn.sock.settimeout(min(timeout_s, left(deadline, clock)))  # sendall: a total, not per chunk
    except BaseException:
        conn.close()
        raise
    return conn


def open_socket(host: str, port: int, *, tls: bool, deadline: float,
                clock: Callable[[], float] = time.monotonic) -> socket.socket:
    """A socket connected to ``host``:``port`` (``tls``: TLS, the certificate checked against ``host``)
    whose name lookup, connect and TLS handshake all end by ``deadline`` (seconds on ``clock``).

    Each step waits at most what is left (CPython bounds a connect, and a whole TLS handshake, by
    the socket timeout, not each read), so any TimeoutError means the deadline has passed. No proxy
    is used. The caller closes the socket; its timeout is left at whatever was left.
    """
    addresses = resolve(host, port, left(deadline, clock))
    sock = _connect_any(addresses, (host, port), left(deadline, clock), deadline=deadline, clock=clock)
    if not tls:
        return sock
    try:
        sock.settimeout(left(deadline, clock))
        return ssl.create_default_context().wrap_socket(sock, server_hostname=host)
    except BaseException:
        sock.close()
        raise


def resolve(host: str, port: int, timeout_s: float) -> list[tuple]:
    """``getaddrinfo`` socket addresses of ``host`` for TCP, within ``timeout_s`` seconds.

    The system resolver has no timeout of its own (a dead DNS server holds it for 5 s per try and
    name server), so it runs in a daemon thread that is left behind, not waited for, when it is late.
    """
    found: list[tuple] = []
    failed: list[OSError] = []

    def look_up() -> None:
        try:
            found.extend(info[4] for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except OSError as exc:
            failed.append(exc)

    thread = threading.Thread(target=look_up, name="name-lookup", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        raise TimeoutError(f"name lookup of {host!r} took longer than {timeout_s:g} s")
    if failed:
        raise failed[0]
    if not found:
        raise OSError(f"name lookup of {host!r} found no address")
    return found


def _connect_any(addresses: list[tuple], _address: tuple, timeout: float | None = None,
                 source_address: tuple | None = None, *, deadline: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> socket.socket:
    """``socket.create_connection`` over already looked-up ``addresses``: the first that connects.

    With a ``deadline`` (seconds on ``clock``), each try waits at most what is left of it, so
    several unreachable addresses together cannot outlast it.
    """
    error: OSError | None = None
    for address in addresses:
        family = socket.AF_INET6 if len(address) == 4 else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            wait = timeout if deadline is None else min(timeout or math.inf, left(deadline, clock))
            sock.settimeout(wait)
            if source_address is not None:
                sock.bind(source_address)
            sock.connect(address)
            return sock
        except OSError as exc:
            sock.close()
            error = exc
    raise error if error is not None else OSError("no address to connect to")


class _DeadlineReader(io.RawIOBase):
    """Socket reads whose timeout shrinks to what is left before one deadline."""

    def __init__(self, sock: socket.socket, deadline: float, timeout_s: float, clock: Callable[[], float]) -> None:
        super().__init__()
        self._sock, self._deadline, self._timeout_s, self._clock = sock, deadline, timeout_s, clock

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        self._sock.settimeout(min(self._timeout_s, left(self._deadline, self._clock)))
        return self._sock.recv_into(buffer)


class _DeadlineResponse(http.client.HTTPResponse):
    """An HTTP response whose status line, headers and body are read by a :class:`_DeadlineReader`."""

    def __init__(self, sock: socket.socket, debuglevel: int = 0, method: str | None = None, url: str | None = None,
                 *, deadline: float, timeout_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(sock, debuglevel, method, url)
        # The plain socket file HTTPResponse made never reads anything, but it is kept open until
        # this response closes: it holds the socket open after the connection lets go of it
        # (``Connection: close``), while the body is still to be read.
        self._socket_file = self.fp
        self.fp = io.BufferedReader(_DeadlineReader(sock, deadline, timeout_s, clock))

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._socket_file.close()


class DeadlineSocket:
    """The part of a socket websocket-client's handshake uses, each wait ending by one deadline.

    websocket-client reads the HTTP upgrade reply one byte per ``recv`` call, each with the socket's
    own timeout, so a server trickling header bytes (or never ending them) would hold it for ever.
    Through this wrapper every ``send``/``recv`` (and the timeout websocket-client waits with on its
    own) lasts at most what is left before ``deadline`` (seconds on ``clock``); once it has passed,
    TimeoutError. Only for the handshake: put the plain socket back once it is done.
    """

    def __init__(self, sock: socket.socket, deadline: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.sock, self._deadline, self._clock = sock, deadline, clock

    def gettimeout(self) -> float:
        return left(self._deadline, self._clock)

    def settimeout(self, _timeout: float | None) -> None:
        """Ignored: the deadline sets every wait."""

    def recv(self, size: int) -> bytes:
        self.sock.settimeout(self.gettimeout())
        return self.sock.recv(size)

    def send(self, data: bytes) -> int:
        self.sock.settimeout(self.gettimeout())
        return self.sock.send(data)

    def fileno(self) -> int:
        return self.sock.fileno()

    def shutdown(self, how: int) -> None:
        self.sock.shutdown(how)

    def close(self) -> None:
        self.sock.close()
