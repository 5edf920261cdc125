"""Fault injection against the fake Binance on 127.0.0.1: what was stored, what was recorded, how fast it recovered.

tests/test_binance_source.py checks each fault once on a quiet feed. Here the faults hit a feed under
load or in awkward orders (duplicates and late trades inside one connection, a 100k burst, refusals long
enough to reach the backoff cap, rollovers while trades keep flowing, junk frames in a steady stream,
close codes 1011/1013 and TCP aborts in the middle of a burst), and every test compares the set of
``(symbol, trade_id)`` rows in SQLite with what the fake sent.

A slow consumer (a long GC pause, CPU starvation) is simulated deterministically by ``stall_consumer``:
the engine blocks on one trade while the fake keeps writing, so a known backlog builds up on the socket.

Several of these found real defects (late trades dropped, hostile frames killing the feed, a pong
queued behind a backlog dropping a healthy connection, rollover losing a backlog); they now guard
the fixes.
"""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence

import pytest

from config import Settings
from ingestion.binance.stream import BinanceSource
from records import EventKind, FeedState, Trade
from service import Service
from storage.sqlite.ticks import SqliteTickStore
from testkit.clocks import RecordingClock, SlowClock
from testkit.fake_binance import FakeBinance
from testkit.waiting import eventually
from tests.test_binance_source import FAST, events, start_engine, stored

SYMBOLS = ("BTCUSDT", "ETHUSDT")
PRICES = {"BTCUSDT": 90_000.0, "ETHUSDT": 3_100.0}
# A wire trade as FakeBinance.send_trades takes it: (symbol, trade_id, price, qty, ts_ms).
WireTrade = tuple[str, int, float, float, int]


@pytest.fixture
def fake() -> Iterator[FakeBinance]:
    with FakeBinance(ping_interval=0.2) as server:
        yield server


@pytest.fixture
def launch(fake, tmp_path, engines) -> Callable[..., Service]:
    """``launch(**settings_changes)``: an engine connected to ``fake`` (FAST timings), stopped at teardown."""

    def launch(**changes: object) -> Service:
        engine = start_engine(fake, tmp_path, **changes)
        engines.append(engine)
        return engine

    return launch


def wire_trades(n: int, first_id: int = 1, symbols: Sequence[str] = SYMBOLS) -> list[WireTrade]:
    """``n`` trades cycling through ``symbols`` (consecutive ids per symbol), trade times ending now."""
    now = time.time_ns() // 1_000_000
    out = []
    for i in range(n):
        symbol = symbols[i % len(symbols)]
        out.append((symbol, first_id + i // len(symbols), PRICES[symbol] + (i % 17) * 0.01, 0.01, now - n + i))
    return out


def keys(trades: Sequence[WireTrade]) -> set[tuple[str, int]]:
    return {(t[0], t[1]) for t in trades}


def stored_keys(engine: Service) -> list[tuple[str, int]]:
    """Every stored ``(symbol, trade_id)``, one entry per row (so a duplicate row would show)."""
    return [(symbol, int(i)) for symbol, ids in stored(engine).items() for i in ids]


def assert_stored_exactly(engine: Service, expected: set[tuple[str, int]]) -> None:
    rows = stored_keys(engine)
    assert len(rows) == len(set(rows)), "a trade was stored twice"
    missing, extra = expected - set(rows), set(rows) - expected
    assert not missing and not extra, f"{len(missing)} missing (e.g. {sorted(missing)[:5]}), {len(extra)} unexpected"


def event_times(engine: Service, kind: EventKind) -> list[int]:
    """``ts_ms`` of the stored feed events of one kind, oldest first."""
    with SqliteTickStore(engine.site.ticks_path) as store:
        return sorted(e.ts_ms for e in store.feed_events(kinds=[kind]))


def stall_consumer(engine: Service, symbol: str, trade_id: int) -> tuple[threading.Event, threading.Event]:
    """Make ``engine`` a slow consumer: when handed ``(symbol, trade_id)`` it blocks (as in a long GC pause
    or CPU starvation) until ``release`` is set, without reading the socket; ``stalled`` says it blocks."""
    stalled, release = threading.Event(), threading.Event()
    on_trade = engine.engine.on_trade

    def slow_on_trade(trade: Trade) -> None:
        if trade.symbol == symbol and trade.trade_id == trade_id and not release.is_set():
            stalled.set()
            release.wait(10)
        on_trade(trade)

    engine.engine.on_trade = slow_on_trade  # type: ignore[method-assign]  # the source looks it up per trade
    return stalled, release


# ------------------------------------------------------------------------------------------------
# Duplicates and late trades inside one connection
# ------------------------------------------------------------------------------------------------

OUT_OF_ORDER_IDS = (1, 2, 2, 3, 5, 4, 6)


def test_duplicate_and_out_of_order_trades_in_one_connection(fake, launch):
    """The re-sent 2 is stored once; the late 4 is stored although the sequencer, which has seen 5,
    counts it with the re-sends (live views skip it) and has already reported it as a gap."""
    engine = launch()
    fake.send_trades([("BTCUSDT", i, 90_000.0 + i, 0.01) for i in OUT_OF_ORDER_IDS])
    eventually(lambda: engine.engine.source.stats.messages == len(OUT_OF_ORDER_IDS))
    assert engine.stop()
    assert stored(engine)["BTCUSDT"] == [1, 2, 3, 4, 5, 6]
    status = engine.status()
    assert (status.trades, status.duplicates, status.gaps, status.missing_trades) == (5, 2, 1, 1)
    assert events(engine, EventKind.GAP) == ["first_missing=4 count=1"]
    assert status.parse_errors == 0 and status.reconnects == 0


# ------------------------------------------------------------------------------------------------
# Burst
# ------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_burst_of_100k_trades_is_stored_exactly_once(fake, launch):
    # Production pong timeout: with FAST's 1 s the pong queued behind the burst trips it (see the next test).
    engine = launch(pong_timeout=30.0)
    burst = wire_trades(100_000)
    started = time.monotonic()
    fake.send_trades(burst)  # written without back-pressure: the client is the slow side
    eventually(lambda: engine.writer.committed_trades == 100_000, timeout=60,
               message=lambda: f"{engine.writer.committed_trades} of 100,000 committed after 60 s; {engine.status()}")
    elapsed = time.monotonic() - started
    status = engine.status()
    assert engine.stop()
    assert_stored_exactly(engine, keys(burst))
    assert elapsed < 60
    # The watchdog (stale_after=1 s) must not mistake a busy client for a dead socket.
    assert status.state is FeedState.CONNECTED and status.reconnects == 0 and fake.connections_accepted == 1
    assert (status.trades, status.duplicates, status.gaps, status.parse_errors) == (100_000, 0, 0, 0)
    assert status.last_tick_age_s is not None and status.last_tick_age_s < 60 and status.ticks_per_s >= 0
    assert engine.writer.backlog == 0 and engine.writer.error is None and status.last_error is None
    for symbol in SYMBOLS:
        last = [t for t in burst if t[0] == symbol][-1]
        assert (engine.engine.last_trade(symbol).trade_id, engine.engine.last_trade(symbol).price) == (last[1], last[2])
    assert events(engine, EventKind.DISCONNECTED) == [] and events(engine, EventKind.GAP) == []


def test_pong_queued_behind_a_backlog_does_not_drop_a_busy_connection(fake, launch):
    """A slow consumer (a stall as long as sending the burst takes) leaves ~11 MB on the socket; the pong
    to our next ping is queued behind it. Scaled down: pong timeout 0.25 s vs a backlog read in ≥ 0.5 s
    (production: 30 s vs a backlog of 30 s)."""
    engine = launch(ping_interval=0.05, pong_timeout=0.25, stale_after=5.0)
    burst = wire_trades(60_000)
    stalled, release = stall_consumer(engine, "BTCUSDT", 1)
    fake.send_trades(burst)
    eventually(stalled.is_set)
    release.set()
    eventually(lambda: engine.engine.trades == len(burst) or engine.status().reconnects > 0, timeout=30)
    assert engine.stop()
    assert events(engine, EventKind.DISCONNECTED) == [] and engine.status().reconnects == 0
    assert_stored_exactly(engine, keys(burst))


# ------------------------------------------------------------------------------------------------
# Refused connections: backoff
# ------------------------------------------------------------------------------------------------


class RecordingRandom(random.Random):
    """A seeded RNG that records every ``uniform(a, b)`` draw: the backoff's (ceiling, delay) pairs."""

    def __init__(self, seed: int) -> None:
        super().__init__(seed)
        self.draws: list[tuple[float, float]] = []

    def uniform(self, a: float, b: float) -> float:
        value = super().uniform(a, b)
        self.draws.append((b, value))
        return value


def test_refused_connections_back_off_exponentially_with_jitter_up_to_the_cap(fake, tmp_path, engines):
    initial, cap, attempts = 0.05, 0.8, 10
    fake.refuse_connections(True)
    settings = Settings.of(source="binance", ws_url=fake.url, data_dir=tmp_path,
                        **{**FAST, "backoff_initial": initial, "backoff_max": cap})
    rng = RecordingRandom(0)
    clock = RecordingClock()  # real waits (the fake keeps refusing meanwhile), each one recorded
    exchange = settings.feed.exchange
    source = BinanceSource(settings.feed.symbols, exchange.ws_url, ping_interval=exchange.ping_interval,
                           pong_timeout=exchange.pong_timeout, stale_after=exchange.stale_after,
                           backoff_initial=initial, backoff_max=cap, stable_after=exchange.stable_after, rng=rng,
                           clock=clock)
    engine = Service.start(settings, source=source)
    engines.append(engine)
    eventually(lambda: len(fake.connect_attempts) >= attempts, timeout=15)
    refused_at = fake.connect_attempts[:attempts]
    assert engine.status().state is FeedState.RECONNECTING and "503" in engine.status().last_error

    ceilings = [c for c, _ in rng.draws[: attempts - 1]]
    delays = [d for _, d in rng.draws[: attempts - 1]]
    # The ceiling doubles from backoff_initial and stops at backoff_max.
    assert ceilings == [min(cap, initial * 2**k) for k in range(attempts - 1)]
    # Full jitter: each delay uniform below its ceiling, and not all alike.
    assert all(0 <= d <= c for c, d in zip(ceilings, delays, strict=True))
    assert max(delays[4:]) - min(delays[4:]) > 0.01
    # Between two attempts the source waited exactly the drawn delay, and for nothing else.
    assert clock.waits[: attempts - 1] == delays
    # The fake saw the attempts at least that far apart (a lower bound: a slow machine only adds to it).
    gaps = [b - a for a, b in itertools.pairwise(refused_at)]
    for gap, delay in zip(gaps, delays, strict=True):
        assert gap >= delay - 0.01, (gaps, delays)
    assert sum(delays[-4:]) > sum(delays[:4])  # with this seed: the waits grow

    fake.refuse_connections(False)
    eventually(lambda: fake.open_connections == 1, timeout=cap + 5)
    # Every wait, the one pending when the refusals ended included, was at most the cap.
    assert clock.waits == [d for _, d in rng.draws[: len(clock.waits)]] and max(clock.waits) <= cap
    fake.send_trade("ETHUSDT", 7, 3_100.0, 1.0)
    eventually(lambda: engine.engine.trades == 1)
    assert engine.status().state is FeedState.CONNECTED
    assert engine.stop()
    assert stored(engine) == {"ETHUSDT": [7]}
    # One error event per refused handshake (the last attempt may have raced the end of the refusals).
    assert len(events(engine, EventKind.ERROR)) == fake.handshakes_refused >= attempts - 1
    assert len(events(engine, EventKind.CONNECTED)) == 1


# ------------------------------------------------------------------------------------------------
# 24 h rollover
# ------------------------------------------------------------------------------------------------


def test_rollover_before_the_servers_age_limit_loses_nothing(tmp_path, engines):
    """The server cuts connections at 1.5 s (Binance: 24 h); the client rolls over at 0.6 s (23.5 h)
    while trades keep flowing: every trade stored once, no gap, no disconnect."""
    with FakeBinance(ping_interval=0.2, max_connection_age=1.5) as fake:
        engine = start_engine(fake, tmp_path, max_connection_age=0.6)
        engines.append(engine)
        sent: list[WireTrade] = []
        next_id = 1
        deadline = time.monotonic() + 20  # 4 rollovers take ~3 s
        while engine.engine.source.connections_opened < 5 and time.monotonic() < deadline:
            batch = wire_trades(20, first_id=next_id)
            next_id += 10
            fake.send_trades(batch)
            sent.extend(batch)
            # Pace the stream by the client: the next batch once this one is in (or 50 ms at most).
            fake.wait_until(lambda: engine.engine.trades >= len(sent), timeout=0.05)
        eventually(lambda: engine.engine.trades == len(sent), timeout=10,
                   message=lambda: f"{engine.engine.trades} of {len(sent)} trades received")
        assert engine.stop()
        accepted = fake.connections_accepted
    assert engine.engine.source.connections_opened >= 5 and accepted >= 5
    assert_stored_exactly(engine, keys(sent))
    assert len(events(engine, EventKind.ROLLOVER)) >= 3
    assert events(engine, EventKind.GAP) == [] and events(engine, EventKind.DISCONNECTED) == []
    status = engine.status()
    assert status.gaps == 0 and status.reconnects == 0


def test_rollover_with_a_backlog_on_the_old_connection_loses_nothing(fake, launch):
    """A slow consumer still has a backlog on the old connection when serverShutdown arrives. Binance
    sent that backlog only there, so the client must drain it before it switches connections."""
    # Production pong timeout (see the test above). The source's clock runs 10x slow: the 10 s overlap
    # timeout, a fallback that switches even if the old connection is not drained, must not be what a
    # busy machine reaches first (it did: a drain of 50k trades under load, and a gap).
    engine = launch(pong_timeout=30.0, stale_after=5.0, clock=SlowClock(10))
    sent = wire_trades(2_000)
    fake.send_trades(sent)
    eventually(lambda: engine.engine.trades == len(sent))
    marker = wire_trades(2, first_id=1_001)
    stalled, release = stall_consumer(engine, "BTCUSDT", 1_001)
    fake.send_trades(marker)
    eventually(stalled.is_set)
    # While the consumer stalls: the notice, then a burst that only the old connection gets.
    fake.send_server_shutdown()
    backlog = wire_trades(50_000, first_id=1_002)
    fake.send_trades(backlog)
    release.set()
    eventually(lambda: fake.connections_accepted == 2, timeout=5)
    after = wire_trades(2_000, first_id=26_002)  # reaches both connections
    fake.send_trades(after)
    sent += marker + backlog + after
    eventually(lambda: events(engine, EventKind.ROLLOVER) != [], timeout=15)
    # Either everything arrives, or the switch dropped part of the backlog and a gap was recorded.
    eventually(lambda: engine.engine.trades == len(sent) or engine.status().gaps > 0, timeout=30)
    # The rest of the stream, if anything was lost.
    fake.wait_until(lambda: engine.engine.trades == len(sent), timeout=2)
    assert engine.stop()
    status = engine.status()
    assert (status.gaps, status.reconnects) == (0, 0) and events(engine, EventKind.GAP) == []
    assert events(engine, EventKind.DISCONNECTED) == []
    assert_stored_exactly(engine, keys(sent))


# ------------------------------------------------------------------------------------------------
# Junk frames in a steady stream
# ------------------------------------------------------------------------------------------------

MALFORMED_FRAMES = (
    "{not json",
    "",
    "null",
    "[]",
    '"trade"',
    '{"stream":"btcusdt@trade","data":{"e":"tra',  # truncated
    '{"stream":"btcusdt@trade","data":{"e":"trade","s":"BTCUSDT"}}',  # fields missing
    '{"stream":"btcusdt@trade","data":{"e":"trade","E":1,"s":"BTCUSDT","t":9,"p":"abc","q":"1","T":1,"m":true}}',
    '{"stream":"btcusdt@trade","data":{"e":"trade","E":1,"s":"BTCUSDT","t":9,"p":"NaN","q":"1","T":1,"m":true}}',
    '{"stream":"btcusdt@trade","data":{"e":"trade","E":1,"s":"BTCUSDT","t":"9","p":"1","q":"1","T":1,"m":true}}',
    '{"stream":"btcusdt@trade","data":{"e":"trade","E":1,"s":"BTCUSDT","t":-9,"p":"1","q":"1","T":1,"m":true}}',
    '{"stream":"btcusdt@trade","data":{"e":"trade","E":1,"s":"BTCUSDT","t":9,"p":"1","q":"1","T":1,"m":"yes"}}',
    '{"stream":"btcusdt@trade","data":{"e":"trade","E":1,"s":"","t":9,"p":"1","q":"1","T":1,"m":true}}',
)
UNKNOWN_FRAMES = (
    '{"stream":"btcusdt@aggTrade","data":{"e":"aggTrade","E":1,"s":"BTCUSDT","a":1}}',
    '{"stream":"btcusdt@kline_1m","data":{"e":"kline","E":1,"s":"BTCUSDT","k":{}}}',
    '{"stream":"btcusdt@bookTicker","data":{"u":1,"s":"BTCUSDT","b":"1","B":"1","a":"2","A":"1"}}',
    '{"e":"depthUpdate","E":1,"s":"BTCUSDT","U":1,"u":2,"b":[],"a":[]}',
    '{"e":5}',
    "{}",
)


def test_junk_frames_in_a_steady_stream_are_counted_and_lose_nothing(fake, launch):
    engine = launch()
    junk = [*MALFORMED_FRAMES, *UNKNOWN_FRAMES]
    sent: list[WireTrade] = []
    rounds = 3
    for i, frame in enumerate(junk * rounds):
        batch = wire_trades(20, first_id=1 + 10 * i)
        fake.send_trades(batch[:10])
        fake.send_raw(frame)
        fake.send_trades(batch[10:])
        sent += batch
    fake.send_raw(b"\x00\x01binary")  # Binance never sends binary frames; ignored, not fatal
    final = wire_trades(2, first_id=1 + 10 * len(junk) * rounds)
    fake.send_trades(final)
    sent += final
    eventually(lambda: engine.engine.trades == len(sent), timeout=10)
    status = engine.status()
    assert engine.stop()
    assert_stored_exactly(engine, keys(sent))
    assert status.parse_errors == len(MALFORMED_FRAMES) * rounds
    assert status.unknown_messages == len(UNKNOWN_FRAMES) * rounds
    assert status.messages_per_s >= 0 and engine.engine.source.stats.messages == len(sent) + len(junk) * rounds
    assert status.state is FeedState.CONNECTED and fake.connections_accepted == 1 and status.gaps == 0
    assert events(engine, EventKind.DISCONNECTED) == [] and events(engine, EventKind.ERROR) == []


def _hostile_frame_then_trades(fake: FakeBinance, engine: Service, frame: str) -> None:
    """One trade per symbol, ``frame``, one more per symbol; returns once all four arrived or the source died."""
    fake.send_trades(wire_trades(2))
    eventually(lambda: engine.engine.trades == 2)
    fake.send_raw(frame)
    fake.send_trades(wire_trades(2, first_id=2))
    eventually(lambda: engine.engine.trades == 4 or not engine.running, timeout=5)


def test_deeply_nested_json_does_not_kill_the_feed(fake, launch):
    """json.loads raises RecursionError, not ValueError, on 100k nested brackets."""
    engine = launch()
    _hostile_frame_then_trades(fake, engine, "[" * 100_000)
    assert engine.running and engine.engine.trades == 4
    assert engine.status().parse_errors == 1
    assert engine.stop()


@pytest.mark.parametrize("ts_ms", [2**63 - 1, 4_000_000_000_000, "a day ahead"])
def test_a_trade_time_no_page_could_show_is_refused_at_the_edge(fake, launch, ts_ms):
    """A trade stamped near 2**63 ms (or in 2096, or more than a day after it arrived) was taken, stored and
    drawn, and the symbol's pages then failed in pandas: it is a counted parse error, never a trade."""
    engine = launch()
    when = time.time_ns() // 1_000_000 + 25 * 3_600_000 if ts_ms == "a day ahead" else ts_ms
    frame = ('{"stream":"btcusdt@trade","data":{"e":"trade","E":1765788195444,"s":"BTCUSDT","t":1000,'
             f'"p":"90000.0","q":"0.01","T":{when},"m":true,"M":true}}}}')
    _hostile_frame_then_trades(fake, engine, frame)
    assert engine.running and engine.engine.trades == 4
    status = engine.status()
    assert status.parse_errors == 1 and "impossible trade time 'T'" in (status.last_error or "")
    assert engine.stop()
    assert 1000 not in stored(engine).get("BTCUSDT", [])


def test_out_of_range_trade_id_does_not_kill_the_feed(fake, launch):
    """An id beyond int64 must be a parse error, not an OverflowError in the tick buffer's ring."""
    engine = launch()
    frame = ('{"stream":"btcusdt@trade","data":{"e":"trade","E":1765788195444,"s":"BTCUSDT","t":' + str(2**64)
             + ',"p":"90000.0","q":"0.01","T":1765788195443,"m":true,"M":true}}')
    _hostile_frame_then_trades(fake, engine, frame)
    assert engine.running and engine.engine.trades == 4
    assert engine.status().parse_errors == 1 and engine.status().gaps == 0
    assert engine.stop()


def test_far_future_trade_time_does_not_wipe_the_database(fake, launch, monkeypatch):
    """Retention prunes by market time; one trade stamped ten years ahead must not make every stored
    tick and feed event look older than the retention window. It is refused where it comes in now (a
    live trade more than a day after its arrival is a parse error), so it never reaches the writer."""
    prunes = []
    original_prune = SqliteTickStore.prune

    def counting_prune(self: SqliteTickStore, before_ms: int) -> int:
        prunes.append(before_ms)
        return original_prune(self, before_ms)

    monkeypatch.setattr(SqliteTickStore, "prune", counting_prune)
    monkeypatch.setattr("ingestion.writer.PRUNE_EVERY_S", 0.05)
    engine = launch()
    normal = wire_trades(200, symbols=("BTCUSDT",))  # ids 1..200, times ending now
    fake.send_trades(normal[:100])
    ten_years_ms = 10 * 365 * 86_400_000
    fake.send_trades([("BTCUSDT", 101, 90_000.0, 0.01, normal[0][4] + ten_years_ms)])
    fake.send_trades([(s, i + 1, p, q, ts) for s, i, p, q, ts in normal[100:]])  # ids 102..201
    eventually(lambda: engine.writer.committed_trades == 200, timeout=10)
    seen = len(prunes)
    eventually(lambda: len(prunes) >= seen + 2, timeout=5)  # at least one full retention pass after the commit
    assert engine.status().parse_errors == 1
    assert engine.stop()
    with SqliteTickStore(engine.site.ticks_path) as store:
        assert store.tick_count() == 200 and 101 not in store.ticks("BTCUSDT").trade_id
        assert store.feed_events(kinds=[EventKind.CONNECTED])


# ------------------------------------------------------------------------------------------------
# Close codes and aborts during a burst
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fault", ["close_1011", "close_1013", "abort"])
def test_drop_during_a_burst_stores_what_arrived_once_and_dedups_the_resend(fake, launch, fault):
    clock = RecordingClock()  # real waits, each recorded: the reconnect's delay is checked on it
    engine = launch(pong_timeout=30.0, clock=clock)  # production pong timeout: see test_pong_queued_behind_a_..._
    burst = wire_trades(40_000)
    sender = threading.Thread(target=fake.send_trades, args=(burst,), name="burst")
    sender.start()
    eventually(lambda: engine.engine.trades >= 2_000, timeout=10)
    if fault == "abort":
        fake.abort_all()
    else:
        fake.close_all(code=int(fault.split("_")[1]), reason="try again later")
    sender.join(30)
    assert not sender.is_alive()
    # The client first reads what was queued before the close frame; then it reconnects.
    eventually(lambda: fake.connections_accepted == 2, timeout=15, message="no reconnect")
    eventually(lambda: engine.status().state is FeedState.CONNECTED)
    eventually(lambda: engine.writer.committed_trades == engine.engine.trades, timeout=10)
    received = engine.engine.trades
    assert 0 < received <= len(burst)
    # What reached the client before the drop is a prefix of the stream, stored once.
    assert_stored_exactly(engine, keys(burst[:received]))

    window = min(received, 3_000)  # like a real reconnect, the new connection re-sends recent trades
    resend = burst[received - window:]
    messages = engine.engine.source.stats.messages
    fake.send_trades(resend)
    eventually(lambda: engine.engine.source.stats.messages == messages + len(resend), timeout=20)
    assert engine.stop()
    assert_stored_exactly(engine, keys(burst))
    status = engine.status()
    assert (status.duplicates, status.gaps, status.reconnects) == (window, 0, 1)
    disconnects = events(engine, EventKind.DISCONNECTED)
    assert len(disconnects) == 1
    # Recovered within its bound: the source waited once, one backoff delay (≤ backoff_initial), before
    # reconnecting (asserted on the waits it asked for, not on how fast this machine handshakes).
    (dropped_ms,), connected_ms = event_times(engine, EventKind.DISCONNECTED), event_times(engine, EventKind.CONNECTED)
    assert len(connected_ms) == 2 and connected_ms[1] >= dropped_ms
    assert len(clock.waits) == 1 and 0 <= clock.waits[0] <= FAST["backoff_initial"], clock.waits
    if fault == "abort":  # seen by the next read or by our next ping, whichever comes first
        assert "connection lost" in disconnects[0] or "ping failed" in disconnects[0]
    else:  # or, on a loaded machine, the server gave up on the close handshake (1 s) before we read that far
        assert f"code {fault.split('_')[1]}" in disconnects[0] or "connection lost" in disconnects[0]
