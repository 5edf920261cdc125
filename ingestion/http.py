"""HTTP/1.1 exchanges bounded by one overall deadline, for every client this project writes.

``http.client``'s per-socket timeout alone never fires on a peer that sends one byte a second, so
a REST reply (:mod:`ingestion.binance.rest`) or a webhook answer (:mod:`alerts.webhook`) could hold
its thread for ever. :func:`connect` opens a connection whose connect, TLS handshake, send, status
line, headers and body all end by one ``time.monotonic()`` deadline.
"""

from __future__ import annotations

import functools
import http.client
import io
import socket
import time
from urllib.parse import SplitResult


def left(deadline: float) -> float:
    """Seconds until ``deadline`` (``time.monotonic()`` seconds); TimeoutError once it has passed."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError("deadline passed")
    return remaining


def connect(parts: SplitResult, timeout_s: float, deadline: float) -> http.client.HTTPConnection:
    """A connected HTTP(S) connection to ``parts``' host whose every wait ends by ``deadline``.

    Each socket wait lasts at most ``timeout_s`` seconds; connect and the TLS handshake each take at
    most half of what is left, so together they fit. No proxy is used and nothing is redirected:
    the caller sends one request and reads its answer. The caller closes the connection.
    """
    connection_class = http.client.HTTPSConnection if parts.scheme.lower() == "https" else http.client.HTTPConnection
    conn = connection_class(parts.hostname, parts.port, timeout=min(timeout_s, left(deadline) / 2))
    conn.response_class = functools.partial(_DeadlineResponse, deadline=deadline, timeout_s=timeout_s)
    try:
        conn.connect()
        conn.sock.settimeout(min(timeout_s, left(deadline)))  # sendall: a total, not per chunk
    except BaseException:
        conn.close()
        raise
    return conn


class _DeadlineReader(io.RawIOBase):
    """Socket reads whose timeout shrinks to what is left before one deadline."""

    def __init__(self, sock: socket.socket, deadline: float, timeout_s: float) -> None:
        super().__init__()
        self._sock, self._deadline, self._timeout_s = sock, deadline, timeout_s

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        self._sock.settimeout(min(self._timeout_s, left(self._deadline)))
        return self._sock.recv_into(buffer)


class _DeadlineResponse(http.client.HTTPResponse):
    """An HTTP response whose status line, headers and body are read by a :class:`_DeadlineReader`."""

    def __init__(self, sock: socket.socket, *args: object, deadline: float, timeout_s: float, **kwargs: object) -> None:
        super().__init__(sock, *args, **kwargs)  # type: ignore[arg-type]
        # The plain socket file HTTPResponse made never reads anything, but it is kept open until
        # this response closes: it holds the socket open after the connection lets go of it
        # (``Connection: close``), while the body is still to be read.
        self._socket_file = self.fp
        self.fp = io.BufferedReader(_DeadlineReader(sock, deadline, timeout_s))

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._socket_file.close()
