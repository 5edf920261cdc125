"""Self-tests of the fake Binance server (testkit/fake_binance.py), driven by websocket-client.

Each test starts its own server on an ephemeral 127.0.0.1 port; waits are deadline polls
(``eventually``) or socket timeouts, never fixed sleeps.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import struct
import threading
import time
from collections.abc import Iterator

import pytest
import websocket
from websocket import ABNF

from ingestion.binance.parse import MalformedMessage, ServerShutdown, UnknownMessage, parse_frame
from records import Trade
from testkit.fake_binance import (
    DEFAULT_TICKS_PATH,
    FakeBinance,
    RecordedTrade,
    load_recorded_trades,
    parse_stream_path,
    spot_trade_frame,
)
from testkit.waiting import eventually
from tests.shared_data import require

BOTH = "/stream?streams=btcusdt@trade/ethusdt@trade"


@pytest.fixture
def server() -> Iterator[FakeBinance]:
    with FakeBinance(ping_interval=None) as fake:
        yield fake


@contextlib.contextmanager
def connect(fake: FakeBinance, path: str = BOTH, timeout: float = 2.0) -> Iterator[websocket.WebSocket]:
    """Open a websocket-client connection; drop the socket on exit (no close handshake wait)."""
    ws = websocket.create_connection(fake.url + path, timeout=timeout, skip_utf8_validation=True)
    try:
        yield ws
    finally:
        ws.shutdown()


def read_until_close(ws: websocket.WebSocket, *, answer_pings: bool = True) -> tuple[int, bytes, list[int]]:
    """Read frames until a close frame; return (close code, reason, opcodes seen before it).

    With ``answer_pings=False`` frames are read with ``recv_frame``, which never sends a pong.
    """
    seen: list[int] = []
    while True:
        if answer_pings:
            opcode, frame = ws.recv_data_frame(control_frame=True)
        else:
            frame = ws.recv_frame()
            opcode = frame.opcode
        if opcode == ABNF.OPCODE_CLOSE:
            (code,) = struct.unpack("!H", frame.data[:2])
            return code, frame.data[2:], seen
        seen.append(opcode)


def recv_text(ws: websocket.WebSocket) -> str:
    """Next data frame as text, skipping (and answering) pings."""
    opcode, data = ws.recv_data()
    assert opcode == ABNF.OPCODE_TEXT, opcode
    return data.decode()


# ---- handshake and subscriptions -------------------------------------------------------------


def test_handshake_records_path_attempt_and_open_connection(server: FakeBinance) -> None:
    before = time.monotonic()
    with connect(server) as ws:
        eventually(lambda: server.open_connections == 1)
        assert server.connections_accepted == 1
        assert server.paths == [BOTH]
        assert len(server.connect_attempts) == 1 and server.connect_attempts[0] >= before
        assert server.subscriptions == [frozenset({"btcusdt@trade", "ethusdt@trade"})]
        ws.close(timeout=1)
    eventually(lambda: server.open_connections == 0)


def test_send_trade_is_exact_spot_wire_format_and_parses(server: FakeBinance) -> None:
    with connect(server) as ws:
        eventually(lambda: server.open_connections == 1)
        assert server.send_trade("BTCUSDT", 5612345678, 89806.8, 0.002, ts_ms=1765788195443, buyer_is_maker=True) == 1
        frame = recv_text(ws)
    assert frame == (
        '{"stream":"btcusdt@trade","data":{"e":"trade","E":1765788195444,"s":"BTCUSDT","t":5612345678,'
        '"p":"89806.80000000","q":"0.00200000","T":1765788195443,"m":true,"M":true}}'
    )
    assert frame == spot_trade_frame("BTCUSDT", 5612345678, 89806.8, 0.002, 1765788195443, True)
    assert parse_frame(frame, recv_ms=7) == Trade("BTCUSDT", 5612345678, 1765788195443, 7, 89806.8, 0.002, True)


def test_send_trade_defaults_timestamp_to_now(server: FakeBinance) -> None:
    with connect(server) as ws:
        eventually(lambda: server.open_connections == 1)
        before = time.time() * 1000
        server.send_trade("ethusdt", 3_000_000_001, 3139.77, 0.054)
        trade = parse_frame(recv_text(ws), recv_ms=0)
    assert isinstance(trade, Trade)
    assert trade.symbol == "ETHUSDT" and trade.buyer_is_maker is False
    assert before - 1 <= trade.ts_ms <= time.time() * 1000 + 1


def test_last_write_time_is_when_a_trade_reached_a_socket(server: FakeBinance) -> None:
    """bench/viewers.py times tick → browser from it: set only by a frame written, not by one nobody gets."""
    assert server.send_trade("ETHUSDT", 1, 3139.77, 0.1) == 0
    assert server.last_write_time is None
    with connect(server) as ws:
        eventually(lambda: server.open_connections == 1)
        before = time.time()
        assert server.send_trade("ETHUSDT", 2, 3139.78, 0.1) == 1
        after = time.time()
        assert server.send_trade("SOLUSDT", 3, 130.0, 1.0) == 0  # no subscriber: not a write
        recv_text(ws)
    assert server.last_write_time is not None and before <= server.last_write_time <= after


def test_only_subscribed_connections_receive_a_symbol(server: FakeBinance) -> None:
    with (
        connect(server, "/stream?streams=btcusdt@trade") as btc,
        connect(server, "/stream?streams=ethusdt@trade") as eth,
        connect(server, "/ws/ethusdt@trade") as raw_eth,
    ):
        eventually(lambda: server.open_connections == 3)
        assert server.send_trade("BTCUSDT", 1, 89806.8, 0.1, ts_ms=1_765_788_195_000) == 1
        assert server.send_trade("ETHUSDT", 2, 3139.77, 0.2, ts_ms=1_765_788_195_001) == 2
        assert server.send_trade("SOLUSDT", 3, 130.0, 1.0, ts_ms=1_765_788_195_002) == 0
        btc_frame, eth_frame, raw_frame = recv_text(btc), recv_text(eth), recv_text(raw_eth)
        # The BTC client's next frame is the marker, not the ETH trade.
        server.send_raw("marker")
        assert recv_text(btc) == "marker"
    assert json.loads(btc_frame)["stream"] == "btcusdt@trade"
    assert json.loads(eth_frame)["stream"] == "ethusdt@trade"
    assert raw_frame == json.dumps(json.loads(eth_frame)["data"], separators=(",", ":"))  # raw: unwrapped
    assert parse_frame(raw_frame, 0) == parse_frame(eth_frame, 0)


def test_subscription_requests_over_the_socket(server: FakeBinance) -> None:
    with connect(server, "/stream?streams=btcusdt@trade") as ws:
        ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["ethusdt@trade"], "id": 7}))
        assert json.loads(recv_text(ws)) == {"result": None, "id": 7}
        ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 8}))
        assert json.loads(recv_text(ws)) == {"result": ["btcusdt@trade", "ethusdt@trade"], "id": 8}
        server.send_trade("ETHUSDT", 9, 3139.77, 0.2, ts_ms=1_765_788_195_001)
        assert json.loads(recv_text(ws))["data"]["t"] == 9
        ws.send("hello")
        assert "error" in json.loads(recv_text(ws))
    assert server.client_messages[-1] == "hello"


@pytest.mark.parametrize(
    "path",
    [
        "/stream?streams=",
        "/stream",
        "/stream?streams=BTCUSDT@trade",
        "/stream?streams=btcusdt",
        "/stream?streams=btcusdt@trade&streams=ethusdt@trade",
        "/stream?streams=btcusdt@trade//ethusdt@trade",
        "/ws/",
        "/",
        "/api/v3/trades",
    ],
)
def test_malformed_paths_get_http_400(server: FakeBinance, path: str) -> None:
    with pytest.raises(websocket.WebSocketBadStatusException) as info:
        websocket.create_connection(server.url + path, timeout=2)
    assert info.value.status_code == 400
    assert server.paths == [path]
    assert server.connections_accepted == 0


def test_parse_stream_path() -> None:
    assert parse_stream_path(BOTH) == (False, ("btcusdt@trade", "ethusdt@trade"))
    assert parse_stream_path("/stream?streams=btcusdt%40trade") == (False, ("btcusdt@trade",))
    assert parse_stream_path("/ws/btcusdt@trade/ethusdt@aggTrade") == (True, ("btcusdt@trade", "ethusdt@aggTrade"))
    with pytest.raises(ValueError, match="invalid stream name"):
        parse_stream_path("/stream?streams=BTCUSDT@trade")
    with pytest.raises(ValueError, match="unknown endpoint"):
        parse_stream_path("/socket")


# ---- keepalive ------------------------------------------------------------------------------


def test_server_pings_arrive_and_pongs_are_counted() -> None:
    with FakeBinance(ping_interval=0.05, ping_payload=b"binance-hb") as fake, connect(fake) as ws:
        opcode, frame = ws.recv_data_frame(control_frame=True)  # answers the ping with a pong
        assert opcode == ABNF.OPCODE_PING and frame.data == b"binance-hb"
        eventually(lambda: fake.pongs_received >= 1)
        assert fake.last_pong_payload == b"binance-hb"
        assert fake.pings_sent >= 1


def test_client_ping_is_answered(server: FakeBinance) -> None:
    with connect(server) as ws:
        ws.ping(b"are-you-there")
        opcode, frame = ws.recv_data_frame(control_frame=True)
    assert opcode == ABNF.OPCODE_PONG and frame.data == b"are-you-there"
    eventually(lambda: server.pings_received == 1)  # counted just after the automatic pong is written


def test_pong_deadline_closes_a_client_that_never_pongs() -> None:
    with FakeBinance(ping_interval=0.05, pong_deadline=0.15, close_timeout=0.2) as fake, connect(fake) as ws:
        code, reason, seen = read_until_close(ws, answer_pings=False)
        assert (code, reason) == (1008, b"pong timeout")
        assert seen and set(seen) == {ABNF.OPCODE_PING}
        assert fake.pong_timeouts == 1 and fake.pongs_received == 0
        eventually(lambda: fake.open_connections == 0)


def test_answered_pings_keep_the_connection_within_the_pong_deadline() -> None:
    with FakeBinance(ping_interval=0.03, pong_deadline=0.1) as fake, connect(fake) as ws:
        while fake.pongs_received < 5:
            opcode, _ = ws.recv_data_frame(control_frame=True)
            assert opcode == ABNF.OPCODE_PING
        assert fake.pong_timeouts == 0 and fake.open_connections == 1


# ---- disconnects ----------------------------------------------------------------------------


def test_close_all_sends_close_code_1001(server: FakeBinance) -> None:
    with connect(server) as ws:
        eventually(lambda: server.open_connections == 1)
        assert server.close_all(1001, "maintenance") == 1
        code, reason, _ = read_until_close(ws)
        assert (code, reason) == (1001, b"maintenance")
        ws.shutdown()  # the server closes TCP as soon as the client does (else after close_timeout)
        eventually(lambda: server.open_connections == 0)


def test_max_connection_age_closes_with_1001() -> None:
    with FakeBinance(ping_interval=None, max_connection_age=0.2) as fake, connect(fake) as ws:
        opened = time.monotonic()
        code, reason, _ = read_until_close(ws)
        assert (code, reason) == (1001, b"connection age limit")
        assert time.monotonic() - opened >= 0.15
        ws.shutdown()
        eventually(lambda: fake.open_connections == 0)


@pytest.mark.parametrize("reset", [True, False])
def test_abort_all_drops_tcp_without_close_frame(server: FakeBinance, reset: bool) -> None:
    with connect(server) as ws:
        eventually(lambda: server.open_connections == 1)
        assert server.abort_all(reset=reset) == 1
        # A close frame would be returned here; an abrupt drop raises instead.
        with pytest.raises((OSError, websocket.WebSocketConnectionClosedException)):
            ws.recv_data_frame(control_frame=True)
        eventually(lambda: server.open_connections == 0)


def test_set_silent_swallows_data_pongs_and_server_pings() -> None:
    with FakeBinance(ping_interval=0.05) as fake, connect(fake, timeout=0.3) as ws:
        eventually(lambda: fake.open_connections == 1)
        fake.set_silent(True)
        pings_before = fake.pings_sent
        ws.ping(b"hello?")
        assert fake.send_trade("BTCUSDT", 1, 89806.8, 0.1) == 0
        eventually(lambda: fake.pings_received == 1)  # the ping did reach the server
        # Nothing at all arrives: no pong, no trade, no server ping (ping_interval is 0.05 s).
        with pytest.raises(websocket.WebSocketTimeoutException):
            ws.recv_data_frame(control_frame=True)
        assert fake.pings_sent == pings_before
        assert fake.frames_dropped == 1
        assert fake.open_connections == 1  # TCP stays up

        fake.set_silent(False)
        fake.send_trade("BTCUSDT", 2, 89806.8, 0.1, ts_ms=1_765_788_195_000)
        opcodes = []
        while True:
            opcode, frame = ws.recv_data_frame(control_frame=True)
            if opcode == ABNF.OPCODE_TEXT:
                break
            opcodes.append(opcode)
        assert json.loads(frame.data)["data"]["t"] == 2  # the swallowed trade 1 is gone for good
        assert ABNF.OPCODE_PONG not in opcodes  # the swallowed pong is never sent late


def test_refuse_connections_with_http_503_records_attempts(server: FakeBinance) -> None:
    server.refuse_connections(True)
    for _ in range(2):
        with pytest.raises(websocket.WebSocketBadStatusException) as info:
            websocket.create_connection(server.url + BOTH, timeout=2)
        assert info.value.status_code == 503
    assert len(server.connect_attempts) == 2 and server.handshakes_refused == 2
    assert server.paths == [BOTH, BOTH] and server.connections_accepted == 0

    server.refuse_connections(False)
    with connect(server):
        eventually(lambda: server.connections_accepted == 1)
    assert len(server.connect_attempts) == 3


def test_refuse_connections_by_dropping_tcp(server: FakeBinance) -> None:
    server.refuse_connections(True, status=None)
    with pytest.raises((OSError, websocket.WebSocketException)):
        websocket.create_connection(server.url + BOTH, timeout=2)
    assert len(server.connect_attempts) == 1 and server.handshakes_refused == 1
    assert server.paths == [] and server.connections_accepted == 0


# ---- other messages -------------------------------------------------------------------------


def test_server_shutdown_unwrapped_and_wrapped(server: FakeBinance) -> None:
    with connect(server) as ws:
        eventually(lambda: server.open_connections == 1)
        server.send_server_shutdown(event_ms=1765788195443)
        server.send_server_shutdown(stream="btcusdt@trade", event_ms=1765788195444)
        plain, wrapped = recv_text(ws), recv_text(ws)
    assert plain == '{"e":"serverShutdown","E":1765788195443}'
    assert wrapped == '{"stream":"btcusdt@trade","data":{"e":"serverShutdown","E":1765788195444}}'
    assert parse_frame(plain, 0) == ServerShutdown(1765788195443)
    assert parse_frame(wrapped, 0) == ServerShutdown(1765788195444)


def test_send_raw_arrives_verbatim(server: FakeBinance) -> None:
    with connect(server) as ws:
        eventually(lambda: server.open_connections == 1)
        server.send_raw('{"stream":"btcusdt@trade","data":{"e":"trade"')
        server.send_raw('{"e":"24hrTicker","E":1}')
        server.send_raw(b"\x00\x01")
        broken, unknown = recv_text(ws), recv_text(ws)
        assert ws.recv_data() == (ABNF.OPCODE_BINARY, b"\x00\x01")
    assert broken == '{"stream":"btcusdt@trade","data":{"e":"trade"'
    with pytest.raises(MalformedMessage):
        parse_frame(broken, 0)
    assert parse_frame(unknown, 0) == UnknownMessage("24hrTicker")


# ---- bulk and recorded data -----------------------------------------------------------------


def test_bulk_send_trades_arrive_complete_and_in_order(server: FakeBinance) -> None:
    n = 20_000
    trades = [
        (
            "BTCUSDT" if i % 3 else "ETHUSDT",
            5_000_000_000 + i,
            89_000.0 + i / 10,
            0.001,
            1_765_788_000_000 + i,
            i % 2 == 0,
        )
        for i in range(n)
    ]
    with connect(server, timeout=5) as ws:
        eventually(lambda: server.open_connections == 1)
        assert server.send_trades(trades) == n
        received = [parse_frame(recv_text(ws), 0) for _ in range(n)]
    assert [t.trade_id for t in received] == [t[1] for t in trades]
    assert received[-1] == Trade("BTCUSDT", 5_000_019_999, 1_765_788_019_999, 0, 90_999.9, 0.001, False)
    assert server.frames_sent == n


def test_load_recorded_trades_counts_and_synthesised_fields() -> None:
    trades = load_recorded_trades(require(DEFAULT_TICKS_PATH))
    assert DEFAULT_TICKS_PATH.name == "ticks_2025-12-15T08-50-11.076Z.ndjson"
    assert len(trades) == 19_182
    by_symbol = {s: [t for t in trades if t.symbol == s] for s in ("ETHUSDT", "BTCUSDT")}
    assert {s: len(v) for s, v in by_symbol.items()} == {"ETHUSDT": 14_978, "BTCUSDT": 4_204}
    assert all(t.price > 0 and t.qty > 0 for t in trades)
    for symbol, base in (("BTCUSDT", 5_000_000_000), ("ETHUSDT", 3_000_000_000)):
        rows = by_symbol[symbol]
        assert [t.trade_id for t in rows] == list(range(base, base + len(rows)))
        assert all(a.ts_ms <= b.ts_ms for a, b in itertools.pairwise(rows))
    assert trades[0] == RecordedTrade("ETHUSDT", 3_000_000_000, 1765788195300, 3139.77, 0.054, False)
    assert min(t.ts_ms for t in by_symbol["BTCUSDT"]) == 1765788195443  # 08:43:15.443Z
    assert {t.buyer_is_maker for t in trades} == {True, False}
    assert load_recorded_trades(symbols=["btcusdt"]) == by_symbol["BTCUSDT"]


def test_send_recorded_replays_real_ticks_in_spot_format(server: FakeBinance) -> None:
    trades = load_recorded_trades(require(DEFAULT_TICKS_PATH))
    with connect(server, timeout=5) as ws:
        eventually(lambda: server.open_connections == 1)
        assert server.send_recorded(trades) == len(trades)
        frames = [recv_text(ws) for _ in range(len(trades))]
    assert frames[0] == (
        '{"stream":"ethusdt@trade","data":{"e":"trade","E":1765788195301,"s":"ETHUSDT","t":3000000000,'
        '"p":"3139.77000000","q":"0.05400000","T":1765788195300,"m":false,"M":true}}'
    )
    parsed = [parse_frame(f, 0) for f in frames]
    assert [(t.symbol, t.trade_id, t.ts_ms, t.price, t.qty, t.buyer_is_maker) for t in parsed] == [
        (t.symbol, t.trade_id, t.ts_ms, t.price, t.qty, t.buyer_is_maker) for t in trades
    ]


# ---- lifecycle and helpers ------------------------------------------------------------------


def test_stop_closes_clients_joins_thread_and_is_idempotent() -> None:
    threads_before = set(threading.enumerate())
    fake = FakeBinance(ping_interval=0.05, close_timeout=0.2).start()
    url = fake.url
    with connect(fake) as ws:
        eventually(lambda: fake.open_connections == 1)
        fake.stop()
        code, _, _ = read_until_close(ws)
        assert code == 1001
    fake.stop()
    assert set(threading.enumerate()) <= threads_before
    with pytest.raises(ConnectionRefusedError):
        websocket.create_connection(url + BOTH, timeout=1)


def test_stop_is_bounded_when_the_client_never_answers_the_close() -> None:
    fake = FakeBinance(ping_interval=None, close_timeout=0.2).start()
    with connect(fake):
        eventually(lambda: fake.open_connections == 1)
        started = time.monotonic()
        fake.stop()
        assert time.monotonic() - started < 2.0


def test_eventually_and_wait_until(server: FakeBinance) -> None:
    eventually(lambda: True)
    assert server.wait_until(lambda: server.open_connections == 0, timeout=0.05)
    assert not server.wait_until(lambda: server.open_connections == 1, timeout=0.05)
    with pytest.raises(AssertionError, match="no client connected"):
        eventually(lambda: server.open_connections == 1, timeout=0.05, message="no client connected")


def test_a_futures_fake_sends_mark_prices_in_the_real_format_to_subscribers_only() -> None:
    with FakeBinance(ping_interval=None, futures=True) as fake, \
            connect(fake, "/market/stream?streams=btcusdt@trade/btcusdt@markPrice@1s") as btc, \
            connect(fake, "/market/stream?streams=btcusdt@trade") as trades_only:
        eventually(lambda: fake.open_connections == 2)
        assert fake.send_mark_price("BTCUSDT", 89806.8, 89811.54347826, 0.0001, 1765814400000,
                                    event_ms=1765788195000) == 1
        assert fake.send_mark_price("ETHUSDT", 3000.0, 3000.0, 0.0001, 1765814400000) == 0  # nobody subscribed
        frame = recv_text(btc)
        fake.send_raw("marker")
        assert recv_text(trades_only) == "marker"  # the trades-only client got no mark price
    assert frame == ('{"stream":"btcusdt@markPrice@1s","data":{"e":"markPriceUpdate","E":1765788195000,'
                     '"s":"BTCUSDT","p":"89806.80000000","P":"89806.80000000","i":"89811.54347826",'
                     '"r":"0.00010000","T":1765814400000}}')
    assert parse_frame(frame, 1).funding_rate == 0.0001


def test_a_spot_fake_has_no_mark_price_stream(server: FakeBinance) -> None:
    with pytest.raises(ValueError, match="spot has no markPrice stream"):
        server.send_mark_price("BTCUSDT", 1.0, 1.0, 0.0, 1)
