"""Research scans on the command line: ``python -m cli.research scan --store DIR --from 2024-01-01 --to 2024-02-01``.

``scan`` runs the Engle–Granger scan of every pair of the research store's symbols (or
``--symbols``) over one formation span on Dask (:mod:`research.scan`): a local cluster of one
worker process per core by default, or the scheduler at ``--scheduler tcp://HOST:8786``
(``QUANT_SCHEDULER``). Progress (pairs done, ETA) goes to stderr; the top ``--show`` rows to
stdout. The result is stored whole under ``--results`` (``pairs.parquet`` and ``scan.json``, the
parameters that produced it) and exported with ``--csv FILE`` (``-`` for stdout; text cells
formula-neutralised) and ``--parquet FILE``.

Exit codes: 0 with the ranking; 2 with ``error: …`` naming the setting for bad arguments (an
unknown symbol, an empty span, no store, a bad scheduler address); 1 when the store, the cluster
or a block fails; 130 when interrupted (Ctrl-C): every task is cancelled and nothing is stored.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

import pandas as pd

from analytics import TRENDS
from config import ConfigError, check_window, parse_scheduler, parse_symbols, scheduler_address
from domain import Market, Timeframe
from research.cluster import open_client
from research.scan import (
    DEFAULT_BLOCK_SIZE,
    ScanCancelled,
    ScanInputError,
    ScanSpec,
    check_spec,
    eta_seconds,
    export_csv,
    export_parquet,
    open_store,
    save_scan,
    scan,
)
from storage.errors import StorageError

DEFAULT_RESULTS = Path("data") / "research" / "scans"
DEFAULT_SHOW = 20
_MARKETS = {"spot": Market.SPOT, "um": Market.USDM, "futures": Market.USDM}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m cli.research", description=__doc__.splitlines()[0])
    commands = p.add_subparsers(dest="command", required=True)
    s = commands.add_parser("scan", help="Engle–Granger scan of every pair over one formation span, on Dask")
    s.add_argument("--store", required=True, help="research store: a folder or a URL every worker can read")
    s.add_argument("--market", "--venue", default="spot", help="spot (default) or um (USDⓈ-M perpetuals)")
    s.add_argument("--timeframe", default="1m", help="bar length: 1s, 1m or 5m (default 1m)")
    s.add_argument("--symbols", help="comma-separated symbols (default: every symbol in the store)")
    s.add_argument("--from", dest="start", required=True, help="first bar, ISO-8601 UTC, e.g. 2024-01-01")
    s.add_argument("--to", dest="end", required=True, help="end of the span (excluded), ISO-8601 UTC")
    s.add_argument("--trend", default="c", help="deterministic terms: c (default), ct, ctt or n")
    s.add_argument("--window", default="60", help="bars of the spread's z-score (default 60)")
    s.add_argument("--maxlag", help="ADF lags tried (default: Schwert's 12·(bars/100)^¼)")
    s.add_argument("--block-size", default=str(DEFAULT_BLOCK_SIZE),
                   help=f"symbols per group; a task is a group with itself or another (default {DEFAULT_BLOCK_SIZE})")
    s.add_argument("--scheduler", help="Dask scheduler tcp://HOST:PORT [QUANT_SCHEDULER; default: a local cluster]")
    s.add_argument("--workers", help="worker processes of the local cluster (default: one per core)")
    s.add_argument("--results", default=str(DEFAULT_RESULTS),
                   help=f"folder of stored scans (default {DEFAULT_RESULTS})")
    s.add_argument("--csv", help="also write the ranking as CSV to this file ('-' for stdout)")
    s.add_argument("--parquet", help="also write the ranking as Parquet to this file")
    s.add_argument("--show", default=str(DEFAULT_SHOW), help=f"rows printed (default {DEFAULT_SHOW}; 0 for none)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        spec, scheduler, workers, show = _request(args)
    except (ScanInputError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except StorageError as exc:
        print(f"error: cannot read the store: {exc}", file=sys.stderr)
        return 1
    where = scheduler or f"a local cluster of {workers or 'one worker per core'} process(es)"
    print(f"scanning {len(spec.symbols):,} symbols ({_pairs(len(spec.symbols)):,} pairs) of {spec.store} on {where}",
          file=sys.stderr)
    meter = ProgressMeter(sys.stderr)
    try:
        with open_client(scheduler, workers) as client:
            outcome = scan(client, spec, progress=meter)
        folder = save_scan(outcome, args.results)
    except (ScanCancelled, KeyboardInterrupt) as exc:
        meter.finish()
        print(f"cancelled: {exc or 'interrupted'}", file=sys.stderr)
        return 130
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (OSError, StorageError) as exc:
        meter.finish()
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # a block that failed on a worker (after its retries): say which error, no traceback
        meter.finish()
        print(f"error: a block of the scan failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    meter.finish()
    table = outcome.table
    print(f"{outcome.significant():,} pairs at q < 0.05 of {len(table):,}; {outcome.seconds:.1f} s; stored in {folder}",
          file=sys.stderr)
    if args.csv == "-":
        sys.stdout.buffer.write(export_csv(table))
    elif args.csv:
        Path(args.csv).write_bytes(export_csv(table))
    if args.parquet:
        export_parquet(table, args.parquet)
    if show and args.csv != "-":
        with pd.option_context("display.width", 200, "display.max_columns", 20):
            print(table.head(show).to_string(index=False))
    return 0


def _request(args: argparse.Namespace) -> tuple[ScanSpec, str | None, int | None, int]:
    """The scan asked for, checked (ScanInputError or ConfigError naming the setting)."""
    try:
        timeframe = Timeframe.of(args.timeframe)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    market = _MARKETS.get(args.market.strip().lower())
    if market is None:
        raise ConfigError(f"market: {args.market!r} is not spot or um")
    if args.trend not in TRENDS:
        raise ConfigError(f"trend: {args.trend!r} is not one of {', '.join(TRENDS)}")
    window = check_window(_whole("window", args.window, 2))
    maxlag = None if args.maxlag is None else _whole("maxlag", args.maxlag, 0)
    block_size = _whole("block-size", args.block_size, 1)
    show = _whole("show", args.show, 0)
    workers = None if args.workers is None else _whole("workers", args.workers, 1)
    scheduler = parse_scheduler(args.scheduler) if args.scheduler else scheduler_address()
    if scheduler is not None and workers is not None:
        raise ConfigError("workers: --workers sizes the local cluster; a scheduler's workers are started with it")
    start, end = _time("from", args.start), _time("to", args.end)
    store = open_store(args.store)
    symbols = parse_symbols(args.symbols) if args.symbols else tuple(store.symbols(market, timeframe))
    spec = ScanSpec(args.store, market, timeframe, symbols, start, end, trend=args.trend, window=window,
                    maxlag=maxlag, block_size=block_size)
    return check_spec(spec), scheduler, workers, show


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


def _pairs(k: int) -> int:
    return k * (k - 1) // 2


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
    try:
        when = pd.Timestamp(raw.strip())
    except ValueError:
        when = pd.NaT
    if when is pd.NaT:
        raise ConfigError(f"{name}: {raw!r} is not an ISO-8601 time such as 2024-01-01 or 2024-01-01T08:00Z")
    when = when.tz_localize("UTC") if when.tzinfo is None else when.tz_convert("UTC")
    return int(when.value // 1_000_000)


if __name__ == "__main__":
    # Dask's worker processes are spawned: they import this module as __mp_main__ and must not run main().
    sys.exit(main())
