"""Alert records shared by the alert engine, its stores and the UI: a rule and one firing of it.

:class:`AlertRule` is a frozen, validated condition on a pair metric or a symbol's price (the
text grammar that builds one is :func:`alerts.rules.parse_rule`); :class:`AlertEvent` is one
firing, as stored, shown and posted to a webhook.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

from config import normalize_leg
from domain import Timeframe, check_window

METRICS = ("zscore", "spread", "corr", "beta", "price")
OPERATORS = (">", "<", "crosses_above", "crosses_below")
DEFAULT_HYSTERESIS = {"zscore": 0.5, "corr": 0.05, "spread": 0.0, "beta": 0.0, "price": 0.0}


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
        object.__setattr__(self, "timeframe_ms", Timeframe.of(self.timeframe_ms).ms)
        object.__setattr__(self, "window", check_window(self.window))
        object.__setattr__(self, "hysteresis", _non_negative("hysteresis", self.hysteresis))
        object.__setattr__(self, "cooldown_s", _non_negative("cooldown_s", self.cooldown_s))
        if not isinstance(self.enabled, bool):
            raise ValueError(f"enabled: {self.enabled!r} must be True or False")
        if self.id is not None and (not _is_int(self.id) or self.id < 1):
            raise ValueError(f"id: {self.id!r} must be a positive integer or None")
        if self.id is not None:
            object.__setattr__(self, "id", int(self.id))

    @property
    def symbols(self) -> tuple[str, ...]:
        """The instruments the rule reads: ``(y, x)`` for a pair metric, ``(symbol,)`` for a price rule."""
        if self.pair is not None:
            return self.pair
        # __post_init__ admits no rule without both: one without a pair is a price rule, which has a symbol.
        assert self.symbol is not None
        return (self.symbol,)

    @property
    def stored_id(self) -> int:
        """The rule's database id; ValueError naming the rule if it was never stored."""
        if self.id is None:
            raise ValueError(f"alert rule {self.describe()!r} has no id: it was never stored")
        return self.id

    @property
    def label(self) -> str:
        """What the rule watches: ``"ETHUSDT/BTCUSDT"`` (y/x) or ``"BTCUSDT"`` for price rules."""
        return "/".join(self.symbols)

    @property
    def timeframe_label(self) -> str:
        """``"1s"``, ``"1m"`` or ``"5m"``."""
        return Timeframe.of(self.timeframe_ms).name

    def describe(self) -> str:
        """Canonical condition text, e.g. ``"zscore > 2"`` or ``"BTCUSDT price crosses above 90000"``.

        ``parse_rule(rule.describe(), pair=rule.pair, timeframe_ms=rule.timeframe_ms,
        window=rule.window, hysteresis=rule.hysteresis, cooldown_s=rule.cooldown_s)`` gives the
        rule back (without ``id``/``enabled``, which are not part of the condition).
        """
        operator = self.operator.replace("_", " ")
        subject = self.metric if self.symbol is None else f"{self.symbol} price"
        return f"{subject} {operator} {format_number(self.threshold)}"


def format_number(value: float) -> str:
    """Shortest text that reads back as exactly ``value``: ``2``, ``-2.5``, ``90000``, ``1e-05``."""
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


_METRIC_NAMES = {"zscore": "z-score", "spread": "spread", "corr": "correlation", "beta": "beta", "price": "price"}
_VERBS = {">": ">", "<": "<", "crosses_above": "crossed above", "crosses_below": "crossed below"}


@dataclass(frozen=True, slots=True)
class AlertEvent:
    """A rule fired on one bar.

    Attributes:
        rule_id: id of the stored rule, None for a rule that was never stored.
        rule_text: the rule's canonical text at firing time (``AlertRule.describe()``), kept so
            history still reads correctly after the rule is deleted.
        label: ``"ETHUSDT/BTCUSDT"`` (y/x) or ``"BTCUSDT"`` for price rules.
        metric: the rule's metric (``"zscore"``, ``"spread"``, ``"corr"``, ``"beta"``, ``"price"``).
        ts_ms: market time of the bar whose value fired the rule, UTC epoch ms.
        value: the metric's value on that bar, in the metric's units.
        threshold: the rule's threshold, same units.
        message: one human-readable line, e.g. ``"ETHUSDT/BTCUSDT z-score 2.31 > 2.00 (1m, window 60)"``.
    """

    rule_id: int | None
    rule_text: str
    label: str
    metric: str
    ts_ms: int
    value: float
    threshold: float
    message: str


def make_event(rule: AlertRule, ts_ms: int, value: float) -> AlertEvent:
    """The event for ``rule`` firing at market time ``ts_ms`` (epoch ms) with ``value``."""
    verb = _VERBS[rule.operator]
    name = _METRIC_NAMES[rule.metric]
    # Price rules do not depend on the rolling window, so showing it would only confuse.
    context = rule.timeframe_label if rule.metric == "price" else f"{rule.timeframe_label}, window {rule.window}"
    message = (
        f"{rule.label} {name} {_fmt(rule.metric, value)} {verb} {_fmt(rule.metric, rule.threshold)} ({context})"
    )
    return AlertEvent(
        rule_id=rule.id,
        rule_text=rule.describe(),
        label=rule.label,
        metric=rule.metric,
        ts_ms=ts_ms,
        value=value,
        threshold=rule.threshold,
        message=message,
    )


def _fmt(metric: str, value: float) -> str:
    # z-score and correlation live on a fixed small scale; spreads, betas and prices span many
    # orders of magnitude across instruments (BTC at 9e4, a meme coin at 1e-5), so keep 8 digits.
    if metric in ("zscore", "corr"):
        return f"{value:.2f}"
    return f"{value:.8g}"


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
        return normalize_leg(raw)
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
