"""One leg name everywhere (issue 22.3): ``ETHUSDT`` is spot, ``ETHUSDT.P`` the USDⓈ-M perpetual.

The binance-futures source names its legs ``ETHUSDT.P`` from the wire on (trades, mark prices, REST,
storage), while the wire carries Binance's own ``ETHUSDT``; settings, alert rules, the recorder and
the scanner take leg names, refuse a perpetual where its venue does not run, and a futures database
stored before leg names is renamed when a service opens it.
"""

from __future__ import annotations

import io
import os
import threading

import numpy as np
import pandas as pd
import pytest

from alerts.rules import parse_rule
from cli.scan import main as scan_main
from config import ConfigError, Settings, normalize_symbol, parse_symbols
from domain import Leg
from ingestion.binance import SPOT, USDM, BinanceSource
from ingestion.sources import resolve, same_coins
from records import BarArrays, EventKind, FeedEvent, Trade
from records.alerts import AlertRule, make_event
from service import Service
from storage import open_alerts, open_ticks, site_for
from testkit.fake_binance import FakeBinance
from testkit.waiting import eventually
from tests.test_binance_source import FAST
from tests.test_recorder_cli import recorder
from tests.test_scanner import planted_universe, write_universe

# ------------------------------------------------------------------------------------ names and venues


def test_a_leg_name_is_a_symbol_or_a_symbol_with_dot_p_and_nothing_else():
    assert parse_symbols(" ethusdt.p , BTCUSDT,ETHUSDT.P") == ("ETHUSDT.P", "BTCUSDT")
    for bad in ("ETHUSDT.PERP", "ETH-USDT", "ETHUSDT.p.p", ".P", "ETHUSDT;DROP"):
        with pytest.raises(ConfigError, match=r"invalid symbol .*e\.g\. BTCUSDT, or a USDⓈ-M perpetual, e\.g\. "
                                              r"BTCUSDT\.P"):
            parse_symbols(bad)


@pytest.mark.parametrize("look_alike", [
    "ethuſdt",  # long s: upper() makes it "S"
    "ﬁlusdt",  # the "fi" ligature: upper() makes it "FI"
    "ßßUSDT",  # sharp s: upper() makes it "SS"
    "ETHUSDT.Р",  # Cyrillic Er, not P
    "ЕTHUSDT",  # Cyrillic Ie
    "ＥＴＨＵＳＤＴ",  # full-width
    "ETH\u200bUSDT",  # a zero-width space inside
])
def test_a_look_alike_of_a_leg_name_is_refused_by_name_never_read_as_another_symbol(look_alike):
    """Python's upper() turns some non-ASCII letters into ASCII ones (ſ → S, ß → SS, ﬁ → FI): without an
    ASCII check first, ``ethuſdt`` was watched as ETHUSDT and ``ßßUSDT`` as SSSSUSDT, names the user never
    typed. A leg name is ASCII letters and digits (and ``.P``) as typed, whatever its case."""
    with pytest.raises(ValueError, match="invalid leg"):
        Leg.parse(look_alike)
    with pytest.raises(ConfigError, match="invalid symbol"):
        parse_symbols(look_alike)
    with pytest.raises(ConfigError, match="invalid symbol"):
        normalize_symbol(look_alike)


def test_the_futures_venue_takes_plain_symbols_as_its_perpetuals_and_spot_refuses_a_perpetual():
    assert USDM.legs(("BTCUSDT", "ETHUSDT.P", "btcusdt.p")) == ("BTCUSDT.P", "ETHUSDT.P")
    assert (USDM.exchange_symbol("BTCUSDT.P"), USDM.leg("BTCUSDT")) == ("BTCUSDT", "BTCUSDT.P")
    assert SPOT.legs(("BTCUSDT",)) == ("BTCUSDT",) and SPOT.exchange_symbol("BTCUSDT") == "BTCUSDT"
    with pytest.raises(ValueError, match=r"ETHUSDT\.P is a USDⓈ-M perpetual, but Binance spot \(binance\) has spot "
                                         r"symbols only: watch it with --source binance-futures"):
        SPOT.legs(("BTCUSDT", "ETHUSDT.P"))
    source = BinanceSource(("BTCUSDT", "ETHUSDT"), venue=USDM)
    assert source.symbols == ("BTCUSDT.P", "ETHUSDT.P")
    assert source.url.endswith("?streams=btcusdt@trade/btcusdt@markPrice@1s/ethusdt@trade/ethusdt@markPrice@1s")


def test_settings_resolve_to_the_sources_legs_with_the_alert_pair():
    futures = resolve(Settings.of(source="binance-futures", symbols="BTCUSDT,ETHUSDT"))
    assert futures.feed.symbols == ("BTCUSDT.P", "ETHUSDT.P") and futures.alerts.pair == ("ETHUSDT.P", "BTCUSDT.P")
    spot = Settings.of(source="binance", symbols="BTCUSDT,ETHUSDT")
    assert resolve(spot) is spot
    with pytest.raises(ValueError, match=r"symbols: BTCUSDT\.P is a USDⓈ-M perpetual leg, but the simulated source "
                                         r"has no perpetuals"):
        resolve(Settings.of(source="simulated", symbols="BTCUSDT.P,ETHUSDT"))


def test_switching_the_sidebar_source_keeps_the_coins_on_the_new_market():
    assert same_coins("binance-futures", ["BTCUSDT", "ETHUSDT.P", " sol;x"]) == ("BTCUSDT.P", "ETHUSDT.P", "sol;x")
    assert same_coins("binance", ["BTCUSDT.P", "ETHUSDT"]) == ("BTCUSDT", "ETHUSDT")
    assert same_coins("simulated", ["BTCUSDT.P", "BTCUSDT"]) == ("BTCUSDT",)


@pytest.mark.parametrize(("source", "named"), [("binance", r"Binance spot \(binance\) has spot symbols only"),
                                               ("simulated", "the simulated source has no perpetuals")])
def test_a_service_refuses_a_perpetual_where_its_venue_does_not_run_and_creates_nothing(source, named, tmp_path):
    with pytest.raises(ValueError, match=rf"ETHUSDT\.P is a USDⓈ-M perpetual.*{named}"):
        Service.start(Settings.of(source=source, symbols="BTCUSDT,ETHUSDT.P", data_dir=tmp_path, **FAST))
    assert not list(tmp_path.iterdir())


def test_alert_rules_name_perpetual_legs():
    rule = parse_rule("price ethusdt.p > 3000", pair=None, timeframe_ms=1_000, window=60)
    assert rule.symbol == "ETHUSDT.P" and rule.describe() == "ETHUSDT.P price > 3000"
    basis = parse_rule("zscore > 2", pair=("ETHUSDT.P", "ETHUSDT"), timeframe_ms=1_000, window=60)
    assert basis.label == "ETHUSDT.P/ETHUSDT"
    assert make_event(basis, 1, 2.5).message.startswith("ETHUSDT.P/ETHUSDT z-score 2.50 > 2")


# ------------------------------------------------------------------------------------ recorder


def test_the_recorder_refuses_a_perpetual_on_spot_naming_the_venue(tmp_path):
    proc = recorder("--source", "binance", "--symbols", "BTCUSDT,ETHUSDT.P", "--data-dir", str(tmp_path))
    try:
        out, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 2, out
    assert out == ("error: symbols: ETHUSDT.P is a USDⓈ-M perpetual, but Binance spot (binance) has spot symbols "
                   "only: watch it with --source binance-futures (or ETHUSDT for the spot symbol)\n")
    assert not list(tmp_path.iterdir())


def test_the_recorder_stores_futures_alert_rules_on_the_perpetual_legs(tmp_path):
    """``--symbols BTCUSDT,ETHUSDT --alert 'price BTCUSDT > 1'`` on binance-futures: every leg is the perpetual."""
    with FakeBinance(ping_interval=None, futures=True) as fake:
        proc = recorder("--source", "binance-futures", "--ws-url", fake.url, "--data-dir", str(tmp_path),
                        "--symbols", "BTCUSDT,ETHUSDT", "--alert", "price BTCUSDT > 1", "--alert", "zscore > 2",
                        "--history-hours", "0", "--backfill-max-trades", "0", "--duration", "1")
        try:
            out, _ = proc.communicate(timeout=60)
        finally:
            proc.kill()
    assert proc.returncode == 0, out
    assert "recording BTCUSDT.P,ETHUSDT.P into" in out and "BTCUSDT.P price > 1" in out
    with open_alerts(site_for(Settings.of(data_dir=tmp_path).storage, "futures")) as store:
        assert [(r.describe(), r.label) for r in store.rules()] == [("BTCUSDT.P price > 1", "BTCUSDT.P"),
                                                                    ("zscore > 2", "ETHUSDT.P/BTCUSDT.P")]


# ------------------------------------------------------------------------------------ a database from before leg names


def _old_futures_database(settings: Settings) -> None:
    """What a futures recorder stored before leg names: plain BTCUSDT/ETHUSDT ticks, bars, feed
    events, an alert rule per kind and a fired alert."""
    site = site_for(settings.storage, "futures")
    with open_ticks(site) as store:
        store.write_batch([Trade("BTCUSDT", 100, 1_765_788_195_000, 1_765_788_195_001, 90_000.0, 0.1, False),
                           Trade("ETHUSDT", 500, 1_765_788_195_000, 1_765_788_195_001, 3_000.0, 1.0, True)],
                          [FeedEvent(1_765_788_195_002, EventKind.GAP, "BTCUSDT", "first_missing=90 count=10")])
        one = np.array([1.0])
        store.write_bars("BTCUSDT", 60_000, BarArrays(np.array([1_765_788_120_000]), one, one, one, one, one,
                                                      np.array([4]), one))
    with open_alerts(site) as alerts:
        pair_rule = alerts.add_rule(parse_rule("zscore > 2", pair=("ETHUSDT", "BTCUSDT"), timeframe_ms=1_000,
                                               window=60))
        price_rule = alerts.add_rule(parse_rule("price BTCUSDT > 1", pair=None, timeframe_ms=1_000, window=60))
        alerts.record(make_event(pair_rule, 1_765_788_195_000, 2.5))
        alerts.record(make_event(price_rule, 1_765_788_195_000, 90_000.0))


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_futures_database_from_before_leg_names_is_renamed_on_open_and_continues(backend, tmp_path, request):
    """Every stored name becomes the perpetual's; the feed then continues its trade ids with no false gap."""
    where: dict[str, object] = ({"data_dir": tmp_path} if backend == "sqlite"
                                else {"db_url": request.getfixturevalue("pg_url")})
    with FakeBinance(ping_interval=None, futures=True) as fake:
        settings = Settings.of(source="binance-futures", ws_url=fake.url, **FAST, **where)
        _old_futures_database(settings)
        service = Service.start(settings)
        try:
            eventually(lambda: fake.open_connections >= 1, timeout=10, message="client never connected")
            fake.send_trade("BTCUSDT", 101, 90_001.0, 0.2)
            eventually(lambda: service.writer.committed_trades == 1)
            assert service.status().gaps == 0 and service.symbols == ("BTCUSDT.P", "ETHUSDT.P")
        finally:
            service.stop()
    with open_ticks(service.site) as store:
        assert store.symbols() == ["BTCUSDT.P", "ETHUSDT.P"]
        assert list(store.ticks("BTCUSDT.P").trade_id) == [100, 101]
        assert list(store.ticks("ETHUSDT.P").trade_id) == [500]
        assert len(store.bars("BTCUSDT.P", 60_000).start_ms) == 1 and len(store.bars("BTCUSDT", 60_000).start_ms) == 0
        assert [e.symbol for e in store.feed_events(kinds=[EventKind.GAP])] == ["BTCUSDT.P"]
    with open_alerts(service.site) as alerts:
        assert [(r.describe(), r.label) for r in alerts.rules()] == [("zscore > 2", "ETHUSDT.P/BTCUSDT.P"),
                                                                     ("BTCUSDT.P price > 1", "BTCUSDT.P")]
        history = alerts.alerts()
        assert sorted(a.event.label for a in history) == ["BTCUSDT.P", "ETHUSDT.P/BTCUSDT.P"]
        assert "BTCUSDT.P price > 1" in {a.event.rule_text for a in history}


def test_a_spot_database_is_never_renamed(tmp_path):
    settings = Settings.of(source="binance", data_dir=tmp_path, ws_url="ws://127.0.0.1:9", **FAST)
    with open_ticks(site_for(settings.storage, "live")) as store:
        store.write_batch([Trade("BTCUSDT", 1, 1_765_788_195_000, 1_765_788_195_001, 90_000.0, 0.1, False)])
    Service.start(settings).stop()
    with open_ticks(site_for(settings.storage, "live")) as store:
        assert store.symbols() == ["BTCUSDT"]


def test_a_rule_text_survives_the_rename_and_reads_back():
    rule = AlertRule(metric="price", operator=">", threshold=1.0, symbol="BTCUSDT.P", timeframe_ms=1_000, window=60)
    assert parse_rule(rule.describe(), pair=None, timeframe_ms=1_000, window=60) == rule


# ------------------------------------------------------------------------------------ scanner


def test_the_scanner_reads_a_futures_database_by_leg_names(tmp_path, capsysbinary, monkeypatch):
    """``--source binance-futures --symbols S0,S1,S2`` scans S0.P…: the rows name the perpetual legs;
    a perpetual asked of a spot database is refused naming the venue."""
    for key in [k for k in os.environ if k.startswith("QUANT_")]:
        monkeypatch.delenv(key)
    closes = planted_universe(n=120, k=3, seed=8)
    write_universe(tmp_path / "futures.sqlite3", closes.rename(columns=lambda s: f"{s}.P"))
    assert scan_main(["--source", "binance-futures", "--data-dir", str(tmp_path), "--symbols", "S0,S1,S2",
                      "--lookback-hours", "2", "--csv"]) == 0
    table = pd.read_csv(io.StringIO(capsysbinary.readouterr().out.decode()), index_col="rank")
    assert set(table["y"]) | set(table["x"]) == {"S0.P", "S1.P", "S2.P"}
    write_universe(tmp_path / "live.sqlite3", closes)
    assert scan_main(["--source", "binance", "--data-dir", str(tmp_path), "--symbols", "S0,S1.P"]) == 2
    assert capsysbinary.readouterr().err.decode() == (
        "error: symbols: S1.P is a USDⓈ-M perpetual, but Binance spot (binance) has spot symbols only: watch it "
        "with --source binance-futures (or S1 for the spot symbol)\n")


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_rename_cut_short_before_the_alert_rules_finishes_at_the_next_start(backend, tmp_path, request, monkeypatch):
    """The ticks and the alert rules are renamed in two transactions: a start that died between them (the
    server restarting, the process killed) left the ticks named ``.P``, and as the next start looked only
    at the ticks, the rules kept watching plain ``BTCUSDT``, a leg this feed never names, for good."""
    import service as service_module
    from storage.errors import StorageUnavailable

    where: dict[str, object] = ({"data_dir": tmp_path} if backend == "sqlite"
                                else {"db_url": request.getfixturevalue("pg_url")})
    real_open_alerts = service_module.open_alerts
    calls = []

    def dying_open_alerts(site):
        calls.append(site)
        if len(calls) == 1:
            raise StorageUnavailable(f"cannot use {site.location}: the server is restarting")
        return real_open_alerts(site)

    monkeypatch.setattr(service_module, "open_alerts", dying_open_alerts)
    with FakeBinance(ping_interval=None, futures=True) as fake:
        settings = Settings.of(source="binance-futures", ws_url=fake.url, **FAST, **where)
        _old_futures_database(settings)
        with pytest.raises(StorageUnavailable, match="restarting"):
            Service.start(settings)
        Service.start(settings).stop()
    site = site_for(settings.storage, "futures")
    with open_ticks(site) as store:
        assert store.symbols() == ["BTCUSDT.P", "ETHUSDT.P"]
    with open_alerts(site) as alerts:
        assert [r.label for r in alerts.rules()] == ["ETHUSDT.P/BTCUSDT.P", "BTCUSDT.P"]
        assert sorted(a.event.label for a in alerts.alerts()) == ["BTCUSDT.P", "ETHUSDT.P/BTCUSDT.P"]


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_rename_over_rows_an_upgraded_recorder_already_stored_keeps_one_of_each(backend, tmp_path, request):
    """Recorders share a server schema and are upgraded one at a time: while one of the old version still
    stores plain ``BTCUSDT`` trades, the upgraded one stores the same trades (same exchange ids) as
    ``BTCUSDT.P``. The next start's rename then met the stored ``.P`` rows: a duplicate key refused it, and
    no upgraded recorder could start on that schema any more. A plain row whose ``.P`` twin is stored is
    the same trade (or bar): the twin stays, the plain row goes; the others are renamed."""
    where: dict[str, object] = ({"data_dir": tmp_path} if backend == "sqlite"
                                else {"db_url": request.getfixturevalue("pg_url")})
    with FakeBinance(ping_interval=None, futures=True) as fake:
        settings = Settings.of(source="binance-futures", ws_url=fake.url, **FAST, **where)
        _old_futures_database(settings)
        site = site_for(settings.storage, "futures")
        with open_ticks(site) as store:  # what the upgraded recorder stored beside the old one
            store.write_batch([Trade("BTCUSDT.P", 100, 1_765_788_195_000, 1_765_788_195_001, 90_000.0, 0.1, False),
                               Trade("BTCUSDT.P", 99, 1_765_788_194_000, 1_765_788_194_001, 89_999.0, 0.3, True)])
            two = np.array([2.0])
            store.write_bars("BTCUSDT.P", 60_000, BarArrays(np.array([1_765_788_120_000]), two, two, two, two, two,
                                                            np.array([5]), two))
        Service.start(settings).stop()
    with open_ticks(site) as store:
        assert store.symbols() == ["BTCUSDT.P", "ETHUSDT.P"]
        assert list(store.ticks("BTCUSDT.P").trade_id) == [99, 100] and store.tick_count() == 3
        assert list(store.bars("BTCUSDT.P", 60_000).close) == [2.0]
        assert len(store.bars("BTCUSDT", 60_000).start_ms) == 0


def test_recorders_starting_at_once_on_a_schema_from_before_leg_names_rename_it_once(pg_url):
    """Recorders of exchange trades share a server schema (a shared writer lock), so several may run the
    rename at the same moment: each waits for the other's rows, none renames a name twice (no ``.P.P``),
    none fails, and nothing is lost or doubled."""
    import service as service_module
    from ingestion.sources import spec_for

    settings = Settings.of(source="binance-futures", db_url=pg_url, ws_url="ws://127.0.0.1:9", **FAST)
    _old_futures_database(settings)
    site, spec = site_for(settings.storage, "futures"), spec_for("binance-futures")
    start, errors = threading.Barrier(4), []

    def rename() -> None:
        try:
            start.wait(10)
            service_module._name_legs(site, spec)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=rename) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    with open_ticks(site) as store:
        assert store.symbols() == ["BTCUSDT.P", "ETHUSDT.P"] and store.tick_count() == 2
        assert len(store.bars("BTCUSDT.P", 60_000).start_ms) == 1
        assert [e.symbol for e in store.feed_events(kinds=[EventKind.GAP])] == ["BTCUSDT.P"]
    with open_alerts(site) as alerts:
        assert [(r.describe(), r.label) for r in alerts.rules()] == [("zscore > 2", "ETHUSDT.P/BTCUSDT.P"),
                                                                     ("BTCUSDT.P price > 1", "BTCUSDT.P")]
        assert sorted(a.event.label for a in alerts.alerts()) == ["BTCUSDT.P", "ETHUSDT.P/BTCUSDT.P"]
