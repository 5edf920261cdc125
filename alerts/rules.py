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
import re

from analytics import zscore_bound
from config import normalize_leg
from records.alerts import DEFAULT_HYSTERESIS, OPERATORS, AlertRule

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


def _parse_subject(tokens: list[str]) -> tuple[str, str | None, list[str]]:
    """(metric, symbol or None, remaining tokens) from the start of a tokenised rule."""
    first = tokens[0].lower()
    if first in _METRIC_ALIASES:
        return _METRIC_ALIASES[first], None, tokens[1:]
    if first == "price":
        if len(tokens) < 2 or _is_comparison(tokens[1]):
            raise ValueError("expected a symbol after 'price', e.g. 'price BTCUSDT > 90000'")
        return "price", normalize_leg(tokens[1]), tokens[2:]
    if len(tokens) > 1 and tokens[1].lower() == "price":
        return "price", normalize_leg(tokens[0]), tokens[2:]
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
