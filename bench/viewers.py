"""Many viewers: tick → browser latency, server CPU and bytes per tab of the live page in headless Chromium.

A fake Binance WebSocket feed on 127.0.0.1 (``testkit.fake_binance``) sends ``--rate`` trades/s per
symbol (ETHUSDT, BTCUSDT) and a fake REST server serves the klines history; nothing leaves this
machine. The dashboard runs as ``streamlit run <script>`` (``server.py`` when the repository has
one, else ``app.py``) on live Binance, and headless Chromium opens the page in 1 tab, then 3 (the
default sidebar: 1 s bars, 1 h lookback; ``--view Feed`` then opens a tab of the page without
charts). Once every tab is warm (charts drawn, history loaded), each steady-state window of
``--seconds`` measures:

* **tick → DOM latency**: every ETHUSDT trade has a price of its own (one cent above the previous
  one), timed by ``time.time()`` when the fake has written its frame to the socket. A
  MutationObserver in each tab records ``(Date.now(), text)`` on every change of the value
  labelled "ETHUSDT last" (a Streamlit ``st.metric``, or an element carrying ``data-live-field``/
  ``data-live-label``/``data-live-value``, in the page or an open shadow root; found again when
  the page re-renders it). A trade's latency is the time until its tab shows that price *or a
  later one*: a panel that skips trades is as late as the next value it shows. A trade still not
  shown when the window ends counts with its age then, a lower bound: a percentile it could raise
  is printed as "≥". Browser and bench share the machine clock. "shown" is the latency of the
  values actually shown (their own trade → their appearance).
* **server CPU**: utime + stime of the Streamlit server process (all its threads) from
  ``/proc/<pid>/stat`` over the window, in % of one core; "per extra tab" is the increase from the
  previous row divided by the added tabs. The feed's own work (parse, store, alerts) is in every
  row; the last row (``--idle``) closes every tab and measures the server with the feed alone.
* **bytes received per tab**: Chrome DevTools Protocol per tab: WebSocket frame payloads
  (``Network.webSocketFrameReceived``; Streamlit does not compress them) plus HTTP bodies as
  received (``Network.dataReceived``, EventSource streams included), in kB/s (1 kB = 1000 bytes).

A second table says whether the browser kept up: WebSocket messages per tab, the share of the
window each page's main thread spent in long tasks (≥ 50 ms), Chromium's CPU and the load
average. A page that cannot keep up shows stale values and asks for fewer reruns, so its latency
is the browser's and the server CPU it causes is lower than a faster browser would cause.

Timings are measured, never asserted.

    .venv/bin/python bench/viewers.py [--seconds 30] [--tabs 1,3] [--rate 10] [--script app.py] [--view Feed]
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from testkit.browser import CHROMIUM, CHROMIUM_ARGS, free_port, healthy  # noqa: E402
from testkit.fake_binance import TRADE_ID_BASES, FakeBinance  # noqa: E402
from testkit.fake_rest import FakeKlines, FakeRest  # noqa: E402
from testkit.waiting import poll  # noqa: E402

LABEL = "ETHUSDT last"
OBSERVED, OTHER = "ETHUSDT", "BTCUSDT"
START_PRICES = {OTHER: 90_000.0, OBSERVED: 3_100.0}  # of the fake klines history
# A trade is only counted if it was sent this long before the window ends: later ones may not be
# shown yet, and counting them as missing (or leaving out only the slow ones) would bias the figures.
GRACE_S = 3.0
# Charts a warm page has drawn: the Charts tab shows prices, spread, z-score, β and correlation first.
WARM_PLOTS = 4
WARM_TIMEOUT_S = 180.0  # the first tab waits for the server, the service and an hour of 1 s klines
HISTORY_QUIET_S = 5.0  # no klines request for this long: the history loader is done
CLK_TCK = os.sysconf("SC_CLK_TCK")
# A click waits for the page to handle it: a page busy drawing charts can take many seconds.
CLICK_TIMEOUT_MS = 60_000
BUSY_WARNING_PCT = 50.0  # a page's main thread in long tasks this share of the time is not keeping up


# --------------------------------------------------------------------------------------------
# The page side: what each tab records
# --------------------------------------------------------------------------------------------

# Runs in every tab before the page's own scripts. window.__live.events gets [Date.now() ms, text,
# how] on every change of the watched value. A MutationObserver watches the value's own field (the
# metric, or the data-live-field element), another the field's parent (the field replaced); not the
# whole document: the charts' DOM churns far more and every observed mutation costs the page. A
# 100 ms poll finds the value when it first appears or its parent was replaced too. "how" says who
# saw a change first: "value" or "parent" (an observer, at once) or "poll" (late by up to 100 ms).
# window.__live.tasks gets [epoch ms, duration ms] of the page's long tasks (≥ 50 ms on the main
# thread): a busy main thread delays every DOM update, whatever the server does.
OBSERVER_JS = """
(() => {
  const LABEL = __LABEL__;
  const live = {events: [], attaches: 0, shown: null, tasks: []};
  Object.defineProperty(window, "__live", {value: live});
  new PerformanceObserver((list) => {
    for (const task of list.getEntries()) live.tasks.push([performance.timeOrigin + task.startTime, task.duration]);
  }).observe({type: "longtask"});
  const VALUE = "[data-live-value], [data-testid='stMetricValue']";
  let el = null, field = null, shown = null;
  const options = {subtree: true, childList: true, characterData: true};
  const roots = () => {  // the document and every open shadow root (components may isolate their DOM)
    const out = [document];
    for (let i = 0; i < out.length; i++)
      for (const node of out[i].querySelectorAll("*")) if (node.shadowRoot) out.push(node.shadowRoot);
    return out;
  };
  const find = () => {
    for (const root of roots()) {
      for (const label of root.querySelectorAll("[data-live-label]")) {
        const field = label.textContent.trim() === LABEL && label.closest("[data-live-field]");
        const value = field && field.querySelector("[data-live-value]");
        if (value) return value;
      }
      for (const metric of root.querySelectorAll("[data-testid='stMetric']")) {
        const label = metric.querySelector("[data-testid='stMetricLabel']");
        const value = metric.querySelector("[data-testid='stMetricValue']");
        if (label && value && label.textContent.trim() === LABEL) return value;
      }
    }
    return null;
  };
  const valueObserver = new MutationObserver(() => check("value"));
  const parentObserver = new MutationObserver(() => check("parent"));
  const check = (how) => {
    if (!el || !el.isConnected) {
      const again = field && field.isConnected && field.querySelector(VALUE);  // replaced inside its field
      if (!again && how === "value") return;
      el = again || find();
      if (!el) return;
      live.attaches++;
      if (!again) {
        // The field, so that a value element replaced inside it is seen at once too.
        field = el.closest("[data-testid='stMetric'], [data-live-field]") || el;
        valueObserver.disconnect();
        valueObserver.observe(field, options);
        parentObserver.disconnect();  // the field itself replaced
        if (field.parentNode) parentObserver.observe(field.parentNode, {childList: true});
      }
    }
    const text = el.textContent.trim();
    if (text !== shown) { shown = live.shown = text; live.events.push([Date.now(), text, how]); }
  };
  setInterval(() => check("poll"), 100);
})();
""".replace("__LABEL__", json.dumps(LABEL))

# Drawn Plotly graphs (in the page or open shadow roots), Streamlit exception boxes, the watched text.
PAGE_STATE_JS = """
() => {
  const out = [document];
  for (let i = 0; i < out.length; i++)
    for (const node of out[i].querySelectorAll("*")) if (node.shadowRoot) out.push(node.shadowRoot);
  let plots = 0, exceptions = 0;
  for (const root of out) {
    for (const plot of root.querySelectorAll(".js-plotly-plot")) if (plot.querySelector(".main-svg")) plots++;
    exceptions += root.querySelectorAll("[data-testid='stException']").length;
  }
  return {plots, exceptions, text: window.__live.shown, attaches: window.__live.attaches,
          visibility: document.visibilityState};
}
"""


# --------------------------------------------------------------------------------------------
# Pure measurement functions
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Latency:
    """Tick → DOM latencies of one tab, ms: per trade sent (until it or a later one is shown) and per
    value shown (its own trade → its appearance). ``censored``: for each trade not shown (nor a later
    one) by the end of the window, a lower bound of its latency (end − send)."""

    per_trade: tuple[float, ...]
    per_shown: tuple[float, ...]
    censored: tuple[float, ...]


def match_latencies(sent: Sequence[tuple[int, float]], shown: Sequence[tuple[float, int]], end_ms: float) -> Latency:
    """Latencies from ``sent`` = [(sequence number, send time ms)] in sequence order and ``shown`` =
    [(DOM time ms, sequence number shown)] in time order, up to ``end_ms``. Sequence numbers grow with
    every trade, so "a later trade is shown" is "a higher number is shown"."""
    if not sent:
        return Latency((), (), ())
    send_ms = dict(sent)
    highest = sent[0][0] - 1  # the highest trade of the window shown so far
    position = 0  # sent[:position] are matched
    per_trade: list[float] = []
    per_shown: list[float] = []
    for at_ms, seq in shown:
        if seq <= highest:
            continue  # a value re-shown, or older than the window
        if seq in send_ms:
            per_shown.append(at_ms - send_ms[seq])
        while position < len(sent) and sent[position][0] <= seq:
            per_trade.append(at_ms - sent[position][1])
            position += 1
        highest = seq
    return Latency(tuple(per_trade), tuple(per_shown), tuple(end_ms - at for _, at in sent[position:]))


def percentile(values: Sequence[float], q: float, censored: Sequence[float] = ()) -> tuple[float, bool]:
    """The ``q``-th percentile (0-100, linear interpolation, as numpy's default) of ``values`` and the
    lower bounds ``censored``, and whether it is exact: it is unless a censored value ranks at or below
    it (its true value, higher, could move the percentile up). NaN when both are empty."""
    ordered = sorted([(v, False) for v in values] + [(v, True) for v in censored])
    if not ordered:
        return math.nan, True
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    value = ordered[low][0] + (ordered[high][0] - ordered[low][0]) * (rank - low)
    return value, not any(flag for _, flag in ordered[:high + 1])


def fmt_ms(value: tuple[float, bool]) -> str:
    """A percentile in ms; "≥" when it is only a lower bound."""
    return ("" if value[1] else "≥") + f"{value[0]:.0f}"


def busy_share(tasks: Sequence[Sequence[float]], start_ms: float, end_ms: float) -> float:
    """Share of ``[start_ms, end_ms]`` covered by ``tasks`` = [(start epoch ms, duration ms)] (they never
    overlap: one main thread)."""
    covered = sum(max(0.0, min(at + duration, end_ms) - max(at, start_ms)) for at, duration in tasks)
    return covered / (end_ms - start_ms)


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system, every thread) the process ``pid`` has used so far, seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) ": state is field 3 of the man page
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime (14), stime (15)


def process_tree_cpu(root: int, exclude: int) -> dict[int, float]:
    """CPU seconds of every process below ``root`` (children, grandchildren, ...), except ``exclude``
    and the processes below it: here the browser (Chromium and Playwright's driver) without the server."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            text = stat.read_text()
            children.setdefault(int(text[text.rindex(")") + 2:].split()[1]), []).append(int(stat.parent.name))
    found, stack = {}, list(children.get(root, []))
    while stack:
        pid = stack.pop()
        if pid == exclude:
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):  # it may have exited since
            found[pid] = cpu_seconds(pid)
        stack.extend(children.get(pid, []))
    return found


def payload_bytes(response: dict[str, Any]) -> int:
    """Size of a WebSocket frame's payload as sent: binary frames come base64-encoded, text as UTF-8."""
    data = response.get("payloadData", "")
    if response.get("opcode") == 2:
        return len(base64.b64decode(data))
    return len(data.encode())


# --------------------------------------------------------------------------------------------
# The feed
# --------------------------------------------------------------------------------------------


class Feeder:
    """Sends ``rate`` trades/s per symbol from a thread: ETHUSDT one cent up each trade (so each of its
    prices names one trade), BTCUSDT likewise, half a period later. Only trades written to a
    connection are counted and take a trade id, so the dashboard never sees an id gap."""

    def __init__(self, fake: FakeBinance, start_prices: dict[str, float], rate: float) -> None:
        self.fake = fake
        self.period_s = 1.0 / rate
        self.cents = {symbol: round(price * 100) for symbol, price in start_prices.items()}
        self.next_id = {symbol: TRADE_ID_BASES[symbol] for symbol in start_prices}
        self.sent: list[tuple[int, float]] = []  # ETHUSDT (price in cents, time.time() ms of the socket write)
        self.slowest_write_ms = 0.0  # longest from asking the fake to send to its write: how late its loop ran
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="viewers-feeder", daemon=True)
        self.error: BaseException | None = None

    def __enter__(self) -> Feeder:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def sent_between(self, start_ms: float, end_ms: float) -> list[tuple[int, float]]:
        with self._lock:
            return [(cents, at) for cents, at in self.sent if start_ms <= at < end_ms]

    def _send(self, symbol: str) -> None:
        cents = self.cents[symbol]
        before = time.time()
        written = self.fake.send_trade(symbol, self.next_id[symbol], cents / 100, 0.01)
        if not written:
            return  # nobody connected yet: the same price and id go out next time
        self.cents[symbol] += 1
        self.next_id[symbol] += 1
        written_at = self.fake.last_write_time  # only this thread sends, so this is that trade's write
        assert written_at is not None
        self.slowest_write_ms = max(self.slowest_write_ms, (written_at - before) * 1000)
        if symbol == OBSERVED:
            with self._lock:
                self.sent.append((cents, written_at * 1000))

    def _run(self) -> None:
        try:
            due = time.monotonic()
            while not self._stop.wait(max(0.0, due - time.monotonic())):
                self._send(OBSERVED)
                self._stop.wait(max(0.0, due + self.period_s / 2 - time.monotonic()))
                self._send(OTHER)
                due += self.period_s
        except BaseException as exc:  # reported by the main thread, which checks on every pump
            self.error = exc


# --------------------------------------------------------------------------------------------
# The server and the tabs
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def dashboard(script: str, ws_url: str, rest_url: str, data_dir: Path, log_path: Path) -> Iterator[tuple[str, int]]:
    """``streamlit run <script>`` on live Binance at the fakes; yields (url, pid); always terminated."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUANT_")}
    env.update(QUANT_SOURCE="binance", QUANT_WS_URL=ws_url, QUANT_REST_URL=rest_url, QUANT_DATA_DIR=str(data_dir))
    url = f"http://127.0.0.1:{port}"
    with log_path.open("w") as log:  # a file, not a pipe nobody reads: a chatty server would block on it
        server = subprocess.Popen([sys.executable, "-m", "streamlit", "run", script, "--server.port", str(port),
                                   "--server.headless", "true"], cwd=ROOT, env=env, stdout=log,
                                  stderr=subprocess.STDOUT)
        try:
            if not poll(lambda: server.poll() is not None or healthy(url), timeout=60, interval=0.2) \
                    or server.poll() is not None:
                raise RuntimeError(f"streamlit did not come up (exit code {server.poll()}); see {log_path}")
            yield url, server.pid
        finally:
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(timeout=10)


class Tab:
    """One page with the observer and per-tab byte counters (CDP Network events)."""

    def __init__(self, context: Any, url: str) -> None:
        self.page = context.new_page()
        self.ws_bytes = self.http_bytes = self.frames = 0
        cdp = context.new_cdp_session(self.page)
        cdp.on("Network.webSocketFrameReceived", self._on_frame)
        cdp.on("Network.dataReceived", self._on_data)
        cdp.send("Network.enable")
        self.page.goto(url, timeout=60_000)

    def _on_frame(self, event: dict[str, Any]) -> None:
        self.ws_bytes += payload_bytes(event["response"])
        self.frames += 1

    def _on_data(self, event: dict[str, Any]) -> None:
        # encodedDataLength is what came over the wire; Chrome reports 0 for some chunks, then the body.
        self.http_bytes += event.get("encodedDataLength") or event.get("dataLength", 0)

    def reset_counters(self) -> None:
        self.ws_bytes = self.http_bytes = self.frames = 0

    def state(self) -> dict[str, Any]:
        return self.page.evaluate(PAGE_STATE_JS)

    def drain(self) -> tuple[list[list[Any]], list[list[float]]]:
        """The observer's events ([Date.now() ms, text, how]) and long tasks ([epoch ms, duration ms])
        reported since the last drain."""
        return self.page.evaluate("() => [window.__live.events.splice(0), window.__live.tasks.splice(0)]")

    def use_one_hour_lookback(self) -> None:
        """Pick "1 h" in the sidebar's Lookback box, if the page has one and shows something else."""
        box = self.page.get_by_role("combobox", name="Lookback", exact=True)
        if box.count() != 1 or box.input_value(timeout=CLICK_TIMEOUT_MS) == "1 h":
            return
        box.click(timeout=CLICK_TIMEOUT_MS)
        self.page.get_by_role("option", name="1 h", exact=True).click(timeout=CLICK_TIMEOUT_MS)


def pump(page: Any, seconds: float, feeder: Feeder) -> None:
    """Let ``seconds`` pass while Playwright delivers the tabs' CDP events (it only does inside its calls)."""
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        page.wait_for_timeout(min(200.0, left * 1000))
        if feeder.error is not None:
            raise RuntimeError(f"the fake feed failed: {feeder.error!r}")


def cents_of(text: str) -> int | None:
    """The price a metric shows ("3,139.77"), in cents; None for "—" or anything else."""
    try:
        return round(float(text.replace(",", "")) * 100)
    except ValueError:
        return None


def wait_warm(tab: Tab, feeder: Feeder, timeout_s: float) -> None:
    """Until the tab has drawn its charts and shows an ETHUSDT price the feed sent."""
    sent = set()
    state: dict[str, Any] = {}

    def warm() -> bool:
        nonlocal state
        pump(tab.page, 0.25, feeder)
        state = tab.state()
        if state["exceptions"]:
            raise RuntimeError(f"the page shows an exception, nothing to measure: {state}")
        sent.update(cents for cents, _ in feeder.sent_between(0, math.inf))
        return state["plots"] >= WARM_PLOTS and state["text"] is not None and cents_of(state["text"]) in sent

    if not poll(warm, timeout_s, 0.0):
        raise RuntimeError(f"the tab was not warm within {timeout_s:.0f} s: {state} (want ≥ {WARM_PLOTS} plots "
                           f"and {LABEL!r} showing a price the feed sent)")


def open_view(tab: Tab, name: str, feeder: Feeder) -> None:
    """Open the page's tab ``name`` (one without charts) and wait until the charts are gone from the page."""
    tab.page.get_by_role("tab", name=name, exact=True).click(timeout=CLICK_TIMEOUT_MS)
    state: dict[str, Any] = {}

    def switched() -> bool:
        nonlocal state
        pump(tab.page, 0.25, feeder)
        state = tab.state()
        return state["plots"] == 0

    if not poll(switched, CLICK_TIMEOUT_MS / 1000, 0.0):
        raise RuntimeError(f"the page still draws charts {CLICK_TIMEOUT_MS / 1000:.0f} s after opening {name!r} "
                           f"(--view wants a tab without charts): {state}")


def wait_history_loaded(rest: FakeRest, tab: Tab, feeder: Feeder, timeout_s: float) -> None:
    """Until the server has asked for no klines for :data:`HISTORY_QUIET_S` (the loader is done)."""
    seen = [len(rest.requests), time.monotonic()]

    def quiet() -> bool:
        pump(tab.page, 0.25, feeder)
        if len(rest.requests) != seen[0]:
            seen[:] = [len(rest.requests), time.monotonic()]
        return time.monotonic() - seen[1] >= HISTORY_QUIET_S

    if not poll(quiet, timeout_s, 0.0):
        raise RuntimeError(f"the server was still loading klines after {timeout_s:.0f} s")


# --------------------------------------------------------------------------------------------
# One steady-state window
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Row:
    """One window: ``tabs`` open, server CPU in % of a core, latencies (ms) and kB/s of each tab."""

    tabs: int
    seconds: float
    cpu_pct: float
    latencies: tuple[Latency, ...]
    kb_per_s: tuple[float, ...]
    frames_per_s: tuple[float, ...]
    busy_pct: tuple[float, ...]  # share of the window each tab's main thread spent in long tasks, %
    longest_task_ms: float  # the longest task of any tab's main thread
    browser_cpu_pct: float  # Chromium (every process) and Playwright's driver, % of a core
    polled: int  # changes only the fallback poll saw
    load: float  # 1 min load average at the end


def measure(tabs: list[Tab], pid: int, feeder: Feeder, seconds: float, pump_page: Any) -> Row:
    """Server CPU, each tab's bytes and tick → DOM latencies over ``seconds`` of steady state."""
    for tab in tabs:
        tab.drain()
        tab.reset_counters()
    browser0 = process_tree_cpu(os.getpid(), exclude=pid)
    start_ms, cpu0, wall0 = time.time() * 1000, cpu_seconds(pid), time.monotonic()
    pump(pump_page, seconds, feeder)
    cpu1, wall1, end_ms = cpu_seconds(pid), time.monotonic(), time.time() * 1000
    browser1 = process_tree_cpu(os.getpid(), exclude=pid)
    elapsed = wall1 - wall0
    kb = tuple((t.ws_bytes + t.http_bytes) / 1000 / elapsed for t in tabs)
    frames = tuple(t.frames / elapsed for t in tabs)
    browser_cpu = sum(cpu - browser0.get(p, 0.0) for p, cpu in browser1.items())  # a new process starts at 0
    sent = feeder.sent_between(start_ms, end_ms - GRACE_S * 1000)
    latencies, busy, polled, longest = [], [], 0, 0.0
    for tab in tabs:
        events, tasks = tab.drain()
        busy.append(busy_share(tasks, start_ms, end_ms) * 100)
        longest = max([longest, *(duration for _, duration in tasks)])
        polled += sum(how == "poll" for _, _, how in events)
        shown = [(at, cents) for at, text, _ in events if at <= end_ms and (cents := cents_of(text)) is not None]
        latencies.append(match_latencies(sent, shown, end_ms))
    return Row(len(tabs), elapsed, (cpu1 - cpu0) / elapsed * 100, tuple(latencies), kb, frames, tuple(busy),
               longest, browser_cpu / elapsed * 100, polled, os.getloadavg()[0])


def report(rows: list[Row], feeder: Feeder) -> None:
    """The table the issue asks for, then what explains it (browser load, shown values, message rate)."""
    print("\n tabs | tick→DOM ms p50 / p95 / max | trades/tab (not shown) | server CPU % of a core (per extra tab) "
          "| kB/s received per tab")
    previous: Row | None = None
    for row in rows:
        if not row.latencies:
            print(f" idle | {'':27} | {'':22} | {row.cpu_pct:22.1f} {'':15} |")
            continue
        extra = ""
        if previous is not None:
            extra = f"({(row.cpu_pct - previous.cpu_pct) / (row.tabs - previous.tabs):+.1f})"
        every = [ms for lat in row.latencies for ms in lat.per_trade]
        late = [ms for lat in row.latencies for ms in lat.censored]
        latency = " / ".join(fmt_ms(percentile(every, q, late)) for q in (50, 95, 100))
        trades = f"{min(len(lat.per_trade) + len(lat.censored) for lat in row.latencies)} ({len(late)})"
        print(f" {row.tabs:4d} | {latency:>27} | {trades:>22} | {row.cpu_pct:22.1f} {extra:>15} | "
              f"{statistics.fmean(row.kb_per_s):7.1f} ({min(row.kb_per_s):.1f}–{max(row.kb_per_s):.1f})")
        previous = row
    print("\n tabs | shown ms p50 / p95 | WebSocket msgs/s per tab | page main thread in long tasks % (longest ms) "
          "| browser CPU % of a core | load avg")
    for row in rows:
        shown = [ms for lat in row.latencies for ms in lat.per_shown]
        busy = f"{statistics.fmean(row.busy_pct):.0f} ({row.longest_task_ms:.0f})" if row.busy_pct else ""
        frames = f"{statistics.fmean(row.frames_per_s):.1f}" if row.frames_per_s else ""
        tabs = f"{row.tabs:4d}" if row.latencies else "idle"
        shown_text = f"{fmt_ms(percentile(shown, 50))} / {fmt_ms(percentile(shown, 95))}" if shown else ""
        print(f" {tabs} | {shown_text:>18} | {frames:>24} | {busy:>45} | {row.browser_cpu_pct:23.1f} | {row.load:8.2f}")
    polled = sum(row.polled for row in rows)
    print(f"\nTrades counted: ETHUSDT trades sent at least {GRACE_S:.0f} s before a window ended. One not shown "
          "(nor a later one) by then counts with its age at the end as a lower bound; a percentile it could "
          f"move up is marked ≥. Changes only the 100 ms fallback poll saw: {polled}. The fake feed's loop ran up "
          f"to {feeder.slowest_write_ms:.0f} ms late (sends are timed at the socket write).")
    busiest = max((statistics.fmean(row.busy_pct) for row in rows if row.busy_pct), default=0.0)
    if busiest >= BUSY_WARNING_PCT:
        print(f"The pages' main threads were in long tasks {busiest:.0f} % of a window: the browser did not keep up, "
              "so the latency is mostly the browser's, and a tab that asks for fewer reruns costs the server less "
              "than it would with a faster browser (see the load average: other work on this machine counts too).")


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    default_script = "server.py" if (ROOT / "server.py").exists() else "app.py"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="steady-state window per row, s (default 30)")
    parser.add_argument("--tabs", default="1,3", help="tab counts measured in turn, increasing (default 1,3)")
    parser.add_argument("--rate", type=float, default=10.0, help="trades/s per symbol (default 10)")
    parser.add_argument("--script", default=default_script, help=f"Streamlit script to run (default {default_script})")
    parser.add_argument("--settle", type=float, default=5.0, help="s after tabs are warm before a window (default 5)")
    parser.add_argument("--view", default=None,
                        help="once warm, open this tab of the page, one without charts (e.g. Feed: the live panel "
                             "without charts computed or drawn); default: stay on Charts")
    parser.add_argument("--idle", action=argparse.BooleanOptionalAction, default=True,
                        help="last, close every tab and measure the server with the feed alone (default on)")
    args = parser.parse_args(argv)
    try:
        args.tab_counts = [int(n) for n in args.tabs.split(",")]
    except ValueError:
        parser.error(f"--tabs: {args.tabs!r} is not a comma-separated list of tab counts")
    if not args.tab_counts or args.tab_counts[0] < 1 or args.tab_counts != sorted(set(args.tab_counts)):
        parser.error(f"--tabs: {args.tabs!r} must be increasing counts of at least 1, e.g. 1,3")
    if not 0 < args.rate <= 500:
        parser.error(f"--rate: {args.rate} must be in (0, 500] trades/s per symbol")
    if args.seconds < 2 * GRACE_S:
        parser.error(f"--seconds: {args.seconds} must be at least {2 * GRACE_S:.0f}")
    if not (ROOT / args.script).is_file():
        parser.error(f"--script: {args.script!r} is not a file in {ROOT}")
    return args


def last_close(klines: FakeKlines, symbol: str) -> float:
    """The history's last 1 s close, so live trades carry on from the chart rather than jump."""
    now = time.time_ns() // 1_000_000
    return round(float(klines.rows(symbol, "1s", now - 10_000, now, 20)[-1][4]), 2)


def main() -> None:
    args = parse_args()
    if CHROMIUM is None:
        raise SystemExit("Debian chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    # A plain `kill` runs the cleanup below too (the server is terminated, the browser closed).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    klines = FakeKlines(START_PRICES)
    prices = {symbol: last_close(klines, symbol) for symbol in START_PRICES}
    print(f"script {args.script}, {args.rate:g} trades/s per symbol, windows of {args.seconds:g} s, tabs {args.tabs}, "
          f"view {args.view or 'Charts'}; "
          f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}")
    rows: list[Row] = []
    with contextlib.ExitStack() as stack:
        data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="viewers-")))
        ws = stack.enter_context(FakeBinance(ping_interval=None))
        rest = stack.enter_context(FakeRest(klines=klines))
        feeder = stack.enter_context(Feeder(ws, prices, args.rate))
        log_path = data_dir / "streamlit.log"
        try:
            url, pid = stack.enter_context(dashboard(args.script, ws.url, rest.url, data_dir / "data", log_path))
            playwright = stack.enter_context(sync_playwright())
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            stack.callback(browser.close)
            context = browser.new_context(viewport={"width": 1600, "height": 1200})
            context.add_init_script(OBSERVER_JS)
            tabs: list[Tab] = []
            started = time.monotonic()
            for count in args.tab_counts:
                while len(tabs) < count:
                    tab = Tab(context, url)
                    tabs.append(tab)
                    wait_warm(tab, feeder, WARM_TIMEOUT_S)
                    if len(tabs) == 1:
                        tab.use_one_hour_lookback()
                        wait_history_loaded(rest, tab, feeder, WARM_TIMEOUT_S)
                        wait_warm(tab, feeder, WARM_TIMEOUT_S)
                        print(f"first tab warm and history loaded after {time.monotonic() - started:.1f} s")
                    if args.view:
                        open_view(tab, args.view, feeder)
                pump(tabs[0].page, args.settle, feeder)
                rows.append(measure(tabs, pid, feeder, args.seconds, tabs[0].page))
                states = [tab.state() for tab in tabs]
                print(f"{count} tab(s) measured; per tab: plots {[s['plots'] for s in states]}, "
                      f"visibility {sorted({s['visibility'] for s in states})}, "
                      f"exceptions shown {sum(s['exceptions'] for s in states)}, "
                      f"value element found {[s['attaches'] for s in states]} time(s)")
            if args.idle:
                for tab in tabs:
                    tab.page.close()
                pump_page = context.new_page()  # blank: keeps Playwright's event loop turning
                pump(pump_page, args.settle, feeder)
                rows.append(measure([], pid, feeder, args.seconds, pump_page))
        except Exception:
            if log_path.exists():
                print(f"--- last lines of the server log ({log_path}) ---", file=sys.stderr)
                print("\n".join(log_path.read_text(errors="replace").splitlines()[-30:]), file=sys.stderr)
            raise
    report(rows, feeder)


if __name__ == "__main__":
    main()
