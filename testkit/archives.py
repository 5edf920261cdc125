"""A generated Binance public-archive tree (data.binance.vision's layout) and a loopback server for it.

:func:`write_archive_tree` writes, under ``root``, the monthly (and, where asked, daily) kline zips of
a few symbols with their ``.CHECKSUM`` files, exactly as Binance lays them out::

    data/spot/monthly/klines/<SYMBOL>/<interval>/<SYMBOL>-<interval>-YYYY-MM.zip (+ .zip.CHECKSUM)
    data/futures/um/daily/klines/<SYMBOL>/<interval>/<SYMBOL>-<interval>-YYYY-MM-DD.zip (+ .zip.CHECKSUM)

Prices are seeded random walks in log price; each planted pair ``(y, x)`` makes ``log y`` follow
``alpha + beta * log x`` plus a mean-reverting AR(1) spread, so a scan must find exactly those pairs.
Spot files have no header row and, from 2025-01-01 on, microsecond times (Binance's switch); futures
files have a header row and milliseconds. The returned :class:`ArchiveTree` holds the closes written
(one column per symbol, indexed by bar start, UTC), for tests to compare a store's reads with.

:func:`fill_store` imports a whole tree into a research store (what scan and walk-forward tests start from).
Faults for the importer's refusals: :func:`corrupt_zip`, :func:`wrong_checksum`, :func:`replace_csv`
(e.g. a malformed row) and :func:`remove_file` (a missing month). :class:`ArchiveServer` serves a tree
over HTTP on 127.0.0.1 with ``Range`` requests, 404 for a missing file, and can cut a file's
connection mid-body once (``cut``) to test a resumed download.
"""

from __future__ import annotations

import hashlib
import io
import re
import threading
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.signal import lfilter

from domain import ONE_MINUTE, Market, Timeframe
from ingestion.archives import KLINE_COLUMNS, FolderArchives, archive_path, import_months
from storage.research import ResearchStore

HEADER = ",".join(KLINE_COLUMNS)
MICROS_FROM_MS = 1_735_689_600_000  # 2025-01-01T00:00Z: spot archives give µs times from here on


@dataclass(frozen=True, slots=True)
class PlantedPair:
    """``log y = alpha + beta * log x + s``, ``s`` an AR(1) spread with coefficient ``phi`` (per bar) and
    innovation sd ``spread_sd`` (log units): a cointegrated pair whose half-life is ``ln 2 / -ln phi`` bars."""

    y: str
    x: str
    beta: float = 1.0
    alpha: float = 0.5
    phi: float = 0.9
    spread_sd: float = 2e-3


@dataclass(frozen=True, slots=True)
class ArchiveTree:
    """What :func:`write_archive_tree` wrote: its ``root``, each file's relative path keyed by
    ``(symbol, period)`` (period ``YYYY-MM`` or, for daily files, ``YYYY-MM-DD``) and the closes written
    (float64, one column per symbol, DatetimeIndex of bar starts in UTC)."""

    root: Path
    market: Market
    timeframe: Timeframe
    files: Mapping[tuple[str, str], str]
    closes: pd.DataFrame = field(repr=False)

    def path(self, symbol: str, period: str) -> Path:
        """The zip of ``symbol``'s month or day on disk."""
        return self.root / self.files[(symbol, period)]


def write_archive_tree(root: str | Path, symbols: Sequence[str], months: Sequence[str], *,
                       planted_pairs: Sequence[PlantedPair | tuple[str, str]] = (), seed: int = 0,
                       market: Market = Market.SPOT, timeframe: Timeframe = ONE_MINUTE,
                       bars_per_day: int | None = None, daily: Mapping[str, int] | None = None,
                       start_prices: Mapping[str, float] | None = None) -> ArchiveTree:
    """Write the kline archives of ``symbols`` over ``months`` (``YYYY-MM``, consecutive or not) under ``root``.

    ``bars_per_day``: only the first N bars of each UTC day (None: the whole day) — keeps a test's
    files small while every month still spans its days. ``daily``: months published as daily files
    instead (month → number of days, from the 1st), as Binance does for the current month.
    ``start_prices``: first price per symbol (quote currency; default 10-1000 at random).
    A planted pair given as ``(y, x)`` uses :class:`PlantedPair`'s defaults. Deterministic for a seed.
    """
    root = Path(root)
    daily = dict(daily or {})
    pairs = [p if isinstance(p, PlantedPair) else PlantedPair(*p) for p in planted_pairs]
    for pair in pairs:
        if pair.y not in symbols or pair.x not in symbols or pair.y == pair.x:
            raise ValueError(f"planted pair {pair.y}/{pair.x}: both legs must be distinct symbols of {list(symbols)}")
    if len({p.y for p in pairs}) < len(pairs) or {p.y for p in pairs} & {p.x for p in pairs}:
        raise ValueError("planted pairs: each y once, and never also an x (its price is derived from its x)")
    times = _bar_times(sorted(months), timeframe, bars_per_day, daily)
    rng = np.random.default_rng(seed)
    n = len(times)
    log_price: dict[str, np.ndarray] = {}
    for symbol in symbols:  # independent random walks first, in the caller's order, so a seed is reproducible
        start = (start_prices or {}).get(symbol, float(rng.uniform(10, 1000)))
        log_price[symbol] = np.log(start) + np.cumsum(rng.normal(0, 1e-3, n))
    for pair in pairs:
        spread = lfilter([1.0], [1.0, -pair.phi], rng.normal(0, pair.spread_sd, n))  # s[i] = phi s[i-1] + e[i]
        log_price[pair.y] = pair.alpha + pair.beta * log_price[pair.x] + spread
    files: dict[tuple[str, str], str] = {}
    periods = pd.Series(times).dt.strftime("%Y-%m")
    days = pd.Series(times).dt.strftime("%Y-%m-%d")
    start_ms = times.astype("datetime64[ms]").astype(np.int64)
    written: dict[str, np.ndarray] = {}
    for symbol in symbols:
        close = np.exp(log_price[symbol])
        frame = _klines(start_ms, close, timeframe, rng)
        written[symbol] = frame["close"].to_numpy()  # the closes exactly as the files say them
        for month in sorted(months):
            in_month = (periods == month).to_numpy()
            if month in daily:
                for day in sorted(set(days[in_month])):
                    rows = (days == day).to_numpy()
                    files[(symbol, day)] = _write(root, market, timeframe, symbol, day, frame[rows])
            else:
                files[(symbol, month)] = _write(root, market, timeframe, symbol, month, frame[in_month])
    closes = pd.DataFrame(written,
                          index=pd.DatetimeIndex(times).tz_localize("UTC"))
    return ArchiveTree(root, market, timeframe, files, closes)


def round8(values: np.ndarray) -> np.ndarray:
    """``values`` rounded to 8 decimals, as the doubles nearest those decimals: exactly what a parser
    reads back from :func:`fixed8`'s text (``n / 1e8`` is one correctly rounded division). Below 2e7."""
    if len(values) and not np.abs(values).max() < 2e7:
        raise ValueError("prices and amounts must stay below 2e7 to keep 8 exact decimals")
    return np.rint(np.asarray(values, dtype=np.float64) * 1e8) / 1e8


def fixed8(values: np.ndarray) -> pd.Series:
    """``values`` as Binance prints them, 8 decimals (``"42283.58000000"``), fast; >= 0 and below 2e7."""
    scaled = np.rint(np.asarray(values, dtype=np.float64) * 1e8).astype(np.int64)
    if (scaled < 0).any():
        raise ValueError("fixed8 prints amounts >= 0 only")
    whole = pd.Series(scaled // 10**8).astype(str)
    return whole + "." + pd.Series(scaled % 10**8).astype(str).str.zfill(8)


def fill_store(tree: ArchiveTree, root: str | Path, *, today: date = date(2100, 1, 1)) -> ResearchStore:
    """A research store at ``root`` holding every month of ``tree``, imported as the importer does
    (from the tree as a mirror folder); AssertionError naming any month not imported. ``today``
    decides which months count as over: a tree with daily files needs a ``today`` inside that month."""
    symbols = sorted({symbol for symbol, _ in tree.files})
    months = sorted({period[:7] for _, period in tree.files})
    store = ResearchStore(str(root))
    outcomes = import_months(FolderArchives(tree.root), store, tree.market, tree.timeframe, symbols, months,
                             today=today)
    failed = [o for o in outcomes if o.status not in ("imported", "skipped")]
    assert not failed, f"months not imported: {failed}"
    return store


def kline_csv(frame: pd.DataFrame, market: Market, timeframe: Timeframe) -> bytes:
    """The CSV Binance publishes for these bars (columns of :data:`HEADER`, ``open_time`` epoch ms):
    futures with a header row, spot without and in µs from 2025-01-01."""
    opened = frame["open_time"].to_numpy(np.int64)
    micros = market is Market.SPOT and bool((opened >= MICROS_FROM_MS).any())
    if micros and (opened < MICROS_FROM_MS).any():
        raise ValueError("one file never spans Binance's switch to µs (files are per month or day)")
    scale = 1000 if micros else 1
    out = pd.DataFrame({
        "open_time": opened * scale,
        **{c: fixed8(frame[c].to_numpy()) for c in ("open", "high", "low", "close", "volume")},
        "close_time": (opened + timeframe.ms) * scale - 1,
        "quote_volume": fixed8(frame["quote_volume"].to_numpy()),
        "count": frame["trades"].to_numpy(np.int64),
        "taker_buy_volume": fixed8(frame["volume"].to_numpy() / 2),
        "taker_buy_quote_volume": fixed8(frame["quote_volume"].to_numpy() / 2),
        "ignore": 0,
    })
    text = out.to_csv(index=False, header=market is not Market.SPOT, lineterminator="\n")
    return text.encode()


def write_zip(path: Path, csv_name: str, payload: bytes, *, checksum: str | None = None) -> None:
    """Write a zip holding ``payload`` as ``csv_name`` and its ``.CHECKSUM`` (the zip's sha256 unless
    ``checksum`` is given), as Binance publishes them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    # Level 1: a month of 1 min bars zips in a tenth of the default level's time, a little larger.
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        archive.writestr(csv_name, payload)
    path.write_bytes(buffer.getvalue())
    write_checksum(path, checksum)


def write_checksum(path: Path, checksum: str | None = None) -> None:
    """``<zip>.CHECKSUM``: ``"<sha256>  <file name>\\n"``, the zip's real digest unless ``checksum`` is given."""
    digest = checksum or hashlib.sha256(path.read_bytes()).hexdigest()
    Path(f"{path}.CHECKSUM").write_text(f"{digest}  {path.name}\n")


def corrupt_zip(path: Path, *, fix_checksum: bool = True) -> None:
    """Overwrite the middle of ``path`` with junk (a damaged download); with ``fix_checksum`` the
    ``.CHECKSUM`` matches the damaged bytes, so only the zip's own integrity check can catch it."""
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 64] = b"\xff" * min(64, len(data) - middle)
    path.write_bytes(bytes(data))
    if fix_checksum:
        write_checksum(path)


def wrong_checksum(path: Path) -> None:
    """Make ``path``'s ``.CHECKSUM`` name another digest (the zip itself is intact)."""
    write_checksum(path, hashlib.sha256(b"not this file").hexdigest())


def replace_csv(path: Path, edit: Mapping[int, str]) -> None:
    """Rewrite lines of the CSV inside ``path`` (1-based line number → new text, ``""`` to delete the
    line's content) and give it a matching ``.CHECKSUM``: a well-formed archive of a malformed CSV."""
    with zipfile.ZipFile(path) as archive:
        (name,) = archive.namelist()
        lines = archive.read(name).decode().split("\n")
    for number, text in edit.items():
        lines[number - 1] = text
    write_zip(path, name, "\n".join(lines).encode())


def remove_file(path: Path) -> None:
    """Delete ``path`` and its ``.CHECKSUM`` (a month Binance never published)."""
    path.unlink()
    Path(f"{path}.CHECKSUM").unlink(missing_ok=True)


class ArchiveServer:
    """The files under ``root`` over HTTP/1.1 on 127.0.0.1 (a context manager; ``url`` is the base).

    ``GET`` with ``Range: bytes=N-`` answers 206 with the rest (416 past the end), a missing file
    404. ``cut[path]`` (a relative path, e.g. a zip's) = N: the next GET of it announces the full
    length but sends N bytes of the body and then drops the connection, once. ``requests`` logs
    ``(path, range header or None)`` of every GET. ``ranges = False``: a server without Range;
    ``short_range = N``: one answering a Range with only N bytes (a 206 saying so); ``range_start = N``:
    one answering every Range from byte N.
    """

    def __init__(self, root: str | Path, *, cut: Mapping[str, int] | None = None) -> None:
        self.root = Path(root).resolve()
        self.cut = dict(cut or {})
        self.requests: list[tuple[str, str | None]] = []
        self.status: dict[str, int] = {}  # path → status code answered to its next GETs (e.g. 500)
        self.ranges = True  # False: answer every GET with the whole file (200), as a server without Range does
        self.short_range: int | None = None  # N: answer a Range with only N bytes, Content-Range saying so (206)
        self.range_start: int | None = None  # N: answer a Range from byte N whatever was asked (206 saying so)
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_args: object) -> None:  # quiet in test output
                return

            def do_GET(self) -> None:
                outer._answer(self)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="archive-server", daemon=True)

    def __enter__(self) -> ArchiveServer:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def _answer(self, handler: BaseHTTPRequestHandler) -> None:
        relative = handler.path.split("?", 1)[0].lstrip("/")
        header = handler.headers.get("Range")
        with self._lock:
            self.requests.append((relative, header))
            cut = self.cut.pop(relative, None)
            forced = self.status.get(relative)
        target = (self.root / relative).resolve()
        if forced is not None:  # a redirect points at the same path on another host, as an http→https one does
            moved = {"Location": f"https://mirror.invalid/{relative}"} if 300 <= forced < 400 else {}
            self._send(handler, forced, b"forced failure", extra=moved)
            return
        if not target.is_relative_to(self.root) or not target.is_file():
            self._send(handler, 404, b"<Error><Code>NoSuchKey</Code></Error>")
            return
        body = target.read_bytes()
        start = 0
        if not self.ranges:
            header = None
        if header is not None:
            match = re.fullmatch(r"bytes=(\d+)-", header.strip())
            if match is None:
                self._send(handler, 400, b"unsupported range")
                return
            start = int(match.group(1)) if self.range_start is None else self.range_start
            if start >= len(body):
                self._send(handler, 416, b"", extra={"Content-Range": f"bytes */{len(body)}"})
                return
        rest = body[start:]
        extra = {"Content-Range": f"bytes {start}-{len(body) - 1}/{len(body)}"} if header is not None else {}
        if header is not None and self.short_range is not None:
            rest = rest[:self.short_range]
            extra = {"Content-Range": f"bytes {start}-{start + len(rest) - 1}/{len(body)}"}
        if cut is not None:
            handler.send_response(206 if header is not None else 200)
            for name, value in extra.items():
                handler.send_header(name, value)
            handler.send_header("Content-Length", str(len(rest)))
            handler.end_headers()
            handler.wfile.write(rest[:cut])
            handler.wfile.flush()
            handler.close_connection = True
            return
        self._send(handler, 206 if header is not None else 200, rest, extra=extra)

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, status: int, body: bytes, *,
              extra: Mapping[str, str] | None = None) -> None:
        handler.send_response(status)
        for name, value in (extra or {}).items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)


def _bar_times(months: Sequence[str], timeframe: Timeframe, bars_per_day: int | None,
               daily: Mapping[str, int]) -> np.ndarray:
    """Bar starts (datetime64[ns], naive UTC) of the months, each day cut to its first ``bars_per_day``."""
    spans = []
    for month in months:
        period = pd.Period(month, freq="M")
        days = daily.get(month, period.days_in_month)
        for day in range(days):
            start = period.start_time + pd.Timedelta(days=day)
            count = 86_400_000 // timeframe.ms if bars_per_day is None else bars_per_day
            spans.append(start.to_datetime64() + np.arange(count) * np.timedelta64(timeframe.ms, "ms"))
    return np.concatenate(spans) if spans else np.array([], dtype="datetime64[ns]")


def _klines(start_ms: np.ndarray, close: np.ndarray, timeframe: Timeframe, rng: np.random.Generator) -> pd.DataFrame:
    """Bars whose closes are ``close``: open the previous close, a small wick either side, volumes at random."""
    opened = np.concatenate(([close[0]], close[:-1])) if len(close) else close
    wick = np.abs(rng.normal(0, 2e-4, len(close))) * close
    volume = rng.uniform(0.5, 50.0, len(close))
    frame = pd.DataFrame({"open_time": start_ms, "open": opened, "high": np.maximum(opened, close) + wick,
                          "low": np.minimum(opened, close) - wick, "close": close, "volume": volume,
                          "quote_volume": volume * close, "trades": rng.integers(1, 500, len(close))})
    for column in ("open", "high", "low", "close", "volume", "quote_volume"):
        # Exactly the numbers the file will say (8 decimals, as Binance prints them); rounding keeps low <= high.
        frame[column] = round8(frame[column].to_numpy())
    return frame


def _write(root: Path, market: Market, timeframe: Timeframe, symbol: str, period: str, frame: pd.DataFrame) -> str:
    relative = archive_path(market, timeframe, symbol, period)
    write_zip(root / relative, f"{symbol}-{timeframe.name}-{period}.csv", kline_csv(frame, market, timeframe))
    return relative


def iter_rows(path: Path) -> Iterator[list[str]]:
    """The CSV rows inside the zip at ``path`` (header included when there is one), for assertions."""
    with zipfile.ZipFile(path) as archive:
        (name,) = archive.namelist()
        text = archive.read(name).decode()
    for line in text.splitlines():
        yield line.split(",")
