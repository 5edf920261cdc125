"""A page watching 200 symbols: the pair aligned on its own legs, the universe's bars (heatmap,
summaries, scanner) built once per step for every tab, the heatmap readable, the limit honest."""

from __future__ import annotations

import threading

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from analytics import clustered_order, correlation_matrix, log_returns
from config import Settings
from domain import Regression
from pairs.bars import LOOKBACKS_MS, dataset_pair_bars
from pairs.compute import PairParams, compute_pair
from pairs.universe import UniverseBars, UniverseCorrelation, UniverseView, _Key
from records import Trade, now_ms
from service import MAX_SYMBOLS, Service, ServiceRegistry
from testkit.sources import ListSource
from testkit.waiting import eventually
from ui.charts import HEATMAP_TEXT_MAX
from ui.charts_tab import HEATMAP_TOP_N, HeatmapChoice, chart_data, heatmap_matrix
from ui.controls import Controls, pair_params, view_query
from ui.live_chart import SHARED_ENTRIES, SharedBuilds, chart_update, whole_figure

SYMBOLS = tuple(f"S{i:03d}USDT" for i in range(200))
Y, X = SYMBOLS[1], SYMBOLS[0]
SECONDS = 150
LOOKBACK = "15 min"  # longer than the data: every view shows all of it


def _clustered_closes(n: int, symbols: tuple[str, ...], clusters: int, seed: int) -> np.ndarray:
    """Prices (n, k): ``clusters`` groups of symbols, each moving with its own common factor."""
    rng = np.random.default_rng(seed)
    factors = rng.normal(0, 1e-3, (n, clusters))
    noise = rng.normal(0, 4e-4, (n, len(symbols)))
    returns = factors[:, np.arange(len(symbols)) % clusters] + noise
    return 100 * np.exp(np.cumsum(returns, axis=0))


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    """A feed of 200 symbols that each traded once a second for 150 s (ending 10 s ago), then idles:
    every symbol trades in every bar, so any alignment of any of them has the same grid."""
    start = (now_ms() - (SECONDS + 10) * 1_000) // 1_000 * 1_000
    closes = _clustered_closes(SECONDS, SYMBOLS, 4, seed=11)
    trades = [Trade(symbol, i + 1, start + i * 1_000 + j, 0, float(closes[i, j]), 0.1, False)
              for i in range(SECONDS) for j, symbol in enumerate(SYMBOLS)]
    svc = Service.start(Settings.of(source="binance", data_dir=tmp_path_factory.mktemp("universe"), history_hours=0,
                                    backfill_max_trades=0, symbols=",".join(SYMBOLS)),
                        source=ListSource(trades))
    eventually(lambda: svc.engine.trades == len(trades), timeout=60)
    yield svc
    svc.stop()


def _controls(symbols: tuple[str, ...] = SYMBOLS) -> Controls:
    return Controls("binance", None, symbols, Y, X, "1s", LOOKBACK, 20, Regression.ROLLING_OLS, False, 2.0,
                    "normalised", False, "UTC")


def test_the_page_asks_for_its_pair_alone_so_its_numbers_are_every_readers_of_that_pair():
    """Was: the page aligned the pair on every watched symbol's bars, so its z-score depended on what
    else the tab watched (and differed from the alert monitor's, which aligns the two legs)."""
    assert view_query(_controls()).symbols == (Y, X)
    assert view_query(_controls()) == view_query(_controls((X, Y, "S150USDT")))


def test_the_page_shows_the_same_numbers_as_when_it_aligned_all_200_symbols(service):
    """Before/after on 200 symbols: the pair's analytics, the heatmap's correlations and the
    per-symbol summaries equal those of the one view of all 200 symbols the page computed before."""
    controls = _controls()
    params = pair_params(controls)
    lookback_ms = LOOKBACKS_MS[LOOKBACK]
    before = service.shared.view(SYMBOLS, 1_000, lookback_ms, params, warmup_bars=params.warmup_bars).shown()
    after = service.shared.ask(view_query(controls)).shown()
    assert list(after.bars.aligned.closes.columns) == [Y, X]  # two legs aligned, not 200
    assert len(before.pair.index) >= SECONDS - 2
    for name in ("y", "x", "beta", "alpha", "spread", "spread_mean", "spread_std", "zscore", "correlation"):
        pd.testing.assert_series_equal(getattr(after.pair, name), getattr(before.pair, name), check_names=False)

    universe = service.universe.closed(SYMBOLS, 1_000, lookback_ms, wait=True)
    end = universe.aligned.index[-1]
    assert end <= before.bars.aligned.index[-1]  # at most a step (a minute) behind: here the feed went quiet
    cut = before.bars.since(universe.aligned.index[0], end + pd.Timedelta(seconds=1))
    assert len(universe.aligned.index) >= 60
    pd.testing.assert_frame_equal(universe.aligned.closes, cut.aligned.closes)
    pd.testing.assert_frame_equal(universe.aligned.filled, cut.aligned.filled)
    pd.testing.assert_frame_equal(correlation_matrix(log_returns(universe.closes(closed_only=True))),
                                  correlation_matrix(log_returns(cut.closes(closed_only=True))))
    for symbol in SYMBOLS:  # what the summaries and the scanner read
        pd.testing.assert_frame_equal(universe.by_symbol[symbol], cut.by_symbol[symbol])


def test_the_universe_is_built_once_a_step_and_a_new_step_in_the_background(service, monkeypatch):
    universe = UniverseBars(service.engine, service.history)
    # Two step boundaries inside the fixture's 150 s of bars.
    first_end = (service.engine.bars.first_start_ms(X) + 30_000) // 60_000 * 60_000 + 60_000
    end = [first_end]
    monkeypatch.setattr(universe, "_key", lambda symbols, interval_ms, lookback_ms: _Key(
        tuple(symbols), interval_ms, lookback_ms, end[0], 0))
    gate, entered = threading.Event(), threading.Event()
    build = universe._build

    def gated(key: _Key):
        if key.end_ms != first_end:
            entered.set()
            assert gate.wait(30)
        return build(key)

    monkeypatch.setattr(universe, "_build", gated)
    asks = [universe.closed(SYMBOLS, 1_000, 900_000) for _ in range(3)]
    assert universe.built == 1 and all(bars is asks[0] for bars in asks)
    assert asks[0].aligned.index[-1] < pd.Timestamp(first_end, unit="ms", tz="UTC")

    end[0] = first_end + 60_000  # a minute of bars closed since
    held = [universe.closed(SYMBOLS, 1_000, 900_000) for _ in range(3)]  # nobody waits for the build
    assert all(bars is asks[0] for bars in held)
    assert entered.wait(30)
    assert universe.built == 1  # one build in flight however many asked
    gate.set()
    universe.join()
    newer = universe.closed(SYMBOLS, 1_000, 900_000)
    assert universe.built == 2 and newer is not asks[0]
    assert newer.aligned.index[-1] == pd.Timestamp(first_end + 59_000, unit="ms", tz="UTC")
    # A tab on another lookback is another series: built for it, the first one kept.
    universe.closed(SYMBOLS, 1_000, 600_000)
    assert universe.built == 3 and universe.closed(SYMBOLS, 1_000, 900_000) is newer


def test_bars_held_from_steps_ago_are_built_anew_never_handed_out_as_current(service, monkeypatch):
    """Was: the held bars were handed out however old (a Stats tab opened at 9:00, the Scanner at
    11:00 scanned 9:00's bars, and CI once scanned 6 bars of a 1 h lookback): only the step before
    the current one may stand in while the current one builds in the background."""
    universe = UniverseBars(service.engine, service.history)
    first_end = (service.engine.bars.first_start_ms(X) + 30_000) // 60_000 * 60_000 + 60_000
    end = [first_end]
    monkeypatch.setattr(universe, "_key", lambda symbols, interval_ms, lookback_ms: _Key(
        tuple(symbols), interval_ms, lookback_ms, end[0], 0))
    old = universe.closed(SYMBOLS, 1_000, 900_000)
    end[0] = first_end + 2 * 60_000  # two steps later, nobody asked meanwhile
    current = universe.closed(SYMBOLS, 1_000, 900_000)
    assert current is not old and universe.built == 2
    assert current.aligned.index[-1] > old.aligned.index[-1] and not universe._building  # built here, not behind
    assert universe.closed(SYMBOLS, 1_000, 900_000) is current and universe.built == 2


def test_the_heatmap_is_redrawn_when_stored_history_changes_the_universe_at_the_same_step(service, monkeypatch):
    """Was: the heatmap's content (what a redraw and the builds shared by every session are keyed on)
    was the last return's bar, the symbols and the choice. History arriving within a step rebuilds the
    universe at the same last bar: every page kept the heatmap of the bars before it (on a quiet feed
    for good), while Stats & tests showed the new bars' summaries."""
    import pairs.universe as module

    universe = UniverseBars(service.engine, service.history)
    end = (service.engine.bars.first_start_ms(X) + 130_000) // 60_000 * 60_000
    version = [0]
    monkeypatch.setattr(universe, "_key", lambda symbols, interval_ms, lookback_ms: _Key(
        tuple(symbols), interval_ms, lookback_ms, end, version[0]))
    load = module.load_pair_span

    def before_history_arrives(*args, **kwargs):
        bars, since = load(*args, **kwargs)  # only the last 40 s of them until "history" (version 1) arrives
        return (bars, since) if version[0] else (bars.since(bars.aligned.index[-40]), since)

    monkeypatch.setattr(module, "load_pair_span", before_history_arrives)
    controls = _controls()
    view = service.shared.ask(view_query(controls)).shown()
    builds, scope = SharedBuilds(SHARED_ENTRIES), ("site", 1)
    revision = "the page's revision"  # the pair's: unchanged from here on

    def heatmap(shown: UniverseView):
        return next(c for _, c in chart_data(view.bars, view.pair, controls, None, shown) if c.key == "chart_heatmap")

    def z(figure) -> np.ndarray:
        return np.asarray(figure.data[0].z, dtype=float)

    before = universe.view(SYMBOLS, 1_000, 900_000)
    first = heatmap(before)
    first_figure = whole_figure(first, revision=revision, shown_from=view.bars.shown_from, tz="UTC", builds=builds,
                                scope=scope)
    _, sent = chart_update(first, None, revision=revision, shown_from=view.bars.shown_from, tz="UTC", run=1,
                           scope=scope, builds=builds)
    version[0] = 1  # stored history arrived: the held view stands in while the step is built again
    assert universe.view(SYMBOLS, 1_000, 900_000) is before
    universe.join()
    after = universe.view(SYMBOLS, 1_000, 900_000)
    assert after is not before and after.correlation().last == before.correlation().last
    assert not np.allclose(after.correlation().matrix.to_numpy(), before.correlation().matrix.to_numpy())
    second = heatmap(after)
    figure = whole_figure(second, revision=revision, shown_from=view.bars.shown_from, tz="UTC", builds=builds,
                          scope=scope)
    np.testing.assert_array_equal(z(figure), z(second.figure()))
    assert not np.array_equal(z(figure), z(first_figure))
    payload, _ = chart_update(second, sent, revision=revision, shown_from=view.bars.shown_from, tz="UTC", run=2,
                              scope=scope, builds=builds)
    assert "full" in payload  # the browser is sent the new heatmap
    # Every later run and session of the step shares that build, and a browser holding it gets nothing new.
    assert whole_figure(heatmap(after), revision=revision, shown_from=view.bars.shown_from, tz="UTC",
                        builds=builds, scope=scope) is figure


def test_more_symbols_than_a_page_carries_are_refused_with_the_limit_named(tmp_path):
    class Started(Exception):
        pass

    def start(settings: Settings) -> Service:
        raise Started(len(settings.feed.symbols))

    registry = ServiceRegistry(1, start=start)
    many = tuple(f"W{i:03d}USDT" for i in range(MAX_SYMBOLS + 1))
    assert MAX_SYMBOLS >= 200
    with pytest.raises(ValueError, match=rf"at most {MAX_SYMBOLS} watched symbols on one page, got {MAX_SYMBOLS + 1}"):
        registry.acquire("s1", Settings.of(source="simulated", data_dir=tmp_path, symbols=",".join(many)))
    with pytest.raises(Started, match=str(MAX_SYMBOLS)):  # 200 pass the check and start
        registry.acquire("s1", Settings.of(source="simulated", data_dir=tmp_path, symbols=",".join(many[:-1])))


def _heatmap_labels(universe_size: int, choice: HeatmapChoice | None = None) -> tuple[list[str], object]:
    (trace,) = _heatmap(universe_size, choice).data
    return list(trace.x), trace


def _heatmap(universe_size: int, choice: HeatmapChoice | None = None, tz: str = "UTC"):
    symbols = tuple(f"H{i:03d}USDT" for i in range(universe_size))
    closes = _clustered_closes(240, symbols, 5, seed=4)
    index = pd.date_range("2025-01-01", periods=240, freq="1min", tz="UTC")
    frames = {s: pd.DataFrame({"open": closes[:, j], "high": closes[:, j], "low": closes[:, j],
                               "close": closes[:, j], "volume": 1.0}, index=index) for j, s in enumerate(symbols)}
    universe = UniverseView(dataset_pair_bars(frames, 60_000))
    bars = dataset_pair_bars({s: frames[s] for s in symbols[:2]}, 60_000)
    controls = Controls("uploaded", None, symbols, symbols[0], symbols[1], "1m", "24 h", 20, Regression.ROLLING_OLS,
                        False, 2.0, "normalised", False, tz)
    pair = compute_pair(bars.aligned.closes, PairParams(symbols[0], symbols[1], window=20))
    spec = next(c for _, c in chart_data(bars, pair, controls, None, universe, choice) if c.key == "chart_heatmap")
    return spec.figure()


def test_the_heatmap_of_200_symbols_shows_the_top_n_clustered_with_the_pair_and_every_label():
    labels, trace = _heatmap_labels(200)
    assert len(labels) == HEATMAP_TOP_N and list(trace.y) == labels
    assert {"H000USDT", "H001USDT"} <= set(labels)  # the analysed pair always among them
    matrix = pd.DataFrame(np.asarray(trace.z, dtype=float), index=labels, columns=labels)
    assert clustered_order(matrix) == labels  # already in clustered order
    assert trace.text is None  # 30 cells a row: values on hover, not in the cells


def test_the_heatmap_says_up_to_which_bar_its_returns_run():
    """Was: no time on the heatmap, whose universe may be a step behind the pair's charts."""
    assert "(30 of 200 symbols, clustered; returns to 2025-01-01 03:59:00 UTC)" in _heatmap(200).layout.title.text
    assert "(returns to 2025-01-01 12:59:00 Asia/Tokyo)" in _heatmap(12, tz="Asia/Tokyo").layout.title.text


def test_the_heatmap_filter_shows_exactly_the_named_symbols():
    named = ("H010USDT", "H003USDT", "H150USDT", "NOTWATCHED")
    labels, trace = _heatmap_labels(200, HeatmapChoice(HEATMAP_TOP_N, named))
    assert sorted(labels) == ["H003USDT", "H010USDT", "H150USDT"]
    assert trace.text is not None and len(labels) <= HEATMAP_TEXT_MAX  # few symbols: values in the cells
    few, _ = _heatmap_labels(12)  # no more than N: all of them
    assert sorted(few) == [f"H{i:03d}USDT" for i in range(12)]


def test_the_charts_tab_sets_the_heatmaps_n_or_filter_for_many_symbols():
    """More symbols than N: an expander sets how many the heatmap shows, or exactly which."""
    def page() -> None:
        import numpy as np
        import pandas as pd
        import streamlit as st

        from domain import Regression
        from pairs.bars import dataset_pair_bars
        from pairs.compute import PairParams, compute_pair
        from pairs.universe import UniverseView
        from ui import charts_tab
        from ui.controls import Controls

        count = st.session_state.get("watched", 40)  # the test watches fewer later
        symbols = tuple(f"H{i:03d}USDT" for i in range(count))
        rng = np.random.default_rng(2)
        closes = 100 * np.exp(np.cumsum(rng.normal(0, 1e-3, (120, count)), axis=0))
        index = pd.date_range("2025-01-01", periods=120, freq="1min", tz="UTC")
        frames = {s: pd.DataFrame({"open": closes[:, j], "high": closes[:, j], "low": closes[:, j],
                                   "close": closes[:, j], "volume": 1.0}, index=index) for j, s in enumerate(symbols)}
        universe = UniverseView(dataset_pair_bars(frames, 60_000))
        bars = dataset_pair_bars({s: frames[s] for s in symbols[:2]}, 60_000)
        controls = Controls("uploaded", None, symbols, symbols[0], symbols[1], "1m", "24 h", 20,
                            Regression.ROLLING_OLS, False, 2.0, "normalised", False, "UTC")
        pair = compute_pair(bars.aligned.closes, PairParams(symbols[0], symbols[1], window=20))
        charts_tab.render_charts(bars, pair, controls, None, 0, universe=universe)

    def heatmap_labels(at: AppTest) -> list[str]:
        import json

        (spec,) = [c.proto.spec for c in at.get("plotly_chart")
                   if "Correlation of returns across symbols" in c.proto.spec]
        return json.loads(spec)["data"][0]["x"]

    at = AppTest.from_function(page, default_timeout=60).run()
    assert not at.exception, at.exception
    assert len(heatmap_labels(at)) == HEATMAP_TOP_N
    at.number_input(key="heatmap_top_n").set_value(5).run()
    assert not at.exception, at.exception
    labels = heatmap_labels(at)
    assert len(labels) == 5 and {"H000USDT", "H001USDT"} <= set(labels)
    at.multiselect(key="heatmap_symbols").set_value(["H030USDT", "H004USDT", "H038USDT"]).run()
    assert sorted(heatmap_labels(at)) == ["H004USDT", "H030USDT", "H038USDT"]
    # The user raises N to all 40, then watches 35: N and the filter shrink with them, no error.
    at.multiselect(key="heatmap_symbols").set_value([]).run()
    at.number_input(key="heatmap_top_n").set_value(40).run()
    assert len(heatmap_labels(at)) == 40
    at.multiselect(key="heatmap_symbols").set_value(["H030USDT", "H004USDT", "H038USDT"]).run()
    at.session_state["watched"] = 35
    at.run()
    assert not at.exception, at.exception
    assert sorted(heatmap_labels(at)) == ["H004USDT", "H030USDT"]
    at.multiselect(key="heatmap_symbols").set_value([]).run()
    assert not at.exception, at.exception
    assert len(heatmap_labels(at)) == 35 and at.number_input(key="heatmap_top_n").value == 35


def test_every_session_reads_the_universes_correlation_and_summaries_computed_once_a_step(service, monkeypatch):
    """Was: every run of every page computed the correlation of all 200 symbols' returns (Charts tab)
    and their 200 summaries (Stats & tests) again, the same numbers for a whole step. Now the step's
    build computes them once and every session and run reads the same objects; the numbers are those
    of the former per-run computation."""
    import pairs.universe as module

    calls = {"correlation": 0, "summary": 0}
    correlate, summarise = module.correlation_matrix, module.symbol_summary

    def counted_correlation(returns: pd.DataFrame) -> pd.DataFrame:
        calls["correlation"] += 1
        return correlate(returns)

    def counted_summary(symbol: str, frame: pd.DataFrame, interval_ms: int):
        calls["summary"] += 1
        return summarise(symbol, frame, interval_ms)

    monkeypatch.setattr(module, "correlation_matrix", counted_correlation)
    monkeypatch.setattr(module, "symbol_summary", counted_summary)
    universe = UniverseBars(service.engine, service.history)
    controls = _controls()
    view = service.shared.ask(view_query(controls)).shown()
    figures, tables = [], []
    for _session in range(2):
        for _run in range(3):
            shown = universe.view(SYMBOLS, 1_000, LOOKBACKS_MS[LOOKBACK])
            specs = chart_data(view.bars, view.pair, controls, None, shown)
            spec = next(c for _, c in specs if c.key == "chart_heatmap")
            figures.append(spec.figure())
            tables.append(shown.summaries())
    assert universe.built == 1
    assert calls == {"correlation": 1, "summary": len(SYMBOLS)}
    assert all(table is tables[0] for table in tables)

    # The numbers of the former computation, on the same bars.
    bars = universe.closed(SYMBOLS, 1_000, LOOKBACKS_MS[LOOKBACK])
    returns = log_returns(bars.closes())
    former = correlation_matrix(returns).reindex(index=returns.columns, columns=returns.columns)
    pd.testing.assert_frame_equal(shown.correlation().matrix, former)
    shown_former = heatmap_matrix(former, HeatmapChoice(), (Y, X))
    (trace,) = figures[-1].data
    assert list(trace.x) == list(shown_former.columns) and list(trace.y) == list(shown_former.index)
    np.testing.assert_array_equal(np.asarray(trace.z, dtype=float), shown_former.to_numpy())
    assert tables[0] == {s: summarise(s, frame, 1_000) for s, frame in bars.by_symbol.items()}


def test_the_summaries_say_which_bars_they_are_over():
    """Was: "Over the selected lookback" and no time: the universe's bars may be a step behind the
    pair's (held while the next step builds), and the table did not say how old they were."""
    def page() -> None:
        import pandas as pd

        from pairs.bars import dataset_pair_bars
        from pairs.universe import UniverseView
        from ui.panels import render_symbol_summaries

        index = pd.date_range("2025-01-01 09:00", periods=30, freq="1min", tz="UTC")
        frames = {s: pd.DataFrame({"open": 1.0 + i, "high": 2.0, "low": 0.5, "close": 1.5, "volume": 1.0},
                                  index=index) for i, s in enumerate(("AAAUSDT", "BBBUSDT"))}
        render_symbol_summaries(UniverseView(dataset_pair_bars(frames, 60_000)), "Asia/Tokyo")

    at = AppTest.from_function(page, default_timeout=30).run()
    assert not at.exception, at.exception
    assert any("2025-01-01 18:00:00 → 2025-01-01 18:29:00 (Asia/Tokyo)" in c.value for c in at.caption), \
        [c.value for c in at.caption]


def test_sessions_asking_at_once_share_one_computation_of_the_correlation(service, monkeypatch):
    """Two sessions reading a new step's view at the same moment: one computes, the other waits for it."""
    import pairs.universe as module

    universe = UniverseBars(service.engine, service.history)
    bars = universe.closed(SYMBOLS, 1_000, LOOKBACKS_MS[LOOKBACK])
    fresh = UniverseView(bars)  # as a dataset's: nothing computed yet
    entered, gate = threading.Event(), threading.Event()
    calls = []
    correlate = module.correlation_matrix

    def slow(returns: pd.DataFrame) -> pd.DataFrame:
        calls.append(1)
        entered.set()
        assert gate.wait(30)
        return correlate(returns)

    monkeypatch.setattr(module, "correlation_matrix", slow)
    results: list[object] = []
    threads = [threading.Thread(target=lambda: results.append(fresh.correlation())) for _ in range(2)]
    threads[0].start()
    assert entered.wait(30)
    threads[1].start()
    gate.set()
    for thread in threads:
        thread.join(30)
    assert len(calls) == 1 and len(results) == 2 and results[0] is results[1]


def test_the_universes_correlation_leaves_out_what_has_not_moved_and_needs_a_few_bars():
    index = pd.date_range("2025-01-01", periods=6, freq="1min", tz="UTC")
    closes = pd.DataFrame({"AUSDT": [1.0, 1.1, 1.0, 1.2, 1.1, 1.3], "BUSDT": [2.0, 2.1, 2.3, 2.2, 2.4, 2.3],
                           "FLATUSDT": 5.0}, index=index)
    correlation = UniverseCorrelation.of(closes)
    assert correlation is not None and correlation.moving == ("AUSDT", "BUSDT")
    assert correlation.last == index[-1]
    assert list(correlation.matrix.columns) == ["AUSDT", "BUSDT", "FLATUSDT"]
    assert correlation.matrix.loc["FLATUSDT"].isna().all() and correlation.matrix["FLATUSDT"].isna().all()
    assert correlation.matrix.loc["AUSDT", "AUSDT"] == 1.0
    assert UniverseCorrelation.of(closes.iloc[:3]) is None  # two returns: no correlation yet
    assert UniverseCorrelation.of(closes[["FLATUSDT"]]) is None  # nothing moved
