"""Streamlit dashboard, the composition root: read controls, fetch bars, call analytics, draw.

Run with ``streamlit run app.py`` (see README). Feeds are process-wide: one
:class:`~service.ServiceRegistry` per server runs at most one service per database, shared by
every browser session; sessions only read from them and never stop one another's feed.
"""

from __future__ import annotations

import atexit
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import streamlit as st

from analytics import correlation_matrix, lead_lag, log_returns
from config import ConfigError, Settings, from_env
from pairs.bars import PairBars, dataset_pair_bars, load_pair_bars
from pairs.compute import PairAnalytics, PairParams, compute_pair, live_zscore, pair_spread_now
from service import Service, ServiceRegistry, TooManyFeeds
from storage import Site, StorageError, open_ticks
from ui import charts
from ui.alerts_panel import recent_alerts, render_alerts_tab, render_banners, zscore_markers
from ui.backtest_panel import render_backtest_tab
from ui.controls import (
    SOURCE_LABELS,
    TIMEFRAME_NAMES,
    UPLOADED,
    Controls,
    analysis_controls,
    source_controls,
    symbol_controls,
)
from ui.export import minute_table
from ui.panels import fmt, render_downloads, render_needs, render_pair_stats, render_symbol_summaries, render_tests
from ui.scanner import render_scanner_tab
from ui.status import feed_is_failing, format_age, render_history_progress, render_status, render_storage_problem
from ui.upload import dataset_controls, dataset_timeframes, list_datasets, load_dataset_frames, render_upload

# Heavy charts refresh at a pace that suits the bar length; the live panel every 0.5 s.
CHART_REFRESH_S = {1_000: 2.0, 60_000: 10.0, 300_000: 30.0}
LIVE_REFRESH_S = 0.5
MAX_LEAD_LAG = 10
# Points per trace: the price chart spans the page; the others half of it (~700 px, M4 keeps ~4 per px).
FULL_WIDTH_POINTS, HALF_WIDTH_POINTS = 4000, 2000


log = logging.getLogger("app")


@st.cache_resource(show_spinner=False, on_release=lambda registry: registry.stop_all())
def get_registry(max_services: int) -> ServiceRegistry:
    """The feeds of this server process, shared by every browser session."""
    registry = ServiceRegistry(max_services)
    # cache_resource does not promise on_release at interpreter exit; the final flush must not depend on it.
    atexit.register(registry.stop_all)
    return registry


def session_id() -> str:
    """A random id for this browser session (kept in its session state)."""
    return st.session_state.setdefault("session_id", uuid.uuid4().hex)


def acquire_service(base: Settings, settings: Settings) -> Service | None:
    """This session's service for ``settings`` (started or shared), or None after showing why not."""
    try:
        return get_registry(base.max_engines).acquire(session_id(), settings, pin=settings.source == base.source)
    except (TooManyFeeds, ConfigError, ValueError, OSError, StorageError) as exc:
        st.error(f"Cannot start the {SOURCE_LABELS.get(settings.source, settings.source)} feed: {exc}")
    except Exception:  # the browser sees a plain message; the server log keeps the traceback
        log.exception("starting the %s feed failed", settings.source)
        st.error(f"Cannot start the {SOURCE_LABELS.get(settings.source, settings.source)} feed: "
                 "an internal error (details in the server log).")
    return None


@dataclass(frozen=True, slots=True)
class LiveContext:
    """What the 0.5 s live panel needs from the last full computation to update the z-score."""

    key: str
    beta: float
    alpha: float
    recent_spreads: np.ndarray  # the last window-1 closed-bar spreads
    log_prices: bool


def live_context(pair: PairAnalytics, bars: PairBars, key: str) -> LiveContext | None:
    """β, α and the last window−1 closed spreads, or None when the last closed bar has no hedge
    (a flat window, warm-up) or those spreads are not all defined: then there is no live z either."""
    if pair.spread is None or pair.beta is None or pair.alpha is None:
        return None
    closed = pair.spread.index != bars.open_bar_start
    beta, alpha = pair.beta[closed], pair.alpha[closed]
    if not len(beta) or not (np.isfinite(beta.iloc[-1]) and np.isfinite(alpha.iloc[-1])):
        return None
    recent = pair.spread[closed].to_numpy()[-(pair.params.window - 1):]
    if len(recent) < pair.params.window - 1 or not np.all(np.isfinite(recent)):
        return None
    return LiveContext(key, float(beta.iloc[-1]), float(alpha.iloc[-1]), recent, pair.params.log_prices)


def render_live_panel(acquire: Callable[[], Service | None], controls: Controls) -> None:
    """Last prices, hedge ratio, spread, live z-score and feed health; refreshed every 0.5 s."""
    if st.session_state.get("source") != controls.source:
        st.rerun()  # the source was switched from inside this fragment; redraw the whole page
    service = acquire()  # every run: never draw from a feed that has been stopped
    if service is None:
        return
    engine = service.engine
    status = service.status()
    if not service.spec.capabilities.live:
        st.info(f"Showing {status.label} data: not live market prices.", icon="🧪")
    elif feed_is_failing(status):
        st.error(f"{SOURCE_LABELS[controls.source]} is unreachable: {status.last_error}", icon="🚫")
        # A callback may set a widget's state; assigning it after the widget is drawn may not.
        st.button("Switch to the simulated market", key="switch_to_simulated",
                  on_click=st.session_state.update, kwargs={"source": "simulated"})
    render_storage_problem(status)
    render_history_progress(service.history_progress)
    render_banners(recent_alerts(service.site, limit=20), controls.tz)
    y_trade, x_trade = engine.last_trade(controls.y), engine.last_trade(controls.x)
    context = st.session_state.get("live_ctx")
    spread_now = z_now = float("nan")
    if context is not None and context.key == controls.revision and y_trade and x_trade:
        spread_now = pair_spread_now(y_trade.price, x_trade.price, context.beta, context.alpha, context.log_prices)
        z_now = live_zscore(context.recent_spreads, spread_now)
    y_col, x_col, beta_col, spread_col, z_col = st.columns(5)
    y_col.metric(f"{controls.y} last", fmt(y_trade.price if y_trade else None, 2))
    x_col.metric(f"{controls.x} last", fmt(x_trade.price if x_trade else None, 2))
    beta_col.metric("Hedge ratio β", fmt(context.beta if context else None, 5))
    spread_col.metric("Spread", fmt(spread_now, 4))
    z_col.metric("Z-score", fmt(z_now, 2),
                 help=f"Open bar vs the last {controls.window} bars; |z| > {controls.z_threshold} is stretched")
    st.caption(f"Feed **{status.state.value}** · {status.ticks_per_s:.1f} ticks/s · last tick "
               f"{format_age(status.last_tick_age_s)} ago · reconnects {status.reconnects} · gaps {status.gaps} "
               f"· {status.label}")


def render_charts(bars: PairBars, pair: PairAnalytics, controls: Controls, alert_marks: pd.DataFrame | None) -> None:
    aligned, p, rev, tz = bars.aligned, pair.params, controls.revision, controls.tz
    config = charts.FIGURE_CONFIG
    legs = [p.y, p.x]
    st.plotly_chart(charts.price_chart(aligned.closes[legs], aligned.volumes[legs], mode=controls.price_mode,
                                       open_bar_start=bars.open_bar_start, tz=tz, revision=rev,
                                       max_points=FULL_WIDTH_POINTS),
                    key="chart_prices", config=config)
    left, right = st.columns(2)
    if pair.spread is not None:
        left.plotly_chart(charts.spread_chart(pair.spread, pair.spread_mean, pair.spread_std, k=p.z_threshold,
                                              window=p.window, unit="log price" if p.log_prices else "quote currency",
                                              tz=tz, revision=rev, max_points=HALF_WIDTH_POINTS),
                          key="chart_spread", config=config)
    if pair.zscore is not None:
        right.plotly_chart(charts.zscore_chart(pair.zscore, threshold=p.z_threshold, window=p.window, tz=tz,
                                               alerts=alert_marks, revision=rev, max_points=HALF_WIDTH_POINTS),
                           key="chart_zscore", config=config)
    if pair.beta is not None:
        left.plotly_chart(charts.hedge_ratio_chart(pair.beta, method_label=p.regression, tz=tz, revision=rev,
                                                   max_points=HALF_WIDTH_POINTS), key="chart_beta", config=config)
    if pair.correlation is not None:
        right.plotly_chart(charts.correlation_chart(pair.correlation, window=p.window, tz=tz, revision=rev,
                                                    max_points=HALF_WIDTH_POINTS), key="chart_corr", config=config)
    if len(aligned.closes) < 4:  # a correlation needs a few returns
        return
    returns = log_returns(aligned.closes)
    # A quiet symbol's first bars carry one close forward: no correlation yet, a blank row and column.
    moving = returns.columns[(returns.max() > returns.min()).to_numpy()]
    if len(returns) >= 3 and len(moving):
        matrix = correlation_matrix(returns[moving]).reindex(index=returns.columns, columns=returns.columns)
        left.plotly_chart(charts.correlation_heatmap(matrix, revision=rev), key="chart_heatmap", config=config)
        max_lag = min(MAX_LEAD_LAG, len(returns) // 4)
        if max_lag >= 1 and {p.y, p.x} <= set(moving):
            ll = lead_lag(returns[p.y], returns[p.x], max_lag)
            right.plotly_chart(charts.lead_lag_chart(ll.lags, ll.correlations, best_lag=ll.best_lag,
                                                     bar_seconds=bars.interval_ms / 1000, y_name=p.y, x_name=p.x,
                                                     revision=rev), key="chart_leadlag", config=config)


def render_feed_tab(service: Service, tz: str) -> None:
    render_status(service.status())
    if not service.site.exists():
        return
    with open_ticks(service.site) as store:
        events = store.feed_events(limit=200)
    if events:
        frame = pd.DataFrame([{"time": pd.Timestamp(e.ts_ms, unit="ms", tz="UTC").tz_convert(tz), "kind": e.kind.value,
                               "symbol": e.symbol or "", "detail": e.detail} for e in events])
        st.dataframe(frame, hide_index=True, width="stretch", height=300)


# (symbols, interval_ms, warm-up bars) → bars: live engine + history, or uploaded datasets.
BarsProvider = Callable[[tuple[str, ...], int, int], PairBars]
# Bars before the lookback that rolling analytics need: a window for β, another for its z-score.
WARMUP_WINDOWS = 2
# Called once per fragment run: the bars provider and the feed's service (None for datasets), or
# None when the feed cannot run (the reason is already on the page).
DataSource = Callable[[], tuple[BarsProvider, Service | None] | None]


def render_analytics(data: DataSource, controls: Controls) -> None:
    """Bars → pair analytics → charts, stats, table and exports (one fragment run)."""
    current = data()
    if current is None:
        return
    provider, service = current
    loaded = provider(controls.symbols, controls.interval_ms, WARMUP_WINDOWS * controls.window)
    if loaded.aligned is None:
        waiting = [s for s, frame in loaded.by_symbol.items() if frame.empty]
        st.info(f"Waiting for the first trades of {', '.join(waiting)}.", icon="⏳")
        return
    params = PairParams(controls.y, controls.x, controls.window, controls.regression, controls.log_prices,
                        controls.z_threshold)
    closes = loaded.closes(min_trades=controls.min_trades, min_volume=controls.min_volume)
    # Computed over the warm-up too, shown over the lookback: every analytic defined from its first bar.
    bars = loaded.since(loaded.shown_from)
    if controls.min_trades or controls.min_volume:
        st.caption(f"Liquidity filter: {bars.illiquid_bars(controls.min_trades, controls.min_volume):,} of "
                   f"{len(bars.aligned.index):,} bars left out.")
    full_pair = compute_pair(closes, params)
    pair = full_pair.since(loaded.shown_from)
    st.session_state["live_ctx"] = live_context(full_pair, loaded, controls.revision)
    render_needs(pair, bars.interval_ms)
    site: Site | None = None if service is None else service.site
    # A keyed tab bar keeps its selection across refreshes; "rerun" makes only the open tab's content run.
    charts_tab, stats_tab, table_tab, scanner_tab, alerts_tab, backtest_tab, feed_tab = st.tabs(
        ["Charts", "Stats & tests", "Table & export", "Scanner", "Alerts", "Backtest", "Feed"], key="view_tab",
        on_change="rerun")
    if charts_tab.open:
        with charts_tab:
            marks = None if site is None else zscore_markers(recent_alerts(site), f"{params.y}/{params.x}")
            render_charts(bars, pair, controls, marks)
    if stats_tab.open:
        with stats_tab:
            render_symbol_summaries(bars, controls.tz)
            render_pair_stats(pair, bars.interval_ms)
            render_tests(pair, exclude_last=bars.open_bar_start is not None, key=f"{controls.revision}|{params}")
    if table_tab.open:
        with table_tab:
            render_table_tab(provider, controls, bars, pair)
    if scanner_tab.open:
        with scanner_tab:
            render_scanner_tab(bars, controls)
    if alerts_tab.open:
        with alerts_tab:
            if site is None:
                st.caption("Alerts are evaluated by the service of a live, simulated or replayed feed.")
            else:
                render_alerts_tab(site, (params.y, params.x), controls.interval_ms, params.window, controls.tz)
    if backtest_tab.open:
        with backtest_tab:
            render_backtest_tab(bars.closes(closed_only=True, min_trades=controls.min_trades,
                                            min_volume=controls.min_volume), params.y, params.x, params.window,
                                params.z_threshold, bars.interval_ms, controls.tz, controls.revision)
    if feed_tab.open:
        with feed_tab:
            if service is None:
                st.caption("Uploaded datasets have no feed.")
            else:
                render_feed_tab(service, controls.tz)


def render_table_tab(provider: BarsProvider, controls: Controls, bars: PairBars, pair: PairAnalytics) -> None:
    """Per-minute table (computed on 1 min bars whatever the chart timeframe) and CSV downloads."""
    if controls.interval_ms == 60_000:
        minute_bars, minute_pair = bars, pair
    else:
        loaded = provider((controls.y, controls.x), 60_000, WARMUP_WINDOWS * controls.window)
        if loaded.aligned is None:
            return
        minute_bars = loaded.since(loaded.shown_from)
        minute_pair = compute_pair(loaded.aligned.closes, pair.params).since(loaded.shown_from)
    render_downloads(bars, pair, minute_table(minute_bars, minute_pair), controls.tz,
                     f"{controls.y}-{controls.x}-{controls.timeframe}")


def dataset_page(base: Settings) -> None:
    """Two uploaded OHLC datasets analysed as a pair (no live feed)."""
    picked = dataset_controls(list_datasets(base))
    if picked is None:
        st.stop()
    y, x = picked
    controls = analysis_controls(UPLOADED, None, (y.name, x.name), pair=(y.name, x.name),
                                 timeframes=dataset_timeframes(y, x))
    if max(y.first_ms, x.first_ms) > min(y.last_ms, x.last_ms):
        span = "{0.name}: {1:%Y-%m-%d %H:%M} → {2:%Y-%m-%d %H:%M} UTC"
        st.error("These datasets do not overlap in time, so they cannot be paired. " + "; ".join(
            span.format(d, pd.Timestamp(d.first_ms, unit="ms"), pd.Timestamp(d.last_ms, unit="ms")) for d in (y, x)))
        st.stop()
    frames = load_dataset_frames(base, y, x)
    st.title(f"{y.name} / {x.name} · {TIMEFRAME_NAMES[controls.timeframe]} bars")
    st.info("Uploaded historical datasets: not live market data.", icon="📁")
    def provider(symbols: tuple[str, ...], interval_ms: int, _warmup_bars: int) -> PairBars:
        return dataset_pair_bars({s: frames[s] for s in symbols}, interval_ms)  # shown whole

    render_analytics(lambda: (provider, None), controls)


def main() -> None:
    st.set_page_config(page_title="Pair-trading analytics", layout="wide")
    try:
        base = from_env()
    except ConfigError as exc:
        st.error(f"Invalid configuration: {exc}")
        st.stop()
    chosen = source_controls(base)
    render_upload(base)
    if chosen is not None and chosen[0] == UPLOADED:
        dataset_page(base)
        return
    symbols = symbol_controls(base.symbols)
    if chosen is None or symbols is None:
        st.stop()
    source, replay_file = chosen
    controls = analysis_controls(source, replay_file, symbols)
    # The pair for headless alert flags is irrelevant here; the sidebar chooses the pair.
    settings = base.replace(source=source, replay_file=replay_file, symbols=symbols, pair=None)
    if acquire_service(base, settings) is None:
        st.stop()

    def acquire() -> Service | None:
        return acquire_service(base, settings)

    def live_data() -> tuple[BarsProvider, Service | None] | None:
        current = acquire()  # every run: never draw from a feed that has been stopped
        if current is None:
            return None

        def provider(symbols: tuple[str, ...], interval_ms: int, warmup_bars: int) -> PairBars:
            return load_pair_bars(current.engine, current.history, symbols, interval_ms, controls.lookback_ms,
                                  warmup_bars)

        return provider, current

    st.title(f"{controls.y} / {controls.x} · {TIMEFRAME_NAMES[controls.timeframe]} bars")
    st.fragment(run_every=LIVE_REFRESH_S if controls.auto_refresh else None)(render_live_panel)(acquire, controls)
    chart_every = CHART_REFRESH_S[controls.interval_ms] if controls.auto_refresh else None
    st.fragment(run_every=chart_every)(render_analytics)(live_data, controls)


# Streamlit runs this file as __main__; importing it (benchmarks) only defines the functions.
if __name__ == "__main__":
    main()
