"""The ``binance-futures`` (USDⓈ-M perpetuals) source: what differs from spot, against loopback fakes.

The contract every Binance source meets (reconnects, rollover, gaps, resubscription) runs on both
venues in tests/test_binance_source.py; here: the trade types (``X``), the endpoints and their
overrides, klines pages of 1,500, what gap backfill can and cannot recover without an API key, the
recorder, the sidebar, and storage apart from spot on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import signal
import threading
import time

import pytest
from streamlit.testing.v1 import AppTest

from config import Settings, from_env
from ingestion.binance import USDM, BinanceFeed, BinanceRest, BinanceSource
from ingestion.binance.parse import MalformedMessage, NonMarketTrade, parse_frame
from ingestion.sources import spec_for
from records import EventKind, MarkPrice, Trade
from service import Service
from storage.postgres.ticks import PostgresTickStore
from storage.sqlite.ticks import SqliteTickStore
from testkit.fake_binance import FakeBinance, RecordedTrade, futures_trade_payload, load_recorded_trades
from testkit.fake_rest import FakeKlines, FakeRest
from testkit.waiting import eventually
from tests.shared_data import TICKS_NDJSON, require
from tests.test_app import APP, app_env  # noqa: F401  (app_env: the fixture, used by name)
from tests.test_binance_source import FAST
from tests.test_recorder_cli import count, recorder
from ui.plain import unescaped

# The shared recording with its 98 zero rows kept: each is an "X":"NA" trade taking an id of its own.
MARKET_TRADES, NA_ROWS = 19_182, 98
# BTCUSDT and ETHUSDT on one USDⓈ-M connection: each symbol's trades and its mark price, on the /market route.
FUTURES_PATH = "/market/stream?streams=btcusdt@trade/btcusdt@markPrice@1s/ethusdt@trade/ethusdt@markPrice@1s"


@pytest.fixture(scope="module")
def recorded() -> list[RecordedTrade]:
    return load_recorded_trades(require(TICKS_NDJSON), keep_non_market=True)


def btc(recorded: list[RecordedTrade]) -> list[RecordedTrade]:
    return [t for t in recorded if t.symbol == "BTCUSDT"]


def market_ids(trades: list[RecordedTrade], symbol: str) -> list[int]:
    return [t.trade_id for t in trades if t.symbol == symbol and t.kind == "MARKET"]


def futures_settings(fake: FakeBinance, **changes: object) -> Settings:
    return Settings.of(**{"source": "binance-futures", "ws_url": fake.url, **FAST, **changes})


def start(settings: Settings, fake: FakeBinance) -> Service:
    service = Service.start(settings)
    eventually(lambda: fake.open_connections >= 1, timeout=10, message="client never connected")
    return service


def stored(service: Service) -> dict[str, list[int]]:
    with SqliteTickStore(service.site.ticks_path) as store:
        return {s: list(store.ticks(s).trade_id) for s in store.symbols()}


def events(service: Service, kind: EventKind) -> list[str]:
    with SqliteTickStore(service.site.ticks_path) as store:
        return [e.detail for e in store.feed_events(kinds=[kind])]


# ---------------------------------------------------------------------------------------- parsing

@pytest.mark.parametrize("kind", ["INSURANCE_FUND", "ADL", "NA"])
def test_only_market_prints_are_trades(kind):
    market = parse_frame(futures_trade_payload("BTCUSDT", 7, 89_806.8, 0.002, 1765788195443, True), 1)
    assert market == Trade("BTCUSDT", 7, 1765788195443, 1, 89_806.8, 0.002, True)
    price, qty = (0.0, 0.0) if kind == "NA" else (89_500.1, 0.5)  # NA rows really carry "0"s
    other = parse_frame(futures_trade_payload("BTCUSDT", 8, price, qty, 1765788195444, kind=kind), 1)
    assert other == NonMarketTrade("BTCUSDT", 8, kind)


@pytest.mark.parametrize(("change", "named"), [({"X": 3}, "type 'X'"), ({"X": "NA", "t": "8"}, "invalid id"),
                                               ({"X": "ADL", "s": ""}, "invalid symbol")])
def test_a_garbled_non_market_trade_is_malformed_naming_the_field(change, named):
    payload = json.loads(futures_trade_payload("BTCUSDT", 8, 0.0, 0.0, 1765788195444, kind="NA")) | change
    with pytest.raises(MalformedMessage, match=named):
        parse_frame(json.dumps(payload), 1)


def test_a_zero_priced_market_trade_is_still_refused():
    """Only the type decides: a MARKET print at price 0 is garbage, not an NA row."""
    with pytest.raises(MalformedMessage, match="invalid price"):
        parse_frame(futures_trade_payload("BTCUSDT", 8, 0.0, 0.0, 1765788195444), 1)


# ---------------------------------------------------------------------------------------- the stream

def test_non_market_ids_make_no_false_gap_and_stay_out_of_bars_and_storage(recorded, tmp_path):
    """The real recording with its 98 NA rows interleaved (each with its own id), plus an insurance-fund
    and an ADL trade: every market trade stored once, no gap reported, no price 0 anywhere."""
    last = btc(recorded)[-1]
    extra = [RecordedTrade("BTCUSDT", last.trade_id + 1, last.ts_ms + 1, 88_000.0, 1.5, True, "INSURANCE_FUND"),
             RecordedTrade("BTCUSDT", last.trade_id + 2, last.ts_ms + 2, 88_100.0, 0.7, False, "ADL"),
             RecordedTrade("BTCUSDT", last.trade_id + 3, last.ts_ms + 3, last.price, 0.01, False)]
    with FakeBinance(ping_interval=None, futures=True) as fake:
        service = start(futures_settings(fake, data_dir=tmp_path), fake)
        try:
            assert fake.paths == [FUTURES_PATH]
            fake.send_recorded(recorded + extra)
            eventually(lambda: service.writer.committed_trades == MARKET_TRADES + 1, timeout=30)
            status = service.status()
            assert status.gaps == 0 and status.missing_trades == 0 and status.parse_errors == 0
            assert service.engine.last_trade("BTCUSDT.P").price == last.price  # not the ADL/insurance prints
        finally:
            service.stop()
    assert service.site.ticks_path == tmp_path / "futures.sqlite3"  # its own database, never spot's
    assert events(service, EventKind.GAP) == []
    rows = stored(service)
    assert rows["ETHUSDT.P"] == market_ids(recorded, "ETHUSDT")  # stored under the perpetuals' leg names
    assert rows["BTCUSDT.P"] == [*market_ids(recorded, "BTCUSDT"), last.trade_id + 3]
    with SqliteTickStore(service.site.ticks_path) as store:
        assert float(store.ticks("BTCUSDT.P").price.min()) > 80_000  # no 0, no insurance-fund print
    assert len(recorded) == MARKET_TRADES + NA_ROWS


def test_a_real_gap_beside_non_market_ids_is_still_reported(tmp_path):
    with FakeBinance(ping_interval=None, futures=True) as fake:
        service = start(futures_settings(fake, data_dir=tmp_path), fake)
        try:
            fake.send_trades([RecordedTrade("BTCUSDT", 100, 1765788195443, 90_000.0, 0.1, False),
                              RecordedTrade("BTCUSDT", 101, 1765788195444, 0.0, 0.0, False, "NA"),
                              RecordedTrade("BTCUSDT", 104, 1765788195445, 0.0, 0.0, False, "NA"),
                              RecordedTrade("BTCUSDT", 105, 1765788195446, 90_001.0, 0.1, False)])
            eventually(lambda: service.writer.committed_trades == 2)
            eventually(lambda: events(service, EventKind.GAP) == ["first_missing=102 count=2"])
        finally:
            service.stop()


# ---------------------------------------------------------------------------------------- mark price, funding

NEXT_FUNDING_MS = 1765814400000  # 2025-12-15 16:00 UTC, a funding time


def test_mark_prices_ride_along_the_trades_without_touching_gaps_or_storage(recorded, tmp_path):
    """Mark price updates interleaved with the real recording (and a malformed one, and an older one
    as a rollover's overlap would send): the service keeps each symbol's newest, the malformed one
    is a named parse error, the sequencer sees no gap and no duplicate, nothing of them is stored."""
    trades = recorded[:3000]
    wanted = sum(t.kind == "MARKET" for t in trades)
    with FakeBinance(ping_interval=None, futures=True) as fake:
        service = start(futures_settings(fake, data_dir=tmp_path), fake)
        try:
            assert service.funding and service.mark_price("BTCUSDT.P") is None  # none yet: shown as "—"
            started_ms = time.time_ns() // 1_000_000
            for chunk in range(0, len(trades), 500):
                fake.send_recorded(trades[chunk:chunk + 500])
                fake.send_mark_price("BTCUSDT", 89_800.0 + chunk, 89_801.0, 0.0001, NEXT_FUNDING_MS,
                                     event_ms=1765788195000 + chunk)
            fake.send_raw('{"stream":"ethusdt@markPrice@1s","data":{"e":"markPriceUpdate","E":1765788195000,'
                          '"s":"ETHUSDT","p":"x","P":"1","i":"1","r":"0.0001","T":1765814400000}}')
            fake.send_mark_price("ETHUSDT", 3_100.25, 3_100.5, -0.0003, NEXT_FUNDING_MS, event_ms=1765788196000)
            fake.send_mark_price("ETHUSDT", 2_000.0, 2_000.0, 0.0, NEXT_FUNDING_MS, event_ms=1765788195999)  # older
            eventually(lambda: service.writer.committed_trades == wanted, timeout=30)
            eventually(lambda: service.engine.source.stats.messages == len(trades) + 6 + 3)  # 6 BTC, 3 ETH
            status = service.status()
            assert status.gaps == 0 and status.duplicates == 0 and status.missing_trades == 0
            assert status.parse_errors == 1 and status.unknown_messages == 0
            assert "invalid mark price 'p'" in (service.engine.source.stats.last_error or "")
            btc_mark, eth_mark = service.mark_price("BTCUSDT.P"), service.mark_price("ETHUSDT.P")
            assert btc_mark == MarkPrice("BTCUSDT.P", 1765788195000 + 2500, btc_mark.recv_ms, 92_300.0, 89_801.0,
                                         0.0001, NEXT_FUNDING_MS)
            assert eth_mark == MarkPrice("ETHUSDT.P", 1765788196000, eth_mark.recv_ms, 3_100.25, 3_100.5, -0.0003,
                                         NEXT_FUNDING_MS)
            assert 0 < btc_mark.recv_ms - started_ms < 60_000  # stamped on arrival, on this machine's clock
        finally:
            service.stop()
    assert stored(service) == {s + ".P": market_ids(trades, s) for s in ("BTCUSDT", "ETHUSDT")}


def test_a_spot_feed_has_no_funding():
    assert not spec_for("binance").capabilities.funding and spec_for("binance-futures").capabilities.funding


def test_a_rollover_while_non_market_ids_arrive_makes_no_gap(recorded, tmp_path):
    """The successor holds NA ids as well as trades until the old connection caught up with them."""
    first = recorded[:3000]
    with FakeBinance(ping_interval=0.2, futures=True) as fake:
        service = start(futures_settings(fake, data_dir=tmp_path), fake)
        try:
            fake.send_recorded(first)
            eventually(lambda: service.engine.trades == sum(t.kind == "MARKET" for t in first))
            fake.send_server_shutdown()
            eventually(lambda: fake.connections_accepted == 2, timeout=5)
            fake.send_recorded(recorded[3000:6000])
            eventually(lambda: events(service, EventKind.ROLLOVER) != [], timeout=10)
            fake.send_recorded(recorded[6000:8000])
            wanted = sum(t.kind == "MARKET" for t in recorded[:8000])
            eventually(lambda: service.engine.trades == wanted, timeout=10)
            assert service.status().gaps == 0
        finally:
            service.stop()
    assert sum(len(ids) for ids in stored(service).values()) == wanted


# ---------------------------------------------------------------------------------------- endpoints

def test_endpoints_default_to_the_futures_hosts_and_the_url_settings_override_them():
    feed = from_env({"QUANT_SOURCE": "binance-futures"}).feed
    source, rest = spec_for("binance-futures").create(feed), spec_for("binance-futures").rest
    assert isinstance(source, BinanceFeed) and rest is not None
    assert source.urls == ("wss://fstream.binance.com" + FUTURES_PATH,)
    assert source.label == "LIVE Binance USDⓈ-M futures" and source.name == "binance-futures"
    assert rest(feed).rest_url == "https://fapi.binance.com"
    mine = from_env({"QUANT_SOURCE": "binance-futures", "QUANT_WS_URL": "ws://127.0.0.1:9001",
                     "QUANT_REST_URL": "http://127.0.0.1:9002"}).feed
    assert spec_for("binance-futures").create(mine).urls[0].startswith(  # type: ignore[attr-defined]
        "ws://127.0.0.1:9001/market/stream?")
    assert rest(mine).rest_url == "http://127.0.0.1:9002"
    # Spot keeps its own hosts when nothing is set.
    spot = from_env({}).feed
    assert spec_for("binance").rest(spot).rest_url == "https://api.binance.com"


def test_klines_weigh_by_limit_as_binance_documents():
    assert [USDM.klines_weight(n) for n in (1, 99, 100, 499, 500, 1000, 1001, 1500)] == [1, 1, 2, 2, 5, 5, 10, 10]


def test_klines_page_at_1500_on_the_futures_path():
    klines = FakeKlines({"BTCUSDT": 89_806.8}, span_ms=60 * 3_600_000)  # 60 h of closed bars
    start_ms = klines.first_ms
    end_ms = start_ms + 3_200 * 60_000  # 3,200 one-minute bars: pages of 1,500, 1,500 and 200
    with FakeRest(klines=klines, futures=True) as rest:
        client = BinanceRest(rest.url, venue=USDM)
        bars = client.klines("BTCUSDT", 60_000, start_ms, end_ms, threading.Event())
        assert rest.paths == ["/fapi/v1/klines"] * 3
        assert [r["limit"] for r in rest.requests] == ["1500"] * 3
        assert rest.used_weight == 30  # 10 a page of 1,500
    assert len(bars) == 3_200
    assert list(bars.start_ms[[0, -1]]) == [start_ms, end_ms - 60_000]
    assert (bars.start_ms[1:] - bars.start_ms[:-1] == 60_000).all()  # contiguous across the pages


# ---------------------------------------------------------------------------------------- gap backfill

def backfill_run(recorded: list[RecordedTrade], sent: list[RecordedTrade], on_rest: list[RecordedTrade],
                 tmp_path) -> tuple[list[str], list[str], list[int], FakeRest]:
    """Stream ``sent``, with ``on_rest`` the trades ``/fapi/v1/trades`` knows (its latest are the
    newest); the gap and backfill events, the stored BTC ids and the REST fake."""
    with FakeBinance(ping_interval=None, futures=True) as fake, FakeRest(on_rest, futures=True) as rest:
        service = start(futures_settings(fake, data_dir=tmp_path, backfill_max_trades=100_000,
                                         rest_url=rest.url), fake)
        try:
            fake.send_recorded(sent)
            streamed = sum(t.kind == "MARKET" for t in sent)
            eventually(lambda: service.engine.trades == streamed, timeout=30)  # all of the stream, then
            eventually(lambda: events(service, EventKind.BACKFILL) != [], timeout=30)
        finally:
            service.stop()
    return events(service, EventKind.GAP), events(service, EventKind.BACKFILL), stored(service)["BTCUSDT.P"], rest


def test_a_gap_among_the_latest_trades_is_recovered(recorded, tmp_path):
    trades = btc(recorded)
    gaps, backfills, ids, rest = backfill_run(recorded, trades[:400] + trades[500:1000], trades[:1000], tmp_path)
    first = trades[400].trade_id
    assert gaps == [f"first_missing={first} count=100"]
    assert backfills == [f"first_missing={first} count=100 recovered=100"]
    assert ids == market_ids(trades[:1000], "BTCUSDT")  # complete, each once
    assert set(rest.paths) == {"/fapi/v1/trades"} and all("fromId" not in r for r in rest.requests)


def test_what_the_latest_trades_cannot_give_back_is_reported_unfilled(recorded, tmp_path):
    """An NA id inside the gap (no endpoint returns it) and a gap older than the latest 1,000 trades."""
    trades = btc(recorded)
    assert trades[710].kind == "NA"
    _, backfills, ids, _ = backfill_run(recorded, trades[:700] + trades[720:1000], trades[:1000], tmp_path)
    assert backfills == [f"first_missing={trades[700].trade_id} count=20 recovered=19 unfilled=1 (partial)"]
    assert ids == market_ids(trades[:1000], "BTCUSDT")

    old = tmp_path / "old"
    old.mkdir()
    _, backfills, ids, _ = backfill_run(recorded, trades[:400] + trades[500:1000], trades[:3000], old)
    assert backfills == [f"first_missing={trades[400].trade_id} count=100 recovered=0 unfilled=100 (partial)"]
    assert ids == market_ids(trades[:400] + trades[500:1000], "BTCUSDT")


# ---------------------------------------------------------------------------------------- recorder, databases

def test_the_recorder_records_futures_into_their_own_database(recorded, tmp_path):
    with FakeBinance(ping_interval=0.5, futures=True) as fake:
        proc = recorder("--source", "binance-futures", "--ws-url", fake.url, "--data-dir", str(tmp_path),
                        "--backfill-max-trades", "0", "--history-hours", "0")
        try:
            eventually(lambda: fake.open_connections == 1, timeout=30)
            fake.send_recorded(recorded[:3000])
            wanted = sum(t.kind == "MARKET" for t in recorded[:3000])
            eventually(lambda: count(tmp_path / "futures.sqlite3") == wanted, timeout=30)
            proc.send_signal(signal.SIGINT)
            out, _ = proc.communicate(timeout=30)
        finally:
            proc.kill()
    assert proc.returncode == 0, out
    assert "Traceback" not in out and "USDⓈ-M" in out
    assert "recording BTCUSDT.P,ETHUSDT.P into" in out  # plain --symbols are the venue's perpetuals
    with SqliteTickStore(tmp_path / "futures.sqlite3") as store:
        assert store.symbols() == ["BTCUSDT.P", "ETHUSDT.P"]
    assert fake.paths == [FUTURES_PATH]  # the wire carries Binance's own symbols
    assert not (tmp_path / "live.sqlite3").exists()  # spot's database untouched


def test_more_symbols_than_one_futures_connection_carries_are_split_over_two_connections(tmp_path):
    """101 symbols: 202 streams (trades and mark price each), two more than a USDⓈ-M connection carries
    (the fake refuses a connection asking for more, as Binance does): the recorder opens two."""
    symbols = [f"C{i:03d}USDT" for i in range(101)]
    with FakeBinance(futures=True, ping_interval=None) as fake:
        proc = recorder("--source", "binance-futures", "--symbols", ",".join(symbols), "--ws-url", fake.url,
                        "--data-dir", str(tmp_path), "--backfill-max-trades", "0", "--history-hours", "0")
        try:
            eventually(lambda: fake.open_connections == 2, timeout=30)
            assert sorted(len(streams) for streams in fake.subscriptions) == [2, 200]
            fake.send_trades([(symbol, 1, 1.0, 1.0) for symbol in (symbols[0], symbols[100])])
            eventually(lambda: count(tmp_path / "futures.sqlite3") == 2, timeout=30)
            proc.send_signal(signal.SIGINT)
            out, _ = proc.communicate(timeout=30)
        finally:
            proc.kill()
    assert proc.returncode == 0, out
    assert "Traceback" not in out and fake.handshakes_refused == 0


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_spot_and_futures_ticks_never_mix(backend, recorded, tmp_path, request):
    """Both venues at once, the same symbols and overlapping ids: each keeps its own ticks."""
    where: dict[str, object] = ({"data_dir": tmp_path} if backend == "sqlite"
                                else {"db_url": request.getfixturevalue("pg_url")})
    spot_trades = [RecordedTrade(t.symbol, t.trade_id, t.ts_ms, round(t.price * 1.001, 2), t.qty, t.buyer_is_maker)
                   for t in load_recorded_trades(require(TICKS_NDJSON))[:2000]]  # spot's own consecutive ids
    futures_trades = recorded[:3000]
    with FakeBinance(ping_interval=None) as spot_fake, FakeBinance(ping_interval=None, futures=True) as futures_fake:
        spot = start(Settings.of(source="binance", ws_url=spot_fake.url, **FAST, **where), spot_fake)
        futures = start(futures_settings(futures_fake, **where), futures_fake)
        try:
            spot_fake.send_recorded(spot_trades)
            futures_fake.send_recorded(futures_trades)
            wanted = sum(t.kind == "MARKET" for t in futures_trades)
            eventually(lambda: spot.writer.committed_trades == len(spot_trades), timeout=30)
            eventually(lambda: futures.writer.committed_trades == wanted, timeout=30)
        finally:
            spot.stop()
            futures.stop()
    if backend == "sqlite":
        assert (spot.site.ticks_path, futures.site.ticks_path) == (tmp_path / "live.sqlite3",
                                                                  tmp_path / "futures.sqlite3")
        stores = [SqliteTickStore(spot.site.ticks_path), SqliteTickStore(futures.site.ticks_path)]
    else:
        url = request.getfixturevalue("pg_url")
        stores = [PostgresTickStore(url, "live"), PostgresTickStore(url, "futures")]
    with stores[0] as spot_store, stores[1] as futures_store:
        assert spot_store.tick_count() == len(spot_trades) and futures_store.tick_count() == wanted
        spot_btc = [t for t in spot_trades if t.symbol == "BTCUSDT"]
        assert list(spot_store.ticks("BTCUSDT").price) == pytest.approx([t.price for t in spot_btc])
        assert list(spot_store.ticks("BTCUSDT").trade_id) == [t.trade_id for t in spot_btc]
        assert list(futures_store.ticks("BTCUSDT.P").trade_id) == market_ids(futures_trades, "BTCUSDT")
        assert futures_store.symbols() == ["BTCUSDT.P", "ETHUSDT.P"] and spot_store.symbols() == ["BTCUSDT", "ETHUSDT"]


# ---------------------------------------------------------------------------------------- the page

@pytest.mark.usefixtures("app_env")
def test_the_sidebar_offers_futures_and_the_page_shows_two_perpetuals(monkeypatch, recorded):
    """A user starts on the simulated market, picks "Binance USDⓈ-M futures" and gets the spot page's
    metrics for the BTCUSDT.P/ETHUSDT.P perpetuals (the symbols box turns BTCUSDT into BTCUSDT.P), fed
    by the futures fake (NA rows included)."""
    with FakeBinance(ping_interval=None, futures=True) as fake:
        monkeypatch.setenv("QUANT_SOURCE", "simulated")
        monkeypatch.setenv("QUANT_WS_URL", fake.url)
        monkeypatch.setenv("QUANT_HISTORY_HOURS", "0")
        monkeypatch.setenv("QUANT_BACKFILL_MAX_TRADES", "0")
        at = AppTest.from_file(APP, default_timeout=30).run()
        assert not any("funding" in c.value for c in at.caption)  # a simulated (or spot) feed shows no funding
        radio = at.radio(key="source")
        assert "Binance USDⓈ-M futures" in radio.options  # as the picker shows it
        radio.set_value("binance-futures").run()
        assert not at.exception
        eventually(lambda: fake.open_connections >= 1, timeout=20, message="the page started no futures feed")
        trades = recorded[:3000]
        fake.send_recorded(trades, shift_ms=time.time_ns() // 1_000_000 - trades[-1].ts_ms)

        def priced() -> bool:
            at.run()
            return all(m.value != "—" for m in at.metric if m.label.endswith(" last"))

        eventually(priced, timeout=30, interval=0.3, message="no futures prices reached the page")
        assert at.text_input(key="symbols").value == "BTCUSDT.P,ETHUSDT.P"
        labels = {m.label for m in at.metric}
        assert {"BTCUSDT.P last", "ETHUSDT.P last", "Hedge ratio β", "Spread", "Z-score"} <= labels
        assert not at.exception and not any("SIMULATED" in info.value for info in at.info)
        assert any("LIVE Binance USDⓈ-M futures" in unescaped(c.value) for c in at.caption)
        assert fake.paths == [FUTURES_PATH]

        # Funding per perpetual leg: a dash before the first mark price, then the live values.
        def funding_caption() -> str:
            return next((unescaped(c.value) for c in at.caption if ".P funding" in unescaped(c.value)), "")

        assert "BTCUSDT.P funding —" in funding_caption() and "ETHUSDT.P funding —" in funding_caption()
        next_funding = time.time_ns() // 1_000_000 + 3 * 3600_000 + 30 * 60_000  # shown as "3 h 29 min" or so

        def funded() -> bool:
            fake.send_mark_price("BTCUSDT", 89_806.8, 89_811.54, 0.0001, next_funding)  # every second, as Binance
            at.run()
            return "BTCUSDT.P funding +0.0100 % (longs pay shorts) · next in 3 h " in funding_caption()

        eventually(funded, timeout=30, interval=0.3, message=lambda: f"no funding shown: {funding_caption()!r}")
        assert "mark 89,806.80 · index 89,811.54" in funding_caption()
        assert "ETHUSDT.P funding —" in funding_caption()  # none received for ETHUSDT: no made-up value
        at.session_state["view_tab"] = "Stats & tests"
        at.run()
        assert not at.exception
        table = next(d.value for d in at.dataframe if "funding % / interval" in d.value.columns)
        assert table.loc["BTCUSDT.P", "funding % / interval"] == "+0.0100"
        assert table.loc["BTCUSDT.P", "who pays"] == "longs pay shorts"
        assert table.loc["ETHUSDT.P", "mark"] == "—"


def test_one_futures_connection_takes_100_symbols_and_spot_still_1024():
    """Two streams per USDⓈ-M symbol (trades, mark price): 100 symbols fill the 200; spot keeps one each.
    One connection refuses more (:class:`BinanceFeed` splits them over several)."""
    symbols = tuple(f"C{i:04d}USDT" for i in range(1025))
    assert BinanceSource(symbols[:100], venue=USDM).url.count("@") == 300  # 100 × (trade + markPrice@1s)
    with pytest.raises(ValueError, match=r"101 symbols need 202 streams .* at most 200 streams \(100 symbols\)"):
        BinanceSource(symbols[:101], venue=USDM)
    assert BinanceSource(symbols[:1024]).url.count("@trade") == 1024
    with pytest.raises(ValueError, match=r"1025 symbols need 1025 streams \(1 per symbol: trade\)"):
        BinanceSource(symbols)
