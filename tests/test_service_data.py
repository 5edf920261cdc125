"""What the pages read and change in storage, through the service: feed events, alert rules and
history, uploaded datasets. The UI opens no store itself (checked on its source below)."""

from __future__ import annotations

import ast
from pathlib import Path

import pandas as pd
import pytest

from config import ConfigError, Settings, StorageSettings
from records.alerts import AlertRule, make_event
from service import Service, load_datasets, save_dataset, stored_datasets
from storage import DATASETS_FILE, open_alerts
from storage.csv_import import parse_ohlc_csv
from testkit.waiting import eventually

ROOT = Path(__file__).resolve().parents[1]
# The factory's functions that open (or probe) a database: only the layers below ui/ call them.
OPENERS = {"open_ticks", "open_alerts", "open_datasets", "open_tick_file", "has_datasets", "claim_writer",
           "current_writer"}
# A rule the simulated market never meets, so the service's own monitor stores no alert meanwhile.
QUIET = AlertRule("zscore", ">", 50.0, pair=("ETHUSDT", "BTCUSDT"))


@pytest.fixture
def service(tmp_path):
    running = Service.start(Settings.of(source="simulated", data_dir=tmp_path, speed=20.0,
                                        symbols=("BTCUSDT", "ETHUSDT")))
    yield running
    running.stop()


def bars_csv(first_close: float, rows: int = 5) -> bytes:
    lines = ["timestamp,open,high,low,close,volume"]
    for i in range(rows):
        close = first_close + i
        lines.append(f"2025-01-01T00:0{i}:00Z,{close},{close + 1},{close - 1},{close},{i + 1}")
    return ("\n".join(lines) + "\n").encode()


def test_rules_are_added_switched_and_deleted_through_the_service(service):
    stored, added = service.add_rule(QUIET)
    assert added and stored.id is not None and stored.threshold == 50.0
    again, added_again = service.add_rule(QUIET)  # a second click, or a second tab, adds nothing
    assert (again.id, added_again) == (stored.id, False)
    assert [rule.id for rule in service.alert_rules()] == [stored.id]
    assert service.set_rule_enabled(stored.id, False)
    assert [rule.enabled for rule in service.alert_rules()] == [False]
    assert service.delete_rule(stored.id)
    assert service.alert_rules() == []
    # Another tab deleted it first: a toggle or a delete of a rule that is gone says so, and fails nothing.
    assert not service.delete_rule(stored.id)
    assert not service.set_rule_enabled(stored.id, True)


def test_a_rule_on_a_leg_of_another_market_is_refused_not_stored_to_never_fire(service):
    """A user on a spot-only page types a perpetual's price rule, or a pair with a perpetual leg: this
    source's monitor never sees ``ETHUSDT.P``, so storing it would leave a rule that silently never fires."""
    perp_price = AlertRule("price", ">", 3_000.0, symbol="ETHUSDT.P")
    with pytest.raises(ValueError, match=r"ETHUSDT\.P is a USDⓈ-M perpetual, but the Simulated market source"):
        service.add_rule(perp_price)
    with pytest.raises(ValueError, match=r"on ETHUSDT\.P/BTCUSDT: ETHUSDT\.P is a USDⓈ-M perpetual"):
        service.add_rule(AlertRule("zscore", ">", 2.0, pair=("ETHUSDT.P", "BTCUSDT")))
    assert service.alert_rules() == []
    stored, added = service.add_rule(AlertRule("price", ">", 3_000.0, symbol="ETHUSDT"))  # its own leg: kept
    assert added and [rule.id for rule in service.alert_rules()] == [stored.id]


def test_the_alert_history_is_read_now_while_the_banners_keep_their_copy(service):
    """A webhook delivery moves on after its alert was stored (and counted): the history shows where it is."""
    rule, _ = service.add_rule(QUIET)
    with open_alerts(service.site) as store:
        store.record(make_event(rule, 1_765_700_000_000, 51.0), pending=True)
    assert [r.delivery.state for r in service.alert_history(10)] == ["pending"]
    service.recent_alerts()  # the banners' copy, kept until the monitor stores another alert
    with open_alerts(service.site) as store:
        (claimed,) = store.claim_deliveries(1, 15_000)
        assert store.mark_delivered(claimed)
    assert [r.delivery.state for r in service.alert_history(10)] == ["delivered"]
    assert service.alert_history(0) == []


def test_feed_events_are_the_newest_of_the_services_database(service):
    eventually(lambda: len(service.feed_events(limit=50)) >= 1, timeout=10)
    # The running feed keeps adding events (started, then connected a millisecond later): the newest
    # one asked for is at least as new as every event stored before the question, and still stored after.
    before = service.feed_events(limit=50)
    newest = service.feed_events(limit=1)
    after = service.feed_events(limit=50)
    assert len(newest) == 1 and newest[0].ts_ms >= max(e.ts_ms for e in before) and newest[0] in after


def test_a_dataset_is_saved_once_with_its_symbol_checked_and_listed_newest_first(tmp_path):
    settings = StorageSettings(data_dir=tmp_path)
    assert stored_datasets(settings) == []
    assert not (tmp_path / DATASETS_FILE).exists()  # listing nothing creates nothing
    eth = parse_ohlc_csv(bars_csv(100.0), "eth.csv")
    first = save_dataset(settings, eth, name="  eth-day \n", symbol=" ethusdt ", filename="eth.csv")
    assert first.created and (first.dataset.name, first.dataset.symbol) == ("eth-day", "ETHUSDT")
    # The same bars from another file (zipped, CRLF, renamed) are the stored dataset, not a copy.
    same = parse_ohlc_csv(bars_csv(100.0).replace(b"\n", b"\r\n"), "eth (1).csv")
    repeat = save_dataset(settings, same, name="eth again", symbol="ETHUSDT", filename="eth (1).csv")
    assert not repeat.created and repeat.dataset.id == first.dataset.id
    with pytest.raises(ConfigError, match=r"invalid symbol 'eth/usdt'"):
        save_dataset(settings, parse_ohlc_csv(bars_csv(7.0), "x.csv"), name="x", symbol="eth/usdt", filename="x.csv")
    with pytest.raises(ValueError, match="already exists with different content"):
        save_dataset(settings, parse_ohlc_csv(bars_csv(7.0), "x.csv"), name="eth-day", symbol="ETHUSDT",
                     filename="x.csv")
    btc = save_dataset(settings, parse_ohlc_csv(bars_csv(90_000.0), "b.csv"), name="btc-day", symbol="BTCUSDT",
                       filename="b.csv").dataset
    listed = stored_datasets(settings)
    assert [d.name for d in listed] == ["btc-day", "eth-day"]
    frames = load_datasets(settings, *listed)
    assert list(frames) == ["btc-day", "eth-day"]
    pd.testing.assert_frame_equal(frames["eth-day"], eth, check_freq=False)
    assert frames["btc-day"]["close"].iloc[0] == 90_000.0 and btc.rows == 5


def ui_sources() -> list[Path]:
    return [*sorted((ROOT / "ui").glob("*.py")), ROOT / "app.py"]


@pytest.mark.parametrize("path", ui_sources(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_the_ui_reaches_data_through_the_service_and_opens_no_store(path: Path):
    """Was: the Feed tab, the Alerts tab and the upload form opened their databases themselves."""
    opened = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "storage":
            opened += [f"{node.lineno}: {alias.name}" for alias in node.names if alias.name in OPENERS]
    assert opened == []
