"""Pair scanner on the command line: ``python -m cli.scan --source simulated --timeframe 1m``.

Ranks every pair of a source's database (``--source``, ``--db``, ``--data-dir`` as for the
recorder) or of uploaded datasets (``--datasets NAME,NAME,…``) by Engle–Granger q-value, the
same scan as the dashboard's Scanner tab (:func:`analytics.scan_pairs` on closed bars), and prints
the top ``--top`` rows as a table, or every row as CSV with ``--csv``. Reads only: nothing is
created or changed.

A database is scanned over ``--lookback-hours`` (default 24) ending at ``--end`` (default: the
last tick or bar stored); the bar still forming there is left out. Datasets are scanned whole
unless ``--lookback-hours`` is given; pairs of datasets that do not overlap in time cannot be
tested and are named.

Exit codes: 0 with the ranking; 2 with ``error: …`` naming the setting for bad arguments (an
unknown source, symbol or dataset, no such database or a file that is not one, a lookback without
bars); 1 when the database cannot be read.

An entry point on top of the layers (``cli/``): it prints CSV through
:func:`records.safe_csv.to_csv_bytes`, which neutralises spreadsheet formulas (dataset names are
free text), and checks ``--timeframe``, ``--window`` and ``--symbols`` with :mod:`config`'s validators.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from analytics import TRENDS
from cli import utc_ms
from config import ConfigError, Settings, check_timeframe, check_window, from_env, parse_symbols
from ingestion.sources import site_of, spec_for
from pairs.bars import dataset_pair_bars
from pairs.ranking import ScanResult, run_scan, universe_closes
from pairs.stored import stored_bars, stored_end_ms
from records import now_ms
from records.safe_csv import to_csv_bytes
from storage import Site, StorageError, has_datasets, open_datasets, open_ticks
from storage.datasets import DatasetInfo
from storage.errors import StorageLocationError
from ui.export import ranking
from ui.labels import Q_VALUE_NOTE, TREND_LABELS, timeframe_label

DEFAULT_LOOKBACK_HOURS = 24.0
DEFAULT_TOP = 20
# More bars than a day of 1 s bars costs memory for little: every pair is tested in-sample anyway.
MAX_SCAN_BARS = 100_000
_HOUR_MS = 3_600_000
_TIME = "%Y-%m-%d %H:%M"


class UsageError(ValueError):
    """A bad argument; the message names the setting."""


@dataclass(frozen=True, slots=True)
class Scanned:
    """A scan and where its bars came from (for the header lines)."""

    result: ScanResult
    origin: str  # e.g. "simulated database data/simulated.sqlite3"
    notes: tuple[str, ...]  # what could not be scanned, and why


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m cli.scan", description=__doc__.splitlines()[0])
    p.add_argument("--source", help="source whose database is scanned: binance (live), simulated or replay "
                                    "[QUANT_SOURCE; default binance]")
    p.add_argument("--symbols", help="comma-separated legs, BTCUSDT spot, BTCUSDT.P perpetual (binance-futures takes "
                                     "BTCUSDT as BTCUSDT.P) (default: every symbol with ticks in the database)")
    p.add_argument("--db", help="SQLite file to scan (overrides the source's default) [QUANT_DB]")
    p.add_argument("--data-dir", help="directory of the per-source databases and the uploads [QUANT_DATA_DIR]")
    p.add_argument("--replay-file", help="the replayed file, for --source replay [QUANT_REPLAY_FILE]")
    p.add_argument("--datasets", help="scan these uploaded datasets instead, comma-separated names")
    p.add_argument("--timeframe", default="1m", help="bar length: 1s, 1m or 5m (default 1m)")
    p.add_argument("--lookback-hours", help=f"hours of bars before --end (default {DEFAULT_LOOKBACK_HOURS:g} for a "
                                            "database, the whole file for datasets)")
    p.add_argument("--end", help="end of the lookback, ISO-8601 UTC, or 'now' (default: the last stored data)")
    p.add_argument("--window", default="60", help="bars of the spread's z-score (default 60)")
    p.add_argument("--trend", default="c", help="deterministic terms: c (constant, default), ct, ctt or n")
    p.add_argument("--top", help=f"rows to print (default {DEFAULT_TOP}; with --csv every row); 0 for all")
    p.add_argument("--csv", action="store_true", help="write CSV to stdout instead of the table")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        top = _top(args)
        scanned = scan_datasets(args) if args.datasets is not None else scan_database(args)
    except (UsageError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except StorageError as exc:
        print(f"error: cannot read: {exc}", file=sys.stderr)
        return 1
    for note in scanned.notes:
        print(f"note: {note}", file=sys.stderr)
    table = ranking(scanned.result.table, scanned.result.interval_ms)
    rows = (None if args.csv else DEFAULT_TOP) if top is None else top
    if rows:
        table = table.head(rows)
    if args.csv:
        sys.stdout.buffer.write(to_csv_bytes(table, index_label="rank"))
    else:
        print(report(scanned, table))
    return 0


def scan_database(args: argparse.Namespace) -> Scanned:
    """Scan the database of ``--source`` (or ``--db``) over the lookback."""
    interval_ms, window, trend = check_timeframe(args.timeframe), _window(args.window), _trend(args.trend)
    settings = _settings(args)
    spec = spec_for(settings.feed.source)  # ConfigError naming the choices
    try:
        site = site_of(settings)
    except ValueError as exc:  # e.g. "replay_file: required when source is 'replay'"
        raise UsageError(str(exc)) from None
    lookback_ms = _lookback_ms(args.lookback_hours, interval_ms, DEFAULT_LOOKBACK_HOURS)
    try:  # the source's leg names: BTCUSDT is BTCUSDT.P in a binance-futures database, as the recorder stores it
        named = spec.legs(parse_symbols(args.symbols)) if args.symbols else None
    except ConfigError:  # a malformed name: reported as every setting's
        raise
    except ValueError as exc:  # a perpetual leg of a spot database, named with its venue
        raise UsageError(str(exc)) from None
    if named is not None and len(named) < 2:
        raise UsageError(f"symbols: a scan needs at least two symbols, got {', '.join(named)}")
    given_end = _end(args.end)
    _require_database(site, settings)  # every argument is checked before the database is opened
    try:
        store = open_ticks(site)
    except StorageLocationError as exc:  # a directory, a file that is not a database
        raise UsageError(f"{_location_setting(settings)}: {exc}") from None
    with store:
        symbols = named or tuple(store.symbols())
        if len(symbols) < 2:
            raise UsageError(f"symbols: {site.location} holds ticks of {', '.join(symbols) or 'no symbol'}; "
                             "a scan needs at least two (name them with --symbols)")
        end = given_end or stored_end_ms(store, symbols, interval_ms, now_ms())
        if end is None:
            raise UsageError(f"symbols: {site.location} has no ticks or {args.timeframe} bars of {', '.join(symbols)}")
        start = (end - lookback_ms) // interval_ms * interval_ms
        by_symbol = stored_bars(store, symbols, interval_ms, start, end)
    closes = universe_closes(by_symbol, interval_ms, end, carry_to_end=True)
    if closes.empty:
        raise UsageError(f"end: no closed {args.timeframe} bars of {', '.join(symbols)} in the "
                         f"{lookback_ms / _HOUR_MS:g} h before {_when(end)} (--end, --lookback-hours)")
    notes = tuple(f"no closed bars of {s} in the lookback: its pairs are not tested" for s in symbols
                  if closes[s].isna().all())
    result = run_scan(closes, interval_ms, trend=trend, window=window)
    return Scanned(result, f"{settings.feed.source} database {site.location}", notes)


def scan_datasets(args: argparse.Namespace) -> Scanned:
    """Scan uploaded datasets (by name), whole or over the lookback."""
    clash = [flag for flag, value in (("--source", args.source), ("--symbols", args.symbols), ("--db", args.db),
                                      ("--replay-file", args.replay_file)) if value is not None]
    if clash:
        raise UsageError(f"datasets: uploaded datasets are named by --datasets; {', '.join(clash)} do not apply")
    interval_ms, window, trend = check_timeframe(args.timeframe), _window(args.window), _trend(args.trend)
    lookback_ms = None if args.lookback_hours is None else _lookback_ms(args.lookback_hours, interval_ms, 0.0)
    given_end = _end(args.end)
    settings = _settings(args)
    names = list(dict.fromkeys(name.strip() for name in args.datasets.split(",") if name.strip()))
    if len(names) < 2:
        raise UsageError(f"datasets: name at least two uploaded datasets, got {args.datasets!r}")
    if not has_datasets(settings.storage):
        raise UsageError(f"datasets: nothing has been uploaded in data_dir {str(settings.storage.data_dir)!r} "
                         "(--data-dir, QUANT_DATA_DIR)")
    with open_datasets(settings.storage) as store:
        stored = {info.name: info for info in store.list()}
        unknown = [name for name in names if name not in stored]
        if unknown:
            raise UsageError(f"datasets: no uploaded dataset named {', '.join(map(repr, unknown))}; stored: "
                             f"{', '.join(map(repr, sorted(stored)))}")
        infos = [stored[name] for name in names]
        for info in infos:
            if (info.interval_ms or 0) > interval_ms:
                raise UsageError(f"timeframe: {args.timeframe} is finer than the bars of {info.name!r} "
                                 f"({(info.interval_ms or 0) // 1000:,} s); use a longer --timeframe")
        frames = {info.name: store.load(info.id) for info in infos}
    apart = _disjoint(infos)
    if len(apart) == len(infos) * (len(infos) - 1) // 2:
        raise UsageError("datasets: no two of these datasets overlap in time, so no pair can be tested: "
                         + "; ".join(_span(info) for info in infos))
    bars = dataset_pair_bars(frames, interval_ms)
    end = given_end or bars.market_now_ms
    closes = universe_closes(bars.by_symbol, interval_ms, end, carry_to_end=False)
    if lookback_ms is not None:
        closes = closes[closes.index >= pd.Timestamp(end - lookback_ms, unit="ms", tz="UTC")]
    if closes.dropna(how="all").empty:
        raise UsageError(f"end: no bars of these datasets before {_when(end)} (--end, --lookback-hours)")
    notes = tuple(f"{a.name!r} and {b.name!r} do not overlap in time ({_span(a)}; {_span(b)}): not tested"
                  for a, b in apart)
    result = run_scan(closes, interval_ms, trend=trend, window=window)
    return Scanned(result, f"uploaded datasets in {settings.storage.data_dir}", notes)


def report(scanned: Scanned, table: pd.DataFrame) -> str:
    """Header lines and the ranked rows, for a terminal."""
    result = scanned.result
    k = len(result.symbols)
    span = "no bars" if result.first_bar is None else (
        f"{result.first_bar:{_TIME}} → {result.last_bar:{_TIME}} UTC ({result.n_bars:,} closed bars)")
    lines = [
        f"{scanned.origin}: {k} symbols, {_count(k * (k - 1) // 2, 'pair')} on {timeframe_label(result.interval_ms)} "
        "bars, "
        f"{span}",
        f"{_count(len(result.tested), 'pair')} tested, {result.significant():,} with q < 0.05; "
        f"trend {result.trend!r} ({TREND_LABELS[result.trend]}), z-score over {result.window} bars",
        Q_VALUE_NOTE,
        "",
    ]
    columns = ["y", "x", "q_value", "eg_pvalue", "eg_stat", "eg_pvalue_reverse", "beta", "half_life",
               "half_life_time", "corr", "zscore", "n_bars"]
    if (table["note"] != "").any():
        columns.append("note")
    shown = table[columns].rename(columns={"half_life": "half_life_bars", "half_life_time": "(time)",
                                           "eg_pvalue_reverse": "p_x_on_y"}).reset_index()
    formats = {"q_value": "{:.3g}", "eg_pvalue": "{:.3g}", "eg_stat": "{:.2f}", "p_x_on_y": "{:.3g}", "beta": "{:.5g}",
               "half_life_bars": "{:.1f}", "corr": "{:.3f}", "zscore": "{:+.2f}"}
    text = shown.to_string(formatters={c: f.format for c, f in formats.items()}, na_rep="—", index=False)
    lines.append(text if len(shown) else "(no rows)")
    if len(table) < len(result.table):
        lines.append(f"… {len(result.table) - len(table):,} more (--top 0 for all, --csv for a file)")
    return "\n".join(lines)


def _settings(args: argparse.Namespace) -> Settings:
    return from_env(source=args.source.strip().lower() if args.source else None,
                    db=Path(args.db) if args.db else None,
                    data_dir=Path(args.data_dir) if args.data_dir else None,
                    replay_file=Path(args.replay_file) if args.replay_file else None)


def _location_setting(settings: Settings) -> str:
    return "db (--db, QUANT_DB)" if settings.storage.db is not None else "data_dir (--data-dir, QUANT_DATA_DIR)"


def _require_database(site: Site, settings: Settings) -> None:
    """Readers never create a database: a missing one is a wrong setting."""
    if site.exists():
        return
    if settings.storage.db is not None:
        raise UsageError(f"{_location_setting(settings)}: no database at {str(settings.storage.db)!r}")
    source = settings.feed.source
    raise UsageError(f"source: no {source} database in data_dir {str(settings.storage.data_dir)!r} "
                     f"(expected {site.location}; record one with python -m cli.record --source {source})")


def _window(raw: str) -> int:
    try:
        window = int(raw)
    except ValueError:
        raise UsageError(f"window: {raw!r} is not a whole number of bars") from None
    return check_window(window)


def _trend(raw: str) -> str:
    if raw not in TRENDS:
        raise UsageError(f"trend: {raw!r} is not one of {', '.join(TRENDS)}")
    return raw


def _lookback_ms(raw: str | None, interval_ms: int, default_hours: float) -> int:
    try:
        hours = default_hours if raw is None else float(raw)
    except ValueError:
        raise UsageError(f"lookback-hours: {raw!r} is not a number of hours") from None
    if not hours > 0 or hours == float("inf"):
        raise UsageError(f"lookback-hours: {raw} must be a number of hours > 0")
    bars = hours * _HOUR_MS / interval_ms
    if bars > MAX_SCAN_BARS:
        raise UsageError(f"lookback-hours: {hours:g} h of {timeframe_label(interval_ms)} bars is {bars:,.0f} bars; "
                         f"at most {MAX_SCAN_BARS:,} (use a longer --timeframe)")
    return round(hours * _HOUR_MS)


def _end(raw: str | None) -> int | None:
    """``--end`` in UTC epoch ms; None when not given (then the data's end is used)."""
    if raw is None:
        return None
    if raw.strip().lower() == "now":
        return now_ms()
    when = utc_ms(raw)
    if when is None:
        raise UsageError(f"end: {raw!r} is not an ISO-8601 time such as 2025-12-15T08:00Z (or 'now')")
    return when


def _top(args: argparse.Namespace) -> int | None:
    if args.top is None:
        return None
    try:
        top = int(args.top)
    except ValueError:
        raise UsageError(f"top: {args.top!r} is not a whole number of rows") from None
    if top < 0:
        raise UsageError(f"top: {top} must be >= 0 (0 for every row)")
    return top


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def _when(ms: int) -> str:
    return f"{pd.Timestamp(ms, unit='ms', tz='UTC'):{_TIME}} UTC"


def _span(info: DatasetInfo) -> str:
    return f"{info.name}: {_when(info.first_ms)} → {_when(info.last_ms)}"


def _disjoint(infos: list[DatasetInfo]) -> list[tuple[DatasetInfo, DatasetInfo]]:
    """Pairs of datasets whose time spans do not overlap."""
    return [(a, b) for i, a in enumerate(infos) for b in infos[i + 1:]
            if max(a.first_ms, b.first_ms) > min(a.last_ms, b.last_ms)]


if __name__ == "__main__":
    sys.exit(main())
