"""Edge-triggered alert evaluation with hysteresis and a market-time cooldown.

Semantics, per rule with threshold ``t`` and hysteresis ``h`` (both in the metric's units):

* ``> t`` fires when the value is ``> t``; ``< t`` when it is ``< t``.
* ``crosses_above t`` fires when the previous value was ``< t`` and the current one is ``>= t``;
  ``crosses_below t`` when the previous was ``> t`` and the current is ``<= t``. The first
  observation of a rule only primes the previous value.
* A rule starts armed. Firing disarms it, and it fires only while armed, so a condition that
  stays true fires once (edge, not level). It re-arms only once the value has moved back beyond
  the band: below ``t - h`` for ``>`` and ``crosses_above``, above ``t + h`` for ``<`` and
  ``crosses_below``. A value oscillating around ``t`` within the band therefore fires once.
* A rule never fires twice within ``cooldown_s`` of market time (bar ``ts_ms``, not wall time).
  An armed ``>``/``<`` rule whose condition holds during the cooldown stays armed and fires on
  the first observation after the cooldown if the condition still holds; a ``crosses_*`` edge
  seen during the cooldown is not remembered (it needs a fresh crossing).
* Non-finite values (NaN before a window fills, inf from a zero variance) neither fire nor
  re-arm, and are not remembered as the previous value: a crossing across a NaN gap still counts.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, replace

from records.alerts import AlertEvent, AlertRule, make_event


@dataclass(frozen=True, slots=True)
class RuleState:
    """What the evaluator remembers about one rule between observations.

    Attributes:
        armed: whether the rule may fire (False from a firing until the value leaves the band).
        previous: last finite value observed, or None before the first one.
        last_fired_ms: market time of the last firing, UTC epoch ms, or None.
    """

    armed: bool = True
    previous: float | None = None
    last_fired_ms: int | None = None


def evaluate(rule: AlertRule, state: RuleState, ts_ms: int, value: float) -> tuple[RuleState, bool]:
    """Advance ``state`` by one observation of ``rule``'s metric; return (new state, fired?).

    ``ts_ms`` is the market time of the bar (epoch ms), ``value`` the metric on it. Pure: the
    same inputs always give the same outputs, so a restarted engine that replays the stored bars
    reconstructs the same firings.
    """
    if not math.isfinite(value):
        return state, False
    armed = state.armed or _in_rearm_region(rule, value)
    cooled = state.last_fired_ms is None or ts_ms - state.last_fired_ms >= rule.cooldown_s * 1000
    if armed and cooled and _condition(rule, state.previous, value):
        return RuleState(armed=False, previous=value, last_fired_ms=ts_ms), True
    return replace(state, armed=armed, previous=value), False


def _condition(rule: AlertRule, previous: float | None, value: float) -> bool:
    t = rule.threshold
    if rule.operator == ">":
        return value > t
    if rule.operator == "<":
        return value < t
    if previous is None:
        return False
    if rule.operator == "crosses_above":
        return previous < t <= value
    return previous > t >= value  # crosses_below


def _in_rearm_region(rule: AlertRule, value: float) -> bool:
    if rule.operator in (">", "crosses_above"):
        return value < rule.threshold - rule.hysteresis
    return value > rule.threshold + rule.hysteresis


class AlertEvaluator:
    """Holds a :class:`RuleState` per rule and turns observations into :class:`AlertEvent` s.

    State is keyed by the rule value itself (frozen, hashable), so a rule whose threshold,
    window, ... changed starts afresh, armed. Call :meth:`retain` with the enabled rules after
    each reload: it drops the state of deleted and disabled rules, so a re-enabled rule starts
    afresh too. Not thread-safe: the engine's alert thread owns it.
    """

    def __init__(self) -> None:
        self._states: dict[AlertRule, RuleState] = {}

    def observe(self, rule: AlertRule, ts_ms: int, value: float) -> AlertEvent | None:
        """Feed one bar's metric value (``ts_ms``: bar market time, epoch ms); the event if it fired.

        Disabled rules are ignored and their state is left untouched.
        """
        if not rule.enabled:
            return None
        state, fired = evaluate(rule, self._states.get(rule, RuleState()), ts_ms, value)
        self._states[rule] = state
        return make_event(rule, ts_ms, value) if fired else None

    def state(self, rule: AlertRule) -> RuleState:
        """The current state of ``rule`` (a fresh, armed state if it was never observed)."""
        return self._states.get(rule, RuleState())

    def retain(self, rules: Iterable[AlertRule]) -> None:
        """Forget the state of every rule not in ``rules`` (call after reloading the rule list)."""
        keep = set(rules)
        self._states = {rule: state for rule, state in self._states.items() if rule in keep}
