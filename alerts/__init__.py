"""User-defined alerts: rules, their edge-triggered evaluation, persistence and webhook delivery.

Nothing here imports streamlit: the engine evaluates rules on every bar update whether or not a
browser tab is open, and the dashboard only reads the stored history.
"""

from alerts.evaluator import AlertEvaluator, RuleState, evaluate
from alerts.events import AlertEvent, make_event
from alerts.rules import AlertRule, parse_rule
from alerts.store import AlertRecord, AlertStore
from alerts.webhook import WebhookNotifier, WebhookStats

__all__ = [
    "AlertEvaluator",
    "AlertEvent",
    "AlertRecord",
    "AlertRule",
    "AlertStore",
    "RuleState",
    "WebhookNotifier",
    "WebhookStats",
    "evaluate",
    "make_event",
    "parse_rule",
]
