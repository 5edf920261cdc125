"""Which legs pay funding, and their stored funding history as the backtest takes it.

:func:`is_perpetual` is the one place that decides whether a leg is a USDⓈ-M perpetual (it pays
funding) or spot (it never does); :func:`funding_history` reads a perpetual's events and the span
known for it from the futures site's store (written by :mod:`ingestion.funding`).
"""

from __future__ import annotations

import numpy as np

from analytics.backtest import FundingHistory
from domain import Leg, Market
from storage.base import TickStore


def is_perpetual(leg: str) -> bool:
    """Whether ``leg`` is a USDⓈ-M perpetual: its name says so (``ETHUSDT.P``), whatever page or feed
    shows it (a spot ``ETHUSDT`` on the futures page of a basis pair never pays). A name that is no
    leg at all (an uploaded dataset's) is not a perpetual."""
    try:
        return Leg.parse(leg).market is Market.USDM
    except ValueError:
        return False


def funding_history(store: TickStore, leg: str, start_ms: int, end_ms: int) -> FundingHistory:
    """The stored funding events of perpetual ``leg`` with ``start_ms <= funding_ms <= end_ms`` (UTC
    epoch ms) and the span in which the store holds every event (:meth:`TickStore.funding_coverage`).
    The funding table is keyed by the exchange's symbol (``ETHUSDT``, as fetched), not the leg name."""
    symbol = Leg.parse(leg).symbol
    # Three reads, each its own snapshot, while another process may write (a recorder) or prune: the span
    # before the events (a span is stored with its events, so the events read next hold all of it), and
    # again after (a prune between deletes old events and trims the span in one transaction). Known is
    # what both spans hold: events read first and a span read after could claim an event not read.
    before = store.funding_coverage(symbol)
    rates = store.funding(symbol, start_ms, end_ms + 1)
    after = store.funding_coverage(symbol) if before is not None else None
    known = None
    if before is not None and after is not None and max(before[0], after[0]) <= min(before[1], after[1]):
        known = (max(before[0], after[0]), min(before[1], after[1]))
    return FundingHistory(
        leg,
        np.array([rate.funding_ms for rate in rates], dtype=np.int64),
        np.array([rate.rate for rate in rates], dtype=np.float64),
        np.array([np.nan if rate.mark is None else rate.mark for rate in rates], dtype=np.float64),
        None if known is None else known[0],
        None if known is None else known[1],
    )
