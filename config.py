"""Settings: frozen, validated slices per component, composed into one :class:`Settings` built from
defaults, then ``QUANT_*`` env vars, then CLI flags.

Slices: :class:`FeedSettings` (with its :class:`ExchangeSettings`) for the sources and the Engine,
:class:`StorageSettings` for storage, :class:`AlertSettings`, :class:`RecorderSettings` and
:class:`ServerSettings`; each component receives only its slice. Every setting has one flat name
(``flush_ms``), one variable (``QUANT_FLUSH_MS``) and one flag (``--flush-ms``), listed in
:data:`FIELDS` and the README's configuration table; renamed ones stay accepted with a warning.
Invalid values raise :class:`ConfigError` naming the setting and, at start, the variable or flag
it came from (``speed (QUANT_SPEED): 0.0 must be > 0``), so start-up fails loudly.

Standard library, not pydantic-settings (measured, README "Configuration"): importing
``pydantic_settings`` alone costs more than this whole module with its imports, adds seven packages,
and its messages name neither the variable nor the flag.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import domain

log = logging.getLogger(__name__)
SYMBOL_RE = re.compile(r"^[A-Z0-9]{2,20}$")
SOURCE_NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")  # the registry (ingestion.sources) says which exist
SECONDS_PER_YEAR = 365 * 24 * 3600  # crypto trades around the clock: annualise over every second
DB_URL_SCHEMES = ("postgresql", "postgres")  # server backends by URL scheme (storage picks the module)
_DB_URL_RE = re.compile(r"^(?P<scheme>[a-z]+)://(?P<user>[^:@/?#\s]+)(?::(?P<password>[^\s]*))?@"
                        r"(?P<host>[A-Za-z0-9.\-]+|\[[0-9A-Fa-f:.]+\])(?::(?P<port>\d{1,5}))?"
                        r"/(?P<database>[A-Za-z0-9_.\-]+)(?:\?(?P<query>[A-Za-z0-9_=&.\-%]*))?$")


class ConfigError(ValueError):
    """A setting has an invalid value; the message names the setting and the value."""


def normalize_symbol(raw: str) -> str:
    """Upper-case and validate one symbol against ``^[A-Z0-9]{2,20}$``.

    Raises ConfigError naming the offending input, e.g. ``invalid symbol 'ETH;DROP'``.
    """
    symbol = raw.strip().upper()
    if not (raw.isascii() and SYMBOL_RE.fullmatch(symbol)):  # ASCII as typed: upper() makes "ß" "SS"
        raise ConfigError(f"invalid symbol {raw.strip()!r}: expected 2-20 letters or digits, e.g. BTCUSDT")
    return symbol


def normalize_leg(raw: str) -> str:
    """Upper-case and validate one leg name (:class:`domain.Leg`): a symbol, ``ETHUSDT`` (spot), or a
    symbol plus ``.P``, ``ETHUSDT.P`` (USDⓈ-M perpetual). What a user types as a watched symbol or
    an alert's leg; which source carries which market is the source registry's to say.

    Raises ConfigError naming the offending input, e.g. ``invalid symbol 'ETH;DROP'``.
    """
    try:
        return domain.Leg.parse(raw).name
    except ValueError:
        shown = raw.strip() if isinstance(raw, str) else raw
        raise ConfigError(f"invalid symbol {shown!r}: expected 2-20 letters or digits, e.g. BTCUSDT, "
                          f"or a USDⓈ-M perpetual, e.g. BTCUSDT{domain.PERP_SUFFIX}") from None


def http_url_problem(url: str) -> str | None:
    """Why ``url`` is not an absolute ``http://`` or ``https://`` URL with a host (and a valid port), or None.

    The URL itself is not quoted: webhook URLs usually carry a secret token.
    """
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https"):
        return f"must be an http:// or https:// URL (scheme {parts.scheme!r})"
    if not parts.hostname or re.search(r"\s", url):
        return "must be an http:// or https:// URL with a host and no spaces"
    try:
        parts.port  # noqa: B018 -- the property raises for a port out of range or not a number
    except ValueError:
        return "must be an http:// or https:// URL with a port in 0-65535"
    return None


# libpq parameters whose value is a secret (``passfile`` names a file: its path is shown, it is never read).
SECRET_PARAMS = ("password", "sslpassword")
# ``password = value`` in a libpq key=value string (or loose text): a single-quoted value (\\' and \\\\
# escapes, possibly unterminated) or a bare one up to whitespace. Case-insensitive, on purpose loose.
_SECRET_PARAM_RE = re.compile(r"(?<![A-Za-z0-9_])(?P<key>(?:ssl)?password)(?P<eq>\s*=\s*)"
                              r"(?P<value>'(?:[^'\\]|\\.)*(?:'|$)|[^\s']*)", re.IGNORECASE | re.DOTALL)
# ``password=`` anywhere else in a URL (after ';' or '#', which libpq refuses but its error echoes),
# up to the next separator, so what follows it stays readable.
_URL_PASSWORD_RE = re.compile(r"(?<![A-Za-z0-9_])(?P<key>(?:ssl)?password)=[^&;#\s]*", re.IGNORECASE)
_URL_IN_TEXT_RE = re.compile(r"\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"]+")
# 'user:password@' at the start of what follows '://': everything up to the *last* '@', so a
# password holding '@', '/' or '?' (malformed, not percent-encoded) is still hidden whole.
_USERINFO_RE = re.compile(r"^(?P<user>[^:/@\s]*):(?P<password>.*)@", re.DOTALL)


def _query_params(query: str) -> list[tuple[str, str, str]]:
    """(raw parameter, decoded key, raw value) of each ``&``-separated parameter of a URL query."""
    params = []
    for raw in query.split("&"):
        key, _, value = raw.partition("=")
        params.append((raw, unquote(key).strip().lower(), value))
    return params


def db_url_secrets(url: str) -> tuple[str, ...]:
    """Every secret a database URL or libpq key=value string carries, as written and percent-decoded.

    The userinfo password (``user:pw@``), ``password`` and ``sslpassword`` query parameters (their
    names percent-decoded as libpq does) and ``password=`` / ``sslpassword=`` keywords, quoted or
    not: what a driver message could echo, so :func:`mask_secrets` can replace each one.
    """
    found: list[str] = []
    _, sep, rest = url.partition("://")
    if not sep and "=" not in url.partition("@")[0] and (match := _USERINFO_RE.match(url)):
        found.append(match["password"])  # 'user:pw@host' without a scheme
    if sep:
        if match := _USERINFO_RE.match(rest):
            found.append(match["password"])
        with contextlib.suppress(ValueError):
            found.append(urlsplit(url).password or "")
        found += [value for _, key, value in _query_params(rest.partition("?")[2]) if key in SECRET_PARAMS]
    for match in _SECRET_PARAM_RE.finditer(url):
        value = match["value"]
        if value.startswith("'"):  # the quoted value as written and with its backslash escapes undone
            value = value[1:-1] if value.endswith("'") and len(value) > 1 else value[1:]
            found.append(re.sub(r"\\(.)", r"\1", value))
        found.append(value)
    secrets = {s for f in found for s in (f, unquote(f)) if s and s != "***"}
    return tuple(sorted(secrets, key=len, reverse=True))  # longest first: a secret holding another goes whole


def mask_url(url: str) -> str:
    """``url`` with every password replaced by ``***``: what logs, status lines and errors may show.

    ``postgresql://quant:s3cret@db:5432/desk`` → ``postgresql://quant:***@db:5432/desk``;
    ``…/desk?sslmode=require&password=s3cret`` → ``…/desk?sslmode=require&password=***`` (also
    ``sslpassword``, and a percent-encoded parameter name); a libpq key=value string gets
    ``password=***``. Works on malformed input too (everything between the user name and the last
    ``@`` is hidden), so a message about a bad URL never leaks the secret either.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:  # a key=value conninfo string, 'user:pw@host' without a scheme, or nothing secret at all
        return _SECRET_PARAM_RE.sub(r"\g<key>\g<eq>***", _USERINFO_RE.sub(r"\g<user>:***@", url) if "@" in url
                                    and "=" not in url.partition("@")[0] else url)
    head, question, query = rest.partition("?")
    if question:
        query = "&".join(f"{raw.partition('=')[0]}=***" if key in SECRET_PARAMS else raw
                         for raw, key, _ in _query_params(query))
    masked = scheme + sep + _USERINFO_RE.sub(r"\g<user>:***@", head + question + query)
    return _URL_PASSWORD_RE.sub(r"\g<key>=***", masked)


def mask_secrets(text: str, url: str | None = None) -> str:
    """``text`` (e.g. a driver's error message) with ``url``'s secrets and any password it shows replaced by ``***``.

    Each secret of ``url`` (:func:`db_url_secrets`) is replaced wherever it appears, then every URL
    in the text goes through :func:`mask_url` and every ``password=…`` keyword is masked, so a
    message echoing a connection string in any libpq form shows no password.
    """
    if url is not None:
        for secret in db_url_secrets(url):
            text = text.replace(secret, "***")
    # URLs first, each masked as a URL (its other options stay readable); then key=value passwords.
    parts = _URL_IN_TEXT_RE.split(text)
    urls = [mask_url(m.group(0)) for m in _URL_IN_TEXT_RE.finditer(text)]
    masked = [_SECRET_PARAM_RE.sub(r"\g<key>\g<eq>***", part) for part in parts]
    return "".join(piece for pair in zip(masked, [*urls, ""], strict=True) for piece in pair)


def check_db_url(url: str) -> str:
    """Validate a server database URL, ``postgresql://user[:password]@host[:port]/database[?options]``.

    Returns it unchanged; raises ConfigError naming the setting (with the password masked).
    """
    match = _DB_URL_RE.fullmatch(url)
    # Without an '@' a password cannot be told from a port ('user:secret'), so nothing after '://' is shown.
    shown = mask_url(url) if "@" in url else url.partition("://")[0] + "://…"
    if match is None:
        raise ConfigError(f"db_url: {shown!r} must look like postgresql://user[:password]@host:port/database")
    if match["scheme"] not in DB_URL_SCHEMES:
        raise ConfigError(f"db_url: scheme {match['scheme']!r} is not one of {', '.join(DB_URL_SCHEMES)}")
    if match["port"] is not None and not 1 <= int(match["port"]) <= 65_535:
        raise ConfigError(f"db_url: port {match['port']} in {shown!r} is not between 1 and 65535")
    return url


# The dashboard answers only to these Host names (any port): a page on another site that makes its
# own name resolve to 127.0.0.1 (DNS rebinding) is refused. Only the dashboard server reads it.
ALLOWED_HOSTS_ENV = "QUANT_ALLOWED_HOSTS"
DEFAULT_ALLOWED_HOSTS = ("localhost", "127.0.0.1", "::1")
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"  # one DNS label (an IPv4 address is four of them)
_HOST_NAME_RE = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*$")


def parse_allowed_hosts(raw: str) -> tuple[str, ...]:
    """Comma-separated host names (``desk.example.com``, ``10.0.0.5``, ``[::1]``), lower-cased, no port.

    IPv6 addresses lose their brackets (``::1``), as a ``Host`` header's name is compared without
    them. Raises ConfigError naming ``QUANT_ALLOWED_HOSTS`` and the entry: no scheme, port, path or
    wildcard is accepted, so a typo cannot open the dashboard to every name.
    """
    import ipaddress

    hosts: list[str] = []
    for item in raw.split(","):
        entry = item.strip().lower().rstrip(".")
        if not entry:
            continue
        bracketed = entry.startswith("[") and entry.endswith("]")
        name = entry[1:-1] if bracketed else entry
        try:
            name = str(ipaddress.IPv6Address(name)) if ":" in name or bracketed else name
        except ValueError:
            name = ""
        if not (_HOST_NAME_RE.fullmatch(name) or ":" in name):
            raise ConfigError(f"allowed_hosts ({ALLOWED_HOSTS_ENV}): {item.strip()!r} is not a host name "
                              "(e.g. localhost, desk.example.com, 10.0.0.5, [::1]; no scheme, port or wildcard)")
        if name not in hosts:
            hosts.append(name)
    if not hosts:
        raise ConfigError(f"allowed_hosts ({ALLOWED_HOSTS_ENV}): at least one host name is required")
    return tuple(hosts)


def allowed_hosts(environ: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """The dashboard's allowed ``Host`` names: ``QUANT_ALLOWED_HOSTS`` if set, else :data:`DEFAULT_ALLOWED_HOSTS`."""
    raw = (os.environ if environ is None else environ).get(ALLOWED_HOSTS_ENV, "").strip()
    return parse_allowed_hosts(raw) if raw else DEFAULT_ALLOWED_HOSTS


SCHEDULER_ENV = "QUANT_SCHEDULER"
_SCHEDULER_RE = re.compile(r"^(tcp|tls)://(?P<host>[A-Za-z0-9.\-]+|\[[0-9A-Fa-f:.]+\]):(?P<port>\d{1,5})$")


def parse_scheduler(raw: str) -> str:
    """A Dask scheduler address ``tcp://HOST:PORT`` (or ``tls://``), stripped; ConfigError naming
    ``scheduler`` otherwise (research scans: ``--scheduler`` / ``QUANT_SCHEDULER``)."""
    address = raw.strip()
    match = _SCHEDULER_RE.fullmatch(address)
    if not match or not 0 < int(match["port"]) < 65536:
        raise ConfigError(f"scheduler: {raw!r} must look like tcp://HOST:PORT, e.g. tcp://10.0.0.5:8786")
    return address


def scheduler_address(environ: Mapping[str, str] | None = None) -> str | None:
    """The research scans' Dask scheduler from ``QUANT_SCHEDULER`` (checked), or None: a local cluster."""
    raw = (os.environ if environ is None else environ).get(SCHEDULER_ENV, "").strip()
    if not raw:
        return None
    try:
        return parse_scheduler(raw)
    except ConfigError as exc:
        raise ConfigError(f"scheduler ({SCHEDULER_ENV}): {str(exc).removeprefix('scheduler: ')}") from None


def parse_symbols(raw: str | Sequence[str]) -> tuple[str, ...]:
    """Parse a comma-separated list (or a sequence) of leg names (:func:`normalize_leg`), de-duplicated,
    order kept."""
    items = raw.split(",") if isinstance(raw, str) else list(raw)
    symbols: list[str] = []
    for item in items:
        if not item.strip():
            continue
        symbol = normalize_leg(item)
        if symbol not in symbols:
            symbols.append(symbol)
    if not symbols:
        raise ConfigError("symbols: at least one symbol is required")
    return tuple(symbols)


def check_timeframe(name: str) -> int:
    """Bar length in ms of a timeframe name (``1s``, ``1m``, ``5m``); ConfigError naming the setting otherwise."""
    try:
        if not isinstance(name, str):  # a length in ms is no name
            raise ValueError(f"timeframe: {name!r} is not one of {', '.join(t.name for t in domain.TIMEFRAMES)}")
        return domain.Timeframe.of(name).ms
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def check_window(window: int) -> int:
    """``window`` (bars) if inside :data:`domain.WINDOW_RANGE` (:func:`domain.check_window`, as a ConfigError)."""
    try:
        return domain.check_window(window)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _positive(name: str, value: float) -> None:
    if not value > 0:
        raise ConfigError(f"{name}: {value!r} must be > 0")


def _url(name: str, url: str, schemes: str, example: str) -> str:
    """``url`` without a trailing slash if it is ``<scheme>://host[:port]``; ConfigError naming ``name`` otherwise."""
    if not re.fullmatch(rf"{schemes}://[^\s/?#]+(:\d+)?/?", url):
        raise ConfigError(f"{name}: {url!r} must look like {example}")
    return url.rstrip("/")


MAX_CONNECT_TIMEOUT_S = 300.0  # longest WebSocket handshake deadline accepted (ExchangeSettings.connect_timeout)


@dataclass(frozen=True, slots=True)
class ExchangeSettings:
    """How the live exchange (Binance) is reached: what its WebSocket source and REST client read.

    ``ws_url``/``rest_url`` None: the chosen source's own endpoints (spot
    ``wss://stream.binance.com:9443`` and ``https://api.binance.com``, USDⓈ-M futures
    ``wss://fstream.binance.com`` and ``https://fapi.binance.com``). Times are seconds.
    ``backfill_max_trades`` bounds the trades re-fetched per detected gap (0: off).
    """

    ws_url: str | None = None
    rest_url: str | None = None
    backfill_max_trades: int = 100_000
    ping_interval: float = 20.0
    pong_timeout: float = 30.0
    stale_after: float = 30.0
    max_connection_age: float = 23.5 * 3600
    backoff_initial: float = 1.0
    backoff_max: float = 30.0
    stable_after: float = 60.0
    connect_timeout: float = 10.0  # the whole WebSocket handshake: name lookup, connect, TLS, HTTP upgrade

    def __post_init__(self) -> None:
        if self.ws_url is not None:
            object.__setattr__(self, "ws_url", _url("ws_url", self.ws_url, "wss?", "wss://host[:port]"))
        if self.rest_url is not None:
            object.__setattr__(self, "rest_url", _url("rest_url", self.rest_url, "https?", "https://host[:port]"))
        if self.backfill_max_trades < 0:
            raise ConfigError(f"backfill_max_trades: {self.backfill_max_trades} must be >= 0 (0 turns backfill off)")
        for name in ("ping_interval", "pong_timeout", "stale_after", "max_connection_age",
                     "backoff_initial", "backoff_max", "stable_after", "connect_timeout"):
            _positive(name, getattr(self, name))
        if self.backoff_max < self.backoff_initial:
            raise ConfigError("backoff_max: must be >= backoff_initial")
        # Socket and thread waits overflow past ~1e9 s (inf included): a huge value meant as "no limit"
        # would kill the source thread instead, and a handshake taking minutes is a failed one anyway.
        if not self.connect_timeout <= MAX_CONNECT_TIMEOUT_S:
            raise ConfigError(f"connect_timeout: {self.connect_timeout:g} must be between 0 and "
                              f"{MAX_CONNECT_TIMEOUT_S:g} s")


@dataclass(frozen=True, slots=True)
class FeedSettings:
    """Which market a feed follows and how: the slice every source and the Engine receive.

    ``speed`` is a time factor (simulated/replay); ``history_hours`` is how much past (market time)
    a feed brings at start; ``exchange`` is read by the live source only.
    """

    source: str = "binance"
    symbols: tuple[str, ...] = ("BTCUSDT", "ETHUSDT")
    replay_file: Path | None = None
    speed: float = 1.0
    seed: int = 7
    history_hours: float = 24.0
    exchange: ExchangeSettings = dataclasses.field(default_factory=ExchangeSettings)

    def __post_init__(self) -> None:
        if not SOURCE_NAME_RE.fullmatch(self.source):
            raise ConfigError(f"source: {self.source!r} is not a source name such as binance, binance-futures, "
                              "simulated or replay")
        object.__setattr__(self, "symbols", parse_symbols(self.symbols))
        _positive("speed", self.speed)
        if not self.history_hours >= 0:
            raise ConfigError(f"history_hours: {self.history_hours} must be >= 0 (0 turns it off)")


@dataclass(frozen=True, slots=True)
class StorageSettings:
    """Where ticks, alerts and uploads are kept, and how the writer commits (``flush_ms`` in ms).

    ``db_url`` (a server database) and ``db`` (one SQLite file) exclude each other; neither means one
    SQLite file per source under ``data_dir``. ``retention_hours`` is market time.
    """

    data_dir: Path = Path("data")
    db: Path | None = None
    db_url: str | None = None
    replay_dir: Path | None = None
    research_dir: str | None = None  # a folder or a URL pyarrow reads (s3://...); None: <data_dir>/research
    results_dir: Path | None = None  # stored research runs the dashboard opens; None: <data_dir>/research/scans
    retention_hours: float = 48.0
    flush_ms: int = 250
    max_backlog: int = 500_000

    def __post_init__(self) -> None:
        _positive("retention_hours", self.retention_hours)
        if not 10 <= self.flush_ms <= 250:
            raise ConfigError(f"flush_ms: {self.flush_ms} must be between 10 and 250")
        if self.max_backlog < 10_000:
            raise ConfigError(f"max_backlog: {self.max_backlog} must be at least 10000")
        if self.db_url is not None:
            check_db_url(self.db_url)
            if self.db is not None:
                raise ConfigError("db_url/db: --db-url (server database) and --db (SQLite file) exclude each other")

    def __repr__(self) -> str:
        # The dataclass repr with the database password masked: settings end up in logs and tracebacks.
        shown = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        if self.db_url is not None:
            shown["db_url"] = mask_url(self.db_url)
        return f"StorageSettings({', '.join(f'{name}={value!r}' for name, value in shown.items())})"

    @property
    def replay_folder(self) -> Path:
        """The only folder a browser may replay files from: ``replay_dir``, else ``<data_dir>/replays``."""
        return self.replay_dir if self.replay_dir is not None else self.data_dir / "replays"

    @property
    def research_root(self) -> str:
        """Where the research history (Parquet, :mod:`storage.research`) lives: ``research_dir``, else
        ``<data_dir>/research``. Apart from the live databases."""
        return self.research_dir if self.research_dir is not None else str(self.data_dir / "research")

    @property
    def results_folder(self) -> Path:
        """The only folder whose stored research runs (scans, walk-forward studies) the dashboard's
        Scanner tab offers: ``results_dir``, else ``<data_dir>/research/scans`` (``cli.research``'s
        default ``--results`` with the default data folder)."""
        return self.results_dir if self.results_dir is not None else self.data_dir / "research" / "scans"


@dataclass(frozen=True, slots=True)
class AlertSettings:
    """The alert rules a headless feed evaluates and where new alerts go.

    ``pair`` is Y/X (None: the composed :class:`Settings` picks the second symbol on the first);
    ``window`` is in bars; ``min_trades``/``min_volume`` (per leg, base units) drop thin bars.
    """

    rules: tuple[str, ...] = ()
    pair: tuple[str, str] | None = None
    timeframe: str = "1s"
    window: int = 60
    webhook_url: str | None = None
    min_trades: int = 0
    min_volume: float = 0.0

    def __post_init__(self) -> None:
        if self.pair is not None:
            pair = tuple(normalize_leg(s) for s in self.pair)
            if len(pair) != 2 or pair[0] == pair[1]:
                raise ConfigError(f"pair: {'/'.join(self.pair)!r} must be two different watched symbols, Y/X")
            object.__setattr__(self, "pair", pair)
        check_timeframe(self.timeframe)
        check_window(self.window)
        if self.webhook_url is not None and (problem := http_url_problem(self.webhook_url)):
            raise ConfigError(f"webhook_url: {problem}")
        if self.min_trades < 0 or not self.min_volume >= 0:
            raise ConfigError("min_trades/min_volume: the liquidity filter needs values >= 0")

    @property
    def timeframe_ms(self) -> int:
        """Bar length of the rules, ms."""
        return domain.Timeframe.of(self.timeframe).ms


@dataclass(frozen=True, slots=True)
class RecorderSettings:
    """The headless recorder's own knobs: stop after ``duration`` s (None: run on), a status line
    every ``status_interval`` s, and the log level. ``top``: record the ``top`` symbols of the live
    venue's listing with the largest 24 h quote volume in ``quote`` (instead of ``symbols``)."""

    duration: float | None = None
    status_interval: float = 5.0
    log_level: str = "INFO"
    top: int | None = None
    quote: str = "USDT"

    def __post_init__(self) -> None:
        if self.top is not None and (isinstance(self.top, bool) or not isinstance(self.top, int) or self.top < 1):
            raise ConfigError(f"top: {self.top!r} must be a whole number of symbols, at least 1")
        if not SYMBOL_RE.fullmatch(self.quote):
            raise ConfigError(f"quote: {self.quote!r} is not an asset name such as USDT")
        if self.duration is not None:
            _positive("duration", self.duration)
        _positive("status_interval", self.status_interval)
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ConfigError(f"log_level: {self.log_level!r} is not DEBUG, INFO, WARNING or ERROR")


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """The dashboard server's limits: at most ``max_feeds`` feeds (one per database) at once."""

    max_feeds: int = 4

    def __post_init__(self) -> None:
        if not 1 <= self.max_feeds <= 32:
            raise ConfigError(f"max_feeds: {self.max_feeds} must be between 1 and 32")


_SLICES = ("feed", "storage", "alerts", "recorder", "server")


@dataclass(frozen=True, slots=True)
class Settings:
    """Process-wide configuration: one frozen slice per component, checked together where they meet.

    Each component receives only its slice (the Engine and sources ``feed``, storage ``storage``,
    the alert monitor ``alerts``, the recorder CLI ``recorder``, the dashboard server ``server``).
    Build one from flat setting names with :meth:`of` or :func:`from_env`; :meth:`replace` takes
    the same flat names.
    """

    feed: FeedSettings = dataclasses.field(default_factory=FeedSettings)
    storage: StorageSettings = dataclasses.field(default_factory=StorageSettings)
    alerts: AlertSettings = dataclasses.field(default_factory=AlertSettings)
    recorder: RecorderSettings = dataclasses.field(default_factory=RecorderSettings)
    server: ServerSettings = dataclasses.field(default_factory=ServerSettings)

    def __post_init__(self) -> None:
        # The checks that span slices: past bars are kept no longer than ticks; the rules' pair is watched.
        if self.feed.history_hours > self.storage.retention_hours:
            raise ConfigError(f"history_hours: {self.feed.history_hours} must be between 0 (off) and "
                              f"retention_hours ({self.storage.retention_hours:g})")
        symbols = self.feed.symbols
        if self.alerts.pair is not None:
            if not set(self.alerts.pair) <= set(symbols):
                raise ConfigError(f"pair: {'/'.join(self.alerts.pair)!r} must be two different watched symbols, Y/X")
        elif len(symbols) >= 2:
            # Default pair: second symbol on the first (ETHUSDT on BTCUSDT), as the dashboard shows it.
            object.__setattr__(self, "alerts", dataclasses.replace(self.alerts, pair=(symbols[1], symbols[0])))

    @classmethod
    def of(cls, **values: Any) -> Settings:
        """Settings from defaults and flat setting names (the keys of :data:`FIELDS`), validated."""
        return _construct(cls, _nest(values))

    def replace(self, **changes: Any) -> Settings:
        """A validated copy with some settings changed, named flat (``symbols=…``, ``flush_ms=…``) or by slice.

        The other settings are kept as they are (also a default ``pair``: pass ``pair=None`` to pick it anew).
        """
        return _apply(self, _nest(changes))


def _nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    """Flat setting names (or whole slices by their name) as nested dicts along each setting's path."""
    nested: dict[str, Any] = {}
    for name, value in flat.items():
        if name in _SLICES:
            nested[name] = value
            continue
        if name not in FIELDS:
            raise ConfigError(f"{name}: not a setting (known: {', '.join(FIELDS)})")
        *path, leaf = FIELDS[name].path
        target = nested
        for part in path:
            target = target.setdefault(part, {})
        target[leaf] = value
    return nested


def _apply(obj: Any, changes: dict[str, Any]) -> Any:
    """``obj`` (a settings dataclass) with ``changes`` applied, nested dicts going into the slices."""
    values = {name: _apply(getattr(obj, name), value) if isinstance(value, dict) else value
              for name, value in changes.items()}
    return dataclasses.replace(obj, **values) if values else obj


def _construct(cls: Any, changes: dict[str, Any]) -> Any:
    """A new ``cls`` (a settings dataclass) from its defaults and ``changes``, each slice built anew."""
    values = {}
    for f in dataclasses.fields(cls):
        value = changes.get(f.name)
        if isinstance(value, dict):
            values[f.name] = _construct(f.default_factory, value)
        elif f.name in changes:
            values[f.name] = value
    return cls(**values)


def _optional_path(raw: str) -> Path | None:
    return Path(raw) if raw else None


def _optional_str(raw: str) -> str | None:
    return raw.strip() or None


def _pair(raw: str) -> tuple[str, str]:
    parts = tuple(p.strip() for p in raw.replace(",", "/").split("/"))
    if len(parts) != 2:
        raise ValueError("expected Y/X, e.g. ETHUSDT/BTCUSDT")
    return parts[0], parts[1]


def _rules(raw: str) -> tuple[str, ...]:
    return tuple(r.strip() for r in raw.split(";") if r.strip())


@dataclass(frozen=True, slots=True)
class Field:
    """One setting as a user sets it: where it lives, its variable and flag, and how text becomes a value.

    ``old_env``/``old_flag``: a former name still accepted with a warning that names the new one.
    """

    path: tuple[str, ...]
    env: str
    parse: Callable[[str], Any]
    help: str
    flag: str = ""
    old_env: str | None = None
    old_flag: str | None = None

    def cli_flag(self) -> str:
        return self.flag or "--" + self.path[-1].replace("_", "-")


def _fields() -> dict[str, Field]:
    feed, exchange, storage = ("feed",), ("feed", "exchange"), ("storage",)
    alerts, recorder, server = ("alerts",), ("recorder",), ("server",)
    table: list[tuple[tuple[str, ...], str, str, Callable[[str], Any], str]] = [
        (feed, "source", "QUANT_SOURCE", str.lower,
         "data source: binance (live spot), binance-futures (live USDⓈ-M), simulated or replay"),
        (feed, "symbols", "QUANT_SYMBOLS", parse_symbols,
         "comma-separated legs: BTCUSDT spot, BTCUSDT.P USDⓈ-M perpetual "
         "(binance-futures also takes BTCUSDT as its perpetual)"),
        (exchange, "ws_url", "QUANT_WS_URL", str, "Binance WebSocket base URL (default: the source's)"),
        (exchange, "rest_url", "QUANT_REST_URL", str,
         "Binance REST base URL, for history and gap backfill (default: the source's)"),
        (exchange, "backfill_max_trades", "QUANT_BACKFILL_MAX_TRADES", int,
         "most trades fetched per detected gap (0: no backfill)"),
        (storage, "data_dir", "QUANT_DATA_DIR", Path, "directory of the per-source SQLite files"),
        (storage, "db", "QUANT_DB", _optional_path, "SQLite file (overrides the per-source default)"),
        (storage, "db_url", "QUANT_DB_URL", _optional_str,
         "PostgreSQL URL postgresql://user[:password]@host:port/db: store everything there instead"),
        (feed, "replay_file", "QUANT_REPLAY_FILE", _optional_path, "recorded file for --source replay"),
        (storage, "replay_dir", "QUANT_REPLAY_DIR", _optional_path,
         "folder whose files the dashboard offers for replay (default <data_dir>/replays)"),
        (storage, "research_dir", "QUANT_RESEARCH_DIR", _optional_str,
         "research history of monthly Parquet bars, a folder or URL (default <data_dir>/research)"),
        (storage, "results_dir", "QUANT_RESULTS_DIR", _optional_path,
         "folder of stored research runs the Scanner tab opens (default <data_dir>/research/scans)"),
        (server, "max_feeds", "QUANT_MAX_FEEDS", int,
         "most feeds one dashboard server runs at once (one per database)"),
        (feed, "speed", "QUANT_SPEED", float, "time factor for simulated/replay sources (2 = twice as fast)"),
        (feed, "seed", "QUANT_SEED", int, "random seed of the simulated market"),
        (recorder, "duration", "QUANT_DURATION", float, "stop after this many seconds (headless recorder)"),
        (storage, "retention_hours", "QUANT_RETENTION_HOURS", float, "ticks older than this (market time) are deleted"),
        (feed, "history_hours", "QUANT_HISTORY_HOURS", float,
         "past bars loaded at start on 1 min/5 min bars (1 s bars: the last hour); 0 turns it off"),
        (storage, "flush_ms", "QUANT_FLUSH_MS", int, "writer commits at least this often, ms (10-250)"),
        (storage, "max_backlog", "QUANT_MAX_BACKLOG", int,
         "items queued for the writer before the source waits (bounds memory)"),
        (exchange, "ping_interval", "QUANT_PING_INTERVAL", float, "client ping every N seconds"),
        (exchange, "pong_timeout", "QUANT_PONG_TIMEOUT", float, "reconnect if no pong within N seconds of a ping"),
        (exchange, "stale_after", "QUANT_STALE_AFTER", float, "reconnect if no frame at all for N seconds"),
        (exchange, "max_connection_age", "QUANT_MAX_CONNECTION_AGE", float,
         "roll over to a new connection after N seconds (Binance cuts at 24 h)"),
        (exchange, "backoff_initial", "QUANT_BACKOFF_INITIAL", float, "first reconnect delay ceiling, seconds"),
        (exchange, "backoff_max", "QUANT_BACKOFF_MAX", float, "reconnect delay cap, seconds"),
        (exchange, "stable_after", "QUANT_STABLE_AFTER", float, "a connection up this long resets the backoff"),
        (exchange, "connect_timeout", "QUANT_CONNECT_TIMEOUT", float,
         "a WebSocket handshake (lookup, connect, TLS, upgrade) taking longer than N s fails and is retried"),
        (recorder, "status_interval", "QUANT_STATUS_INTERVAL", float, "headless recorder logs a status line every N s"),
        (recorder, "log_level", "QUANT_LOG_LEVEL", str.upper, "DEBUG, INFO, WARNING or ERROR"),
        (recorder, "top", "QUANT_TOP", int,
         "record the N symbols with the largest 24 h quote volume on the live venue (instead of --symbols)"),
        (recorder, "quote", "QUANT_QUOTE", str.upper, "quote asset the --top symbols are quoted in (default USDT)"),
        (alerts, "rules", "QUANT_ALERTS", _rules,
         "alert rules evaluated headless, ';'-separated (CLI: repeat --alert)"),
        (alerts, "pair", "QUANT_PAIR", _pair, "pair for alert rules, Y/X (default: second symbol / first)"),
        (alerts, "timeframe", "QUANT_TIMEFRAME", str, "bar length for alert rules: 1s, 1m or 5m"),
        (alerts, "window", "QUANT_WINDOW", int, "rolling window of alert rules, bars (10-200)"),
        (alerts, "webhook_url", "QUANT_WEBHOOK_URL", _optional_str, "POST each new alert as JSON to this URL"),
        (alerts, "min_trades", "QUANT_MIN_TRADES", int, "liquidity filter: drop bars with fewer trades (per leg)"),
        (alerts, "min_volume", "QUANT_MIN_VOLUME", float,
         "liquidity filter: drop bars with less volume (per leg, base units)"),
    ]
    fields = {name: Field((*where, name), env, parse, help_text) for where, name, env, parse, help_text in table}
    # Renamed settings: the old variable and flag keep working, with a warning naming the new ones.
    fields["rules"] = dataclasses.replace(fields["rules"], flag="--alert")
    fields["max_feeds"] = dataclasses.replace(fields["max_feeds"], old_env="QUANT_MAX_ENGINES",
                                              old_flag="--max-engines")
    fields["flush_ms"] = dataclasses.replace(fields["flush_ms"], old_flag="--flush-interval-ms")
    return fields


# Flat setting name -> Field. The same parsers serve env vars and CLI flags.
FIELDS: dict[str, Field] = _fields()


def _parse(name: str, raw: str, origin: str) -> Any:
    """``raw`` (text from ``origin``, a variable or a flag) parsed for setting ``name``."""
    try:
        return FIELDS[name].parse(raw)
    except ConfigError as exc:  # a validator's message, which may already start with the setting's name
        raise ConfigError(f"{name} ({origin}): {str(exc).removeprefix(name + ': ')}") from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name} ({origin}): invalid value {raw!r}: {exc}") from None


def _renamed(old: str, new: str) -> None:
    log.warning("%s is deprecated: use %s (same meaning)", old, new)


def _named_where(exc: ConfigError, origins: Mapping[str, str]) -> ConfigError:
    """``exc`` with its leading ``setting:`` turned into ``setting (VARIABLE or --flag):``, where it was set."""
    name, sep, rest = str(exc).partition(": ")
    if not sep or name not in FIELDS:
        return exc
    field = FIELDS[name]
    where = origins.get(name, f"{field.env} / {field.cli_flag()}")
    return ConfigError(f"{name} ({where}): {rest}")


def _build(values: Mapping[str, Any], origins: Mapping[str, str]) -> Settings:
    if values.get("top") is not None and "symbols" in values:
        raise ConfigError(f"top ({origins.get('top', 'top')}): picks the symbols, so symbols "
                          f"({origins.get('symbols', 'symbols')}) must not be set too; use one of them")
    try:
        return Settings.of(**values)
    except ConfigError as exc:
        raise _named_where(exc, origins) from None


def _from_environ(environ: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    values: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for name, field in FIELDS.items():
        for env in (field.env, field.old_env):
            if env is None or environ.get(env, "") == "":
                continue
            if env == field.old_env:
                if field.env in environ:
                    continue  # the new name wins
                _renamed(env, field.env)
            values[name] = _parse(name, environ[env], env)
            origins[name] = env
    return values, origins


def from_env(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Settings from defaults, then ``QUANT_*`` variables, then explicit keyword overrides (flat names).

    An invalid value raises ConfigError naming the setting and the variable it came from.
    """
    values, origins = _from_environ(os.environ if environ is None else environ)
    for name, value in overrides.items():
        if value is not None:
            values[name] = value
            origins.pop(name, None)
    return _build(values, origins)


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one ``--flag`` per setting; values are parsed as strings, exactly like env vars.

    Alert rules are the exception: ``--alert RULE`` may be repeated. A renamed flag is still
    accepted (hidden from ``--help``) and warns naming the new one.
    """
    for name, field in FIELDS.items():
        if name == "rules":
            parser.add_argument(field.cli_flag(), dest=name, action="append", default=None, metavar="RULE",
                                help=f"alert rule, e.g. 'zscore > 2'; repeatable [{field.env}, ';'-separated]")
            continue
        parser.add_argument(field.cli_flag(), dest=name, default=None, metavar=name.upper(),
                            help=f"{field.help} [{field.env}]")
        if field.old_flag is not None:
            parser.add_argument(field.old_flag, dest="old:" + name, default=None, help=argparse.SUPPRESS)


def from_cli(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None,
             prog: str | None = None) -> Settings:
    """Settings from defaults ← env ← command-line flags. Raises ConfigError naming the setting and its flag."""
    parser = argparse.ArgumentParser(prog=prog, description="Pair-trading tick recorder")
    add_cli_arguments(parser)
    given = {dest: raw for dest, raw in vars(parser.parse_args(argv)).items() if raw is not None}
    values, origins = _from_environ(os.environ if environ is None else environ)
    for dest, raw in given.items():
        name = dest.removeprefix("old:")
        field = FIELDS[name]
        if dest != name:
            if name in given:
                continue  # the new flag wins
            _renamed(field.old_flag or "", field.cli_flag())
        flag = field.old_flag if dest != name else field.cli_flag()
        values[name] = tuple(raw) if name == "rules" else _parse(name, raw, flag or field.cli_flag())
        origins[name] = flag or field.cli_flag()
    return _build(values, origins)
