"""Headless recorder: ``python -m ingestion --source binance --symbols BTCUSDT,ETHUSDT``.

Runs the engine without a browser, logs a status line every ``--status-interval`` seconds,
exits 0 after a full flush on SIGTERM/SIGINT (or after ``--duration`` seconds, or when a replay
ends), and exits 2 with a message naming the setting on invalid arguments.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from collections.abc import Sequence

from alerts.monitor import alerts_path
from alerts.rules import parse_rule
from alerts.store import AlertStore
from config import ConfigError, from_cli
from ingestion.engine import Engine
from ingestion.records import FeedStatus

log = logging.getLogger("ingestion")


def format_status(status: FeedStatus, committed: int, alerts: int = 0) -> str:
    """One log line of feed health."""
    age = "-" if status.last_tick_age_s is None else f"{status.last_tick_age_s:.1f}s"
    line = (
        f"{status.label} state={status.state.value} ticks/s={status.ticks_per_s:.1f} "
        f"trades={status.trades} stored={committed} last_tick_age={age} reconnects={status.reconnects} "
        f"gaps={status.gaps} dup={status.duplicates} parse_errors={status.parse_errors} alerts={alerts}"
    )
    return line + (f" last_error={status.last_error!r}" if status.last_error else "")


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = from_cli(argv, prog="python -m ingestion")
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        rules = [parse_rule(text, pair=settings.pair, timeframe_ms=settings.timeframe_ms, window=settings.window)
                 for text in settings.alerts]
        engine = Engine(settings)
    except (ValueError, OSError) as exc:  # a bad alert rule, an unreadable replay file
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if rules:
        with AlertStore(alerts_path(settings.db_path)) as store:
            for rule in rules:
                stored, added = store.ensure_rule(rule)
                log.info("alert rule %s: %s (%s)", stored.id, stored.describe(), "added" if added else "already stored")

    stop = threading.Event()

    def request_stop(signum: int, _frame: object) -> None:
        log.info("received %s; flushing and exiting", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    engine.start()
    log.info("recording %s into %s", ",".join(settings.symbols), settings.db_path)
    deadline = None if settings.duration is None else time.monotonic() + settings.duration
    while not stop.is_set():
        timeout = settings.status_interval
        if deadline is not None:
            timeout = min(timeout, max(deadline - time.monotonic(), 0))
        if stop.wait(timeout):
            break
        log.info("%s", format_status(engine.status(), engine.writer.committed_trades, engine.alerts.fired))
        if deadline is not None and time.monotonic() >= deadline:
            break
        if not engine.running:  # a replay reached its end
            break
    flushed = engine.stop()
    log.info("final: %s", format_status(engine.status(), engine.writer.committed_trades,
                                        engine.alerts.fired if engine.alerts else 0))
    if engine.writer.error is not None:
        print(f"error: database writer failed: {engine.writer.error}", file=sys.stderr)
        return 1
    return 0 if flushed else 1


if __name__ == "__main__":
    sys.exit(main())
