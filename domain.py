"""The domain's vocabulary, defined once: bar timeframes, hedge regressions and the rolling-window range.

The lowest layer: it imports nothing of the project, so the settings, records, pairs, alerts, the
UI and the command lines all speak these values. What a user reads ("1 min", "Rolling OLS") is
not here: display labels live in :mod:`ui.labels`; here are names and numbers only.
"""

from __future__ import annotations

import enum
import numbers
import re
from dataclasses import dataclass, field

WINDOW_RANGE = (10, 200)  # rolling window of every analytic, bars (inclusive)


def check_window(window: object) -> int:
    """``window`` (bars) as an int if it is a whole number inside :data:`WINDOW_RANGE`.

    The one window check of the settings, the scanner, alert rules and pair parameters. Raises
    ValueError naming the setting, e.g. ``window: 9 must be between 10 and 200 bars``.
    """
    low, high = WINDOW_RANGE
    if not isinstance(window, numbers.Integral) or isinstance(window, bool):  # True is an int to Python
        raise ValueError(f"window: {window!r} must be a whole number of bars between {low} and {high}")
    bars = int(window)
    if not low <= bars <= high:
        raise ValueError(f"window: {bars} must be between {low} and {high} bars")
    return bars


@dataclass(frozen=True, order=True, slots=True)
class Timeframe:
    """A bar length: ``ms`` (milliseconds) and its short name (``"1s"``, ``"1m"``, ``"5m"``).

    Ordered by length. :meth:`of` finds one by name or by length; only those in
    :data:`TIMEFRAMES` exist.
    """

    ms: int
    name: str = field(compare=False)

    @property
    def seconds(self) -> float:
        return self.ms / 1000

    @classmethod
    def of(cls, key: str | int | Timeframe) -> Timeframe:
        """The timeframe named ``key`` (``"1m"``) or ``key`` ms long (``60000``).

        ValueError naming what was wrong otherwise: ``timeframe: '2m' is not one of 1s, 1m, 5m`` or
        ``timeframe_ms: 5000 is not one of 1000, 60000 or 300000`` (60000.0, a float, is none either).
        """
        if isinstance(key, Timeframe) and key in TIMEFRAMES:
            return key
        if isinstance(key, str):
            if key in _BY_NAME:
                return _BY_NAME[key]
            raise ValueError(f"timeframe: {key!r} is not one of {', '.join(_BY_NAME)}")
        if isinstance(key, numbers.Integral) and not isinstance(key, bool) and int(key) in _BY_MS:
            return _BY_MS[int(key)]
        *first, last = (str(ms) for ms in _BY_MS)
        raise ValueError(f"timeframe_ms: {key!r} is not one of {', '.join(first)} or {last}")


ONE_SECOND = Timeframe(1_000, "1s")
ONE_MINUTE = Timeframe(60_000, "1m")
FIVE_MINUTES = Timeframe(300_000, "5m")
TIMEFRAMES = (ONE_SECOND, ONE_MINUTE, FIVE_MINUTES)  # shortest first
_BY_NAME = {timeframe.name: timeframe for timeframe in TIMEFRAMES}
_BY_MS = {timeframe.ms: timeframe for timeframe in TIMEFRAMES}


class Regression(enum.Enum):
    """How the hedge ratio β of a pair is fitted. The value is a stable name (cache keys, logs)."""

    ROLLING_OLS = "rolling_ols"  # OLS over each trailing window
    STATIC_OLS = "static_ols"  # one OLS fit over the whole span
    HUBER = "huber"  # one robust (Huber) fit over the whole span
    THEIL_SEN = "theil_sen"  # one Theil–Sen fit over the whole span
    KALMAN = "kalman"  # a Kalman filter, its prior an OLS fit over the first bars

    @property
    def in_sample(self) -> bool:
        """Whether one fit looks at the whole span at once, later bars included."""
        return self in (Regression.STATIC_OLS, Regression.HUBER, Regression.THEIL_SEN)

    @property
    def causal(self) -> bool:
        """Whether each value depends on its own and earlier bars only."""
        return not self.in_sample

    @property
    def span_free(self) -> bool:
        """Whether each value depends only on its own trailing window, not on where the span starts:
        past values never change, so a span may be cut from a longer one or extended bar by bar.
        An in-sample fit or the Kalman prior moves with the span."""
        return self is Regression.ROLLING_OLS


class Market(enum.Enum):
    """Where a leg trades. The value is the research store's partition name and the archives' folder
    name's key (``spot``, ``um``: Binance's own names for spot and USDⓈ-M futures)."""

    SPOT = "spot"
    USDM = "um"


PERP_SUFFIX = ".P"  # a USDⓈ-M perpetual's leg name: the exchange symbol plus ".P" (TradingView's convention)
_LEG_RE = re.compile(r"^([A-Z0-9]{2,20})(\.P)?$")


@dataclass(frozen=True, slots=True)
class Leg:
    """One side of a pair: a symbol on a market. Its one name, everywhere a user reads or types a leg
    (pickers, alerts, exports, the scanner, the recorder): ``ETHUSDT`` is spot, ``ETHUSDT.P`` the
    USDⓈ-M perpetual. ``symbol`` is the exchange's own symbol (``ETHUSDT`` on both markets)."""

    market: Market
    symbol: str

    @property
    def name(self) -> str:
        """The leg's name: the symbol, plus :data:`PERP_SUFFIX` on USDⓈ-M."""
        return self.symbol + PERP_SUFFIX if self.market is Market.USDM else self.symbol

    @classmethod
    def parse(cls, raw: str) -> Leg:
        """The leg named ``raw`` (case and surrounding space ignored). ValueError naming the input
        when it is not 2–20 ASCII letters or digits with an optional ``.P``."""
        # ASCII before upper-casing: upper() turns some other letters into ASCII ones (ſ → S, ß → SS, ﬁ → FI),
        # which would watch a symbol the user never typed.
        text = raw.strip() if isinstance(raw, str) else ""
        match = _LEG_RE.fullmatch(text.upper()) if text.isascii() else None
        if match is None:
            raise ValueError(f"invalid leg {raw!r}: expected a symbol such as ETHUSDT (spot) "
                             f"or ETHUSDT{PERP_SUFFIX} (USDⓈ-M perpetual)")
        return cls(Market.USDM if match.group(2) else Market.SPOT, match.group(1))
