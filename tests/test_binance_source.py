"""BinanceSource + Engine against the fake Binance server on 127.0.0.1 (real protocol, real trades).

The tests taking the ``fake`` fixture run on both venues: spot (``binance``) and USDⓈ-M futures
(``binance-futures``, the fake speaking the futures payload). Timings are shortened (ping every
0.3 s, watchdog 1 s, backoff ≤ 0.5 s) so each fault recovers within a second or two; every wait is
a deadline poll.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator

import pytest

from config import Settings
from ingestion.binance import SPOT, USDM
from ingestion.binance.stream import BinanceSource, stream_names
from records import EventKind, FeedState
from records.clock import Clock
from service import Service
from storage.sqlite.ticks import SqliteTickStore
from testkit.clocks import ManualClock
from testkit.fake_binance import FakeBinance, RecordedTrade, load_recorded_trades
from testkit.waiting import eventually
from tests.shared_data import TICKS_NDJSON, require

FAST = {
    "history_hours": 0,  # no klines: tests/test_history.py covers history against a fake REST server
    "ping_interval": 0.3,
    "pong_timeout": 1.0,
    "stale_after": 1.0,
    "backoff_initial": 0.05,
    "backoff_max": 0.5,
    "stable_after": 0.5,
    "backfill_max_trades": 0,  # gap backfill over REST has its own tests (test_backfill.py)
}


@pytest.fixture(params=["binance", "binance-futures"])
def fake(request: pytest.FixtureRequest) -> Iterator[FakeBinance]:
    with FakeBinance(ping_interval=0.2, futures=request.param == "binance-futures") as server:
        yield server


def source_of(fake: FakeBinance) -> str:
    """The registered source that speaks ``fake``'s venue."""
    return "binance-futures" if fake.futures else "binance"


@pytest.fixture
def recorded() -> list[RecordedTrade]:
    return load_recorded_trades(require(TICKS_NDJSON))


def start_engine(fake: FakeBinance, tmp_path, *, clock: Clock | None = None, **changes) -> Service:
    """A service on ``fake`` with FAST timings and ``changes``; its source on ``clock`` when one is given."""
    settings = Settings.of(source=source_of(fake), ws_url=fake.url, data_dir=tmp_path, **{**FAST, **changes})
    venue = USDM if fake.futures else SPOT
    source = None if clock is None else BinanceSource.from_settings(settings.feed, venue=venue, clock=clock)
    engine = Service.start(settings, source=source)
    eventually(lambda: fake.open_connections == 1, timeout=5, message="client never connected")
    return engine


def streams_of(fake: FakeBinance, *symbols: str) -> list[str]:
    """The streams a client of ``fake``'s venue asks for ``symbols``: trades, plus mark price on USDⓈ-M."""
    return stream_names(symbols, USDM if fake.futures else SPOT)


def leg(fake: FakeBinance, symbol: str) -> str:
    """What the feed of ``fake``'s venue calls the exchange's ``symbol``: ``BTCUSDT`` spot, ``BTCUSDT.P`` perpetual."""
    return symbol + ".P" if fake.futures else symbol


def stored(engine: Service) -> dict[str, list[int]]:
    with SqliteTickStore(engine.site.ticks_path) as store:
        return {s: list(store.ticks(s).trade_id) for s in store.symbols()}


def events(engine: Service, kind: EventKind) -> list[str]:
    with SqliteTickStore(engine.site.ticks_path) as store:
        return [e.detail for e in store.feed_events(kinds=[kind])]


def test_subscribes_to_one_combined_stream_and_stores_real_trades(fake, recorded, tmp_path):
    engine = start_engine(fake, tmp_path)
    assert fake.paths == [f"{fake.combined_path}?streams=" + "/".join(streams_of(fake, "BTCUSDT", "ETHUSDT"))]
    fake.send_recorded(recorded)
    eventually(lambda: engine.writer.committed_trades == len(recorded), timeout=15)
    rows = stored(engine)
    assert len(rows[leg(fake, "ETHUSDT")]) == 14_978 and len(rows[leg(fake, "BTCUSDT")]) == 4_204
    last_btc = [t for t in recorded if t.symbol == "BTCUSDT"][-1]
    assert engine.engine.last_trade(leg(fake, "BTCUSDT")).price == last_btc.price
    assert engine.engine.last_trade(leg(fake, "BTCUSDT")).ts_ms == last_btc.ts_ms
    status = engine.status()
    assert status.state is FeedState.CONNECTED and status.gaps == 0 and status.duplicates == 0
    assert engine.stop()


def test_answers_server_pings_with_their_payload(tmp_path):
    with FakeBinance(ping_interval=0.1, ping_payload=b"binance-ping") as fake:
        engine = start_engine(fake, tmp_path)
        eventually(lambda: fake.pongs_received >= 3)
        assert fake.last_pong_payload == b"binance-ping"
        engine.stop()


@pytest.mark.parametrize("fault", ["abort", "close_1001"])
def test_reconnects_after_a_drop_and_stores_resends_once(fake, recorded, tmp_path, fault):
    engine = start_engine(fake, tmp_path)
    first, rest = recorded[:5000], recorded[5000:10000]
    fake.send_recorded(first)
    eventually(lambda: engine.engine.trades == 5000, timeout=10)
    if fault == "abort":
        fake.abort_all()
    else:
        fake.close_all(code=1001, reason="going away")
    eventually(lambda: fake.connections_accepted == 2, timeout=5, message="no reconnect")
    eventually(lambda: engine.status().state is FeedState.CONNECTED)
    # Like a real reconnect, the new connection re-sends some trades already seen.
    fake.send_recorded(recorded[4000:10000])
    eventually(lambda: engine.engine.trades == 10000, timeout=10)
    assert engine.stop()
    rows = stored(engine)
    assert sum(len(ids) for ids in rows.values()) == 10_000
    assert all(len(set(ids)) == len(ids) for ids in rows.values())
    status = engine.status()
    assert status.reconnects == 1 and status.duplicates == 1000 and status.gaps == 0
    disconnects = events(engine, EventKind.DISCONNECTED)
    assert len(disconnects) == 1
    assert ("1001" in disconnects[0]) if fault == "close_1001" else ("connection lost" in disconnects[0])
    assert len(rest) == 5000


def test_gap_in_trade_ids_is_recorded(fake, tmp_path):
    engine = start_engine(fake, tmp_path)
    fake.send_trades([("BTCUSDT", i, 90_000.0, 0.01) for i in (100, 101, 102, 110, 111)])
    eventually(lambda: engine.writer.committed_trades == 5)
    eventually(lambda: events(engine, EventKind.GAP) == ["first_missing=103 count=7"])
    status = engine.status()
    assert status.gaps == 1 and status.missing_trades == 7
    engine.stop()


def test_half_open_socket_is_detected_and_replaced(tmp_path):
    # The watchdog runs on a manual clock: what is checked is when, on the source's own time, it
    # gives up on a silent socket, not how fast this machine polls. No server pings: a handshake
    # made while the fake is silent gets no answer, and pings written to that connection once the
    # silence ends would keep the client's handshake read from ever timing out.
    clock = ManualClock()
    with FakeBinance(ping_interval=None) as fake:
        engine = start_engine(fake, tmp_path, clock=clock, stale_after=1.0, pong_timeout=0.8)
        try:
            fake.send_trade("BTCUSDT", 1, 90_000.0, 0.01)
            eventually(lambda: engine.engine.trades == 1)
            fake.set_silent(True)  # TCP stays open; no data, no pongs

            def watchdog_looked() -> None:
                """Wait (real time, bounded) until the source has read its clock a few more times."""
                reads = clock.reads
                eventually(lambda: clock.reads >= reads + 3, message="the source stopped reading its clock")

            clock.advance(0.4)  # past ping_interval (0.3 s): the source pings, and no pong comes
            watchdog_looked()
            clock.advance(0.4)  # 0.8 s without a frame (stale_after 1 s), 0.4 s without a pong (timeout 0.8 s)
            watchdog_looked()
            assert events(engine, EventKind.DISCONNECTED) == []  # still within both bounds: kept
            clock.advance(0.5)  # 1.3 s: past both
            eventually(lambda: events(engine, EventKind.DISCONNECTED), timeout=5,
                       message="half-open socket not detected")
            fake.set_silent(False)
            # A handshake attempted while the fake was silent times out (5 s: the fake counted it, the
            # client never got its answer); the next one succeeds. Wait for the client's second "connected".
            eventually(lambda: len(events(engine, EventKind.CONNECTED)) >= 2, timeout=15,
                       message="no reconnect after half-open")
            fake.send_trade("BTCUSDT", 2, 90_001.0, 0.01)
            eventually(lambda: engine.engine.trades == 2)
            reason = events(engine, EventKind.DISCONNECTED)[0]
            assert "no pong" in reason or "no data" in reason
        finally:
            engine.stop()


def test_server_shutdown_notice_rolls_over_without_a_gap(fake, recorded, tmp_path):
    engine = start_engine(fake, tmp_path)
    fake.send_recorded(recorded[:3000])
    eventually(lambda: engine.engine.trades == 3000)
    fake.send_server_shutdown()
    # The new connection opens while the old one is still open: both get the next trades.
    eventually(lambda: fake.connections_accepted == 2, timeout=5)
    fake.send_recorded(recorded[3000:6000])
    eventually(lambda: events(engine, EventKind.ROLLOVER) != [], timeout=10)
    fake.send_recorded(recorded[6000:8000])
    eventually(lambda: engine.engine.trades == 8000, timeout=10)
    engine.stop()
    assert sum(len(ids) for ids in stored(engine).values()) == 8000
    status = engine.status()
    assert status.gaps == 0 and status.reconnects == 0  # a planned rollover is not a reconnect
    assert events(engine, EventKind.SHUTDOWN_NOTICE)


def test_connection_age_limit_rolls_over_with_overlap(fake, recorded, tmp_path):
    engine = start_engine(fake, tmp_path, max_connection_age=1.0)
    eventually(lambda: fake.connections_accepted >= 2, timeout=5, message="no rollover at the age limit")
    eventually(lambda: events(engine, EventKind.ROLLOVER) != [], timeout=10)
    fake.send_recorded(recorded[:2000])
    eventually(lambda: engine.engine.trades == 2000, timeout=10)
    assert engine.status().gaps == 0
    engine.stop()


def test_refused_connections_back_off_and_recover(fake, tmp_path):
    fake.refuse_connections(True)
    settings = Settings.of(source=source_of(fake), ws_url=fake.url, data_dir=tmp_path,
                           **{**FAST, "backoff_max": 0.4})
    engine = Service.start(settings)
    eventually(lambda: len(fake.connect_attempts) >= 6, timeout=10)
    status = engine.status()
    assert status.state is FeedState.RECONNECTING and "503" in status.last_error
    attempts = list(fake.connect_attempts)
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    assert max(gaps) <= 0.4 + 0.3  # capped (plus handshake time)
    fake.refuse_connections(False)
    eventually(lambda: fake.open_connections == 1, timeout=5)
    fake.send_trade("ETHUSDT", 7, 3100.0, 1.0)
    eventually(lambda: engine.engine.trades == 1)
    engine.stop()
    assert len(events(engine, EventKind.ERROR)) >= 5


def test_malformed_and_unknown_messages_are_counted_not_fatal(fake, tmp_path):
    engine = start_engine(fake, tmp_path)
    fake.send_raw("{not json")
    fake.send_raw('{"stream":"btcusdt@trade","data":{"e":"trade","s":"BTCUSDT"}}')
    fake.send_raw('{"stream":"btcusdt@aggTrade","data":{"e":"aggTrade","E":1}}')
    fake.send_trade("BTCUSDT", 1, 90_000.0, 0.5)
    eventually(lambda: engine.engine.trades == 1)
    status = engine.status()
    assert status.parse_errors == 2 and status.unknown_messages == 1
    assert status.state is FeedState.CONNECTED and fake.connections_accepted == 1
    assert "malformed" in status.last_error
    engine.stop()


def test_stop_flushes_everything_received(fake, recorded, tmp_path):
    engine = start_engine(fake, tmp_path)
    fake.send_recorded(recorded)
    eventually(lambda: engine.engine.trades == len(recorded), timeout=15)
    assert engine.stop()  # no waiting for the writer first: stop() itself must flush
    assert sum(len(ids) for ids in stored(engine).values()) == len(recorded)
    assert engine.status().state is FeedState.STOPPED


def test_watching_more_symbols_subscribes_on_the_open_connection_and_loses_nothing(fake, tmp_path):
    """Another tab adds SOLUSDT: one SUBSCRIBE on the same socket, no reconnect, no gap in BTC/ETH.
    On USDⓈ-M the request carries both of SOLUSDT's streams and its mark price then arrives."""
    engine = start_engine(fake, tmp_path)
    fake.send_trades([("BTCUSDT", i, 90_000.0, 0.01) for i in range(1, 51)])
    fake.send_trades([("SOLUSDT", 7, 130.0, 1.0)])  # not subscribed yet: the server does not deliver it
    eventually(lambda: engine.writer.committed_trades == 50)
    engine.watch(["SOLUSDT"])
    every = streams_of(fake, "BTCUSDT", "ETHUSDT", "SOLUSDT")
    eventually(lambda: fake.subscriptions == [frozenset(every)], message=lambda: f"subscriptions {fake.subscriptions}")
    fake.send_trades([("BTCUSDT", i, 90_000.0, 0.01) for i in range(51, 101)] +
                     [("SOLUSDT", i, 130.0, 1.0) for i in range(8, 18)])
    eventually(lambda: engine.writer.committed_trades == 110)
    assert engine.symbols == tuple(leg(fake, s) for s in ("BTCUSDT", "ETHUSDT", "SOLUSDT"))
    assert fake.connections_accepted == 1 and engine.status().gaps == 0 and engine.status().reconnects == 0
    sol = streams_of(fake, "SOLUSDT")
    assert f'"method": "SUBSCRIBE", "params": {json.dumps(sol)}' in str(fake.client_messages)
    assert any(f"subscribe {'/'.join(sol)}" in detail for detail in events(engine, EventKind.SUBSCRIBED))
    if fake.futures:
        fake.send_mark_price("SOLUSDT", 130.5, 130.4, 0.0001, 1765814400000)
        eventually(lambda: engine.mark_price("SOLUSDT.P") is not None, message="SOLUSDT.P's mark price never arrived")
    # A reconnect asks for every watched stream in its URL.
    fake.close_all()
    eventually(lambda: fake.connections_accepted == 2, timeout=10)
    assert fake.paths[-1] == f"{fake.combined_path}?streams=" + "/".join(every)
    if fake.futures:  # the new connection carries the mark prices too (sent until one arrives: latest wins)
        eventually(lambda: fake.send_mark_price("ETHUSDT", 3_000.5, 3_000.1, -0.0002, 1765814400000) >= 0
                   and engine.mark_price("ETHUSDT.P") is not None, message="no mark price after the reconnect")
    assert engine.stop()
    assert stored(engine)[leg(fake, "BTCUSDT")] == list(range(1, 101))
    assert stored(engine)[leg(fake, "SOLUSDT")] == list(range(8, 18))


def test_stop_closes_the_connection(fake, tmp_path):
    """Was: the socket stayed open after stop (until garbage collection), so the exchange saw no goodbye
    and a server serving one client at a time (bench/ingest.py's flood server) waited for ever."""
    engine = start_engine(fake, tmp_path)
    fake.send_trade("BTCUSDT", 1, 90_000.0, 0.01)
    eventually(lambda: engine.engine.trades == 1)
    assert engine.stop()
    eventually(lambda: fake.open_connections == 0, timeout=5, message="the client left its connection open")
