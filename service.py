"""The running service of one source, wired once for both entry points (dashboard and recorder).

:meth:`Service.start` builds, in this order: the source (from the registry), the writer thread
(the database's one writer, holding its lock), the gap backfiller, the engine and the alert
monitor, and :meth:`Service.stop` takes them down in reverse, flushing the writer last. When
another process already writes the database (a headless recorder) and the caller allows it
(``follow=True``, the dashboard), the service instead follows that database read-only: no
writer, no backfill, no alert monitor (the recorder evaluates the rules), one engine fed by a
:class:`~ingestion.follow.DatabaseFollower`.

:class:`ServiceRegistry` is what one dashboard server keeps: at most one service per database,
shared by every browser session, whose watched symbols grow to cover what the sessions ask
for. A session never stops a service another session uses; the number of services is bounded
and a session that would exceed it is told so.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import cast

import numpy as np
import pandas as pd

from alerts.monitor import AlertMonitor
from analytics.backtest import FundingHistory
from config import Settings, StorageSettings, normalize_symbol
from domain import Leg, Market
from ingestion.backfill import Backfiller
from ingestion.engine import Engine
from ingestion.follow import DatabaseFollower
from ingestion.funding import FundingLoader, FundingRates
from ingestion.history import HistoryLoader, HistoryProgress
from ingestion.history import plan as history_plan
from ingestion.source import Source, SourceSpec
from ingestion.sources import resolve, source_for, spec_for
from ingestion.writer import TickWriter
from pairs.bars import BarHistory
from pairs.compute import LiveContext, live_context
from pairs.funding import funding_history, is_perpetual
from pairs.shared import SharedAnalytics, ViewQuery
from pairs.universe import UniverseBars
from pairs.venues import RoutedEngine, RoutedHistory
from records import FeedEvent, FeedState, FeedStatus, MarkPrice, now_ms
from records.alerts import AlertRule
from storage import Site, claim_writer, current_writer, has_datasets, open_alerts, open_datasets, open_ticks, site_for
from storage.base import AlertRecord, WriterClaim
from storage.datasets import AddResult, DatasetInfo
from storage.errors import StorageError
from storage.lock import WriterInfo, this_process

log = logging.getLogger(__name__)

# What one page was measured to carry (bench/scan_page.py --symbols 200): the pair's analytics align its
# two legs alone and the universe's bars are built once per step for every tab (pairs.universe).
MAX_SYMBOLS = 200
IDLE_S = 600.0  # a service no session has used for this long may be stopped to make room
SESSION_TTL_S = 120.0  # a session not seen for this long no longer counts as using its service
ALERTS_KEPT = 500  # newest alerts kept in memory for banners and chart markers
FOLLOWER_ALERTS_S = 5.0  # a follower re-reads the alert history this often (another process fires)


class TooManyFeeds(RuntimeError):
    """The registry already runs its maximum number of services, all in use."""


class Service:
    """One source's running pipeline (see the module docstring). Use :meth:`start`, then :meth:`stop` once."""

    def __init__(self, settings: Settings, spec: SourceSpec, site: Site, engine: Engine, shared: SharedAnalytics, *,
                 writer: TickWriter | None = None, backfiller: Backfiller | None = None,
                 monitor: AlertMonitor | None = None, loader: HistoryLoader | None = None,
                 lock: WriterClaim | None = None, rest: object | None = None,
                 funding_loader: FundingLoader | None = None) -> None:
        self.settings = settings
        self.spec = spec
        self.site = site
        self.engine = engine
        self.shared = shared  # pair analytics computed once per closed bar, for every page and the monitor
        self.history = shared.history
        # Every watched symbol's closed bars, for the tabs that show them all (heatmap, summaries, scanner).
        self.universe = UniverseBars(engine, shared.history)
        self.writer = writer
        self.backfiller = backfiller
        self.monitor = monitor
        self.loader = loader
        self.rest = rest  # the exchange's REST client, shared by backfill and history (its ban is shown)
        self.funding_loader = funding_loader  # keeps the perpetuals' funding history stored (writer only)
        self._lock = lock
        self._alerts: tuple[int, list[AlertRecord]] | None = None
        self._alerts_lock = threading.Lock()

    @classmethod
    def start(cls, settings: Settings, *, source: Source | None = None, follow: bool = False) -> Service:
        """Build and start the service for ``settings``.

        ``source`` replaces the registry's (tests, benchmarks). ``follow``: when another process
        writes the database, read from it instead of refusing. Raises ``ConfigError``/``ValueError``
        for bad settings (an unknown source, an unreadable replay file), ``WriterBusy`` when the
        database has a writer and ``follow`` is false, and other ``StorageError``s when the
        database cannot be opened or is damaged.
        """
        settings = resolve(settings)  # the source's leg names: BTCUSDT.P on binance-futures
        feed, storage = settings.feed, settings.storage
        spec = spec_for(feed.source)
        site = site_for(storage, spec.database(feed))
        site.check()
        holder = current_writer(site) if follow else None
        if holder is not None and not holder.is_this_process():
            return cls._follower(settings, spec, site, holder)
        if source is None:
            source = spec.create(feed)
        # Exchange trades may come from several recorders on a server database (each their own
        # symbols, overlaps stored once); anything else has one writer, or two markets would mix.
        lock = claim_writer(site, this_process(source.label, feed.symbols),
                            shared=spec.capabilities.exchange_ids)
        writer = backfiller = monitor = loader = funding = None
        try:
            if spec.market is Market.USDM:  # the one market whose leg names differ from what was stored before
                _name_legs(site, spec)
            writer = TickWriter(lambda: open_ticks(site, verify=True), site.location,
                                flush_interval_s=storage.flush_ms / 1000,
                                retention_ms=int(storage.retention_hours * 3_600_000),
                                max_backlog=storage.max_backlog)
            writer.start()
            last_ids = None
            if spec.capabilities.exchange_ids:
                # Exchange ids continue across restarts: resume gap detection where the store left off.
                with open_ticks(site) as store:
                    last_ids = store.last_trade_ids()
            rest = spec.rest(feed) if spec.rest is not None else None
            if rest is not None and hasattr(rest, "emit"):
                rest.emit = writer.put  # rate-limit waits show up in the feed events
            if rest is not None and spec.capabilities.backfill and feed.exchange.backfill_max_trades > 0:
                backfiller = Backfiller(rest, writer.put_backfilled, writer.put,
                                        max_trades_per_gap=feed.exchange.backfill_max_trades)
            lookbacks = history_plan(feed.history_hours)
            past = spec.history(feed, source, rest) if spec.history is not None and lookbacks else None
            if past is not None and spec.capabilities.history:
                loader = HistoryLoader(past, lambda: open_ticks(site), lookbacks, emit=writer.put)
            engine = Engine(feed, source, spec.capabilities, writer=writer, backfiller=backfiller,
                            last_ids=last_ids)
            if spec.capabilities.funding and lookbacks and isinstance(rest, FundingRates):
                # The retained history's funding, then each funding time's: what a backtest charges. The
                # mark price stream's next funding time says how far it is known and when to look again.
                # It is history from the exchange's REST, so it is off with the history (--history-hours 0).
                funding = FundingLoader(rest, lambda: open_ticks(site), int(storage.retention_hours * 3_600_000),
                                        emit=writer.put, marks=engine.mark_price)
            history = BarHistory(site, loader, backfills=writer.backfills_of)
            shared = SharedAnalytics(engine, history)
            monitor = AlertMonitor(engine, site, shared, webhook_url=settings.alerts.webhook_url,
                                   min_trades=settings.alerts.min_trades, min_volume=settings.alerts.min_volume)
            if backfiller is not None:
                backfiller.start()
            if loader is not None:
                loader.start(feed.symbols)
            if funding is not None:
                funding.start(feed.symbols)
            monitor.start()
            engine.start()
        except BaseException:
            for part in (monitor, funding, loader, backfiller):
                if part is not None:
                    part.stop()
            if writer is not None:
                writer.stop()
            lock.release()
            raise
        log.info("service started: %s → %s", source.label, site.location)
        return cls(settings, spec, site, engine, shared, writer=writer, backfiller=backfiller, monitor=monitor,
                   loader=loader, lock=lock, rest=rest, funding_loader=funding)

    @classmethod
    def _follower(cls, settings: Settings, spec: SourceSpec, site: Site, holder: WriterInfo) -> Service:
        follower = DatabaseFollower(site, settings.feed.symbols, holder)
        engine = Engine(settings.feed, follower, spec.capabilities, follows=holder.describe())
        engine.start()
        log.info("following %s, written by %s", site.location, holder.describe())
        return cls(settings, spec, site, engine, SharedAnalytics(engine, BarHistory(site)))

    @property
    def following(self) -> bool:
        """True when another process writes this database and this service only reads it."""
        return self.writer is None

    @property
    def running(self) -> bool:
        """The source thread is alive (a finished replay or a follower whose recorder stopped is not)."""
        return self.engine.running

    @property
    def finished(self) -> bool:
        """The source ended by itself (a replay at the end of its file, a follower whose recorder left)."""
        return self.engine.source.stats.state is FeedState.FINISHED

    @property
    def failed(self) -> bool:
        """Storage failed: nothing more is stored."""
        return self.writer is not None and self.writer.error is not None

    @property
    def symbols(self) -> tuple[str, ...]:
        return self.engine.symbols

    def watch(self, symbols: Iterable[str]) -> None:
        """Add ``symbols`` to those watched (never drops any: other sessions may be watching them), as the
        source's legs (``SOLUSDT`` is ``SOLUSDT.P`` on binance-futures; ValueError for a leg of another market)."""
        wanted = tuple(dict.fromkeys((*self.engine.symbols, *self.spec.legs(tuple(symbols)))))
        if wanted != self.engine.symbols and self.spec.capabilities.resubscribe:
            self.engine.set_symbols(wanted)
            if self.loader is not None:
                self.loader.watch(wanted)
            if self.funding_loader is not None:
                self.funding_loader.watch(wanted)

    @property
    def funding(self) -> bool:
        """True if the feed's symbols are perpetuals with live mark price and funding (USDⓈ-M)."""
        return self.spec.capabilities.funding

    def mark_price(self, symbol: str) -> MarkPrice | None:
        """The newest mark price and funding of ``symbol`` this feed received, or None (none yet, a
        spot or simulated feed, or a page following another process's recording: those never
        receive mark prices)."""
        return self.engine.mark_price(symbol)

    def is_perpetual(self, leg: str) -> bool:
        """Whether ``leg`` pays funding (a USDⓈ-M perpetual): see :func:`pairs.funding.is_perpetual`."""
        return is_perpetual(leg)

    def funding_history(self, leg: str, start_ms: int, end_ms: int) -> FundingHistory:
        """The stored funding events of perpetual ``leg`` from ``start_ms`` to ``end_ms`` (UTC epoch ms,
        inclusive) and the span known, read from this feed's database (written by this process's
        funding loader or by the recorder this page follows). Nothing known before the database exists."""
        if not self.site.exists():
            return FundingHistory.none_known(leg)
        with open_ticks(self.site) as store:
            return funding_history(store, leg, start_ms, end_ms)

    def status(self) -> FeedStatus:
        """The engine's status, plus until when the exchange bans this IP from its REST API."""
        status = self.engine.status()
        banned = getattr(self.rest, "banned_until_ms", None)
        return replace(status, rest_banned_until_ms=banned) if banned is not None else status

    def statuses(self) -> list[FeedStatus]:
        """Each venue's feed status, this page's own first: one here (:class:`JointService` has more)."""
        return [self.status()]

    def live_context(self, query: ViewQuery) -> LiveContext | None:
        """What the live z-score needs from the closed bars ``query`` asks for (β, α, the last spreads):
        the page's own shared view, so the live panel agrees with its charts; None before every
        symbol has a bar or while the hedge is undefined."""
        view = self.shared.ask(query)
        return None if view.pair is None else live_context(view.pair)

    def recent_alerts(self, limit: int = ALERTS_KEPT) -> list[AlertRecord]:
        """The newest stored alerts (newest first), read from storage only when there may be new ones.

        The monitor of this service counts what it stores; a follower (the recorder fires) looks
        at most every :data:`FOLLOWER_ALERTS_S`. Every tab's banner reads this, not the database.
        """
        version = self.monitor.fired if self.monitor is not None else int(time.monotonic() // FOLLOWER_ALERTS_S)
        with self._alerts_lock:
            if self._alerts is None or self._alerts[0] != version:
                with open_alerts(self.site) as store:
                    self._alerts = (version, store.alerts(limit=ALERTS_KEPT))
            return self._alerts[1][:limit]

    # -------------------------------------------------------- what the pages read and change, in storage
    def feed_events(self, limit: int = 200) -> list[FeedEvent]:
        """The newest ``limit`` feed events of this source's database, newest first ([] before it exists:
        reading never creates it)."""
        if not self.site.exists():
            return []
        with open_ticks(self.site) as store:
            return store.feed_events(limit=limit)

    def alert_rules(self) -> list[AlertRule]:
        """Every alert rule of this source's database, enabled or not, in the order they were added."""
        with open_alerts(self.site) as store:
            return store.rules()

    def add_rule(self, rule: AlertRule) -> tuple[AlertRule, bool]:
        """``rule`` stored, with its id; False (and the stored one) when an equal rule was already there.

        ValueError naming the leg for a rule on a leg of another market (``ETHUSDT.P`` on a spot page,
        spot ``ETHUSDT`` on the futures page): this source's monitor never sees such a leg, so the rule
        would be stored and never fire, silently.
        """
        market = self.spec.market or Market.SPOT  # simulated and replayed sources have spot-style legs
        foreign = [leg for leg in rule.symbols if Leg.parse(leg).market is not market]
        if foreign:
            kind = "a USDⓈ-M perpetual" if market is Market.SPOT else "a spot leg"
            raise ValueError(f"{rule.describe()} on {rule.label}: {foreign[0]} is {kind}, but the {self.spec.label} "
                             f"source's alert monitor sees its {market.value} legs only, so the rule could never fire")
        with open_alerts(self.site) as store:
            return store.ensure_rule(rule)

    def unwatched_legs(self, rule: AlertRule) -> tuple[str, ...]:
        """The legs of ``rule`` this service's alert monitor does not watch, so it skips the rule (a price
        rule on ``SOLUSDT`` while the feed watches BTCUSDT and ETHUSDT): the page says so instead of
        listing a rule that never fires. () on a follower, whose recorder evaluates the rules."""
        if self.monitor is None:
            return ()
        watched = set(self.monitor.engine.symbols)
        return tuple(leg for leg in rule.symbols if leg not in watched)

    def set_rule_enabled(self, rule_id: int, enabled: bool) -> bool:
        """Switch rule ``rule_id`` on or off; False when there is no such rule (another tab deleted it)."""
        with open_alerts(self.site) as store:
            return store.set_enabled(rule_id, enabled)

    def delete_rule(self, rule_id: int) -> bool:
        """Delete rule ``rule_id`` (its alerts stay in the history); False when there is no such rule."""
        with open_alerts(self.site) as store:
            return store.delete_rule(rule_id)

    def alert_history(self, limit: int) -> list[AlertRecord]:
        """The newest ``limit`` stored alerts, newest first, read now: a webhook delivery moves on
        after its alert fired, so the history tab does not use the banners' copy (:meth:`recent_alerts`)."""
        with open_alerts(self.site) as store:
            return store.alerts(limit=limit)

    @property
    def history_progress(self) -> HistoryProgress | None:
        """What the history loader has done (None when this service loads no history)."""
        return self.loader.progress if self.loader is not None else None

    def stop(self, timeout: float = 15.0) -> bool:
        """Stop the source, the monitor and the backfill, then flush and close the writer; True if all did in time."""
        done = self.engine.stop(timeout)
        self.universe.join(timeout)  # a background build of the universe reads the history being closed
        for part in (self.monitor, self.funding_loader, self.loader, self.backfiller):
            if part is not None:
                part.stop()
        if self.writer is not None:
            done = self.writer.stop(timeout) and done
            log.info("service stopped: %d trades received, %d rows committed",
                     self.engine.trades, self.writer.committed_trades)
        if self._lock is not None:
            self._lock.release()
        return done


def _name_legs(site: Site, spec: SourceSpec) -> None:
    """Rename an exchange database's symbols stored before leg names to the source's legs: a
    ``binance-futures`` database written with plain ``BTCUSDT`` becomes ``BTCUSDT.P`` (ticks, bars,
    feed events, alert rules and the alert history's pairs), once, under the writer's lock, before
    anything reads it. A database whose ticks all carry leg names is left alone."""
    if not site.exists():
        return

    def rename(name: str) -> str:
        try:
            return spec.legs((name,))[0]
        except ValueError:  # not a name this source would watch: leave it as it is
            return name

    with open_ticks(site) as store:
        moved = {name: rename(name) for name in store.last_trade_ids() if rename(name) != name}
        if not moved:
            return
        # The alert rules first, the ticks last (two transactions, on SQLite two files): the ticks' plain
        # names are what says the rename is due, so a start that dies between the two (a server restart,
        # a kill) leaves them plain and the next start renames both. Renaming the rules again is a no-op.
        with open_alerts(site) as alerts:
            changed = alerts.rename_symbols(rename)
        symbols = store.rename_symbols(rename)
    log.warning("%s: stored before leg names; renamed %d symbols (%s) and %d alert rows", site.location, symbols,
                ", ".join(f"{old} → {new}" for old, new in moved.items()), changed)


@functools.lru_cache(maxsize=4096)
def _market_of(leg: str) -> str:
    """The market (``spot``, ``um``) a leg name trades on: cached, as every per-leg read asks it."""
    return Leg.parse(leg).market.value


@functools.lru_cache(maxsize=256)
def _by_market(legs: tuple[str, ...]) -> dict[Market, tuple[str, ...]]:
    """``legs`` by the market each trades on, order kept (cached: every page run asks for the same list;
    callers only read the result)."""
    found: dict[Market, list[str]] = {}
    for leg in legs:
        found.setdefault(Leg.parse(leg).market, []).append(leg)
    return {market: tuple(names) for market, names in found.items()}


class JointService(Service):
    """A page's feeds when its legs trade on more than one venue: spot ``ETHUSDT`` against the perpetual
    ``ETHUSDT.P`` (the basis) is read from the ``binance`` and the ``binance-futures`` services at once.

    Every per-leg read goes to the venue carrying the leg (:mod:`pairs.venues`), so pair analytics,
    charts, stats, the live panel, backtests and exports run over both; each venue's service is the
    registry's, shared with every other session (this object starts and stops nothing). The page's
    own source (``home``) keeps its alert rules, history and feed events: a rule on a pair of two
    venues is refused (each venue's monitor sees its own legs only); a price rule goes to its leg's venue.
    """

    def __init__(self, home: Service, services: Mapping[str, Service]) -> None:
        self.home = home
        self.services = dict(services)  # by market value: "spot", "um"
        engine = RoutedEngine({market: s.engine for market, s in self.services.items()}, _market_of)
        history = RoutedHistory({market: s.history for market, s in self.services.items()}, _market_of)
        # Duck-typed: pairs read only what RoutedEngine and RoutedHistory route (pairs/venues.py).
        shared = SharedAnalytics(cast(Engine, engine), cast(BarHistory, history))
        super().__init__(home.settings, home.spec, home.site, cast(Engine, engine), shared, rest=home.rest)
        self.routed = engine

    @property
    def symbols(self) -> tuple[str, ...]:
        return self.routed.symbols

    @property
    def running(self) -> bool:
        return all(service.running for service in self.services.values())

    @property
    def finished(self) -> bool:
        return any(service.finished for service in self.services.values())

    @property
    def failed(self) -> bool:
        return any(service.failed for service in self.services.values())

    @property
    def following(self) -> bool:
        return self.home.following

    def watch(self, symbols: Iterable[str]) -> None:
        """Each leg watched on its own venue."""
        for symbol in symbols:
            self.services[_market_of(symbol)].watch((symbol,))

    @property
    def funding(self) -> bool:
        return any(service.funding for service in self.services.values())

    def mark_price(self, symbol: str) -> MarkPrice | None:
        return self.services[_market_of(symbol)].mark_price(symbol)

    def funding_history(self, leg: str, start_ms: int, end_ms: int) -> FundingHistory:
        """``leg``'s funding from its own venue's store: a basis page's perpetual is charged from the
        futures database even when the page's own source is spot."""
        return self.services[_market_of(leg)].funding_history(leg, start_ms, end_ms)

    def status(self) -> FeedStatus:
        return self.home.status()

    def statuses(self) -> list[FeedStatus]:
        return [self.home.status(), *(s.status() for s in self.services.values() if s is not self.home)]

    def recent_alerts(self, limit: int = ALERTS_KEPT) -> list[AlertRecord]:
        return self.home.recent_alerts(limit)

    def unwatched_legs(self, rule: AlertRule) -> tuple[str, ...]:
        """Of a rule the page lists (its own source's): the home venue's monitor evaluates it."""
        return self.home.unwatched_legs(rule)

    def add_rule(self, rule: AlertRule) -> tuple[AlertRule, bool]:
        """``rule`` stored on the venue of its legs; ValueError for a pair across venues."""
        markets = {_market_of(symbol) for symbol in rule.symbols}
        if len(markets) > 1:
            raise ValueError(f"{rule.label} joins legs of two venues, and alert rules are evaluated on one venue's "
                             "feed: add a price rule per leg, or a pair rule on a pair of one venue")
        return self.services[markets.pop()].add_rule(rule)

    @property
    def history_progress(self) -> HistoryProgress | None:
        return self.home.history_progress

    def stop(self, timeout: float = 15.0) -> bool:
        """Nothing to stop: the venues' services are the registry's."""
        return True


# ------------------------------------------------------------ uploaded datasets (shared by every source)
def stored_datasets(storage: StorageSettings) -> list[DatasetInfo]:
    """The uploaded datasets, newest upload first; [] when none was ever uploaded (listing creates nothing)."""
    if not has_datasets(storage):
        return []
    with open_datasets(storage) as store:
        return store.list()


def load_datasets(storage: StorageSettings, *datasets: DatasetInfo) -> dict[str, pd.DataFrame]:
    """Each dataset's OHLC bars (the layout of :mod:`analytics.bars`), keyed by its name (names are
    unique; two datasets may share a symbol)."""
    with open_datasets(storage) as store:
        return {dataset.name: store.load(dataset.id) for dataset in datasets}


def save_dataset(storage: StorageSettings, frame: pd.DataFrame, *, name: str, symbol: str, filename: str) -> AddResult:
    """Store parsed OHLC bars as dataset ``name`` of ``symbol`` (upper-cased and validated).

    The same bars uploaded again (zipped or not, CRLF or LF) are one dataset: the result says
    ``created=False`` and names the stored one. Raises ``ConfigError`` for an invalid symbol and
    ``ValueError`` for a name that is empty or taken by other data.
    """
    checked = normalize_symbol(symbol)
    with open_datasets(storage) as store:
        return store.add(frame, name=name.strip(), symbol=checked, filename=filename,
                         content_hash=content_hash(frame), uploaded_ms=now_ms())


def content_hash(frame: pd.DataFrame) -> str:
    """SHA-256 of parsed bars (their UTC bar starts in ms and values as float64): what makes two
    uploads the same dataset, whatever file they came in."""
    digest = hashlib.sha256(np.ascontiguousarray(frame.index.as_unit("ms").asi8).tobytes())
    digest.update(np.ascontiguousarray(frame.to_numpy(np.float64)).tobytes())
    return digest.hexdigest()


START_WAIT_S = 180.0  # how long a session waits for another session's start of the same feed


@dataclass
class _Entry:
    """One database's service, or its start in progress (``service`` None until ``started`` is set)."""

    service: Service | None
    last_used: float
    pinned: bool
    started: threading.Event = field(default_factory=threading.Event)  # set once the start succeeded or failed
    error: BaseException | None = None  # why the start failed (every session waiting on it is told)


class ServiceRegistry:
    """The services of one dashboard server, at most one per database (see the module docstring).

    Thread-safe: every browser session calls :meth:`acquire` from its own script thread. A start
    (seconds against a slow exchange) runs outside the registry's lock: sessions on other feeds
    go on meanwhile; a session asking for the feed being started waits for that start only.
    ``start(settings)``: how a service is started (tests put a gate in it).
    """

    def __init__(self, max_feeds: int, *, idle_s: float = IDLE_S, session_ttl_s: float = SESSION_TTL_S,
                 start: Callable[[Settings], Service] | None = None, start_wait_s: float = START_WAIT_S) -> None:
        self.max_feeds = max_feeds
        self.idle_s = idle_s
        self.session_ttl_s = session_ttl_s
        self.start_wait_s = start_wait_s
        self._start = start if start is not None else (lambda settings: Service.start(settings, follow=True))
        self._entries: dict[str, _Entry] = {}
        self._sessions: dict[str, tuple[str, float]] = {}  # session id → (database, last seen)
        # The pages of two venues' legs, one per set of running services (shared, like their analytics).
        self._joints: dict[tuple[str, tuple[tuple[str, int], ...]], JointService] = {}  # (home, services)
        self._lock = threading.Lock()  # guards the two maps; never held while a service starts

    def acquire(self, session: str, settings: Settings, *, pin: bool = False) -> Service:
        """The service for ``settings``' database, started if needed, watching at least its symbols.

        ``pin``: never stop it for being idle (the server's configured source, whose alert rules
        must be evaluated with no tab open). Raises :class:`TooManyFeeds` when a new service is
        needed but ``max_feeds`` run (or are starting) and all are in use; the errors of
        :meth:`Service.start` otherwise, to the session that started it and to every session
        that waited for that start; ``TimeoutError`` after waiting ``start_wait_s`` seconds for
        another session's start. Never stops a service another session uses.
        """
        settings = resolve(settings)  # the source's leg names (BTCUSDT.P on binance-futures)
        symbols = settings.feed.symbols
        if len(symbols) > MAX_SYMBOLS:
            raise ValueError(f"symbols: at most {MAX_SYMBOLS} watched symbols on one page, got {len(symbols)}; "
                             "watch fewer (a scan of more belongs to python -m cli.scan)")
        spec = spec_for(settings.feed.source)
        key = site_for(settings.storage, spec.database(settings.feed)).location
        deadline = time.monotonic() + self.start_wait_s
        while True:
            now = time.monotonic()
            with self._lock:
                entry = self._entries.get(key)
                if entry is not None and entry.service is not None:
                    if not self._unusable(entry.service) or self._used_by_others(key, session, now):
                        return self._use(entry, session, key, settings, now, pin)
                    self._stop(key)  # a finished replay, a follower whose recorder left, a dead writer
                    entry = None
                if entry is None:
                    self._make_room(session, now)
                    # Held in its slot while it starts: counted against max_feeds, and found by
                    # the sessions that ask for it meanwhile (they wait below instead of starting it again).
                    ours = self._entries[key] = _Entry(None, now, pin)
                    previous = self._sessions.get(session)
                    self._sessions[session] = (key, now)
                    break
            # Another session is starting this feed: wait for that start alone, outside the lock.
            if not entry.started.wait(max(deadline - time.monotonic(), 0.0)):
                raise TimeoutError(f"the {settings.feed.source} feed ({key}) is still starting after "
                                   f"{self.start_wait_s:.0f} s; try again")
            if entry.error is not None:
                raise entry.error
        try:
            service = self._start(settings)
        except BaseException as exc:
            with self._lock:
                if self._entries.get(key) is ours:
                    del self._entries[key]  # the slot is free again
                if self._sessions.get(session) == (key, now):  # the session uses what it used before
                    if previous is None:
                        del self._sessions[session]
                    else:
                        self._sessions[session] = previous
            ours.error = exc
            ours.started.set()
            raise
        try:
            with self._lock:
                kept = self._entries.get(key) is ours  # not if stop_all ran meanwhile
                if kept:
                    ours.service = service
                    result = self._use(ours, session, key, settings, time.monotonic(), pin)
        finally:
            ours.started.set()  # whatever happens here, nobody waits on this start any longer
        if not kept:
            service.stop()
            raise RuntimeError(f"the {settings.feed.source} feed was stopped while it started (the server is stopping)")
        return result

    def acquire_legs(self, session: str, settings: Settings, *, pin: bool = False) -> Service:
        """What a page of ``settings``' legs reads: :meth:`acquire` when they all trade on one venue;
        when they trade on two (``ETHUSDT`` and ``ETHUSDT.P``), each venue's service (started or shared,
        each counted once against ``max_feeds``) joined in one :class:`JointService`.

        On a page, leg names are taken as written: ``ETHUSDT`` is spot on the futures page too. The
        session holds the service of its own source; it holds another venue's as ``<session>@<source>``,
        so that no other session stops it while the page uses it. ``pin`` pins the page's own source only.
        """
        home = spec_for(settings.feed.source).market
        if home is None:  # a simulated or replayed source's symbols are its own (a perpetual is refused)
            return self.acquire(session, settings, pin=pin)
        by_market = _by_market(settings.feed.symbols)
        if set(by_market) == {home}:
            return self.acquire(session, settings, pin=pin)  # one venue: the page reads its feed itself
        services: dict[str, Service] = {}
        for market, legs in sorted(by_market.items(), key=lambda item: item[0] is not home):
            source = source_for(market)
            own = market is home or home not in by_market
            services[market.value] = self.acquire(session if own else f"{session}@{source}",
                                                  settings.replace(source=source, symbols=legs, pair=None),
                                                  pin=pin and market is home)
        if len(services) == 1:
            return next(iter(services.values()))
        key = (home.value, tuple(sorted((market, id(service)) for market, service in services.items())))
        with self._lock:
            live = {id(entry.service) for entry in self._entries.values() if entry.service is not None}
            for stale in [k for k in self._joints if not all(ident in live for _, ident in k[1])]:
                del self._joints[stale]  # a venue's service was replaced: its joint page with it
            joint = self._joints.get(key)
            if joint is None:
                joint = self._joints[key] = JointService(services[home.value], services)
        return joint

    def services(self) -> dict[str, Service]:
        """The running services by database name (``live``, ``simulated``, ``replay-…``); not those starting."""
        with self._lock:
            return {entry.service.site.name: entry.service for entry in self._entries.values()
                    if entry.service is not None}

    def stop_all(self, timeout: float = 15.0) -> None:
        with self._lock:
            for key in list(self._entries):
                self._stop(key, timeout)

    # ------------------------------------------------------------------ internals (lock held)
    def _use(self, entry: _Entry, session: str, key: str, settings: Settings, now: float, pin: bool) -> Service:
        """``entry``'s running service for ``session``, watching ``settings``' symbols too."""
        service = entry.service
        assert service is not None
        union = set(service.symbols) | set(settings.feed.symbols)
        if len(union) > MAX_SYMBOLS:
            raise ValueError(f"symbols: this server already watches {len(service.symbols)} symbols "
                             f"on this source; at most {MAX_SYMBOLS} in all")
        service.watch(settings.feed.symbols)
        entry.last_used = now
        entry.pinned = entry.pinned or pin
        self._sessions[session] = (key, now)
        return service

    @staticmethod
    def _unusable(service: Service) -> bool:
        """Storage failed, or a follower whose recorder left: replace it rather than draw from it."""
        return service.failed or (service.following and (service.finished or not service.running))

    def _used_by_others(self, key: str, session: str, now: float) -> bool:
        return any(used == key and sid != session and now - seen < self.session_ttl_s
                   for sid, (used, seen) in self._sessions.items())

    def _make_room(self, session: str, now: float) -> None:
        if len(self._entries) < self.max_feeds:
            return
        # A feed still starting is in use by the session starting it: never a candidate.
        idle = [key for key, entry in self._entries.items()
                if entry.service is not None and not entry.pinned and not self._used_by_others(key, session, now)
                and now - entry.last_used >= self.idle_s]
        own = self._sessions.get(session, ("", 0.0))[0]
        mine = self._entries.get(own)
        # The session's own previous service goes first if nobody else watches it.
        if mine is not None and mine.service is not None and not mine.pinned \
                and not self._used_by_others(own, session, now):
            idle.insert(0, own)
        if not idle:
            running = ", ".join(f"{entry.service.site.name} ({', '.join(entry.service.symbols)})"
                                if entry.service is not None else f"{key} (starting)"
                                for key, entry in self._entries.items())
            raise TooManyFeeds(f"this server already runs its maximum of {self.max_feeds} feeds ({running}), "
                               "all in use by other sessions; pick one of those sources, or ask the operator to "
                               "raise QUANT_MAX_FEEDS")
        self._stop(idle[0])

    def _stop(self, key: str, timeout: float = 15.0) -> None:
        entry = self._entries.pop(key)
        if entry.service is None:  # still starting: its starter stops it when it sees the slot gone
            return
        try:
            entry.service.stop(timeout)
        except StorageError as exc:  # stopping must not fail the session that needs the room
            log.error("stopping the %s service: %s", key, exc)
