import threading
import time

import pytest

from config import Settings
from ingestion.backoff import AttemptBudget, Backoff
from ingestion.engine import Engine, Gap, TradeSequencer
from ingestion.records import EventKind, FeedEvent, FeedState, Trade
from ingestion.source import SourceStats, TradeSink
from storage.sqlite import SqliteStore
from tests.factories import make_trade, make_trades
from tests.fake_binance import eventually


class ScriptedSource:
    """Hand-written source: emits a fixed script of trades/events, then idles until stopped."""

    def __init__(self, items: list[Trade | FeedEvent], name: str = "simulated", crash: bool = False) -> None:
        self.items = items
        self.name = name
        self.label = f"SCRIPTED {name}"
        self.stats = SourceStats()
        self.crash = crash

    def run(self, sink: TradeSink, stop: threading.Event) -> None:
        self.stats.state = FeedState.CONNECTED
        for item in self.items:
            self.stats.messages += 1
            self.stats.last_message_mono = time.monotonic()
            if isinstance(item, Trade):
                sink.on_trade(item)
            else:
                sink.on_event(item)
        if self.crash:
            raise RuntimeError("boom")
        stop.wait()
        self.stats.state = FeedState.STOPPED


def settings_for(tmp_path, **changes) -> Settings:
    return Settings(source="simulated", data_dir=tmp_path, **changes)


def test_sequencer_drops_resends_and_reports_gaps():
    seq = TradeSequencer()
    assert seq.check(make_trade(trade_id=10)) == (True, None)
    assert seq.check(make_trade(trade_id=11)) == (True, None)
    assert seq.check(make_trade(trade_id=11))[0] is False  # re-sent after a reconnect
    is_new, gap = seq.check(make_trade(trade_id=15))
    assert is_new and gap == Gap("BTCUSDT", 12, 3)
    event = gap.event(5)
    assert event.kind is EventKind.GAP and event.symbol == "BTCUSDT" and event.detail == "first_missing=12 count=3"
    assert (seq.duplicates, seq.gaps, seq.missing) == (1, 1, 3)
    # Symbols are independent.
    assert seq.check(make_trade("ETHUSDT", trade_id=1)) == (True, None)


def test_engine_stores_every_trade_once_and_records_gaps(tmp_path):
    script = [*make_trades(100), *make_trades(20, first_id=81), *make_trades(50, first_id=201),
              *make_trades(30, symbol="ETHUSDT")]
    engine = Engine(settings_for(tmp_path), source=ScriptedSource(script))
    engine.start()
    eventually(lambda: engine.writer.committed_trades == 180, timeout=10)
    status = engine.status()
    assert (status.trades, status.duplicates, status.gaps, status.missing_trades) == (180, 20, 1, 100)
    assert engine.buffer.last("BTCUSDT").trade_id == 250
    assert engine.stop()
    with SqliteStore(engine.settings.db_path) as store:
        assert store.tick_count("BTCUSDT") == 150 and store.tick_count("ETHUSDT") == 30
        gaps = store.feed_events(kinds=[EventKind.GAP])
        assert [g.detail for g in gaps] == ["first_missing=101 count=100"]
        kinds = {e.kind for e in store.feed_events()}
        assert {EventKind.STARTED, EventKind.STOPPED} <= kinds


def test_stop_flushes_a_burst_without_loss(tmp_path):
    engine = Engine(settings_for(tmp_path), source=ScriptedSource(make_trades(60_000)))
    engine.start()
    eventually(lambda: engine.trades == 60_000, timeout=20)
    assert engine.stop()
    with SqliteStore(engine.settings.db_path) as store:
        assert store.tick_count() == 60_000


def test_live_restart_resumes_gap_detection_from_the_database(tmp_path):
    settings = settings_for(tmp_path, db=tmp_path / "live.db", backfill_max_trades=0)
    first = Engine(settings, source=ScriptedSource(make_trades(10), name="binance"))
    first.start()
    eventually(lambda: first.writer.committed_trades == 10)
    first.stop()
    second = Engine(settings, source=ScriptedSource(make_trades(10, first_id=8), name="binance"))
    second.start()
    eventually(lambda: second.trades == 7)  # 8..10 already stored → dropped; 11..17 new
    assert second.status().duplicates == 3 and second.status().gaps == 0
    second.stop()


def test_source_crash_is_visible_in_status_and_events(tmp_path):
    engine = Engine(settings_for(tmp_path), source=ScriptedSource(make_trades(3), crash=True))
    engine.start()
    eventually(lambda: not engine.running)
    status = engine.status()
    assert status.state is FeedState.STOPPED and "boom" in status.last_error
    engine.stop()
    with SqliteStore(engine.settings.db_path) as store:
        assert any("boom" in e.detail for e in store.feed_events(kinds=[EventKind.ERROR]))


def test_status_rates_and_ages(tmp_path):
    engine = Engine(settings_for(tmp_path), source=ScriptedSource(make_trades(500)))
    engine.start()
    eventually(lambda: engine.trades == 500)
    status = engine.status()
    assert status.ticks_per_s > 0 and status.last_tick_age_s is not None and status.last_tick_age_s < 5
    assert status.label == "SCRIPTED simulated" and status.symbols == ("BTCUSDT", "ETHUSDT")
    engine.stop()


def test_backoff_grows_is_capped_and_jittered():
    import random

    backoff = Backoff(0.5, 8.0, random.Random(1))
    ceilings = []
    delays = []
    for _ in range(10):
        ceilings.append(backoff.ceiling())
        delays.append(backoff.next_delay())
    assert ceilings == [0.5, 1, 2, 4, 8, 8, 8, 8, 8, 8]
    assert all(0 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    assert len(set(delays)) == len(delays)  # full jitter: no two the same
    backoff.reset()
    assert backoff.ceiling() == 0.5
    with pytest.raises(ValueError):
        Backoff(0, 1)


def test_attempt_budget_caps_attempts_per_window():
    now = [0.0]
    budget = AttemptBudget(limit=3, window_s=300, clock=lambda: now[0])
    for _ in range(3):
        assert budget.wait_needed() == 0
        budget.record()
        now[0] += 1
    assert budget.wait_needed() == pytest.approx(297)
    now[0] = 300.5
    assert budget.wait_needed() == 0
