"""Research history from Binance's public archives: ``python -m cli.archives --symbols BTCUSDT,ETHUSDT --from 2024-01``.

Imports months of klines (``--timeframe``, default 1m) of ``--symbols`` on ``--venue`` (``spot`` or
``um``, the USDⓈ-M perpetuals) from ``--from`` to ``--to`` (``YYYY-MM``, default: the month under
way, read from its daily files) into the research store (``--store``, a folder or URL; default
``QUANT_RESEARCH_DIR``, else ``<data-dir>/research``), reading ``--archives`` (https://data.binance.vision
by default, any http(s) base URL, or a local folder laid out the same way). See
:mod:`ingestion.archives` for what is checked. An interrupted download resumes from its ``.part``
file under ``--download-dir`` (default ``<store>/.downloads``) on the next run; a month already
stored from the same files is skipped.

One progress line per month on stdout (``[3/24] ETHUSDT 2024-03: imported 44,640 bars …``), a
summary at the end. Exit codes: 0 when every published month is stored (months not published
are listed); 3 when none of the asked months is published (a wrong symbol, venue or span?);
1 when a file was refused (its month is not stored: the line names the file and the problem), the
archives could not be reached or the store could not be written; 2 with ``error: …`` naming the
option for bad arguments; 130 when interrupted (Ctrl-C: what was stored stays, a download resumes).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import stat
import sys
import tempfile
from collections.abc import Sequence
from datetime import date, datetime, timezone
from pathlib import Path

import pandas as pd

from config import ConfigError, from_env, parse_symbols
from domain import PERP_SUFFIX, Leg, Market, Timeframe
from ingestion.archives import (
    DEFAULT_ARCHIVES,
    ArchiveError,
    Archives,
    FolderArchives,
    HttpArchives,
    MonthOutcome,
    import_months,
)
from storage.errors import StorageError
from storage.research import ResearchStore

MAX_MONTHS = 120  # ten years of months per run: a typo in --from should not start a decade of downloads
_VENUES = {"spot": Market.SPOT, "um": Market.USDM}


class UsageError(ValueError):
    """A bad argument; the message names the option."""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m cli.archives", description=__doc__.splitlines()[0])
    p.add_argument("--archives", default=DEFAULT_ARCHIVES,
                   help=f"base URL (http/https) or a local mirror folder (default {DEFAULT_ARCHIVES})")
    p.add_argument("--venue", default="spot", help="spot or um (USDⓈ-M perpetuals; ETHUSDT.P names work too)")
    p.add_argument("--symbols", required=True, help="comma-separated symbols, e.g. BTCUSDT,ETHUSDT")
    p.add_argument("--timeframe", default="1m", help="bar length: 1s, 1m or 5m (default 1m)")
    p.add_argument("--from", dest="start", required=True, help="first month, YYYY-MM")
    p.add_argument("--to", dest="end", help="last month, YYYY-MM (default: the month under way)")
    p.add_argument("--store", help="research store, a folder or URL [QUANT_RESEARCH_DIR; default <data-dir>/research]")
    p.add_argument("--data-dir", help="data directory, for the default store [QUANT_DATA_DIR]")
    p.add_argument("--download-dir", help="where interrupted downloads wait to resume (default <store>/.downloads)")
    return p


def main(argv: Sequence[str] | None = None, *, today: date | None = None) -> int:
    """Run the import; ``today`` (UTC) is for tests (default: the current UTC date)."""
    args = parser().parse_args(argv)
    today = today or datetime.now(timezone.utc).date()
    try:
        market, timeframe = _venue(args.venue), _timeframe(args.timeframe)
        symbols = exchange_symbols(args.symbols, market)
        months = _months(args.start, args.end, today)
        store, download_dir = _store(args)
        archives = open_archives(args.archives, download_dir)
    except (UsageError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)  # retries, as they happen
    total = len(symbols) * len(months)
    print(f"{len(symbols)} symbol(s) × {len(months)} month(s) ({months[0]} .. {months[-1]}) of {timeframe.name} "
          f"{market.value} klines from {args.archives} into {store.root}", flush=True)
    outcomes: list[MonthOutcome] = []

    def progress(outcome: MonthOutcome) -> None:
        outcomes.append(outcome)
        print(f"[{len(outcomes)}/{total}] {line(outcome)}", flush=True)
        for note in outcome.notes:
            print(f"    note: {note}", flush=True)

    try:
        import_months(archives, store, market, timeframe, symbols, months, today=today, on_month=progress)
    except ArchiveError as exc:  # unreachable: every further month would wait on the same retries
        print(summary(outcomes), flush=True)
        print(f"error: cannot download: {exc}", file=sys.stderr)
        return 1
    except StorageError as exc:
        print(summary(outcomes), flush=True)
        print(f"error: cannot write the research store: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # a month is stored whole or not at all; a download resumes next run
        print(summary(outcomes), flush=True)
        print("interrupted: the months above are stored; run again to resume", file=sys.stderr)
        return 130
    print(summary(outcomes), flush=True)
    if any(o.status == "refused" for o in outcomes):
        return 1
    return 3 if all(o.status == "missing" for o in outcomes) else 0


def line(outcome: MonthOutcome) -> str:
    """One progress line for a month."""
    head = f"{outcome.symbol} {outcome.month}: "
    if outcome.status == "imported":
        return head + f"imported {outcome.bars:,} bars {outcome.detail}"
    if outcome.status == "refused":
        return head + f"REFUSED, nothing stored: {outcome.detail}"
    return head + outcome.detail  # already stored from …, or …: not published


def summary(outcomes: Sequence[MonthOutcome]) -> str:
    counts = {status: sum(o.status == status for o in outcomes) for status in ("imported", "skipped", "missing",
                                                                                "refused")}
    bars = sum(o.bars for o in outcomes)
    return (f"done: {counts['imported']} month(s) imported ({bars:,} bars), {counts['skipped']} already stored, "
            f"{counts['missing']} not published, {counts['refused']} refused")


def _venue(raw: str) -> Market:
    market = _VENUES.get(raw.strip().lower())
    if market is None:
        raise UsageError(f"venue: {raw!r} is not one of {', '.join(_VENUES)}")
    return market


def exchange_symbols(raw: str, market: Market) -> tuple[str, ...]:
    """Exchange symbols; a perpetual's leg name (``ETHUSDT.P``) is accepted on ``um`` and refused on spot."""
    names = []
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        try:
            leg = Leg.parse(item)
        except ValueError as exc:
            raise UsageError(f"symbols: {exc}") from None
        if leg.market is Market.USDM and market is Market.SPOT:
            raise UsageError(f"symbols: {item} is a USDⓈ-M perpetual ({PERP_SUFFIX}); use --venue um")
        names.append(leg.symbol)
    try:
        return parse_symbols(names)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None


def _timeframe(raw: str) -> Timeframe:
    try:
        return Timeframe.of(raw.strip())
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _month(raw: str, option: str) -> pd.Period:
    text = raw.strip()
    try:
        if len(text) != 7:
            raise ValueError(text)
        return pd.Period(text, freq="M")
    except ValueError:
        raise UsageError(f"{option}: {raw!r} is not a month such as 2024-03 (YYYY-MM)") from None


def _months(start: str, end: str | None, today: date) -> list[str]:
    current = pd.Period(today.strftime("%Y-%m"), freq="M")
    first = _month(start, "from")
    last = _month(end, "to") if end is not None else current
    if last > current:
        raise UsageError(f"to: {last} has not begun (it is {today:%Y-%m-%d} UTC); the latest is {current}")
    if first > last:
        raise UsageError(f"from: {first} is after --to {last}")
    months = [str(p) for p in pd.period_range(first, last, freq="M")]
    if len(months) > MAX_MONTHS:
        raise UsageError(f"from: {first} .. {last} is {len(months)} months; at most {MAX_MONTHS} per run")
    return months


def _store(args: argparse.Namespace) -> tuple[ResearchStore, Path]:
    settings = from_env(data_dir=Path(args.data_dir) if args.data_dir else None,
                        research_dir=args.store or None)
    root = settings.storage.research_root
    if "://" not in root and Path(root).exists() and not Path(root).is_dir():
        raise UsageError(f"store: {root!r} is not a folder (--store, QUANT_RESEARCH_DIR)")
    if args.download_dir:
        download_dir = Path(args.download_dir)
        if download_dir.exists() and not download_dir.is_dir():
            raise UsageError(f"download-dir: {args.download_dir!r} is not a folder")
    else:
        download_dir = default_download_dir(root)
    try:
        return ResearchStore(root), download_dir
    except (OSError, ValueError) as exc:  # pyarrow cannot open the URL's filesystem
        raise UsageError(f"store: cannot open {root!r}: {exc}") from None


def default_download_dir(root: str) -> Path:
    """Where downloads wait to resume: ``<store>/.downloads``, or for a remote store this user's own
    folder in the temporary directory (created ``0700``; UsageError when it is not private to this user:
    under a shared ``/tmp`` anyone could have made it first and planted files in it)."""
    if "://" not in root:
        return Path(root) / ".downloads"
    folder = Path(tempfile.gettempdir()) / f"quant-archive-downloads-{os.getuid()}"  # a remote store: on this machine
    try:
        with contextlib.suppress(FileExistsError):  # whatever is there is checked below
            folder.mkdir(mode=0o700)
        found = folder.lstat()
    except OSError as exc:
        raise UsageError(f"download-dir: cannot create {folder} ({exc}); pass --download-dir") from None
    if not stat.S_ISDIR(found.st_mode) or found.st_uid != os.getuid() or found.st_mode & 0o077:
        raise UsageError(f"download-dir: {folder} is not a folder only this user can write (another user's, "
                         "a link, or open to others); pass --download-dir")
    return folder


def open_archives(raw: str, download_dir: Path) -> Archives:
    """The archives at ``raw``: an http(s) base URL (downloads wait in ``download_dir``) or a mirror folder."""
    text = raw.strip()
    if "://" in text:
        try:
            return HttpArchives(text, download_dir)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    folder = Path(text)
    if not folder.is_dir():
        raise UsageError(f"archives: {raw!r} is neither an http(s) URL nor a folder")
    return FolderArchives(folder)


if __name__ == "__main__":
    sys.exit(main())
