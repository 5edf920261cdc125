"""Research scans on the command line: ``python -m cli.research scan|walk --store DIR --from 2024-01-01 …``.

``scan`` runs the Engle–Granger scan of every pair of the research store's symbols (or
``--symbols``) over one formation span on Dask (:mod:`research.scan`): a local cluster of one
worker process per core by default, or the scheduler at ``--scheduler tcp://HOST:8786``
(``QUANT_SCHEDULER``). Progress (pairs done, ETA) goes to stderr; the top ``--show`` rows to
stdout. The result is stored whole under ``--results`` (``pairs.parquet`` and ``scan.json``, the
parameters that produced it) and exported with ``--csv FILE`` (``-`` for stdout; text cells
formula-neutralised) and ``--parquet FILE``.

``walk`` runs the walk-forward study (:mod:`research.walkrun`) on the same runner: ``--formation``
and ``--trading`` windows (durations such as ``30D`` and ``7D``, ``--step`` default the trading
length) rolled over the span; it prints one summary line per window (pairs found at q < 0.05, the
share staying cointegrated out of sample with its 95 % interval) and stores ``walk-<time>-<id>/``
(``walk.json``, ``rows.parquet``, ``summary.parquet``) under ``--results``; ``--csv``/``--parquet``
export the rows (one per pair and window).

Both take ``--archives DIR|URL`` (import the span's months of the symbols into ``--store`` from
Binance's archives first, :mod:`ingestion.archives`) and ``--top N`` (the N symbols with the largest
quote volume over the formation span: the scan's span, the first formation window of a walk).

Exit codes: 0 with the ranking; 2 with ``error: …`` naming the setting for bad arguments (an
unknown symbol, an empty span, no store, a bad scheduler address); 1 when the store, the cluster
or a block fails, or ``--archives`` refused a file or could not reach the archives; 130 when
interrupted (Ctrl-C): every task is cancelled and nothing is stored.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import pandas as pd

from analytics import TRENDS
from cli import utc_ms
from cli.archives import UsageError, default_download_dir, exchange_symbols, line, open_archives
from cli.archives import summary as import_summary
from config import ConfigError, from_env, parse_scheduler, scheduler_address
from domain import Market, Timeframe
from ingestion.archives import ArchiveError, MonthOutcome, import_months
from records.safe_csv import to_csv_bytes
from research.cluster import open_client
from research.request import ResearchPlan, ResearchRequest, plan
from research.results import save_walk
from research.scan import (
    DEFAULT_BLOCK_SIZE,
    ScanCancelled,
    ScanInputError,
    block_failure,
    eta_seconds,
    export_csv,
    export_parquet,
    open_store,
    save_scan,
    scan,
)
from research.walkrun import WalkOutcome, walk_distributed
from storage.errors import StorageError
from storage.research import months_between

DEFAULT_SHOW = 20
_MARKETS = {"spot": Market.SPOT, "um": Market.USDM, "futures": Market.USDM}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m cli.research", description=__doc__.splitlines()[0])
    commands = p.add_subparsers(dest="command", required=True)
    s = commands.add_parser("scan", help="Engle–Granger scan of every pair over one formation span, on Dask")
    _common(s)
    s.add_argument("--trend", default="c", help="deterministic terms: c (default), ct, ctt or n")
    s.add_argument("--window", default="60", help="bars of the spread's z-score (default 60)")
    s.add_argument("--maxlag", help="ADF lags tried (default: Schwert's 12·(bars/100)^¼)")
    s.add_argument("--show", default=str(DEFAULT_SHOW), help=f"rows printed (default {DEFAULT_SHOW}; 0 for none)")
    w = commands.add_parser("walk", help="walk-forward: formation then trading windows rolled over the span, on Dask")
    _common(w)
    w.add_argument("--formation", required=True, help="formation window, a duration such as 30D (whole bars)")
    w.add_argument("--trading", required=True, help="trading window after each formation, e.g. 7D")
    w.add_argument("--step", help="from one window's start to the next (default: the trading length)")
    w.add_argument("--trend", default="c", help="deterministic terms of the formation test: c (default) or n")
    w.add_argument("--maxlag", help="ADF lags tried (default: Schwert's 12·(bars/100)^¼)")
    w.add_argument("--entry", default="2.0", help="z-score that opens a position (default 2.0)")
    w.add_argument("--exit", default="0.0", help="z-score that closes it (default 0.0)")
    w.add_argument("--cost-bps", default="0", help="cost per leg per side in basis points of notional (default 0)")
    return p


def _common(s: argparse.ArgumentParser) -> None:
    """The options ``scan`` and ``walk`` share."""
    s.add_argument("--store", help="research store: a folder or a URL every worker can read "
                                    "[QUANT_RESEARCH_DIR; default <data-dir>/research, where cli.archives imports]")
    s.add_argument("--market", "--venue", default="spot", help="spot (default) or um (USDⓈ-M perpetuals)")
    s.add_argument("--timeframe", default="1m", help="bar length: 1s, 1m or 5m (default 1m)")
    s.add_argument("--symbols", help="comma-separated symbols (default: every symbol in the store)")
    s.add_argument("--top", help="only the N symbols (of --symbols, or of the store) with the largest quote volume "
                                 "over the formation span")
    s.add_argument("--archives", help="first import the span's months of --symbols (default: the store's symbols) "
                                      "from Binance's archives: an http(s) base URL or a mirror folder")
    s.add_argument("--from", dest="start", required=True, help="first bar, ISO-8601 UTC, e.g. 2024-01-01")
    s.add_argument("--to", dest="end", required=True, help="end of the span (excluded), ISO-8601 UTC")
    s.add_argument("--block-size", default=str(DEFAULT_BLOCK_SIZE),
                   help=f"symbols per group; a task is a group with itself or another (default {DEFAULT_BLOCK_SIZE})")
    s.add_argument("--scheduler", help="Dask scheduler tcp://HOST:PORT [QUANT_SCHEDULER; default: a local cluster]")
    s.add_argument("--workers", help="worker processes of the local cluster (default: one per core)")
    s.add_argument("--results", help="folder of stored scans and walk-forward runs, the one the Scanner tab opens "
                                      "[QUANT_RESULTS_DIR; default <data-dir>/research/scans]")
    s.add_argument("--csv", help="also write the ranking (walk: the rows) as CSV to this file ('-' for stdout)")
    s.add_argument("--parquet", help="also write the ranking (walk: the rows) as Parquet to this file")


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        _locations(args)
        _check_options(args)
        if args.archives is not None:
            code = _import_archives(args)
            if code:
                return code
        planned, scheduler, workers, show = _request(args)
        spec, settings = planned.spec, planned.settings
    except (ScanInputError, ConfigError, UsageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except StorageError as exc:
        print(f"error: cannot read the store: {exc}", file=sys.stderr)
        return 1
    where = scheduler or f"a local cluster of {workers or 'one worker per core'} process(es)"
    what = "walk-forward over" if settings is not None else "scanning"
    print(f"{what} {len(spec.symbols):,} symbols ({planned.pairs:,} pairs) of {spec.store} on {where}",
          file=sys.stderr)
    meter = ProgressMeter(sys.stderr)
    try:
        with open_client(scheduler, workers) as client:
            if settings is not None:
                walked = walk_distributed(client, spec, settings, progress=meter)
            else:
                outcome = scan(client, spec, progress=meter)
        if settings is not None:
            folder = save_walk(walked.rows, walked.summary, walked.parameters(), args.results)
        else:
            folder = save_scan(outcome, args.results)
    except (ScanCancelled, KeyboardInterrupt) as exc:
        meter.finish()
        print(f"cancelled: {exc or 'interrupted'}", file=sys.stderr)
        return 130
    except (ConfigError, ScanInputError) as exc:  # ScanInputError: a block the workers' memory cannot hold
        meter.finish()
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (OSError, StorageError) as exc:
        meter.finish()
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # a block that failed on a worker (after its retries): say which error, no traceback
        meter.finish()
        print(f"error: a block of the {args.command} failed: {block_failure(exc)}", file=sys.stderr)
        return 1
    meter.finish()
    if settings is not None:
        table = walked.rows
        for text in walk_summary_lines(walked):
            print(text, file=sys.stderr if args.csv == "-" else sys.stdout)
        print(f"{len(walked.windows):,} windows, {len(table):,} rows; {walked.seconds:.1f} s; stored in {folder}",
              file=sys.stderr)
    else:
        table = outcome.table
        print(f"{outcome.significant():,} pairs at q < 0.05 of {len(table):,}; {outcome.seconds:.1f} s; "
              f"stored in {folder}", file=sys.stderr)
    # A scan's CSV is ranked from 1; a walk's rows are per window (no overall rank).
    csv = export_csv(table) if settings is None else to_csv_bytes(table.set_index("window"), index_label="window")
    if args.csv == "-":
        sys.stdout.buffer.write(csv)
    elif args.csv:
        Path(args.csv).write_bytes(csv)
    if args.parquet:
        if settings is not None:
            table.assign(stays=table["stays"].astype("boolean")).to_parquet(args.parquet, index=False)
        else:
            export_parquet(table, args.parquet)
    if show and args.csv != "-" and settings is None:
        with pd.option_context("display.width", 200, "display.max_columns", 20):
            print(table.head(show).to_string(index=False))
    return 0


def walk_summary_lines(walked: WalkOutcome, level: float = 0.05) -> list[str]:
    """One line per window: its trading span, pairs tested, found at q < ``level``, and the share of
    the found (testable out of sample) that stayed cointegrated, with its 95 % Wilson interval."""
    lines = []
    for row in walked.summary.itertuples(index=False):
        trading = f"{row.trading_start:%Y-%m-%d %H:%M} – {row.trading_end:%Y-%m-%d %H:%M} UTC"
        head = f"window {row.window}: trading {trading}: {row.found:,} of {row.pairs:,} pairs found at q < {level:g}"
        if row.found_oos:
            head += (f"; {row.stayed:,} of {row.found_oos:,} stayed ({100 * row.stay_share:.0f} %, 95 % interval "
                     f"{100 * row.stay_low:.0f}–{100 * row.stay_high:.0f} %)")
        else:
            head += "; none to follow out of sample"
        lines.append(head)
    return lines


def _check_options(args: argparse.Namespace) -> None:
    """What can be checked before the store is touched (ConfigError naming the option)."""
    if args.top is not None:
        _whole("top", args.top, 2)
    if args.archives is not None and not args.archives.strip():
        raise ConfigError("archives: empty; give an http(s) base URL or a mirror folder")


def _import_archives(args: argparse.Namespace) -> int:
    """Import the span's months of the symbols into ``--store`` (``--archives``); 0 when the scan may go on,
    else the exit code (1: a file refused or the archives unreachable, the store unwritable; 130: Ctrl-C).

    Months not published are listed and are not fatal: a symbol listed late has none before.
    """
    market, timeframe = _market(args.market), _timeframe(args.timeframe)
    start, end = _time("from", args.start), _time("to", args.end)
    months = months_between(start, end)
    if not months:
        raise ConfigError(f"span: --to {args.end} is not after --from {args.start}")
    root = args.store
    if "://" not in root:
        if Path(root).exists() and not Path(root).is_dir():
            raise ConfigError(f"store: {root!r} is not a folder")
        Path(root).mkdir(parents=True, exist_ok=True)
    store = open_store(root)
    if args.symbols:
        symbols = _symbols(args.symbols, market)
    else:
        symbols = tuple(store.symbols(market, timeframe))
        if not symbols:
            raise ConfigError(f"symbols: the store holds no {market.value} {timeframe.name} symbols to update; name "
                              "the ones to import with --symbols")
    archives = open_archives(args.archives, default_download_dir(root))
    total = len(symbols) * len(months)
    print(f"importing {len(symbols)} symbol(s) × {len(months)} month(s) ({months[0]} .. {months[-1]}) of "
          f"{timeframe.name} {market.value} klines from {args.archives} into {root}", file=sys.stderr)
    outcomes: list[MonthOutcome] = []

    def progress(outcome: MonthOutcome) -> None:
        outcomes.append(outcome)
        print(f"[{len(outcomes)}/{total}] {line(outcome)}", file=sys.stderr, flush=True)

    today = pd.Timestamp.now(tz="UTC").date()
    try:
        import_months(archives, store, market, timeframe, symbols, months, today=today, on_month=progress)
    except ArchiveError as exc:
        print(import_summary(outcomes), file=sys.stderr)
        print(f"error: cannot download: {exc}", file=sys.stderr)
        return 1
    except StorageError as exc:
        print(import_summary(outcomes), file=sys.stderr)
        print(f"error: cannot write the research store: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(import_summary(outcomes), file=sys.stderr)
        print("interrupted: the months above are stored; run again to resume", file=sys.stderr)
        return 130
    print(import_summary(outcomes), file=sys.stderr)
    if any(o.status == "refused" for o in outcomes):  # a scan of incomplete history would mislead
        print("error: archives: a file was refused (above); nothing scanned", file=sys.stderr)
        return 1
    return 0


def _request(args: argparse.Namespace) -> tuple[ResearchPlan, str | None, int | None, int]:
    """The run asked for, parsed from the options and checked by :func:`research.request.plan`
    (ScanInputError or ConfigError naming the setting)."""
    scanning = args.command == "scan"
    timeframe = _timeframe(args.timeframe)
    market = _market(args.market)
    if scanning and args.trend not in TRENDS:
        raise ConfigError(f"trend: {args.trend!r} is not one of {', '.join(TRENDS)}")
    window = _whole("window", args.window, 2) if scanning else 60
    maxlag = None if args.maxlag is None else _whole("maxlag", args.maxlag, 0)
    block_size = _whole("block-size", args.block_size, 1)
    show = _whole("show", args.show, 0) if scanning else 0  # a walk prints its summary instead
    workers = None if args.workers is None else _whole("workers", args.workers, 1)
    scheduler = parse_scheduler(args.scheduler) if args.scheduler else scheduler_address()
    if scheduler is not None and workers is not None:
        raise ConfigError("workers: --workers sizes the local cluster; a scheduler's workers are started with it")
    start, end = _time("from", args.start), _time("to", args.end)
    symbols = _symbols(args.symbols, market) if args.symbols else None
    top = None if args.top is None else _whole("top", args.top, 2)
    walk: dict[str, Any] = {} if scanning else {
        "formation": args.formation, "trading": args.trading, "step": args.step,
        "entry": _number("entry", args.entry), "exit": _number("exit", args.exit),
        "cost_bps": _number("cost-bps", args.cost_bps)}
    request = ResearchRequest(args.command, args.store, market, timeframe, start, end, symbols=symbols, top=top,
                              trend=args.trend, window=window, maxlag=maxlag, block_size=block_size, **walk)
    return plan(request), scheduler, workers, show


def _locations(args: argparse.Namespace) -> None:
    """Fill in ``--store`` and ``--results`` from the settings the dashboard and ``cli.archives`` read
    (QUANT_RESEARCH_DIR, QUANT_RESULTS_DIR, QUANT_DATA_DIR), so all three agree by default."""
    storage = from_env(research_dir=args.store or None,
                       results_dir=Path(args.results) if args.results else None).storage
    args.store, args.results = storage.research_root, str(storage.results_folder)


def _symbols(raw: str, market: Market) -> tuple[str, ...]:
    """The store's names of ``--symbols``: a perpetual's leg name (``ETHUSDT.P``) is its symbol on um
    (the store keeps um bars under ``ETHUSDT``) and refused on spot, as the archives importer does."""
    try:
        return exchange_symbols(raw, market)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _market(raw: str) -> Market:
    market = _MARKETS.get(raw.strip().lower())
    if market is None:
        raise ConfigError(f"market: {raw!r} is not spot or um")
    return market


def _timeframe(raw: str) -> Timeframe:
    try:
        return Timeframe.of(raw)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _number(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}: {raw!r} is not a number") from None
    return value


class ProgressMeter:
    """``pairs done / total (percent), elapsed, ETA`` on one line of ``stream`` (rewritten on a terminal,
    a new line every 10 % otherwise). The clock starts at the first report (0 pairs done: the tasks
    are submitted), so the cluster's start-up does not count in the rate."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.started = time.monotonic()
        self.tty = stream.isatty()
        self.shown = -1
        self.open = False

    def __call__(self, done: int, total: int) -> None:
        if done == 0:
            self.started = time.monotonic()
        elapsed = time.monotonic() - self.started
        percent = 100.0 * done / total if total else 100.0
        if not self.tty and int(percent // 10) == self.shown and done < total:
            return
        self.shown = int(percent // 10)
        eta = eta_seconds(done, total, elapsed)
        line = (f"pairs {done:,} / {total:,} ({percent:.1f} %), {_duration(elapsed)} elapsed, "
                f"ETA {_duration(eta)}")
        if self.tty:
            self.stream.write("\r" + line.ljust(70))
            self.open = True
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def finish(self) -> None:
        if self.open:
            self.stream.write("\n")
            self.stream.flush()
            self.open = False


def _duration(seconds: float) -> str:
    if seconds == float("inf"):
        return "?"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


def _whole(name: str, raw: str, minimum: int) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}: {raw!r} is not a whole number") from None
    if value < minimum:
        raise ConfigError(f"{name}: {value} must be >= {minimum}")
    return value


def _time(name: str, raw: str) -> int:
    """``raw`` (ISO-8601; naive means UTC) in UTC epoch ms; ConfigError naming ``--name`` otherwise."""
    when = utc_ms(raw)
    if when is None:
        raise ConfigError(f"{name}: {raw!r} is not an ISO-8601 time such as 2024-01-01 or 2024-01-01T08:00Z")
    return when


if __name__ == "__main__":
    # Dask's worker processes are spawned: they import this module as __mp_main__ and must not run main().
    sys.exit(main())
