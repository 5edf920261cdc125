"""The Binance WebSocket handshake (name lookup, connect, TLS, HTTP upgrade) ends by one deadline.

websocket-client bounds each socket read, not the handshake, and reads the upgrade reply a byte at a
time: a server that accepts and then trickles header bytes (or says nothing) must not hold a
(re)connect for ever. Against such servers on 127.0.0.1 the feed reports "handshake with <host> took
longer than N s", retries on its backoff, and connects once a real (fake) server listens there.
Assertions are on the feed's state and error within a generous bound, never on wall-clock precision.
"""

from __future__ import annotations

import socket
import threading

import pytest

from config import Settings
from ingestion.binance.stream import BinanceSource
from ingestion.http import DeadlineSocket, open_socket
from records import EventKind, FeedState
from service import Service
from testkit.clocks import ManualClock
from testkit.fake_binance import FakeBinance
from testkit.waiting import eventually
from tests.test_binance_source import FAST, events

CONNECT_TIMEOUT_S = 1.0
SLACK_S = 4.0  # bound for a busy 2-core machine; the trickle alone would go on for ever
TRICKLE_EVERY_S = 0.2
# A plausible start of an upgrade reply, then a header line that never ends: the reply is never complete.
TRICKLE = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nX-Padding: "


class StallingServer:
    """Accepts TCP on 127.0.0.1 and never completes a WebSocket upgrade.

    ``trickle``: sends one byte of :data:`TRICKLE` (then ``a`` for ever) every ``TRICKLE_EVERY_S``
    seconds on each connection; otherwise says nothing. ``bytes_sent`` counts what was trickled.
    """

    def __init__(self, *, trickle: bool) -> None:
        self.trickle = trickle
        self.accepted = 0
        self.bytes_sent = 0
        self._stop = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.port: int = self._listener.getsockname()[1]
        self._threads: list[threading.Thread] = [threading.Thread(target=self._accept, daemon=True)]
        self._conns: list[socket.socket] = []

    def __enter__(self) -> StallingServer:
        self._threads[0].start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop listening and drop every connection (the port is free again). Idempotent."""
        self._stop.set()
        for thread in list(self._threads):
            if thread.ident is not None:
                thread.join(5)
        self._listener.close()
        for conn in self._conns:
            conn.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            self.accepted += 1
            self._conns.append(conn)
            if self.trickle:
                thread = threading.Thread(target=self._trickle, args=(conn,), daemon=True)
                self._threads.append(thread)
                thread.start()

    def _trickle(self, conn: socket.socket) -> None:
        position = 0
        while not self._stop.wait(TRICKLE_EVERY_S):
            byte = TRICKLE[position:position + 1] or b"a"
            try:
                conn.sendall(byte)
            except OSError:  # the client gave up on this connection
                return
            position += 1
            self.bytes_sent += 1


def start_on(port: int, tmp_path, engines: list[Service], scheme: str = "ws") -> tuple[Service, BinanceSource]:
    """A service whose spot source connects to ``<scheme>://127.0.0.1:<port>`` with a 1 s handshake deadline."""
    settings = Settings.of(source="binance", ws_url=f"{scheme}://127.0.0.1:{port}", data_dir=tmp_path,
                           connect_timeout=CONNECT_TIMEOUT_S, **FAST)
    source = BinanceSource.from_settings(settings.feed)
    engine = Service.start(settings, source=source)
    engines.append(engine)
    return engine, source


def handshake_timed_out(engine: Service) -> bool:
    error = engine.status().last_error or ""
    return f"handshake with 127.0.0.1 took longer than {CONNECT_TIMEOUT_S:g} s" in error


@pytest.mark.parametrize("trickle", [True, False], ids=["trickling-headers", "silent"])
def test_a_stalled_handshake_fails_by_its_deadline_then_reconnects_when_a_server_listens(trickle, tmp_path,
                                                                                          engines):
    with StallingServer(trickle=trickle) as stalling:
        engine, source = start_on(stalling.port, tmp_path, engines)
        eventually(lambda: stalling.accepted >= 1, timeout=5, message="the source never connected over TCP")
        # The first attempt ends by its deadline (plus slack for a busy machine), named as a handshake timeout.
        eventually(lambda: handshake_timed_out(engine), timeout=CONNECT_TIMEOUT_S + SLACK_S,
                   message=lambda: f"no handshake timeout reported; last error {engine.status().last_error!r}")
        assert engine.status().state is not FeedState.CONNECTED
        # ... and is retried on the backoff, each retry failing the same way.
        eventually(lambda: stalling.accepted >= 3, timeout=3 * (CONNECT_TIMEOUT_S + SLACK_S))
        assert engine.status().state in (FeedState.RECONNECTING, FeedState.CONNECTING) and handshake_timed_out(engine)
        if trickle:
            assert stalling.bytes_sent >= 3  # the server did keep sending: each byte arrived within a read timeout
        port = stalling.port
    assert source.connections_opened == 0
    # A real server now listens on the same address: the next retry connects and trades flow.
    with FakeBinance(ping_interval=0.2, port=port) as fake:
        eventually(lambda: fake.open_connections == 1 and engine.status().state is FeedState.CONNECTED, timeout=10)
        fake.send_trade("ETHUSDT", 7, 3100.0, 1.0)
        eventually(lambda: engine.engine.trades == 1)
        assert engine.stop()
    errors = events(engine, EventKind.ERROR)
    # The two attempts before the third one accepted timed out (the third was cut by the server stopping).
    assert sum("handshake with 127.0.0.1 took longer than 1 s" in e for e in errors) >= 2, errors


def test_a_tls_handshake_the_server_never_answers_fails_by_the_deadline(tmp_path, engines):
    """wss://: the TLS handshake waits for a ServerHello that never comes; the same deadline ends it."""
    with StallingServer(trickle=False) as stalling:
        engine, source = start_on(stalling.port, tmp_path, engines, scheme="wss")
        eventually(lambda: handshake_timed_out(engine), timeout=CONNECT_TIMEOUT_S + SLACK_S,
                   message=lambda: f"no handshake timeout reported; last error {engine.status().last_error!r}")
        eventually(lambda: stalling.accepted >= 2, timeout=CONNECT_TIMEOUT_S + SLACK_S)  # retried
        assert source.connections_opened == 0
        assert engine.stop()


def test_a_handshake_deadline_already_passed_opens_no_socket():
    """The deadline runs on the caller's clock: once it has passed, nothing is attempted."""
    clock = ManualClock()
    with pytest.raises(TimeoutError, match="deadline passed"):
        open_socket("127.0.0.1", 9, tls=False, deadline=clock() - 0.001, clock=clock)


def test_deadline_socket_waits_only_what_is_left_then_refuses():
    """Each read waits at most what is left before the deadline (on the injected clock); after it, none."""
    clock = ManualClock()
    ours, theirs = socket.socketpair()
    with ours, theirs:
        wrapped = DeadlineSocket(ours, deadline=clock() + 10.0, clock=clock)
        theirs.sendall(b"HT")
        assert wrapped.recv(1) == b"H"
        assert ours.gettimeout() == pytest.approx(10.0)
        clock.advance(9.75)
        assert wrapped.gettimeout() == pytest.approx(0.25)
        assert wrapped.recv(1) == b"T"
        assert ours.gettimeout() == pytest.approx(0.25)
        with pytest.raises(TimeoutError):  # nothing more arrives: the read ends with what was left
            wrapped.recv(1)
        clock.advance(0.25)
        theirs.sendall(b"TP")
        with pytest.raises(TimeoutError, match="deadline passed"):  # data waiting, but too late
            wrapped.recv(1)
