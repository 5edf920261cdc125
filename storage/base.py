"""The storage seam: what the engine, the pair service, alerts and the UI need from a database.

Consumers see only these protocols, opened by the factory in :mod:`storage` from the settings.
Each backend is one package (:mod:`storage.sqlite`, :mod:`storage.postgres`) with a module per
store (``ticks``, ``alerts``, ``datasets``) over its connection module (``db``); they implement
these protocols without anything above this layer knowing which it has, and map rows to these
records through :mod:`storage.rows`.
Every implementation is used from one thread per instance, raises only :mod:`storage.errors`
types and names its database in ``location`` (never with a password).
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol, Self

import pandas as pd

from records import BarArrays, EventKind, FeedEvent, FundingRate, TickArrays, Trade
from records.alerts import AlertEvent, AlertRule
from storage.datasets import AddResult, DatasetInfo

# Webhook delivery state of a stored alert. "none": stored while no webhook was configured, so
# nothing is owed (it is never sent later, even if a webhook is configured afterwards).
DELIVERY_STATES = ("none", "pending", "delivered", "failed")
MAX_DELIVERY_ERROR_CHARS = 200  # a stored delivery error is cut to this many characters


@dataclass(frozen=True, slots=True)
class Delivery:
    """Where a stored alert's webhook delivery stands.

    Attributes:
        state: one of :data:`DELIVERY_STATES`.
        attempts: POSTs made so far (failed ones and the successful one).
        error: the last failed attempt's reason, plain text of at most
            :data:`MAX_DELIVERY_ERROR_CHARS` characters; None once delivered or before any failure.
        last_attempt_ms: wall-clock time of the last attempt, UTC epoch ms, or None.
        delivered_ms: wall-clock time the endpoint accepted it, UTC epoch ms, or None.
        next_attempt_ms: earliest wall-clock time of the next attempt while ``pending``, epoch ms.
        lease_until_ms: while a deliverer holds the alert, the wall-clock end of its lease (epoch ms).
            It also names that lease: a later lease of the same alert always ends later, so a mark
            that gives it (:meth:`AlertStore.mark_delivered`) proves its caller still holds the alert.
    """

    state: str = "none"
    attempts: int = 0
    error: str | None = None
    last_attempt_ms: int | None = None
    delivered_ms: int | None = None
    next_attempt_ms: int | None = None
    lease_until_ms: int | None = None


@dataclass(frozen=True, slots=True)
class AlertRecord:
    """One stored alert: the event, its row id, the wall-clock time it was stored (epoch ms) and its delivery."""

    id: int
    created_ms: int
    event: AlertEvent
    delivery: Delivery = Delivery()


class Closeable(Protocol):
    location: str  # e.g. "data/live.sqlite3": what messages call this database

    def close(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(self, *exc: object) -> None: ...


class TickStore(Closeable, Protocol):
    """Ticks (idempotent on ``(symbol, trade_id)``), stored bars and feed events of one source."""

    def verify(self) -> None:
        """Raise ``StorageCorrupt`` if the database is damaged (run once, when a writer opens it)."""

    def write_batch(self, trades: Sequence[Trade], events: Sequence[FeedEvent] = ()) -> int:
        """Insert trades (duplicates ignored) and events in ONE transaction; return new tick rows."""

    def ticks(self, symbol: str, start_ms: int | None = None, end_ms: int | None = None) -> TickArrays:
        """Ticks of one symbol with ``start_ms <= ts_ms < end_ms`` (epoch ms), by time then trade id."""

    def iter_trades(self, symbol: str, chunk_rows: int = 5_000) -> Iterator[Trade]:
        """Every stored trade of a symbol in time order, read in chunks (for replay)."""

    def write_bars(self, symbol: str, interval_ms: int, bars: BarArrays) -> int:
        """Store closed bars (klines, a simulated past) in ONE transaction, replacing a bar with the
        same ``(symbol, interval_ms, start)``; return the rows written."""

    def bars(self, symbol: str, interval_ms: int, start_ms: int | None = None,
             end_ms: int | None = None) -> BarArrays:
        """Stored bars of a symbol at one interval with ``start_ms <= start < end_ms``, by start."""

    def bar_span(self, symbol: str, interval_ms: int) -> tuple[int, int] | None:
        """(first, last) stored bar start, UTC epoch ms, or None."""

    def tick_count(self, symbol: str | None = None) -> int: ...

    def symbols(self) -> list[str]: ...

    def rename_symbols(self, rename: Callable[[str], str]) -> int:
        """Rename every stored symbol (ticks, bars, feed events) to ``rename(symbol)``; symbols renamed."""

    def last_trade_ids(self) -> dict[str, int]:
        """Highest stored trade id per symbol: where a restarted feed continues."""

    def feed_events(
        self, *, since_ms: int | None = None, kinds: Iterable[EventKind] | None = None, limit: int = 500
    ) -> list[FeedEvent]:
        """Most recent feed events first."""

    def write_funding(self, symbol: str, rates: Sequence[FundingRate], first_ms: int, last_ms: int) -> int:
        """Store the funding events of the perpetual ``symbol`` fetched for ``[first_ms, last_ms]``
        (UTC epoch ms, inclusive) in ONE transaction: an event already stored (same symbol and
        ``funding_ms``) is stored once; the span is added to :meth:`funding_coverage`. Return the
        new rows."""

    def funding(self, symbol: str, start_ms: int | None = None, end_ms: int | None = None) -> list[FundingRate]:
        """Stored funding events of ``symbol`` with ``start_ms <= funding_ms < end_ms``, by time."""

    def funding_coverage(self, symbol: str) -> tuple[int, int] | None:
        """(first, last) UTC epoch ms, inclusive: the span of ``symbol``'s funding history fetched
        without a hole (every event in it is stored), or None."""

    def prune(self, before_ms: int) -> int:
        """Delete ticks, bars, funding events and feed events older than ``before_ms``; return the
        ticks deleted."""


class DatasetStore(Closeable, Protocol):
    """Uploaded OHLC datasets, de-duplicated by content hash."""

    def add(self, df: pd.DataFrame, *, name: str, symbol: str, filename: str, content_hash: str,
            uploaded_ms: int) -> AddResult: ...

    def list(self) -> builtins.list[DatasetInfo]: ...

    def get(self, dataset_id: int) -> DatasetInfo | None: ...

    def load(self, dataset_id: int) -> pd.DataFrame: ...

    def delete(self, dataset_id: int) -> bool: ...


class AlertStore(Closeable, Protocol):
    """Alert rules (shared by every process on the site) and the history of fired alerts."""

    def add_rule(self, rule: AlertRule) -> AlertRule:
        """Store ``rule`` (its ``id`` is ignored) and return it with the new id."""

    def ensure_rule(self, rule: AlertRule) -> tuple[AlertRule, bool]:
        """The stored rule equal to ``rule`` (ignoring id and enabled), adding it if there is none."""

    def rules(self, enabled_only: bool = False) -> builtins.list[AlertRule]: ...

    def rename_symbols(self, rename: Callable[[str], str]) -> int:
        """Rename every rule's legs and the history's pairs to ``rename(leg)``; rows changed."""

    def set_enabled(self, rule_id: int, enabled: bool) -> bool: ...

    def delete_rule(self, rule_id: int) -> bool: ...

    def rules_version(self) -> int:
        """A counter bumped by every rule change, by any connection: cheap to poll."""

    def record(self, event: AlertEvent, *, pending: bool = False) -> bool:
        """Persist a fired alert; False if this rule already has an alert at this bar (idempotent).

        ``pending``: a webhook is configured, so the alert is stored owing a delivery (state
        ``pending``, due now) in the same transaction as the alert itself; else its state is ``none``.
        """

    def alerts(self, limit: int = 200, since_ms: int | None = None) -> builtins.list[AlertRecord]:
        """Most recent alerts first (by market time)."""

    def claim_deliveries(self, limit: int, lease_ms: int) -> builtins.list[AlertRecord]:
        """Lease up to ``limit`` pending alerts that are due, oldest (lowest id) first, for ``lease_ms``.

        A leased alert is not handed to any other caller (another process included) until the
        lease ends or the holder marks it. An alert waits while an older alert of the same rule is
        still pending, so each rule's alerts reach the endpoint in the order they fired. The records
        returned carry their lease (``delivery.lease_until_ms``) for the marks.
        """

    def mark_delivered(self, record: AlertRecord) -> bool:
        """Count one successful attempt and set ``delivered``; False (nothing changed) unless the
        alert is pending under the lease ``record`` was claimed with."""

    def mark_failed(self, record: AlertRecord, error: str, retry_at_ms: int | None) -> bool:
        """Count one failed attempt with its ``error``: still ``pending``, due again at ``retry_at_ms``
        (epoch ms), or ``failed`` for good when that is None. False (nothing changed) unless the
        alert is pending under the lease ``record`` was claimed with."""

    def claim_rule(self, rule_id: int) -> bool:
        """True if this store's process is the one evaluating rule ``rule_id`` now (non-blocking).

        Several processes may watch one site (a server database); exactly one of them evaluates and
        fires each rule. A claim holds while the store is open; a process that dies hands its rules
        over to the next one asking. With one writer per site (SQLite) it is always True.
        """


class WriterClaim(Protocol):
    """The right to write a site's ticks, from :func:`storage.claim_writer` until :meth:`release`."""

    def release(self) -> None: ...

    @property
    def held(self) -> bool: ...
