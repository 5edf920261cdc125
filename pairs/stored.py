"""Bars from a source's database alone, without a running engine (the scanner's command line).

The page's bars come from the engine's memory plus the database (:func:`pairs.bars.load_pair_bars`);
a command run after (or beside) a recorder has only the database: stored ticks resampled at the
timeframe, merged with stored bars (klines, a simulated past) the same way the page does
(:func:`pairs.bars.merge_bars`: tick bars win where the recorder saw the whole bar).
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from analytics import resample_ticks
from pairs.bars import arrays_to_frame, merge_bars
from storage.base import TickStore

# How far before "now" the end of the data is looked for, widening until some symbol has ticks:
# the storage protocol has no "last tick time" query, and a read on the (symbol, time) index from
# a start costs what it returns, so a running or just-stopped recorder costs a minute of ticks.
_END_PROBES_MS = (60_000, 3_600_000, 86_400_000, 30 * 86_400_000, 3_650 * 86_400_000)


def stored_end_ms(store: TickStore, symbols: Sequence[str], interval_ms: int, now_ms: int) -> int | None:
    """Just after the last stored tick or ``interval_ms`` bar of any of ``symbols`` (UTC epoch ms).

    Ticks after ``now_ms`` count too (a simulated market or a replay runs ahead of the wall
    clock). None when the database holds neither ticks nor bars of these symbols at that interval.
    """
    ends = []
    for symbol in symbols:
        span = store.bar_span(symbol, interval_ms)
        if span is not None:
            ends.append(span[1] + interval_ms)
    for back in _END_PROBES_MS:
        last = [int(ticks.ts_ms[-1]) + 1 for symbol in symbols if len(ticks := store.ticks(symbol, now_ms - back))]
        if last:
            ends.extend(last)
            break
    return max(ends, default=None)


def stored_bars(store: TickStore, symbols: Sequence[str], interval_ms: int, start_ms: int,
                end_ms: int) -> dict[str, pd.DataFrame]:
    """Bars of each symbol at ``interval_ms`` opening in ``[start_ms, end_ms)`` (UTC epoch ms).

    Frames in the layout of :mod:`analytics.bars`; a symbol without data gets an empty frame. The
    last bar may still have been forming at ``end_ms``: callers that want closed bars drop it.
    """
    by_symbol = {}
    for symbol in symbols:
        ticks = store.ticks(symbol, start_ms, end_ms)
        from_ticks = resample_ticks(ticks.ts_ms, ticks.price, ticks.qty, interval_ms)
        by_symbol[symbol] = merge_bars(from_ticks, arrays_to_frame(store.bars(symbol, interval_ms, start_ms, end_ms)))
    return by_symbol
