"""The one paced emission loop of the offline sources (simulated market, replay).

Trades carry market times; the loop hands each to the sink when the wall clock has caught up
with it, scaled by ``speed`` (10 = ten times faster). Recordings merged from several sockets are
not globally time-ordered, so the pacing clock is the largest ``ts_ms`` seen so far: a late
older trade goes out at once instead of rewinding the clock.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass

from ingestion.source import SourceStats, TradeSink
from records import Trade
from records.clock import SYSTEM_CLOCK, Clock


@dataclass(frozen=True, slots=True)
class PacedRun:
    """How a paced run ended: trades emitted, and whether ``stop`` cut it short."""

    emitted: int
    stopped: bool


def run_paced(trades: Iterable[Trade], sink: TradeSink, stop: threading.Event, *, speed: float,
              stats: SourceStats, origin_ms: int | None = None, count_messages: bool = False,
              clock: Clock = SYSTEM_CLOCK) -> PacedRun:
    """Emit ``trades`` to ``sink`` paced against the wall clock; return within ms of ``stop``.

    ``origin_ms``: the market time (epoch ms) that corresponds to the moment the loop starts;
    default the first trade's time. A trade goes out once ``(pacing - origin_ms) / speed`` wall
    milliseconds have passed, ``pacing`` being the largest ``ts_ms`` so far. Each emitted trade
    gets the wall-clock time of emission as ``recv_ms``; ``stats.last_message_mono`` follows, and
    ``stats.messages`` counts emitted trades when ``count_messages`` (a source whose messages are
    its trades; a replay counts the lines it reads instead). ``clock`` is the time read and
    waited on (monotonic seconds for the schedule, epoch ms for ``recv_ms``): the machine's, or a
    test's.
    """
    wall_per_market_ms = 1.0 / (1000.0 * speed)  # wall seconds per market millisecond
    mono0 = clock.monotonic()
    origin: int | None = origin_ms
    pacing: int | None = origin_ms  # market time reached so far, epoch ms: never rewound
    emitted = 0
    for trade in trades:
        if origin is None or pacing is None:
            origin = pacing = trade.ts_ms
        elif trade.ts_ms > pacing:
            pacing = trade.ts_ms
        delay = mono0 + (pacing - origin) * wall_per_market_ms - clock.monotonic()
        # The wait returns as soon as stop is set, so a long gap in the data never delays stopping.
        if clock.wait(stop, delay) if delay > 0 else stop.is_set():
            return PacedRun(emitted, stopped=True)
        sink.on_trade(Trade(trade.symbol, trade.trade_id, trade.ts_ms, clock.now_ms(), trade.price, trade.qty,
                            trade.buyer_is_maker))
        emitted += 1
        if count_messages:
            stats.messages += 1
        stats.last_message_mono = clock.monotonic()
    return PacedRun(emitted, stopped=False)
