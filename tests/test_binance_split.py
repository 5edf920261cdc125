"""More symbols than one Binance connection carries: several connections, each with the single
connection's guarantees, one feed status. The per-connection cap is shrunk to 3 streams (Binance:
spot 1,024, USDⓈ-M 200) and the fake server refuses a connection asking for more."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterator
from dataclasses import replace

import pytest

from cli.record import format_status
from config import Settings
from ingestion.binance import SPOT, USDM, BinanceFeed
from ingestion.binance.split import split_names
from ingestion.binance.stream import BinanceSource
from ingestion.source import TradeSink
from records import EventKind, FeedState, FeedStatus
from service import Service
from storage.sqlite.ticks import SqliteTickStore
from testkit.fake_binance import FakeBinance, RecordedTrade
from testkit.fake_rest import FakeRest
from testkit.waiting import eventually
from tests.test_binance_source import FAST
from ui.live import feed_line
from ui.status import partial_outage

SMALL_SPOT = dataclasses.replace(SPOT, max_streams=3)
SMALL_USDM = dataclasses.replace(USDM, max_streams=6)  # 3 symbols: trades and mark price each
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT", "XRPUSDT", "ADAUSDT", "DOGEUSDT")


def offline(symbols: tuple[str, ...], venue=SMALL_SPOT) -> BinanceFeed:
    """A feed that is never run: how it splits."""
    return BinanceFeed(symbols, lambda group: BinanceSource(group, "ws://127.0.0.1:9", venue=venue), venue=venue)


def test_symbols_are_split_into_as_few_connections_as_the_stream_cap_allows():
    feed = offline(SYMBOLS)
    assert feed.connections == (SYMBOLS[:3], SYMBOLS[3:6], SYMBOLS[6:])
    assert [url.count("@trade") for url in feed.urls] == [3, 3, 1]
    futures = offline(SYMBOLS, SMALL_USDM)  # two streams a symbol: 3 symbols a connection
    legs = tuple(f"{symbol}.P" for symbol in SYMBOLS)  # USDⓈ-M legs carry their .P; the wire the plain symbol
    assert futures.connections == (legs[:3], legs[3:6], legs[6:])
    assert [url.count("@") for url in futures.urls] == [9, 9, 3]  # per symbol "@trade" and "@markPrice@1s"
    assert offline(SYMBOLS[:3]).connections == (SYMBOLS[:3],)  # within the cap: one connection, as before


def test_runtime_changes_keep_symbols_on_their_connection_fill_room_then_open_new_ones():
    feed = offline(SYMBOLS[:4])  # (BTC ETH SOL) (BNB)
    feed.set_symbols((*SYMBOLS[:4], "LTCUSDT", "TRXUSDT", "DOTUSDT"))
    assert feed.connections == (SYMBOLS[:3], ("BNBUSDT", "LTCUSDT", "TRXUSDT"), ("DOTUSDT",))
    feed.set_symbols(("ETHUSDT", "BNBUSDT", "LTCUSDT", "TRXUSDT", "DOTUSDT", "AVAXUSDT"))
    # BTC and SOL left: their room goes to the newcomer before any new connection; nobody moves.
    assert feed.connections == (("ETHUSDT", "AVAXUSDT"), ("BNBUSDT", "LTCUSDT", "TRXUSDT"), ("DOTUSDT",))
    feed.set_symbols(("ETHUSDT", "AVAXUSDT"))  # the other two connections have nothing left: closed
    assert feed.connections == (("ETHUSDT", "AVAXUSDT"),)
    assert feed.symbols == ("ETHUSDT", "AVAXUSDT")


def test_the_error_of_a_connection_down_names_the_symbols_it_leaves_silent():
    """One connection of several down while the others flow: the feed is "connected" and its last tick
    recent (the other connections' trades), so the error is all that tells a desk which legs get nothing:
    it names them, the first few and how many more."""
    many = tuple(f"C{i:02d}USDT" for i in range(12))
    feed = BinanceFeed(many, lambda group: BinanceSource(group, "ws://127.0.0.1:9", venue=SMALL_SPOT),
                       venue=SMALL_SPOT)  # (C00 C01 C02) (C03 C04 C05) …: four connections of three
    sources = [feed._shards[i].source for i in range(4)]
    for source in sources:
        source.stats.state = FeedState.CONNECTED
    sources[1].stats.state = FeedState.RECONNECTING
    sources[1].stats.last_error = "connect to ws://127.0.0.1:9 failed: HTTP 400"
    stats = feed.stats
    assert stats.state is FeedState.CONNECTED and (stats.connections_up, stats.connections) == (3, 4)
    assert stats.last_error == ("connection 2/4 (C03USDT, C04USDT, C05USDT): connect to ws://127.0.0.1:9 "
                                "failed: HTTP 400")
    assert stats.silent == ("C03USDT", "C04USDT", "C05USDT")
    sources[2].stats.state = FeedState.CONNECTING  # its first attempt, not failed yet: not silent, only new
    assert feed.stats.silent == ("C03USDT", "C04USDT", "C05USDT")
    sources[0].stats.last_error = "malformed message: …"  # an error of a connection that is up
    sources[1].stats.state = FeedState.CONNECTED
    assert feed.stats.silent == () and feed.stats.last_error is not None
    wide = BinanceFeed(many, lambda group: BinanceSource(group, "ws://127.0.0.1:9", venue=SPOT))
    wide.set_symbols(many)
    [only] = [shard.source for shard in wide._shards]
    only.stats.last_error = "closed by the server"
    assert wide.stats.last_error == "closed by the server"  # one connection: it is the feed's own error
    assert split_names(many) == "C00USDT, C01USDT, C02USDT, C03USDT, C04USDT and 7 more"


def test_a_page_says_which_legs_a_connection_down_leaves_silent():
    up = FeedStatus("binance", FeedState.CONNECTED, (), None, 0, 0.0, 0.0, None, 0.1, 0, 0, 0, 0, 0, 0,
                    "connection 2/4 (C03USDT, C04USDT, C05USDT): connect failed: HTTP 400", "LIVE Binance spot",
                    connections=(3, 4), silent=("C03USDT", "C04USDT", "C05USDT"))
    assert partial_outage(up) == ("3/4 connections up; no trades arrive for C03USDT, C04USDT, C05USDT until "
                                  "theirs is back. connection 2/4 (C03USDT, C04USDT, C05USDT): connect failed: "
                                  "HTTP 400")
    assert partial_outage(replace(up, silent=())) is None  # all up, or a new one connecting for the first time
    assert partial_outage(replace(up, connections=None, silent=())) is None  # one connection: its own state says it
    assert partial_outage(replace(up, state=FeedState.RECONNECTING, connections=(0, 4))) is None  # all down: failing


@pytest.fixture
def fake() -> Iterator[FakeBinance]:
    with FakeBinance(ping_interval=0.2) as server:
        server.max_streams = 3  # as Binance: a connection asking for more is refused (HTTP 400)
        yield server


START_MS = time.time_ns() // 1_000_000 - 60_000


def trades(symbols: tuple[str, ...], first_id: int, count: int) -> list[RecordedTrade]:
    """Ids ``first_id…`` of each symbol, a millisecond apart (time order is id order)."""
    return [RecordedTrade(symbol, trade_id, START_MS + trade_id, 100.0 + trade_id, 1.0, trade_id % 2 == 0)
            for symbol in symbols for trade_id in range(first_id, first_id + count)]


def stored(service: Service) -> dict[str, list[int]]:
    with SqliteTickStore(service.site.ticks_path) as store:
        return {s: list(store.ticks(s).trade_id) for s in store.symbols()}


def events(service: Service, kind: EventKind) -> list[tuple[str | None, str]]:
    with SqliteTickStore(service.site.ticks_path) as store:
        return [(e.symbol, e.detail) for e in store.feed_events(kinds=[kind])]


def start(fake: FakeBinance, tmp_path, rest: FakeRest | None = None, symbols: tuple[str, ...] = SYMBOLS) -> Service:
    changes = {} if rest is None else {"backfill_max_trades": 100_000, "rest_url": rest.url}
    settings = Settings.of(source="binance", ws_url=fake.url, data_dir=tmp_path, symbols=symbols,
                           **{**FAST, **changes})
    return Service.start(settings, source=BinanceFeed.from_settings(settings.feed, venue=SMALL_SPOT))


def test_every_connection_url_stays_within_binances_8004_characters():
    """Binance refuses a combined-stream URL over 8,004 characters whatever the stream cap: 1,024
    spot symbols fit one connection by count, not by URL (~15 K characters). Split by both, at start
    and as symbols are added at runtime (a connection reconnects with all its symbols in its URL)."""
    many = tuple(f"C{i:04d}XUSDT" for i in range(1_024))  # 10 characters, as BTCUSDT-like names run
    real = BinanceFeed(many, lambda group: BinanceSource(group, "wss://stream.binance.com:9443", venue=SPOT))
    assert all(len(url) <= 8_004 for url in real.urls) and len(real.urls) == 3  # 17.4 K characters of streams
    assert sorted(s for group in real.connections for s in group) == sorted(many)
    grown = BinanceFeed(many[:10], lambda group: BinanceSource(group, "wss://stream.binance.com:9443", venue=SPOT))
    grown.set_symbols(many)
    assert all(len(url) <= 8_004 for url in grown.urls) and len(grown.urls) == 3
    assert grown.connections[0][:10] == many[:10]  # the first symbols stay where they were

def test_closing_a_connection_never_turns_the_feeds_counters_back():
    """messages, reconnects, parse errors and unknown messages count since the feed started, as on
    one connection: a connection closed because its symbols were all removed keeps what it counted
    (else ``messages`` fell and the engine's message rate went negative, and ``reconnects 5`` became 2)."""
    made: list[BinanceSource] = []

    def make(group: tuple[str, ...]) -> BinanceSource:
        made.append(BinanceSource(group, "ws://127.0.0.1:9", venue=SMALL_SPOT))
        return made[-1]

    feed = BinanceFeed(SYMBOLS[:6], make, venue=SMALL_SPOT)  # (BTC ETH SOL) (BNB XRP ADA)
    for source, count in zip(made, (100, 50), strict=True):
        source.stats.messages, source.stats.reconnects = count, count // 10
        source.stats.parse_errors, source.stats.unknown_messages = count // 25, count // 50
    before = feed.stats
    feed.set_symbols(SYMBOLS[:3])  # the second connection has no symbol left: closed
    after = feed.stats
    assert (after.connections, after.connections_up) == (1, 0)
    assert (after.messages, after.reconnects, after.parse_errors, after.unknown_messages) == (150, 15, 6, 3)
    assert (before.messages, before.reconnects, before.parse_errors, before.unknown_messages) == (150, 15, 6, 3)


def test_one_connection_dropping_leaves_the_others_flowing_and_its_gap_is_backfilled(fake, tmp_path):
    """Seven symbols on three connections; the one carrying BNB/XRP/ADA drops and cannot come back for
    a while: the others keep delivering, the status says 2/3, and once it is back the trades it
    missed are detected as gaps and fetched over REST, each stored once."""
    before, missed, after = trades(SYMBOLS, 1, 5), trades(SYMBOLS, 6, 5), trades(SYMBOLS, 11, 5)
    with FakeRest(before + missed + after) as rest:
        service = start(fake, tmp_path, rest)
        try:
            eventually(lambda: fake.open_connections == 3, timeout=10, message="three connections expected")
            assert sorted(len(streams) for streams in fake.subscriptions) == [1, 3, 3]
            eventually(lambda: service.status().connections == (3, 3), timeout=5)
            assert "3/3 connections up" in feed_line(service.status())
            fake.send_trades(before)
            eventually(lambda: service.engine.trades == len(before), timeout=10)

            fake.refuse_connections(True)  # the dropped connection cannot come back yet
            assert fake.abort_all(carrying="bnbusdt@trade") == 1
            eventually(lambda: service.status().connections == (2, 3), timeout=5)
            status = service.status()
            assert status.state is FeedState.CONNECTED  # still live on two connections
            assert status.last_error is not None and status.last_error.startswith(
                "connection 2/3 (BNBUSDT, XRPUSDT, ADAUSDT): ")
            assert status.silent == ("BNBUSDT", "XRPUSDT", "ADAUSDT")
            assert (partial_outage(status) or "").startswith(
                "2/3 connections up; no trades arrive for BNBUSDT, XRPUSDT, ADAUSDT until theirs is back. ")
            assert "2/3 connections up" in feed_line(status)
            assert " connections_up=2/3 " in format_status(status)  # the recorder's status line
            fake.send_trades(missed)  # only the two open connections receive these
            flowing = [t for t in missed if t.symbol not in SYMBOLS[3:6]]
            eventually(lambda: service.engine.trades == len(before) + len(flowing), timeout=10)

            fake.refuse_connections(False)
            eventually(lambda: service.status().connections == (3, 3), timeout=10)
            assert service.status().silent == () and partial_outage(service.status()) is None
            fake.send_trades(after)
            eventually(lambda: service.engine.trades == len(before) + len(flowing) + len(after), timeout=10)
            eventually(lambda: len(events(service, EventKind.BACKFILL)) == 3, timeout=20)
        finally:
            service.stop()
    assert sorted(events(service, EventKind.GAP)) == [(s, "first_missing=6 count=5") for s in sorted(SYMBOLS[3:6])]
    assert stored(service) == {symbol: list(range(1, 16)) for symbol in SYMBOLS}  # complete, each once
    assert service.status().state is FeedState.STOPPED


def test_symbols_added_at_runtime_go_to_a_connection_with_room_then_to_a_new_one(fake, tmp_path):
    service = start(fake, tmp_path, symbols=SYMBOLS[:4])  # (BTC ETH SOL) (BNB)
    try:
        eventually(lambda: fake.open_connections == 2, timeout=10)
        service.engine.set_symbols((*SYMBOLS[:4], "LTCUSDT", "TRXUSDT", "DOTUSDT"))
        # LTC and TRX join BNB's connection by SUBSCRIBE (it had room for two); DOT needs a third.
        eventually(lambda: fake.open_connections == 3, timeout=10)
        eventually(lambda: sorted(sorted(s) for s in fake.subscriptions) == [
            ["bnbusdt@trade", "ltcusdt@trade", "trxusdt@trade"], ["btcusdt@trade", "ethusdt@trade", "solusdt@trade"],
            ["dotusdt@trade"]], timeout=10)
        assert fake.connections_accepted == 3  # nobody reconnected for it
        new = trades(("LTCUSDT", "TRXUSDT", "DOTUSDT", "BTCUSDT"), 1, 3)
        fake.send_trades(new)
        eventually(lambda: service.engine.trades == len(new), timeout=10)
        service.engine.set_symbols(("BTCUSDT",))  # the other connections are closed
        eventually(lambda: fake.open_connections == 1, timeout=10)
        eventually(lambda: service.status().connections is None, timeout=5)  # one connection: not counted
    finally:
        service.stop()
    assert events(service, EventKind.GAP) == []


def test_a_feed_whose_connections_are_all_refused_is_failing_and_names_the_first(fake, tmp_path):
    fake.refuse_connections(True)
    service = start(fake, tmp_path, symbols=SYMBOLS[:5])
    try:
        # Both connections fail in whichever order their threads run; once the first has failed too,
        # the status names it (the lowest-numbered connection down), whatever failed last.
        eventually(lambda: service.status().state in (FeedState.CONNECTING, FeedState.RECONNECTING)
                   and (service.status().last_error or "").startswith("connection 1/2 ("), timeout=10)
        status = service.status()
        assert status.connections == (0, 2)
        assert status.last_error is not None and status.last_error.startswith(
            "connection 1/2 (BTCUSDT, ETHUSDT, SOLUSDT): connect to ws://")
    finally:
        service.stop()



class CrashingSource(BinanceSource):
    """A connection with a bug: it runs as any does until the test sets :attr:`crash`, then its thread raises."""

    crash: threading.Event

    def run(self, sink: TradeSink, stop: threading.Event) -> None:
        inner = threading.Event()

        def relay() -> None:  # the connection stops on the crash or the feed's stop, whichever comes first
            while not (self.crash.wait(0.02) or stop.is_set()):
                pass
            inner.set()

        threading.Thread(target=relay, daemon=True).start()
        super().run(sink, inner)
        if not stop.is_set():
            raise RuntimeError("a bug in the connection")


def test_a_crashed_connection_is_reported_and_started_again_and_its_gap_backfilled(fake, tmp_path):
    """The thread of the connection carrying BNB/XRP/ADA crashes: an error event names its symbols, the
    connection is started afresh after its backoff (it was never restarted: its symbols stayed silent for
    good under "2/3 connections up"), and the trades they missed meanwhile are backfilled."""
    crash = threading.Event()
    before, missed, after = trades(SYMBOLS, 1, 5), trades(SYMBOLS, 6, 5), trades(SYMBOLS, 11, 5)
    made: list[BinanceSource] = []
    with FakeRest(before + missed + after) as rest:
        settings = Settings.of(source="binance", ws_url=fake.url, data_dir=tmp_path, symbols=SYMBOLS,
                               **{**FAST, "backfill_max_trades": 100_000, "rest_url": rest.url})

        def make(group: tuple[str, ...]) -> BinanceSource:
            feed = dataclasses.replace(settings.feed, symbols=group)
            crashing = "BNBUSDT" in group and not any(isinstance(source, CrashingSource) for source in made)
            made.append((CrashingSource if crashing else BinanceSource).from_settings(feed, venue=SMALL_SPOT))
            if crashing:
                made[-1].crash = crash  # type: ignore[attr-defined]
            return made[-1]

        service = Service.start(settings, source=BinanceFeed(settings.feed.symbols, make, venue=SMALL_SPOT))
        try:
            eventually(lambda: service.status().connections == (3, 3), timeout=10)
            fake.send_trades(before)
            eventually(lambda: service.engine.trades == len(before), timeout=10)
            fake.refuse_connections(True)  # the fresh connection cannot come back yet
            crash.set()
            eventually(lambda: any("crashed" in detail for _, detail in events(service, EventKind.ERROR)), timeout=10)
            [(symbol, detail)] = [e for e in events(service, EventKind.ERROR) if "crashed" in e[1]]
            assert symbol is None and detail.startswith("connection of BNBUSDT,XRPUSDT,ADAUSDT crashed: "
                                                        "RuntimeError('a bug in the connection'); restarting in ")
            eventually(lambda: service.status().connections == (2, 3), timeout=10)
            fake.send_trades(missed)  # only the two open connections receive these
            flowing = [t for t in missed if t.symbol not in SYMBOLS[3:6]]
            eventually(lambda: service.engine.trades == len(before) + len(flowing), timeout=10)
            fake.refuse_connections(False)
            eventually(lambda: service.status().connections == (3, 3), timeout=10)
            assert [type(source) for source in made].count(BinanceSource) == 3  # the two, and the fresh one
            fake.send_trades(after)
            eventually(lambda: service.engine.trades == len(before) + len(flowing) + len(after), timeout=10)
            eventually(lambda: len(events(service, EventKind.BACKFILL)) == 3, timeout=20)
        finally:
            service.stop()
    assert sorted(events(service, EventKind.GAP)) == [(s, "first_missing=6 count=5") for s in sorted(SYMBOLS[3:6])]
    assert stored(service) == {symbol: list(range(1, 16)) for symbol in SYMBOLS}  # complete, each once


class AlwaysCrashing(BinanceSource):
    """A connection with a bug that crashes at once, every time (counting one message first)."""

    def run(self, sink: TradeSink, stop: threading.Event) -> None:
        self.stats.messages += 1
        self.stats.reconnects += 1
        raise RuntimeError("a bug in the connection")


class QuietSink:
    def __init__(self) -> None:
        self.events: list = []

    def on_trade(self, trade) -> None: ...
    def on_non_market(self, symbol, trade_id) -> None: ...
    def on_mark_price(self, mark) -> None: ...
    def on_event(self, event) -> None:
        self.events.append(event)


def test_a_connection_crashing_again_and_again_keeps_its_counts_not_every_crashed_connection():
    """A bug that crashes a connection at every start restarts it for as long as the feed runs (its
    symbols must not stay silent): each crashed connection's counters still count in the feed's totals,
    but the connection itself is not kept (each holds its URL, up to 8 K characters: a crash every
    30 s for weeks held tens of thousands of them, all summed at every status read)."""
    made: list[BinanceSource] = []

    def make(group: tuple[str, ...]) -> BinanceSource:
        made.append(AlwaysCrashing(group, "ws://127.0.0.1:9", venue=SMALL_SPOT, backoff_initial=0.001,
                                   backoff_max=0.002))
        return made[-1]

    feed = BinanceFeed(SYMBOLS[:2], make, venue=SMALL_SPOT)
    sink, stop = QuietSink(), threading.Event()
    runner = threading.Thread(target=feed.run, args=(sink, stop), daemon=True)
    runner.start()
    try:
        eventually(lambda: len(made) >= 30, timeout=20)
    finally:
        stop.set()
        runner.join(10)
    assert not runner.is_alive()
    stats = feed.stats
    assert stats.messages == stats.reconnects == len(made)  # every crashed connection's counts, once
    assert feed._retired == [] and len(sink.events) >= 29
