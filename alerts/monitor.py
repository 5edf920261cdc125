"""The engine's alert monitor: evaluates stored rules on every closed bar, with or without a browser.

A daemon thread wakes every ``poll_s`` seconds, closes bars that are due, reloads rules when
another process (a dashboard) changed them, and, whenever a 1 s bar has closed, computes each
enabled rule's metric on its own timeframe and window from closed bars only. New firings are
stored (idempotent per rule and bar); with a webhook configured they are stored ``pending`` and
posted by the site's outbox (:mod:`alerts.outbox`), which survives a crash of this process.

With several processes on one server database, each rule is evaluated by the one process that
holds it (:meth:`~storage.base.AlertStore.claim_rule`); the others skip it and ask again on
every pass, so one of them takes it over within a pass when the holder ends.

A rule seen for the first time (new, after a restart, or taken over) is *primed*: its evaluator state is
built from the bars already available without recording anything, so a condition that has held
for an hour does not fire the moment the process starts. Metrics use rolling OLS on price, like
the dashboard's default: z-score and spread of ``y - βx - α``, rolling correlation of log
returns, β; ``price`` is a symbol's close.
"""

from __future__ import annotations

import logging
import math
import threading

import pandas as pd

from alerts.evaluator import AlertEvaluator
from alerts.outbox import Outbox, OutboxWorker
from alerts.webhook import WebhookEndpoint
from ingestion.engine import Engine
from pairs.bars import load_pair_bars
from pairs.compute import PairAnalytics, PairParams, compute_pair
from pairs.shared import SharedAnalytics
from records.alerts import AlertRule
from storage import Site, open_alerts
from storage.base import AlertStore
from storage.errors import StorageError

log = logging.getLogger(__name__)

POLL_S = 0.25
WARMUP_FACTOR = 2  # rolling β needs a window, its z-score another: bars loaded before the values observed


def rule_params(rule: AlertRule) -> PairParams:
    """The pair analytics a pair rule watches: rolling OLS on price over the rule's window.

    ValueError naming the rule for a price rule, which watches no pair.
    """
    if rule.pair is None:
        raise ValueError(f"alert rule {rule.describe()!r} watches a price, not a pair")
    y, x = rule.pair
    return PairParams(y, x, window=rule.window)


def metric_series(rule: AlertRule, closes: pd.DataFrame) -> pd.Series:
    """The rule's metric on each closed bar (NaN during warm-up), indexed by bar start."""
    if rule.metric == "price":
        return closes[rule.symbol]
    return pair_metric(rule, compute_pair(closes, rule_params(rule)))


def pair_metric(rule: AlertRule, pair: PairAnalytics) -> pd.Series:
    """A pair rule's metric from the pair analytics, one value per bar (NaN during warm-up)."""
    series = {"zscore": pair.zscore, "spread": pair.spread, "corr": pair.correlation, "beta": pair.beta}[rule.metric]
    # compute_pair gives None while the window fills; the monitor still needs one (NaN) value per bar start.
    return series if series is not None else pd.Series(math.nan, index=pair.index, dtype=float)


class AlertMonitor:
    """Rule evaluation for one engine, in its own thread."""

    def __init__(self, engine: Engine, site: Site, shared: SharedAnalytics, *, webhook_url: str | None = None,
                 min_trades: int = 0, min_volume: float = 0.0, poll_s: float = POLL_S) -> None:
        self.engine = engine
        self.site = site
        self.shared = shared
        self.min_trades = min_trades
        self.min_volume = min_volume
        self.poll_s = poll_s
        # The outbox key names the site: the schema on a server (unique there), else the source's name.
        self.webhook = OutboxWorker(site, Outbox(WebhookEndpoint(webhook_url), site.schema or site.name)) \
            if webhook_url else None
        self.history = shared.history
        self.evaluator = AlertEvaluator()
        self.rules: list[AlertRule] = []
        self.fired = 0
        self.last_error: str | None = None
        self._last_ts: dict[AlertRule, int] = {}  # newest bar start evaluated per rule
        self._rules_version = -1
        self._bars_version = -1
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._skipped: set[AlertRule] = set()

    def start(self) -> None:
        if self.webhook is not None:  # first, so alerts a dead process left pending go out at once
            self.webhook.start()
        self._thread = threading.Thread(target=self._run, name="alert-monitor", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self.webhook is not None:
            self.webhook.stop(timeout)

    def _run(self) -> None:
        store: AlertStore | None = None
        try:
            while not self._stop.wait(self.poll_s):
                try:
                    if store is None:  # opened here, not before the loop: a busy or restarting database retries
                        store = open_alerts(self.site)
                    self.step(store)
                    if self.last_error is not None and self.last_error.startswith("alert store:"):
                        log.info("alert evaluation resumed")
                        self.last_error = None
                except StorageError as exc:  # the database is away (a server restarting): next pass retries
                    if self.last_error != f"alert store: {exc}":
                        log.warning("alert evaluation paused: %s", exc)
                    self.last_error = f"alert store: {exc}"
                except Exception as exc:  # a bad rule or bar must not end alerting for all rules
                    self.last_error = f"alert evaluation failed: {exc!r}"
                    log.exception("alert evaluation failed")
        finally:
            if store is not None:
                store.close()

    def step(self, store: AlertStore) -> int:
        """One evaluation pass; returns how many alerts were newly stored."""
        self.engine.close_due_bars()
        version = store.rules_version()
        if version != self._rules_version:
            self._rules_version = version
            self.rules = store.rules(enabled_only=True)
            self.evaluator.retain(self.rules)
            self._last_ts = {rule: ts for rule, ts in self._last_ts.items() if rule in self.rules}
        bars_version = self.engine.bars.version
        if not self.rules or bars_version == self._bars_version:
            return 0
        self._bars_version = bars_version
        return sum(self._evaluate(store, rule) for rule in self.rules)

    def _evaluate(self, store: AlertStore, rule: AlertRule) -> int:
        symbols = rule.symbols
        if not set(symbols) <= set(self.engine.symbols):
            if rule not in self._skipped:  # say it once, not every second
                self._skipped.add(rule)
                log.warning("alert %r needs %s, which this engine does not watch", rule.describe(), symbols)
            return 0
        # A rule that was never stored (no id) belongs to no other process: this one evaluates it.
        if rule.id is not None and not store.claim_rule(rule.id):
            # Another process on the same database evaluates this rule. Forget ours, so that taking it
            # over later (when that process ends) primes afresh instead of firing on stale state.
            if self._last_ts.pop(rule, None) is not None:
                self.evaluator.retain(r for r in self.rules if r != rule)
            return 0
        lookback_ms = (WARMUP_FACTOR * rule.window + 5) * rule.timeframe_ms
        if rule.metric == "price":
            bars = load_pair_bars(self.engine, self.history, symbols, rule.timeframe_ms, lookback_ms)
            values = bars.closes(closed_only=True, min_trades=self.min_trades, min_volume=self.min_volume)
            values = values[rule.symbol] if not values.empty else pd.Series(dtype=float)
        else:
            # The same computation every page showing this pair uses (computed once per closed bar), with
            # the page's warm-up in kept bars: each bar's value is the one a page shows for it, whatever
            # the liquidity filter drops and whether a page is open or not.
            params = rule_params(rule)
            view = self.shared.view(symbols, rule.timeframe_ms, lookback_ms, params,
                                    warmup_bars=params.warmup_bars, min_trades=self.min_trades,
                                    min_volume=self.min_volume).shown()
            values = pd.Series(dtype=float) if view.pair is None else pair_metric(rule, view.pair)
        if values.empty:
            return 0
        starts = values.index.as_unit("ms").asi8
        last = self._last_ts.get(rule)
        priming = last is None
        new = 0
        for ts, value in zip(starts.tolist(), values.to_numpy(dtype=float).tolist(), strict=True):
            if last is not None and ts <= last:
                continue
            if not math.isfinite(value):
                continue
            event = self.evaluator.observe(rule, ts, value)
            if event is not None and not priming and store.record(event, pending=self.webhook is not None):
                new += 1
                self.fired += 1
                log.info("ALERT %s", event.message)
                if self.webhook is not None:
                    self.webhook.wake()
        self._last_ts[rule] = int(starts[-1])
        return new
