"""An offline, seeded market of cointegrated symbols, for demos, tests and benchmarks.

Model (all in *market* time; wall-clock pacing never changes what is generated):

* The first symbol is the base ("x" leg). Its log price ``x_t`` is a driftless random walk with
  annualised volatility ``SymbolSpec.annual_vol`` (BTC-like: 55 %), simulated exactly at every
  trade time.
* Every other symbol ``i`` has log price::

      log p_i(t) = alpha_i + beta_i * (x_t - x_0) + mu_i + y_i(t)

  where ``x_0`` is the base's starting log price, ``alpha_i`` starts at ``log(start_price_i)``,
  ``mu_i`` (the spread's equilibrium level) starts at 0 and ``y_i`` is a zero-mean
  Ornstein–Uhlenbeck process with half-life ``SPREAD_HALF_LIFE_S`` and stationary standard
  deviation ``SPREAD_SD``. Hence ``log p_i - beta_i * log p_base`` is stationary between regime
  breaks: the pair is cointegrated, with intercept ``alpha_i - beta_i * x_0 + mu_i``.
* Regime breaks arrive per non-base symbol as a Poisson process (mean interval
  ``REGIME_MEAN_INTERVAL_S``). A break moves ``mu_i`` by ``N(0, REGIME_MU_SHIFT_SD)`` and
  ``beta_i`` by ``N(0, REGIME_BETA_SHIFT_SD)``. ``alpha_i`` is adjusted so that the price does not
  jump; the spread then drifts to its new level over a few half-lives, which is what a real
  relationship break looks like on a z-score chart. Breaks are recorded in
  :attr:`SimulatedSource.regime_breaks`.
* Trades arrive per symbol as a Poisson process (``SymbolSpec.rate_per_s``) at integer
  millisecond times. A trade prints at the bid (one tick under the latent mid, rounded down to the
  tick grid) when the buyer is the maker, i.e. a seller hit the bid, else one tick above it at the
  ask: a constant one-tick spread with bid/ask bounce. Quantities are lognormal in quote currency
  (median ``SymbolSpec.median_notional``, log-sd ``QTY_LOG_SD``), rounded to the lot step, at
  least one lot.
* Trade ids are consecutive per symbol in time order, starting at ``start_ms`` (see ``_Market``).

Everything is drawn from numpy generators seeded by ``(seed, role, symbol)``, and simulated in
chunks of at most ``CHUNK_MS`` of market time (vectorised), so the sequence of trades for a
given ``(symbols, seed, start_ms)`` is identical across runs, machines and pacing speeds.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

import numpy as np
from scipy.signal import lfilter

from analytics import rebar
from analytics.bars import bars_frame_from_columns
from config import SECONDS_PER_YEAR, normalize_symbol
from domain import TIMEFRAMES
from ingestion.paced import run_paced
from ingestion.source import Capabilities, SourceSpec, SourceStats, TradeSink, spot_style_legs
from records import BarArrays, EventKind, FeedEvent, FeedState, Trade
from records.clock import SYSTEM_CLOCK, Clock

log = logging.getLogger(__name__)

CHUNK_MS = 60_000  # market milliseconds simulated per vectorised step (memory/latency trade-off)
SPREAD_HALF_LIFE_S = 120.0  # OU half-life of each spread, market seconds (2 minutes)
SPREAD_SD = 0.0015  # stationary standard deviation of each spread, log units (15 bp)
REGIME_MEAN_INTERVAL_S = 45 * 60.0  # mean market seconds between regime breaks, per non-base symbol
REGIME_MU_SHIFT_SD = 0.003  # sd of the jump in the spread's equilibrium level at a break, log units
REGIME_BETA_SHIFT_SD = 0.05  # sd of the jump in the hedge ratio beta at a break (dimensionless)
BETA_BOUNDS = (0.3, 3.0)  # beta is clipped into this range after a break
QTY_LOG_SD = 1.2  # log-sd of a trade's quote notional (heavy right tail like real trade sizes)
BUYER_MAKER_PROBABILITY = 0.5  # probability that a trade was seller-initiated (buyer is maker)

_KAPPA = math.log(2.0) / SPREAD_HALF_LIFE_S  # OU mean-reversion speed, 1/s


@dataclass(frozen=True, slots=True)
class SymbolSpec:
    """Simulation parameters of one symbol.

    ``tick_decimals``/``lot_decimals``: the tick size is ``10**-tick_decimals`` (quote currency) and
    the lot step ``10**-lot_decimals`` (base units). ``rate_per_s``: mean trades per market second.
    ``annual_vol``: annualised volatility of log price, used only when the symbol is the base leg.
    ``beta``: initial hedge ratio on the base leg's log price, used only when it is not the base.
    ``median_notional``: median trade size in quote currency.
    """

    start_price: float
    tick_decimals: int
    lot_decimals: int
    rate_per_s: float
    annual_vol: float
    beta: float
    median_notional: float


# Rough Binance spot levels and activity in late 2025; only the order of magnitude matters.
KNOWN_SYMBOLS: dict[str, SymbolSpec] = {
    "BTCUSDT": SymbolSpec(90_000.0, 2, 5, 10.0, 0.55, 1.0, 300.0),
    "ETHUSDT": SymbolSpec(3_100.0, 2, 4, 8.0, 0.70, 1.15, 200.0),
    "SOLUSDT": SymbolSpec(135.0, 2, 3, 4.0, 0.85, 1.35, 100.0),
    "BNBUSDT": SymbolSpec(880.0, 2, 3, 2.0, 0.45, 0.80, 100.0),
    "XRPUSDT": SymbolSpec(2.0, 4, 1, 3.0, 0.80, 1.25, 100.0),
}
DEFAULT_RATE_PER_S = 2.0  # trades per market second of a symbol not in KNOWN_SYMBOLS


def _market_symbols(symbols: Sequence[str]) -> tuple[str, ...]:
    """Validated, de-duplicated symbols (order kept); at least two, since the market is a pair or more."""
    normalized: list[str] = []
    for raw in symbols:
        symbol = normalize_symbol(raw)  # ConfigError (a ValueError) names a bad symbol
        if symbol not in normalized:
            normalized.append(symbol)
    if len(normalized) < 2:
        raise ValueError(f"simulated market needs at least 2 distinct symbols, got {list(symbols)!r}")
    return tuple(normalized)


def _unit_hash(text: str) -> float:
    """A deterministic number in [0, 1) from ``text`` (``hash()`` is salted per process)."""
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def symbol_spec(symbol: str) -> SymbolSpec:
    """Parameters for ``symbol``: the table entry if known, else a deterministic hash-based default.

    The default starts between 50 and 200 (quote currency), with a tick of about 1e-4 of the price
    (``10**(floor(log10(price)) - 4)``), a lot worth about 0.1-1 quote units, 2 trades/s, 80 %
    annualised volatility and a beta between 0.8 and 1.4.
    """
    if symbol in KNOWN_SYMBOLS:
        return KNOWN_SYMBOLS[symbol]
    price = 100.0 * 2.0 ** (2.0 * _unit_hash(symbol + "/price") - 1.0)
    magnitude = math.floor(math.log10(price))
    return SymbolSpec(
        start_price=round(price, 2),
        tick_decimals=4 - magnitude,
        lot_decimals=magnitude + 1,
        rate_per_s=DEFAULT_RATE_PER_S,
        annual_vol=0.80,
        beta=0.8 + 0.6 * _unit_hash(symbol + "/beta"),
        median_notional=100.0,
    )


@dataclass(frozen=True, slots=True)
class RegimeBreak:
    """A change of one symbol's cointegrating relation at market time ``ts_ms`` (epoch ms).

    Before and after, ``log p_symbol ≈ intercept + beta * log p_base`` plus a zero-mean OU spread;
    right after the break the spread is off its new mean and reverts with ``SPREAD_HALF_LIFE_S``.
    """

    ts_ms: int
    symbol: str
    intercept_before: float
    intercept_after: float
    beta_before: float
    beta_after: float


@dataclass(frozen=True, slots=True)
class _Chunk:
    """One chunk of trades in emission order, as arrays: ``symbol`` indexes the market's symbols."""

    symbol: np.ndarray  # intp
    trade_ids: np.ndarray  # int64
    ts_ms: np.ndarray  # int64
    prices: np.ndarray
    qtys: np.ndarray
    buyer_is_maker: np.ndarray  # bool


class _Market:
    """Mutable simulation state. A fresh instance always replays the same market from the start."""

    def __init__(self, symbols: tuple[str, ...], specs: tuple[SymbolSpec, ...], seed: int,
                 start_ms: int, breaks_out: list[RegimeBreak], first_ids: Sequence[int] | None = None) -> None:
        self.symbols = symbols
        self.specs = specs
        self.t_ms = start_ms
        self.breaks_out = breaks_out
        n = len(symbols)
        keys = [int.from_bytes(hashlib.blake2b(s.encode(), digest_size=4).digest(), "big") for s in symbols]
        # Separate streams per role and symbol, so e.g. the break schedule is independent of how many
        # trades were drawn in between.
        self.arrival_rngs = [np.random.default_rng([seed, 1, k]) for k in keys]
        self.regime_rngs = [np.random.default_rng([seed, 2, k]) for k in keys]
        self.latent_rng = np.random.default_rng([seed, 3, *keys])
        # Ids start at the start time in epoch ms: a restarted simulation writing into the same
        # database continues above every id it stored before (at < 1 trade/ms per symbol), so
        # the idempotent insert never mistakes new trades for re-sent ones.
        self.next_id = list(first_ids) if first_ids is not None else [start_ms] * n
        self.x0 = math.log(specs[0].start_price)
        self.x = self.x0
        self.sigma = specs[0].annual_vol / math.sqrt(SECONDS_PER_YEAR)  # per sqrt(market second)
        self.alpha = [math.log(spec.start_price) for spec in specs]
        self.beta = [1.0] + [spec.beta for spec in specs[1:]]
        self.mu = [0.0] * n
        self.y = [0.0] * n  # OU deviation from mu; starts in equilibrium
        self.next_break_ms = [0] + [self._draw_break_time(i, start_ms) for i in range(1, n)]
        self.tick_scale = np.array([10.0**spec.tick_decimals for spec in specs])
        self.lot_scale = [10.0**spec.lot_decimals for spec in specs]

    def _draw_break_time(self, i: int, after_ms: int) -> int:
        gap_ms = self.regime_rngs[i].exponential(REGIME_MEAN_INTERVAL_S * 1000.0)
        return after_ms + max(1, math.ceil(gap_ms))

    def intercept(self, i: int) -> float:
        """The cointegrating intercept c in ``log p_i = c + beta_i * log p_base`` (+ OU)."""
        return self.alpha[i] - self.beta[i] * self.x0 + self.mu[i]

    def step(self) -> _Chunk:
        """Simulate ``[t_ms, end)`` with end at the next chunk boundary or regime break."""
        n_sym = len(self.symbols)
        start = self.t_ms
        end = min(start + CHUNK_MS, *self.next_break_ms[1:]) if n_sym > 1 else start + CHUNK_MS
        duration_s = (end - start) / 1000.0

        ts_parts: list[np.ndarray] = []
        id_parts: list[np.ndarray] = []
        maker_parts: list[np.ndarray] = []
        qty_parts: list[np.ndarray] = []
        sym_parts: list[np.ndarray] = []
        for i, spec in enumerate(self.specs):
            rng = self.arrival_rngs[i]
            count = int(rng.poisson(spec.rate_per_s * duration_s))
            # Given the count, Poisson arrival times are i.i.d. uniform over the interval.
            ts_parts.append(np.sort(rng.integers(start, end, count)))
            id_parts.append(np.arange(self.next_id[i], self.next_id[i] + count, dtype=np.int64))
            self.next_id[i] += count
            maker_parts.append(rng.random(count) < BUYER_MAKER_PROBABILITY)
            notional = spec.median_notional * np.exp(QTY_LOG_SD * rng.standard_normal(count))
            lots = np.maximum(1.0, np.rint(notional / spec.start_price * self.lot_scale[i]))
            # Dividing an integer by an exact power of ten gives the double nearest the decimal
            # value, i.e. the same float as parsing "0.00123" (no 0.30000000000000004 artefacts).
            qty_parts.append(lots / self.lot_scale[i])
            sym_parts.append(np.full(count, i, dtype=np.intp))

        all_ts = np.concatenate(ts_parts)
        order = np.argsort(all_ts, kind="stable")  # stable: keeps each symbol's own order
        ts_sorted = all_ts[order]
        sym = np.concatenate(sym_parts)[order]
        maker = np.concatenate(maker_parts)[order]

        # Latent processes at every trade time plus the chunk end (where breaks happen).
        points = np.append(ts_sorted, end)
        dt_s = np.diff(points, prepend=start) / 1000.0
        noise = self.latent_rng.standard_normal((n_sym, len(points)))
        x = self.x + self.sigma * np.cumsum(np.sqrt(dt_s) * noise[0])
        log_price = np.empty((n_sym, len(points)))
        log_price[0] = x
        # Exact OU on an irregular grid, vectorised: y_k = phi_k y_{k-1} + e_k with
        # phi_k = P_k / P_{k-1}, P_k = exp(-kappa (t_k - start)) gives y_k = P_k (y_0 + sum e_j / P_j).
        # P stays >= exp(-kappa * CHUNK_MS / 1000) ≈ 0.7, so the division is harmless.
        decay = np.exp(-_KAPPA * (points - start) / 1000.0)
        phi = np.exp(-_KAPPA * dt_s)
        for i in range(1, n_sym):
            shocks = SPREAD_SD * np.sqrt(1.0 - phi * phi) * noise[i]
            y = decay * (self.y[i] + np.cumsum(shocks / decay))
            log_price[i] = self.alpha[i] + self.beta[i] * (x - self.x0) + self.mu[i] + y
            self.y[i] = float(y[-1])
        self.x = float(x[-1])
        self.t_ms = end

        n_trades = len(ts_sorted)
        mid = np.exp(log_price[sym, np.arange(n_trades)])
        scale = self.tick_scale[sym]
        bid_ticks = np.maximum(1.0, np.floor(mid * scale))
        prices = (bid_ticks + ~maker) / scale  # maker buyer → trade at the bid, else at the ask

        for i in range(1, n_sym):
            if self.next_break_ms[i] == end:
                self._regime_break(i, end)

        return _Chunk(sym, np.concatenate(id_parts)[order], ts_sorted, prices, np.concatenate(qty_parts)[order], maker)

    def _regime_break(self, i: int, ts_ms: int) -> None:
        rng = self.regime_rngs[i]
        intercept_before, beta_before = self.intercept(i), self.beta[i]
        mu_shift = float(rng.normal(0.0, REGIME_MU_SHIFT_SD))
        beta_after = float(np.clip(beta_before + rng.normal(0.0, REGIME_BETA_SHIFT_SD), *BETA_BOUNDS))
        # Keep the price continuous: alpha absorbs the beta change at the current base level, and the
        # OU deviation absorbs the level change (the spread is now off its new equilibrium).
        self.alpha[i] += (beta_before - beta_after) * (self.x - self.x0)
        self.beta[i] = beta_after
        self.mu[i] += mu_shift
        self.y[i] -= mu_shift
        self.next_break_ms[i] = self._draw_break_time(i, ts_ms)
        brk = RegimeBreak(ts_ms, self.symbols[i], intercept_before, self.intercept(i), beta_before, beta_after)
        self.breaks_out.append(brk)
        log.debug("simulated regime break: %s", brk)


class SimulatedSource:
    """A seeded simulated market (see the module docstring) that implements ``Source``.

    ``symbols``: at least two; the first is the base ("x") leg, the others are cointegrated with it.
    ``seed``: selects the market; same seed, symbols and ``start_ms`` → identical trades.
    ``speed``: market seconds per wall-clock second when paced by :meth:`run` (100 = 100x faster).
    ``start_ms``: market time of the start, epoch ms; defaults to the wall clock at construction so
    charts look live. ``clock``: the wall clock of that default, and the time :meth:`run` paces
    against and stamps ``recv_ms`` and events with (a test's, or the machine's).
    """

    name = "simulated"

    def __init__(self, symbols: Sequence[str], seed: int = 7, speed: float = 1.0,
                 start_ms: int | None = None, past_ms: int = 0, *, clock: Clock = SYSTEM_CLOCK) -> None:
        if not (math.isfinite(speed) and speed > 0):
            raise ValueError(f"speed must be a finite number > 0, got {speed!r}")
        if type(seed) is not int:
            raise ValueError(f"seed must be an int, got {seed!r}")
        self.symbols: tuple[str, ...] = _market_symbols(symbols)
        self._wanted = self.symbols  # set_symbols (any thread) → applied by the generating thread
        self.specs: tuple[SymbolSpec, ...] = tuple(symbol_spec(s) for s in self.symbols)
        self.seed = seed
        self.speed = float(speed)
        self._clock = clock
        self.start_ms: int = clock.now_ms() if start_ms is None else int(start_ms)
        self.label = f"SIMULATED market (seed {seed})"
        self.stats = SourceStats()
        # Breaks seen by the latest generate()/run() pass, in time order (appended as simulated).
        self.regime_breaks: list[RegimeBreak] = []
        self.past_ms = int(past_ms)
        self._past: dict[tuple[str, int], BarArrays] | None = None
        self._past_lock = threading.Lock()

    def klines(self, symbol: str, interval_ms: int, start_ms: int, end_ms: int, stop: threading.Event) -> BarArrays:
        """The market's own past: closed bars of ``symbol`` opening in ``[start_ms, end_ms)``.

        The past covers ``past_ms`` before ``start_ms`` and ends exactly where the live market
        starts (see :func:`simulate_past`); it is simulated once, on the first call (about 2 s for a
        day of two symbols), for 1 s, 1 min and 5 min bars. A symbol added later has no past.
        """
        with self._past_lock:
            if self._past is None:
                self._past = simulate_past(self.symbols, self.specs, self.seed, self.start_ms, self.past_ms)
        bars = self._past.get((symbol, interval_ms))
        if bars is None:
            return BarArrays.empty()
        keep = (bars.start_ms >= start_ms) & (bars.start_ms < end_ms)
        return BarArrays(*(getattr(bars, name)[keep] for name in ("start_ms", *BarArrays.COLUMNS)))

    def set_symbols(self, symbols: Sequence[str]) -> None:
        """Simulate ``symbols`` from the next trade on; the market carries on where it is.

        Symbols already simulated keep their last price and continue their trade ids (no gap, no
        jump); new ones start at their usual price. The base leg stays first while it is watched.
        From the switch on the market is a fresh draw of the same model (spreads restart at
        their equilibrium, new regime-break schedule), deterministic for a given seed and history.
        """
        wanted = _market_symbols(symbols)
        current = [s for s in self.symbols if s in wanted]
        self._wanted = (*current, *(s for s in wanted if s not in current))

    def generate(self, seconds: float | None = None, *, until_ms: int | None = None) -> Iterator[Trade]:
        """Yield the market's trades in time order without any pacing.

        Stops before market time ``start_ms + seconds * 1000`` or ``until_ms`` (epoch ms), whichever
        is earlier; endless if neither is given. The trades are exactly those :meth:`run` emits
        except ``recv_ms``, which here equals ``ts_ms`` (no wall clock is involved, so the output
        is fully reproducible). Resets :attr:`regime_breaks`.
        """
        limit = math.inf
        if seconds is not None:
            limit = self.start_ms + seconds * 1000.0
        if until_ms is not None:
            limit = min(limit, until_ms)
        self.regime_breaks = []
        symbols, specs, start, first_ids = self.symbols, self.specs, self.start_ms, None
        last_price: dict[str, float] = {}
        last_id: dict[str, int] = {}
        while True:
            market = _Market(symbols, specs, self.seed, start, self.regime_breaks, first_ids)
            while self._wanted == symbols:
                chunk = market.step()
                # Plain Python values: a Trade never carries numpy scalars.
                for symbol, trade_id, ts, price, qty, maker in zip(
                    [symbols[i] for i in chunk.symbol.tolist()], chunk.trade_ids.tolist(), chunk.ts_ms.tolist(),
                    chunk.prices.tolist(), chunk.qtys.tolist(), chunk.buyer_is_maker.tolist(), strict=True,
                ):
                    if ts >= limit:
                        return
                    if self._wanted != symbols:  # a symbol change applies from the next trade on
                        break
                    last_price[symbol], last_id[symbol], start = price, trade_id, ts + 1
                    yield Trade(symbol, trade_id, ts, ts, price, qty, maker)
            symbols = self.symbols = self._wanted
            specs = self.specs = tuple(
                replace(symbol_spec(s), start_price=last_price.get(s, symbol_spec(s).start_price)) for s in symbols)
            first_ids = [last_id[s] + 1 if s in last_id else start for s in symbols]
            log.info("simulated market now trades %s (from %d)", ",".join(symbols), start)

    def run(self, sink: TradeSink, stop: threading.Event) -> None:
        """Emit trades paced against the wall clock (scaled by ``speed``) until ``stop`` is set.

        Market time ``start_ms`` corresponds to the moment ``run`` starts; a trade is emitted once
        ``(ts_ms - start_ms) / speed`` wall-clock milliseconds have passed, with ``recv_ms`` set to
        the wall clock at emission. Returns within a few milliseconds of ``stop`` being set.
        """
        stats = self.stats
        stats.state = FeedState.CONNECTED
        stats.connected_since_ms = self._clock.now_ms()
        stats.last_error = None
        sink.on_event(FeedEvent(self._clock.now_ms(), EventKind.STARTED, None,
                                f"simulated market seed={self.seed} speed={self.speed:g}x "
                                f"symbols={','.join(self.symbols)} start_ms={self.start_ms}"))
        run = None
        try:
            run = run_paced(self.generate(), sink, stop, speed=self.speed, stats=stats, origin_ms=self.start_ms,
                            count_messages=True, clock=self._clock)
        except Exception as exc:
            stats.last_error = f"{type(exc).__name__}: {exc}"
            log.exception("simulated source failed")
            sink.on_event(FeedEvent(self._clock.now_ms(), EventKind.ERROR, None, stats.last_error))
            raise
        finally:
            stats.state = FeedState.STOPPED
            if run is not None:
                sink.on_event(FeedEvent(self._clock.now_ms(), EventKind.STOPPED, None,
                                        f"stopped after {run.emitted} trades"))


def simulate_past(symbols: tuple[str, ...], specs: tuple[SymbolSpec, ...], seed: int, start_ms: int,
                  span_ms: int) -> dict[tuple[str, int], BarArrays]:
    """Bars of the ``span_ms`` before ``start_ms``, continuous with a market that starts there.

    The model of the live market is simulated at one-second steps (the base's random walk, each
    spread's exact OU step, Poisson trade counts and lognormal sizes per second), forward from the
    start state with a seed of its own, and then played backwards in time: a random walk and a
    stationary OU spread reversed are again a random walk and a stationary OU spread, and the
    reversed path ends exactly at the start prices with every spread at its equilibrium, where the
    live market begins. (No regime breaks in the past.) A second's bar opens at the previous
    close and spans the two ± the bid/ask bounce; seconds without trades have no bar, as in the
    tick model. Returns the whole 1 s, 1 min and 5 min bars per symbol (partial bars at either
    end of the span left out). A day of two symbols takes a few tens of milliseconds.
    """
    seconds = span_ms // 1_000
    if seconds <= 1:
        return {}
    n = len(symbols)
    rng = np.random.default_rng([seed, 4, n])
    x0 = math.log(specs[0].start_price)
    sigma = specs[0].annual_vol / math.sqrt(SECONDS_PER_YEAR)
    phi = math.exp(-_KAPPA)
    # Forward paths at the end of each second 0..seconds-1, started from the live start state.
    x = x0 + sigma * np.cumsum(rng.standard_normal(seconds))
    log_price = np.empty((n, seconds))
    log_price[0] = x
    shocks = SPREAD_SD * math.sqrt(1 - phi * phi) * rng.standard_normal((n, seconds))
    for i in range(1, n):
        spread = lfilter_ar1(shocks[i], phi)
        log_price[i] = math.log(specs[i].start_price) + specs[i].beta * (x - x0) + spread
    # g_0 is the start state, g_k the forward value k seconds on; played backwards, g_k is the value k
    # seconds before the start: the past second j (oldest first) opens at g_j and closes at g_(j-1).
    g = np.concatenate((np.log([[spec.start_price] for spec in specs]), log_price), axis=1)
    closes = np.exp(g[:, :seconds][:, ::-1])
    opens = np.exp(g[:, 1:][:, ::-1])
    end = start_ms - start_ms % 1_000
    starts = end - 1_000 * np.arange(seconds, 0, -1, dtype=np.int64)
    out: dict[tuple[str, int], BarArrays] = {}
    for i, (name, spec) in enumerate(zip(symbols, specs, strict=True)):
        counts = rng.poisson(spec.rate_per_s, seconds)
        tick = 10.0 ** -spec.tick_decimals
        close = np.round(closes[i] / tick) * tick
        opened = np.round(opens[i] / tick) * tick
        high, low = np.maximum(opened, close) + tick, np.maximum(np.minimum(opened, close) - tick, tick)
        notional = spec.median_notional * counts * np.exp(QTY_LOG_SD ** 2 / 2)  # mean of the lognormal sizes
        volume = np.round(notional / close * 10.0 ** spec.lot_decimals) / 10.0 ** spec.lot_decimals
        traded = counts > 0
        frame = bars_frame_from_columns(starts[traded], {
            "open": opened[traded], "high": high[traded], "low": low[traded], "close": close[traded],
            "volume": volume[traded], "trades": counts[traded], "vwap": (opened[traded] + close[traded]) / 2})
        for interval_ms in (timeframe.ms for timeframe in TIMEFRAMES):  # the 1 s bars, then re-barred
            bars = frame if interval_ms == 1_000 else rebar(frame, interval_ms)
            first_full = starts[0] + (-starts[0]) % interval_ms
            last_full = start_ms - start_ms % interval_ms - interval_ms  # the bar holding start_ms is partial
            at = bars.index.as_unit("ms").asi8
            bars = bars[(at >= first_full) & (at <= last_full)]
            out[(name, interval_ms)] = BarArrays(
                bars.index.as_unit("ms").asi8.astype(np.int64), bars["open"].to_numpy(np.float64),
                bars["high"].to_numpy(np.float64), bars["low"].to_numpy(np.float64),
                bars["close"].to_numpy(np.float64), bars["volume"].to_numpy(np.float64),
                bars["trades"].to_numpy(np.int64), bars["vwap"].to_numpy(np.float64))
    return out


def lfilter_ar1(shocks: np.ndarray, phi: float) -> np.ndarray:
    """``y_k = phi * y_{k-1} + shocks_k`` from ``y_{-1} = 0`` (an exact OU path on a regular grid)."""
    return lfilter([1.0], [1.0, -phi], shocks)


SPEC = SourceSpec(
    name="simulated",
    label="Simulated market",
    # Ids restart at the start time on every run, so they are not exchange ids.
    capabilities=Capabilities(live=False, exchange_ids=False, resubscribe=True, backfill=False, history=True),
    create=lambda feed: SimulatedSource(feed.symbols, seed=feed.seed, speed=feed.speed,
                                        past_ms=int(feed.history_hours * 3_600_000)),
    database=lambda _feed: "simulated",
    # The past of the running market itself (a stand-in source in tests has none).
    history=lambda _feed, source, _rest: source if isinstance(source, SimulatedSource) else None,
    legs=spot_style_legs("simulated"),
)
