"""The core of the fault suite on PostgreSQL, plus what only a server has: it can restart mid-stream.

Against the fake Binance on 127.0.0.1 and the session's throwaway cluster (tests/conftest.py):
a TCP drop during a burst with the usual re-send, duplicates and a trade-id gap, a serverShutdown
rollover, an immediate stop and restart of PostgreSQL while trades keep arriving — each checks
that every trade sent was stored exactly once. Then the headless recorder (``python -m cli.record
--db-url …``) under all of it at once, ending with SIGTERM (the issue's "done when"), and two
recorders sharing one schema and one alert rule.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from config import Settings
from records import EventKind, FeedState, StorageState
from service import Service
from storage import open_ticks
from storage.base import TickStore
from storage.errors import StorageError
from storage.postgres.db import lock_key
from storage.postgres.ticks import PostgresTickStore
from testkit.fake_binance import FakeBinance
from testkit.postgres import PgCluster
from testkit.waiting import eventually
from tests.test_binance_source import FAST
from tests.test_crash_safety import Streamer
from tests.test_faults import keys, wire_trades

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def fake() -> Iterator[FakeBinance]:
    with FakeBinance(ping_interval=0.2) as server:
        yield server


@pytest.fixture
def services() -> Iterator[list[Service]]:
    started: list[Service] = []
    yield started
    for service in started:
        service.stop(timeout=5)


def start_service(fake: FakeBinance, pg_url: str, services: list[Service], **changes: object) -> Service:
    service = Service.start(Settings.of(source="binance", ws_url=fake.url, db_url=pg_url, **{**FAST, **changes}))
    services.append(service)
    eventually(lambda: fake.open_connections == 1, timeout=5, message="client never connected")
    return service


def rows(store: TickStore) -> list[tuple[str, int]]:
    """Every stored ``(symbol, trade_id)``, one entry per row (so a duplicate row would show)."""
    return [(symbol, int(i)) for symbol in store.symbols() for i in store.ticks(symbol).trade_id]


def assert_stored_exactly(store: TickStore, expected: set[tuple[str, int]]) -> None:
    stored = rows(store)
    assert len(stored) == len(set(stored)), "a trade was stored twice"
    missing, extra = expected - set(stored), set(stored) - expected
    assert not missing and not extra, f"{len(missing)} missing (e.g. {sorted(missing)[:5]}), {len(extra)} unexpected"


def event_details(store: TickStore, kind: EventKind) -> list[str]:
    return [e.detail for e in reversed(store.feed_events(kinds=[kind]))]


# ------------------------------------------------------------------------------------------------
# The engine in this process
# ------------------------------------------------------------------------------------------------


def test_tcp_drop_during_a_burst_and_the_resend_are_stored_once(fake, pg_url, services):
    service = start_service(fake, pg_url, services, pong_timeout=30.0)
    burst = wire_trades(40_000)
    sender = threading.Thread(target=fake.send_trades, args=(burst,), name="burst")
    sender.start()
    eventually(lambda: service.engine.trades >= 2_000, timeout=10)
    fake.abort_all()
    sender.join(30)
    eventually(lambda: fake.connections_accepted == 2, timeout=15, message="no reconnect")
    eventually(lambda: service.status().state is FeedState.CONNECTED)
    received = service.engine.trades
    window = min(received, 3_000)  # like a real reconnect, the new connection re-sends recent trades
    messages = service.engine.source.stats.messages
    fake.send_trades(burst[received - window:])
    eventually(lambda: service.engine.source.stats.messages == messages + len(burst) - received + window,
               timeout=30)
    assert service.stop()
    status = service.status()
    assert (status.duplicates, status.gaps, status.reconnects) == (window, 0, 1)
    with open_ticks(service.site) as store:
        assert_stored_exactly(store, keys(burst))
        assert len(event_details(store, EventKind.DISCONNECTED)) == 1


def test_duplicates_a_gap_and_a_server_shutdown_rollover(fake, pg_url, services):
    service = start_service(fake, pg_url, services)
    fake.send_trades([("BTCUSDT", i, 90_000.0 + i, 0.01) for i in (1, 2, 2, 3, 5, 4, 6, 20, 21)])
    eventually(lambda: service.engine.source.stats.messages == 9)
    fake.send_server_shutdown()
    eventually(lambda: fake.connections_accepted == 2, timeout=5)
    fake.send_trades([("BTCUSDT", i, 90_000.0 + i, 0.01) for i in range(22, 31)])  # reaches both connections
    with open_ticks(service.site) as store:
        eventually(lambda: event_details(store, EventKind.ROLLOVER) != [], timeout=10)
        eventually(lambda: service.engine.last_trade("BTCUSDT").trade_id == 30)
        assert service.stop()
        assert_stored_exactly(store, {("BTCUSDT", i) for i in [1, 2, 3, 4, 5, 6, *range(20, 31)]})
        assert event_details(store, EventKind.GAP) == ["first_missing=4 count=1", "first_missing=7 count=13"]
        assert event_details(store, EventKind.SHUTDOWN_NOTICE)
    status = service.status()
    assert (status.gaps, status.reconnects) == (2, 0)


def test_postgres_stopped_and_restarted_mid_stream_loses_and_duplicates_nothing(fake, pg_cluster, pg_url, services):
    """``pg_ctl stop -m immediate`` (a crash, no checkpoint) while trades keep arriving; the writer keeps
    its batches, says ``retrying``, reconnects and stores everything exactly once."""
    service = start_service(fake, pg_url, services)
    streamer = Streamer(fake, period=0.002)
    streamer.start()
    try:
        eventually(lambda: service.writer.committed_trades > 1_000, timeout=20)
        pg_cluster.stop("immediate", remove=False)
        eventually(lambda: service.status().storage_state is StorageState.RETRYING, timeout=10)
        at_stop = service.engine.trades
        eventually(lambda: service.engine.trades > at_stop + 500, timeout=10)  # the feed goes on meanwhile
        status = service.status()
        assert status.state is FeedState.CONNECTED and ":***@127.0.0.1" in status.storage_detail
        assert pg_cluster.password not in status.storage_detail
        pg_cluster.start()
        eventually(lambda: service.status().storage_state is StorageState.OK, timeout=15)
        committed = service.writer.committed_trades
        eventually(lambda: service.writer.committed_trades > committed + 500, timeout=10)
    finally:
        streamer.stop()
    eventually(lambda: service.engine.trades == 2 * len(streamer.log), timeout=10)
    assert service.stop()
    assert service.writer.error is None and service.status().reconnects == 0
    sent = {(s, i) for _, ids in streamer.log for s, i in ids.items()}
    with open_ticks(service.site) as store:
        assert_stored_exactly(store, sent)
        assert event_details(store, EventKind.GAP) == []


# ------------------------------------------------------------------------------------------------
# The headless recorder, as a user runs it
# ------------------------------------------------------------------------------------------------


def recorder(*args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUANT_")}
    return subprocess.Popen([sys.executable, "-m", "cli.record", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def count(pg_url: str, schema: str = "live") -> int:
    """Stored ticks, or -1 while the server is away."""
    try:
        with PostgresTickStore(pg_url, schema) as store:
            return store.tick_count()
    except StorageError:
        return -1


def test_the_recorder_stores_every_trade_once_through_every_fault_and_a_postgres_restart(fake, pg_cluster, pg_url):
    proc = recorder("--source", "binance", "--ws-url", fake.url, "--db-url", pg_url, "--backfill-max-trades", "0",
                    "--status-interval", "0.5", "--backoff-initial", "0.05", "--backoff-max", "0.5",
                    "--ping-interval", "0.3", "--stale-after", "5")
    sent: list[tuple] = []

    def send(trades: list[tuple]) -> None:
        fake.send_trades(trades)
        sent.extend(trades)

    try:
        eventually(lambda: fake.open_connections == 1, timeout=30, message="recorder never connected")
        send(wire_trades(4_000))  # ids 1..2000 per symbol
        eventually(lambda: count(pg_url) == len(keys(sent)), timeout=30)
        send(wire_trades(200, first_id=1_901))  # re-sent duplicates
        gap = [t for t in wire_trades(200, first_id=2_001) if not (t[0] == "BTCUSDT" and t[1] <= 2_010)]
        send(gap)  # BTCUSDT 2001..2010 never come: a gap
        eventually(lambda: count(pg_url) == len(keys(sent)), timeout=30)
        fake.abort_all()  # TCP drop
        eventually(lambda: fake.connections_accepted == 2 and fake.open_connections == 1, timeout=30)
        send(wire_trades(2_000, first_id=2_051))  # re-sends 2051..2100, then new up to 3050
        eventually(lambda: count(pg_url) == len(keys(sent)), timeout=30)
        fake.send_server_shutdown()
        eventually(lambda: fake.connections_accepted == 3, timeout=30)
        send(wire_trades(2_000, first_id=3_051))  # both connections get these during the rollover
        eventually(lambda: count(pg_url) == len(keys(sent)), timeout=30)
        pg_cluster.stop("immediate", remove=False)
        send(wire_trades(2_000, first_id=4_051))  # arrives while the database is down
        pg_cluster.start()
        send(wire_trades(2_000, first_id=5_051))
        eventually(lambda: count(pg_url) == len(keys(sent)), timeout=60)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
    assert proc.returncode == 0, out
    assert pg_cluster.password not in out and "Traceback" not in out
    assert "storage=retrying" in out or "retrying" in out  # the outage was reported, masked
    assert f"postgresql://quant:***@127.0.0.1:{pg_cluster.port}/" in out
    with PostgresTickStore(pg_url, "live") as store:
        assert_stored_exactly(store, keys(sent))
        assert event_details(store, EventKind.GAP) == ["first_missing=2001 count=10"]
        assert [e.symbol for e in store.feed_events(kinds=[EventKind.GAP])] == ["BTCUSDT"]
        assert len(store.feed_events(kinds=[EventKind.STOPPED])) == 1


# ------------------------------------------------------------------------------------------------
# Two recorders, one schema, one rule
# ------------------------------------------------------------------------------------------------


class PriceStream(threading.Thread):
    """BTCUSDT (and the others) every 20 ms at ``price``, trade times now, until stopped."""

    def __init__(self, fake: FakeBinance, symbols: tuple[str, ...], max_batches: int = 6_000) -> None:
        super().__init__(name="price-stream", daemon=True)
        self.fake, self.symbols, self.max_batches = fake, symbols, max_batches
        self.price = 90.0
        self.halt = threading.Event()
        self.sent: set[tuple[str, int]] = set()

    def run(self) -> None:
        for n in range(1, self.max_batches + 1):
            batch = [(s, n, self.price, 1.0) for s in self.symbols]
            self.fake.send_trades(batch)
            self.sent.update((s, n) for s in self.symbols)
            if self.halt.wait(0.02):
                return

    def stop(self) -> None:
        self.halt.set()
        self.join(10)


def rule_holder(pg_cluster: PgCluster, pg_url: str, rule_id: int) -> int | None:
    """The OS pid of the recorder whose session holds the rule's lock (from its application_name)."""
    key = lock_key("rule", "live", rule_id) & 0xFFFF_FFFF_FFFF_FFFF
    holders = pg_cluster.execute(pg_url.rsplit("/", 1)[1], (
        "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
        f"WHERE l.locktype = 'advisory' AND l.granted AND l.classid::bigint = {key >> 32} "
        f"AND l.objid::bigint = {key & 0xFFFF_FFFF} AND l.objsubid = 1"))
    assert len(holders) <= 1, holders
    return int(holders[0][0].rsplit(" ", 1)[1]) if holders else None


def alerts_in(pg_url: str) -> list[tuple]:
    from storage.postgres.alerts import PostgresAlertStore

    with PostgresAlertStore(pg_url, "live") as store:
        return [(r.event.rule_id, r.event.ts_ms) for r in store.alerts()]


@pytest.mark.slow
def test_two_recorders_share_a_schema_and_one_rule_fires_once_then_moves_when_its_holder_dies(
        fake, pg_cluster, pg_url):
    common = ("--source", "binance", "--ws-url", fake.url, "--db-url", pg_url, "--backfill-max-trades", "0",
              "--status-interval", "1", "--timeframe", "1s", "--window", "10", "--alert", "BTCUSDT price > 100")
    first = recorder(*common, "--symbols", "BTCUSDT,ETHUSDT")
    second = recorder(*common, "--symbols", "BTCUSDT,SOLUSDT")
    stream = PriceStream(fake, ("BTCUSDT", "ETHUSDT", "SOLUSDT"))
    procs = {first.pid: first, second.pid: second}
    try:
        eventually(lambda: fake.open_connections == 2, timeout=60, message="the recorders never connected")
        stream.start()
        eventually(lambda: rule_holder(pg_cluster, pg_url, 1) in procs, timeout=30, message="nobody holds the rule")
        eventually(lambda: count(pg_url) > 300, timeout=30)
        stream.price = 110.0  # crosses the threshold: fires on the first closed bar at 110
        eventually(lambda: len(alerts_in(pg_url)) == 1, timeout=30, message="the rule never fired")
        holder = rule_holder(pg_cluster, pg_url, 1)
        survivor = next(pid for pid in procs if pid != holder)
        procs[holder].send_signal(signal.SIGKILL)
        procs[holder].wait(10)
        # Its session ends with it; the survivor's next pass takes the rule over.
        eventually(lambda: rule_holder(pg_cluster, pg_url, 1) == survivor, timeout=30,
                   message="the rule was not taken over")
        stream.price, switched_ms = 90.0, time.time_ns() // 1_000_000  # re-arms the rule
        eventually(lambda: stored_for(pg_url, 90.0, since_ms=switched_ms) >= 2_000, timeout=30)
        stream.price = 110.0
        eventually(lambda: len(alerts_in(pg_url)) == 2, timeout=30, message="the survivor never fired")
        stream.stop()
        procs[survivor].send_signal(signal.SIGTERM)
        out, _ = procs[survivor].communicate(timeout=60)
        assert procs[survivor].returncode == 0, out
        assert out.count("ALERT BTCUSDT") == 1  # the survivor fired the second one only
    finally:
        stream.halt.set()
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.communicate(timeout=10)
    fired = alerts_in(pg_url)
    assert len(fired) == len(set(fired)) == 2 and {rule for rule, _ in fired} == {1}
    with PostgresTickStore(pg_url, "live") as store:
        stored = rows(store)
    assert len(stored) == len(set(stored))  # both recorders saw BTCUSDT: each trade stored once
    assert set(stored) <= stream.sent and {s for s, _ in stored} == {"BTCUSDT", "ETHUSDT", "SOLUSDT"}


def stored_for(pg_url: str, price: float, since_ms: int) -> int:
    """How long (ms) BTCUSDT has been stored trading at ``price`` since ``since_ms``: the re-arming bars."""
    try:
        with PostgresTickStore(pg_url, "live") as store:
            ticks = store.ticks("BTCUSDT", start_ms=since_ms)
    except StorageError:
        return 0
    at_price = ticks.ts_ms[ticks.price == price]
    return int(at_price.max() - at_price.min()) if len(at_price) else 0
