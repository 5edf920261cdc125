"""Months of bars from Binance's public data archives (https://data.binance.vision) into the research store.

Binance publishes klines per symbol, interval and month (and per day for the month under way), each
zip with a ``.CHECKSUM`` file (``"<sha256>  <zip name>"``)::

    data/spot/monthly/klines/<SYMBOL>/<interval>/<SYMBOL>-<interval>-YYYY-MM.zip
    data/futures/um/daily/klines/<SYMBOL>/<interval>/<SYMBOL>-<interval>-YYYY-MM-DD.zip

Each zip holds one CSV of 12 columns (:data:`KLINE_COLUMNS`); futures files start with a header
row, spot files do not, and spot times are microseconds from 2025-01-01 on (milliseconds before):
each time is read by its magnitude, so both (and a mixed file) read right.

:func:`import_months` reads them from a base URL (:class:`HttpArchives`: resumable downloads into a
``.part`` file with HTTP ``Range``, bounded retries on the project's :class:`records.retry.Backoff`) or
from a local folder laid out the same way (:class:`FolderArchives`, a mirror), verifies every
checksum, parses and checks every row, and writes each month whole into
:class:`storage.research.ResearchStore` with the archive files and their sha256 in the month's own
metadata. A re-run skips a month stored from the same files; a republished file (a new checksum),
or the monthly file replacing the daily ones, imports it again, replacing it. The month under way
grows a day at a time: the days already stored from the same daily files are kept, not downloaded.
A bad file (corrupt zip, checksum mismatch, malformed row, over the size bound) is refused with a
message naming the file (and the line) and nothing of its month is stored; a month Binance never
published is reported and the others go on.

Sizes are bounded before anything is held: a CSV is at most :data:`MAX_ROW_BYTES` per bar the period
can have (a zip bomb or a huge body is refused while it is read), a ``.CHECKSUM`` at most 1 KiB.
"""

from __future__ import annotations

import abc
import contextlib
import fcntl
import hashlib
import http.client
import io
import logging
import math
import os
import random
import re
import tempfile
import time
import urllib.parse
import warnings
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import IO, Literal

import numpy as np
import pandas as pd

from domain import Market, Timeframe
from ingestion import http as deadline_http
from records.retry import Backoff, RetryPolicy
from storage.csv_import import ZIP_ERRORS  # what zipfile/zlib raise on a bad archive, one list
from storage.errors import StorageError
from storage.research import COLUMNS, ResearchStore

log = logging.getLogger(__name__)

DEFAULT_ARCHIVES = "https://data.binance.vision"
KLINE_COLUMNS = ("open_time", "open", "high", "low", "close", "volume", "close_time", "quote_volume", "count",
                 "taker_buy_volume", "taker_buy_quote_volume", "ignore")
MAX_ROW_BYTES = 256  # a kline row is ~150 bytes (µs times included); the CSV bound is this per possible bar
MAX_CHECKSUM_BYTES = 1024
DEFAULT_RETRY = RetryPolicy(base_s=0.5, cap_s=8.0, max_attempts=5)
_CHUNK = 1 << 20  # bytes read from the network and written to the .part file at a time
_DIGEST_RE = re.compile(r"^[0-9a-f]{64}$")
_PRICES = ("open", "high", "low", "close")
_AMOUNTS = ("volume", "quote_volume", "taker_buy_volume", "taker_buy_quote_volume")
_INTEGERS = ("open_time", "close_time", "count")
# Epoch bands by magnitude (as in storage.csv_import): [1e11, 1e14) ms, [1e14, 1e17) µs; never confusable.
_MS_BAND, _US_BAND, _US_END = 10**11, 10**14, 10**17
_CONTENT_RANGE_RE = re.compile(r"bytes (?P<first>\d+)-(?P<last>\d+)/(?P<size>\d+|\*)")
_RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


class ArchiveError(Exception):
    """A file refused or not obtained; the message names the file (and the line for a bad row)."""


class ArchiveMissing(ArchiveError):
    """The file is not published (HTTP 404, or absent from the mirror)."""


class ArchiveUnreachable(ArchiveError):
    """The archives could not be reached after the retries: nothing more can be imported this run."""


class _Retryable(Exception):
    """One attempt failed in a way another attempt may not (a dropped connection, HTTP 5xx/429)."""


def archive_path(market: Market, timeframe: Timeframe, symbol: str, period: str) -> str:
    """Relative path of a kline zip: ``period`` ``YYYY-MM`` is a monthly file, ``YYYY-MM-DD`` a daily one."""
    kind = "monthly" if len(period) == 7 else "daily"
    venue = "spot" if market is Market.SPOT else f"futures/{market.value}"
    return f"data/{venue}/{kind}/klines/{symbol}/{timeframe.name}/{symbol}-{timeframe.name}-{period}.zip"


def period_span_ms(period: str) -> tuple[int, int]:
    """``[start, end)`` of a month ``YYYY-MM`` or a day ``YYYY-MM-DD``, UTC epoch ms."""
    start = pd.Timestamp(period + ("-01" if len(period) == 7 else ""))
    end = start + (pd.DateOffset(months=1) if len(period) == 7 else pd.Timedelta(days=1))
    return start.value // 1_000_000, pd.Timestamp(end).value // 1_000_000  # naive timestamps are UTC here


def max_csv_bytes(timeframe: Timeframe, period: str) -> int:
    """The largest CSV accepted for ``period``: :data:`MAX_ROW_BYTES` per bar it can hold (+ a header)."""
    start, end = period_span_ms(period)
    return (end - start) // timeframe.ms * MAX_ROW_BYTES + 4096


class Archives(abc.ABC):
    """Where the archive files come from (``relative`` paths as :func:`archive_path` makes them)."""

    @abc.abstractmethod
    def where(self, relative: str) -> str:
        """The file's full name for messages: its URL or path."""

    @abc.abstractmethod
    def read(self, relative: str, max_bytes: int) -> bytes:
        """The whole (small) file, at most ``max_bytes``. ArchiveMissing when absent, ArchiveError otherwise."""

    @abc.abstractmethod
    def fetch(self, relative: str, sha256: str, max_bytes: int) -> bytes:
        """The file's bytes (at most ``max_bytes``) whose sha256 is ``sha256``; ArchiveError naming the file
        otherwise (ArchiveMissing when absent, ArchiveUnreachable when the source cannot be reached)."""


class FolderArchives(Archives):
    """A local mirror: ``root`` laid out as data.binance.vision (``root/data/spot/monthly/...``)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def where(self, relative: str) -> str:
        return str(self.root / relative)

    def read(self, relative: str, max_bytes: int) -> bytes:
        path = self.root / relative
        try:
            if not path.exists():
                if path.is_symlink():  # a broken mirror, not an unpublished file: say which link
                    raise ArchiveError(f"{path}: a symbolic link to nothing readable (dangling or looping)")
                raise ArchiveMissing(f"{path}: no such file")
            if not path.is_file():  # a FIFO or a device would block or never end
                raise ArchiveError(f"{path}: not a regular file")
            with path.open("rb") as stream:
                data = stream.read(max_bytes + 1)
        except OSError as exc:
            raise ArchiveError(f"{path}: cannot read ({exc})") from None
        if len(data) > max_bytes:
            raise ArchiveError(f"{path}: over {max_bytes:,} bytes, the most a file of this period can be")
        return data

    def fetch(self, relative: str, sha256: str, max_bytes: int) -> bytes:
        data = self.read(relative, max_bytes)
        _verify(data, sha256, self.where(relative))
        return data


class HttpArchives(Archives):
    """The archives at ``base_url`` (http or https). A zip is downloaded into
    ``download_dir/<relative>.part`` and resumed from there with ``Range`` after a dropped
    connection (in this run, up to the policy's attempts, or the next); a resumed file that fails its
    checksum is downloaded once more whole. The ``.part`` is held (``flock``) while it is fetched: an
    import running at the same time on the same ``download_dir`` downloads that file whole into a
    private temporary file instead. ``timeout_s`` bounds each socket wait and ``deadline_s`` one
    whole attempt, seconds. ``sleep`` waits between attempts (tests pass a fake).
    """

    def __init__(self, base_url: str, download_dir: str | Path, *, policy: RetryPolicy = DEFAULT_RETRY,
                 timeout_s: float = 30.0, deadline_s: float = 900.0, sleep: Callable[[float], None] = time.sleep,
                 rng: random.Random | None = None) -> None:
        parts = urllib.parse.urlsplit(base_url)
        if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
            raise ValueError(f"archives: {base_url!r} is not an http(s) URL with a host")
        if parts.username is not None or parts.password is not None:
            # Never sent (no Authorization is made from them) and every message would print them: refused,
            # and the refusal does not repeat them.
            shown = parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]).geturl()
            raise ValueError(f"archives: {shown!r} has a user name or password in it; the archives are public, "
                             "give the URL without them")
        if any(not (" " < char < "\x7f") for char in base_url):  # http.client sends ASCII paths, unescaped
            raise ValueError(f"archives: {base_url!r} has a space, control or non-ASCII character; "
                             "percent-encode it (%20)")
        if parts.query or parts.fragment:  # every file's URL is the base + "/data/...": a query would end up inside
            raise ValueError(f"archives: {base_url!r} has a query or fragment (?/#); give the base URL alone")
        try:
            parts.port  # noqa: B018 - urllib checks the port only when it is read: here, not on the first request
        except ValueError as exc:
            raise ValueError(f"archives: {base_url!r}: {exc}") from None
        self.base_url = base_url.rstrip("/")
        self.download_dir = Path(download_dir)
        self.policy, self.timeout_s, self.deadline_s = policy, timeout_s, deadline_s
        self._sleep, self._rng = sleep, rng or random.Random()

    def where(self, relative: str) -> str:
        return f"{self.base_url}/{relative}"

    def read(self, relative: str, max_bytes: int) -> bytes:
        sink = io.BytesIO()
        self._with_retries(relative, lambda: self._get(relative, sink, 0, max_bytes))
        return sink.getvalue()

    def fetch(self, relative: str, sha256: str, max_bytes: int) -> bytes:
        part = self.download_dir / f"{relative}.part"
        try:
            part.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ArchiveError(f"download_dir: cannot create {part.parent} ({exc})") from None
        try:
            return self._fetch(relative, part, sha256, max_bytes)
        except OSError as exc:  # the network's errors are retried inside: this is the local file
            raise ArchiveError(f"{part}: cannot write the download ({exc})") from None

    def _fetch(self, relative: str, part: Path, sha256: str, max_bytes: int) -> bytes:
        with _claimed(part) as target:
            resumed = target.stat().st_size > 0
            for final in (not resumed, True):
                self._with_retries(relative, lambda: self._download(relative, target, max_bytes))
                data = target.read_bytes()
                try:
                    _verify(data, sha256, self.where(relative))
                except ArchiveError:
                    if final:
                        target.unlink(missing_ok=True)  # never resume from bytes that failed
                        raise
                    # Emptied, not removed: a new file at that name would not be the one this fetch holds locked.
                    os.truncate(target, 0)
                    log.info("%s: a resumed download failed its checksum; downloading it whole",
                             self.where(relative))
                    continue
                target.unlink(missing_ok=True)
                return data
        raise AssertionError("unreachable")  # the loop returns or raises

    def _with_retries(self, relative: str, attempt: Callable[[], None]) -> None:
        backoff = Backoff(self.policy, rng=self._rng)
        while True:
            try:
                attempt()
                return
            except _Retryable as exc:
                delay = backoff.next_delay()
                if delay is None:
                    raise ArchiveUnreachable(f"{self.where(relative)}: {exc} "
                                             f"(gave up after {backoff.failures} attempts)") from None
                log.info("%s: %s; attempt %d in %.2f s", self.where(relative), exc, backoff.failures + 1, delay)
                self._sleep(delay)

    def _download(self, relative: str, part: Path, max_bytes: int) -> None:
        offset = part.stat().st_size if part.exists() else 0
        if offset > max_bytes:  # not this file's: start over ("wb" empties it, keeping the file fetch holds)
            offset = 0
        with part.open("r+b" if offset else "wb") as sink:
            sink.seek(offset)
            self._get(relative, sink, offset, max_bytes)

    def _get(self, relative: str, sink: IO[bytes], offset: int, max_bytes: int) -> None:
        """One GET of ``relative`` from byte ``offset`` into ``sink`` (positioned there); the sink is
        truncated when the server sends the whole file instead."""
        url = self.where(relative)
        parts = urllib.parse.urlsplit(url)
        deadline = time.monotonic() + self.deadline_s
        try:
            conn = deadline_http.connect(parts, self.timeout_s, deadline)
        except (OSError, TimeoutError) as exc:
            raise _Retryable(f"cannot connect ({exc or type(exc).__name__})") from None
        try:
            headers = {"User-Agent": "quant-archives/1", "Accept-Encoding": "identity"}
            if offset:
                headers["Range"] = f"bytes={offset}-"
            conn.request("GET", parts.path, headers=headers)
            response = conn.getresponse()
            status = response.status
            if status == 404:
                raise ArchiveMissing(f"{url}: not published (HTTP 404)")
            if status == 416 and offset:
                return  # the .part already holds the whole file; the checksum says whether it is right
            if status in _RETRY_STATUS:
                raise _Retryable(f"HTTP {status}")
            if 300 <= status < 400 and response.getheader("Location"):
                # Every file of this base would be redirected alike (http→https, a moved mirror): stop, say where.
                raise ArchiveUnreachable(f"{url}: redirected (HTTP {status}) to {response.getheader('Location')}; "
                                         "redirects are not followed: give --archives the base URL it points to")
            if status not in (200, 206):
                raise ArchiveError(f"{url}: HTTP {status} {response.reason}")
            if status == 200 or not offset:
                offset = 0
                sink.seek(0)
                sink.truncate()
            elif not _the_rest(response.getheader("Content-Range"), offset):
                # Another start, or less than the rest: what follows would not complete the file. Start over.
                sink.seek(0)
                sink.truncate()
                raise _Retryable(f"the server answered another range ({response.getheader('Content-Range')!r})")
            length = response.getheader("Content-Length")
            if length is not None and length.isdigit() and offset + int(length) > max_bytes:
                raise ArchiveError(f"{url}: {offset + int(length):,} bytes, over the {max_bytes:,} bytes "
                                   "a file of this period can be")
            received = offset
            while chunk := response.read(_CHUNK):
                received += len(chunk)
                if received > max_bytes:
                    sink.seek(0)
                    sink.truncate()
                    raise ArchiveError(f"{url}: over the {max_bytes:,} bytes a file of this period can be")
                sink.write(chunk)
                sink.flush()  # what arrived survives a cut, for the resumed attempt
            # http.client's read(n) ends quietly at a dropped connection: the length announced tells.
            if length is not None and length.isdigit() and received < offset + int(length):
                raise _Retryable(f"connection closed after {received:,} of {offset + int(length):,} bytes")
        except (http.client.HTTPException, OSError, TimeoutError) as exc:
            raise _Retryable(f"download interrupted ({type(exc).__name__}: {exc})") from None
        finally:
            conn.close()


@contextlib.contextmanager
def _claimed(part: Path) -> Iterator[Path]:
    """The file to download ``part`` into, for the whole fetch: ``part`` itself, held with ``flock``,
    or, while another import (another process, or thread) holds it, a private temporary file beside
    it, removed afterwards: two imports sharing a download folder never write, resume from or delete
    each other's bytes. The other keeps its resumable ``.part``; this one starts from zero."""
    for _ in range(3):  # the holder may remove the .part between our open and our lock: open it again
        # O_NOFOLLOW: a .part planted as a link (a shared /tmp) must not have us overwrite what it points to.
        fd = os.open(part, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                break
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(part))
            except FileNotFoundError:
                same = False
            if not same:
                continue
            try:
                yield part
            finally:
                if part.exists() and part.stat().st_size == 0:  # nothing to resume: no empty file left behind
                    part.unlink()
            return
        finally:
            os.close(fd)  # closing drops the lock
    handle, name = tempfile.mkstemp(prefix=f"{part.name}.", suffix=".private", dir=part.parent)
    os.close(handle)
    private = Path(name)
    try:
        yield private
    finally:
        private.unlink(missing_ok=True)


def _the_rest(content_range: str | None, offset: int) -> bool:
    """Whether a 206's ``Content-Range`` is the whole rest of the file from byte ``offset``
    (``bytes <offset>-<last>/<size>`` with ``last == size - 1``, or an unknown size ``*``)."""
    match = _CONTENT_RANGE_RE.fullmatch((content_range or "").strip())
    if match is None or int(match["first"]) != offset:
        return False
    return match["size"] == "*" or int(match["last"]) == int(match["size"]) - 1


def _verify(data: bytes, sha256: str, where: str) -> None:
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        raise ArchiveError(f"{where}: checksum mismatch: sha256 {digest}, the .CHECKSUM says {sha256}")


def parse_checksum(text: bytes, zip_name: str, where: str) -> str:
    """The sha256 (lower-case hex) in a ``.CHECKSUM`` file for ``zip_name``; ArchiveError naming ``where``."""
    fields = text.decode("ascii", errors="replace").split()
    if len(fields) != 2 or not _DIGEST_RE.fullmatch(fields[0].lower()) or fields[1].lstrip("*") != zip_name:
        raise ArchiveError(f"{where}: not a checksum of {zip_name} (expected '<sha256>  {zip_name}', "
                           f"got {text[:120]!r})")
    return fields[0].lower()


def csv_from_zip(data: bytes, where: str, max_bytes: int, *, csv_name: str | None = None) -> bytes:
    """The one CSV inside a kline zip, at most ``max_bytes`` uncompressed; ArchiveError naming ``where``.
    ``csv_name``: the member's required name (Binance's ``X.zip`` holds ``X.csv``; anything else is
    another file's bars, e.g. a mirror's mix-up)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = [m for m in archive.infolist() if not m.is_dir()]
            if len(members) != 1 or not members[0].filename.lower().endswith(".csv"):
                names = ", ".join(repr(m.filename) for m in members[:5]) or "none"
                raise ArchiveError(f"{where}: a kline zip holds exactly one .csv file, this one: {names}")
            member = members[0]
            if csv_name is not None and member.filename != csv_name:
                raise ArchiveError(f"{where}: holds {member.filename!r}, not {csv_name}: another file's bars")
            if member.file_size > max_bytes:
                raise ArchiveError(f"{where}: {member.filename} is {member.file_size:,} bytes uncompressed, over "
                                   f"the {max_bytes:,} bytes a file of this period can be")
            with archive.open(member) as stream:
                payload = stream.read(max_bytes + 1)  # bounded whatever the header declares
    except ArchiveError:
        raise
    except ZIP_ERRORS as exc:
        raise ArchiveError(f"{where}: not a readable zip archive ({exc})") from None
    if len(payload) > max_bytes:
        raise ArchiveError(f"{where}: the CSV inside is over the {max_bytes:,} bytes a file of this period can be")
    return payload


def parse_klines(payload: bytes, where: str, timeframe: Timeframe, period: str) -> pd.DataFrame:
    """The bars of one archive CSV as :data:`storage.research.COLUMNS` (``open_time`` UTC epoch ms).

    Every row is checked: 12 fields of numbers, times in ms or µs (each by its magnitude) starting
    inside ``period`` on the ``timeframe`` grid, strictly increasing, ``close_time`` inside the bar,
    prices finite and > 0 with ``low <= open, close <= high``, amounts finite and >= 0. ArchiveError
    naming ``where``, the line (1-based, the header is line 1) and the problem, for the first problem.
    """
    if not payload.strip():
        raise ArchiveError(f"{where}: the CSV is empty")
    if not payload.isascii() or b'"' in payload:
        bad = next(i for i, byte in enumerate(payload) if byte > 127 or byte == ord('"'))
        line = payload.count(b"\n", 0, bad) + 1
        raise ArchiveError(f"{where}, line {line}: not a Binance kline row "
                           f"(byte {payload[bad:bad + 1]!r}: the archives are plain ASCII, unquoted)")
    lines = _Lines(payload)
    header = lines[0].strip().lower().startswith(b"open_time")
    if header and lines[0].strip().lower().split(b",") != [c.encode() for c in KLINE_COLUMNS]:
        raise ArchiveError(f"{where}, line 1: unexpected header {lines[0][:200]!r}; expected {','.join(KLINE_COLUMNS)}")
    first = 1 if header else 0  # index of the first data line
    if len(lines) <= first:
        raise ArchiveError(f"{where}: no bars (only a header)")
    commas = lines.commas()[first:]
    wrong = np.flatnonzero(commas != len(KLINE_COLUMNS) - 1)
    if len(wrong):
        row = int(wrong[0])
        shown = lines[first + row]
        what = "is empty" if not shown.strip() else f"has {int(commas[row]) + 1} fields"
        raise ArchiveError(f"{where}, line {first + row + 1} {what}, expected {len(KLINE_COLUMNS)}: {shown[:200]!r}")
    dtypes = {name: (np.int64 if name in _INTEGERS else np.float64) for name in KLINE_COLUMNS[:-1]}
    try:
        with warnings.catch_warnings():  # a refused "inf" in an integer column is reported below, not on stderr
            warnings.simplefilter("ignore", RuntimeWarning)
            frame = pd.read_csv(io.BytesIO(payload), header=None, skiprows=first, names=list(KLINE_COLUMNS),
                                usecols=list(KLINE_COLUMNS[:-1]), dtype=dtypes, na_filter=False, engine="c")
    except (ValueError, OverflowError, TypeError, pd.errors.ParserError) as exc:
        found = _first_bad_cell(lines, first, where)
        raise ArchiveError(found or f"{where}: not a Binance kline CSV ({exc})") from None
    if len(frame) != len(lines) - first:  # every line is a row: the parser must have read as many
        raise ArchiveError(f"{where}: read {len(frame):,} rows of {len(lines) - first:,} lines")
    return _checked_bars(frame, lines, first, where, timeframe, period)


class _Lines:
    """The lines of a CSV payload (LF or CRLF, trailing line breaks ignored), found with numpy rather than
    split into a list of bytes: a month of 1 s bars has 2.7 M lines, and only a refusal quotes one."""

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        length = len(payload.rstrip(b"\r\n"))
        raw = np.frombuffer(payload, dtype=np.uint8, count=length)
        breaks = np.flatnonzero(raw == ord("\n"))
        self.starts = np.concatenate(([0], breaks + 1))
        self.ends = np.concatenate((breaks, [length]))
        self._raw = raw

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, index: int) -> bytes:
        """Line ``index`` (0-based) without its line break."""
        return self.payload[int(self.starts[index]):int(self.ends[index])].rstrip(b"\r")

    def commas(self) -> np.ndarray:
        """The number of commas on each line."""
        positions = np.flatnonzero(self._raw == ord(","))
        return np.searchsorted(positions, self.ends) - np.searchsorted(positions, self.starts)


def _first_bad_cell(lines: _Lines, first: int, where: str) -> str | None:
    """The message for the first cell that is not a number (only after the fast parse has failed)."""
    for index in range(first, len(lines)):
        cells = lines[index].split(b",")
        for name, cell in zip(KLINE_COLUMNS[:-1], cells, strict=False):
            text = cell.decode()
            try:
                number = int(text) if name in _INTEGERS else float(text)
                # Python reads "1_0", " 1" and "nan" as numbers; the fast parser does not, and none is a kline's.
                ok = "_" not in text and text.strip() == text and math.isfinite(number)
                ok = ok and (name not in _INTEGERS or -2**63 <= number < 2**63)  # what int64 holds
            except ValueError:
                ok = False
            if not ok:
                kind = "a whole number" if name in _INTEGERS else "a finite number"
                return f"{where}, line {index + 1}, column {name!r}: {text[:40]!r} is not {kind}"
    return None


def _checked_bars(frame: pd.DataFrame, lines: _Lines, first: int, where: str, timeframe: Timeframe,
                  period: str) -> pd.DataFrame:
    """Vectorised row checks (see :func:`parse_klines`); the first problem in file order is raised."""
    raw_open = frame["open_time"].to_numpy(np.int64)
    micros = raw_open >= _US_BAND
    scale = np.where(micros, 1000, 1)
    opened = raw_open // scale
    close_time = frame["close_time"].to_numpy(np.int64)
    start, end = period_span_ms(period)
    problems: list[tuple[int, int, str]] = []  # (row, rank, message): the smallest is the first in the file

    def flag(rank: int, bad: np.ndarray, describe: Callable[[int], str]) -> None:
        if bad.any():
            row = int(np.argmax(bad))
            problems.append((row, rank, describe(row)))

    flag(0, (raw_open < _MS_BAND) | (raw_open >= _US_END) | (micros & (raw_open % 1000 != 0)),
         lambda r: f"open_time {raw_open[r]} is not epoch milliseconds or whole-ms microseconds")
    flag(1, (opened < start) | (opened >= end),
         lambda r: f"open_time {_iso(int(opened[r]))} is outside {period}")
    flag(2, opened % timeframe.ms != 0, lambda r: f"open_time {_iso(int(opened[r]))} is not on the "
                                                  f"{timeframe.name} grid")
    later = np.zeros(len(opened), dtype=bool)
    later[1:] = opened[1:] <= opened[:-1]
    flag(3, later, lambda r: f"open_time {_iso(int(opened[r]))} does not follow the previous bar's "
                             f"({_iso(int(opened[r - 1]))}): duplicate or out of order")
    flag(4, (close_time < raw_open) | (close_time >= raw_open + timeframe.ms * scale),
         lambda r: f"close_time {close_time[r]} is not inside the bar opened at {raw_open[r]}")
    values = {name: frame[name].to_numpy(np.float64) for name in (*_PRICES, *_AMOUNTS)}
    for rank, name in enumerate((*_PRICES, *_AMOUNTS), start=5):
        column = values[name]
        positive = name in _PRICES
        with np.errstate(invalid="ignore"):
            fine = np.isfinite(column) & ((column > 0) if positive else (column >= 0))
        flag(rank, ~fine, _must_be(name, column, "> 0" if positive else ">= 0"))
    count = frame["count"].to_numpy(np.int64)
    flag(13, count < 0, lambda r: f"count {count[r]} must be >= 0")
    high, low = values["high"], values["low"]
    flag(14, (low > values["open"]) | (values["open"] > high) | (low > values["close"]) | (values["close"] > high),
         lambda r: f"open {float(values['open'][r])!r} and close {float(values['close'][r])!r} must lie in "
                   f"[low {float(low[r])!r}, high {float(high[r])!r}]")
    if problems:
        row, _, message = min(problems)
        raise ArchiveError(f"{where}, line {first + row + 1}, {message}: {lines[first + row][:200]!r}")
    return pd.DataFrame({"open_time": opened, **{name: values[name] for name in COLUMNS[1:7]},
                         "trades": count})


def _must_be(name: str, column: np.ndarray, bound: str) -> Callable[[int], str]:
    return lambda row: f"{name} {float(column[row])!r} must be finite and {bound}"


def _iso(ms: int) -> str:
    return pd.Timestamp(ms, unit="ms").strftime("%Y-%m-%dT%H:%M:%SZ") if -2**62 < ms * 1_000_000 < 2**62 else str(ms)


Status = Literal["imported", "skipped", "missing", "refused"]


@dataclass(frozen=True, slots=True)
class MonthOutcome:
    """What became of one symbol's month. ``status``: ``imported`` (``bars`` written), ``skipped``
    (already stored from the same files), ``missing`` (not published) or ``refused`` (a bad file;
    nothing stored). ``detail`` names the file(s) and the reason; ``notes`` e.g. days not yet published."""

    symbol: str
    month: str
    status: Status
    bars: int = 0
    detail: str = ""
    notes: tuple[str, ...] = ()


def month_periods(month: str, today: date) -> tuple[str, ...]:
    """The archive periods that make up ``month`` as of ``today`` (UTC): the month itself once it is
    over, else its days before ``today`` (Binance publishes a day's file after it ends)."""
    first = date.fromisoformat(month + "-01")
    if (first.year, first.month) < (today.year, today.month):
        return (month,)
    if (first.year, first.month) > (today.year, today.month):
        return ()
    return tuple((first + timedelta(days=d)).isoformat() for d in range(today.day - 1))


def import_months(archives: Archives, store: ResearchStore, market: Market, timeframe: Timeframe,
                  symbols: Sequence[str], months: Sequence[str], *, today: date,
                  on_month: Callable[[MonthOutcome], None] | None = None) -> list[MonthOutcome]:
    """Import each of ``symbols`` × ``months`` (``YYYY-MM``) into ``store``, one whole month at a time.

    See the module docstring. ``today`` (UTC) decides which months are over (monthly files) and
    which days of the month under way exist; a month just ended whose monthly file is not out yet is
    read from its daily files. ``on_month`` hears each outcome as it is known (progress). Raises
    ArchiveUnreachable when the archives cannot be reached (the outcomes so far went to ``on_month``),
    StorageError when the store cannot be written.
    """
    outcomes = []
    for symbol in symbols:
        for month in months:
            outcome = import_month(archives, store, market, timeframe, symbol, month, today=today)
            outcomes.append(outcome)
            if on_month is not None:
                on_month(outcome)
    return outcomes


def import_month(archives: Archives, store: ResearchStore, market: Market, timeframe: Timeframe, symbol: str,
                 month: str, *, today: date) -> MonthOutcome:
    """One symbol's month (see :func:`import_months`)."""
    store.path(market, timeframe, symbol, month)  # ValueError naming a bad symbol or month, before any request
    periods = month_periods(month, today)
    if not periods:
        what = "in the future" if month > today.strftime("%Y-%m") else "under way: no day of it has ended yet"
        return MonthOutcome(symbol, month, "missing", detail=f"{month} is {what}")
    found = _checksums(archives, market, timeframe, symbol, periods)
    last_month = (date.fromisoformat(month + "-01") + timedelta(days=31)).strftime("%Y-%m") == today.strftime("%Y-%m")
    if isinstance(found, ArchiveMissing) and last_month:
        # Binance publishes a month's file some days after it ends; its daily files are out already.
        days = tuple(d.isoformat() for d in pd.date_range(month + "-01", periods=pd.Period(month).days_in_month).date)
        from_days = _checksums(archives, market, timeframe, symbol, days)
        found = from_days if isinstance(from_days, tuple) else found
    if isinstance(found, ArchiveError):
        status: Status = "missing" if isinstance(found, ArchiveMissing) else "refused"
        return MonthOutcome(symbol, month, status, detail=str(found))
    checksums, notes = found
    sources = {relative.rsplit("/", 1)[1]: digest for relative, (digest, _) in checksums.items()}
    stored = store.month_sources(market, timeframe, symbol, month)
    if stored == sources:
        return MonthOutcome(symbol, month, "skipped", detail=f"already stored from {_files(sources)}", notes=notes)
    frames, checksums = _stored_days(store, market, timeframe, symbol, month, checksums, stored or {})
    for relative, (digest, period) in checksums.items():
        where = archives.where(relative)
        try:
            data = archives.fetch(relative, digest, max_csv_bytes(timeframe, period) + 65_536)
            csv_name = relative.rsplit("/", 1)[1].removesuffix(".zip") + ".csv"
            payload = csv_from_zip(data, where, max_csv_bytes(timeframe, period), csv_name=csv_name)
            frames.append(parse_klines(payload, where, timeframe, period))
        except ArchiveUnreachable:
            raise
        except ArchiveError as exc:
            status = "missing" if isinstance(exc, ArchiveMissing) else "refused"
            return MonthOutcome(symbol, month, status, detail=str(exc), notes=notes)
    bars = pd.concat(frames, ignore_index=True).sort_values("open_time", ignore_index=True)
    store.write_month(market, timeframe, symbol, month, bars, sources=sources)
    return MonthOutcome(symbol, month, "imported", bars=len(bars), detail=f"from {_files(sources)}", notes=notes)


def _stored_days(store: ResearchStore, market: Market, timeframe: Timeframe, symbol: str, month: str,
                 checksums: dict[str, tuple[str, str]], stored: Mapping[str, str],
                 ) -> tuple[list[pd.DataFrame], dict[str, tuple[str, str]]]:
    """The bars of the daily files already stored from the same file (same name and sha256), and the
    files still to fetch: the month under way gains a day at a time, and only that day is downloaded."""
    kept = {relative: period for relative, (digest, period) in checksums.items()
            if len(period) == 10 and stored.get(relative.rsplit("/", 1)[1]) == digest}
    if not kept:
        return [], checksums
    try:
        bars = store.bars(market, timeframe, symbol, *period_span_ms(month))
    except StorageError:  # unreadable: fetch every file again
        return [], checksums
    days = bars["open_time"].to_numpy() // 86_400_000
    wanted = np.isin(days, [period_span_ms(period)[0] // 86_400_000 for period in kept.values()])
    rest = {relative: value for relative, value in checksums.items() if relative not in kept}
    return [bars.loc[wanted].reset_index(drop=True)], rest


def _checksums(archives: Archives, market: Market, timeframe: Timeframe, symbol: str,
               periods: Sequence[str]) -> tuple[dict[str, tuple[str, str]], tuple[str, ...]] | ArchiveError:
    """``{relative zip path: (sha256, period)}`` of the published periods and notes on the missing
    days; the error when the monthly file (or every day) is missing or a checksum file is bad."""
    checksums: dict[str, tuple[str, str]] = {}
    missing: list[str] = []
    for period in periods:
        relative = archive_path(market, timeframe, symbol, period)
        name = relative.rsplit("/", 1)[1]
        try:
            text = archives.read(relative + ".CHECKSUM", MAX_CHECKSUM_BYTES)
            checksums[relative] = (parse_checksum(text, name, archives.where(relative + ".CHECKSUM")), period)
        except ArchiveMissing:
            if len(periods) == 1:
                return ArchiveMissing(f"{archives.where(relative)}: not published")
            missing.append(period)
        except ArchiveUnreachable:
            raise
        except ArchiveError as exc:
            return exc
    if not checksums:
        return ArchiveMissing(f"{symbol}: no daily file of {', '.join(periods[:1])}..{periods[-1]} is published "
                              f"({archives.where(archive_path(market, timeframe, symbol, periods[0]))} and the rest)")
    notes = tuple(f"{symbol} {day}: not published (yet); the month is stored without it" for day in missing)
    return checksums, notes


def _files(sources: Mapping[str, str]) -> str:
    names = sorted(sources)
    return names[0] if len(names) == 1 else f"{len(names)} daily files ({names[0]} .. {names[-1]})"
