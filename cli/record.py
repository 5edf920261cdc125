"""Headless recorder: ``python -m cli.record --source binance --symbols BTCUSDT,ETHUSDT``, or the
venue's most traded symbols: ``--top 50 --quote USDT`` (by 24 h quote volume, from its listing).

Runs the same service as the dashboard without a browser, logs a status line every
``--status-interval`` seconds, exits 0 after a full flush on SIGTERM/SIGINT (or after
``--duration`` seconds, or when a replay ends). Exit codes: 2 with ``error: …`` naming the
setting for invalid arguments (a bad symbol, a ``--db`` that is a directory or not SQLite);
1 when it cannot store (a damaged database, another recorder already writing the file, rows the
database refused, a storage failure mid-run) — never 0 for data that was not stored.

An entry point on top of the layers (``cli/``): it starts the :class:`service.Service` and stores
``--alert`` rules, so it cannot live in ``ingestion/``, which sits below both.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import replace

from alerts.rules import parse_rule
from config import ConfigError, Settings, from_cli
from domain import Leg
from ingestion.binance.rest import RestError
from ingestion.history import HistoryProgress
from ingestion.sources import resolve, spec_for
from records import FeedStatus
from records.alerts import AlertRule
from service import Service
from storage import open_alerts
from storage.errors import StorageError, StorageLocationError

log = logging.getLogger("ingestion")  # the name its log lines have always carried (people and tools read them)

CHECK_EVERY_S = 0.25  # how often the main loop notices a storage failure or the end of a replay


def format_status(status: FeedStatus, alerts: int = 0, history: HistoryProgress | None = None) -> str:
    """One log line of feed, storage and history-loading health."""
    age = "-" if status.last_tick_age_s is None else f"{status.last_tick_age_s:.1f}s"
    line = (
        f"{status.label} state={status.state.value} ticks/s={status.ticks_per_s:.1f} "
        f"trades={status.trades} stored={status.stored} storage={status.storage_state.value} "
        f"last_tick_age={age} reconnects={status.reconnects} gaps={status.gaps} dup={status.duplicates} "
        f"parse_errors={status.parse_errors} alerts={alerts}"
    )
    if status.connections is not None:
        line += " connections_up={}/{}".format(*status.connections)
    if status.rejected or status.lost:
        line += f" rejected={status.rejected} lost={status.lost}"
    if history is not None:
        line += f" history={history.done}/{history.total}"
        if history.loading:
            line += f" loading={history.current or 'queued'!r}"
        if history.errors:
            line += f" history_error={history.errors[-1]!r}"
    if status.rest_banned_until is not None:
        line += f" rest_banned_until={status.rest_banned_until!r}"
    return line + (f" last_error={status.last_error!r}" if status.last_error else "")


class TopUnavailable(RuntimeError):
    """The venue's listing could not be fetched for ``--top`` (exit 1: nothing wrong with the arguments)."""


def with_top(settings: Settings) -> Settings:
    """``settings`` watching the ``--top`` N symbols of its venue's listing by 24 h quote volume (in
    ``--quote``); unchanged without ``--top``. ConfigError for a source without a listing or a quote
    asset nothing trades in; :class:`TopUnavailable` when the listing cannot be fetched."""
    recorder = settings.recorder
    if recorder.top is None:
        return settings
    spec = spec_for(settings.feed.source)
    if spec.universe is None:
        raise ConfigError(f"top (--top): the {settings.feed.source} source has no symbol list to rank; "
                          "use --symbols")
    try:
        universe = spec.universe(settings.feed).get()
    except (RestError, OSError) as exc:
        raise TopUnavailable(f"cannot pick the top {recorder.top} symbols: {exc}") from None
    # Leg names, as --symbols gives after resolve(): BTCUSDT.P on binance-futures (the pair is compared to them).
    symbols = tuple(Leg(universe.market, symbol).name for symbol in universe.top(recorder.top, recorder.quote))
    if not symbols:
        raise ConfigError(f"quote (--quote): no trading symbol is quoted in {recorder.quote}; the venue's "
                          f"quote assets are {', '.join(universe.quote_assets()[:10])}")
    log.info("top %d by 24 h quote volume in %s: %s", recorder.top, recorder.quote, ",".join(symbols))
    # The alert pair defaults to the second symbol over the first: of the picked ones, not of the defaults.
    # A pair set on purpose stays (and must be among them).
    old = settings.feed.symbols
    defaulted = len(old) >= 2 and settings.alerts.pair == (old[1], old[0])
    return settings.replace(symbols=symbols, pair=None) if defaulted else settings.replace(symbols=symbols)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        # Leg names from here on: --source binance-futures --symbols BTCUSDT records BTCUSDT.P.
        settings = resolve(from_cli(argv, prog="python -m cli.record"))
    except (ConfigError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.recorder.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = with_top(settings)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except TopUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    setting = "db (--db, QUANT_DB)" if settings.storage.db is not None else "data_dir (--data-dir, QUANT_DATA_DIR)"
    try:
        alerts = settings.alerts
        legs = spec_for(settings.feed.source).legs
        rules = [_on_legs(parse_rule(text, pair=alerts.pair, timeframe_ms=alerts.timeframe_ms, window=alerts.window),
                          legs) for text in alerts.rules]
        service = Service.start(settings)
    except StorageLocationError as exc:
        print(f"error: {setting}: {exc}", file=sys.stderr)
        return 2
    except StorageError as exc:  # damaged, another writer, newer schema: cannot store, say why
        print(f"error: cannot record: {exc}", file=sys.stderr)
        return 1
    except (ValueError, OSError) as exc:  # a bad alert rule or source setting, an unreadable replay file
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if rules:
        with open_alerts(service.site) as store:
            for rule in rules:
                stored, added = store.ensure_rule(rule)
                log.info("alert rule %s: %s (%s)", stored.id, stored.describe(), "added" if added else "already stored")

    stop = threading.Event()

    def request_stop(signum: int, _frame: object) -> None:
        log.info("received %s; flushing and exiting", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    log.info("recording %s into %s", ",".join(settings.feed.symbols), service.site.location)
    recorder = settings.recorder
    started = time.monotonic()
    next_status = started + recorder.status_interval
    while not stop.wait(CHECK_EVERY_S):
        now = time.monotonic()
        if now >= next_status:
            next_status = now + recorder.status_interval
            log.info("%s", format_status(service.status(), _fired(service), service.history_progress))
        if recorder.duration is not None and now - started >= recorder.duration:
            break
        if service.failed or not service.running:  # storage failed, or a replay reached its end
            break
    flushed = service.stop()
    status = service.status()
    log.info("final: %s", format_status(status, _fired(service), service.history_progress))
    writer = service.writer
    if writer is not None and writer.error is not None:
        print(f"error: storage failed, {writer.lost:,} received items were not stored: {writer.error}",
              file=sys.stderr)
        return 1
    if status.rejected:
        print(f"error: the database refused {status.rejected:,} rows (last: {writer.reject_error if writer else ''})",
              file=sys.stderr)
        return 1
    return 0 if flushed else 1


def _on_legs(rule: AlertRule, legs: Callable[[Collection[str]], tuple[str, ...]]) -> AlertRule:
    """``rule`` with its price rule's symbol as the source's leg (``price BTCUSDT > 1`` on
    binance-futures watches ``BTCUSDT.P``, as ``--symbols BTCUSDT`` does); ValueError for a leg the
    source does not carry."""
    return rule if rule.symbol is None else replace(rule, symbol=legs((rule.symbol,))[0])


def _fired(service: Service) -> int:
    return service.monitor.fired if service.monitor is not None else 0


if __name__ == "__main__":
    sys.exit(main())
