"""The record of one alert firing, shared by the evaluator, the store and the webhook."""

from __future__ import annotations

from dataclasses import dataclass

from alerts.rules import AlertRule

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
