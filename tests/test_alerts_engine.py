"""Alerts evaluated by the engine: no browser session, once per event, persisted, restart-safe."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from alerts.monitor import AlertMonitor, metric_series, rule_params
from alerts.rules import parse_rule
from config import Settings
from ingestion.sources import site_of
from records import Trade
from service import Service
from storage.sqlite.alerts import SqliteAlertStore
from testkit.sources import PhasedSource
from testkit.waiting import eventually
from tests.shared_data import TICKS_NDJSON, require

ROOT = Path(__file__).resolve().parents[1]
T0 = 1_765_000_000_000  # on the 1 s grid


class PairMarket:
    """One trade per second per leg: x a random walk, y = 2x + small noise, with spikes on demand."""

    def __init__(self) -> None:
        self.rng = np.random.default_rng(3)
        self.second = 0
        self.x = 100.0
        self.next_id = 1

    def seconds(self, n: int, spike: float = 0.0, per_leg: int = 1) -> list[Trade]:
        trades = []
        for _ in range(n):
            self.x += self.rng.normal(0, 0.05)
            y = 2 * self.x + self.rng.normal(0, 0.02) + spike
            for k in range(per_leg):
                ts = T0 + self.second * 1000 + 100 + 10 * k
                trades += [Trade("BTCUSDT", self.next_id, ts, ts, round(self.x, 4), 1.0, False),
                           Trade("ETHUSDT", self.next_id, ts + 1, ts + 1, round(y, 4), 1.0, False)]
                self.next_id += 1
            self.second += 1
        return trades


@pytest.fixture
def setup(tmp_path):
    source = PhasedSource()
    service = Service.start(Settings.of(source="simulated", db=tmp_path / "sim.db"), source=source)
    # The tests step monitors of their own on a separate rules file, so the service's monitor
    # (which watches the site's alerts file) never sees their rules.
    yield service, source, tmp_path / "rules.sqlite3"
    service.stop()


def monitor_for(service: Service, **kwargs) -> AlertMonitor:
    """A monitor of the service's engine and history, never started: the test steps it with a store of its own."""
    return AlertMonitor(service.engine, service.site, service.shared, **kwargs)


def feed(service: Service, source: PhasedSource, trades: list[Trade]) -> None:
    target = source.emitted + len(trades)
    source.release(trades)
    eventually(lambda: source.emitted == target and service.writer.backlog == 0, timeout=10)


def test_fires_once_per_excursion_and_is_stored_with_market_time(setup):
    service, source, rules_db = setup
    market = PairMarket()
    with SqliteAlertStore(rules_db) as store:
        rule, _ = store.ensure_rule(parse_rule("zscore > 3", pair=("ETHUSDT", "BTCUSDT"), timeframe_ms=1_000,
                                               window=20))
        monitor = monitor_for(service)
        feed(service, source, market.seconds(80))
        assert monitor.step(store) == 0  # primes the rule on the bars so far; records nothing
        feed(service, source, market.seconds(1, spike=1.0) + market.seconds(1))
        assert monitor.step(store) == 1
        feed(service, source, market.seconds(2, spike=1.0) + market.seconds(1))  # still stretched: no storm
        assert monitor.step(store) == 0
        feed(service, source, market.seconds(60))  # back inside the band: re-armed
        monitor.step(store)
        feed(service, source, market.seconds(1, spike=1.5) + market.seconds(1))
        assert monitor.step(store) == 1
        history = store.alerts()
        assert len(history) == 2
        first = history[-1].event
        assert first.rule_id == rule.id and first.value > 3 and first.label == "ETHUSDT/BTCUSDT"
        assert first.ts_ms == T0 + 80 * 1000  # the spike bar's start: market time, not wall time
        assert "z-score" in first.message and "> 3" in first.message

        # A restarted monitor primes again and records nothing twice.
        again = monitor_for(service)
        assert again.step(store) == 0
        assert len(store.alerts()) == 2


@pytest.mark.parametrize("metric", ["zscore", "spread", "corr", "beta"])
def test_metric_during_warm_up_is_nan_on_the_bar_index(metric):
    """Too few bars for the window: one NaN per bar (the monitor needs bar starts), not an empty series."""
    index = pd.date_range("2025-12-15", periods=5, freq="1s", tz="UTC")
    closes = pd.DataFrame({"BTCUSDT": np.linspace(100, 101, 5), "ETHUSDT": np.linspace(200, 203, 5)}, index=index)
    rule = parse_rule(f"{metric} > 2", pair=("ETHUSDT", "BTCUSDT"), timeframe_ms=1_000, window=20)
    values = metric_series(rule, closes)
    assert values.index.equals(index)
    assert values.isna().all()


def test_monitor_steps_quietly_through_warm_up_then_fires(setup):
    service, source, rules_db = setup
    market = PairMarket()
    with SqliteAlertStore(rules_db) as store:
        store.ensure_rule(parse_rule("zscore > 3", pair=("ETHUSDT", "BTCUSDT"), timeframe_ms=1_000, window=20))
        monitor = monitor_for(service)
        feed(service, source, market.seconds(5))
        assert monitor.step(store) == 0  # no β yet
        feed(service, source, market.seconds(20))
        assert monitor.step(store) == 0  # β known, its z-score not yet
        feed(service, source, market.seconds(60))
        monitor.step(store)
        feed(service, source, market.seconds(1, spike=1.0) + market.seconds(1))
        assert monitor.step(store) == 1  # the warm-up passes did not leave the rule stuck


def test_rules_added_by_another_process_are_picked_up(setup):
    service, source, rules_db = setup
    market = PairMarket()
    with SqliteAlertStore(rules_db) as engine_store:
        monitor = monitor_for(service)
        feed(service, source, market.seconds(30))
        assert monitor.step(engine_store) == 0 and monitor.rules == []
        with SqliteAlertStore(rules_db) as ui_store:  # e.g. the dashboard, on its own connection
            ui_store.ensure_rule(parse_rule("ETHUSDT price > 250", pair=None, timeframe_ms=1_000, window=20))
        feed(service, source, market.seconds(2))
        monitor.step(engine_store)
        assert [r.describe() for r in monitor.rules] == ["ETHUSDT price > 250"]


def test_liquidity_filter_keeps_thin_bars_out_of_alerts(setup, tmp_path):
    """A dip on bars with one trade per leg: the unfiltered monitor alerts, the filtered one does not."""
    service, source, rules_db = setup
    market = PairMarket()
    rule = parse_rule("ETHUSDT price crosses below 150", pair=None, timeframe_ms=1_000, window=20)
    with SqliteAlertStore(rules_db) as filtered_store, SqliteAlertStore(tmp_path / "control.sqlite3") as control_store:
        filtered_store.ensure_rule(rule)
        control_store.ensure_rule(rule)
        filtered = monitor_for(service, min_trades=2)
        control = monitor_for(service)
        feed(service, source, market.seconds(30, per_leg=2))
        filtered.step(filtered_store), control.step(control_store)
        feed(service, source, market.seconds(3, spike=-100.0, per_leg=1) + market.seconds(3, per_leg=2))
        assert control.step(control_store) == 1
        assert filtered.step(filtered_store) == 0 and filtered_store.alerts() == []


def test_headless_recorder_evaluates_alerts_without_a_browser(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUANT_")}
    db = tmp_path / "sim.db"
    alerts_db = site_of(Settings.of(source="simulated", db=db)).alerts_path
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli.record", "--source", "simulated", "--speed", "30", "--db", str(db),
         "--timeframe", "1s", "--window", "10", "--alert", "zscore > 1.5", "--alert", "zscore < -1.5"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def alerts() -> int:
        if not alerts_db.exists():
            return 0
        with SqliteAlertStore(alerts_db) as store:
            return len(store.alerts())

    try:
        eventually(lambda: alerts() >= 2, timeout=60, interval=0.5, message="no alerts stored by the recorder")
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, out
    with SqliteAlertStore(alerts_db) as store:
        assert sorted(r.describe() for r in store.rules()) == ["zscore < -1.5", "zscore > 1.5"]
        for record in store.alerts():
            assert abs(record.event.value) > 1.5 and record.event.label == "ETHUSDT/BTCUSDT"


def test_replay_recorder_with_an_alert_logs_no_traceback_during_warm_up(tmp_path):
    """200 market seconds of the shared BTC/ETH ticks: z-score warm-up (120 bars), then live evaluation."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUANT_")}
    proc = subprocess.run(
        [sys.executable, "-m", "cli.record", "--source", "replay", "--replay-file", str(require(TICKS_NDJSON)),
         "--speed", "50", "--duration", "4", "--alert", "zscore > 2", "--data-dir", str(tmp_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "zscore > 2 (added)" in proc.stderr  # the rule was really watched
    for stream in (proc.stdout, proc.stderr):
        assert "Traceback" not in stream and "ERROR" not in stream, stream


def test_invalid_alert_rule_exits_2(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUANT_")}
    proc = subprocess.run([sys.executable, "-m", "cli.record", "--source", "simulated", "--db", str(tmp_path / "x.db"),
                           "--alert", "zscroe > 2"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "unknown metric 'zscroe'" in proc.stderr


def test_an_alert_store_busy_at_start_is_retried_and_the_monitor_keeps_running(setup, monkeypatch):
    """A database locked by another process when the monitor starts pauses alerting; it must not end the thread."""
    service, _source, _rules_db = setup
    import alerts.monitor as monitor_module
    from storage.errors import StorageUnavailable

    real_open = monitor_module.open_alerts
    attempts = []

    def busy_then_real(site):
        attempts.append(site)
        if len(attempts) <= 2:
            raise StorageUnavailable("cannot write to database 'live-alerts.sqlite3': database is locked")
        return real_open(site)

    monkeypatch.setattr(monitor_module, "open_alerts", busy_then_real)
    monitor = monitor_for(service, poll_s=0.01)
    monitor.start()
    try:
        eventually(lambda: len(attempts) == 3 and monitor.last_error is None, timeout=10,
                   message="the monitor never opened its store after the lock went away")
        assert monitor._thread is not None and monitor._thread.is_alive()
    finally:
        monitor.stop()


def test_a_price_rule_has_no_pair_analytics_to_watch():
    pair_rule = parse_rule("zscore > 2", pair=("ETHUSDT", "BTCUSDT"), timeframe_ms=60_000, window=30)
    assert rule_params(pair_rule).window == 30
    price_rule = parse_rule("BTCUSDT price > 1", pair=None, timeframe_ms=60_000, window=30)
    with pytest.raises(ValueError, match=r"alert rule 'BTCUSDT price > 1' watches a price, not a pair"):
        rule_params(price_rule)
