"""Plain, immutable records every layer speaks: trades, feed events and status, tick arrays, alerts.

The bottom layer with :mod:`domain` and :mod:`config`: it imports nothing else of the project, so sources,
storage backends, the pair service, alerts and the UI can all exchange these values.
"""

from records.alerts import AlertEvent, AlertRule, make_event
from records.market import (
    LIVE_SKEW_MS,
    TIME_END_MS,
    TIME_MIN_MS,
    TIME_RANGE,
    BarArrays,
    EventKind,
    FeedEvent,
    FeedState,
    FeedStatus,
    FundingRate,
    MarkPrice,
    StorageState,
    TickArrays,
    Trade,
    now_ms,
    possible_times,
    time_problem,
)

__all__ = [
    "LIVE_SKEW_MS",
    "TIME_END_MS",
    "TIME_MIN_MS",
    "TIME_RANGE",
    "AlertEvent",
    "AlertRule",
    "BarArrays",
    "EventKind",
    "FeedEvent",
    "FeedState",
    "FeedStatus",
    "FundingRate",
    "MarkPrice",
    "StorageState",
    "TickArrays",
    "Trade",
    "make_event",
    "now_ms",
    "possible_times",
    "time_problem",
]
