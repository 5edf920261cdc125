"""Alert rules: a frozen, validated :class:`AlertRule` and a small text parser for it.

Grammar of :func:`parse_rule` (case-insensitive, tokens separated by spaces, ``<``/``>`` need none)::

    rule       := pair_rule | price_rule
    pair_rule  := METRIC OPERATOR NUMBER                      e.g. "zscore > 2", "corr<0.5"
    price_rule := SYMBOL "price" OPERATOR NUMBER              e.g. "BTCUSDT price > 90000"
                | "price" SYMBOL OPERATOR NUMBER              e.g. "price ETHUSDT < 3000"
    METRIC     := zscore | z | z-score | z_score | spread | corr | correlation | beta
    OPERATOR   := ">" | "<" | "crosses above" | "crosses below" | crosses_above | crosses_below
    NUMBER     := anything Python's float() accepts except nan/inf, e.g. -2, 2.5, 1e3

A z-score rule whose threshold the z-score cannot reach for the rule's window is refused:
``|z| <= (window - 1) / sqrt(window)`` (2.85 for 10 bars), as the current bar is part of its own
window. A bare ``ETHUSDT > 3000`` is deliberately rejected: it would turn every misspelt metric
(``zscroe > 2``) into a price alert on a symbol that does not exist. Pair metrics take the pair
(y, x) from the caller (the dashboard's selected pair), not from the text.

Default hysteresis (:data:`DEFAULT_HYSTERESIS`, in the metric's own units) when the caller gives
none: z-score 0.5 (half a standard deviation: z on 1 s bars jitters by tenths), correlation 0.05;
spread, beta and price 0, because their scale depends on the instruments and only the user knows
it – for those, the cooldown is the only storm guard until a band is set.
"""

from __future__ import annotations

import math
import numbers
import re
from dataclasses import dataclass

from analytics import zscore_bound
from config import TIMEFRAMES_MS, normalize_symbol

METRICS = ("zscore", "spread", "corr", "beta", "price")
OPERATORS = (">", "<", "crosses_above", "crosses_below")
TIMEFRAME_LABELS = {ms: label for label, ms in TIMEFRAMES_MS.items()}  # 1000 → "1s", …
WINDOW_RANGE = (10, 200)
DEFAULT_HYSTERESIS = {"zscore": 0.5, "corr": 0.05, "spread": 0.0, "beta": 0.0, "price": 0.0}

_METRIC_ALIASES = {
    "zscore": "zscore", "z": "zscore", "z-score": "zscore", "z_score": "zscore",
    "spread": "spread",
    "corr": "corr", "correlation": "corr",
    "beta": "beta",
}
# Runs of comparison characters are tokens of their own, so "z>2" needs no spaces and ">=" or
# "=" reach the operator check whole and are rejected by name.
_TOKEN_RE = re.compile(r"[<>=]+|[^\s<>=]+")
_EXPECTED_METRIC = "expected zscore, spread, corr, beta or '<SYMBOL> price'"
_EXPECTED_OPERATOR = "expected >, <, crosses above or crosses below"


@dataclass(frozen=True, slots=True)
class AlertRule:
    """One user-defined alert condition on a pair metric or on one symbol's price.

    Attributes:
        metric: one of :data:`METRICS`.
        operator: one of :data:`OPERATORS`. ``>``/``<`` fire when the value is beyond the
            threshold; ``crosses_*`` only on a move from one side to the other.
        threshold: level in the metric's units (z-score in std devs, spread and price in quote
            currency, correlation and beta dimensionless).
        pair: ``(y, x)`` for pair metrics (spread is ``y - beta * x``); None for ``price``.
        symbol: the instrument for ``price`` rules; None for pair metrics.
        timeframe_ms: bar length the metric is computed on: 1000, 60000 or 300000 ms.
        window: rolling window in bars, 10-200 (unused by ``price`` but kept for one shape).
        hysteresis: re-arm band in the metric's units, >= 0; see :mod:`alerts.evaluator`.
        cooldown_s: minimum market time between two firings, seconds, >= 0.
        enabled: disabled rules are kept but not evaluated.
        id: database id once stored, else None.
    """

    metric: str
    operator: str
    threshold: float
    pair: tuple[str, str] | None = None
    symbol: str | None = None
    timeframe_ms: int = 60_000
    window: int = 60
    hysteresis: float = 0.0
    cooldown_s: float = 0.0
    enabled: bool = True
    id: int | None = None

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ValueError(f"metric: {self.metric!r} is not one of {', '.join(METRICS)}")
        if self.operator not in OPERATORS:
            raise ValueError(f"operator: {self.operator!r} is not one of {', '.join(OPERATORS)}")
        object.__setattr__(self, "threshold", _finite("threshold", self.threshold))
        if self.metric == "price":
            if self.pair is not None:
                raise ValueError("pair: must be None for a price rule (use symbol)")
            if self.symbol is None:
                raise ValueError("symbol: required for a price rule")
            object.__setattr__(self, "symbol", _symbol("symbol", self.symbol))
        else:
            if self.symbol is not None:
                raise ValueError(f"symbol: must be None for a {self.metric} rule (use pair)")
            object.__setattr__(self, "pair", _pair(self.metric, self.pair))
        if not _is_int(self.timeframe_ms) or self.timeframe_ms not in TIMEFRAME_LABELS:
            raise ValueError(f"timeframe_ms: {self.timeframe_ms!r} is not one of 1000, 60000 or 300000")
        object.__setattr__(self, "timeframe_ms", int(self.timeframe_ms))
        low, high = WINDOW_RANGE
        if not _is_int(self.window) or not low <= self.window <= high:
            raise ValueError(f"window: {self.window!r} must be an integer between {low} and {high} bars")
        object.__setattr__(self, "window", int(self.window))
        object.__setattr__(self, "hysteresis", _non_negative("hysteresis", self.hysteresis))
        object.__setattr__(self, "cooldown_s", _non_negative("cooldown_s", self.cooldown_s))
        if not isinstance(self.enabled, bool):
            raise ValueError(f"enabled: {self.enabled!r} must be True or False")
        if self.id is not None and (not _is_int(self.id) or self.id < 1):
            raise ValueError(f"id: {self.id!r} must be a positive integer or None")
        if self.id is not None:
            object.__setattr__(self, "id", int(self.id))

    @property
    def label(self) -> str:
        """What the rule watches: ``"ETHUSDT/BTCUSDT"`` (y/x) or ``"BTCUSDT"`` for price rules."""
        return self.symbol if self.pair is None else f"{self.pair[0]}/{self.pair[1]}"

    @property
    def timeframe_label(self) -> str:
        """``"1s"``, ``"1m"`` or ``"5m"``."""
        return TIMEFRAME_LABELS[self.timeframe_ms]

    def describe(self) -> str:
        """Canonical condition text, e.g. ``"zscore > 2"`` or ``"BTCUSDT price crosses above 90000"``.

        ``parse_rule(rule.describe(), pair=rule.pair, timeframe_ms=rule.timeframe_ms,
        window=rule.window, hysteresis=rule.hysteresis, cooldown_s=rule.cooldown_s)`` gives the
        rule back (without ``id``/``enabled``, which are not part of the condition).
        """
        operator = self.operator.replace("_", " ")
        subject = self.metric if self.symbol is None else f"{self.symbol} price"
        return f"{subject} {operator} {format_number(self.threshold)}"


def parse_rule(
    text: str,
    *,
    pair: tuple[str, str] | None,
    timeframe_ms: int,
    window: int,
    hysteresis: float | None = None,
    cooldown_s: float = 0.0,
) -> AlertRule:
    """Parse a condition such as ``"z > 2.5"`` into an :class:`AlertRule` (grammar in the module doc).

    ``pair`` is the (y, x) pair that pair metrics apply to; it may be None only for price rules.
    ``hysteresis`` None means :data:`DEFAULT_HYSTERESIS` of the metric. Raises ValueError saying
    what was expected where, or why a z-score threshold can never be reached with ``window``.
    """
    tokens = _TOKEN_RE.findall(text)
    if not tokens:
        raise ValueError(f"empty rule: {_EXPECTED_METRIC}, e.g. 'zscore > 2' or 'BTCUSDT price > 90000'")
    metric, symbol, rest = _parse_subject(tokens)
    operator, rest = _parse_operator(" ".join(tokens[: len(tokens) - len(rest)]), rest)
    threshold = _parse_number(operator, rest)
    rule = AlertRule(
        metric=metric,
        operator=operator,
        threshold=threshold,
        pair=None if metric == "price" else pair,
        symbol=symbol,
        timeframe_ms=timeframe_ms,
        window=window,
        hysteresis=DEFAULT_HYSTERESIS[metric] if hysteresis is None else hysteresis,
        cooldown_s=cooldown_s,
    )
    if metric == "zscore":
        _check_reachable(rule)
    return rule


def _check_reachable(rule: AlertRule) -> None:
    """Refuse a z-score rule that can never fire: ``|z| <= (window - 1) / sqrt(window)``.

    The z-score includes the current bar in its window (see :func:`analytics.zscore_bound`).
    With ``b`` that bound, ``> t`` needs ``t < b``, ``< t`` needs ``t > -b``, ``crosses above t``
    needs ``-b < t <= b`` (a value below t first, then one at or above it) and ``crosses below t``
    needs ``-b <= t < b``.
    """
    bound, t = zscore_bound(rule.window), rule.threshold
    reachable = {
        ">": t < bound,
        "<": t > -bound,
        "crosses_above": -bound < t <= bound,
        "crosses_below": -bound <= t < bound,
    }[rule.operator]
    if not reachable:
        advice = "lower the threshold" if t > 0 else "raise the threshold"  # beyond +bound or -bound
        raise ValueError(
            f"{rule.describe()} can never fire with a {rule.window}-bar window: the z-score includes the current bar, "
            f"so |z| ≤ (window−1)/√window = {bound:.2f}; {advice} or widen the window"
        )


def format_number(value: float) -> str:
    """Shortest text that reads back as exactly ``value``: ``2``, ``-2.5``, ``90000``, ``1e-05``."""
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def _parse_subject(tokens: list[str]) -> tuple[str, str | None, list[str]]:
    """(metric, symbol or None, remaining tokens) from the start of a tokenised rule."""
    first = tokens[0].lower()
    if first in _METRIC_ALIASES:
        return _METRIC_ALIASES[first], None, tokens[1:]
    if first == "price":
        if len(tokens) < 2 or _is_comparison(tokens[1]):
            raise ValueError("expected a symbol after 'price', e.g. 'price BTCUSDT > 90000'")
        return "price", normalize_symbol(tokens[1]), tokens[2:]
    if len(tokens) > 1 and tokens[1].lower() == "price":
        return "price", normalize_symbol(tokens[0]), tokens[2:]
    hint = ""
    if len(tokens) > 1 and _is_comparison(tokens[1]):
        hint = f" (for a price alert write '{tokens[0]} price ...')"
    raise ValueError(f"unknown metric {tokens[0]!r}: {_EXPECTED_METRIC}{hint}")


def _is_comparison(token: str) -> bool:
    return token[0] in "<>="


def _parse_operator(subject: str, tokens: list[str]) -> tuple[str, list[str]]:
    """(operator, remaining tokens); ``subject`` only names the place in error messages."""
    if not tokens:
        raise ValueError(f"expected an operator after {subject!r}: {_EXPECTED_OPERATOR}")
    word = tokens[0].lower()
    if word in OPERATORS:
        return word, tokens[1:]
    if word == "crosses":
        if len(tokens) < 2 or tokens[1].lower() not in ("above", "below"):
            got = repr(tokens[1]) if len(tokens) > 1 else "nothing"
            raise ValueError(f"expected 'above' or 'below' after 'crosses', got {got}")
        return f"crosses_{tokens[1].lower()}", tokens[2:]
    raise ValueError(f"unknown operator {tokens[0]!r}: {_EXPECTED_OPERATOR}")


def _parse_number(operator: str, tokens: list[str]) -> float:
    shown = operator.replace("_", " ")
    if not tokens:
        raise ValueError(f"expected a number after {shown!r}, got nothing")
    if len(tokens) > 1:
        raise ValueError(f"unexpected text after the threshold: {' '.join(tokens[1:])!r}")
    try:
        value = float(tokens[0])
    except ValueError:
        raise ValueError(f"expected a number after {shown!r}, got {tokens[0]!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"expected a finite number after {shown!r}, got {tokens[0]!r}")
    return value


# numbers.Integral/Real admit numpy scalars from UI widgets; values are converted to plain
# int/float because sqlite3 cannot bind numpy types. bool is excluded: True as a window is a bug.
def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _finite(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{name}: {value!r} must be a finite number")
    return float(value)


def _non_negative(name: str, value: float) -> float:
    value = _finite(name, value)
    if value < 0:
        raise ValueError(f"{name}: {value!r} must be >= 0")
    return value


def _symbol(name: str, raw: object) -> str:
    if not isinstance(raw, str):
        raise ValueError(f"{name}: {raw!r} must be a symbol string such as 'BTCUSDT'")
    try:
        return normalize_symbol(raw)
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None


def _pair(metric: str, raw: object) -> tuple[str, str]:
    if raw is None:
        raise ValueError(f"pair: required for a {metric} rule, as (y, x)")
    if not isinstance(raw, (tuple, list)) or len(raw) != 2:
        raise ValueError(f"pair: {raw!r} must be two symbols (y, x)")
    y, x = _symbol("pair", raw[0]), _symbol("pair", raw[1])
    if y == x:
        raise ValueError(f"pair: y and x are both {y}; a pair needs two different symbols")
    return y, x
