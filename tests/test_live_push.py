"""What server.py pushes: chart updates that rebuild the same picture, and the live panel's stream.

The browser side is exercised by tests/test_browser.py; here the protocol is checked on the
server side: a browser that applies every update exactly as ``ui.live_chart.CHART_JS`` does
ends up with the figure a full redraw would give.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import threading
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import pandas as pd
import plotly.io as pio
import pytest
from starlette.requests import Request

from analytics import rolling_zscore
from pairs.compute import LiveContext, PairParams
from pairs.shared import ViewQuery
from records import FeedState, FeedStatus, MarkPrice, Trade, now_ms
from storage import StorageError
from ui import charts, live
from ui.live_chart import REDRAW_SHARE, SPLICE_GRID, ChartData, SharedBuilds, chart_update, whole_figure
from ui.panels import fmt

TZ = "Europe/Berlin"
START = pd.Timestamp("2026-12-01 08:00", tz="UTC")


def _series(n: int, seed: int = 3) -> pd.Series:
    rng = np.random.default_rng(seed)
    index = pd.date_range(START, periods=n, freq="1s", name="time")
    return pd.Series(np.cumsum(rng.normal(0, 1, n)), index=index)


def _z_chart(spread: pd.Series, upto: int, threshold: float = 1.0, lookback_s: int | None = None) -> ChartData:
    """The z-score chart of the first ``upto`` bars (the last ``lookback_s`` of them), as the page builds it."""
    z = rolling_zscore(spread.iloc[:upto], 20)
    if lookback_s is not None:
        z = z[z.index >= z.index[-1] - pd.Timedelta(seconds=lookback_s)]
    return ChartData("chart_zscore",
                     lambda since, points, _: charts.zscore_chart(z, threshold=threshold, tz=TZ, max_points=points,
                                                                  since=since),
                     z.index[-1], 10_000, True, (z.index[-1], upto))


class Browser:
    """One chart in a browser, updated as CHART_JS does (numbers as display milliseconds)."""

    def __init__(self) -> None:
        self.traces: dict[str, dict[str, list]] = {}
        self.layout: dict = {}
        self.rev: str | None = None
        self.seq: int | None = None

    def apply(self, payload: dict) -> None:
        if (payload["rev"], payload["seq"]) == (self.rev, self.seq):
            return
        if "full" in payload:
            figure = json.loads(payload["full"])
            self.traces = {t["name"]: {k: _decoded(t[k]) for k in ("x", "y", "customdata", "hovertext") if k in t}
                           for t in figure["data"]}
            self.layout = figure["layout"]
        else:
            assert (payload["rev"], payload["base"]) == (self.rev, self.seq), "an update for another picture"
            splice = payload["splice"]
            for name, trace in self.traces.items():
                add = splice["traces"].get(name, {})
                keep = [i for i, x in enumerate(trace["x"]) if splice["from"] <= x < splice["cut"]]
                for key, values in trace.items():
                    trace[key] = [values[i] for i in keep] + add.get(key, [])
            self.layout = {**json.loads(splice["layout"]), "template": self.layout.get("template")}
        self.rev, self.seq = payload["rev"], payload["seq"]


def _decoded(value: object) -> list:
    if isinstance(value, dict) and "bdata" in value:
        return np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"])).astype(float).tolist()
    return list(value)


def _nan_as_none(values: list) -> list:
    return [None if v is None or (isinstance(v, float) and math.isnan(v)) else v for v in values]


def test_a_chart_extended_bar_by_bar_equals_the_chart_drawn_whole():
    spread = _series(400)
    browser, sent = Browser(), None
    kinds = []
    for run, upto in enumerate(range(100, 400, 7), start=1):  # a refresh every 7 bars, the lookback sliding
        chart = _z_chart(spread, upto, lookback_s=80)
        shown_from = chart.last - pd.Timedelta(seconds=80)
        payload, sent = chart_update(chart, sent, revision="r", shown_from=shown_from, tz=TZ, run=run)
        kinds.append("full" if "full" in payload else "splice")
        browser.apply(payload)
        # Drawn whole over the same lookback: what the user must see.
        z = rolling_zscore(spread.iloc[:upto], 20)
        whole = json.loads(pio.to_json(charts.zscore_chart(z[z.index >= shown_from], threshold=1.0, tz=TZ,
                                                           max_points=10_000)))
        expected = {t["name"]: t for t in whole["data"]}
        assert browser.traces["z-score"]["x"] == _decoded(expected["z-score"]["x"])
        assert _nan_as_none(browser.traces["z-score"]["y"]) == _nan_as_none(_decoded(expected["z-score"]["y"]))
        for name in ("crossed above +1", "crossed below −1"):
            # Drawn whole, the window's first bar has no bar before it to have crossed from.
            kept, fresh = browser.traces[name]["x"], _decoded(expected[name]["x"])
            assert set(fresh) <= set(kept) and set(kept) - set(fresh) <= {charts.display_time(shown_from, TZ)}
        # Bands and the y range span every point shown, not only the newest ones.
        assert browser.layout["yaxis"]["range"] == whole["layout"]["yaxis"]["range"]
        assert browser.layout["shapes"] == whole["layout"]["shapes"]
    assert kinds[0] == "full" and kinds.count("splice") > len(kinds) // 2


def test_an_update_sends_only_the_new_bars_and_no_template():
    spread = _series(3_600)
    first, sent = chart_update(_z_chart(spread, 3_000), None, revision="r", shown_from=None, tz=TZ, run=1)
    update, after = chart_update(_z_chart(spread, 3_002), sent, revision="r", shown_from=None, tz=TZ, run=2)
    assert "full" in first and "splice" in update and update["base"] == first["seq"]
    # From the grid boundary at or before the last bar sent (08:49:52 for 08:49:59), sent again, to the two new.
    grid = spread.index[2_999].floor(SPLICE_GRID)
    assert update["splice"]["cut"] == charts.display_time(grid, TZ)
    assert len(update["splice"]["traces"]["z-score"]["x"]) == (spread.index[3_001] - grid).seconds + 1 <= 18
    assert after.appended == 2
    assert "template" not in json.loads(update["splice"]["layout"])
    assert len(json.dumps(update)) < len(first["full"]) / 10


def _counting(spread: pd.Series, builds: list) -> Callable[[int], ChartData]:
    """The z-score chart of ``spread`` up to a bar, noting in ``builds`` each build it makes (its ``since``)."""
    def counted(upto: int) -> ChartData:
        chart = _z_chart(spread, upto)
        return replace(chart, build=lambda *args: builds.append(args[0]) or chart.build(*args))

    return counted


def test_tabs_showing_the_same_data_share_one_build_per_figure_and_tail():
    """Two sessions a bar apart on one feed: one full figure and one tail built for both, and each
    browser ends up with the picture drawn whole. Another feed (scope) or none shares nothing."""
    shared = SharedBuilds(16)
    spread = _series(600)
    builds: list = []
    counted = _counting(spread, builds)

    browsers, sents = [Browser(), Browser()], [None, None]
    for i, upto in enumerate((500, 501)):  # the second tab opened a bar later
        payload, sents[i] = chart_update(counted(upto), None, revision="r", shown_from=None, tz=TZ, run=1,
                                         scope="feed", builds=shared)
        browsers[i].apply(payload)
    assert builds == [None, None]  # two different figures (a bar apart): two builds
    for i in range(2):
        payload, sents[i] = chart_update(counted(503), sents[i], revision="r", shown_from=None, tz=TZ, run=2,
                                         scope="feed", builds=shared)
        browsers[i].apply(payload)
        assert "splice" in payload
    assert len(builds) == 3 and builds[2] == spread.index[500].floor(SPLICE_GRID)  # one tail for both tabs
    whole = json.loads(pio.to_json(charts.zscore_chart(rolling_zscore(spread.iloc[:503], 20), threshold=1.0, tz=TZ,
                                                       max_points=10_000)))
    expected = _decoded(whole["data"][0]["x"])
    assert all(browser.traces["z-score"]["x"] == expected for browser in browsers)
    # Two new tabs: one build on a feed (each feed its own), two without a scope (an uploaded dataset).
    for scope, expected_builds in (("feed", 1), ("other feed", 1), (None, 2)):
        before = len(builds)
        for _ in range(2):
            chart_update(counted(503), None, revision="r", shown_from=None, tz=TZ, run=1, scope=scope, builds=shared)
        assert len(builds) - before == expected_builds, scope


def test_a_polled_page_builds_each_whole_figure_once_while_its_data_is_unchanged():
    """Was: under ``streamlit run`` (no pushed charts) every run of every session built every figure
    again, though most had not changed since the last run (a chart's data moves once a bar closes,
    the heatmap's once a universe step). Now one build serves every run and session of one feed
    while the chart's data, revision, lookback and time zone are unchanged; it is the same figure."""
    shared = SharedBuilds(16)
    spread = _series(600)
    builds: list = []
    counted = _counting(spread, builds)

    def figure(upto: int, *, scope: object = "feed", revision: str = "r", tz: str = TZ,
               shown_from: pd.Timestamp | None = None) -> object:
        return whole_figure(counted(upto), revision=revision, shown_from=shown_from, tz=tz, builds=shared,
                            scope=scope)

    first = figure(500)
    assert all(figure(500) is first for _ in range(5))  # later runs, other sessions
    assert builds == [None]  # drawn whole (no tail), once
    assert pio.to_json(first) == pio.to_json(_z_chart(spread, 500).figure())
    assert figure(501) is not first and len(builds) == 2  # a bar closed: built again, once
    assert figure(501) is figure(501) and len(builds) == 2
    # Anything else the picture depends on builds another; without a feed (an uploaded dataset) nothing is kept.
    for change in ({"scope": "other feed"}, {"revision": "r2"}, {"tz": "UTC"}, {"shown_from": START}):
        before = len(builds)
        figure(501, **change)
        assert len(builds) == before + 1, change
    before = len(builds)
    assert figure(501, scope=None) is not figure(501, scope=None) and len(builds) == before + 2


def test_nothing_is_sent_while_the_data_has_not_changed():
    chart = _z_chart(_series(300), 200)
    first, sent = chart_update(chart, None, revision="r", shown_from=None, tz=TZ, run=1)
    again, sent = chart_update(chart, sent, revision="r", shown_from=None, tz=TZ, run=2)
    assert again == {"rev": "r", "seq": first["seq"]}


@pytest.mark.parametrize("change", ["revision", "run skipped", "not incremental", "new trace", "many appended"])
def test_the_whole_figure_is_sent_again_when_an_update_cannot_rebuild_it(change):
    spread = _series(3_000)
    upto, revision, run = 2_000, "r", 2
    chart = _z_chart(spread, 1_000, threshold=50.0)  # no crossing yet
    _, sent = chart_update(chart, None, revision="r", shown_from=None, tz=TZ, run=1)
    if change == "revision":
        revision = "r2"
    elif change == "run skipped":  # the charts tab was closed for a run: the browser lost the chart
        run = 3
    if change == "new trace":
        z = rolling_zscore(spread.iloc[:1_010], 20)
        z.iloc[-1] = 99.0  # a crossing: a marker trace the browser does not have
        nxt = ChartData("chart_zscore", lambda since, points, _: charts.zscore_chart(
            z, threshold=50.0, tz=TZ, max_points=points, since=since), z.index[-1], 10_000, True, 1)
    else:
        nxt = _z_chart(spread, upto if change == "many appended" else 1_001, threshold=50.0)
        if change == "not incremental":
            nxt = ChartData(nxt.key, nxt.build, nxt.last, nxt.max_points, False, nxt.content)
    assert (upto - 1_000) > REDRAW_SHARE * 1_000
    payload, _ = chart_update(nxt, sent, revision=revision, shown_from=None, tz=TZ, run=run)
    assert "full" in payload


def test_rebased_prices_keep_the_levels_of_their_first_drawing():
    closes = pd.DataFrame({"A": _series(100).add(200), "B": _series(100, seed=4).add(300)})
    levels_seen = []

    def chart(upto: int) -> ChartData:
        frame = closes.iloc[:upto]

        def build(since, points, levels):
            levels_seen.append(levels)
            return charts.price_chart(frame.iloc[upto - 50:] if since is None else frame, tz=TZ, max_points=points,
                                      rebase_to=levels, since=since)
        return ChartData("chart_prices", build, frame.index[-1], 4_000, anchor=lambda: charts.rebase_levels(
            frame.iloc[upto - 50:]))

    _, sent = chart_update(chart(60), None, revision="r", shown_from=None, tz=TZ, run=1)
    payload, _ = chart_update(chart(62), sent, revision="r", shown_from=None, tz=TZ, run=2)
    assert "splice" in payload and levels_seen[0] == levels_seen[1] == charts.rebase_levels(closes.iloc[10:60])
    a = payload["splice"]["traces"]["A"]
    assert a["y"][-1] == pytest.approx(closes["A"].iloc[61] / closes["A"].iloc[10] * 100)


def test_rebased_prices_share_one_tail_and_each_tab_keeps_its_own_levels():
    shared = SharedBuilds(16)
    closes = pd.DataFrame({"A": _series(100).add(200), "B": _series(100, seed=4).add(300)})
    builds = []

    def chart(upto: int) -> ChartData:
        frame = closes.iloc[upto - 40:upto]  # a 40-bar lookback: each tab rebases to its first bar

        def build(since, points, levels):
            builds.append(since)
            return charts.price_chart(frame, tz=TZ, max_points=points, rebase_to=levels, since=since)
        return ChartData("chart_prices", build, frame.index[-1], 4_000, content=(frame.index[-1],),
                         anchor=lambda: charts.rebase_levels(frame), reanchor=charts.rebased_traces)

    _, a = chart_update(chart(50), None, revision="r", shown_from=None, tz=TZ, run=1, scope="feed",
                            builds=shared)
    _, b = chart_update(chart(51), None, revision="r", shown_from=None, tz=TZ, run=1, scope="feed",
                            builds=shared)
    to_a, _ = chart_update(chart(53), a, revision="r", shown_from=None, tz=TZ, run=2, scope="feed",
                            builds=shared)
    to_b, _ = chart_update(chart(53), b, revision="r", shown_from=None, tz=TZ, run=2, scope="feed",
                            builds=shared)
    assert builds == [None, None, closes.index[49].floor(SPLICE_GRID)]  # one tail, built without levels
    for payload, first in ((to_a, 10), (to_b, 11)):
        for name in ("A", "B"):
            assert payload["splice"]["traces"][name]["y"][-1] == pytest.approx(
                closes[name].iloc[52] / closes[name].iloc[first] * 100)
            assert payload["splice"]["traces"][name]["customdata"][-1] == pytest.approx(closes[name].iloc[52])
    assert to_a["splice"]["layout"] == to_b["splice"]["layout"]


def test_rebased_traces_leave_missing_closes_and_levels_empty():
    traces = {"A": {"x": [1.0, 2.0], "y": [0.0, 0.0], "customdata": [50.0, None]}, "A volume": {"y": [3.0]}}
    assert charts.rebased_traces(traces, {"A": 25.0})["A"]["y"] == [200.0, None]
    assert charts.rebased_traces(traces, {"A": math.nan})["A"]["y"] == [None, None]
    assert charts.rebased_traces(traces, {"A": 25.0})["A volume"] == {"y": [3.0]}


# ---------------------------------------------------------------------------------------------
# The live panel's stream
# ---------------------------------------------------------------------------------------------


class _Engine:
    def __init__(self) -> None:
        self.trades = {"ETHUSDT": Trade("ETHUSDT", 1, 0, 0, 3_000.0, 1.0, False),
                       "BTCUSDT": Trade("BTCUSDT", 1, 0, 0, 90_000.0, 1.0, False)}

    def last_trade(self, symbol: str) -> Trade | None:
        return self.trades.get(symbol)


class _Shared:
    def __init__(self) -> None:
        self.bars_closed = 0  # what SharedAnalytics.stamp would say: moved on when a bar closes

    def stamp(self, _symbols: tuple[str, ...], _interval_ms: int) -> tuple[int, int]:
        return self.bars_closed, 0


class _Service:
    """A feed as the live panel sees it: last trades, a stamp of the closed bars, the closed bars' context."""

    def __init__(self, context: LiveContext | None = None, *, funding: bool = False) -> None:
        self.engine = _Engine()
        self.shared = _Shared()
        self.context = context
        self.asked: list[ViewQuery] = []
        self.funding = funding  # a perpetuals feed (USDⓈ-M) or not
        self.marks: dict[str, MarkPrice] = {}

    def mark_price(self, symbol: str) -> MarkPrice | None:
        return self.marks.get(symbol)

    def live_context(self, query: ViewQuery) -> LiveContext | None:
        self.asked.append(query)
        return self.context

    def status(self) -> FeedStatus:
        return FeedStatus("simulated", FeedState.CONNECTED, ("ETHUSDT", "BTCUSDT"), None, 0, 10.0, 10.0, 0.1, 0.1,
                          5, 0, 0, 0, 0, 0, None, "SIMULATED market")

    def statuses(self) -> list[FeedStatus]:
        return [self.status()]


def _query(y: str = "ETHUSDT", x: str = "BTCUSDT", window: int = 60) -> ViewQuery:
    return ViewQuery(("ETHUSDT", "BTCUSDT"), 1_000, 3_600_000, PairParams(y, x, window=window))


CONTEXT = LiveContext(0.03, 0.0, np.array([290.0, 310.0, 300.0]), False)


def test_the_panels_numbers_come_from_the_last_trades_and_the_closed_bars_context():
    service = _Service()
    assert live.snapshot(service, "ETHUSDT", "BTCUSDT", None) == {
        "y": 3_000.0, "x": 90_000.0, "beta": None, "spread": None, "z": None}  # no context yet
    values = live.snapshot(service, "ETHUSDT", "BTCUSDT", CONTEXT)
    spread = 3_000.0 - 0.03 * 90_000.0
    window = np.array([290.0, 310.0, 300.0, spread])
    assert values["spread"] == pytest.approx(spread)
    assert values["z"] == pytest.approx((spread - window.mean()) / window.std(ddof=1))


def test_the_context_is_asked_of_the_service_again_only_when_a_bar_closes():
    service = _Service(CONTEXT)
    tracker = live.ContextTracker(service, _query())
    assert tracker.current() is CONTEXT and tracker.current() is CONTEXT and len(service.asked) == 1
    service.shared.bars_closed += 1
    assert tracker.current() is CONTEXT and service.asked == [_query(), _query()]


def _get(endpoint, query: str = ""):
    """Call a route's endpoint as Starlette would for ``GET ?query``."""
    scope = {"type": "http", "method": "GET", "path": "/", "query_string": query.encode(), "headers": []}
    return asyncio.run(endpoint(Request(scope)))


async def _never_disconnects() -> dict:
    await asyncio.Event().wait()
    return {"type": "http.disconnect"}


async def _messages(board: live.LiveBoard, token: str, until, limit: int = 500) -> list[dict]:
    """The stream's messages for ``token`` until ``until(messages)`` (at most ``limit`` polls: a bound, not a clock)."""
    scope = {"type": "http", "method": "GET", "path": "/live/events", "query_string": f"token={token}".encode(),
             "headers": []}
    response = await live.events(board)(Request(scope, _never_disconnects))
    assert response.status_code == 200
    messages: list[dict] = []
    stream = response.body_iterator
    try:
        for _ in range(limit):
            chunk = await anext(stream)
            if chunk.startswith("data: "):
                messages.append(json.loads(chunk.removeprefix("data: ")))
                if until(messages):
                    return messages
            else:
                await asyncio.sleep(live.POLL_S)
        raise AssertionError(f"the stream never sent what was expected: {messages}")
    finally:
        await stream.aclose()


def test_the_stream_asks_the_service_for_the_context_itself():
    """Was: the stream showed no z-score until a script run published the page's context into the board."""
    board, service = live.LiveBoard(), _Service(CONTEXT)
    board.register("e" * 32, service, _query())  # what the page does; nothing else is published
    messages = asyncio.run(_messages(board, "e" * 32, lambda ms: any(m.get("z") is not None for m in ms)))
    assert service.asked == [_query()]
    assert messages[0]["y"] == 3_000.0 and "SIMULATED market" in messages[0]["feed"]
    assert board.get("e" * 32).streams == 0  # closed with the stream


def test_a_page_that_switches_pair_gets_the_new_pairs_context():
    board, service = live.LiveBoard(), _Service(CONTEXT)
    board.register("b" * 32, service, _query())
    swapped = LiveContext(30.0, 0.0, np.array([1.0, 2.0, 3.0]), False)

    async def switched() -> tuple[list[dict], list[dict]]:
        before = await _messages(board, "b" * 32, lambda ms: any(m.get("z") is not None for m in ms))
        board.register("b" * 32, service, _query("BTCUSDT", "ETHUSDT"))
        service.context = swapped
        after = await _messages(board, "b" * 32, lambda ms: any(m.get("beta") == 30.0 for m in ms))
        return before, after

    before, after = asyncio.run(switched())
    assert before[-1]["beta"] == 0.03
    assert service.asked == [_query(), _query("BTCUSDT", "ETHUSDT")]
    assert after[0]["y"] == 90_000.0
    # Until the new pair's context arrives, no number is hedged with the old pair's β.
    assert all(m.get("beta") in (None, 30.0) for m in after)


@pytest.mark.parametrize("token", ["", "nope", "..%2F..%2Fetc%2Fpasswd", "A" * 32, "c" * 32])
def test_the_stream_refuses_a_token_no_page_registered(token):
    response = _get(live.events(live.LiveBoard()), f"token={token}")
    assert response.status_code == 404 and response.body == b"unknown page"


def test_one_page_cannot_open_unbounded_streams():
    board = live.LiveBoard()
    board.register("d" * 32, _Service(), _query())
    assert all(board.open_stream("d" * 32) for _ in range(live.MAX_STREAMS_PER_TOKEN))
    response = _get(live.events(board), "token=" + "d" * 32)
    assert response.status_code == 429
    board.close_stream("d" * 32)
    assert board.open_stream("d" * 32)


def test_a_stopping_server_ends_every_open_stream_and_opens_no_new_one():
    """Was: uvicorn waits for open responses before it stops, and a page's stream never ended, so
    Ctrl-C with a browser open left the server (and its feeds) running."""
    board = live.LiveBoard()
    board.register("f" * 32, _Service(CONTEXT), _query())

    async def stopped_mid_stream() -> None:
        scope = {"type": "http", "method": "GET", "path": "/live/events",
                 "query_string": ("token=" + "f" * 32).encode(), "headers": []}
        response = await live.events(board)(Request(scope, _never_disconnects))
        stream, chunks = response.body_iterator, []
        while not any(chunk.startswith("data: ") for chunk in chunks):
            chunks.append(await asyncio.wait_for(anext(stream), 5))
        board.close()
        # Bounded: the stream must end within a few polls; a stream that never does times out here.
        await asyncio.wait_for(_drain(stream), 5)

    asyncio.run(stopped_mid_stream())
    assert board.get("f" * 32) is None
    response = _get(live.events(board), "token=" + "f" * 32)
    assert response.status_code == 503 and response.body == b"the server is stopping"


async def _drain(stream) -> list[str]:
    return [chunk async for chunk in stream]


def test_the_chart_script_and_plotly_are_served():
    script = _get(live.chart_script)
    assert script.status_code == 200 and b"export function render" in script.body
    bundle = _get(live.plotly_bundle)
    assert bundle.status_code == 200 and bundle.path == live.PLOTLY_JS and live.PLOTLY_JS.stat().st_size > 1_000_000
    assert "immutable" in bundle.headers["cache-control"]


def test_prices_keep_flowing_while_the_closed_bars_are_analysed():
    """The context is computed in a worker thread: a slow one (a cold day of Kalman) holds up no price."""
    computing, release = threading.Event(), threading.Event()

    class Slow(_Service):
        def live_context(self, query: ViewQuery) -> LiveContext | None:
            computing.set()
            self.released_in_time = release.wait(30)  # a bound, in case the stream waits for this
            return super().live_context(query)

    board, service = live.LiveBoard(), Slow(CONTEXT)
    board.register("f" * 32, service, _query())

    def trade_meanwhile() -> None:  # the market, in its own thread: a trade while the analysis runs
        if computing.wait(30):
            service.engine.trades["ETHUSDT"] = Trade("ETHUSDT", 2, 0, 0, 3_001.0, 1.0, False)

    market = threading.Thread(target=trade_meanwhile, daemon=True)
    market.start()
    def until(messages: list[dict]) -> bool:
        if any(m.get("y") == 3_001.0 for m in messages):
            release.set()  # now the analysis may end (asyncio.run waits for its worker thread)
            return True
        return False

    try:
        messages = asyncio.run(_messages(board, "f" * 32, until))
    finally:
        release.set()
        market.join(30)
    assert messages[-1]["z"] is None  # sent before the context arrived
    assert service.released_in_time


@pytest.mark.parametrize("error", [StorageError("live.db: disk I/O error"), ValueError("a bug in the analytics")])
def test_a_failing_analysis_is_asked_again_only_when_a_bar_closes(caplog, error):
    """Not on every poll of the stream (50 a second), and the panel keeps its last context meanwhile.
    Storage trouble is one line in the log (the page shows it); a bug keeps its traceback there."""

    class Failing(_Service):
        def live_context(self, query: ViewQuery) -> LiveContext | None:
            self.asked.append(query)
            if len(self.asked) > 1:
                raise error
            return CONTEXT

    service = Failing()
    tracker = live.ContextTracker(service, _query())
    assert tracker.current() is CONTEXT
    service.shared.bars_closed += 1
    assert tracker.current() is CONTEXT and tracker.current() is CONTEXT and len(service.asked) == 2
    assert str(error) in caplog.text
    assert ("Traceback" in caplog.text) == isinstance(error, ValueError)


# ---------------------------------------------------------------------------------------------
# Funding of perpetual legs
# ---------------------------------------------------------------------------------------------

NOW_MS = 1765788195000  # 2025-12-15 08:43:15 UTC
NEXT_FUNDING_MS = 1765814400000  # 16:00 UTC: 7 h 16 min 45 s later


def _mark(symbol: str, rate: float, *, recv_ms: int = NOW_MS - 400) -> MarkPrice:
    return MarkPrice(symbol, recv_ms - 20, recv_ms, 89_806.8, 89_811.54347826, rate, NEXT_FUNDING_MS)


def test_a_spot_or_simulated_feed_shows_no_funding():
    service = _Service()
    service.marks["ETHUSDT.P"] = _mark("ETHUSDT.P", 0.0001)  # even if one were there: spot has no funding
    assert live.funding(service, ("ETHUSDT.P", "BTCUSDT.P"), NOW_MS) == []
    assert live.funding_line(service, "ETHUSDT.P", "BTCUSDT.P", NOW_MS) == ""


def test_each_perpetual_leg_shows_its_funding_or_a_dash_before_its_first_update():
    service = _Service(funding=True)
    assert live.funding_line(service, "ETHUSDT.P", "BTCUSDT.P", NOW_MS) == \
        "ETHUSDT.P funding — | BTCUSDT.P funding —"
    service.marks["BTCUSDT.P"] = _mark("BTCUSDT.P", 0.0001)
    assert live.funding_line(service, "ETHUSDT.P", "BTCUSDT.P", NOW_MS) == (
        "ETHUSDT.P funding — | BTCUSDT.P funding +0.0100 % (longs pay shorts) · next in 7 h 16 min · "
        "mark 89,806.80 · index 89,811.54")
    service.marks["ETHUSDT.P"] = _mark("ETHUSDT.P", -0.00025)
    eth = live.funding(service, ("ETHUSDT.P",), NOW_MS)[0]
    assert eth.rate_pct == pytest.approx(-0.025) and eth.payer == "shorts pay longs" and eth.in_s == 26_205.0
    assert live.Funding.of("ETHUSDT.P", _mark("ETHUSDT.P", 0.0), NOW_MS).payer == "no payment"


def test_a_spot_leg_beside_a_perpetual_shows_no_funding():
    """A basis pair (spot ETHUSDT against perpetual ETHUSDT.P): only the perpetual leg has funding."""
    service = _Service(funding=True)
    service.marks["ETHUSDT.P"] = _mark("ETHUSDT.P", 0.0001)
    assert [leg.symbol for leg in live.funding(service, ("ETHUSDT", "ETHUSDT.P"), NOW_MS)] == ["ETHUSDT.P"]
    assert live.funding_line(service, "ETHUSDT", "ETHUSDT.P", NOW_MS).startswith("ETHUSDT.P funding +0.0100 % ")


def test_a_stale_mark_price_shows_a_dash_not_its_old_value():
    """The feed went quiet (dropped, silent): an update older than MARK_STALE_MS is not shown."""
    service = _Service(funding=True)
    service.marks["BTCUSDT.P"] = _mark("BTCUSDT.P", 0.0001, recv_ms=NOW_MS - live.MARK_STALE_MS - 1)
    assert live.funding(service, ("BTCUSDT.P",), NOW_MS) == [live.Funding("BTCUSDT.P")]
    assert live.funding_line(service, "BTCUSDT.P", "BTCUSDT.P", NOW_MS) == "BTCUSDT.P funding —"


def test_a_funding_time_already_passed_counts_down_to_now_not_below():
    leg = live.Funding.of("BTCUSDT.P", _mark("BTCUSDT.P", 0.0001), NEXT_FUNDING_MS + 5_000)
    assert leg.in_s is None  # that update is 7 h old by then: stale
    fresh = replace(_mark("BTCUSDT.P", 0.0001), recv_ms=NEXT_FUNDING_MS + 4_000)
    assert live.Funding.of("BTCUSDT.P", fresh, NEXT_FUNDING_MS + 5_000).in_s == 0
    assert [live.countdown(s) for s in (0, 42.9, 429, 7 * 3600 + 5 * 60)] == ["now", "42 s", "7 min 09 s", "7 h 05 min"]


def test_a_low_priced_perpetuals_mark_and_index_keep_their_digits():
    """The universe picker offers every USDⓈ-M perpetual, many priced below a cent (NOTUSDT ~0.002,
    1000SATSUSDT ~0.0001): two decimals showed their mark and index as 0.00."""
    service = _Service(funding=True)
    service.marks["NOTUSDT.P"] = replace(_mark("NOTUSDT.P", 0.0001), mark=0.0023456, index=0.00234612)
    service.marks["SATSUSDT.P"] = replace(_mark("SATSUSDT.P", 0.0001), mark=0.000012345, index=0.5)
    assert live.funding_line(service, "NOTUSDT.P", "SATSUSDT.P", NOW_MS).split(" | ") == [
        "NOTUSDT.P funding +0.0100 % (longs pay shorts) · next in 7 h 16 min · mark 0.0023456 · index 0.0023461",
        "SATSUSDT.P funding +0.0100 % (longs pay shorts) · next in 7 h 16 min · mark 0.000012345 · index 0.50000"]
    [row] = live.funding_table(live.funding(service, ("NOTUSDT.P",), NOW_MS), "UTC")
    assert (row["mark"], row["index"]) == ("0.0023456", "0.0023461")
    assert [live.price_text(p) for p in (89_806.8, 3_101.456, 12.3456, 1.0, 0.99999)] == [
        "89,806.80", "3,101.46", "12.346", "1.0000", "0.99999"]


def test_the_panels_prices_and_spread_keep_their_digits_at_any_magnitude():
    """Was: last prices with 2 decimals and the spread with 4, whatever the coin: a pair of coins
    near 0.002 read 0.00 / 0.00 and a spread of 0.0000."""
    cheap = {"y": 0.0023456, "x": 0.000012345, "beta": 190.1, "spread": -0.000001234, "z": 1.5}
    decimals = live.cell_decimals(cheap)
    assert decimals == {"y": 7, "x": 9, "beta": 5, "spread": 9, "z": 2}
    assert [fmt(cheap[name], decimals[name]) for name in ("y", "x", "spread")] == [
        "0.0023456", "0.000012345", "-0.000001234"]
    # Coins priced in dollars keep the panel they had: cents, and the spread two decimals finer.
    assert live.cell_decimals({"y": 3_101.5, "x": 90_000.0, "beta": 0.03, "spread": 2.5, "z": None}) == {
        "y": 2, "x": 2, "beta": 5, "spread": 4, "z": 2}
    assert live.cell_decimals(dict.fromkeys(("y", "x", "beta", "spread", "z"))) == {
        "y": 2, "x": 2, "beta": 5, "spread": 4, "z": 2}  # nothing received yet: dashes anyway
    assert live.price_decimals(1e-30) == live.MAX_DECIMALS


def test_the_stats_table_shows_each_leg_with_dashes_where_nothing_arrived():
    service = _Service(funding=True)
    service.marks["BTCUSDT.P"] = _mark("BTCUSDT.P", 0.0001)
    rows = live.funding_table(live.funding(service, ("BTCUSDT.P", "ETHUSDT.P"), NOW_MS), "Europe/Paris")
    assert rows == [
        {"leg": "BTCUSDT.P", "funding % / interval": "+0.0100", "who pays": "longs pay shorts",
         "next funding": "2025-12-15 17:00 CET", "in": "7 h 16 min", "mark": "89,806.80", "index": "89,811.54"},
        {"leg": "ETHUSDT.P", "funding % / interval": "—", "who pays": "—", "next funding": "—", "in": "—",
         "mark": "—", "index": "—"}]


def test_the_pushed_panel_sends_the_funding_line_of_a_perpetuals_feed_only():
    perp, spot = _Service(CONTEXT, funding=True), _Service(CONTEXT)
    perp.marks["ETHUSDT.P"] = _mark("ETHUSDT.P", 0.0001, recv_ms=now_ms())
    board = live.LiveBoard()
    board.register("a" * 32, perp, ViewQuery(("ETHUSDT.P", "BTCUSDT.P"), 1_000, 3_600_000,
                                             PairParams("ETHUSDT.P", "BTCUSDT.P", window=60)))
    board.register("b" * 32, spot, _query())
    messages = asyncio.run(_messages(board, "a" * 32, lambda m: any("funding" in x for x in m)))
    line = next(m["funding"] for m in messages if "funding" in m)
    assert line.startswith("ETHUSDT.P funding +0.0100 % (longs pay shorts) · next now · ")  # 2025's is past
    assert line.endswith(" | BTCUSDT.P funding —")
    messages = asyncio.run(_messages(board, "b" * 32, lambda m: any("feed" in x for x in m)))
    assert not any("funding" in m for m in messages)
