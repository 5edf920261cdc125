"""User-defined alerts: the rule grammar, edge-triggered evaluation, the monitor and durable webhook delivery.

Nothing here imports streamlit: the service evaluates rules on every closed bar whether or not a
browser tab is open, and the dashboard only reads the stored history. Rule and event records
live in :mod:`records.alerts`, their stores in :mod:`storage`.
"""

from alerts.evaluator import AlertEvaluator, RuleState, evaluate
from alerts.rules import parse_rule
from alerts.webhook import WebhookEndpoint

__all__ = ["AlertEvaluator", "RuleState", "WebhookEndpoint", "evaluate", "parse_rule"]
