"""Soak: memory stays bounded after a million ticks and a long session of dashboard refreshes.

Phase 1 (burst): a simulated BTCUSDT/ETHUSDT market (``ingestion.simulated``, seeded) that started
``ticks / trade rate`` seconds ago is pushed through a real :class:`~service.Service` as fast as the
engine takes it: sequencer, last trades, live 1 s bars, writer thread, SQLite, alert monitor. When the simulated
clock reaches the wall clock the same source goes on at live speed (~18 trades/s), like a feed that
caught up.

Phase 2 (refreshes): every ``--refresh-s`` seconds for ``--minutes`` minutes, the code the page runs for
one chart refresh: the service's shared pair view (``pairs.shared``: computed whole, or extended by
the bars that closed since; 24 h lookback by default) → the ``ui.charts`` figures of the Charts tab,
the status panel, the Feed tab's event read and, on 1 min bars, the per-minute table. Timeframes
and regressions rotate (1 s rolling OLS, 1 min Kalman, 5 min Theil–Sen, 1 s Huber) so every cache
and code path is exercised.

RSS (``VmRSS`` of /proc/self/status) is sampled at the start, after 100k ticks (half the burst if it is
smaller), at the end of the burst, after warm-up (the burst drained to disk and one refresh of each kind),
every ``--sample-s`` seconds and at the end. Target: growth after warm-up ≤ 50 MB.

    .venv/bin/python bench/soak.py [--ticks 1000000] [--minutes 30] [--refresh-s 2]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analytics import correlation_matrix, lead_lag, log_returns
from config import Settings
from domain import Regression, Timeframe
from ingestion.simulated import SimulatedSource, symbol_spec
from ingestion.source import SourceStats, TradeSink
from pairs.bars import LOOKBACKS_MS, PairBars
from pairs.compute import PairParams, live_zscore
from records import FeedState, Trade, now_ms
from service import Service
from storage import open_ticks
from testkit.waiting import eventually
from ui import charts
from ui.export import minute_table
from ui.labels import REGRESSION_LABELS

SYMBOLS = ("BTCUSDT", "ETHUSDT")
Y, X = "ETHUSDT", "BTCUSDT"
TARGET_GROWTH_MB = 50.0
# (timeframe, regression) per refresh, in rotation; one of each is the warm-up.
REFRESHES = (("1s", Regression.ROLLING_OLS), ("1m", Regression.KALMAN), ("5m", Regression.THEIL_SEN),
             ("1s", Regression.HUBER))
MAX_LEAD_LAG = 10
FULL_WIDTH_POINTS, HALF_WIDTH_POINTS = 4000, 2000  # as app.py


def rss_mb() -> float:
    """Resident set size of this process, MB (VmRSS from /proc/self/status)."""
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status (Linux only)")


class CatchUpSource:
    """The simulated market from ``span_s`` ago: as fast as possible until it reaches the wall clock,
    then paced live (a trade is emitted when the wall clock reaches its time)."""

    name = "simulated"

    def __init__(self, symbols: tuple[str, ...], span_s: float, seed: int) -> None:
        self.market = SimulatedSource(symbols, seed=seed, start_ms=now_ms() - int(span_s * 1000))
        self.label = f"SOAK {self.market.label}"
        self.stats = SourceStats()
        self.caught_up_after: int | None = None  # trades emitted before the first live wait
        self.symbols = symbols

    def set_symbols(self, symbols: tuple[str, ...]) -> None:
        self.symbols = symbols  # never called: the simulated spec cannot re-subscribe

    def run(self, sink: TradeSink, stop: threading.Event) -> None:
        stats = self.stats
        stats.state = FeedState.CONNECTED
        for trade in self.market.generate():
            ahead_ms = trade.ts_ms - now_ms()
            if ahead_ms > 0:
                if self.caught_up_after is None:
                    self.caught_up_after = stats.messages
                if stop.wait(ahead_ms / 1000):
                    break
            elif stop.is_set():
                break
            sink.on_trade(Trade(trade.symbol, trade.trade_id, trade.ts_ms, now_ms(), trade.price, trade.qty,
                                trade.buyer_is_maker))
            stats.messages += 1
            stats.last_message_mono = time.monotonic()
        stats.state = FeedState.STOPPED


def refresh(service: Service, timeframe: str, regression: Regression, lookback_ms: int) -> int:
    """One chart refresh as the page does it; returns the number of aligned bars."""
    interval_ms = Timeframe.of(timeframe).ms
    engine = service.engine
    params = PairParams(Y, X, 60, regression)
    view = service.shared.view(SYMBOLS, interval_ms, lookback_ms, params, warmup_bars=2 * params.window)
    if view.bars.aligned is None or view.pair is None:
        return 0
    shown = view.shown()
    bars: PairBars = shown.bars
    pair = shown.pair
    aligned, rev = bars.aligned, f"soak|{timeframe}|{regression.value}"
    figures = [charts.price_chart(aligned.closes[[Y, X]], aligned.volumes[[Y, X]], open_bar_start=bars.open_bar_start,
                                  revision=rev, max_points=FULL_WIDTH_POINTS)]
    if pair.spread is not None:
        figures.append(charts.spread_chart(pair.spread, pair.spread_mean, pair.spread_std, k=2.0, window=60,
                                           revision=rev, max_points=HALF_WIDTH_POINTS))
    if pair.zscore is not None:
        figures.append(charts.zscore_chart(pair.zscore, threshold=2.0, window=60, revision=rev,
                                           max_points=HALF_WIDTH_POINTS))
    if pair.beta is not None:
        figures.append(charts.hedge_ratio_chart(pair.beta, method_label=REGRESSION_LABELS[regression], revision=rev,
                                                max_points=HALF_WIDTH_POINTS))
    if pair.correlation is not None:
        figures.append(charts.correlation_chart(pair.correlation, window=60, revision=rev,
                                                max_points=HALF_WIDTH_POINTS))
    if len(aligned.closes) >= 4:
        returns = log_returns(aligned.closes)
        figures.append(charts.correlation_heatmap(correlation_matrix(returns), revision=rev))
        max_lag = min(MAX_LEAD_LAG, len(returns) // 4)
        if max_lag >= 1:
            ll = lead_lag(returns[Y], returns[X], max_lag)
            figures.append(charts.lead_lag_chart(ll.lags, ll.correlations, best_lag=ll.best_lag,
                                                 bar_seconds=interval_ms / 1000, y_name=Y, x_name=X, revision=rev))
    for fig in figures:
        fig.to_plotly_json()  # what st.plotly_chart serialises
    if interval_ms == 60_000:
        minute_table(bars, pair)
    # Live panel and Feed tab.
    service.status()
    last_y, last_x = engine.last_trade(Y), engine.last_trade(X)
    if pair.spread is not None and last_y is not None and last_x is not None:
        latest = pair.latest
        spreads = pair.spread.dropna().to_numpy()[-59:]
        if math.isfinite(latest["beta"]):
            live_zscore(spreads, last_y.price - latest["beta"] * last_x.price - latest["alpha"])
    with open_ticks(service.site) as store:
        store.feed_events(limit=200)
    return len(aligned.index)


@dataclass
class Sample:
    label: str
    elapsed_s: float
    ticks: int
    stored: int
    backlog: int
    rss_mb: float
    refreshes: int
    refresh_ms: float | None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=1_000_000, help="ticks in the burst (at least)")
    parser.add_argument("--minutes", type=float, default=30.0, help="minutes of refreshes after the burst")
    parser.add_argument("--refresh-s", type=float, default=2.0, help="seconds between refreshes (page: 2 s)")
    parser.add_argument("--sample-s", type=float, default=None,
                        help="seconds between RSS samples (default: 60, or 300 for runs over 10 minutes)")
    parser.add_argument("--lookback", choices=list(LOOKBACKS_MS), default="24 h")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    sample_s = args.sample_s or (300.0 if args.minutes > 10 else 60.0)
    rate = sum(symbol_spec(s).rate_per_s for s in SYMBOLS)  # simulated trades per market second
    span_s = args.ticks / rate * 1.02  # Poisson counts: 2 % margin is ~20 standard deviations at 1 M

    t0 = time.monotonic()
    samples: list[Sample] = []
    refresh_times: list[float] = []

    with tempfile.TemporaryDirectory(prefix="quant-soak-") as tmp:
        db = Path(tmp) / "soak.sqlite3"
        settings = Settings.of(source="simulated", symbols=SYMBOLS, db=db)
        source = CatchUpSource(SYMBOLS, span_s, args.seed)
        peak_backlog = 0

        samples.append(Sample("start", time.monotonic() - t0, 0, 0, 0, rss_mb(), 0, None))
        print(f"burst: {args.ticks:,} ticks = {span_s / 3600:.1f} h of simulated market at {rate:g} trades/s ...",
              flush=True)
        service = Service.start(settings, source=source)  # the source starts emitting at once
        burst_started = time.monotonic()
        engine, writer = service.engine, service.writer
        assert writer is not None  # this process writes the database

        def sample(label: str) -> None:
            recent = refresh_times[-30:]
            samples.append(Sample(label, time.monotonic() - t0, engine.trades, writer.committed_trades,
                                  writer.backlog, rss_mb(), len(refresh_times),
                                  statistics.median(recent) * 1000 if recent else None))

        def watch_backlog(predicate) -> bool:
            nonlocal peak_backlog
            peak_backlog = max(peak_backlog, writer.backlog)
            return predicate()

        early = min(100_000, args.ticks // 2)  # a smoke run with fewer ticks must not wait for 100k at live pace
        eventually(lambda: watch_backlog(lambda: engine.trades >= early), timeout=600, interval=0.05)
        sample(f"{early / 1000:g}k ticks")
        eventually(lambda: watch_backlog(lambda: source.caught_up_after is not None), timeout=3600, interval=0.05)
        burst_ticks, burst_s = source.caught_up_after, time.monotonic() - burst_started
        sample("burst done")
        eventually(lambda: watch_backlog(lambda: writer.committed_trades >= burst_ticks), timeout=3600,
                   interval=0.05)
        drained_s = time.monotonic() - burst_started
        with open_ticks(service.site) as store:
            stored_rows = store.tick_count()

        lookback_ms = LOOKBACKS_MS[args.lookback]
        end_at = time.monotonic() + args.minutes * 60
        next_sample: float | None = None
        warm_at = 0.0
        pause = threading.Event()  # never set: its wait() paces the refresh schedule
        aligned_bars = 0
        for k in range(10**7):  # bounded by the deadline below
            now = time.monotonic()
            if now >= end_at and k >= len(REFRESHES):
                break
            timeframe, regression = REFRESHES[k % len(REFRESHES)]
            started = time.perf_counter()
            aligned_bars = max(aligned_bars, refresh(service, timeframe, regression, lookback_ms))
            refresh_times.append(time.perf_counter() - started)
            if k == len(REFRESHES) - 1:
                sample("warm-up")
                warm_at = time.monotonic()
                next_sample = warm_at + sample_s
            elif next_sample is not None and time.monotonic() >= next_sample:
                offset = next_sample - warm_at
                sample(f"+{offset / 60:.0f} min" if sample_s >= 60 else f"+{offset:.0f} s")
                next_sample += sample_s
            pause.wait(max(0.0, started - time.perf_counter() + args.refresh_s))
        sample("end")
        assert service.stop(), "service did not stop in time"

    warm = next(s for s in samples if s.label == "warm-up")
    after = [s for s in samples if s.elapsed_s >= warm.elapsed_s]
    growth = samples[-1].rss_mb - warm.rss_mb
    peak_growth = max(s.rss_mb for s in after) - warm.rss_mb

    print(f"burst: {burst_ticks:,} ticks in {burst_s:.1f} s ({burst_ticks / burst_s:,.0f} ticks/s through the "
          f"engine), {stored_rows:,} rows committed after {drained_s:.1f} s; peak writer backlog "
          f"{peak_backlog:,}")
    print(f"refreshes: {len(refresh_times)} over {args.minutes:g} min ({args.lookback} lookback, up to "
          f"{aligned_bars:,} aligned bars); median {statistics.median(refresh_times) * 1000:,.0f} ms, "
          f"max {max(refresh_times) * 1000:,.0f} ms; shared views computed whole {service.shared.computed:,}, "
          f"extended {service.shared.extended:,}")
    print()
    print(f"{'sample':<12}{'t (s)':>8}{'ticks':>11}{'stored':>11}{'backlog':>9}{'RSS MB':>9}{'Δ warm':>8}"
          f"{'refr.':>7}{'ms/refr':>9}")
    for s in samples:
        delta = f"{s.rss_mb - warm.rss_mb:+.1f}" if s.elapsed_s >= warm.elapsed_s else ""
        ms = f"{s.refresh_ms:,.0f}" if s.refresh_ms is not None else ""
        print(f"{s.label:<12}{s.elapsed_s:>8.0f}{s.ticks:>11,}{s.stored:>11,}{s.backlog:>9,}{s.rss_mb:>9.1f}"
              f"{delta:>8}{s.refreshes:>7}{ms:>9}")
    verdict = "PASS" if growth <= TARGET_GROWTH_MB and peak_growth <= TARGET_GROWTH_MB else "FAIL"
    print()
    print(f"RSS growth after warm-up: {growth:+.1f} MB at the end, {peak_growth:+.1f} MB at the peak "
          f"(target ≤ {TARGET_GROWTH_MB:.0f} MB): {verdict}")
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
